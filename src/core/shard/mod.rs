//! The shard core: everything one shard owns (its engines' state and the
//! sessions it can reach) and how it answers a message, as a sans-IO state
//! machine. A message and the time go in; frames go into session outboxes,
//! and messages for other shards and work for the backend come out as
//! [`Outputs`]. No thread, mailbox, clock or store lives here: the runtime
//! (`crate::runtime::shards`) runs a core per thread, and the simulation
//! harness (`crate::core::sim`) runs many on a virtual clock.
//!
//! A message a shard sends itself is queued and handled after the current
//! one, exactly as a message to another shard would be, never recursively.

mod apply;
mod handle;
pub mod keys;
pub mod msg;
pub mod reads;
pub mod sessions;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use huddle_schema::{Encoder, EventFrame};
use rand::rngs::SmallRng;
use rand::SeedableRng;

use crate::core::engine::chat::{ChatContext, Chats};
use crate::core::engine::lobbies::Lobbies;
use crate::core::engine::matchmaking::Queues;
use crate::core::engine::memberships::UserLobbies;
use crate::core::engine::notifications::{Delivery, Notifications};
use crate::core::engine::social::{Pairs, Rosters};
use crate::core::engine::users::{self, Users};
use crate::core::engine::{DomainEvent, Effect, Now, Record, SessionId, UserId};
use crate::core::outbox::{Closed, Push};

pub use apply::lobby_of;
pub use keys::{shard_of, shard_of_slot, Keys};
pub use msg::*;
pub use reads::{Answer, PageRead, ReadOp, WarmRead};
pub use sessions::{Role, Sessions};

/// How often a shard drops chat members whose sessions have ended.
const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// Work for the backend, in the order the core asked for it: a record
/// must be queued before an acknowledgement that waits for it.
pub enum BackendOp {
    /// Keep a record (acknowledgement journal, then the store).
    Persist(Record),
    /// Queue a push or email delivery of a notification (stored first).
    Deliver(Delivery),
    /// Hand a domain event to the integration webhook, when one is set.
    Publish(DomainEvent),
    /// Run once everything this shard has queued for the store so far is
    /// durable (at once when nothing waits).
    AfterDurable(Box<dyn FnOnce() + Send>),
    /// Read history; when the readers refuse (backed up), hand the read
    /// back to [`ShardCore::read_refused`].
    Read(ReadOp),
}

/// What handling messages produced besides frames in outboxes.
#[derive(Default)]
pub struct Outputs {
    /// Messages for other shards of this node, in the order sent.
    pub to_shards: Vec<(usize, ShardMsg)>,
    /// Work for the backend, in order.
    pub backend: Vec<BackendOp>,
}

impl Outputs {
    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.to_shards.is_empty() && self.backend.is_empty()
    }
}

/// One shard's state and logic.
pub struct ShardCore {
    index: usize,
    keys: Keys,
    /// The time of the message being handled.
    now: Now,
    users: Users,
    chats: Chats,
    /// Friend/block authority of the pairs this shard owns.
    pairs: Pairs,
    /// The relations of the users this shard owns.
    rosters: Rosters,
    notifications: Notifications,
    lobbies: Lobbies,
    /// Lobbies each user this shard owns is in, with their game, oldest first.
    user_lobbies: UserLobbies,
    /// The matchmaking queues of the games this shard owns.
    queues: Queues,
    /// Every session this shard can deliver to, and why.
    sessions: Sessions,
    matchmaking_tick: Duration,
    next_matchmaking_tick: Instant,
    next_sweep: Instant,
    encoder: Encoder,
    effects: Vec<Effect>,
    /// Messages this shard sent itself, handled after the current one.
    local: VecDeque<ShardMsg>,
    out: Outputs,
    /// Match lobby ids; seeded, so a simulation replays exactly.
    rng: SmallRng,
}

/// What the chat engine may ask this shard: lobby membership from the
/// lobby engine and blocks from the pair authority.
pub(crate) struct Neighbours<'a> {
    pairs: &'a Pairs,
    lobbies: &'a Lobbies,
}

