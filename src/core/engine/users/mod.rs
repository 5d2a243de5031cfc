//! The user directory of one shard: which sessions each of its users holds,
//! online/offline transitions, resume bookkeeping, presence lookups and the
//! routed echo that proves shard routing.
//!
//! A user is online from their first attached session to the end of their
//! last session. A session that drops without a clean close stays for the
//! resume window (its user stays online meanwhile) and ends when the window
//! passes. Never does I/O; timers are reported through [`Users::poll_timeout`].

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{
    DomainEvent, Effect, Event, Failure, Now, Presence, Refusal, Reply, ResumeRefusal, SessionId,
    Status, UserId,
};

/// Sessions of one user that may wait for a resume at once.
pub const MAX_DETACHED_PER_USER: usize = 8;

/// Commands the user directory accepts.
#[derive(Debug, Clone)]
pub enum Command {
    /// A new session authenticated as `user`.
    Attach {
        session: SessionId,
        user: UserId,
        resume_token: u128,
    },
    /// A new connection wants to take over `session`; on success the
    /// session's resume token becomes `next_token`.
    Resume {
        session: SessionId,
        user: UserId,
        resume_token: u128,
        next_token: u128,
    },
    /// The session's connection went away; `resumable` keeps it for the
    /// resume window, otherwise it ends now.
    Detach { session: SessionId, resumable: bool },
    /// Echo the payload; with `to_user`, deliver an event to all their sessions.
    Echo {
        request_id: u64,
        from_user: UserId,
        to_user: Option<UserId>,
        payload: Vec<u8>,
        volatile: bool,
    },
    /// Presence of users owned by this shard.
    Lookup { user_ids: Vec<UserId> },
    /// `user:status` from one of `user`'s sessions.
    SetStatus {
        request_id: u64,
        user: UserId,
        status: Status,
        text: Option<String>,
        invisible: bool,
    },
    /// `session` starts (or, with `follow: false`, stops) following the
    /// status of `targets` owned by this shard; answered with their presence.
    Follow {
        session: SessionId,
        targets: Vec<UserId>,
        follow: bool,
    },
    /// Follower sessions found gone: forget them.
    FollowersGone { sessions: Vec<SessionId> },
}

#[derive(Debug)]
struct SessionEntry {
    user: UserId,
    resume_token: u128,
    /// `Some(deadline)` while detached and resumable.
    detached_until: Option<Instant>,
}

/// One user's row. Kept small (every connected user has one): the parts
/// most users never use live behind one optional box.
#[derive(Debug, Default)]
struct UserEntry {
    sessions: Vec<SessionId>,
    last_active_ms: i64,
    extra: Option<Box<UserExtra>>,
}

/// A chosen status and the sessions that follow it.
#[derive(Debug)]
struct UserExtra {
    /// The status the user chose (shown while connected and visible).
    status: Status,
    text: Option<Arc<str>>,
    invisible: bool,
    /// Sessions (of any user, on any shard) following this user's status.
    followers: HashSet<SessionId>,
}

impl Default for UserExtra {
    fn default() -> Self {
        Self {
            status: Status::Online,
            text: None,
            invisible: false,
            followers: HashSet::new(),
        }
    }
}

impl UserEntry {
    fn extra(&mut self) -> &mut UserExtra {
        self.extra.get_or_insert_with(Default::default)
    }

    fn followers(&self) -> impl Iterator<Item = SessionId> + '_ {
        self.extra.iter().flat_map(|x| x.followers.iter().copied())
    }

    /// What others see: offline when not connected or invisible.
    fn visible(&self) -> (Status, Option<Arc<str>>) {
        match &self.extra {
            _ if self.sessions.is_empty() => (Status::Offline, None),
            Some(x) if x.invisible => (Status::Offline, None),
            Some(x) => (x.status, x.text.clone()),
            None => (Status::Online, None),
        }
    }

    fn presence(&self, user_id: UserId) -> Presence {
        let (status, text) = self.visible();
        Presence {
            connections: if status == Status::Offline {
                0
            } else {
                self.sessions.len() as u32
            },
            last_active_ms: self.last_active_ms,
            status,
            text,
            user_id,
        }
    }
}

/// Longest custom status text, in characters.
pub const MAX_STATUS_TEXT: usize = 128;

/// The directory state of one shard.
#[derive(Debug)]
pub struct Users {
    shard: u16,
    resume_window: Duration,
    sessions: HashMap<SessionId, SessionEntry>,
    users: HashMap<UserId, UserEntry>,
    /// Detached sessions by resume deadline.
    expiries: BTreeSet<(Instant, SessionId)>,
}

