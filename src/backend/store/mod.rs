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
//! [`History`] is the shell around a store: the acknowledgement journal
//! ([`ack`]: every write is synced there, in groups, before anyone is told
//! it happened), a writer thread behind it that batches records into the
//! store (engines only enqueue), and reader threads that answer history
//! pages straight into session outboxes. None ever runs on a shard thread.
//! Over ScyllaDB the writer is [`cluster::ClusterWriter`] (asynchronous
//! batches, a spill [`journal`], replay) and reads merge what is still on
//! its way ([`cluster::Merged`]).

pub mod ack;
pub mod cluster;
pub mod embedded;
pub mod jobs;
pub mod journal;
pub mod scylla;
pub mod settings;
#[cfg(test)]
mod suite;

use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{bounded, Receiver, Sender};

use crate::backend::store::jobs::Job;
use crate::core::engine::chat::Message;
use crate::core::engine::notifications::Notification;
use crate::core::engine::social::RelationRecord;

/// One record to persist, as the engines produce it. Writing the same
/// record twice is harmless.
pub use crate::core::engine::Record;

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

/// Drops the database handle in `slot` once no reader shares it any more
/// (readers finish within a couple of seconds; none can take it meanwhile,
/// since the caller holds the slot's lock). False, with the handle put
/// back, when a reader still holds it: redb opens a file once per process,
/// so a reopen has to wait for that.
pub(crate) fn release_handle<T>(slot: &mut Option<Arc<T>>) -> bool {
    let Some(mut held) = slot.take() else {
        return true;
    };
    for _ in 0..400 {
        match Arc::try_unwrap(held) {
            Ok(handle) => {
                drop(handle);
                return true;
            }
            Err(shared) => {
                held = shared;
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        }
    }
    *slot = Some(held);
    false
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
    fn load_ratings(
        &self,
    ) -> Result<Vec<crate::core::engine::matchmaking::RatingRecord>, StoreError>;
    /// Warm start: every unfinished webhook job.
    fn load_outbox(&self) -> Result<Vec<Job>, StoreError>;
    /// Warm start: every channel an operator created.
    fn load_channels(&self) -> Result<Vec<crate::core::engine::chat::ChannelSpec>, StoreError>;
    /// After a failed write: make the next one possible (the embedded
    /// store reopens its file, which a failed commit may leave refusing
    /// every later transaction). Writes not yet synced may be gone after
    /// it: the writer writes them again.
    fn recover(&self) -> Result<(), StoreError> {
        Ok(())
    }
    /// Makes every write so far durable, where [`HistoryStore::write`]
    /// alone does not (the embedded store behind the journal).
    fn sync(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// A read for the reader threads.
pub enum Read {
    /// Up to `rows` messages of a chat older than `before_id` (0: the
    /// newest), newest first.
    Page {
        chat_id: Arc<str>,
        before_id: u64,
        rows: usize,
    },
    /// A cold chat's stored past, for a join: the user's read cursor and
    /// the newest `recent` messages (0: the cursor only). Waits first until
    /// records queued before it are readable.
    Warm {
        chat_id: Arc<str>,
        user: crate::core::engine::UserId,
        recent: usize,
    },
}

/// What a read found; `None` when the store failed (logged here).
pub enum ReadResult {
    Page(Option<Vec<Arc<Message>>>),
    /// The cursor, and the newest messages asked for.
    Warm(Option<(Option<u64>, Vec<Arc<Message>>)>),
}

/// A read and what to do with its result, run on the reader's thread.
pub struct ReadJob {
    pub read: Read,
    pub done: Box<dyn FnOnce(ReadResult) + Send>,
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

/// Where the acknowledgement journal lives and when it acknowledges.
#[derive(Debug, Clone)]
pub struct AckSettings {
    /// `<data_dir>/ack`.
    pub dir: PathBuf,
    pub mode: ack::AckMode,
}

/// The running history service: the acknowledgement journal, a writer and
/// reader threads over a store.
#[derive(Clone)]
pub struct History {
    writes: ack::AckJournal,
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

/// What a writer's wait for its next record ended with.
pub enum Next {
    Write(Write),
    /// Nothing came within the wait.
    Idle,
    /// Every sender is gone: drain and stop.
    Closed,
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

    /// Waits up to `wait` for the next write; a barrier asked for
    /// meanwhile is answered at once when nothing stands in front of it
    /// (`readable` records are readable, `taken` taken).
    pub fn next_write(
        &mut self,
        intake: &Receiver<Write>,
        wait: std::time::Duration,
        taken: u64,
        readable: u64,
    ) -> Next {
        let deadline = std::time::Instant::now() + wait;
        loop {
            crossbeam_channel::select! {
                recv(intake) -> w => return w.map_or(Next::Closed, Next::Write),
                recv(self.requests) -> tx => match tx {
                    Ok(tx) => {
                        self.waiting.push((taken + intake.len() as u64, tx));
                        self.release(readable);
                    }
                    // Every reader is gone (shutdown): wait on the intake
                    // alone instead of spinning on a closed channel.
                    Err(_) => self.requests = crossbeam_channel::never(),
                },
                default(deadline.saturating_duration_since(std::time::Instant::now())) => return Next::Idle,
            }
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
/// is dropped (the journal and the writer drain what is queued first).
pub struct HistoryThreads {
    joins: Vec<JoinHandle<()>>,
    health: Arc<ack::Health>,
}

/// What a store writer reports, and reads, beside its records.
pub struct Progress {
    /// How many forwarded records are durable in the store.
    pub durable: Arc<ack::Durable>,
    /// Where it says it is failing, and learns that shutdown gave up.
    pub health: Arc<ack::Health>,
}

/// A reader's way to wait until the records queued before it are readable:
/// through the journal (behind what it holds), then the writer.
struct Barrier {
    journal: ack::AckJournal,
    writer: Sender<Sender<()>>,
}

impl Barrier {
    fn wait(&self) {
        let (tx, done) = bounded(1);
        let writer = self.writer.clone();
        if self.journal.behind_queued(move || {
            let _ = writer.try_send(tx);
        }) {
            let _ = done.recv_timeout(BARRIER_WAIT);
        }
    }
}

impl History {
    /// Over a local store: the writer commits batches in transactions.
    pub fn start(
        store: Arc<dyn HistoryStore>,
        ack: &AckSettings,
    ) -> Result<(History, HistoryThreads), StoreError> {
        let writer_store = store.clone();
        Self::spawn(
            ack,
            move |rx, barriers, progress| write_loop(&*writer_store, rx, barriers, progress),
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
        ack: &AckSettings,
    ) -> Result<(History, HistoryThreads, Arc<dyn HistoryStore>), StoreError> {
        let unconfirmed = Arc::new(cluster::Unconfirmed::default());
        let merged: Arc<dyn HistoryStore> = Arc::new(cluster::Merged {
            store: store.clone(),
            journal: journal.clone(),
            unconfirmed: unconfirmed.clone(),
        });
        let writer = cluster::ClusterWriter::new(store, journal, unconfirmed, settings);
        let (history, threads) = Self::spawn(
            ack,
            move |rx, barriers, progress| writer.run(rx, barriers, progress),
            merged.clone(),
        )?;
        Ok((history, threads, merged))
    }

    fn spawn(
        ack: &AckSettings,
        writer: impl FnOnce(Receiver<Write>, Barriers, Progress) + Send + 'static,
        store: Arc<dyn HistoryStore>,
    ) -> Result<(History, HistoryThreads), StoreError> {
        let health = Arc::new(ack::Health::default());
        let durable = Arc::new(ack::Durable::default());
        let journal =
            ack::JournalWriter::open(&ack.dir, ack.mode, health.clone(), durable.clone())?;
        let (store_writes, write_rx) = bounded::<Write>(WRITE_QUEUE);
        let (writes, journal_thread) = journal.spawn(WRITE_QUEUE, store_writes);
        let (barrier_tx, barrier_rx) = bounded(BARRIER_QUEUE);
        let barriers = Barriers {
            requests: barrier_rx,
            waiting: Vec::new(),
        };
        let (reads, read_rx) = bounded::<ReadJob>(READ_QUEUE);
        let progress = Progress {
            durable,
            health: health.clone(),
        };
        let writer = std::thread::Builder::new()
            .name("huddle-history-writer".into())
            .spawn(move || writer(write_rx, barriers, progress))
            .expect("spawning the history writer at start-up");
        let mut joins = vec![journal_thread, writer];
        for i in 0..READERS {
            let (store, read_rx) = (store.clone(), read_rx.clone());
            let barrier = Barrier {
                journal: writes.clone(),
                writer: barrier_tx.clone(),
            };
            let reader = std::thread::Builder::new()
                .name(format!("huddle-history-reader-{i}"))
                .spawn(move || read_loop(&*store, read_rx, barrier))
                .expect("spawning a history reader at start-up");
            joins.push(reader);
        }
        Ok((History { writes, reads }, HistoryThreads { joins, health }))
    }

    /// Queues a record and goes on. Waits only when the queue is full,
    /// which the journal and the writer prevent (see [`WRITE_QUEUE`]).
    pub fn persist(&self, record: Record) {
        self.write(Write::Record(record));
    }

    /// Queues a write if there is room; gives it back otherwise.
    pub fn try_write(&self, write: Write) -> Result<(), Write> {
        self.writes.try_write(write)
    }

    /// Queues any write (the webhook outbox's too).
    pub fn write(&self, write: Write) {
        if !self.writes.write(write) {
            tracing::error!("history journal is gone; record not persisted");
        }
    }

    /// Runs `then` once everything this thread queued is durable (at once
    /// when nothing is waiting, or in fast mode): how an acknowledgement
    /// waits for what it acknowledges.
    pub fn after_durable(&self, then: impl FnOnce() + Send + 'static) {
        self.writes.after_durable(then);
    }

    /// The shared view of whether writes can be kept now; while they
    /// cannot, the edges refuse requests that write with STORE_UNAVAILABLE.
    pub fn health(&self) -> Arc<ack::Health> {
        self.writes.health().clone()
    }

    /// Writes waiting for the journal.
    pub fn queued(&self) -> usize {
        self.writes.queued()
    }

    /// Hands a job to the reader; gives it back when the reader is busy.
    pub fn read(&self, job: ReadJob) -> Result<(), ReadJob> {
        self.reads.try_send(job).map_err(|e| e.into_inner())
    }
}

impl HistoryThreads {
    /// Shutdown: writes the disk keeps refusing are given up after
    /// `within` (counted and logged; never acknowledged), so the process
    /// always exits.
    pub fn stop_within(&self, within: std::time::Duration) {
        self.health.stop_within(within);
    }

    pub fn join(self) {
        for j in self.joins {
            let _ = j.join();
        }
    }
}

/// How often the writer makes its commits durable (one sync for all of
/// them) over a store that syncs lazily; the journal keeps their records
/// until then. Also when the writer is idle, and at shutdown.
const SYNC_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// The writer's commits since the store last synced: written again after
/// a reopen (which forgets unsynced commits), so reads never miss them.
#[derive(Default)]
struct Unsynced {
    batches: Vec<Vec<Write>>,
    /// Records committed when the store last synced.
    synced: u64,
    at: Option<std::time::Instant>,
    /// The store was reopened and has not yet taken `batches` again:
    /// nothing may be reported durable until it has.
    rewrite: bool,
    /// The last sync failed: the store stays failing (new writes refused
    /// at the edge, so `batches` stops growing) until one succeeds, even
    /// while unsynced commits still go through.
    sync_failed: bool,
}

fn write_loop(
    store: &dyn HistoryStore,
    rx: Receiver<Write>,
    mut barriers: Barriers,
    progress: Progress,
) {
    let mut batch = Vec::with_capacity(WRITE_BATCH);
    // Records taken from the queue, and committed.
    let (mut taken, mut committed) = (0u64, 0u64);
    let mut unsynced = Unsynced::default();
    // Shutdown gave records up: durability is no longer reported, so the
    // acknowledgement journal keeps them for the next start.
    let mut gave_up = false;
    loop {
        let first = match barriers.next_write(&rx, WRITE_LINGER, taken, committed) {
            Next::Write(w) => Some(w),
            Next::Idle => None,
            Next::Closed => break,
        };
        barriers.admit(taken, rx.len() + usize::from(first.is_some()));
        let Some(first) = first else {
            barriers.release(committed);
            if !gave_up {
                sync(store, &mut unsynced, committed, &progress);
            }
            continue;
        };
        // Let a batch gather: one wake-up per commit, not one per record;
        // a reader waiting cuts it short. (Nobody waits on this commit to
        // be told anything: the journal in front already has the records.)
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
        if commit(store, &batch, &mut unsynced, &progress) {
            unsynced.batches.push(std::mem::take(&mut batch));
            unsynced.at.get_or_insert_with(std::time::Instant::now);
        } else {
            gave_up = true;
            tracing::error!(
                records = batch.len(),
                "shutdown: the store never took these records; they stay in the acknowledgement journal for the next start"
            );
            batch.clear();
        }
        committed = taken;
        barriers.release(committed);
        if !gave_up && unsynced.at.is_some_and(|t| t.elapsed() >= SYNC_EVERY) {
            sync(store, &mut unsynced, committed, &progress);
        }
        crate::telemetry::metrics::metrics()
            .history
            .queue_depth
            .set(rx.len() as i64);
    }
    if !gave_up {
        sync(store, &mut unsynced, committed, &progress);
    }
}

/// Makes the commits so far durable and tells the journal, which may then
/// delete their records. A failed sync is tried again later (the journal
/// keeps them meanwhile).
fn sync(store: &dyn HistoryStore, unsynced: &mut Unsynced, committed: u64, progress: &Progress) {
    if unsynced.synced == committed {
        return;
    }
    if unsynced.rewrite {
        match unsynced.batches.iter().try_for_each(|b| store.write(b)) {
            Ok(()) => unsynced.rewrite = false,
            Err(_) => return,
        }
    }
    match store.sync() {
        Ok(()) => {
            unsynced.batches.clear();
            unsynced.synced = committed;
            unsynced.at = None;
            unsynced.sync_failed = false;
            progress.durable.set(committed);
            if progress.health.store_failing(false) {
                tracing::info!("the history store takes writes again");
            }
        }
        Err(e) => {
            if progress.health.store_failing(true) {
                tracing::error!(error = %e, "syncing the history store failed; refusing new writes with STORE_UNAVAILABLE and trying again");
            }
            unsynced.at = Some(std::time::Instant::now());
            unsynced.sync_failed = true;
            // A failed commit may leave the file refusing every later one:
            // reopen it and put back what it forgot.
            std::thread::sleep(std::time::Duration::from_millis(100));
            if store.recover().is_ok() {
                unsynced.rewrite = true;
                if unsynced
                    .batches
                    .iter()
                    .try_for_each(|b| store.write(b))
                    .is_ok()
                {
                    unsynced.rewrite = false;
                }
            }
        }
    }
}

/// Writes `batch`, trying on a recovered store with backoff until it lands
/// (history is never dropped, and the journal holds the engines back
/// meanwhile) or shutdown gives up (false; the records are still in the
/// acknowledgement journal). A reopened store first gets the unsynced
/// commits again.
fn commit(
    store: &dyn HistoryStore,
    batch: &[Write],
    unsynced: &mut Unsynced,
    progress: &Progress,
) -> bool {
    let mut wait = std::time::Duration::from_millis(10);
    let m = &crate::telemetry::metrics::metrics().history;
    let started = std::time::Instant::now();
    let records = batch.len();
    loop {
        let earlier = if unsynced.rewrite {
            unsynced.batches.iter().try_for_each(|b| store.write(b))
        } else {
            Ok(())
        };
        if earlier.is_ok() {
            unsynced.rewrite = false;
        }
        match earlier.and_then(|()| store.write(batch)) {
            Ok(()) => {
                m.batch_records.observe(records as f64);
                m.write_seconds.observe(started.elapsed().as_secs_f64());
                if !unsynced.sync_failed && progress.health.store_failing(false) {
                    tracing::info!("the history store takes writes again");
                }
                return true;
            }
            Err(e) => {
                m.retries.inc();
                if progress.health.store_failing(true) {
                    tracing::error!(error = %e, records, "history write failed; refusing new writes with STORE_UNAVAILABLE and retrying on a reopened store");
                }
                if progress.health.give_up() {
                    return false;
                }
                std::thread::sleep(wait);
                wait = (wait * 2).min(std::time::Duration::from_secs(1));
                match store.recover() {
                    Ok(()) => unsynced.rewrite = true,
                    Err(e) => {
                        tracing::warn!(error = %e, "reopening the history store failed; trying again")
                    }
                }
            }
        }
    }
}

/// How long a warm-up waits for the writer to make earlier records
/// readable before it reads anyway.
const BARRIER_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

fn read_loop(store: &dyn HistoryStore, rx: Receiver<ReadJob>, barrier: Barrier) {
    while let Ok(ReadJob { read, done }) = rx.recv() {
        let result = match read {
            Read::Page {
                chat_id,
                before_id,
                rows,
            } => ReadResult::Page(
                store
                    .messages(&chat_id, before_id, rows)
                    .map_err(|e| tracing::error!(error = %e, "history read failed"))
                    .ok(),
            ),
            Read::Warm {
                chat_id,
                user,
                recent,
            } => {
                // A cold chat's records may still be on their way to the
                // store (sent just before its last member left): wait until
                // they are readable, so a rejoin sees them and their nonces.
                // A warm chat asks only for a joining user's cursor, and
                // every cursor written while it was warm is in its memory:
                // that read waits for nothing.
                if recent > 0 {
                    barrier.wait();
                }
                ReadResult::Warm(warm(store, &chat_id, &user, recent))
            }
        };
        done(result);
    }
}

/// Reads a cold chat's cursor and newest messages. A store error is
/// logged and answered `None`: the join is answered from memory and the
/// next join asks again (nothing stored is taken for absent).
fn warm(
    store: &dyn HistoryStore,
    chat_id: &str,
    user: &str,
    recent: usize,
) -> Option<(Option<u64>, Vec<Arc<Message>>)> {
    let read = store.read_cursor(chat_id, user).and_then(|cursor| {
        let messages = if recent > 0 {
            store.messages(chat_id, 0, recent)?
        } else {
            Vec::new()
        };
        Ok((cursor, messages))
    });
    read.map_err(|e| tracing::error!(error = %e, chat = %chat_id, "warming a chat failed"))
        .ok()
}
