//! Everything the gateway keeps — chat messages (with edits and
//! tombstones), read cursors, relationships, notifications with their
//! delivery states, and the webhook outbox — behind one trait,
//! [`HistoryStore`], shaped for a wide-column store: every record has a
//! partition key (chat, user) and a clustering key (message id, other user,
//! notification id), writes are idempotent upserts or deletes by primary
//! key, and every serving read is one partition slice — no joins.
//!
//! The one exception is the warm start: a node loads the relationships,
//! notifications and outbox jobs it serves once, when it starts
//! (`load_*`). On one node that is a scan of its own file; the ScyllaDB
//! store scans its tables with paged queries. [`embedded`] implements the
//! trait for a single node, [`scylla`] over CQL.
//!
//! [`History`] is the shell around a store: a writer thread that batches
//! records into transactions (engines only enqueue) and reader threads that
//! answer history pages straight into session outboxes. None ever runs on a
//! shard thread. Over ScyllaDB the writer is [`cluster::ClusterWriter`]
//! (asynchronous batches, a spill [`journal`], replay) and reads merge what
//! is still on its way ([`cluster::Merged`]).

pub mod cluster;
pub mod embedded;
pub mod journal;
pub mod scylla;
#[cfg(test)]
mod suite;

use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{bounded, Receiver, Sender};

use huddle_schema::Encoder;

use crate::engine::chat::Message;
use crate::engine::notifications::Notification;
use crate::engine::social::RelationRecord;
use crate::engine::Reply;
use crate::outbox::Outbox;
use crate::webhook::Job;
use crate::wire;

/// One record to persist, as the engines produce it. Writing the same
/// record twice is harmless.
pub use crate::engine::Record;

/// One write for the writer thread: an engine record, or the webhook
/// outbox's own bookkeeping.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum Write {
    Record(Record),
    /// Queue (or update the attempts of) a webhook job, keyed by its id.
    OutboxPut(Arc<Job>),
    /// The job is finished (delivered or given up).
    OutboxDone(Arc<str>),
}

/// A write with the time it was taken in (µs since the Unix epoch): a
/// clustered store applies it with that write time, so the later of two
/// writes to one key wins whatever order they land in, and writing it again
/// changes nothing.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Stamped {
    pub at_us: i64,
    pub write: Write,
}

/// Hands out write times: the wall clock in µs, or one more than the last
/// when the clock has not moved on (or went back), so they only increase.
#[derive(Debug, Default)]
pub struct WriteClock {
    last: std::sync::atomic::AtomicI64,
}

impl WriteClock {
    /// The wall clock, µs since the Unix epoch.
    pub fn now_us() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as i64)
    }

    pub fn next(&self) -> i64 {
        use std::sync::atomic::Ordering;
        let now = Self::now_us();
        let mut last = self.last.load(Ordering::Relaxed);
        loop {
            let next = now.max(last + 1);
            match self
                .last
                .compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return next,
                Err(seen) => last = seen,
            }
        }
    }
}

/// A storage failure, with what was being done.
#[derive(Debug, thiserror::Error)]
#[error("history store: {0}")]
pub struct StoreError(pub String);

/// Where chat history lives.
pub trait HistoryStore: Send + Sync + 'static {
    /// Persists a batch atomically where the store can; idempotent.
    fn write(&self, batch: &[Write]) -> Result<(), StoreError>;
    /// Up to `limit` messages of `chat_id` with id < `before_id` (0 = no
    /// bound), newest first.
    fn messages(
        &self,
        chat_id: &str,
        before_id: u64,
        limit: usize,
    ) -> Result<Vec<Arc<Message>>, StoreError>;
    /// A user's read cursor in a chat.
    fn read_cursor(&self, chat_id: &str, user_id: &str) -> Result<Option<u64>, StoreError>;
    /// Warm start: every relationship row (one per user and other user).
    fn load_relations(&self) -> Result<Vec<RelationRecord>, StoreError>;
    /// Warm start: every stored notification.
    fn load_notifications(&self) -> Result<Vec<Notification>, StoreError>;
    /// Warm start: every rating the game backend set.
    fn load_ratings(&self) -> Result<Vec<crate::engine::queues::RatingRecord>, StoreError>;
    /// Warm start: every unfinished webhook job.
    fn load_outbox(&self) -> Result<Vec<Job>, StoreError>;
}

