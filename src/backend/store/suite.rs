//! The behaviour every [`HistoryStore`] must have, written once and run
//! against each implementation (the embedded store, and a real CQL server
//! for the ScyllaDB one). Keys carry a caller-chosen prefix so runs can
//! share a keyspace; the warm-start loads are filtered by it.

use std::sync::Arc;

use super::{HistoryStore, Write};
use crate::backend::store::jobs::Job;
use crate::core::engine::chat::{Author, HistoryRecord, Message};
use crate::core::engine::matchmaking::{Rating, RatingRecord};
use crate::core::engine::notifications::{Channel, ChannelStatus, DeliveryState, Notification};
use crate::core::engine::social::{PairState, RelationRecord, Side};
use crate::core::engine::Record;

fn chat(r: HistoryRecord) -> Write {
    Write::Record(Record::Chat(r))
}

/// A message id at `day` days and `ms` milliseconds after the id epoch.
pub(crate) fn id_at(day: u64, ms: u64, seq: u64) -> u64 {
    ((day * 86_400_000 + ms) << 23) | seq
}

/// A message by u1 (alice) with a nonce.
pub(crate) fn message(chat: &str, id: u64, text: &str) -> Arc<Message> {
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
        nonce: Some(Box::from("n-1")),
    })
}

pub(crate) fn pages_and_upserts(store: &dyn HistoryStore, prefix: &str) {
    let a = format!("channel:{prefix}-a");
    let b = format!("channel:{prefix}-b");
    let ids: Vec<u64> = (1..=5).map(|i| id_at(3, 1_000 * i, 0)).collect();
    let batch: Vec<Write> = ids
        .iter()
        .enumerate()
        .map(|(i, &id)| {
            chat(HistoryRecord::Message(message(
                &a,
                id,
                &format!("m{}", i + 1),
            )))
        })
        .chain([chat(HistoryRecord::Message(message(
            &b,
            ids[2],
            "other chat",
        )))])
        .collect();
    store.write(&batch).unwrap();
    store.write(&batch).unwrap();
    store
        .write(&[chat(HistoryRecord::Message(message(&a, ids[3], "edited")))])
        .unwrap();
    let page = store.messages(&a, 0, 3).unwrap();
    let got: Vec<(u64, &str)> = page.iter().map(|m| (m.id, &*m.content)).collect();
    assert_eq!(
        got,
        vec![(ids[4], "m5"), (ids[3], "edited"), (ids[2], "m3")]
    );
    assert_eq!(page[0].nonce.as_deref(), Some("n-1"), "nonces are kept");
    assert_eq!(&*page[0].sender.display_name, "Alice");
    let older = store.messages(&a, ids[2], 10).unwrap();
    assert_eq!(
        older.iter().map(|m| m.id).collect::<Vec<_>>(),
        vec![ids[1], ids[0]]
    );
    let cursor = |up_to| {
        chat(HistoryRecord::ReadCursor {
            chat_id: Arc::from(a.as_str()),
            user_id: Arc::from("u2"),
            up_to,
        })
    };
    store.write(&[cursor(ids[3])]).unwrap();
    assert_eq!(store.read_cursor(&a, "u2").unwrap(), Some(ids[3]));
    // A lower cursor written later (by a node that did not know the
    // stored one) never moves it back.
    store.write(&[cursor(ids[1])]).unwrap();
    assert_eq!(store.read_cursor(&a, "u2").unwrap(), Some(ids[3]));
    assert_eq!(store.read_cursor(&a, "u3").unwrap(), None);
    assert!(store
        .messages(&format!("channel:{prefix}-none"), 0, 5)
        .unwrap()
        .is_empty());
}

/// Pages walk from day to day, newest first, over days with no message.
pub(crate) fn pages_across_days(store: &dyn HistoryStore, prefix: &str) {
    let c = format!("channel:{prefix}-days");
    // Days 10, 11 and 14 (12 and 13 are empty), three messages each.
    let ids: Vec<u64> = [10u64, 11, 14]
        .iter()
        .flat_map(|&day| (0..3).map(move |i| id_at(day, 5_000 + i, 0)))
        .collect();
    let batch: Vec<Write> = ids
        .iter()
        .map(|&id| chat(HistoryRecord::Message(message(&c, id, "x"))))
        .collect();
    store.write(&batch).unwrap();
    let mut want: Vec<u64> = ids.clone();
    want.reverse();
    let all = store.messages(&c, 0, 100).unwrap();
    assert_eq!(all.iter().map(|m| m.id).collect::<Vec<_>>(), want);
    // Page by 4: the pages meet across the day boundaries exactly.
    let mut seen = Vec::new();
    let mut before = 0;
    loop {
        let page = store.messages(&c, before, 4).unwrap();
        if page.is_empty() {
            break;
        }
        before = page.last().unwrap().id;
        seen.extend(page.iter().map(|m| m.id));
    }
    assert_eq!(seen, want);
    // From the middle of a day.
    let mid = store.messages(&c, ids[7], 3).unwrap();
    assert_eq!(
        mid.iter().map(|m| m.id).collect::<Vec<_>>(),
        vec![ids[6], ids[5], ids[4]]
    );
}

