//! A deterministic simulation of a node's shards, in the spirit of
//! quinn-proto's `Pair`: N [`ShardCore`]s, sessions as in-memory outboxes, a
//! virtual clock, and the harness itself carrying every message between
//! shards. Nothing runs on a thread and nothing reads the real clock, so a
//! test (or a fuzzer, or a property test) replays exactly from its seed.
//!
//! What the runtime guarantees, the harness keeps: each shard's mailbox is
//! one FIFO in the order messages were put into it, and messages from one
//! shard to another arrive in the order sent. What the runtime does not
//! guarantee, the harness varies under [`Delivery::Shuffled`]: how long a
//! message between two shards is in flight, and so how messages on
//! different links interleave, and which shard runs next.
//!
//! A shard-to-shard message travels a [`Link`]. Today every link joins two
//! shards of one node; a second node is another group of shards behind
//! slower links, which is where the cluster work extends this.
//!
//! The backend is a recorder: records, deliveries and domain events are
//! kept for tests to inspect; acknowledgements waiting on durability run at
//! once (or when [`Sim::sync`] is called, with [`Sim::hold_durable`]); the
//! history store is empty, so every read finds nothing.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::sync::Notify;

use crate::core::engine::chat::ChatLimits;
use crate::core::engine::lobbies::LobbyLimits;
use crate::core::engine::notifications::{Delivery as Dispatch, NotificationLimits};
use crate::core::engine::{DomainEvent, Now, Record, SessionId, UserId};
use crate::core::outbox::{Outbox, OutboxLimits, Queued};
use crate::core::shard::{BackendOp, Keys, Outputs, ReadOp, ShardCore, ShardMsg, ShardSettings};

pub mod cluster;
pub mod workload;

/// How the harness moves messages between shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Every message arrives at once, shards run in index order: the
    /// simplest schedule, for tests that read like a story.
    InOrder,
    /// Each shard-to-shard message is in flight for a random time up to
    /// `max_delay` (FIFO per link), and a random ready shard runs next.
    Shuffled { max_delay: Duration },
}

/// A one-way path between two shards, FIFO.
struct Link {
    in_flight: VecDeque<(Instant, ShardMsg)>,
}

/// A simulated session: its user and its outbox.
struct Client {
    session: SessionId,
    user: UserId,
    outbox: Arc<Outbox>,
}

/// What the simulated backend was asked to do.
#[derive(Default)]
pub struct Recorded {
    /// Records persisted, in order.
    pub records: Vec<Record>,
    /// Push and email deliveries queued.
    pub deliveries: Vec<Dispatch>,
    /// Domain events handed to the integration webhook.
    pub events: Vec<DomainEvent>,
}

/// N shard cores on a virtual clock.
pub struct Sim {
    now: Now,
    keys: Keys,
    shards: Vec<ShardCore>,
    mailboxes: Vec<VecDeque<ShardMsg>>,
    /// `links[from][to]`.
    links: Vec<Vec<Link>>,
    delivery: Delivery,
    rng: SmallRng,
    out: Outputs,
    clients: Vec<Client>,
    next_session: SessionId,
    hold_durable: bool,
    held: Vec<Box<dyn FnOnce() + Send>>,
    /// What the backend was asked to do.
    pub recorded: Recorded,
    /// Messages handled so far, over all shards.
    pub handled: u64,
}

/// Shard settings for simulations: the engines' defaults, a 30 s resume
/// window, a 100 ms matchmaking tick.
pub fn settings() -> ShardSettings {
    ShardSettings {
        resume_window: Duration::from_secs(30),
        chat: ChatLimits::default(),
        notifications: NotificationLimits {
            push_configured: true,
            email_configured: false,
            max_per_user: 200,
        },
        lobbies: LobbyLimits::default(),
        lobbies_per_game: 1,
        node: 1,
        matchmaking_tick: Duration::from_millis(100),
    }
}

/// Outbox bounds for simulated sessions: roomy, so a test sees everything.
fn outbox_limits() -> OutboxLimits {
    OutboxLimits {
        capacity: 100_000,
        capacity_bytes: 256 << 20,
        volatile_shed_at: 90_000,
        replay: 100_000,
        replay_bytes: 256 << 20,
    }
}

