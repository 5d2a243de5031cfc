//! The history writer for a clustered store (ScyllaDB): batches what the
//! engines queued, writes batches without waiting for them, spills to the
//! local [`Journal`] whatever the store cannot take, and replays the
//! journal in order once the store answers again. Also [`Merged`], the
//! reads that see records still on their way.
//!
//! Rules it keeps:
//! - every record gets its write time when it leaves the queue, so writes
//!   may land in any order and any number of times (idempotent upserts by
//!   primary key, the later write wins);
//! - a batch goes straight to the store only while the journal is empty and
//!   fewer than `inflight_batches` are being written (the high-water mark);
//!   otherwise it is appended to the journal, durably, before anything else
//!   happens to it;
//! - a batch the store refused (after its tries) is spilled, never dropped;
//! - at shutdown, batches still being written get a few seconds to finish,
//!   and are spilled when they do not.
//!
//! It never runs on a shard thread and never blocks one: engines only
//! enqueue.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender};

use super::journal::Journal;
use super::scylla::ScyllaStore;
use super::{
    Barriers, HistoryStore, Next, Progress, Record, Stamped, StoreError, Write, WriteClock,
};
use crate::core::engine::chat::{HistoryRecord, Message};
use crate::telemetry::metrics::metrics;

/// How long an idle writer sleeps before looking at the journal again.
const IDLE_TICK: Duration = Duration::from_millis(20);
/// Longest wait between two replays after a failure.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// What a shutdown gives batches being written before spilling them.
const FLUSH_DEADLINE: Duration = Duration::from_secs(5);

/// How the writer batches.
#[derive(Debug, Clone, Copy)]
pub struct WriterSettings {
    pub batch_records: usize,
    pub linger: Duration,
    pub inflight_batches: usize,
}

/// Records handed to the store and not yet confirmed, for merged reads:
/// messages and read cursors by chat, each with the write time of the
/// record that put it there (write times are unique: the record names the
/// entry it may take away).
#[derive(Default)]
pub struct Unconfirmed {
    inner: Mutex<UnconfirmedInner>,
}

/// A message on its way: (write time, the newest version).
type OnItsWay = (i64, Arc<Message>);

#[derive(Default)]
struct UnconfirmedInner {
    /// chat → message id → the newest version on its way.
    messages: HashMap<Arc<str>, BTreeMap<u64, OnItsWay>>,
    /// (chat, user) → (read up to, write time of the last record).
    cursors: HashMap<(Arc<str>, Arc<str>), (u64, i64)>,
}

impl Unconfirmed {
    fn lock(&self) -> std::sync::MutexGuard<'_, UnconfirmedInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn add(&self, batch: &[Stamped]) {
        let mut inner = self.lock();
        for r in batch {
            match &r.write {
                Write::Record(Record::Chat(HistoryRecord::Message(m))) => {
                    let chat = inner.messages.entry(m.chat_id.clone()).or_default();
                    let newer = chat.get(&m.id).is_none_or(|(at, _)| *at <= r.at_us);
                    if newer {
                        chat.insert(m.id, (r.at_us, m.clone()));
                    }
                }
                Write::Record(Record::Chat(HistoryRecord::ReadCursor {
                    chat_id,
                    user_id,
                    up_to,
                })) => {
                    let e = inner
                        .cursors
                        .entry((chat_id.clone(), user_id.clone()))
                        .or_insert((0, r.at_us));
                    *e = (e.0.max(*up_to), r.at_us);
                }
                _ => {}
            }
        }
    }

    /// Takes away the entries `batch` put there (not newer ones).
    fn forget(&self, batch: &[Stamped]) {
        let mut inner = self.lock();
        for r in batch {
            match &r.write {
                Write::Record(Record::Chat(HistoryRecord::Message(m))) => {
                    if let Some(chat) = inner.messages.get_mut(&m.chat_id) {
                        if chat.get(&m.id).is_some_and(|(at, _)| *at == r.at_us) {
                            chat.remove(&m.id);
                        }
                        if chat.is_empty() {
                            inner.messages.remove(&m.chat_id);
                        }
                    }
                }
                Write::Record(Record::Chat(HistoryRecord::ReadCursor {
                    chat_id, user_id, ..
                })) => {
                    let key = (chat_id.clone(), user_id.clone());
                    if inner
                        .cursors
                        .get(&key)
                        .is_some_and(|(_, at)| *at == r.at_us)
                    {
                        inner.cursors.remove(&key);
                    }
                }
                _ => {}
            }
        }
    }

    fn messages(&self, chat_id: &str, before_id: u64, limit: usize) -> Vec<(i64, Arc<Message>)> {
        let inner = self.lock();
        let Some(chat) = inner.messages.get(chat_id) else {
            return Vec::new();
        };
        let end = if before_id == 0 { u64::MAX } else { before_id };
        chat.range(..end)
            .rev()
            .take(limit)
            .map(|(_, (at, m))| (*at, m.clone()))
            .collect()
    }

    fn read_cursor(&self, chat_id: &str, user_id: &str) -> Option<u64> {
        let inner = self.lock();
        inner
            .cursors
            .get(&(Arc::from(chat_id), Arc::from(user_id)))
            .map(|(up_to, _)| *up_to)
    }
}