impl ChatContext for Neighbours<'_> {
    fn lobby_member(&self, lobby: &str, user: &str) -> Option<bool> {
        self.lobbies.chat_member(lobby, user)
    }

    fn direct_block(&self, sender: &str, recipient: &str) -> Option<String> {
        self.pairs.direct_block(sender, recipient)
    }
}

impl ShardCore {
    /// Shard `index` of `count`, at `now`; `seed` drives the ids it makes
    /// up (a formed match's lobby).
    pub fn new(index: usize, count: usize, settings: ShardSettings, now: Now, seed: u64) -> Self {
        Self {
            index,
            keys: Keys::new(count),
            now,
            users: Users::new(index as u16, settings.resume_window),
            chats: Chats::new(settings.chat, settings.node, index as u16),
            pairs: Pairs::new(),
            rosters: Rosters::new(),
            notifications: Notifications::new(settings.notifications, settings.node, index as u16),
            lobbies: Lobbies::new(settings.lobbies),
            user_lobbies: UserLobbies::new(settings.lobbies_per_game),
            queues: Queues::new(),
            sessions: Sessions::default(),
            matchmaking_tick: settings.matchmaking_tick,
            next_matchmaking_tick: now.mono,
            next_sweep: now.mono + SWEEP_EVERY,
            encoder: Encoder::new(),
            effects: Vec::new(),
            local: VecDeque::new(),
            out: Outputs::default(),
            rng: SmallRng::seed_from_u64(seed),
        }
    }

    /// This shard's index.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The users engine, to inspect (tests, the simulation harness).
    pub fn users(&self) -> &Users {
        &self.users
    }

    /// The chats engine, to inspect.
    pub fn chats(&self) -> &Chats {
        &self.chats
    }

    /// The lobbies engine, to inspect.
    pub fn lobbies(&self) -> &Lobbies {
        &self.lobbies
    }

    /// The rosters of the users this shard owns, to inspect.
    pub fn rosters(&self) -> &Rosters {
        &self.rosters
    }

    /// The friend/block authority of this shard's pairs, to inspect.
    pub fn pairs(&self) -> &Pairs {
        &self.pairs
    }

    /// The notifications engine, to inspect.
    pub fn notifications(&self) -> &Notifications {
        &self.notifications
    }

    /// The matchmaking queues, to inspect.
    pub fn queues(&self) -> &Queues {
        &self.queues
    }

    /// The sessions this shard holds outboxes for, and why.
    pub fn sessions(&self) -> &Sessions {
        &self.sessions
    }

    /// The lobbies a user owned here is in, oldest first.
    pub fn lobbies_of(&self, user: &str) -> Vec<Arc<str>> {
        self.user_lobbies.lobbies_of(user).cloned().collect()
    }

    /// The key-to-shard map this core routes by.
    pub fn keys(&self) -> Keys {
        self.keys
    }

    /// Takes this shard's rows of what the store held.
    pub fn restore(&mut self, restore: &Restore) {
        let count = self.keys.count();
        for r in &restore.relations {
            // Each row holds the whole pair, so either row restores it.
            let Some(pair) = r.pair else { continue };
            if self.keys.of_pair(&r.user, &r.other) == self.index {
                self.pairs.restore(&r.user, &r.other, pair);
            }
            let user_is_lo = r.user < r.other;
            for (user, other, is_lo) in [
                (&r.user, &r.other, user_is_lo),
                (&r.other, &r.user, !user_is_lo),
            ] {
                if shard_of(user.as_bytes(), count) == self.index {
                    let (relation, since_ms) = pair.view(is_lo);
                    self.rosters.set(user, other, relation, since_ms);
                }
            }
        }
        // Pending push/email deliveries come back from the webhook outbox's
        // own table (the source of truth), not from here.
        for r in &restore.ratings {
            if self.keys.of_game(&r.game) == self.index {
                self.queues.restore_rating(r);
            }
        }
        for n in &restore.notifications {
            if shard_of(n.user_id.as_bytes(), count) == self.index {
                self.notifications.restore(n.clone());
            }
        }
        for c in &restore.channels {
            if self.keys.of_chat(&format!("channel:{}", c.name)) == self.index {
                self.chats.restore_channel(c.clone());
            }
        }
    }

