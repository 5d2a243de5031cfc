//! The sessions a shard can reach: one registry of outboxes, each entry
//! marked with why the shard holds it. A session's user may live here
//! (home), it may be in one of this shard's chats, follow the status of one
//! of its users, or watch one of its matchmaking tickets. One session has
//! one outbox, whatever the reasons; the entry goes when the last reason
//! does. Owns no engine state and never pushes a frame itself.

use std::collections::HashMap;
use std::sync::Arc;

use crate::core::engine::SessionId;
use crate::core::outbox::Outbox;

/// Why a shard holds a session's outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The session's user is owned here: its events and session control.
    Home,
    /// A member of one of this shard's chats.
    Chat,
    /// Follows the status of a user owned here.
    Follower,
    /// Watches a matchmaking ticket of a game owned here.
    Watcher,
}

impl Role {
    const fn bit(self) -> u8 {
        match self {
            Role::Home => 1,
            Role::Chat => 2,
            Role::Follower => 4,
            Role::Watcher => 8,
        }
    }
}

struct Entry {
    outbox: Arc<Outbox>,
    roles: u8,
}

/// Every session this shard holds an outbox for.
#[derive(Default)]
pub struct Sessions {
    entries: HashMap<SessionId, Entry>,
}

impl Sessions {
    /// A session whose user is owned here starts (its outbox replaces any
    /// held before under the same id).
    pub fn attach(&mut self, session: SessionId, outbox: Arc<Outbox>) {
        let entry = self.entries.entry(session).or_insert(Entry {
            outbox: outbox.clone(),
            roles: 0,
        });
        entry.outbox = outbox;
        entry.roles |= Role::Home.bit();
    }

    /// Holds `session` for `role` too, keeping the outbox already held.
    pub fn hold(&mut self, session: SessionId, role: Role, outbox: Arc<Outbox>) {
        self.entries
            .entry(session)
            .or_insert(Entry { outbox, roles: 0 })
            .roles |= role.bit();
    }

    /// Lets go of `session` for `role` (the entry goes with its last
    /// role). Returns the session's outbox when it was held for `role`.
    pub fn release(&mut self, session: SessionId, role: Role) -> Option<Arc<Outbox>> {
        let entry = self.entries.get_mut(&session)?;
        if entry.roles & role.bit() == 0 {
            return None;
        }
        entry.roles &= !role.bit();
        let outbox = entry.outbox.clone();
        if entry.roles == 0 {
            self.entries.remove(&session);
        }
        Some(outbox)
    }

    /// The outbox of a session held here for any reason.
    pub fn outbox(&self, session: SessionId) -> Option<&Arc<Outbox>> {
        self.entries.get(&session).map(|e| &e.outbox)
    }

    /// The outbox of a session whose user is owned here.
    pub fn home(&self, session: SessionId) -> Option<&Arc<Outbox>> {
        self.entries
            .get(&session)
            .filter(|e| e.roles & Role::Home.bit() != 0)
            .map(|e| &e.outbox)
    }

    /// Whether `session` is held for `role`.
    pub fn has(&self, session: SessionId, role: Role) -> bool {
        self.entries
            .get(&session)
            .is_some_and(|e| e.roles & role.bit() != 0)
    }

    /// Sessions held for `role` whose outbox has closed (their connection
    /// and resume window are over).
    pub fn closed(&self, role: Role) -> Vec<SessionId> {
        self.entries
            .iter()
            .filter(|(_, e)| e.roles & role.bit() != 0 && e.outbox.is_closed())
            .map(|(s, _)| *s)
            .collect()
    }

    /// The outboxes of every session whose user is owned here.
    pub fn homes(&self) -> impl Iterator<Item = &Arc<Outbox>> {
        self.entries
            .values()
            .filter(|e| e.roles & Role::Home.bit() != 0)
            .map(|e| &e.outbox)
    }

    /// How many sessions are held, for any reason.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no session is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}
