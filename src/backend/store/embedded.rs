//! The single-node history store: redb, an embedded, pure-Rust, ACID
//! key-value store in one file under the data directory.
//!
//! Why redb: it is a library (nothing to install or run), keeps ordered
//! keys so a partition slice is one range scan, commits batches atomically
//! with fsync, and supports readers concurrent with the one writer — the
//! access pattern of [`super::HistoryStore`]. SQLite would bring a C build
//! and SQL we don't need; fjall's LSM shines at write volumes a single node
//! doesn't reach.
//!
//! Tables mirror the wide-column layout: `messages` keyed (chat id, message
//! id), `read_cursors` keyed (chat id, user id), `relations` keyed (user,
//! other user), `notifications` keyed (user, notification id), `outbox`
//! keyed by job id. Values are JSON: small, self-describing, and readable
//! with any redb tool.

use crate::core::engine::matchmaking::{Rating, RatingRecord};
use std::path::Path;
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::{HistoryStore, Record, StoreError, Write};
use crate::backend::store::jobs::Job;
use crate::core::engine::chat::{ChannelSpec, HistoryRecord, Message};
use crate::core::engine::notifications::Notification;
use crate::core::engine::social::{PairState, RelationRecord};

const MESSAGES: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("messages");
const READ_CURSORS: TableDefinition<(&str, &str), u64> = TableDefinition::new("read_cursors");
const RELATIONS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("relations");
/// Ratings the game backend set: (game, user) → (mu, sigma).
const RATINGS: TableDefinition<(&str, &str), (f64, f64)> = TableDefinition::new("ratings");
const NOTIFICATIONS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("notifications");
const OUTBOX: TableDefinition<&str, &[u8]> = TableDefinition::new("outbox");
/// Operator-created channels: name → spec.
const CHANNELS: TableDefinition<&str, &[u8]> = TableDefinition::new("channels");

/// History in `<data_dir>/history.redb`. The database is reopened after a
/// failed write: redb refuses every later transaction on a handle whose
/// commit failed (a full disk), until it is opened again.
pub struct EmbeddedStore {
    /// `None` only while being reopened, or after a reopen failed.
    db: parking_lot::RwLock<Option<Arc<Database>>>,
    path: std::path::PathBuf,
    cache_bytes: usize,
    /// Behind the acknowledgement journal, commits need not reach the disk
    /// one by one: they are readable at once and made durable together by
    /// [`HistoryStore::sync`] (the journal keeps them until then).
    lazy: std::sync::atomic::AtomicBool,
}

fn err(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError(format!("{what}: {e}"))
}