impl Sim {
    /// `shards` shard cores with `settings`, scheduled by `delivery` from `seed`.
    pub fn new(shards: usize, settings: ShardSettings, delivery: Delivery, seed: u64) -> Self {
        let now = Now {
            mono: Instant::now(),
            unix_ms: 1_800_000_000_000,
        };
        let count = shards.max(1);
        let mut rng = SmallRng::seed_from_u64(seed);
        let cores = (0..count)
            .map(|i| ShardCore::new(i, count, settings, now, rng.random()))
            .collect();
        let links = (0..count)
            .map(|_| {
                (0..count)
                    .map(|_| Link {
                        in_flight: VecDeque::new(),
                    })
                    .collect()
            })
            .collect();
        Self {
            now,
            keys: Keys::new(count),
            shards: cores,
            mailboxes: (0..count).map(|_| VecDeque::new()).collect(),
            links,
            delivery,
            rng,
            out: Outputs::default(),
            clients: Vec::new(),
            next_session: 1,
            hold_durable: false,
            held: Vec::new(),
            recorded: Recorded::default(),
            handled: 0,
        }
    }

    /// The key-to-shard map of the simulated node.
    pub fn keys(&self) -> Keys {
        self.keys
    }

    /// The virtual time.
    pub fn now(&self) -> Now {
        self.now
    }

    /// Shard `index`, to inspect its state.
    pub fn shard(&self, index: usize) -> &ShardCore {
        &self.shards[index]
    }

    /// Every shard.
    pub fn shards(&self) -> &[ShardCore] {
        &self.shards
    }

    /// Acknowledgements waiting on durability wait until [`Sim::sync`]
    /// (true) or run at once (false, the default).
    pub fn hold_durable(&mut self, hold: bool) {
        self.hold_durable = hold;
    }

    /// Everything queued for the store becomes durable: held
    /// acknowledgements run.
    pub fn sync(&mut self) {
        for then in self.held.drain(..) {
            then();
        }
    }

    /// A new session of `user`, attached on the user's shard (not yet run).
    pub fn connect(&mut self, user: &str) -> SessionId {
        let session = self.next_session;
        self.next_session += 1;
        let outbox = Arc::new(Outbox::new(outbox_limits(), Arc::new(Notify::new())));
        let user: UserId = Arc::from(user);
        self.clients.push(Client {
            session,
            user: user.clone(),
            outbox: outbox.clone(),
        });
        let msg = ShardMsg::Attach {
            session,
            user: user.clone(),
            resume_token: u128::from(session),
            outbox,
        };
        self.send(self.keys.of_user(&user), msg);
        session
    }

    /// The connection of `session` goes away; `resumable` keeps the
    /// session for its resume window, as a dropped socket does.
    pub fn disconnect(&mut self, session: SessionId, resumable: bool) {
        let Some(client) = self.client(session) else {
            return;
        };
        let (user, generation) = (client.user.clone(), client.outbox.generation());
        client.outbox.detach(generation);
        let msg = ShardMsg::Detach {
            session,
            generation,
            resumable,
        };
        self.send(self.keys.of_user(&user), msg);
    }

    fn client(&self, session: SessionId) -> Option<&Client> {
        self.clients.iter().find(|c| c.session == session)
    }

    /// The user of `session`.
    pub fn user(&self, session: SessionId) -> Option<UserId> {
        self.client(session).map(|c| c.user.clone())
    }

    /// The outbox of `session` (for messages that carry it).
    pub fn outbox(&self, session: SessionId) -> Arc<Outbox> {
        match self.client(session) {
            Some(c) => c.outbox.clone(),
            None => Arc::new(Outbox::new(outbox_limits(), Arc::new(Notify::new()))),
        }
    }

    /// Puts `msg` into shard `to`'s mailbox, as a session or the admin
    /// API does.
    pub fn send(&mut self, to: usize, msg: ShardMsg) {
        self.mailboxes[to].push_back(msg);
    }

    /// The frames queued to `session` since the last call, in order, as
    /// they would go on the wire.
    pub fn take_frames(&mut self, session: SessionId) -> Vec<Bytes> {
        let Some(client) = self.client(session) else {
            return Vec::new();
        };
        let mut out: Vec<Queued> = Vec::new();
        let generation = client.outbox.generation();
        let _ = client.outbox.take_batch(generation, usize::MAX, &mut out);
        out.iter().map(Queued::wire_bytes).collect()
    }

    /// Runs until no mailbox holds a message and nothing is in flight,
    /// advancing the clock past in-flight messages as needed (timers due on
    /// the way run too).
    pub fn run(&mut self) {
        loop {
            self.arrive();
            if let Some(index) = self.pick() {
                let msg = self.mailboxes[index].pop_front();
                if let Some(msg) = msg {
                    self.handled += 1;
                    self.shards[index].handle(self.now, msg);
                    self.carry_out(index);
                }
                continue;
            }
            // Nothing ready: jump to the next arrival, if any.
            let next = self
                .links
                .iter()
                .flatten()
                .filter_map(|l| l.in_flight.front().map(|(at, _)| *at))
                .min();
            match next {
                Some(at) => self.advance_to(at),
                None => return,
            }
        }
    }