impl Users {
    pub fn new(shard: u16, resume_window: Duration) -> Self {
        Self {
            shard,
            resume_window,
            sessions: HashMap::new(),
            users: HashMap::new(),
            expiries: BTreeSet::new(),
        }
    }

    /// Sessions currently known (attached or awaiting resume).
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    pub fn handle(&mut self, now: Now, cmd: Command, out: &mut Vec<Effect>) {
        match cmd {
            Command::Attach {
                session,
                user,
                resume_token,
            } => {
                // A connect-and-drop loop must not pile up sessions that
                // wait for a resume: past the cap, the oldest one ends.
                let (waiting, oldest) = self.waiting(&user);
                if waiting >= MAX_DETACHED_PER_USER {
                    if let Some(oldest) = oldest {
                        self.end_session(now, oldest, out);
                    }
                }
                let entry = self.users.entry(user.clone()).or_default();
                let before = entry.visible();
                entry.sessions.push(session);
                entry.last_active_ms = now.unix_ms;
                if entry.sessions.len() == 1 {
                    out.push(Effect::Domain(DomainEvent::UserOnline {
                        user: user.clone(),
                    }));
                    self.notify_followers(now, &user, before, out);
                }
                self.sessions.insert(
                    session,
                    SessionEntry {
                        user,
                        resume_token,
                        detached_until: None,
                    },
                );
            }
            Command::Resume {
                session,
                user,
                resume_token,
                next_token,
            } => {
                let refusal = match self.sessions.get_mut(&session) {
                    None => Some(ResumeRefusal::UnknownSession),
                    Some(s) if s.user != user => Some(ResumeRefusal::WrongUser),
                    Some(s) if s.resume_token != resume_token => Some(ResumeRefusal::WrongToken),
                    Some(s) => {
                        if let Some(deadline) = s.detached_until.take() {
                            self.expiries.remove(&(deadline, session));
                        }
                        s.resume_token = next_token;
                        None
                    }
                };
                out.push(match refusal {
                    None => Effect::ResumeAccepted { session },
                    Some(reason) => Effect::ResumeRefused { session, reason },
                });
            }
            Command::Detach { session, resumable } => {
                if resumable {
                    if let Some(s) = self.sessions.get_mut(&session) {
                        if s.detached_until.is_none() {
                            let deadline = now.mono + self.resume_window;
                            s.detached_until = Some(deadline);
                            self.expiries.insert((deadline, session));
                            // Many connections dropping at once wait within
                            // the cap too: past it, the oldest one ends.
                            let user = s.user.clone();
                            if let (waiting, Some(oldest)) = self.waiting(&user) {
                                if waiting > MAX_DETACHED_PER_USER {
                                    self.end_session(now, oldest, out);
                                }
                            }
                        }
                    }
                } else {
                    self.end_session(now, session, out);
                }
            }
            Command::Echo {
                request_id,
                from_user,
                to_user,
                payload,
                volatile,
            } => {
                let mut delivered = 0;
                if let Some(to) = to_user {
                    if let Some(entry) = self.users.get(&to) {
                        delivered = entry.sessions.len() as u32;
                        out.push(Effect::Deliver {
                            sessions: entry.sessions.clone(),
                            event: Event::Echo {
                                from_user,
                                payload: payload.clone(),
                            },
                            reliable: !volatile,
                        });
                    }
                }
                out.push(Effect::Reply {
                    request_id,
                    reply: Reply::Echo {
                        payload,
                        shard: self.shard,
                        delivered,
                    },
                });
            }
            Command::Lookup { user_ids } => {
                let rows = user_ids.into_iter().map(|u| self.presence_of(u)).collect();
                out.push(Effect::Presence(rows));
            }
            Command::SetStatus {
                request_id,
                user,
                status,
                text,
                invisible,
            } => {
                let text = text.filter(|t| !t.is_empty());
                if text
                    .as_deref()
                    .is_some_and(|t| t.chars().count() > MAX_STATUS_TEXT)
                {
                    let msg = format!("status text longer than {MAX_STATUS_TEXT} characters");
                    return out.push(Effect::Fail {
                        request_id,
                        failure: Failure::new(Refusal::InvalidArgument, msg),
                    });
                }
                if status == Status::Offline {
                    let msg = "set invisible to appear offline; OFFLINE is not a status to set";
                    return out.push(Effect::Fail {
                        request_id,
                        failure: Failure::new(Refusal::InvalidArgument, msg),
                    });
                }
                let entry = self.users.entry(user.clone()).or_default();
                let before = entry.visible();
                let extra = entry.extra();
                extra.status = status;
                extra.text = text.map(Arc::from);
                extra.invisible = invisible;
                let text = extra.text.clone();
                entry.last_active_ms = now.unix_ms;
                let reply = Reply::StatusSet {
                    status,
                    text,
                    invisible,
                };
                self.notify_followers(now, &user, before, out);
                out.push(Effect::Reply { request_id, reply });
            }
            Command::Follow {
                session,
                targets,
                follow,
            } => {
                for target in &targets {
                    if follow {
                        self.users
                            .entry(target.clone())
                            .or_default()
                            .extra()
                            .followers
                            .insert(session);
                    } else if let Some(x) =
                        self.users.get_mut(target).and_then(|e| e.extra.as_mut())
                    {
                        x.followers.remove(&session);
                    }
                }
                let rows = if follow {
                    targets.into_iter().map(|u| self.presence_of(u)).collect()
                } else {
                    Vec::new()
                };
                out.push(Effect::Presence(rows));
            }
            Command::FollowersGone { sessions } => {
                for x in self.users.values_mut().filter_map(|e| e.extra.as_mut()) {
                    for s in &sessions {
                        x.followers.remove(s);
                    }
                }
            }
        }
    }