/// A history page the engine could not fill from its recent buffer.
pub struct PageJob {
    pub request_id: u64,
    pub chat_id: Arc<str>,
    /// What the recent buffer held, newest first.
    pub partial: Vec<Arc<Message>>,
    /// Messages still wanted, older than the oldest in `partial` (or than
    /// `before_id` when `partial` is empty).
    pub before_id: u64,
    pub limit: usize,
    pub reply_to: Arc<Outbox>,
}

/// A cold chat's stored past, asked for by a join.
pub struct WarmJob {
    pub request_id: u64,
    pub chat_id: Arc<str>,
    pub user: crate::engine::UserId,
    /// Newest messages wanted (0: the cursor only).
    pub recent: usize,
    /// The join's reply, its cursor to be merged with the stored one.
    pub joined: Reply,
    pub reply_to: Arc<Outbox>,
    /// Hands what was read back to the chat's shard.
    pub back: Box<dyn FnOnce(crate::engine::chat::Command) + Send>,
}

/// Work for the reader threads.
pub enum ReadJob {
    Page(PageJob),
    Warm(WarmJob),
}

/// Records waiting for the writer. An engine only enqueues; the writer
/// keeps the queue short by writing or spilling what it takes. Full (the
/// disk itself cannot keep up): the shard waits, counted in
/// `huddle_history_enqueue_waits` — history is never dropped.
pub const WRITE_QUEUE: usize = 65_536;
/// History pages waiting for the readers. Full: the request is answered
/// RATE_LIMITED by the shard.
const READ_QUEUE: usize = 4_096;
/// Reader threads: a read that waits on a slow store holds one, not all.
const READERS: usize = 4;
/// Records per write transaction at most.
const WRITE_BATCH: usize = 4_096;
/// How long the writer gathers records before committing: one durable
/// commit per linger instead of one per message (delivery never waits on it).
const WRITE_LINGER: std::time::Duration = std::time::Duration::from_millis(50);

/// The running history service: a writer and reader threads over a store.
#[derive(Clone)]
pub struct History {
    writes: Sender<Write>,
    reads: Sender<ReadJob>,
}

/// Readers waiting for the writer to make what was queued before them
/// readable. A side channel, so a waiting reader never keeps the writer's
/// queue open at shutdown.
pub struct Barriers {
    requests: Receiver<Sender<()>>,
    /// (records the writer must have made readable, who waits).
    waiting: Vec<(u64, Sender<()>)>,
}

/// Reader requests waiting for the writer at most.
const BARRIER_QUEUE: usize = 1_024;

impl Barriers {
    /// Takes new requests: each waits for the `taken` records the writer
    /// has so far plus the `queued` ones behind them.
    pub fn admit(&mut self, taken: u64, queued: usize) {
        for tx in self.requests.try_iter() {
            self.waiting.push((taken + queued as u64, tx));
        }
    }

    /// Waits up to `wait` for a request (the writer's linger, cut short).
    pub fn wait(&mut self, wait: std::time::Duration, taken: u64, queued: usize) {
        if let Ok(tx) = self.requests.recv_timeout(wait) {
            self.waiting.push((taken + queued as u64, tx));
            self.admit(taken, queued);
        }
    }

    /// Answers those whose records are all readable.
    pub fn release(&mut self, readable: u64) {
        self.waiting.retain(|(target, tx)| {
            if *target <= readable {
                let _ = tx.send(());
                false
            } else {
                true
            }
        });
    }

    pub fn pending(&self) -> bool {
        !self.waiting.is_empty()
    }
}

/// The service's threads, joined at shutdown after every [`History`] handle
/// is dropped (the writer drains what is queued first).
pub struct HistoryThreads {
    joins: Vec<JoinHandle<()>>,
}

impl History {
    /// Over a local store: the writer commits batches in transactions.
    pub fn start(store: Arc<dyn HistoryStore>) -> (History, HistoryThreads) {
        let writer_store = store.clone();
        Self::spawn(
            move |rx, barriers| write_loop(&*writer_store, rx, barriers),
            store,
        )
    }

    /// Over ScyllaDB: the writer batches, spills to `journal` and replays
    /// it; reads merge what is still on its way. Also answers the store as
    /// readers should see it.
    pub fn start_cluster(
        store: Arc<scylla::ScyllaStore>,
        journal: Arc<journal::Journal>,
        settings: cluster::WriterSettings,
    ) -> (History, HistoryThreads, Arc<dyn HistoryStore>) {
        let unconfirmed = Arc::new(cluster::Unconfirmed::default());
        let merged: Arc<dyn HistoryStore> = Arc::new(cluster::Merged {
            store: store.clone(),
            journal: journal.clone(),
            unconfirmed: unconfirmed.clone(),
        });
        let writer = cluster::ClusterWriter::new(store, journal, unconfirmed, settings);
        let (history, threads) =
            Self::spawn(move |rx, barriers| writer.run(rx, barriers), merged.clone());
        (history, threads, merged)
    }

