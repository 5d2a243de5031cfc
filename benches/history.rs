//! The hot-path cost of history: what a shard pays to hand one chat
//! message to the history writer (`History::persist`), with the
//! acknowledgement journal and the writer draining the queue in the
//! background — into the embedded store, and, when
//! `HUDDLE_BENCH_CQL=host:port` names a CQL server, through the ScyllaDB
//! writer. Only the enqueue is timed: the queue is let drain between
//! rounds, so a full queue never turns the figure into the writer's
//! throughput.
//!
//! `history/ack/*`: from queueing one message to its acknowledgement
//! running (`after_durable`), one at a time — the durable path's floor (one
//! write and fdatasync of the acknowledgement journal per message, no
//! group to share it), and the fast mode beside it.

// The gateway's allocator, so the figures match production.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use huddle::backend::store::ack::AckMode;
use huddle::backend::store::cluster::WriterSettings;
use huddle::backend::store::embedded::EmbeddedStore;
use huddle::backend::store::journal::Journal;
use huddle::backend::store::scylla::ScyllaStore;
use huddle::backend::store::{AckSettings, History, HistoryStore};
use huddle::core::engine::chat::{Author, HistoryRecord, Message};
use huddle::core::engine::Record;

/// Messages enqueued per timed round (well under the queue's capacity).
const ROUND: u64 = 8_192;

fn message(i: u64) -> Record {
    Record::Chat(HistoryRecord::Message(Arc::new(Message {
        id: (1 << 40) + i,
        chat_id: Arc::from("channel:bench"),
        sender: Author {
            id: Arc::from("user-1"),
            username: Arc::from("user-1"),
            display_name: Arc::from("User One"),
        },
        content: Arc::from("gg wp, rematch in five?"),
        content_type: 0,
        created_at_ms: 1_800_000_000_000,
        edited_at_ms: 0,
        deleted: false,
        nonce: None,
    })))
}

fn enqueue(c: &mut Criterion, name: &str, history: &History) {
    let records: Vec<Record> = (0..ROUND).map(message).collect();
    c.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let n = left.min(ROUND);
                let started = Instant::now();
                for r in &records[..n as usize] {
                    history.persist(r.clone());
                }
                total += started.elapsed();
                left -= n;
                while history.queued() > 0 {
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
            total
        })
    });
}

fn acknowledged(c: &mut Criterion, name: &str, history: &History) {
    let record = message(1);
    c.bench_function(name, |b| {
        b.iter(|| {
            let (tx, rx) = crossbeam_channel::bounded(1);
            history.persist(record.clone());
            history.after_durable(move || {
                let _ = tx.send(());
            });
            rx.recv().unwrap();
        })
    });
}

fn embedded(
    dir: &std::path::Path,
    mode: AckMode,
) -> (History, huddle::backend::store::HistoryThreads) {
    let store: Arc<dyn HistoryStore> =
        Arc::new(EmbeddedStore::open(&dir.join("h.redb"), 64 << 20).unwrap());
    let ack = AckSettings {
        dir: dir.join("ack"),
        mode,
    };
    History::start(store, &ack).unwrap()
}

fn history_enqueue(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let (history, threads) = embedded(dir.path(), AckMode::Durable);
    enqueue(c, "history/enqueue/embedded", &history);
    acknowledged(c, "history/ack/durable", &history);
    drop(history);
    threads.join();
    let dir = tempfile::tempdir().unwrap();
    let (history, threads) = embedded(dir.path(), AckMode::Fast);
    acknowledged(c, "history/ack/fast", &history);
    drop(history);
    threads.join();

    if let Ok(node) = std::env::var("HUDDLE_BENCH_CQL") {
        let cfg = huddle::ops::config::ScyllaConfig {
            nodes: vec![node],
            keyspace: "huddle_bench".into(),
            ..Default::default()
        };
        let store = Arc::new(ScyllaStore::connect(&cfg, 0).expect("connects to HUDDLE_BENCH_CQL"));
        let journal = Journal::open(&dir.path().join("journal.redb")).unwrap();
        let settings = WriterSettings {
            batch_records: cfg.batch_records,
            linger: Duration::from_millis(cfg.linger_ms),
            inflight_batches: cfg.inflight_batches,
        };
        let ack = AckSettings {
            dir: dir.path().join("ack-cql"),
            mode: AckMode::Durable,
        };
        let (history, threads, _) = History::start_cluster(store, journal, settings, &ack).unwrap();
        enqueue(c, "history/enqueue/scylla", &history);
        drop(history);
        threads.join();
    }
}

criterion_group!(benches, history_enqueue);
criterion_main!(benches);