/// History reads over a clustered store that also see records still being
/// written or waiting in the journal, so a client never misses a message
/// it was already answered for.
pub struct Merged {
    pub store: Arc<ScyllaStore>,
    pub journal: Arc<Journal>,
    pub unconfirmed: Arc<Unconfirmed>,
}

impl HistoryStore for Merged {
    fn write(&self, batch: &[Write]) -> Result<(), StoreError> {
        self.store.write(batch)
    }

    fn messages(
        &self,
        chat_id: &str,
        before_id: u64,
        limit: usize,
    ) -> Result<Vec<Arc<Message>>, StoreError> {
        // Read against the way records travel (in flight, then journal,
        // then store), so one moving on between two reads is seen at least
        // once. The version with the latest write time wins, wherever it is.
        let in_flight = self.unconfirmed.messages(chat_id, before_id, limit);
        let journal = self.journal.messages(chat_id, before_id, limit)?;
        let mut page: BTreeMap<u64, (i64, Arc<Message>)> = BTreeMap::new();
        for (written, m) in self.store.messages_written(chat_id, before_id, limit)? {
            page.insert(m.id, (written, m));
        }
        for (at, m) in journal.into_iter().chain(in_flight) {
            match page.get(&m.id) {
                Some((seen, _)) if *seen > at => {}
                _ => {
                    page.insert(m.id, (at, m));
                }
            }
        }
        Ok(page
            .into_values()
            .rev()
            .take(limit)
            .map(|(_, m)| m)
            .collect())
    }

    fn read_cursor(&self, chat_id: &str, user_id: &str) -> Result<Option<u64>, StoreError> {
        let pending = [
            self.unconfirmed.read_cursor(chat_id, user_id),
            self.journal.read_cursor(chat_id, user_id)?,
        ];
        let stored = self.store.read_cursor(chat_id, user_id)?;
        Ok(pending.into_iter().chain([stored]).flatten().max())
    }

    fn load_relations(
        &self,
    ) -> Result<Vec<crate::core::engine::social::RelationRecord>, StoreError> {
        self.store.load_relations()
    }

    fn load_notifications(
        &self,
    ) -> Result<Vec<crate::core::engine::notifications::Notification>, StoreError> {
        self.store.load_notifications()
    }

    fn load_ratings(
        &self,
    ) -> Result<Vec<crate::core::engine::matchmaking::RatingRecord>, StoreError> {
        self.store.load_ratings()
    }

    fn load_outbox(&self) -> Result<Vec<crate::backend::store::jobs::Job>, StoreError> {
        self.store.load_outbox()
    }

    fn load_channels(&self) -> Result<Vec<crate::core::engine::chat::ChannelSpec>, StoreError> {
        self.store.load_channels()
    }
}

