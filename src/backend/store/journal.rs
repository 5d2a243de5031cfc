//! The spill journal: records a clustered store could not take yet (down,
//! slow, or its writer at its high-water mark), kept on local disk in
//! `<data_dir>/journal.redb` until they are replayed into the store.
//!
//! Built on redb, like the embedded store: every append is one durable
//! transaction, so a record the writer spilled survives a crash. Records
//! are keyed by an increasing sequence number, so replay takes them in the
//! order they were spilled. Beside the log, two small indexes keep the
//! newest spilled version of each message and read cursor, so history reads
//! can merge what waits here with what the store already holds.
//!
//! It owns nothing but its file: the writer decides what to spill and when
//! to replay, and must be the only caller of [`Journal::append`] and
//! [`Journal::remove`].

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use super::{Record, Stamped, StoreError, Write};
use crate::core::engine::chat::{HistoryRecord, Message};

/// sequence → the spilled record (JSON of [`Stamped`]).
const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
/// (chat, message id) → (sequence, write time, message JSON): the newest
/// spilled version of each message.
const MESSAGES: TableDefinition<(&str, u64), (u64, i64, &[u8])> = TableDefinition::new("messages");
/// (chat, user) → (sequence, read up to).
const CURSORS: TableDefinition<(&str, &str), (u64, u64)> = TableDefinition::new("read_cursors");

fn err(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError(format!("spill journal: {what}: {e}"))
}

/// The journal file, shared by the writer (appends, removes) and the
/// history reader (merged reads).
pub struct Journal {
    /// Reopened after a failed commit (redb refuses every later
    /// transaction on that handle); `None` only while that happens.
    db: parking_lot::RwLock<Option<Arc<Database>>>,
    path: std::path::PathBuf,
    /// The sequence the next appended record gets.
    next_seq: AtomicU64,
    /// Records in the log.
    len: AtomicU64,
}

impl Journal {
    pub fn open(path: &Path) -> Result<Arc<Self>, StoreError> {
        let (db, next_seq, len) = Self::open_db(path)?;
        Ok(Arc::new(Self {
            db: parking_lot::RwLock::new(Some(Arc::new(db))),
            path: path.to_path_buf(),
            next_seq: AtomicU64::new(next_seq),
            len: AtomicU64::new(len),
        }))
    }

    /// After a failed append or remove: opens the file again (every spill
    /// was a durable commit, so nothing is lost) and reloads the counters.
    pub fn reopen(&self) -> Result<(), StoreError> {
        let mut slot = self.db.write();
        if !super::release_handle(&mut slot) {
            return Err(err("reopening", "a reader still holds it"));
        }
        let (db, next_seq, len) = Self::open_db(&self.path)?;
        self.next_seq.store(next_seq, Ordering::Relaxed);
        self.len.store(len, Ordering::Release);
        *slot = Some(Arc::new(db));
        Ok(())
    }

    fn db(&self) -> Result<Arc<Database>, StoreError> {
        self.db.read().clone().ok_or_else(|| {
            err(
                "closed",
                "reopening it after a failed commit did not work yet",
            )
        })
    }

    fn open_db(path: &Path) -> Result<(Database, u64, u64), StoreError> {
        // A bounded page cache (redb's default is 1 GiB): the journal is
        // appended and read front to back.
        let db = redb::Builder::new()
            .set_cache_size(16 << 20)
            .create(path)
            .map_err(|e| err(&path.display().to_string(), e))?;
        let txn = db.begin_write().map_err(|e| err("begin", e))?;
        let (next_seq, len) = {
            let log = txn.open_table(LOG).map_err(|e| err("log table", e))?;
            let mut messages = txn
                .open_table(MESSAGES)
                .map_err(|e| err("messages table", e))?;
            let mut cursors = txn
                .open_table(CURSORS)
                .map_err(|e| err("cursors table", e))?;
            let last = log
                .last()
                .map_err(|e| err("reading the log", e))?
                .map_or(0, |(k, _)| k.value() + 1);
            let len = log.len().map_err(|e| err("counting the log", e))?;
            if len == 0 {
                // Sequences start again at 0: no index entry may name one.
                messages
                    .retain(|_, _| false)
                    .map_err(|e| err("clearing the index", e))?;
                cursors
                    .retain(|_, _| false)
                    .map_err(|e| err("clearing the index", e))?;
            }
            (last, len)
        };
        txn.commit().map_err(|e| err("commit", e))?;
        Ok((db, next_seq, len))
    }