    fn spawn(
        writer: impl FnOnce(Receiver<Write>, Barriers) + Send + 'static,
        store: Arc<dyn HistoryStore>,
    ) -> (History, HistoryThreads) {
        let (writes, write_rx) = bounded::<Write>(WRITE_QUEUE);
        let (barrier_tx, barrier_rx) = bounded(BARRIER_QUEUE);
        let barriers = Barriers {
            requests: barrier_rx,
            waiting: Vec::new(),
        };
        let (reads, read_rx) = bounded::<ReadJob>(READ_QUEUE);
        let writer = std::thread::Builder::new()
            .name("huddle-history-writer".into())
            .spawn(move || writer(write_rx, barriers))
            .expect("spawning the history writer at start-up");
        let mut joins = vec![writer];
        for i in 0..READERS {
            let (store, read_rx, barrier_tx) = (store.clone(), read_rx.clone(), barrier_tx.clone());
            let reader = std::thread::Builder::new()
                .name(format!("huddle-history-reader-{i}"))
                .spawn(move || read_loop(&*store, read_rx, barrier_tx))
                .expect("spawning a history reader at start-up");
            joins.push(reader);
        }
        (History { writes, reads }, HistoryThreads { joins })
    }

    /// Queues a record and goes on. Waits only when the queue is full,
    /// which the writer prevents by spilling (see [`WRITE_QUEUE`]).
    pub fn persist(&self, record: Record) {
        self.write(Write::Record(record));
    }

    /// Queues a write if the writer has room; gives it back otherwise.
    pub fn try_write(&self, write: Write) -> Result<(), Write> {
        self.writes.try_send(write).map_err(|e| e.into_inner())
    }

    /// Queues any write (the webhook outbox's too).
    pub fn write(&self, write: Write) {
        let write = match self.writes.try_send(write) {
            Ok(()) => return,
            Err(crossbeam_channel::TrySendError::Full(w)) => {
                crate::metrics::metrics().history.enqueue_waits.inc();
                w
            }
            Err(crossbeam_channel::TrySendError::Disconnected(_)) => {
                tracing::error!("history writer is gone; record not persisted");
                return;
            }
        };
        if self.writes.send(write).is_err() {
            tracing::error!("history writer is gone; record not persisted");
        }
    }

    /// Writes waiting for the writer.
    pub fn queued(&self) -> usize {
        self.writes.len()
    }

    /// Hands a job to the reader; gives it back when the reader is busy.
    pub fn read(&self, job: ReadJob) -> Result<(), ReadJob> {
        self.reads.try_send(job).map_err(|e| e.into_inner())
    }
}

impl HistoryThreads {
    pub fn join(self) {
        for j in self.joins {
            let _ = j.join();
        }
    }
}

fn write_loop(store: &dyn HistoryStore, rx: Receiver<Write>, mut barriers: Barriers) {
    let mut batch = Vec::with_capacity(WRITE_BATCH);
    // Records taken from the queue, and committed.
    let (mut taken, mut committed) = (0u64, 0u64);
    loop {
        let first = match rx.recv_timeout(WRITE_LINGER) {
            Ok(w) => Some(w),
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => None,
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
        };
        barriers.admit(taken, rx.len() + usize::from(first.is_some()));
        let Some(first) = first else {
            barriers.release(committed);
            continue;
        };
        // Let a batch gather: one wake-up per commit, not one per record;
        // a reader waiting cuts it short.
        if !barriers.pending() && rx.len() < WRITE_BATCH - 1 {
            barriers.wait(WRITE_LINGER, taken, rx.len() + 1);
        }
        batch.push(first);
        while batch.len() < WRITE_BATCH {
            match rx.try_recv() {
                Ok(w) => batch.push(w),
                Err(_) => break,
            }
        }
        taken += batch.len() as u64;
        // Retry until it lands: dropping history is not an option, and the
        // queue behind us holds the shards back meanwhile.
        let mut wait = std::time::Duration::from_millis(10);
        let m = &crate::metrics::metrics().history;
        m.queue_depth.set(rx.len() as i64);
        let started = std::time::Instant::now();
        let records = batch.len();
        while !batch.is_empty() {
            match store.write(&batch) {
                Ok(()) => {
                    batch.clear();
                    m.batch_records.observe(records as f64);
                    m.write_seconds.observe(started.elapsed().as_secs_f64());
                }
                Err(e) => {
                    m.retries.inc();
                    tracing::error!(error = %e, records = batch.len(), "history write failed; retrying");
                    std::thread::sleep(wait);
                    wait = (wait * 2).min(std::time::Duration::from_secs(5));
                }
            }
        }
        committed = taken;
        barriers.release(committed);
    }
}