    /// How many of `user`'s sessions wait for a resume, and the one whose
    /// window ends first.
    fn waiting(&self, user: &str) -> (usize, Option<SessionId>) {
        let deadlines = self.users.get(user).into_iter().flat_map(|e| {
            e.sessions.iter().filter_map(|s| {
                self.sessions
                    .get(s)
                    .and_then(|x| x.detached_until)
                    .map(|d| (d, *s))
            })
        });
        let (mut count, mut oldest) = (0, None);
        for d in deadlines {
            count += 1;
            oldest = Some(oldest.map_or(d, |o: (Instant, SessionId)| o.min(d)));
        }
        (count, oldest.map(|(_, s)| s))
    }

    fn presence_of(&self, user_id: UserId) -> Presence {
        match self.users.get(&user_id) {
            Some(e) => e.presence(user_id),
            None => Presence {
                user_id,
                status: Status::Offline,
                connections: 0,
                last_active_ms: 0,
                text: None,
            },
        }
    }

    /// Tells `user`'s followers and friends when what they see changed from
    /// `before`.
    fn notify_followers(
        &self,
        now: Now,
        user: &UserId,
        before: (Status, Option<Arc<str>>),
        out: &mut Vec<Effect>,
    ) {
        let Some(entry) = self.users.get(user) else {
            return;
        };
        let after = entry.visible();
        if after == before {
            return;
        }
        let event = Event::UserStatus {
            user_id: user.clone(),
            status: after.0,
            text: after.1,
            at_ms: now.unix_ms,
        };
        out.push(Effect::ToFriends {
            user: user.clone(),
            event,
            followers: entry.followers().collect(),
        });
    }

    /// The sessions `user` holds on this node (attached or awaiting resume).
    pub fn sessions_of(&self, user: &str) -> &[SessionId] {
        self.users.get(user).map_or(&[], |e| e.sessions.as_slice())
    }

    /// Users with at least one session here.
    pub fn connected_users(&self) -> impl Iterator<Item = &UserId> + '_ {
        self.users
            .iter()
            .filter(|(_, e)| !e.sessions.is_empty())
            .map(|(u, _)| u)
    }

    /// Ends sessions whose resume window has passed.
    pub fn handle_timeout(&mut self, now: Now, out: &mut Vec<Effect>) {
        while let Some(&(deadline, session)) = self.expiries.first() {
            if deadline > now.mono {
                break;
            }
            self.expiries.pop_first();
            self.end_session(now, session, out);
        }
    }

    /// The next instant [`Users::handle_timeout`] has work to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.expiries.first().map(|(t, _)| *t)
    }

    fn end_session(&mut self, now: Now, session: SessionId, out: &mut Vec<Effect>) {
        let Some(s) = self.sessions.remove(&session) else {
            return;
        };
        if let Some(deadline) = s.detached_until {
            self.expiries.remove(&(deadline, session));
        }
        out.push(Effect::SessionEnded { session });
        if let Some(entry) = self.users.get_mut(&s.user) {
            let before = entry.visible();
            entry.sessions.retain(|&x| x != session);
            entry.last_active_ms = now.unix_ms;
            if entry.sessions.is_empty() {
                // Keep the row only for its last-active time; a production
                // directory would hand this to the presence store instead.
                self.notify_followers(now, &s.user, before, out);
                out.push(Effect::Domain(DomainEvent::UserOffline { user: s.user }));
            }
        }
    }
}

#[cfg(test)]
mod tests;
