//! Tests of the parent module.

//! The writer's rules without a network: a sink that takes batches,
//! refuses them (down) or never answers (stalled), over a real journal.
use super::*;
use crate::backend::store::suite::message;
use crate::backend::store::History;
use std::sync::atomic::{AtomicU8, Ordering};

const UP: u8 = 0;
const DOWN: u8 = 1;
const STALLED: u8 = 2;

#[derive(Default)]
struct SinkState {
    mode: AtomicU8,
    /// (chat, id) → (write time, content) of the newest version taken.
    stored: Mutex<HashMap<(String, u64), (i64, String)>>,
    /// Outcomes a stalled sink owes.
    owed: Mutex<Vec<OnDone>>,
}

#[derive(Clone, Default)]
struct Sink(Arc<SinkState>);

impl BatchSink for Sink {
    fn submit(&self, batch: Arc<Vec<Stamped>>, done: OnDone) {
        match self.0.mode.load(Ordering::SeqCst) {
            UP => {
                let mut stored = self.0.stored.lock().unwrap();
                for r in batch.iter() {
                    if let Write::Record(Record::Chat(HistoryRecord::Message(m))) = &r.write {
                        let e = stored
                            .entry((m.chat_id.to_string(), m.id))
                            .or_insert((i64::MIN, String::new()));
                        if e.0 <= r.at_us {
                            *e = (r.at_us, m.content.to_string());
                        }
                    }
                }
                drop(stored);
                done((Ok(()), 1, Duration::ZERO))
            }
            DOWN => done((Err(StoreError("down".into())), 3, Duration::ZERO)),
            _ => self.0.owed.lock().unwrap().push(done),
        }
    }
}

struct Rig {
    sink: Sink,
    journal: Arc<Journal>,
    unconfirmed: Arc<Unconfirmed>,
    history: History,
    threads: crate::backend::store::HistoryThreads,
    _dir: tempfile::TempDir,
}

fn rig() -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(&dir.path().join("journal.redb")).unwrap();
    let reader: Arc<dyn HistoryStore> = Arc::new(
        crate::backend::store::embedded::EmbeddedStore::open(&dir.path().join("h.redb"), 8 << 20)
            .unwrap(),
    );
    let sink = Sink::default();
    let unconfirmed = Arc::new(Unconfirmed::default());
    let writer = ClusterWriter::new(
        sink.clone(),
        journal.clone(),
        unconfirmed.clone(),
        WriterSettings {
            batch_records: 16,
            linger: Duration::from_millis(1),
            inflight_batches: 2,
        },
    );
    let ack = crate::backend::store::AckSettings {
        dir: dir.path().join("ack"),
        mode: crate::backend::store::ack::AckMode::Durable,
    };
    let (history, threads) =
        History::spawn(&ack, move |rx, b, p| writer.run(rx, b, p), reader).unwrap();
    Rig {
        sink,
        journal,
        unconfirmed,
        history,
        threads,
        _dir: dir,
    }
}

fn send(history: &History, chat: &str, ids: std::ops::Range<u64>, text: &str) {
    for id in ids {
        history.persist(Record::Chat(HistoryRecord::Message(message(
            chat,
            id,
            &format!("{text} {id}"),
        ))));
    }
}

