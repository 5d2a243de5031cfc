//! Tests of the parent module.

use super::*;
use crate::backend::store::suite::message;
use crate::core::engine::Record;

fn write(id: u64) -> Write {
    Write::Record(Record::Chat(
        crate::core::engine::chat::HistoryRecord::Message(message("c", id, "hi")),
    ))
}

fn id_of(w: &Write) -> u64 {
    match w {
        Write::Record(Record::Chat(crate::core::engine::chat::HistoryRecord::Message(m))) => m.id,
        _ => 0,
    }
}

fn rig(dir: &Path) -> (AckJournal, Receiver<Write>, std::thread::JoinHandle<()>) {
    let writer = JournalWriter::open(
        dir,
        AckMode::Durable,
        Arc::default(),
        Arc::new(Durable::default()),
    )
    .unwrap();
    let (store_tx, store_rx) = crossbeam_channel::unbounded();
    let (journal, join) = writer.spawn(1024, store_tx);
    (journal, store_rx, join)
}

#[test]
fn acknowledgements_run_after_their_records_and_a_crash_replays_them_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (journal, store_rx, join) = rig(dir.path());
    let (acked_tx, acked_rx) = crossbeam_channel::unbounded();
    for id in 1..=100 {
        assert!(journal.write(write(id)));
        let tx = acked_tx.clone();
        journal.after_durable(move || tx.send(id).unwrap());
    }
    let acked: Vec<u64> = (0..100).map(|_| acked_rx.recv().unwrap()).collect();
    assert_eq!(acked, (1..=100).collect::<Vec<_>>());
    assert!(
        !journal.unsynced(),
        "every record of this thread is durable"
    );
    // Forwarded in order.
    let forwarded: Vec<u64> = store_rx.try_iter().map(|w| id_of(&w)).collect();
    assert_eq!(forwarded, (1..=100).collect::<Vec<_>>());
    drop(journal);
    join.join().unwrap();
    // The store never said it had them: a restart hands them on again.
    let mut again = Vec::new();
    let n = recover(dir.path(), 7, |b| {
        again.extend(b.iter().map(id_of));
        Ok(())
    })
    .unwrap();
    assert_eq!(n, 100);
    assert_eq!(again, (1..=100).collect::<Vec<_>>());
    assert_eq!(
        recover(dir.path(), 7, |_| Ok(())).unwrap(),
        0,
        "recovered segments are gone"
    );
}

#[test]
fn a_torn_tail_is_ignored_and_what_precedes_it_recovered() {
    let dir = tempfile::tempdir().unwrap();
    let mut buf = Vec::new();
    for id in 1..=3 {
        frame(&mut buf, &write(id));
    }
    let cut = buf.len() - 5;
    std::fs::write(dir.path().join(format!("{:020}.log", 0)), &buf[..cut]).unwrap();
    // A later segment that a power loss left extended with zeros.
    let mut zeros = Vec::new();
    frame(&mut zeros, &write(4));
    zeros.extend_from_slice(&[0; 4096]);
    std::fs::write(dir.path().join(format!("{:020}.log", 9)), &zeros).unwrap();
    let mut got = Vec::new();
    recover(dir.path(), 10, |b| {
        got.extend(b.iter().map(id_of));
        Ok(())
    })
    .unwrap();
    assert_eq!(got, vec![1, 2, 4]);
}

#[test]
fn a_frame_that_does_not_decode_is_skipped_and_its_segment_kept_aside() {
    let dir = tempfile::tempdir().unwrap();
    let mut buf = Vec::new();
    frame(&mut buf, &write(1));
    // A checksummed frame that is no `Write`.
    let junk = br#"{"NotAWrite":1}"#;
    buf.extend_from_slice(&(junk.len() as u32).to_le_bytes());
    buf.extend_from_slice(&(xxhash_rust::xxh3::xxh3_64(junk) as u32).to_le_bytes());
    buf.extend_from_slice(junk);
    frame(&mut buf, &write(2));
    std::fs::write(dir.path().join(format!("{:020}.log", 0)), &buf).unwrap();
    let mut got = Vec::new();
    recover(dir.path(), 10, |b| {
        got.extend(b.iter().map(id_of));
        Ok(())
    })
    .unwrap();
    assert_eq!(got, vec![1, 2], "the start goes on past it");
    assert!(dir
        .path()
        .join("bad")
        .join(format!("{:020}.log", 0))
        .exists());
}

#[test]
fn segment_names_follow_the_order_they_were_written_in() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = JournalWriter::open(
        dir.path(),
        AckMode::Durable,
        Arc::default(),
        Arc::new(Durable::default()),
    )
    .unwrap();
    let mut buf = Vec::new();
    frame(&mut buf, &write(1));
    // Empty segments come and go (as failed tries make them) between
    // ones that hold records.
    for round in 0..4 {
        w.roll();
        if round % 2 == 1 {
            assert!(w.append(&buf, None));
            w.forwarded += 1;
        }
    }
    w.roll();
    let names = segments(dir.path()).unwrap();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
    let mut closed: Vec<PathBuf> = w.closed.iter().map(|s| s.path.clone()).collect();
    let written = closed.clone();
    closed.sort();
    assert_eq!(written, closed, "closed in name order");
    assert_eq!(written.len(), 2);
}

#[test]
fn a_segment_the_store_has_is_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let durable = Arc::new(Durable::default());
    let mut w = JournalWriter::open(
        dir.path(),
        AckMode::Durable,
        Arc::default(),
        durable.clone(),
    )
    .unwrap();
    let mut buf = Vec::new();
    frame(&mut buf, &write(1));
    assert!(w.append(&buf, None));
    w.forwarded = 1;
    w.roll();
    assert_eq!(segments(dir.path()).unwrap().len(), 2);
    w.delete_stored();
    assert_eq!(segments(dir.path()).unwrap().len(), 2, "not stored yet");
    durable.set(1);
    w.delete_stored();
    assert_eq!(segments(dir.path()).unwrap().len(), 1, "only the open one");
}
