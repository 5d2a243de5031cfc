//! Tests of the friend/block engine (pairs and rosters); they never touch I/O.

use super::*;
use std::time::Instant;

fn now(ms: i64) -> Now {
    Now {
        mono: Instant::now(),
        unix_ms: ms,
    }
}

struct World {
    pairs: Pairs,
    rosters: Rosters,
    domain: Vec<DomainEvent>,
    stored: Vec<RelationRecord>,
}

impl World {
    fn new() -> Self {
        Self {
            pairs: Pairs::new(),
            rosters: Rosters::new(),
            domain: Vec::new(),
            stored: Vec::new(),
        }
    }

    /// Runs an op; the reply's relation or the refusal.
    fn op(&mut self, actor: &str, op: Op, target: &str) -> Result<Relation, Failure> {
        let mut out = Vec::new();
        let cmd = OpCommand {
            request_id: 1,
            actor: Arc::from(actor),
            target: Arc::from(target),
            op,
        };
        self.pairs.handle(now(1_000), cmd, &mut out);
        let mut result = None;
        for e in out {
            match e {
                Effect::Reply {
                    reply: Reply::FriendOpDone { relation, .. },
                    ..
                } => result = Some(Ok(relation)),
                Effect::Fail { failure, .. } => result = Some(Err(failure)),
                Effect::RelationChanged {
                    user,
                    other,
                    relation,
                    since_ms,
                } => self.rosters.set(&user, &other, relation, since_ms),
                Effect::Domain(d) => self.domain.push(d),
                Effect::Persist(Record::Relation(r)) => self.stored.push(r),
                other => panic!("unexpected effect {other:?}"),
            }
        }
        result.expect("every op is answered")
    }

    fn seen(&self, user: &str) -> Vec<(String, Relation)> {
        self.rosters
            .list(user)
            .into_iter()
            .map(|r| (r.user_id.to_string(), r.relation))
            .collect()
    }
}

#[test]
fn request_accept_remove_with_views_on_both_sides() {
    let mut w = World::new();
    assert_eq!(w.op("alice", Op::Request, "bob"), Ok(Relation::RequestSent));
    assert_eq!(
        w.seen("bob"),
        vec![("alice".into(), Relation::RequestReceived)]
    );
    assert_eq!(
        w.op("alice", Op::Request, "bob"),
        Ok(Relation::RequestSent),
        "a repeated request changes nothing"
    );
    assert_eq!(w.domain.len(), 1);
    assert_eq!(w.op("bob", Op::Accept, "alice"), Ok(Relation::Friend));
    assert_eq!(w.seen("alice"), vec![("bob".into(), Relation::Friend)]);
    assert_eq!(w.rosters.friends("bob").count(), 1);
    assert!(matches!(
        w.domain.last(),
        Some(DomainEvent::FriendshipAccepted { .. })
    ));
    assert_eq!(w.op("bob", Op::Remove, "alice"), Ok(Relation::None));
    assert!(w.seen("alice").is_empty() && w.seen("bob").is_empty());
    assert_eq!(
        w.stored.last().map(|r| r.pair),
        Some(None),
        "an empty pair is deleted from the store"
    );
}

#[test]
fn crossing_requests_make_friends_and_reject_cancel_work() {
    let mut w = World::new();
    w.op("alice", Op::Request, "bob").unwrap();
    assert_eq!(w.op("bob", Op::Request, "alice"), Ok(Relation::Friend));
    w.op("carol", Op::Request, "bob").unwrap();
    assert_eq!(w.op("bob", Op::Reject, "carol"), Ok(Relation::None));
    assert!(matches!(
        w.domain.last(),
        Some(DomainEvent::FriendshipRejected { .. })
    ));
    assert!(w.seen("carol").is_empty());
    w.op("carol", Op::Request, "dave").unwrap();
    assert_eq!(w.op("carol", Op::Cancel, "dave"), Ok(Relation::None));
    assert!(w.seen("dave").is_empty());
}