/// Replays the whole journal into the store before the node serves (a
/// crash left it there), so the warm start loads every record. Answers
/// how many records it replayed.
pub fn replay_all(store: &ScyllaStore, journal: &Journal, batch: usize) -> Result<u64, StoreError> {
    let mut replayed = 0;
    loop {
        let (seqs, records) = journal.read(0, batch.max(1))?;
        if records.is_empty() {
            return Ok(replayed);
        }
        let mut tries = 1;
        while let Err(e) = store.write_stamped_blocking(&records) {
            if tries == 3 {
                return Err(e);
            }
            tracing::warn!(error = %e, "replaying the spill journal failed; trying again");
            std::thread::sleep(Duration::from_millis(200 * tries));
            tries += 1;
        }
        journal.remove(&seqs, &records)?;
        replayed += records.len() as u64;
        metrics().history.replayed.inc_by(records.len() as u64);
    }
}

/// Where a batch being written came from.
enum Source {
    /// Straight from the queue.
    Direct,
    /// From the journal: these sequences.
    Replay(Vec<u64>),
}

struct InFlight {
    batch: Arc<Vec<Stamped>>,
    source: Source,
    /// The number (in intake order) of the batch's first record; a
    /// replayed batch is already durable in the journal (`u64::MAX`).
    first: u64,
}

/// A batch's outcome, from the store's runtime.
struct Done {
    id: u64,
    result: Result<(), StoreError>,
    tries: u32,
    took: Duration,
}

/// What the writer hands batches to: the CQL store in production.
pub trait BatchSink: Send + 'static {
    /// Writes `batch` without blocking the caller, and calls `done` with
    /// the outcome, the tries it took and the time it took.
    fn submit(&self, batch: Arc<Vec<Stamped>>, done: OnDone);
}

/// A batch write's outcome: the result, the tries, the time taken.
pub type Outcome = (Result<(), StoreError>, u32, Duration);

/// Who hears a batch's outcome.
pub type OnDone = Box<dyn FnOnce(Outcome) + Send>;

impl BatchSink for Arc<ScyllaStore> {
    fn submit(&self, batch: Arc<Vec<Stamped>>, done: OnDone) {
        ScyllaStore::submit(self, batch, move |result, tries, took| {
            done((result, tries, took))
        });
    }
}

/// The writer thread's state.
pub struct ClusterWriter<S: BatchSink = Arc<ScyllaStore>> {
    store: S,
    journal: Arc<Journal>,
    unconfirmed: Arc<Unconfirmed>,
    settings: WriterSettings,
    clock: WriteClock,
    done_tx: Sender<Done>,
    done_rx: Receiver<Done>,
    inflight: HashMap<u64, InFlight>,
    direct: usize,
    replaying: usize,
    next_batch: u64,
    /// Stamped records waiting for a free in-flight slot, and since when.
    held: Vec<Stamped>,
    held_since: Option<Instant>,
    /// The next journal sequence to replay.
    replay_from: u64,
    backoff: Duration,
    retry_at: Option<Instant>,
    /// Whether the last thing logged was "spilling" (log transitions only).
    spilling_logged: bool,
    /// Records taken from the intake so far.
    taken: u64,
    /// Where durability is reported, and shutdown's deadline read.
    progress: Option<Progress>,
    /// Shutdown gave records up: durability is no longer reported, so the
    /// acknowledgement journal keeps them for the next start.
    gave_up: std::cell::Cell<bool>,
}

/// How long records may wait for a free in-flight slot before they spill.
const HOLD_AT_MOST: Duration = Duration::from_millis(500);

impl<S: BatchSink> ClusterWriter<S> {
    pub fn new(
        store: S,
        journal: Arc<Journal>,
        unconfirmed: Arc<Unconfirmed>,
        settings: WriterSettings,
    ) -> Self {
        // Every batch in flight sends one outcome: this never fills.
        let (done_tx, done_rx) = bounded(2 * settings.inflight_batches + 2);
        Self {
            store,
            journal,
            unconfirmed,
            settings,
            clock: WriteClock::default(),
            done_tx,
            done_rx,
            inflight: HashMap::new(),
            direct: 0,
            replaying: 0,
            next_batch: 0,
            held: Vec::new(),
            held_since: None,
            replay_from: 0,
            backoff: Duration::ZERO,
            retry_at: None,
            spilling_logged: false,
            taken: 0,
            progress: None,
            gave_up: std::cell::Cell::new(false),
        }
    }

