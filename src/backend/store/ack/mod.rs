//! The acknowledgement journal: a write-ahead log in front of every store,
//! so that a reply saying something happened is sent only once the record
//! would survive kill -9 and power loss.
//!
//! Every write the gateway makes (engine records, webhook bookkeeping)
//! passes through one thread, `huddle-ack-journal`, in the order it was
//! queued. The thread takes whatever is waiting (a *group*: records that
//! arrived while the previous group was being synced), appends it to the
//! current segment under `<data_dir>/ack/`, syncs once (fdatasync), and
//! only then forwards the records to the store's writer and runs the
//! acknowledgements queued behind them ([`AckJournal::after_durable`]).
//! One sync per group, however many records it holds: the cost of
//! durability grows with the group rate, not the message rate.
//!
//! Each queueing thread (a shard, a webhook task) is a *producer* with two
//! counters, records queued and records made durable, so a shard can tell
//! at no cost whether a reply must wait ([`AckJournal::unsynced`]): a
//! reply that follows no unsynced record of its shard goes out at once.
//!
//! A segment is deleted once the store's writer reports every record in
//! it durable there ([`Durable`]). At start, what a crash left in the
//! segments is handed to the store again (writes are idempotent upserts in
//! queue order, so a record written twice changes nothing) before anything
//! else reads the store.
//!
//! When the disk refuses a group (full, failing), the thread keeps it,
//! puts the segment back to its last good length, marks the journal
//! failing ([`Health`]: new writes are refused at the edge with
//! STORE_UNAVAILABLE) and tries again with backoff until the disk takes it
//! or shutdown's deadline passes; records it then gives up are counted and
//! logged, and their acknowledgements never run.
//!
//! It never runs on a shard thread, never reads the store and knows
//! nothing of engines or frames: it moves [`Write`]s and runs closures.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use super::{StoreError, Write};
use crate::telemetry::metrics::metrics;

/// Segments are rolled at this size (then deleted once the store has
/// everything in them).
const SEGMENT_BYTES: u64 = 64 << 20;
/// Items per group at most (a group is one write and one sync).
const GROUP_ITEMS: usize = 8_192;
/// How often an idle journal looks for segments to delete.
const HOUSEKEEPING: Duration = Duration::from_millis(200);
/// Longest wait between two tries of a group the disk refused.
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// Frame header: payload length (u32 LE) and checksum (u32 LE, the low
/// half of the payload's xxh3).
const HEADER: usize = 8;
/// A record larger than this is not ours (a torn or foreign file).
const MAX_RECORD: usize = 16 << 20;

/// When an acknowledgement may be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AckMode {
    /// After the record is written and synced to the journal (fdatasync):
    /// survives kill -9 and power loss.
    Durable,
    /// As soon as the record is queued. The journal is still written, but
    /// not synced: a kill -9 loses what was queued and not yet written
    /// (typically under a millisecond of traffic), a power loss what the
    /// store had not synced yet (the embedded store syncs every 500 ms)
    /// unless the kernel had written the journal's pages by then.
    Fast,
}

/// One producer's progress: records queued, and records the journal made
/// durable. Only the producer's thread moves `queued`.
#[derive(Debug, Default)]
pub struct Producer {
    queued: AtomicU64,
    durable: AtomicU64,
}

thread_local! {
    static PRODUCER: Arc<Producer> = Arc::new(Producer::default());
}

/// What waits for the journal thread.
pub enum Item {
    Write {
        write: Write,
        producer: Arc<Producer>,
        /// This record's number among its producer's.
        seq: u64,
    },
    /// Runs once everything queued before it is durable (or at once in
    /// [`AckMode::Fast`]); never runs if that never happens.
    After(Box<dyn FnOnce() + Send>),
}

/// Whether writes can be kept right now, for the edges that refuse new
/// ones, `/readyz` and the metrics. Failing since: ms since the Unix epoch,
/// 0 while healthy.
#[derive(Debug, Default)]
pub struct Health {
    journal_failing_since: AtomicI64,
    store_failing_since: AtomicI64,
    /// Set at shutdown: past this instant a write the disk refuses is given
    /// up instead of tried again.
    give_up_at: parking_lot::Mutex<Option<Instant>>,
    stopping: AtomicBool,
}

fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Health {
    /// Both the journal and the store take writes.
    pub fn accepting(&self) -> bool {
        self.journal_failing_since.load(Ordering::Relaxed) == 0
            && self.store_failing_since.load(Ordering::Relaxed) == 0
    }

    /// What is failing, for `/readyz` and logs; `None` while healthy.
    pub fn failure(&self) -> Option<String> {
        let now = unix_ms();
        let age = |since: i64| (now - since).max(0) as f64 / 1000.0;
        let journal = self.journal_failing_since.load(Ordering::Relaxed);
        let store = self.store_failing_since.load(Ordering::Relaxed);
        match (journal, store) {
            (0, 0) => None,
            (j, 0) => Some(format!(
                "the acknowledgement journal cannot write (for {:.1} s)",
                age(j)
            )),
            (_, s) => Some(format!("the store refuses writes (for {:.1} s)", age(s))),
        }
    }

    fn set(flag: &AtomicI64, failing: bool) -> bool {
        if failing {
            flag.compare_exchange(0, unix_ms(), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        } else {
            flag.swap(0, Ordering::Relaxed) != 0
        }
    }

    /// Marks the journal failing or healthy; true when that changed.
    pub fn journal_failing(&self, failing: bool) -> bool {
        let changed = Self::set(&self.journal_failing_since, failing);
        self.gauge();
        changed
    }

    /// Marks the store failing or healthy; true when that changed.
    pub fn store_failing(&self, failing: bool) -> bool {
        let changed = Self::set(&self.store_failing_since, failing);
        self.gauge();
        changed
    }

    fn gauge(&self) {
        let since = [
            self.journal_failing_since.load(Ordering::Relaxed),
            self.store_failing_since.load(Ordering::Relaxed),
        ]
        .into_iter()
        .filter(|s| *s != 0)
        .min();
        let seconds = since.map_or(0.0, |s| (unix_ms() - s).max(0) as f64 / 1000.0);
        metrics().history.failing_seconds.set(seconds);
    }

    /// Shutdown began: writes the disk refuses are tried until `within`
    /// has passed, then given up.
    pub fn stop_within(&self, within: Duration) {
        *self.give_up_at.lock() = Some(Instant::now() + within);
        self.stopping.store(true, Ordering::Relaxed);
    }

    /// Whether a failing write should stop being tried.
    pub fn give_up(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
            && self.give_up_at.lock().is_some_and(|t| Instant::now() >= t)
    }
}

/// The store writer's report of how far it got: how many of the records
/// forwarded to it, in order, are durable in the store (or its spill
/// journal). Segments wholly below it are deleted.
#[derive(Debug, Default)]
pub struct Durable(AtomicU64);

impl Durable {
    pub fn set(&self, records: u64) {
        self.0.fetch_max(records, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The queueing side, held by every [`super::History`] handle.
#[derive(Clone)]
pub struct AckJournal {
    tx: Sender<Item>,
    mode: AckMode,
    health: Arc<Health>,
}

impl AckJournal {
    /// Queues a write; waits only while the queue is full (the disk cannot
    /// keep up, or is failing and the edges have not stopped new writes
    /// yet). False when the journal is gone (shutdown).
    pub fn write(&self, write: Write) -> bool {
        let item = PRODUCER.with(|p| Item::Write {
            write,
            seq: p.queued.fetch_add(1, Ordering::Relaxed) + 1,
            producer: p.clone(),
        });
        self.send(item)
    }

    /// Queues a write if there is room; gives it back otherwise.
    pub fn try_write(&self, write: Write) -> Result<(), Write> {
        PRODUCER.with(|p| {
            let item = Item::Write {
                write,
                seq: p.queued.load(Ordering::Relaxed) + 1,
                producer: p.clone(),
            };
            match self.tx.try_send(item) {
                Ok(()) => {
                    p.queued.fetch_add(1, Ordering::Relaxed);
                    Ok(())
                }
                Err(e) => match e.into_inner() {
                    Item::Write { write, .. } => Err(write),
                    Item::After(_) => unreachable!("only a write was sent"),
                },
            }
        })
    }

    fn send(&self, item: Item) -> bool {
        let item = match self.tx.try_send(item) {
            Ok(()) => return true,
            Err(crossbeam_channel::TrySendError::Full(item)) => {
                metrics().history.enqueue_waits.inc();
                item
            }
            Err(crossbeam_channel::TrySendError::Disconnected(_)) => return false,
        };
        self.tx.send(item).is_ok()
    }

    /// Runs `then` once every write this thread queued so far is durable;
    /// at once when nothing of this thread's is waiting or in
    /// [`AckMode::Fast`]. Never runs if the writes are never kept.
    pub fn after_durable(&self, then: impl FnOnce() + Send + 'static) {
        if !self.unsynced() {
            then();
            return;
        }
        if !self.send(Item::After(Box::new(then))) {
            tracing::error!("acknowledgement journal is gone; an acknowledgement was not sent");
        }
    }

    /// Runs `then` once everything queued so far, by any thread, has been
    /// handed to the store's writer (a reader's barrier). False when the
    /// queue is full.
    pub fn behind_queued(&self, then: impl FnOnce() + Send + 'static) -> bool {
        self.tx.try_send(Item::After(Box::new(then))).is_ok()
    }

    /// Whether this thread queued writes that are not durable yet (always
    /// false in [`AckMode::Fast`]).
    pub fn unsynced(&self) -> bool {
        self.mode == AckMode::Durable
            && PRODUCER
                .with(|p| p.queued.load(Ordering::Relaxed) > p.durable.load(Ordering::Relaxed))
    }

    /// Items waiting for the journal thread.
    pub fn queued(&self) -> usize {
        self.tx.len()
    }

    pub fn health(&self) -> &Arc<Health> {
        &self.health
    }

    pub fn mode(&self) -> AckMode {
        self.mode
    }
}

/// A segment file: `<first record number, 20 digits>.log`.
struct Segment {
    path: PathBuf,
    /// Records forwarded to the store once this segment's last one was.
    end: u64,
}

/// The journal thread's state.
pub struct JournalWriter {
    dir: PathBuf,
    mode: AckMode,
    health: Arc<Health>,
    durable: Arc<Durable>,
    file: File,
    /// Bytes of the current segment known written.
    len: u64,
    current: PathBuf,
    /// The next segment's name: names only grow, so recovery's order (by
    /// name) is the order segments were written in.
    next_name: u64,
    /// Closed segments, oldest first.
    closed: Vec<Segment>,
    /// Records forwarded to the store's writer so far.
    forwarded: u64,
    /// Whether a failure is being logged (transitions only).
    failing_logged: bool,
    /// Records were given up (shutdown): no acknowledgement runs after
    /// that, since it may stand behind one of them.
    abandoned: bool,
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> StoreError {
    StoreError(format!("{what} {}: {e}", path.display()))
}

impl JournalWriter {
    /// Opens `dir` (created when missing) with a fresh segment. Segments a
    /// crash left behind must have been handed to the store first
    /// ([`recover`]).
    pub fn open(
        dir: &Path,
        mode: AckMode,
        health: Arc<Health>,
        durable: Arc<Durable>,
    ) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| io_err("creating the acknowledgement journal directory", dir, e))?;
        let (current, file, name) = new_segment(dir, 0)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            mode,
            health,
            durable,
            file,
            len: 0,
            current,
            next_name: name + 1,
            closed: Vec::new(),
            forwarded: 0,
            failing_logged: false,
            abandoned: false,
        })
    }

    /// Starts the journal thread in front of the store writer's queue
    /// `store`; returns the queueing side.
    pub fn spawn(
        self,
        capacity: usize,
        store: Sender<Write>,
    ) -> (AckJournal, std::thread::JoinHandle<()>) {
        let (tx, rx) = crossbeam_channel::bounded(capacity);
        let journal = AckJournal {
            tx,
            mode: self.mode,
            health: self.health.clone(),
        };
        let join = std::thread::Builder::new()
            .name("huddle-ack-journal".into())
            .spawn(move || self.run(rx, store))
            .expect("spawning the acknowledgement journal at start-up");
        (journal, join)
    }

    fn run(mut self, rx: Receiver<Item>, store: Sender<Write>) {
        let mut buf = Vec::with_capacity(1 << 20);
        let mut group = Vec::with_capacity(GROUP_ITEMS);
        let m = &metrics().history;
        loop {
            let first = match rx.recv_timeout(HOUSEKEEPING) {
                Ok(item) => item,
                Err(RecvTimeoutError::Timeout) => {
                    // Idle, and the store has everything: close the segment
                    // so it can go too (a restart then replays nothing).
                    if self.len > 0 && self.durable.get() >= self.forwarded {
                        self.roll();
                    }
                    self.delete_stored();
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            };
            group.push(first);
            while group.len() < GROUP_ITEMS {
                match rx.try_recv() {
                    Ok(item) => group.push(item),
                    Err(_) => break,
                }
            }
            m.ack_queue_depth.set(rx.len() as i64);
            buf.clear();
            let mut records = 0u64;
            for item in &group {
                if let Item::Write { write, .. } = item {
                    frame(&mut buf, write);
                    records += 1;
                }
            }
            let kept = !self.abandoned && (records == 0 || self.append(&buf, Some(&rx)));
            self.abandoned |= !kept;
            if records > 0 {
                m.ack_group_records.observe(records as f64);
            }
            for item in group.drain(..) {
                match item {
                    Item::Write {
                        write,
                        producer,
                        seq,
                    } => {
                        if kept {
                            producer.durable.fetch_max(seq, Ordering::Relaxed);
                        }
                        // Forwarded even when given up: the store may
                        // still keep it (it is never acknowledged).
                        if store.send(write).is_ok() {
                            self.forwarded += 1;
                        }
                    }
                    Item::After(then) if kept => then(),
                    Item::After(_) => {}
                }
            }
            if !kept && records > 0 {
                m.abandoned_records.inc_by(records);
                tracing::error!(
                    records,
                    "the acknowledgement journal gave up records at shutdown: the disk never took them, and their senders were never acknowledged"
                );
            }
            if self.len >= SEGMENT_BYTES {
                self.roll();
            }
            self.delete_stored();
        }
        m.ack_queue_depth.set(0);
        // The store writer drains what was forwarded once `store` is
        // dropped; what it does not make durable stays in the segments
        // for the next start.
    }

    /// Writes and syncs `buf` at the end of the current segment, trying
    /// until the disk takes it; false when shutdown gave up on it. While it
    /// tries, the queue behind (`intake`) keeps its gauges moving.
    fn append(&mut self, buf: &[u8], intake: Option<&Receiver<Item>>) -> bool {
        let mut wait = Duration::from_millis(10);
        loop {
            let started = Instant::now();
            match self.try_append(buf) {
                Ok(()) => {
                    metrics()
                        .history
                        .ack_sync_seconds
                        .observe(started.elapsed().as_secs_f64());
                    if self.health.journal_failing(false) || self.failing_logged {
                        self.failing_logged = false;
                        tracing::info!("the acknowledgement journal writes again");
                    }
                    return true;
                }
                Err(e) => {
                    self.health.journal_failing(true);
                    if !self.failing_logged {
                        self.failing_logged = true;
                        tracing::error!(error = %e, path = %self.current.display(), "the acknowledgement journal cannot write; refusing new writes with STORE_UNAVAILABLE and trying again");
                    }
                    // Back to the last good length, so a torn group never
                    // sits in front of the next one.
                    let _ = self.file.set_len(self.len);
                    if self.health.give_up() {
                        return false;
                    }
                    if let Some(intake) = intake {
                        metrics().history.ack_queue_depth.set(intake.len() as i64);
                    }
                    self.health.journal_failing(true);
                    std::thread::sleep(wait);
                    wait = (wait * 2).min(MAX_BACKOFF);
                    // A file the disk failed may stay failed: start a new
                    // segment when the disk lets us.
                    if let Ok((path, file, name)) = new_segment(&self.dir, self.next_name) {
                        self.next_name = name + 1;
                        self.close_current();
                        self.current = path;
                        self.file = file;
                        self.len = 0;
                    }
                }
            }
        }
    }

    fn try_append(&mut self, buf: &[u8]) -> std::io::Result<()> {
        use std::io::{Seek, SeekFrom};
        self.file.seek(SeekFrom::Start(self.len))?;
        self.file.write_all(buf)?;
        if self.mode == AckMode::Durable {
            self.file.sync_data()?;
        }
        self.len += buf.len() as u64;
        Ok(())
    }

    fn close_current(&mut self) {
        if self.len == 0 {
            let _ = std::fs::remove_file(&self.current);
            return;
        }
        self.closed.push(Segment {
            path: self.current.clone(),
            end: self.forwarded,
        });
    }

    fn roll(&mut self) {
        match new_segment(&self.dir, self.next_name) {
            Ok((path, file, name)) => {
                self.next_name = name + 1;
                self.close_current();
                self.current = path;
                self.file = file;
                self.len = 0;
            }
            Err(e) => {
                tracing::warn!(error = %e, "rolling the acknowledgement journal failed; keeping the current segment")
            }
        }
    }

    /// Deletes the segments whose every record the store has.
    fn delete_stored(&mut self) {
        let durable = self.durable.get();
        while self.closed.first().is_some_and(|s| s.end <= durable) {
            let s = self.closed.remove(0);
            if let Err(e) = std::fs::remove_file(&s.path) {
                tracing::warn!(error = %e, path = %s.path.display(), "deleting a stored journal segment failed");
            }
        }
    }
}

/// Creates `<dir>/<n, 20 digits>.log` for the first free `n` from `from`,
/// and answers that `n`.
fn new_segment(dir: &Path, from: u64) -> Result<(PathBuf, File, u64), StoreError> {
    let mut n = from;
    loop {
        let path = dir.join(format!("{n:020}.log"));
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(file) => {
                // The new name must survive a power loss too, before any
                // record synced into it is acknowledged.
                let synced = File::open(dir).and_then(|d| d.sync_all());
                if let Err(e) = synced {
                    let _ = std::fs::remove_file(&path);
                    return Err(io_err("syncing the journal directory", dir, e));
                }
                return Ok((path, file, n));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => n += 1,
            Err(e) => return Err(io_err("creating journal segment", &path, e)),
        }
    }
}

fn frame(buf: &mut Vec<u8>, write: &Write) {
    let start = buf.len();
    buf.extend_from_slice(&[0; HEADER]);
    serde_json::to_writer(&mut *buf, write).expect("a Write always encodes");
    let payload = &buf[start + HEADER..];
    let len = payload.len() as u32;
    let sum = xxhash_rust::xxh3::xxh3_64(payload) as u32;
    buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
    buf[start + 4..start + HEADER].copy_from_slice(&sum.to_le_bytes());
}

/// Segments in `dir`, oldest first.
fn segments(dir: &Path) -> Result<Vec<PathBuf>, StoreError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err("reading the acknowledgement journal", dir, e)),
    };
    let mut out: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    out.sort();
    Ok(out)
}