pub(crate) fn warm_start_rows(store: &dyn HistoryStore, prefix: &str) {
    let alice = format!("{prefix}-alice");
    let bob = format!("{prefix}-bob");
    let pair = PairState {
        lo: Side::Friend,
        hi: Side::Friend,
        lo_since_ms: 5,
        hi_since_ms: 5,
    };
    let row = |user: &str, other: &str, pair| {
        Write::Record(Record::Relation(RelationRecord {
            user: Arc::from(user),
            other: Arc::from(other),
            pair,
        }))
    };
    let n = Arc::new(Notification {
        id: 7,
        user_id: Arc::from(bob.as_str()),
        kind: "friend.request".into(),
        title: "t".into(),
        body: "b".into(),
        data: String::new(),
        created_at_ms: 1,
        read: false,
        channels: vec![ChannelStatus {
            channel: Channel::Push,
            state: DeliveryState::Pending,
            error: None,
            attempts: 0,
            updated_at_ms: 1,
        }],
    });
    let rating = RatingRecord {
        game: Arc::from("arena"),
        user: Arc::from(alice.as_str()),
        rating: Rating {
            mu: 1620.5,
            sigma: 80.0,
        },
    };
    let job = Arc::new(Job::for_test(&format!("n:{prefix}:7:push")));
    store
        .write(&[
            row(&alice, &bob, Some(pair)),
            row(&bob, &alice, Some(pair)),
            Write::Record(Record::Notification(n.clone())),
            Write::Record(Record::Rating(rating.clone())),
            Write::OutboxPut(job.clone()),
        ])
        .unwrap();
    let mine = |u: &str| u.starts_with(prefix);
    let relations: Vec<RelationRecord> = store
        .load_relations()
        .unwrap()
        .into_iter()
        .filter(|r| mine(&r.user))
        .collect();
    assert_eq!(relations.len(), 2);
    assert!(relations.iter().all(|r| r.pair == Some(pair)));
    let notifications: Vec<Notification> = store
        .load_notifications()
        .unwrap()
        .into_iter()
        .filter(|n| mine(&n.user_id))
        .collect();
    assert_eq!(notifications, vec![(*n).clone()]);
    let ratings: Vec<RatingRecord> = store
        .load_ratings()
        .unwrap()
        .into_iter()
        .filter(|r| mine(&r.user))
        .collect();
    assert_eq!(ratings, vec![rating]);
    let jobs = |store: &dyn HistoryStore| {
        store
            .load_outbox()
            .unwrap()
            .into_iter()
            .filter(|j| j.id.contains(prefix))
            .count()
    };
    assert_eq!(jobs(store), 1);
    store
        .write(&[
            row(&alice, &bob, None),
            row(&bob, &alice, None),
            Write::Record(Record::NotificationDeleted {
                user: Arc::from(bob.as_str()),
                id: 7,
            }),
            Write::OutboxDone(job.id.clone()),
        ])
        .unwrap();
    assert!(!store
        .load_relations()
        .unwrap()
        .iter()
        .any(|r| mine(&r.user)));
    assert!(!store
        .load_notifications()
        .unwrap()
        .iter()
        .any(|n| mine(&n.user_id)));
    assert_eq!(jobs(store), 0);
}

/// Two writes to one key in one batch: the later always wins (an edit
/// after its message, an unfriend after the friendship), and a page
/// bound past the id range bounds nothing.
pub(crate) fn later_writes_in_a_batch_win(store: &dyn HistoryStore, prefix: &str) {
    for round in 0..30u64 {
        let c = format!("channel:{prefix}-order-{round}");
        let id = id_at(20, round, 0);
        store
            .write(&[
                chat(HistoryRecord::Message(message(&c, id, "original"))),
                chat(HistoryRecord::Message(message(&c, id, "edited"))),
            ])
            .unwrap();
        let page = store.messages(&c, 0, 5).unwrap();
        assert_eq!(&*page[0].content, "edited", "round {round}");
        assert_eq!(store.messages(&c, u64::MAX, 5).unwrap().len(), 1);
        assert!(store.messages(&c, 0, 0).unwrap().is_empty());
        let (a, b) = (format!("{prefix}-x{round}"), format!("{prefix}-y{round}"));
        let row = |pair| {
            Write::Record(Record::Relation(RelationRecord {
                user: Arc::from(a.as_str()),
                other: Arc::from(b.as_str()),
                pair,
            }))
        };
        let pair = PairState {
            lo: Side::Friend,
            hi: Side::Friend,
            lo_since_ms: 1,
            hi_since_ms: 1,
        };
        store.write(&[row(Some(pair)), row(None)]).unwrap();
        assert!(
            !store
                .load_relations()
                .unwrap()
                .iter()
                .any(|r| *r.user == *a),
            "round {round}: the delete came last"
        );
    }
}