    /// Runs until every sender of `intake` is gone and what they queued is
    /// written or spilled. Records are readable ([`Merged`]) from the
    /// moment they are taken, so a barrier is answered once the records
    /// queued before it are taken.
    pub fn run(mut self, intake: Receiver<Write>, mut barriers: Barriers, progress: Progress) {
        self.progress = Some(progress);
        let mut closed = false;
        while !closed {
            let taken = self.taken;
            // Wake for the next record, or to retry what is held.
            let wait = if self.held.is_empty() {
                IDLE_TICK
            } else {
                self.settings.linger.max(Duration::from_millis(1))
            };
            let first = match barriers.next_write(&intake, wait, taken, taken) {
                Next::Write(w) => Some(w),
                Next::Idle => None,
                Next::Closed => {
                    closed = true;
                    None
                }
            };
            barriers.admit(taken, intake.len() + usize::from(first.is_some()));
            if let Some(first) = first {
                // Let a batch gather: one wake-up per batch, not one per
                // record (senders wake nobody while the writer sleeps). A
                // reader waiting cuts it short.
                let room = self
                    .settings
                    .batch_records
                    .saturating_sub(self.held.len() + 1);
                if !barriers.pending() && intake.len() < room {
                    barriers.wait(self.settings.linger, taken, intake.len() + 1);
                }
                let start = self.held.len();
                self.take(first);
                while self.held.len() < self.settings.batch_records {
                    match intake.try_recv() {
                        Ok(w) => self.take(w),
                        Err(_) => break,
                    }
                }
                self.taken += (self.held.len() - start) as u64;
                self.unconfirmed.add(&self.held[start..]);
            }
            barriers.release(self.taken);
            self.reap(Duration::ZERO);
            self.place(closed);
            self.replay();
            self.gauges(&intake);
            self.report_durable();
        }
        self.finish();
        self.report_durable();
    }

    /// Tells the acknowledgement journal how many records, in intake
    /// order, are confirmed by the store or in the spill journal: all
    /// before the oldest one still held or in a direct batch.
    fn report_durable(&self) {
        let Some(progress) = self.progress.as_ref().filter(|_| !self.gave_up.get()) else {
            return;
        };
        let held = self.taken - self.held.len() as u64;
        let durable = self
            .inflight
            .values()
            .map(|f| f.first)
            .chain(std::iter::once(held))
            .min()
            .unwrap_or(held);
        progress.durable.set(durable);
    }

    /// Stamps a record and holds it for the next batch.
    fn take(&mut self, write: Write) {
        if self.held.is_empty() {
            self.held_since = Some(Instant::now());
        }
        self.held.push(Stamped {
            at_us: self.clock.next(),
            write,
        });
    }

    /// Writes the held records when a slot is free. Otherwise they wait for
    /// one (growing into a bigger batch) until the batch is full or they
    /// have waited [`HOLD_AT_MOST`] — or `now` (shutdown) asks them out —
    /// and then spill. Behind a non-empty journal they always spill.
    fn place(&mut self, now: bool) {
        if self.held.is_empty() {
            return;
        }
        if self.journal.is_empty()
            && self.replaying == 0
            && self.direct < self.settings.inflight_batches
        {
            let batch = std::mem::take(&mut self.held);
            self.held_since = None;
            self.submit(Arc::new(batch), Source::Direct);
            return;
        }
        let full = self.held.len() >= self.settings.batch_records;
        let old = self.held_since.is_some_and(|t| t.elapsed() >= HOLD_AT_MOST);
        if !(full || old || now || !self.journal.is_empty() || self.replaying > 0) {
            return;
        }
        if !self.spilling_logged {
            self.spilling_logged = true;
            tracing::warn!(
                in_flight = self.direct + self.replaying,
                journal = self.journal.len(),
                "history store busy or unreachable; spilling to the journal"
            );
        }
        let batch = std::mem::take(&mut self.held);
        self.held_since = None;
        self.spill(&batch);
        self.unconfirmed.forget(&batch);
    }

