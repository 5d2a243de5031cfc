//! One node's side of the ownership protocol: which slots it may act on
//! now, what its next sync with the coordinator carries, and what the
//! shell must do when a slot arrives or leaves. A deterministic state
//! machine: time and coordinator replies in, a sync request and
//! [`OwnershipEvent`]s out. Owns the lease arithmetic; never a socket, a
//! clock or a slot's data.
//!
//! **The lease rule.** A node acts on a slot only while the table it last
//! heard says the slot is its, and only until `sent + ttl - margin`, where
//! `sent` is when it sent the sync that table answered. The coordinator
//! keeps the membership until at least `sent + ttl` (it saw the sync after
//! it was sent) and grants the slot to another node only after the
//! membership has expired, so the old owner has stopped before the new one
//! starts, whatever the network does; `margin` absorbs clock-rate drift.
//!
//! **Planned hand-over.** When the shared-out slot map moves a slot away
//! (a node joined, or this one is leaving), the slot is *released*: the
//! node stops acting on it at once ([`OwnershipEvent::Released`]), the
//! shell stores the slot's state, calls [`Ownership::handed_over`], and
//! only then does the next sync give the slot back, for its new owner to
//! claim and load.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::lease::{Epoch, Member, Owner, SyncReply, SyncRequest};
use super::slots::preferred_owner;
use super::{NodeId, Slot, SLOTS};

/// The protocol's timings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OwnershipSettings {
    /// How often a node syncs with the coordinator.
    pub heartbeat: Duration,
    /// How long a membership lives at the coordinator after a sync.
    pub lease_ttl: Duration,
    /// How much earlier than the coordinator a node stops acting.
    pub margin: Duration,
}

impl Default for OwnershipSettings {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_millis(500),
            lease_ttl: Duration::from_secs(3),
            margin: Duration::from_millis(300),
        }
    }
}

impl OwnershipSettings {
    /// The settings' consistency: a lease outlives a few heartbeats, and the
    /// margin is less than a lease.
    pub fn check(&self) -> Result<(), String> {
        if self.heartbeat.is_zero() {
            return Err("cluster.heartbeat must be more than zero".into());
        }
        if self.lease_ttl < self.heartbeat * 3 {
            return Err(format!(
                "cluster.lease_ttl ({:?}) must be at least three heartbeats ({:?})",
                self.lease_ttl,
                self.heartbeat * 3
            ));
        }
        if self.margin >= self.lease_ttl - self.heartbeat {
            return Err(format!(
                "cluster.lease_margin ({:?}) must be less than the lease minus a heartbeat ({:?})",
                self.margin,
                self.lease_ttl - self.heartbeat
            ));
        }
        Ok(())
    }
}

/// What the shell must do about a slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnershipEvent {
    /// The slot is this node's under `epoch`: load its state (or, after a
    /// [`OwnershipEvent::Suspended`] with the same epoch, carry on with
    /// the state still in memory) and serve it.
    Acquired { slot: Slot, epoch: Epoch },
    /// A planned move: stop serving the slot now (requests wait or get a
    /// retryable code), store its state, then call
    /// [`Ownership::handed_over`].
    Released { slot: Slot, epoch: Epoch },
    /// The lease lapsed before a renewal came back (the coordinator is
    /// slow or unreachable): stop serving every slot now. The slots may
    /// come back with the same epoch.
    Suspended { slot: Slot, epoch: Epoch },
    /// Another node owns the slot now (this node's lease expired at the
    /// coordinator): whatever this node holds of it is stale; drop it.
    Lost { slot: Slot, epoch: Epoch },
    /// The live members changed.
    Members {
        joined: Vec<NodeId>,
        left: Vec<NodeId>,
    },
    /// This node has departed: it owns nothing and is no longer a member.
    Departed,
}