/// How long a warm-up waits for the writer to make earlier records
/// readable before it reads anyway.
const BARRIER_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

fn read_loop(store: &dyn HistoryStore, rx: Receiver<ReadJob>, writer: Sender<Sender<()>>) {
    let mut enc = Encoder::new();
    while let Ok(job) = rx.recv() {
        match job {
            ReadJob::Page(job) => read_page(store, &mut enc, job),
            ReadJob::Warm(job) => {
                // A cold chat's records may still sit in the writer's queue
                // (sent just before its last member left): wait until they
                // are readable, so a rejoin sees them and their nonces.
                let (tx, done) = bounded(1);
                if writer.try_send(tx).is_ok() {
                    let _ = done.recv_timeout(BARRIER_WAIT);
                }
                warm(store, &mut enc, job)
            }
        }
    }
}

fn read_page(store: &dyn HistoryStore, enc: &mut Encoder, job: PageJob) {
    let mut messages = job.partial;
    let before = messages.last().map_or(job.before_id, |m| m.id);
    let frame = match store.messages(&job.chat_id, before, job.limit + 1) {
        Ok(mut older) => {
            let has_more = older.len() > job.limit;
            older.truncate(job.limit);
            messages.extend(older);
            let reply = Reply::ChatHistory {
                chat_id: job.chat_id,
                messages,
                has_more,
            };
            wire::reply_frame(enc, job.request_id, &reply)
        }
        Err(e) => {
            tracing::error!(error = %e, "history read failed");
            let f = crate::engine::Failure::new(
                crate::engine::Refusal::RateLimited,
                "history is unavailable right now; retry shortly",
            );
            Some((
                wire::failure_frame(enc, job.request_id, &f),
                huddle_schema::wire::Body::Error,
            ))
        }
    };
    // Request 0: a join made on the client's behalf (a lobby's chat),
    // whose reply the client never asked for.
    if let (Some((bytes, body)), true) = (frame, job.request_id != 0) {
        job.reply_to.push_reply(bytes, body);
    }
}

/// Reads a cold chat's cursor and newest messages, answers the join with
/// the cursor merged in, and hands both back to the chat's shard. A store
/// error answers the join from memory (logged): joining never fails on it.
fn warm(store: &dyn HistoryStore, enc: &mut Encoder, job: WarmJob) {
    let read = store
        .read_cursor(&job.chat_id, &job.user)
        .and_then(|cursor| {
            let messages = if job.recent > 0 {
                store.messages(&job.chat_id, 0, job.recent)?
            } else {
                Vec::new()
            };
            Ok((cursor, messages))
        });
    let mut joined = job.joined;
    let state = match read {
        Ok((cursor, messages)) => {
            if let (Reply::ChatJoined { read_up_to, .. }, Some(stored)) = (&mut joined, cursor) {
                *read_up_to = (*read_up_to).max(stored);
            }
            crate::engine::chat::Command::Warmed {
                chat_id: job.chat_id,
                user: job.user,
                cursor,
                messages,
            }
        }
        // Answered from memory; the chat stays cold, so the next join asks
        // the store again (nothing stored is taken for absent).
        Err(e) => {
            tracing::error!(error = %e, chat = %job.chat_id, "warming a chat failed");
            crate::engine::chat::Command::WarmFailed {
                chat_id: job.chat_id,
                user: job.user,
            }
        }
    };
    let frame = wire::reply_frame(enc, job.request_id, &joined);
    // The shard gets the state before the client gets the reply, so any
    // request the client sends after the reply sees it.
    (job.back)(state);
    // Request 0: a join made on the client's behalf (a lobby's chat),
    // whose reply the client never asked for.
    if let (Some((bytes, body)), true) = (frame, job.request_id != 0) {
        job.reply_to.push_reply(bytes, body);
    }
}