    fn submit(&mut self, batch: Arc<Vec<Stamped>>, source: Source) {
        let id = self.next_batch;
        self.next_batch += 1;
        let first = match source {
            Source::Direct => {
                self.direct += 1;
                self.taken - batch.len() as u64
            }
            Source::Replay(_) => {
                self.replaying += 1;
                u64::MAX
            }
        };
        let done = self.done_tx.clone();
        self.store.submit(
            batch.clone(),
            Box::new(move |(result, tries, took)| {
                // The writer is gone only after it stopped waiting for us;
                // the batch is in the journal by then.
                let _ = done.send(Done {
                    id,
                    result,
                    tries,
                    took,
                });
            }),
        );
        self.inflight.insert(
            id,
            InFlight {
                batch,
                source,
                first,
            },
        );
    }

    /// Appends to the journal, trying until the disk takes it: history is
    /// never dropped, and the queue behind holds the engines back meanwhile.
    fn spill(&self, batch: &[Stamped]) {
        let mut wait = Duration::from_millis(10);
        while let Err(e) = self.journal.append(batch) {
            let health = self.progress.as_ref().map(|p| &p.health);
            if health.is_some_and(|h| h.store_failing(true)) {
                tracing::error!(error = %e, records = batch.len(), "spilling history failed; refusing new writes with STORE_UNAVAILABLE and trying again");
            }
            if health.is_some_and(|h| h.give_up()) {
                tracing::error!(
                    records = batch.len(),
                    "shutdown: the spill journal never took these records; they stay in the acknowledgement journal for the next start"
                );
                self.gave_up.set(true);
                return;
            }
            // The writer is stuck here: keep the alarm figures moving.
            if let Some(first) = batch.first() {
                let m = &metrics().history;
                let age = (WriteClock::now_us() - first.at_us).max(0) as f64 / 1e6;
                if age > m.oldest_unpersisted_seconds.get() {
                    m.oldest_unpersisted_seconds.set(age);
                }
            }
            std::thread::sleep(wait);
            wait = (wait * 2).min(MAX_BACKOFF);
            // A failed commit leaves the handle refusing every later one.
            if let Err(e) = self.journal.reopen() {
                tracing::warn!(error = %e, "reopening the spill journal failed; trying again");
            }
        }
        if let Some(p) = &self.progress {
            if p.health.store_failing(false) {
                tracing::info!("the spill journal takes writes again");
            }
        }
        metrics().history.spilled.inc_by(batch.len() as u64);
    }

    /// Handles the outcomes that arrived, waiting up to `wait` for one.
    fn reap(&mut self, wait: Duration) {
        let first = if wait.is_zero() {
            self.done_rx.try_recv().ok()
        } else {
            self.done_rx.recv_timeout(wait).ok()
        };
        let Some(first) = first else { return };
        let rest: Vec<Done> = self.done_rx.try_iter().collect();
        for done in std::iter::once(first).chain(rest) {
            self.outcome(done);
        }
    }

    fn outcome(&mut self, done: Done) {
        let Some(flight) = self.inflight.remove(&done.id) else {
            return;
        };
        let m = &metrics().history;
        m.retries.inc_by(u64::from(done.tries.saturating_sub(1)));
        let records = flight.batch.len() as u64;
        m.batch_records.observe(records as f64);
        m.write_seconds.observe(done.took.as_secs_f64());
        match (flight.source, done.result) {
            (Source::Direct, Ok(())) => {
                self.direct -= 1;
                self.unconfirmed.forget(&flight.batch);
            }
            (Source::Direct, Err(e)) => {
                self.direct -= 1;
                tracing::warn!(error = %e, records, "history batch failed; spilling it");
                // Journal first, so a read never misses it in between.
                self.spill(&flight.batch);
                self.unconfirmed.forget(&flight.batch);
            }
            (Source::Replay(seqs), Ok(())) => {
                self.replaying -= 1;
                if let Err(e) = self.journal.remove(&seqs, &flight.batch) {
                    // Still in the journal: read it again from the start,
                    // on a handle that can commit again.
                    tracing::error!(error = %e, "forgetting replayed records failed");
                    self.replay_from = 0;
                    if let Err(e) = self.journal.reopen() {
                        tracing::warn!(error = %e, "reopening the spill journal failed");
                    }
                }
                m.replayed.inc_by(records);
                self.backoff = Duration::ZERO;
                if self.journal.is_empty() && self.spilling_logged {
                    self.spilling_logged = false;
                    tracing::info!("history journal replayed; writing straight to the store again");
                }
            }
            (Source::Replay(_), Err(e)) => {
                self.replaying -= 1;
                m.retries.inc();
                self.backoff = (self.backoff * 2).clamp(Duration::from_millis(100), MAX_BACKOFF);
                self.retry_at = Some(Instant::now() + self.backoff);
                tracing::warn!(error = %e, retry_in = ?self.backoff, journal = self.journal.len(), "replaying the history journal failed");
                // Start again from the oldest record: ranges still in
                // flight may land twice, which changes nothing.
                self.replay_from = 0;
            }
        }
    }