/// One node's ownership state.
#[derive(Debug)]
pub struct Ownership {
    me: NodeId,
    settings: OwnershipSettings,
    /// Slots served now, with their epochs.
    acting: BTreeMap<Slot, Epoch>,
    /// Slots held, not served: suspended with a lapsed lease (they may come
    /// back with the same epoch), or released and being stored.
    held: BTreeMap<Slot, (Epoch, Hold)>,
    /// Released slots whose state is stored: given back by the next sync,
    /// and kept in every sync until a reply shows them gone.
    returning: BTreeMap<Slot, Epoch>,
    members: Vec<Member>,
    owners: Vec<Option<Owner>>,
    /// The version of `members` and `owners` (0: none yet).
    version: u64,
    /// The preferred node of every slot, computed once per change of the
    /// members slots are shared over (`sharing`).
    sharing: Vec<NodeId>,
    preferred: Vec<Option<NodeId>>,
    /// Acting is allowed while `now < lease_until`.
    lease_until: Option<Instant>,
    in_flight: Option<(u64, Instant)>,
    next_id: u64,
    /// When the next sync is due; `None`: at the next tick.
    next_sync: Option<Instant>,
    /// The latest time seen, for [`Ownership::next_wakeup`].
    last_now: Instant,
    leaving: bool,
    departing: bool,
    departed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hold {
    Suspended,
    Storing,
}

impl Ownership {
    /// A node that owns nothing yet; its first [`Ownership::tick`] syncs.
    pub fn new(me: NodeId, settings: OwnershipSettings, now: Instant) -> Self {
        Self {
            me,
            settings,
            acting: BTreeMap::new(),
            held: BTreeMap::new(),
            returning: BTreeMap::new(),
            members: Vec::new(),
            owners: vec![None; usize::from(SLOTS)],
            version: 0,
            sharing: Vec::new(),
            preferred: vec![None; usize::from(SLOTS)],
            lease_until: None,
            in_flight: None,
            next_id: 1,
            next_sync: None,
            last_now: now,
            leaving: false,
            departing: false,
            departed: false,
        }
    }

    /// This node.
    pub fn node(&self) -> NodeId {
        self.me
    }

    /// The epoch under which this node may act on `slot` at `now`, if it may.
    pub fn serving(&self, slot: Slot, now: Instant) -> Option<Epoch> {
        if self.lease_until.is_some_and(|until| now < until) {
            self.acting.get(&slot).copied()
        } else {
            None
        }
    }

    /// Until when the slots in [`Ownership::acting`] may be served (set by
    /// each answered sync; `None` before the first).
    pub fn lease_until(&self) -> Option<Instant> {
        self.lease_until
    }

    /// Slots served now (ignoring a lapse not yet seen by a tick).
    pub fn acting(&self) -> impl Iterator<Item = (Slot, Epoch)> + '_ {
        self.acting.iter().map(|(s, e)| (*s, *e))
    }

    /// The owner of `slot` by the last table heard, served or not.
    pub fn owner_of(&self, slot: Slot) -> Option<Owner> {
        self.owners[slot.index()]
    }

    /// The live members by the last reply.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// True once [`Ownership::leave`] was called.
    pub fn leaving(&self) -> bool {
        self.leaving
    }

    /// True once the last sync of a departure has been answered.
    pub fn departed(&self) -> bool {
        self.departed
    }

    /// When [`Ownership::tick`] next has something to do.
    pub fn next_wakeup(&self) -> Option<Instant> {
        if self.departed {
            return None;
        }
        let sync = match self.in_flight {
            // Given up on a lease after it was sent.
            Some((_, sent)) => sent + self.settings.lease_ttl,
            None => self.next_sync.unwrap_or(self.last_now),
        };
        let lapse = self.lease_until.filter(|_| !self.acting.is_empty());
        Some(lapse.map_or(sync, |until| until.min(sync)))
    }

    /// Starts draining: from the next sync on, this node counts for no
    /// slot; every slot it holds is released (stored, handed over), and
    /// once none is left its membership ends.
    pub fn leave(&mut self) {
        self.leaving = true;
    }

    /// The state of a released slot is stored: the next sync gives it back.
    pub fn handed_over(&mut self, slot: Slot) {
        if let Some((epoch, Hold::Storing)) = self.held.get(&slot).copied() {
            self.held.remove(&slot);
            self.returning.insert(slot, epoch);
            // Due now: the shell ticks right after handing slots over.
            self.next_sync = None;
        }
    }