/// Waits for `ok` (a hang guard, not a timing assertion).
fn until(what: &str, ok: impl Fn() -> bool) {
    for _ in 0..2_000 {
        if ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("never happened: {what}");
}

fn stored(sink: &Sink) -> Vec<(u64, String)> {
    let mut v: Vec<(u64, String)> = sink
        .0
        .stored
        .lock()
        .unwrap()
        .iter()
        .map(|((_, id), (_, c))| (*id, c.clone()))
        .collect();
    v.sort();
    v
}

#[test]
fn an_outage_spills_and_every_record_lands_once_it_ends() {
    let r = rig();
    send(&r.history, "c", 0..40, "before");
    until("the first records land", || stored(&r.sink).len() == 40);
    r.sink.0.mode.store(DOWN, Ordering::SeqCst);
    send(&r.history, "c", 40..100, "during");
    until("the outage spills", || r.journal.len() == 60);
    // Spilled records stay readable.
    assert_eq!(r.journal.messages("c", 0, 100).unwrap().len(), 60);
    r.sink.0.mode.store(UP, Ordering::SeqCst);
    send(&r.history, "c", 100..120, "after");
    until("the journal drains", || {
        r.journal.is_empty() && stored(&r.sink).len() == 120
    });
    drop(r.history);
    r.threads.join();
    let got = stored(&r.sink);
    assert!(got.iter().enumerate().all(|(i, (id, _))| *id == i as u64));
}

#[test]
fn an_edit_spilled_behind_its_message_still_wins() {
    let r = rig();
    r.sink.0.mode.store(DOWN, Ordering::SeqCst);
    send(&r.history, "c", 7..8, "original");
    until("the message spills", || r.journal.len() == 1);
    send(&r.history, "c", 7..8, "edited");
    until("the edit spills behind it", || r.journal.len() == 2);
    r.sink.0.mode.store(UP, Ordering::SeqCst);
    until("the journal drains", || r.journal.is_empty());
    assert_eq!(stored(&r.sink), [(7, "edited 7".to_string())]);
    drop(r.history);
    r.threads.join();
}

#[test]
fn records_are_readable_while_the_store_has_not_answered() {
    let r = rig();
    r.sink.0.mode.store(STALLED, Ordering::SeqCst);
    send(&r.history, "c", 0..5, "pending");
    until("they are taken", || {
        r.unconfirmed.messages("c", 0, 10).len() == 5
    });
    // Answered late: forgotten once confirmed.
    r.sink.0.mode.store(UP, Ordering::SeqCst);
    for done in r.sink.0.owed.lock().unwrap().drain(..) {
        done((Ok(()), 1, Duration::ZERO));
    }
    until("they are forgotten", || {
        r.unconfirmed.messages("c", 0, 10).is_empty()
    });
    drop(r.history);
    r.threads.join();
}

#[test]
fn shutdown_spills_what_the_store_never_confirmed() {
    let r = rig();
    r.sink.0.mode.store(STALLED, Ordering::SeqCst);
    send(&r.history, "c", 0..10, "unconfirmed");
    until("they are in flight", || {
        r.unconfirmed.messages("c", 0, 20).len() == 10
    });
    drop(r.history);
    r.threads.join();
    assert_eq!(r.journal.len(), 10, "spilled at shutdown, nothing dropped");
    assert!(r.unconfirmed.messages("c", 0, 20).is_empty());
}

/// Over a live CQL server (skipped without one, as the store's own tests are).
#[test]
fn reads_merge_what_waits_in_the_journal_and_in_flight() {
    use crate::backend::store::scylla::tests::{prefix, store};
    let Some(store) = store() else { return };
    let chat = format!("{}:chat", prefix());
    let m = |id: u64, content: &str| crate::backend::store::suite::message(&chat, id, content);
    let put = |msg| Write::Record(Record::Chat(HistoryRecord::Message(msg)));
    let base = 1u64 << 40;
    // Stored: 1 and 2. Journal: 3, an edit of 2, and a version of 1
    // older than the stored one. In flight: 4.
    store
        .write(&[put(m(base + 1, "one")), put(m(base + 2, "two"))])
        .unwrap();
    let later = store.clock.next() + 1_000_000;
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(&dir.path().join("j.redb")).unwrap();
    let stamp = |at_us, w| Stamped { at_us, write: w };
    journal
        .append(&[
            stamp(later, put(m(base + 3, "three"))),
            stamp(later + 1, put(m(base + 2, "two (edited)"))),
            stamp(5, put(m(base + 1, "one (older than stored)"))),
        ])
        .unwrap();
    let cursor = Write::Record(Record::Chat(HistoryRecord::ReadCursor {
        chat_id: Arc::from(chat.as_str()),
        user_id: Arc::from("reader"),
        up_to: base + 3,
    }));
    journal.append(&[stamp(later + 2, cursor)]).unwrap();
    let unconfirmed = Arc::new(Unconfirmed::default());
    unconfirmed.add(&[stamp(later + 3, put(m(base + 4, "four")))]);
    let merged = Merged {
        store: Arc::new(store),
        journal,
        unconfirmed,
    };
    let page: Vec<String> = merged
        .messages(&chat, 0, 10)
        .unwrap()
        .iter()
        .map(|m| m.content.to_string())
        .collect();
    assert_eq!(page, ["four", "three", "two (edited)", "one"]);
    let older: Vec<u64> = merged
        .messages(&chat, base + 3, 1)
        .unwrap()
        .iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(older, [base + 2]);
    assert_eq!(merged.read_cursor(&chat, "reader").unwrap(), Some(base + 3));
}