    /// Handles one message at `now`, then every message it led this shard
    /// to send itself. What is for others waits in the outputs.
    pub fn handle(&mut self, now: Now, msg: ShardMsg) {
        self.now = now;
        self.dispatch(msg);
        while let Some(msg) = self.local.pop_front() {
            self.dispatch(msg);
        }
    }

    /// The earliest time [`ShardCore::handle_timeout`] has work.
    pub fn poll_timeout(&self) -> Instant {
        let matchmaking = self.queues.active().then_some(self.next_matchmaking_tick);
        [
            self.users.poll_timeout(),
            self.lobbies.poll_timeout(),
            matchmaking,
        ]
        .into_iter()
        .flatten()
        .fold(self.next_sweep, Instant::min)
    }

    /// Runs whatever is due at `now`: resume windows, lobby timers, the
    /// matchmaking tick, the sweep of ended sessions.
    pub fn handle_timeout(&mut self, now: Now) {
        self.now = now;
        self.users.handle_timeout(now, &mut self.effects);
        self.apply(None);
        self.lobbies.handle_timeout(now, &mut self.effects);
        self.apply(None);
        if self.queues.active() && now.mono >= self.next_matchmaking_tick {
            self.next_matchmaking_tick = now.mono + self.matchmaking_tick;
            self.queues.tick(now, &mut self.effects);
            self.apply(None);
        }
        if now.mono >= self.next_sweep {
            self.sweep_sessions(now);
        }
        while let Some(msg) = self.local.pop_front() {
            self.dispatch(msg);
        }
    }

    /// The backend could not take a read (its readers are backed up).
    pub fn read_refused(&mut self, now: Now, read: ReadOp) {
        self.now = now;
        self.refused_read(read);
        while let Some(msg) = self.local.pop_front() {
            self.dispatch(msg);
        }
    }

    /// Moves what handling produced into `out` (appended, in order).
    pub fn drain_outputs(&mut self, out: &mut Outputs) {
        out.to_shards.append(&mut self.out.to_shards);
        out.backend.append(&mut self.out.backend);
    }

    /// Closes every session whose user lives here (the node is stopping).
    pub fn close_sessions(&mut self) {
        for outbox in self.sessions.homes() {
            outbox.close(Closed::Ended);
        }
    }

    /// Sends a message to shard `to`: queued for later when it is this one.
    fn send(&mut self, to: usize, msg: ShardMsg) {
        if to == self.index {
            self.local.push_back(msg);
        } else {
            self.out.to_shards.push((to, msg));
        }
    }

    fn backend(&mut self, op: BackendOp) {
        self.out.backend.push(op);
    }

    /// Queues an encoded event to every session of `user` (owned here).
    fn push_to_user(&mut self, user: &str, frame: &EventFrame, skip: &[SessionId]) {
        let mut ended = Vec::new();
        for session in self.users.sessions_of(user) {
            if skip.contains(session) {
                continue;
            }
            if let Some(outbox) = self.sessions.home(*session) {
                if let Push::Overflowed(Closed::OverflowWhileAway) = outbox.push_event(frame) {
                    ended.push(*session);
                }
            }
        }
        for session in ended {
            let cmd = users::Command::Detach {
                session,
                resumable: false,
            };
            self.users.handle(self.now, cmd, &mut self.effects);
            self.apply(None);
        }
    }

    /// Queues an encoded event to every session of each user, wherever
    /// their shard is: one message per other shard.
    /// Sessions in `skip` already have the event (status followers).
    fn push_to_users(
        &mut self,
        users: impl IntoIterator<Item = UserId>,
        frame: &EventFrame,
        skip: &[SessionId],
    ) {
        let count = self.keys.count();
        let mut remote: Vec<Vec<UserId>> = vec![Vec::new(); count];
        for user in users {
            let shard = shard_of(user.as_bytes(), count);
            if shard == self.index {
                self.push_to_user(&user, frame, skip);
            } else {
                remote[shard].push(user);
            }
        }
        for (shard, users) in remote.into_iter().enumerate() {
            if !users.is_empty() {
                let frame = frame.clone();
                let skip = (!skip.is_empty()).then(|| Box::from(skip));
                self.send(shard, ShardMsg::ToUsers { users, frame, skip });
            }
        }
    }
}