    /// Moves the clock on: stops serving when the lease lapses, and returns
    /// the next sync when one is due (at most one in flight; one unanswered
    /// for a whole lease is given up and replaced).
    pub fn tick(&mut self, now: Instant, out: &mut Vec<OwnershipEvent>) -> Option<SyncRequest> {
        if self.departed {
            return None;
        }
        self.last_now = self.last_now.max(now);
        if self.lease_until.is_some_and(|until| now >= until) {
            self.suspend_all(out);
        }
        if let Some((_, sent)) = self.in_flight {
            if now.duration_since(sent) < self.settings.lease_ttl {
                return None;
            }
            self.in_flight = None;
        }
        if self.next_sync.is_some_and(|at| now < at) {
            return None;
        }
        // Planned moves, decided on the last table heard.
        self.share_out();
        if !self.members.is_empty() {
            let moving: Vec<(Slot, Epoch)> = self
                .acting
                .iter()
                .filter(|(slot, _)| self.leaving || !self.prefers(**slot))
                .map(|(s, e)| (*s, *e))
                .collect();
            for (slot, epoch) in moving {
                self.acting.remove(&slot);
                self.held.insert(slot, (epoch, Hold::Storing));
                out.push(OwnershipEvent::Released { slot, epoch });
            }
            // Suspended slots this node no longer prefers go back too: their
            // state stays where the last owner stored it.
            let unwanted: Vec<(Slot, Epoch)> = self
                .held
                .iter()
                .filter(|(slot, (_, hold))| {
                    *hold == Hold::Suspended && (self.leaving || !self.prefers(**slot))
                })
                .map(|(s, (e, _))| (*s, *e))
                .collect();
            for (slot, epoch) in unwanted {
                self.held.insert(slot, (epoch, Hold::Storing));
                out.push(OwnershipEvent::Released { slot, epoch });
            }
        }
        let depart = self.leaving && self.acting.is_empty() && self.held.is_empty();
        let claims = if self.leaving || self.members.is_empty() {
            Vec::new()
        } else {
            Slot::all()
                .filter(|slot| {
                    self.prefers(*slot)
                        && !self.acting.contains_key(slot)
                        && !self.held.contains_key(slot)
                        && !self.returning.contains_key(slot)
                        && self.claimable(*slot)
                })
                .collect()
        };
        let id = self.next_id;
        self.next_id += 1;
        self.in_flight = Some((id, now));
        self.departing = depart;
        self.next_sync = Some(now + self.settings.heartbeat);
        Some(SyncRequest {
            id,
            node: self.me,
            ttl_ms: self.settings.lease_ttl.as_millis() as u64,
            leaving: self.leaving,
            depart,
            releases: self.returning.iter().map(|(s, e)| (*s, *e)).collect(),
            claims,
            known_version: self.version,
        })
    }

    /// The coordinator did not answer (or the answer cannot be read): the
    /// next tick tries again.
    pub fn sync_failed(&mut self, id: u64) {
        if self.in_flight.is_some_and(|(i, _)| i == id) {
            self.in_flight = None;
        }
    }

