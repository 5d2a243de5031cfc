//! The shard runtime: one OS thread per shard (pinned to a core when asked),
//! each running a sans-IO [`ShardCore`] fed by a bounded crossbeam mailbox.
//!
//! The loop is thin: it reads the clock, hands the core each message, then
//! carries out what the core produced — messages to peer shards (parked in
//! a per-peer FIFO when a peer's mailbox is full) and work for the backend
//! (records, deliveries, reads). Domain rules never live here; they are in
//! the engines and the shard core. It never blocks on a client: outbox
//! pushes are non-blocking and bounded.

use std::collections::VecDeque;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender, TrySendError};
use parking_lot::Mutex;

use crate::backend::store::{History, Read, ReadJob, ReadResult};
use crate::backend::webhook::Webhooks;
use crate::core::engine::{Now, SessionId};
use crate::core::shard::{
    BackendOp, Keys, Outputs, ReadOp, Restore, ShardCore, ShardMsg, ShardSettings,
};
use crate::telemetry::metrics::metrics;

/// Messages to another shard that found its mailbox full, kept in order
/// and retried every loop turn. Past this many the shard waits for room
/// instead (backpressure; never a drop).
const MAX_DEFERRED: usize = 65_536;

/// What a mailbox carries: a message for the core, or the runtime's own
/// shutdown control.
enum Mail {
    Msg(ShardMsg),
    /// Shutdown, first phase: answer how many messages this shard has sent
    /// to peers so far and how many are still parked.
    Quiesce(Sender<(u64, usize)>),
    /// Shutdown, last phase: stop the loop (peers hold each other's
    /// mailboxes open, so they never disconnect on their own).
    Stop,
}

struct Envelope {
    mail: Mail,
    sent_at: Instant,
}

impl Envelope {
    fn new(msg: ShardMsg) -> Self {
        Self {
            mail: Mail::Msg(msg),
            sent_at: Instant::now(),
        }
    }
}

/// Handles to every shard's mailbox, and the key routing over them.
/// Cloned freely.
#[derive(Clone)]
pub struct Shards {
    mailboxes: Arc<[Sender<Envelope>]>,
    keys: Keys,
}

/// The threads behind [`Shards`]; stopped and joined at shutdown.
pub struct ShardThreads {
    joins: Vec<JoinHandle<()>>,
    stop: Shards,
}

/// The services every shard hands work to.
#[derive(Clone)]
pub struct Services {
    pub history: History,
    pub webhooks: Webhooks,
}

/// The mailbox was full; the message comes back.
pub struct Busy(pub ShardMsg);

/// How a shard-to-shard send went.
enum PeerSend {
    Sent,
    Full(ShardMsg),
    /// The peer has stopped (shutdown).
    Gone,
}

impl Shards {
    /// Starts `count` shard threads.
    pub fn start(
        count: usize,
        mailbox: usize,
        pin: bool,
        settings: ShardSettings,
        services: Services,
        restore: Arc<Restore>,
    ) -> (Shards, ShardThreads) {
        let cores = if pin {
            core_affinity::get_core_ids().unwrap_or_default()
        } else {
            Vec::new()
        };
        let (senders, receivers): (Vec<_>, Vec<_>) = (0..count).map(|_| bounded(mailbox)).unzip();
        let shards = Shards {
            mailboxes: senders.into(),
            keys: Keys::new(count),
        };
        let mut joins = Vec::with_capacity(count);
        for (index, rx) in receivers.into_iter().enumerate() {
            let services = services.clone();
            let peers = shards.clone();
            let restore = restore.clone();
            let cpu = (!cores.is_empty()).then(|| cores[index % cores.len()]);
            let join = std::thread::Builder::new()
                .name(format!("huddle-shard-{index}"))
                .spawn(move || {
                    if let Some(cpu) = cpu {
                        core_affinity::set_for_current(cpu);
                    }
                    let mut core = ShardCore::new(index, count, settings, now(), rand::random());
                    core.restore(&restore);
                    drop(restore);
                    Runner::new(core, services, peers, rx).run();
                })
                .expect("spawning a shard thread at start-up");
            joins.push(join);
        }
        let threads = ShardThreads {
            joins,
            stop: shards.clone(),
        };
        (shards, threads)
    }