    /// Moves the clock forward by `by`, running every timer due on the way
    /// (in order of their deadlines) and everything they lead to.
    pub fn advance(&mut self, by: Duration) {
        let until = self.now.mono + by;
        loop {
            self.run();
            let due = self
                .shards
                .iter()
                .enumerate()
                .map(|(i, s)| (s.poll_timeout(), i))
                .filter(|(at, _)| *at <= until)
                .min();
            let Some((at, index)) = due else { break };
            self.set_clock(at.max(self.now.mono));
            self.shards[index].handle_timeout(self.now);
            self.carry_out(index);
        }
        self.set_clock(until);
        self.run();
    }

    fn advance_to(&mut self, at: Instant) {
        if at > self.now.mono {
            // Timers due before the arrival run first.
            loop {
                let due = self
                    .shards
                    .iter()
                    .enumerate()
                    .map(|(i, s)| (s.poll_timeout(), i))
                    .filter(|(t, _)| *t <= at)
                    .min();
                let Some((t, index)) = due else { break };
                self.set_clock(t.max(self.now.mono));
                self.shards[index].handle_timeout(self.now);
                self.carry_out(index);
            }
            self.set_clock(at);
        }
    }

    fn set_clock(&mut self, mono: Instant) {
        if mono > self.now.mono {
            let ms = (mono - self.now.mono).as_millis() as i64;
            self.now = Now {
                mono,
                unix_ms: self.now.unix_ms + ms,
            };
        }
    }

    /// Moves every message whose flight is over into its mailbox.
    fn arrive(&mut self) {
        let now = self.now.mono;
        for (to, mailbox) in self.mailboxes.iter_mut().enumerate() {
            for from in 0..self.links.len() {
                let link = &mut self.links[from][to];
                while link.in_flight.front().is_some_and(|(at, _)| *at <= now) {
                    if let Some((_, msg)) = link.in_flight.pop_front() {
                        mailbox.push_back(msg);
                    }
                }
            }
        }
    }

    /// The next shard to run: the lowest ready one in order, a random
    /// ready one when shuffled.
    fn pick(&mut self) -> Option<usize> {
        let ready: Vec<usize> = (0..self.mailboxes.len())
            .filter(|i| !self.mailboxes[*i].is_empty())
            .collect();
        match (self.delivery, ready.len()) {
            (_, 0) => None,
            (Delivery::InOrder, _) => ready.first().copied(),
            (Delivery::Shuffled { .. }, n) => Some(ready[self.rng.random_range(0..n)]),
        }
    }

    /// Carries out what shard `from` produced: the simulated backend, and
    /// messages onto their links.
    fn carry_out(&mut self, from: usize) {
        loop {
            self.shards[from].drain_outputs(&mut self.out);
            if self.out.is_empty() {
                return;
            }
            let backend = std::mem::take(&mut self.out.backend);
            for op in backend {
                self.backend(from, op);
            }
            let to_shards = std::mem::take(&mut self.out.to_shards);
            for (to, msg) in to_shards {
                let delay = match self.delivery {
                    Delivery::InOrder => Duration::ZERO,
                    Delivery::Shuffled { max_delay } => {
                        let most = max_delay.as_micros() as u64;
                        Duration::from_micros(self.rng.random_range(0..=most))
                    }
                };
                let link = &mut self.links[from][to];
                // FIFO per link: never earlier than the message before it.
                let at = link
                    .in_flight
                    .back()
                    .map_or(self.now.mono + delay, |(last, _)| {
                        (*last).max(self.now.mono + delay)
                    });
                link.in_flight.push_back((at, msg));
            }
        }
    }

    fn backend(&mut self, shard: usize, op: BackendOp) {
        match op {
            BackendOp::Persist(record) => self.recorded.records.push(record),
            BackendOp::Deliver(delivery) => self.recorded.deliveries.push(delivery),
            BackendOp::Publish(event) => self.recorded.events.push(event),
            BackendOp::AfterDurable(then) => {
                if self.hold_durable {
                    self.held.push(then);
                } else {
                    then();
                }
            }
            // The simulated store is empty; a warm-up's state goes back to
            // its shard before the join's reply, as the readers do.
            BackendOp::Read(ReadOp::Page(read)) => {
                if let Some(answer) = read.finish(Some(Vec::new())) {
                    answer.push();
                }
            }
            BackendOp::Read(ReadOp::Warm(read)) => {
                let (msg, answer) = read.finish(Some((None, Vec::new())));
                self.mailboxes[shard].push_back(msg);
                if let Some(answer) = answer {
                    answer.push();
                }
            }
        }
    }
}