#[test]
fn wrong_operations_are_refused_and_change_nothing() {
    let mut w = World::new();
    let code = |r: Result<Relation, Failure>| r.unwrap_err().refusal;
    assert_eq!(
        code(w.op("alice", Op::Request, "alice")),
        Refusal::FriendError
    );
    assert_eq!(code(w.op("alice", Op::Accept, "bob")), Refusal::FriendError);
    assert_eq!(code(w.op("alice", Op::Reject, "bob")), Refusal::FriendError);
    assert_eq!(code(w.op("alice", Op::Cancel, "bob")), Refusal::FriendError);
    assert_eq!(code(w.op("alice", Op::Remove, "bob")), Refusal::FriendError);
    assert_eq!(
        code(w.op("alice", Op::Unblock, "bob")),
        Refusal::FriendError
    );
    w.op("alice", Op::Request, "bob").unwrap();
    assert_eq!(
        code(w.op("alice", Op::Accept, "bob")),
        Refusal::FriendError,
        "one cannot accept one's own request"
    );
    assert!(w.stored.len() == 2 && w.domain.len() == 1);
}

#[test]
fn a_block_ends_the_friendship_is_invisible_and_stops_requests_and_messages() {
    let mut w = World::new();
    w.op("alice", Op::Request, "bob").unwrap();
    w.op("bob", Op::Accept, "alice").unwrap();
    assert_eq!(w.op("bob", Op::Block, "alice"), Ok(Relation::Blocked));
    assert_eq!(w.seen("bob"), vec![("alice".into(), Relation::Blocked)]);
    assert!(w.seen("alice").is_empty(), "the blocked user is not told");
    let refused = w.op("alice", Op::Request, "bob").unwrap_err();
    assert_eq!(refused.refusal, Refusal::AccessDenied);
    assert_eq!(
        refused.message,
        "bob does not accept friend requests from you"
    );
    assert!(w.pairs.direct_block("alice", "bob").is_some());
    assert!(w.pairs.direct_block("bob", "alice").is_some());
    assert!(w.pairs.blocked("bob", "alice") && !w.pairs.blocked("alice", "bob"));
    assert_eq!(
        w.op("bob", Op::Request, "alice").unwrap_err().refusal,
        Refusal::FriendError,
        "the blocker must unblock first"
    );
    assert_eq!(w.op("bob", Op::Unblock, "alice"), Ok(Relation::None));
    assert!(w.pairs.direct_block("alice", "bob").is_none());
    assert_eq!(w.op("alice", Op::Request, "bob"), Ok(Relation::RequestSent));
}

#[test]
fn rosters_count_waiting_requests() {
    let mut w = World::new();
    for from in ["ann", "ben", "cid"] {
        w.op(from, Op::Request, "star").unwrap();
    }
    w.op("star", Op::Request, "dot").unwrap();
    assert_eq!(
        w.rosters.incoming("star"),
        3,
        "only requests received count"
    );
    w.op("star", Op::Accept, "ann").unwrap();
    assert_eq!(w.rosters.incoming("star"), 2);
    assert_eq!(w.rosters.count("star"), 4);
}

#[test]
fn pairs_restore_from_stored_rows() {
    let mut w = World::new();
    w.op("bob", Op::Request, "alice").unwrap();
    let mut restored = Pairs::new();
    for r in &w.stored {
        restored.restore(&r.user, &r.other, r.pair.unwrap());
    }
    assert_eq!(restored.relation("alice", "bob"), Relation::RequestReceived);
    assert_eq!(restored.relation("bob", "alice"), Relation::RequestSent);
}

fn op_command(actor: &str, op: Op, target: &str) -> OpCommand {
    OpCommand {
        request_id: 7,
        actor: Arc::from(actor),
        target: Arc::from(target),
        op,
    }
}

/// A roster where `user` holds `relations` relations, each `relation`.
fn roster_with(user: &str, relations: usize, relation: Relation) -> Rosters {
    let mut rosters = Rosters::new();
    let user: UserId = Arc::from(user);
    for i in 0..relations {
        rosters.set(&user, &Arc::from(format!("other{i}")), relation, 1);
    }
    rosters
}

#[test]
fn the_stages_of_a_friend_operation_go_actor_target_decide() {
    let rosters = Rosters::new();
    let next = |op, stage| rosters.advance(&op_command("ann", op, "ben"), stage);
    assert_eq!(
        next(Op::Request, FriendStage::Actor),
        Ok(FriendStage::Target)
    );
    assert_eq!(
        next(Op::Request, FriendStage::Target),
        Ok(FriendStage::Decide)
    );
    for op in [
        Op::Accept,
        Op::Reject,
        Op::Cancel,
        Op::Remove,
        Op::Block,
        Op::Unblock,
    ] {
        assert_eq!(
            next(op, FriendStage::Actor),
            Ok(FriendStage::Decide),
            "{op:?} skips the target's shard"
        );
    }
    for op in [Op::Request, Op::Block, Op::Remove] {
        assert_eq!(
            next(op, FriendStage::Decide),
            Ok(FriendStage::Decide),
            "the pair authority decides"
        );
    }
}