    /// Hands the oldest journal records to the store, up to the in-flight
    /// limit, unless waiting out a failure.
    fn replay(&mut self) {
        if self.retry_at.is_some_and(|t| Instant::now() < t) {
            return;
        }
        self.retry_at = None;
        let mut restarted = false;
        while !self.journal.is_empty()
            && self.replaying + self.direct < self.settings.inflight_batches
        {
            match self
                .journal
                .read(self.replay_from, self.settings.batch_records)
            {
                Ok((seqs, records)) if !records.is_empty() => {
                    self.replay_from = seqs[seqs.len() - 1] + 1;
                    self.submit(Arc::new(records), Source::Replay(seqs));
                }
                Ok(_) => {
                    // Everything past the cursor is in flight; what is left
                    // before it (a range whose replay failed while later
                    // ones landed) gets its turn once nothing is in flight.
                    if self.replaying == 0 && !restarted {
                        restarted = true;
                        self.replay_from = 0;
                        continue;
                    }
                    break;
                }
                Err(e) => {
                    tracing::error!(error = %e, "reading the history journal failed");
                    self.retry_at = Some(Instant::now() + MAX_BACKOFF);
                    break;
                }
            }
        }
    }

    fn gauges(&self, intake: &Receiver<Write>) {
        let m = &metrics().history;
        m.queue_depth.set(intake.len() as i64);
        m.journal_records.set(self.journal.len() as i64);
        let in_flight = self
            .inflight
            .values()
            .filter_map(|f| f.batch.first().map(|r| r.at_us));
        let held = self.held.first().map(|r| r.at_us);
        let journal = if self.journal.is_empty() {
            None
        } else {
            self.journal.oldest().ok().flatten()
        };
        let oldest = in_flight.chain(held).chain(journal).min();
        let now = WriteClock::now_us();
        m.oldest_unpersisted_seconds
            .set(oldest.map_or(0.0, |at| (now - at).max(0) as f64 / 1e6));
    }

    /// Shutdown: give batches being written a few seconds, then spill what
    /// has not landed. The journal keeps the rest for the next start.
    fn finish(&mut self) {
        self.place(true);
        let deadline = Instant::now() + FLUSH_DEADLINE;
        while self.direct > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            self.reap(left.min(Duration::from_millis(50)));
        }
        // The store answers: hand it the journal too, so what was spilled
        // does not wait on this disk for the next start.
        while !self.journal.is_empty() && self.retry_at.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            self.replay();
            self.reap(left.min(Duration::from_millis(50)));
        }
        let unfinished: Vec<InFlight> = self
            .inflight
            .drain()
            .map(|(_, f)| f)
            .filter(|f| matches!(f.source, Source::Direct))
            .collect();
        for flight in unfinished {
            self.spill(&flight.batch);
            self.unconfirmed.forget(&flight.batch);
        }
        let left = self.journal.len();
        if left > 0 {
            tracing::warn!(
                records = left,
                "history store did not take everything before shutdown; the journal replays it at the next start"
            );
        }
        metrics().history.journal_records.set(left as i64);
    }
}

#[cfg(test)]
mod tests;
