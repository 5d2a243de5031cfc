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
//! id), `read_cursors` keyed (chat id, user id). Values are JSON: small,
//! self-describing, and readable with any redb tool.

use std::path::Path;
use std::sync::Arc;

use redb::{Database, ReadableDatabase, TableDefinition};

use super::{HistoryStore, Record, StoreError};
use crate::engine::chat::Message;

const MESSAGES: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("messages");
const READ_CURSORS: TableDefinition<(&str, &str), u64> = TableDefinition::new("read_cursors");

/// History in `<data_dir>/history.redb`.
pub struct EmbeddedStore {
    db: Database,
}

fn err(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError(format!("{what}: {e}"))
}

impl EmbeddedStore {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db =
            Database::create(path).map_err(|e| err(&format!("opening {}", path.display()), e))?;
        // Create the tables up front so readers never miss them.
        let txn = db.begin_write().map_err(|e| err("begin", e))?;
        txn.open_table(MESSAGES)
            .map_err(|e| err("messages table", e))?;
        txn.open_table(READ_CURSORS)
            .map_err(|e| err("read_cursors table", e))?;
        txn.commit().map_err(|e| err("commit", e))?;
        Ok(Self { db })
    }
}

impl HistoryStore for EmbeddedStore {
    fn write(&self, batch: &[Record]) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(|e| err("begin", e))?;
        {
            let mut messages = txn
                .open_table(MESSAGES)
                .map_err(|e| err("messages table", e))?;
            let mut cursors = txn
                .open_table(READ_CURSORS)
                .map_err(|e| err("read_cursors table", e))?;
            for record in batch {
                match record {
                    Record::Message(m) => {
                        let value =
                            serde_json::to_vec(&**m).map_err(|e| err("encoding a message", e))?;
                        messages
                            .insert((&*m.chat_id, m.id), value.as_slice())
                            .map_err(|e| err("writing a message", e))?;
                    }
                    Record::ReadCursor {
                        chat_id,
                        user_id,
                        up_to,
                    } => {
                        cursors
                            .insert((&**chat_id, &**user_id), *up_to)
                            .map_err(|e| err("writing a read cursor", e))?;
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
        let txn = self.db.begin_read().map_err(|e| err("begin read", e))?;
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
        let txn = self.db.begin_read().map_err(|e| err("begin read", e))?;
        let table = txn
            .open_table(READ_CURSORS)
            .map_err(|e| err("read_cursors table", e))?;
        let got = table
            .get((chat_id, user_id))
            .map_err(|e| err("reading a read cursor", e))?;
        Ok(got.map(|v| v.value()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::chat::Author;

    fn msg(chat: &str, id: u64, text: &str) -> Arc<Message> {
        Arc::new(Message {
            id,
            chat_id: Arc::from(chat),
            sender: Author {
                id: Arc::from("u1"),
                username: Arc::from("alice"),
                display_name: Arc::from("Alice"),
            },
            content: Arc::from(text),
            content_type: 0,
            created_at_ms: 1,
            edited_at_ms: 0,
            deleted: false,
        })
    }

    #[test]
    fn pages_are_one_partition_newest_first_and_upserts_are_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(&dir.path().join("h.redb")).unwrap();
        let batch: Vec<Record> = (1..=5)
            .map(|i| Record::Message(msg("channel:a", i, &format!("m{i}"))))
            .chain([Record::Message(msg("channel:b", 3, "other chat"))])
            .collect();
        store.write(&batch).unwrap();
        store.write(&batch).unwrap();
        store
            .write(&[Record::Message(msg("channel:a", 4, "edited"))])
            .unwrap();
        let page = store.messages("channel:a", 0, 3).unwrap();
        let got: Vec<(u64, &str)> = page.iter().map(|m| (m.id, &*m.content)).collect();
        assert_eq!(got, vec![(5, "m5"), (4, "edited"), (3, "m3")]);
        let older = store.messages("channel:a", 3, 10).unwrap();
        assert_eq!(older.iter().map(|m| m.id).collect::<Vec<_>>(), vec![2, 1]);
        store
            .write(&[Record::ReadCursor {
                chat_id: Arc::from("channel:a"),
                user_id: Arc::from("u2"),
                up_to: 4,
            }])
            .unwrap();
        assert_eq!(store.read_cursor("channel:a", "u2").unwrap(), Some(4));
        assert_eq!(store.read_cursor("channel:a", "u3").unwrap(), None);
    }
}