    /// Records waiting in the journal.
    pub fn len(&self) -> u64 {
        self.len.load(Ordering::Acquire)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends `batch` after everything already spilled, durably.
    pub fn append(&self, batch: &[Stamped]) -> Result<(), StoreError> {
        let mut seq = self.next_seq.load(Ordering::Relaxed);
        let db = self.db()?;
        let txn = db.begin_write().map_err(|e| err("begin", e))?;
        {
            let mut log = txn.open_table(LOG).map_err(|e| err("log table", e))?;
            let mut messages = txn
                .open_table(MESSAGES)
                .map_err(|e| err("messages table", e))?;
            let mut cursors = txn
                .open_table(CURSORS)
                .map_err(|e| err("cursors table", e))?;
            for record in batch {
                let bytes = serde_json::to_vec(record).map_err(|e| err("encoding", e))?;
                log.insert(seq, bytes.as_slice())
                    .map_err(|e| err("appending", e))?;
                match &record.write {
                    Write::Record(Record::Chat(HistoryRecord::Message(m))) => {
                        let key = (&*m.chat_id, m.id);
                        let newer = messages
                            .get(key)
                            .map_err(|e| err("reading a message", e))?
                            .is_none_or(|v| v.value().1 <= record.at_us);
                        if newer {
                            let body = serde_json::to_vec(&**m).map_err(|e| err("encoding", e))?;
                            messages
                                .insert(key, (seq, record.at_us, body.as_slice()))
                                .map_err(|e| err("indexing a message", e))?;
                        }
                    }
                    Write::Record(Record::Chat(HistoryRecord::ReadCursor {
                        chat_id,
                        user_id,
                        up_to,
                    })) => {
                        let key = (&**chat_id, &**user_id);
                        let kept = cursors
                            .get(key)
                            .map_err(|e| err("reading a cursor", e))?
                            .map_or(0, |v| v.value().1);
                        cursors
                            .insert(key, (seq, kept.max(*up_to)))
                            .map_err(|e| err("indexing a cursor", e))?;
                    }
                    _ => {}
                }
                seq += 1;
            }
        }
        txn.commit().map_err(|e| err("commit", e))?;
        self.next_seq.store(seq, Ordering::Relaxed);
        self.len.fetch_add(batch.len() as u64, Ordering::AcqRel);
        Ok(())
    }

    /// Up to `max` records from sequence `from` on, in order, with their
    /// sequences (ascending, not always consecutive).
    pub fn read(&self, from: u64, max: usize) -> Result<(Vec<u64>, Vec<Stamped>), StoreError> {
        let db = self.db()?;
        let txn = db.begin_read().map_err(|e| err("begin", e))?;
        let log = txn.open_table(LOG).map_err(|e| err("log table", e))?;
        let (mut seqs, mut records) = (Vec::new(), Vec::new());
        for row in log.range(from..).map_err(|e| err("reading", e))?.take(max) {
            let (k, v) = row.map_err(|e| err("reading", e))?;
            records.push(serde_json::from_slice(v.value()).map_err(|e| err("decoding", e))?);
            seqs.push(k.value());
        }
        Ok((seqs, records))
    }

    /// The write time of the oldest record.
    pub fn oldest(&self) -> Result<Option<i64>, StoreError> {
        Ok(self.read(0, 1)?.1.first().map(|r| r.at_us))
    }

    /// Forgets the records at `seqs` (ascending; now in the store): `batch`
    /// is what they held, so their index entries go too unless a newer
    /// spill replaced them.
    pub fn remove(&self, seqs: &[u64], batch: &[Stamped]) -> Result<(), StoreError> {
        let db = self.db()?;
        let txn = db.begin_write().map_err(|e| err("begin", e))?;
        let removed;
        {
            let mut log = txn.open_table(LOG).map_err(|e| err("log table", e))?;
            let mut messages = txn
                .open_table(MESSAGES)
                .map_err(|e| err("messages table", e))?;
            let mut cursors = txn
                .open_table(CURSORS)
                .map_err(|e| err("cursors table", e))?;
            let before = log.len().map_err(|e| err("counting", e))?;
            for seq in seqs {
                log.remove(*seq).map_err(|e| err("removing", e))?;
            }
            removed = before - log.len().map_err(|e| err("counting", e))?;
            let ours = |seq: u64| seqs.binary_search(&seq).is_ok();
            for record in batch {
                match &record.write {
                    Write::Record(Record::Chat(HistoryRecord::Message(m))) => {
                        let key = (&*m.chat_id, m.id);
                        let ours = messages
                            .get(key)
                            .map_err(|e| err("reading a message", e))?
                            .is_some_and(|v| ours(v.value().0));
                        if ours {
                            messages
                                .remove(key)
                                .map_err(|e| err("unindexing a message", e))?;
                        }
                    }
                    Write::Record(Record::Chat(HistoryRecord::ReadCursor {
                        chat_id,
                        user_id,
                        ..
                    })) => {
                        let key = (&**chat_id, &**user_id);
                        let ours = cursors
                            .get(key)
                            .map_err(|e| err("reading a cursor", e))?
                            .is_some_and(|v| ours(v.value().0));
                        if ours {
                            cursors
                                .remove(key)
                                .map_err(|e| err("unindexing a cursor", e))?;
                        }
                    }
                    _ => {}
                }
            }
        }
        txn.commit().map_err(|e| err("commit", e))?;
        self.len.fetch_sub(removed, Ordering::AcqRel);
        Ok(())
    }

    /// Spilled messages of a chat with id < `before_id` (0: no bound),
    /// newest first, each with its write time.
    pub fn messages(
        &self,
        chat_id: &str,
        before_id: u64,
        limit: usize,
    ) -> Result<Vec<(i64, Arc<Message>)>, StoreError> {
        let db = self.db()?;
        let txn = db.begin_read().map_err(|e| err("begin", e))?;
        let table = txn
            .open_table(MESSAGES)
            .map_err(|e| err("messages table", e))?;
        let end = if before_id == 0 { u64::MAX } else { before_id };
        let mut out = Vec::new();
        for row in table
            .range((chat_id, 0)..(chat_id, end))
            .map_err(|e| err("reading messages", e))?
            .rev()
            .take(limit)
        {
            let (_, v) = row.map_err(|e| err("reading messages", e))?;
            let (_, at_us, body) = v.value();
            let m: Message = serde_json::from_slice(body).map_err(|e| err("decoding", e))?;
            out.push((at_us, Arc::new(m)));
        }
        Ok(out)
    }

    /// A spilled read cursor.
    pub fn read_cursor(&self, chat_id: &str, user_id: &str) -> Result<Option<u64>, StoreError> {
        let db = self.db()?;
        let txn = db.begin_read().map_err(|e| err("begin", e))?;
        let table = txn
            .open_table(CURSORS)
            .map_err(|e| err("cursors table", e))?;
        Ok(table
            .get((chat_id, user_id))
            .map_err(|e| err("reading a cursor", e))?
            .map(|v| v.value().1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::store::suite::message;

    fn stamped(at_us: i64, m: Arc<Message>) -> Stamped {
        Stamped {
            at_us,
            write: Write::Record(Record::Chat(HistoryRecord::Message(m))),
        }
    }

    #[test]
    fn records_come_back_in_order_after_a_reopen_and_go_when_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.redb");
        let j = Journal::open(&path).unwrap();
        let first: Vec<Stamped> = (1..=3)
            .map(|i| stamped(i, message("c", i as u64, "a")))
            .collect();
        j.append(&first).unwrap();
        drop(j);
        let j = Journal::open(&path).unwrap();
        assert_eq!(j.len(), 3);
        j.append(&[stamped(10, message("c", 4, "b"))]).unwrap();
        let (seqs, records) = j.read(0, 10).unwrap();
        assert_eq!(seqs, [0, 1, 2, 3]);
        let ats: Vec<i64> = records.iter().map(|r| r.at_us).collect();
        assert_eq!(ats, [1, 2, 3, 10]);
        assert_eq!(j.oldest().unwrap(), Some(1));
        // Removed out of order, and twice: the count stays right.
        j.remove(&[1, 2], &records[1..3]).unwrap();
        j.remove(&[0, 1], &records[..2]).unwrap();
        assert_eq!(j.len(), 1);
        assert_eq!(j.read(0, 10).unwrap().0, [3]);
        let ids: Vec<u64> = j
            .messages("c", 0, 10)
            .unwrap()
            .iter()
            .map(|(_, m)| m.id)
            .collect();
        assert_eq!(ids, [4]);
    }

    #[test]
    fn a_reopened_journal_keeps_its_records_and_counters() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(&dir.path().join("j.redb")).unwrap();
        j.append(&[stamped(1, message("c", 10, "a"))]).unwrap();
        j.reopen().unwrap();
        assert_eq!(j.len(), 1);
        j.append(&[stamped(2, message("c", 20, "b"))]).unwrap();
        let (seqs, records) = j.read(0, 10).unwrap();
        assert_eq!(seqs, vec![0, 1], "sequences go on after the reopen");
        assert_eq!(records.len(), 2);
    }

    #[test]
    fn the_index_keeps_the_newest_version_of_a_message() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(&dir.path().join("j.redb")).unwrap();
        // The edit (later write time) was spilled before its original.
        let edit = stamped(20, message("c", 7, "edited"));
        let original = stamped(10, message("c", 7, "original"));
        j.append(std::slice::from_ref(&edit)).unwrap();
        j.append(std::slice::from_ref(&original)).unwrap();
        let page = j.messages("c", 0, 10).unwrap();
        assert_eq!(&*page[0].1.content, "edited");
        // Replaying the original alone leaves the edit indexed.
        j.remove(&[1], std::slice::from_ref(&original)).unwrap();
        assert_eq!(&*j.messages("c", 0, 10).unwrap()[0].1.content, "edited");
        j.remove(&[0], std::slice::from_ref(&edit)).unwrap();
        assert!(j.messages("c", 0, 10).unwrap().is_empty());
        assert!(j.is_empty());
    }
}