    /// The coordinator answered the sync `reply.id` (sent at the time the
    /// in-flight record keeps); a reply to anything but the sync in flight
    /// is ignored.
    pub fn synced(&mut self, now: Instant, reply: SyncReply, out: &mut Vec<OwnershipEvent>) {
        let Some((id, sent)) = self.in_flight else {
            return;
        };
        if id != reply.id {
            return;
        }
        let owners = match reply.owners {
            Some(owners) if owners.len() == usize::from(SLOTS) => owners,
            // Unchanged since the version this node holds.
            None if reply.version == self.version && self.version != 0 => {
                std::mem::take(&mut self.owners)
            }
            // Not the table this node holds and no table sent: as if
            // unanswered, and ask for the whole table next time.
            _ => {
                self.in_flight = None;
                self.version = 0;
                return;
            }
        };
        self.owners = owners;
        self.version = reply.version;
        self.in_flight = None;
        self.last_now = self.last_now.max(now);
        if self.departing {
            for (slot, epoch) in std::mem::take(&mut self.acting) {
                out.push(OwnershipEvent::Suspended { slot, epoch });
            }
            self.held.clear();
            self.returning.clear();
            self.departed = true;
            self.lease_until = None;
            self.members.clear();
            out.push(OwnershipEvent::Departed);
            return;
        }
        let joined = missing_from(&reply.members, &self.members);
        let left = missing_from(&self.members, &reply.members);
        if !joined.is_empty() || !left.is_empty() {
            out.push(OwnershipEvent::Members { joined, left });
        }
        self.members = reply.members;
        // Returned slots the table no longer gives this node are gone.
        let owners = &self.owners;
        let me = self.me;
        self.returning.retain(|slot, epoch| {
            owners[slot.index()]
                == Some(Owner {
                    node: me,
                    epoch: *epoch,
                })
        });
        let until = sent + self.settings.lease_ttl - self.settings.margin;
        self.lease_until = Some(until);
        let live = now < until;
        for slot in Slot::all() {
            let mine = self.owners[slot.index()].filter(|o| o.node == self.me);
            if let Some(epoch) = self.acting.get(&slot).copied() {
                if mine.map(|o| o.epoch) != Some(epoch) {
                    self.acting.remove(&slot);
                    out.push(OwnershipEvent::Lost { slot, epoch });
                }
            }
            if let Some((epoch, _)) = self.held.get(&slot).copied() {
                if mine.map(|o| o.epoch) != Some(epoch) {
                    // Suspended, or being stored: either way stale now.
                    self.held.remove(&slot);
                    out.push(OwnershipEvent::Lost { slot, epoch });
                }
            }
            let Some(owner) = mine else { continue };
            if !live || self.acting.contains_key(&slot) || self.returning.contains_key(&slot) {
                continue;
            }
            match self.held.get(&slot) {
                Some((_, Hold::Storing)) => {}
                Some((_, Hold::Suspended)) | None => {
                    self.held.remove(&slot);
                    self.acting.insert(slot, owner.epoch);
                    out.push(OwnershipEvent::Acquired {
                        slot,
                        epoch: owner.epoch,
                    });
                }
            }
        }
        if !live {
            self.suspend_all(out);
        }
    }

    fn suspend_all(&mut self, out: &mut Vec<OwnershipEvent>) {
        for (slot, epoch) in std::mem::take(&mut self.acting) {
            self.held.insert(slot, (epoch, Hold::Suspended));
            out.push(OwnershipEvent::Suspended { slot, epoch });
        }
    }

    /// Recomputes each slot's preferred node when the members slots are
    /// shared out over (the live ones not leaving) have changed.
    fn share_out(&mut self) {
        let sharing: Vec<NodeId> = self
            .members
            .iter()
            .filter(|m| !m.leaving)
            .map(|m| m.node)
            .collect();
        if sharing != self.sharing {
            self.preferred = Slot::all()
                .map(|slot| preferred_owner(slot, &sharing))
                .collect();
            self.sharing = sharing;
        }
    }

    /// Whether this node is where `slot` should live (as of the last
    /// [`Ownership::share_out`]).
    fn prefers(&self, slot: Slot) -> bool {
        self.preferred[slot.index()] == Some(self.me)
    }

    /// Worth claiming by the last table: free, or held by a node that is no
    /// longer a member, or this node's.
    fn claimable(&self, slot: Slot) -> bool {
        match self.owners[slot.index()] {
            None => true,
            Some(o) => o.node == self.me || !self.members.iter().any(|m| m.node == o.node),
        }
    }
}

/// The nodes of `these` that `those` lacks.
fn missing_from(these: &[Member], those: &[Member]) -> Vec<NodeId> {
    these
        .iter()
        .filter(|m| !those.iter().any(|o| o.node == m.node))
        .map(|m| m.node)
        .collect()
}
