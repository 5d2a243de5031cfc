//! Fuzzes friends and blocks (`huddle::core::engine::social`): every
//! operation between four users (self-targeted ones included) goes to the
//! pair authority ([`Pairs`]), whose `RelationChanged` effects feed each
//! user's [`Rosters`] view and whose `Persist(Record::Relation)` rows feed a model
//! store, as the shard does. Never reads either half's private state.
//!
//! Each operation's pair and users are checked after it; every pair and
//! user, and a restore from the store, at the end of the input.
//!
//! Invariants: each operation is answered exactly once; a refusal comes
//! alone and changes no relation; changes stay within the pair; the reply
//! names the relation the actor now sees; the two views of a pair agree
//! (friends both ways, a request sent is a request received, a blocked
//! user sees nothing); blocks and direct-message blocks follow the views;
//! every roster equals the pair authority's view and the stored rows
//! (relation and since), with counts, incoming requests and friends to
//! match; the two rows of a pair are written together; domain events match
//! what changed; and the stored rows restore an authority that sees the
//! same relations.

#![no_main]

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use arbitrary::Arbitrary;
use huddle::core::engine::social::{
    Op, OpCommand, PairState, Pairs, Relation, RelationRecord, Rosters,
};
use huddle::core::engine::{DomainEvent, Effect, Record, Reply, UserId};
use huddle_fuzz::{assert_answered_once, assert_refusal_alone, pick, VirtualClock, MAX_OPS};
use libfuzzer_sys::fuzz_target;

const USERS: [&str; 4] = ["ann", "ben", "cid", "dot"];
const OPS: [Op; 7] = [
    Op::Request,
    Op::Accept,
    Op::Reject,
    Op::Cancel,
    Op::Remove,
    Op::Block,
    Op::Unblock,
];

#[derive(Arbitrary, Debug)]
enum Step {
    Op { actor: u8, target: u8, op: u8 },
    Advance { ms: u16 },
}

#[derive(Arbitrary, Debug)]
struct Input {
    steps: Vec<Step>,
}

/// The stored rows: (user, other) → the pair as stored under `user`.
type Store = HashMap<(UserId, UserId), PairState>;

fuzz_target!(|input: Input| {
    let mut clock = VirtualClock::new();
    let mut pairs = Pairs::new();
    let mut rosters = Rosters::new();
    let mut stored: Store = HashMap::new();
    let mut next_request = 1u64;

    for step in input.steps.into_iter().take(MAX_OPS) {
        let (actor, target, op) = match step {
            Step::Advance { ms } => {
                clock.advance_ms(u64::from(ms));
                continue;
            }
            Step::Op { actor, target, op } => {
                (pick(&USERS, actor), pick(&USERS, target), pick(&OPS, op))
            }
        };
        let rid = next_request;
        next_request += 1;
        let before = (pairs.relation(actor, target), pairs.relation(target, actor));
        let mut out = Vec::new();
        pairs.handle(
            clock.now(),
            OpCommand {
                request_id: rid,
                actor: UserId::from(actor),
                target: UserId::from(target),
                op,
            },
            &mut out,
        );
        assert_answered_once(&out, Some(rid), |_| None);
        assert_refusal_alone(&out);
        let after = (pairs.relation(actor, target), pairs.relation(target, actor));
        if out.iter().any(|e| matches!(e, Effect::Fail { .. })) {
            assert_eq!(before, after, "a refused {op:?} changed the pair");
        }
        if actor == target {
            assert!(
                matches!(out[..], [Effect::Fail { .. }]),
                "{actor} befriended themselves"
            );
            continue;
        }

        let mut rows: Vec<RelationRecord> = Vec::new();
        for e in &out {
            match e {
                Effect::Reply {
                    reply:
                        Reply::FriendOpDone {
                            user_id,
                            relation,
                            since_ms,
                        },
                    ..
                } => {
                    assert_eq!(&**user_id, target);
                    assert_eq!(*relation, after.0, "{op:?} replied {relation:?}");
                    if *relation == Relation::None {
                        assert_eq!(*since_ms, 0);
                    }
                }
                Effect::Fail { .. } => {}
                Effect::RelationChanged {
                    user,
                    other,
                    relation,
                    since_ms,
                } => {
                    let about = [(actor, target), (target, actor)];
                    assert!(
                        about.contains(&(&**user, &**other)),
                        "a change outside the pair: {e:?}"
                    );
                    rosters.set(user, other, *relation, *since_ms);
                }
                Effect::Persist(Record::Relation(r)) => rows.push(r.clone()),
                Effect::Domain(d) => check_domain(d, &pairs, actor, target),
                other => panic!("unexpected effect {other:?}"),
            }
        }
        // Both partitions of a pair are written together, with one state.
        if !rows.is_empty() {
            let [a, b] = &rows[..] else {
                panic!("pair rows come in twos: {rows:?}");
            };
            assert_eq!((&a.user, &a.other), (&b.other, &b.user));
            assert_eq!(a.pair, b.pair);
            for r in rows {
                match r.pair {
                    Some(p) => stored.insert((r.user, r.other), p),
                    None => stored.remove(&(r.user, r.other)),
                };
            }
        }
        // An operation touches its pair only: check that pair and its two
        // users now, everything at the end.
        check_pair(&pairs, &rosters, &stored, actor, target);
        check_pair(&pairs, &rosters, &stored, target, actor);
        check_user(&pairs, &rosters, actor);
        check_user(&pairs, &rosters, target);
    }

    for a in USERS {
        for b in USERS.iter().copied().filter(|b| *b != a) {
            check_pair(&pairs, &rosters, &stored, a, b);
        }
        check_user(&pairs, &rosters, a);
    }
    // What was stored restores the same relations.
    let mut restored = Pairs::new();
    for ((user, other), state) in &stored {
        restored.restore(user, other, *state);
    }
    for a in USERS {
        for b in USERS.iter().copied().filter(|b| *b != a) {
            assert_eq!(
                restored.relation(a, b),
                pairs.relation(a, b),
                "restored {a}->{b}"
            );
        }
    }
});