    /// The key-to-shard map.
    pub fn keys(&self) -> Keys {
        self.keys
    }

    /// The shard that owns a lobby (and its chat, `lobby:<id>`).
    pub fn of_lobby(&self, lobby_id: &str) -> usize {
        self.keys.of_lobby(lobby_id)
    }

    /// The shard that owns a game's matchmaking queues (every mode).
    pub fn of_game(&self, game: &str) -> usize {
        self.keys.of_game(game)
    }

    /// The shard that owns the pair of `a` and `b` (and their direct chat).
    pub fn of_pair(&self, a: &str, b: &str) -> usize {
        self.keys.of_pair(a, b)
    }

    /// How many shards there are.
    pub fn count(&self) -> usize {
        self.mailboxes.len()
    }

    /// The shard that owns `user`.
    pub fn of_user(&self, user: &str) -> usize {
        self.keys.of_user(user)
    }

    /// The shard that owns a chat. A lobby's chat lives with its lobby.
    pub fn of_chat(&self, chat_id: &str) -> usize {
        self.keys.of_chat(chat_id)
    }

    /// The shard that serves requests not tied to a key (echo) for `session`.
    pub fn of_session(&self, session: SessionId) -> usize {
        self.keys.of_session(session)
    }

    fn try_send_peer(&self, shard: usize, msg: ShardMsg) -> PeerSend {
        match self.mailboxes[shard].try_send(Envelope::new(msg)) {
            Ok(()) => PeerSend::Sent,
            Err(TrySendError::Full(env)) => PeerSend::Full(unwrap_msg(env)),
            Err(TrySendError::Disconnected(_)) => PeerSend::Gone,
        }
    }

    /// Sends without waiting; a full mailbox hands the message back.
    pub fn try_send(&self, shard: usize, msg: ShardMsg) -> Result<(), Busy> {
        match self.mailboxes[shard].try_send(Envelope::new(msg)) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(env)) | Err(TrySendError::Disconnected(env)) => {
                Err(Busy(unwrap_msg(env)))
            }
        }
    }

    /// Sends from a thread that may block (never a shard or an async
    /// worker), waiting for room.
    pub fn send_blocking(&self, shard: usize, msg: ShardMsg) {
        let _ = self.mailboxes[shard].send(Envelope::new(msg));
    }

    /// Sends session control that must not be lost, waiting (off the async
    /// workers) for room when the mailbox is full.
    pub async fn send(&self, shard: usize, msg: ShardMsg) {
        if let Err(Busy(msg)) = self.try_send(shard, msg) {
            let tx = self.mailboxes[shard].clone();
            let env = Envelope::new(msg);
            let _ = tokio::task::spawn_blocking(move || tx.send(env)).await;
        }
    }
}

/// A message that came back from a full mailbox (only messages are ever
/// sent with `try_send`).
fn unwrap_msg(env: Envelope) -> ShardMsg {
    match env.mail {
        Mail::Msg(msg) => msg,
        Mail::Quiesce(_) | Mail::Stop => unreachable!("control mail is never try_sent"),
    }
}

impl ShardThreads {
    /// Stops every shard and waits. First the shards quiesce: rounds of
    /// `Quiesce` until a whole round sends nothing between shards, so every
    /// message one shard owes another has been handled; then `Stop`.
    pub fn join(self) {
        let send = |mail: Mail, tx: &Sender<Envelope>| {
            let _ = tx.send(Envelope {
                mail,
                sent_at: Instant::now(),
            });
        };
        let mut last: Option<u64> = None;
        for _ in 0..10_000 {
            let (reply, answers) = crossbeam_channel::unbounded();
            for tx in self.stop.mailboxes.iter() {
                send(Mail::Quiesce(reply.clone()), tx);
            }
            drop(reply);
            let answers: Vec<(u64, usize)> = answers.iter().collect();
            let parked: usize = answers.iter().map(|a| a.1).sum();
            // Answers arrive in any order; the total is what must settle.
            let sent: u64 = answers.iter().map(|a| a.0).sum();
            if parked == 0 && last == Some(sent) {
                break;
            }
            last = Some(sent);
            if parked > 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        for tx in self.stop.mailboxes.iter() {
            send(Mail::Stop, tx);
        }
        for j in self.joins {
            let _ = j.join();
        }
    }
}

/// The clock, read once per message.
fn now() -> Now {
    Now {
        mono: Instant::now(),
        unix_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64),
    }
}