/// Hands every record a crash left in `dir` to `keep`, in order and in
/// chunks of at most `chunk`, then deletes the segments. A torn frame at
/// the end of a segment (a group whose sync never finished, so nobody was
/// acknowledged for it) ends that segment. Returns the records handed on.
pub fn recover(
    dir: &Path,
    chunk: usize,
    mut keep: impl FnMut(&[Write]) -> Result<(), StoreError>,
) -> Result<u64, StoreError> {
    let files = segments(dir)?;
    let mut total = 0u64;
    let mut batch = Vec::with_capacity(chunk);
    // Segments with a frame that checks out but does not decode: kept
    // aside under `bad/` for a person to look at, never fatal.
    let mut bad = Vec::new();
    for path in &files {
        let mut bytes = Vec::new();
        File::open(path)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .map_err(|e| io_err("reading journal segment", path, e))?;
        let mut at = 0;
        while at + HEADER <= bytes.len() {
            let len = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
            let sum = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().expect("4 bytes"));
            let body = at + HEADER;
            // Zeros (a file extended but never written, as a power loss can
            // leave it), a length past the end or an absurd one: the end.
            if len == 0 || len > MAX_RECORD || body + len > bytes.len() {
                break;
            }
            let payload = &bytes[body..body + len];
            if xxhash_rust::xxh3::xxh3_64(payload) as u32 != sum {
                break;
            }
            match serde_json::from_slice::<Write>(payload) {
                Ok(write) => batch.push(write),
                Err(e) => {
                    tracing::error!(path = %path.display(), at, error = %e, "a journal record does not decode; skipped, and the segment is kept under bad/");
                    if bad.last() != Some(path) {
                        bad.push(path.clone());
                    }
                }
            }
            if batch.len() >= chunk {
                keep(&batch)?;
                total += batch.len() as u64;
                batch.clear();
            }
            at = body + len;
        }
        if at < bytes.len() {
            tracing::warn!(path = %path.display(), at, size = bytes.len(), "a torn record ends this journal segment (never acknowledged)");
        }
    }
    if !batch.is_empty() {
        keep(&batch)?;
        total += batch.len() as u64;
    }
    for path in &files {
        if bad.contains(path) {
            let aside = dir.join("bad");
            std::fs::create_dir_all(&aside)
                .and_then(|()| {
                    std::fs::rename(path, aside.join(path.file_name().unwrap_or_default()))
                })
                .map_err(|e| io_err("keeping aside journal segment", path, e))?;
        } else {
            std::fs::remove_file(path).map_err(|e| io_err("deleting journal segment", path, e))?;
        }
    }
    if total > 0 {
        tracing::info!(
            records = total,
            "recovered acknowledged records a crash left in the journal"
        );
    }
    Ok(total)
}

#[cfg(test)]
mod tests;