/// The two views of a pair agree, blocks follow them, and the roster and
/// the stored row say what the pair authority says (since included).
fn check_pair(pairs: &Pairs, rosters: &Rosters, stored: &Store, a: &str, b: &str) {
    let rel = pairs.relation(a, b);
    let back = pairs.relation(b, a);
    match rel {
        Relation::Friend => assert_eq!(back, Relation::Friend, "{a}/{b}"),
        Relation::RequestSent => assert_eq!(back, Relation::RequestReceived, "{a}/{b}"),
        Relation::RequestReceived => assert_eq!(back, Relation::RequestSent, "{a}/{b}"),
        Relation::Blocked => assert!(
            matches!(back, Relation::None | Relation::Blocked),
            "{a}/{b}"
        ),
        Relation::None => {}
    }
    assert_eq!(pairs.blocked(a, b), rel == Relation::Blocked);
    let blocked_either = rel == Relation::Blocked || back == Relation::Blocked;
    assert_eq!(
        pairs.direct_block(a, b).is_some(),
        blocked_either,
        "{a}->{b}"
    );
    let row = stored
        .get(&(UserId::from(a), UserId::from(b)))
        .map(|p| p.view(a < b))
        .unwrap_or((Relation::None, 0));
    assert_eq!(row.0, rel, "stored view of {a}->{b}");
    let listed = rosters
        .list(a)
        .into_iter()
        .find(|r| &*r.user_id == b)
        .map(|r| (r.relation, r.since_ms))
        .unwrap_or((Relation::None, 0));
    assert_eq!(listed, row, "roster of {a} about {b}");
}

/// A user's roster counts, incoming requests, friends and order.
fn check_user(pairs: &Pairs, rosters: &Rosters, u: &str) {
    let others = || USERS.iter().copied().filter(move |o| *o != u);
    let count = others()
        .filter(|o| pairs.relation(u, o) != Relation::None)
        .count();
    let incoming = others()
        .filter(|o| pairs.relation(u, o) == Relation::RequestReceived)
        .count();
    assert_eq!(rosters.count(u), count, "{u}'s relations");
    assert_eq!(rosters.incoming(u), incoming, "{u}'s incoming requests");
    let friends: BTreeSet<&str> = rosters.friends(u).map(|f| &**f).collect();
    let want: BTreeSet<&str> = others()
        .filter(|o| pairs.relation(u, o) == Relation::Friend)
        .collect();
    assert_eq!(friends, want, "{u}'s friends");
    let order: Vec<(bool, Arc<str>)> = rosters
        .list(u)
        .iter()
        .map(|r| (r.relation != Relation::Friend, r.user_id.clone()))
        .collect();
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "friends first, then by id"
    );
}

fn check_domain(event: &DomainEvent, pairs: &Pairs, actor: &str, target: &str) {
    match event {
        DomainEvent::FriendshipRequested { from, to } => {
            assert_eq!((&**from, &**to), (actor, target));
            assert_eq!(pairs.relation(actor, target), Relation::RequestSent);
        }
        DomainEvent::FriendshipAccepted { by, requester } => {
            assert_eq!((&**by, &**requester), (actor, target));
            assert_eq!(pairs.relation(actor, target), Relation::Friend);
        }
        DomainEvent::FriendshipRejected { by, requester } => {
            assert_eq!((&**by, &**requester), (actor, target));
            assert_ne!(pairs.relation(target, actor), Relation::RequestSent);
        }
        other => panic!("unexpected domain event {other:?}"),
    }
}