/// One shard thread's loop around its core.
struct Runner {
    core: ShardCore,
    rx: Receiver<Envelope>,
    /// Every shard's mailbox, this one's included.
    peers: Shards,
    /// Messages for peers whose mailbox was full, per peer, in order.
    deferred: Vec<VecDeque<ShardMsg>>,
    deferred_len: usize,
    /// Messages sent to other shards so far (shutdown waits until it stops moving).
    peer_sends: u64,
    services: Services,
    /// What the core produced, carried out after each message.
    out: Outputs,
}

impl Runner {
    fn new(core: ShardCore, services: Services, peers: Shards, rx: Receiver<Envelope>) -> Self {
        Self {
            core,
            rx,
            deferred: (0..peers.count()).map(|_| VecDeque::new()).collect(),
            deferred_len: 0,
            peer_sends: 0,
            peers,
            services,
            out: Outputs::default(),
        }
    }

    fn run(mut self) {
        let (lag, handled) = metrics().shard_series(self.core.index());
        loop {
            let mut deadline = self.core.poll_timeout();
            if self.deferred_len > 0 {
                self.flush_deferred();
                if self.deferred_len > 0 {
                    deadline = deadline.min(Instant::now() + Duration::from_millis(1));
                }
            }
            match self.rx.recv_deadline(deadline) {
                Ok(env) => match env.mail {
                    Mail::Stop => break,
                    Mail::Quiesce(reply) => {
                        // Never wait here: a peer may be quiescing too.
                        self.flush_deferred();
                        let _ = reply.send((self.peer_sends, self.deferred_len));
                    }
                    Mail::Msg(msg) => {
                        lag.set(env.sent_at.elapsed().as_secs_f64());
                        handled.inc();
                        self.core.handle(now(), msg);
                        self.carry_out();
                        // A busy mailbox never times out: run due timers anyway.
                        if deadline <= Instant::now() {
                            self.core.handle_timeout(now());
                            self.carry_out();
                        }
                    }
                },
                Err(RecvTimeoutError::Timeout) => {
                    self.core.handle_timeout(now());
                    self.carry_out();
                }
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        // Quiescing emptied the parked messages; a last try for anything
        // later (a peer that stopped first drops it, logged).
        self.flush_deferred();
        self.core.close_sessions();
    }

    /// Carries out what the core produced, in order: backend work first
    /// (a record is queued before the acknowledgement that waits on it),
    /// then messages to peers.
    fn carry_out(&mut self) {
        loop {
            self.core.drain_outputs(&mut self.out);
            if self.out.is_empty() {
                return;
            }
            let mut backend = std::mem::take(&mut self.out.backend);
            for op in backend.drain(..) {
                self.backend(op);
            }
            // Keep the allocation for the next message.
            self.out.backend = backend;
            let mut to_shards = std::mem::take(&mut self.out.to_shards);
            for (to, msg) in to_shards.drain(..) {
                self.send_to_peer(to, msg);
            }
            self.out.to_shards = to_shards;
        }
    }

    fn backend(&mut self, op: BackendOp) {
        let history = &self.services.history;
        match op {
            BackendOp::Persist(record) => history.persist(record),
            BackendOp::Deliver(delivery) => self.services.webhooks.deliver(&delivery),
            BackendOp::Publish(event) => self.services.webhooks.publish(&event),
            BackendOp::AfterDurable(then) => history.after_durable(then),
            BackendOp::Read(op) => self.read(op),
        }
    }

    /// Hands a read to the store's readers; what comes back is finished on
    /// the reader's thread (a warm-up's state goes back to this shard first).
    fn read(&mut self, op: ReadOp) {
        let read = match &op {
            ReadOp::Page(p) => Read::Page {
                chat_id: p.chat_id.clone(),
                before_id: p.older_than(),
                rows: p.rows(),
            },
            ReadOp::Warm(w) => Read::Warm {
                chat_id: w.chat_id.clone(),
                user: w.user.clone(),
                recent: w.recent,
            },
        };
        // The read comes back here when the readers refuse it.
        let slot = Arc::new(Mutex::new(Some(op)));
        let taken = slot.clone();
        let (peers, shard) = (self.peers.clone(), self.core.index());
        let done = Box::new(move |result: ReadResult| {
            let Some(op) = taken.lock().take() else {
                return;
            };
            match (op, result) {
                (ReadOp::Page(p), ReadResult::Page(rows)) => {
                    if let Some(answer) = p.finish(rows) {
                        answer.push();
                    }
                }
                (ReadOp::Warm(w), ReadResult::Warm(read)) => {
                    let (msg, answer) = w.finish(read);
                    peers.send_blocking(shard, msg);
                    if let Some(answer) = answer {
                        answer.push();
                    }
                }
                (ReadOp::Page(p), _) => {
                    if let Some(answer) = p.finish(None) {
                        answer.push();
                    }
                }
                (ReadOp::Warm(w), _) => {
                    let (msg, answer) = w.finish(None);
                    peers.send_blocking(shard, msg);
                    if let Some(answer) = answer {
                        answer.push();
                    }
                }
            }
        });
        if self.services.history.read(ReadJob { read, done }).is_err() {
            if let Some(op) = slot.lock().take() {
                self.core.read_refused(now(), op);
            }
        }
    }

    /// Sends a message to peer `to`. A full peer mailbox parks the message
    /// in that peer's FIFO, retried every loop turn. Past `MAX_DEFERRED`
    /// parked messages the shard waits for room, but only on a
    /// higher-numbered peer: waits then always point the same way, so two
    /// shards can never wait on each other, and the highest shard never
    /// waits at all.
    fn send_to_peer(&mut self, to: usize, msg: ShardMsg) {
        self.peer_sends += 1;
        if self.deferred[to].is_empty() {
            match self.peers.try_send_peer(to, msg) {
                PeerSend::Sent | PeerSend::Gone => return,
                PeerSend::Full(msg) => {
                    self.deferred[to].push_back(msg);
                    self.deferred_len += 1;
                }
            }
        } else {
            self.deferred[to].push_back(msg);
            self.deferred_len += 1;
        }
        if self.deferred_len > MAX_DEFERRED && to > self.core.index() {
            while let Some(msg) = self.deferred[to].pop_front() {
                self.deferred_len -= 1;
                let _ = self.peers.mailboxes[to].send(Envelope::new(msg));
            }
        }
    }

    fn flush_deferred(&mut self) {
        for to in 0..self.deferred.len() {
            while let Some(msg) = self.deferred[to].pop_front() {
                match self.peers.try_send_peer(to, msg) {
                    PeerSend::Sent => self.deferred_len -= 1,
                    PeerSend::Gone => {
                        // Only at shutdown, after quiescing: nothing owed is lost.
                        tracing::warn!(
                            shard = self.core.index(),
                            peer = to,
                            "peer shard gone; message dropped"
                        );
                        self.deferred_len -= 1;
                    }
                    PeerSend::Full(msg) => {
                        self.deferred[to].push_front(msg);
                        break;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod size_tests {
    /// Every mailbox slot is as large as the largest message: keep it small.
    #[test]
    fn shard_messages_stay_small() {
        assert!(std::mem::size_of::<super::Envelope>() <= 112);
        assert!(std::mem::size_of::<crate::core::shard::ShardMsg>() <= 96);
    }
}