impl EmbeddedStore {
    /// Opens (or creates) the file with redb's page cache bounded to
    /// `cache_bytes`.
    pub fn open(path: &Path, cache_bytes: usize) -> Result<Self, StoreError> {
        let db = Self::open_db(path, cache_bytes)?;
        Ok(Self {
            db: parking_lot::RwLock::new(Some(Arc::new(db))),
            path: path.to_path_buf(),
            cache_bytes,
            lazy: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// From now on, [`HistoryStore::write`] commits without syncing; only
    /// [`HistoryStore::sync`] does. For a store behind the acknowledgement
    /// journal, which holds every record until the store reports it synced.
    pub fn sync_lazily(&self) {
        self.lazy.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    fn open_db(path: &Path, cache_bytes: usize) -> Result<Database, StoreError> {
        let db = redb::Builder::new()
            .set_cache_size(cache_bytes)
            .create(path)
            .map_err(|e| err(&format!("opening {}", path.display()), e))?;
        // Create the tables up front so readers never miss them.
        let txn = db.begin_write().map_err(|e| err("begin", e))?;
        txn.open_table(MESSAGES)
            .map_err(|e| err("messages table", e))?;
        txn.open_table(READ_CURSORS)
            .map_err(|e| err("read_cursors table", e))?;
        txn.open_table(RELATIONS)
            .map_err(|e| err("relations table", e))?;
        txn.open_table(NOTIFICATIONS)
            .map_err(|e| err("notifications table", e))?;
        txn.open_table(OUTBOX).map_err(|e| err("outbox table", e))?;
        txn.open_table(RATINGS)
            .map_err(|e| err("ratings table", e))?;
        txn.open_table(CHANNELS)
            .map_err(|e| err("channels table", e))?;
        txn.commit().map_err(|e| err("commit", e))?;
        Ok(db)
    }

    fn db(&self) -> Result<Arc<Database>, StoreError> {
        self.db.read().clone().ok_or_else(|| {
            StoreError(format!(
                "{} is closed: reopening it after a failed write did not work yet",
                self.path.display()
            ))
        })
    }
}

impl HistoryStore for EmbeddedStore {
    fn recover(&self) -> Result<(), StoreError> {
        let mut slot = self.db.write();
        if !super::release_handle(&mut slot) {
            return Err(StoreError(format!(
                "reopening {}: a reader still holds it",
                self.path.display()
            )));
        }
        *slot = Some(Arc::new(Self::open_db(&self.path, self.cache_bytes)?));
        Ok(())
    }

    fn sync(&self) -> Result<(), StoreError> {
        // An empty commit that syncs makes every earlier one durable.
        let db = self.db()?;
        let txn = db.begin_write().map_err(|e| err("begin", e))?;
        txn.commit().map_err(|e| err("sync commit", e))
    }

    fn write(&self, batch: &[Write]) -> Result<(), StoreError> {
        let db = self.db()?;
        let mut txn = db.begin_write().map_err(|e| err("begin", e))?;
        if self.lazy.load(std::sync::atomic::Ordering::Relaxed) {
            txn.set_durability(redb::Durability::None)
                .map_err(|e| err("durability", e))?;
        }
        {
            let mut messages = txn
                .open_table(MESSAGES)
                .map_err(|e| err("messages table", e))?;
            let mut cursors = txn
                .open_table(READ_CURSORS)
                .map_err(|e| err("read_cursors table", e))?;
            let mut relations = txn
                .open_table(RELATIONS)
                .map_err(|e| err("relations table", e))?;
            let mut notifications = txn
                .open_table(NOTIFICATIONS)
                .map_err(|e| err("notifications table", e))?;
            let mut outbox = txn.open_table(OUTBOX).map_err(|e| err("outbox table", e))?;
            let mut ratings = txn
                .open_table(RATINGS)
                .map_err(|e| err("ratings table", e))?;
            let mut channels = txn
                .open_table(CHANNELS)
                .map_err(|e| err("channels table", e))?;
            for write in batch {
                match write {
                    Write::Record(Record::Chat(HistoryRecord::Message(m))) => {
                        let value =
                            serde_json::to_vec(&**m).map_err(|e| err("encoding a message", e))?;
                        messages
                            .insert((&*m.chat_id, m.id), value.as_slice())
                            .map_err(|e| err("writing a message", e))?;
                    }
                    Write::Record(Record::Chat(HistoryRecord::ReadCursor {
                        chat_id,
                        user_id,
                        up_to,
                    })) => {
                        // A cursor only moves forward, whatever was written
                        // when it was not known.
                        let key = (&**chat_id, &**user_id);
                        let stored = cursors
                            .get(key)
                            .map_err(|e| err("reading a read cursor", e))?
                            .map_or(0, |v| v.value());
                        cursors
                            .insert(key, stored.max(*up_to))
                            .map_err(|e| err("writing a read cursor", e))?;
                    }
                    Write::Record(Record::Relation(r)) => {
                        let key = (&*r.user, &*r.other);
                        match &r.pair {
                            Some(pair) => {
                                let value = serde_json::to_vec(pair)
                                    .map_err(|e| err("encoding a relation", e))?;
                                relations.insert(key, value.as_slice())
                            }
                            None => relations.remove(key),
                        }
                        .map_err(|e| err("writing a relation", e))?;
                    }
                    Write::Record(Record::Notification(n)) => {
                        let value = serde_json::to_vec(&**n)
                            .map_err(|e| err("encoding a notification", e))?;
                        notifications
                            .insert((&*n.user_id, n.id), value.as_slice())
                            .map_err(|e| err("writing a notification", e))?;
                    }
                    Write::Record(Record::Rating(r)) => {
                        ratings
                            .insert((&*r.game, &*r.user), (r.rating.mu, r.rating.sigma))
                            .map_err(|e| err("writing a rating", e))?;
                    }
                    Write::Record(Record::Channel(spec)) => {
                        let value = serde_json::to_vec(&**spec)
                            .map_err(|e| err("encoding a channel", e))?;
                        channels
                            .insert(spec.name.as_str(), value.as_slice())
                            .map_err(|e| err("writing a channel", e))?;
                    }
                    Write::Record(Record::NotificationDeleted { user, id }) => {
                        notifications
                            .remove((&**user, *id))
                            .map_err(|e| err("deleting a notification", e))?;
                    }
                    Write::OutboxPut(job) => {
                        let value =
                            serde_json::to_vec(&**job).map_err(|e| err("encoding a job", e))?;
                        outbox
                            .insert(&*job.id, value.as_slice())
                            .map_err(|e| err("writing a job", e))?;
                    }
                    Write::OutboxDone(id) => {
                        outbox
                            .remove(&**id)
                            .map_err(|e| err("finishing a job", e))?;
                    }
                }
            }
        }
        txn.commit().map_err(|e| err("commit", e))
    }

    fn messages(
        &self,
        chat_id: &str,
        before_id: u64,
        limit: usize,
    ) -> Result<Vec<Arc<Message>>, StoreError> {
        let db = self.db()?;
        let txn = db.begin_read().map_err(|e| err("begin read", e))?;
        let table = txn
            .open_table(MESSAGES)
            .map_err(|e| err("messages table", e))?;
        let end = if before_id == 0 { u64::MAX } else { before_id };
        let range = table
            .range((chat_id, 0u64)..(chat_id, end))
            .map_err(|e| err("reading messages", e))?;
        let mut out = Vec::with_capacity(limit);
        for row in range.rev().take(limit) {
            let (_, value) = row.map_err(|e| err("reading a message", e))?;
            let m: Message =
                serde_json::from_slice(value.value()).map_err(|e| err("decoding a message", e))?;
            out.push(Arc::new(m));
        }
        Ok(out)
    }

    fn read_cursor(&self, chat_id: &str, user_id: &str) -> Result<Option<u64>, StoreError> {
        let db = self.db()?;
        let txn = db.begin_read().map_err(|e| err("begin read", e))?;
        let table = txn
            .open_table(READ_CURSORS)
            .map_err(|e| err("read_cursors table", e))?;
        let got = table
            .get((chat_id, user_id))
            .map_err(|e| err("reading a read cursor", e))?;
        Ok(got.map(|v| v.value()))
    }

    fn load_relations(&self) -> Result<Vec<RelationRecord>, StoreError> {
        let db = self.db()?;
        let txn = db.begin_read().map_err(|e| err("begin read", e))?;
        let table = txn
            .open_table(RELATIONS)
            .map_err(|e| err("relations table", e))?;
        let mut out = Vec::new();
        for row in table.iter().map_err(|e| err("reading relations", e))? {
            let (k, v) = row.map_err(|e| err("reading a relation", e))?;
            let (user, other) = k.value();
            let pair: PairState =
                serde_json::from_slice(v.value()).map_err(|e| err("decoding a relation", e))?;
            out.push(RelationRecord {
                user: Arc::from(user),
                other: Arc::from(other),
                pair: Some(pair),
            });
        }
        Ok(out)
    }

    fn load_ratings(&self) -> Result<Vec<RatingRecord>, StoreError> {
        let db = self.db()?;
        let txn = db.begin_read().map_err(|e| err("begin read", e))?;
        let table = txn
            .open_table(RATINGS)
            .map_err(|e| err("ratings table", e))?;
        let mut out = Vec::new();
        for row in table.iter().map_err(|e| err("reading ratings", e))? {
            let (k, v) = row.map_err(|e| err("reading a rating", e))?;
            let (game, user) = k.value();
            let (mu, sigma) = v.value();
            out.push(RatingRecord {
                game: Arc::from(game),
                user: Arc::from(user),
                rating: Rating { mu, sigma },
            });
        }
        Ok(out)
    }

    fn load_notifications(&self) -> Result<Vec<Notification>, StoreError> {
        let db = self.db()?;
        let txn = db.begin_read().map_err(|e| err("begin read", e))?;
        let table = txn
            .open_table(NOTIFICATIONS)
            .map_err(|e| err("notifications table", e))?;
        let mut out = Vec::new();
        for row in table.iter().map_err(|e| err("reading notifications", e))? {
            let (_, v) = row.map_err(|e| err("reading a notification", e))?;
            out.push(
                serde_json::from_slice(v.value()).map_err(|e| err("decoding a notification", e))?,
            );
        }
        Ok(out)
    }

    fn load_channels(&self) -> Result<Vec<ChannelSpec>, StoreError> {
        let db = self.db()?;
        let txn = db.begin_read().map_err(|e| err("begin read", e))?;
        let table = txn
            .open_table(CHANNELS)
            .map_err(|e| err("channels table", e))?;
        let mut out = Vec::new();
        for row in table.iter().map_err(|e| err("reading channels", e))? {
            let (_, v) = row.map_err(|e| err("reading a channel", e))?;
            out.push(serde_json::from_slice(v.value()).map_err(|e| err("decoding a channel", e))?);
        }
        Ok(out)
    }

    fn load_outbox(&self) -> Result<Vec<Job>, StoreError> {
        let db = self.db()?;
        let txn = db.begin_read().map_err(|e| err("begin read", e))?;
        let table = txn.open_table(OUTBOX).map_err(|e| err("outbox table", e))?;
        let mut out = Vec::new();
        for row in table.iter().map_err(|e| err("reading the outbox", e))? {
            let (_, v) = row.map_err(|e| err("reading a job", e))?;
            out.push(serde_json::from_slice(v.value()).map_err(|e| err("decoding a job", e))?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, EmbeddedStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(&dir.path().join("h.redb"), 8 << 20).unwrap();
        (dir, store)
    }

    #[test]
    fn pages_are_newest_first_and_upserts_are_idempotent() {
        let (_dir, s) = store();
        crate::backend::store::suite::pages_and_upserts(&s, "e");
    }

    #[test]
    fn pages_cross_day_partitions_and_gaps() {
        let (_dir, s) = store();
        crate::backend::store::suite::pages_across_days(&s, "e");
    }

    #[test]
    fn a_reopened_store_keeps_what_it_had_and_takes_new_writes() {
        let (_dir, s) = store();
        let write = |id: u64| {
            Write::Record(Record::Chat(HistoryRecord::Message(
                crate::backend::store::suite::message("c", id, "hi"),
            )))
        };
        s.write(&[write(1)]).unwrap();
        // A reader holding the old handle across the reopen.
        let held = s.db().unwrap();
        let reader = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(50));
            drop(held);
        });
        s.recover().unwrap();
        reader.join().unwrap();
        s.write(&[write(2)]).unwrap();
        let ids: Vec<u64> = s
            .messages("c", 0, 10)
            .unwrap()
            .iter()
            .map(|m| m.id)
            .collect();
        assert_eq!(ids, vec![2, 1]);
    }

    #[test]
    fn later_writes_in_a_batch_win() {
        let (_dir, s) = store();
        crate::backend::store::suite::later_writes_in_a_batch_win(&s, "e");
    }

    #[test]
    fn relations_notifications_ratings_and_jobs_round_trip_and_delete() {
        let (_dir, s) = store();
        crate::backend::store::suite::warm_start_rows(&s, "e");
    }
}