#[test]
fn the_actor_may_add_relations_up_to_the_cap() {
    let below = roster_with("ann", MAX_RELATIONS - 1, Relation::Friend);
    for op in [Op::Request, Op::Block] {
        assert!(below
            .advance(&op_command("ann", op, "ben"), FriendStage::Actor)
            .is_ok());
    }
    let full = roster_with("ann", MAX_RELATIONS, Relation::Friend);
    for op in [Op::Request, Op::Block] {
        let refused = full
            .advance(&op_command("ann", op, "ben"), FriendStage::Actor)
            .unwrap_err();
        assert_eq!(refused.refusal, Refusal::FriendError);
        assert_eq!(
            refused.message,
            "you have 1000 friends, requests and blocks, the most allowed; remove some first"
        );
    }
    for op in [Op::Accept, Op::Reject, Op::Cancel, Op::Remove, Op::Unblock] {
        assert_eq!(
            full.advance(&op_command("ann", op, "ben"), FriendStage::Actor),
            Ok(FriendStage::Decide),
            "{op:?} adds nothing, so the cap does not apply"
        );
    }
    assert_eq!(
        full.advance(&op_command("ben", Op::Request, "ann"), FriendStage::Actor),
        Ok(FriendStage::Target),
        "the cap is the actor's"
    );
}

#[test]
fn the_target_may_have_requests_waiting_up_to_the_cap() {
    let below = roster_with("ben", MAX_INCOMING - 1, Relation::RequestReceived);
    assert_eq!(
        below.advance(&op_command("ann", Op::Request, "ben"), FriendStage::Target),
        Ok(FriendStage::Decide)
    );
    let full = roster_with("ben", MAX_INCOMING, Relation::RequestReceived);
    let refused = full
        .advance(&op_command("ann", Op::Request, "ben"), FriendStage::Target)
        .unwrap_err();
    assert_eq!(refused.refusal, Refusal::FriendError);
    assert_eq!(
        refused.message,
        "ben has 500 friend requests waiting, the most allowed; try again later"
    );
    let sent = roster_with("ben", MAX_INCOMING, Relation::RequestSent);
    assert_eq!(
        sent.advance(&op_command("ann", Op::Request, "ben"), FriendStage::Target),
        Ok(FriendStage::Decide),
        "only requests received count"
    );
}

#[test]
fn invitations_need_no_block_and_for_a_closed_lobby_a_friendship() {
    let mut w = World::new();
    for friends_only in [false, true] {
        assert_eq!(
            w.pairs
                .check_invite("ann", "ben", friends_only)
                .map_err(|f| f.refusal),
            if friends_only {
                Err(Refusal::AccessDenied)
            } else {
                Ok(())
            },
            "strangers: friends_only {friends_only}"
        );
    }
    let stranger = w.pairs.check_invite("ann", "ben", true).unwrap_err();
    assert_eq!(
        stranger.message,
        "ben is not your friend; only friends may be invited to a lobby that is not public"
    );
    w.op("ann", Op::Request, "ben").unwrap();
    assert!(
        w.pairs.check_invite("ann", "ben", true).is_err(),
        "a request is not a friendship"
    );
    w.op("ben", Op::Accept, "ann").unwrap();
    assert_eq!(w.pairs.check_invite("ann", "ben", true), Ok(()));
    w.op("ben", Op::Block, "ann").unwrap();
    for friends_only in [false, true] {
        let blocked = w
            .pairs
            .check_invite("ann", "ben", friends_only)
            .unwrap_err();
        assert_eq!(blocked.refusal, Refusal::AccessDenied);
        assert_eq!(blocked.message, "ben does not accept invitations from you");
    }
    assert_eq!(
        w.pairs.check_invite("ben", "ann", false),
        Ok(()),
        "the blocker may still invite to a public lobby"
    );
    assert_eq!(
        w.pairs
            .check_invite("ben", "ann", true)
            .map_err(|f| f.refusal),
        Err(Refusal::AccessDenied),
        "but is no friend"
    );
}
