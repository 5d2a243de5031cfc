//! Multi-shard behaviour on the deterministic simulation harness
//! (`huddle::core::sim`): shard cores on a virtual clock, the harness
//! carrying every message between shards, in order or shuffled from a
//! seed. What crosses shards here — friend requests, invitations, parties,
//! notifications raised by domain events — is what a real node does with
//! threads and mailboxes; the harness makes each interleaving replayable.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use huddle::core::engine::lobbies::{self, Visibility};
use huddle::core::engine::social::{Op, Relation};
use huddle::core::engine::{DomainEvent, UserId};
use huddle::core::sim::workload::{
    author, bodies, configure_queues, create_lobby, error_code, friend, has, lobby_cmd, queue,
    relation, unread, Step, Workload,
};
use huddle::core::sim::{settings, Delivery, Sim};
use huddle_schema::wire::{Body, ErrorCode};
use proptest::prelude::*;

/// Users whose shard, and whose pair's shard, all differ, so every hop of
/// a friend operation crosses shards.
fn spread_users(sim: &Sim) -> (String, String) {
    let keys = sim.keys();
    for i in 0..1000 {
        for j in 0..1000 {
            let (a, b) = (format!("a{i}"), format!("b{j}"));
            let shards: HashSet<usize> = [keys.of_user(&a), keys.of_user(&b), keys.of_pair(&a, &b)]
                .into_iter()
                .collect();
            if shards.len() == 3 {
                return (a, b);
            }
        }
    }
    unreachable!("four shards always spread two users and their pair")
}

fn schedules() -> Vec<Delivery> {
    vec![
        Delivery::InOrder,
        Delivery::Shuffled {
            max_delay: Duration::from_millis(5),
        },
    ]
}

#[test]
fn a_friend_request_and_its_acceptance_cross_three_shards() {
    for (seed, delivery) in schedules().into_iter().enumerate() {
        let mut sim = Sim::new(4, settings(), delivery, seed as u64);
        let (a, b) = spread_users(&sim);
        let sa = sim.connect(&a);
        let sb = sim.connect(&b);
        sim.run();
        sim.take_frames(sa);
        sim.take_frames(sb);

        friend(&mut sim, sa, 1, &b, Op::Request);
        sim.run();
        let to_a = sim.take_frames(sa);
        let to_b = sim.take_frames(sb);
        assert!(
            bodies(&to_a).contains(&(Body::FriendOpDone, 1)),
            "{delivery:?}"
        );
        assert!(has(&to_b, Body::FriendEvent), "b hears of the request");
        assert!(
            has(&to_b, Body::NotificationEvent),
            "and gets a notification"
        );
        assert_eq!(relation(&sim, &a, &b), Relation::RequestSent);
        assert_eq!(relation(&sim, &b, &a), Relation::RequestReceived);
        assert_eq!(unread(&sim, &b), 1);

        friend(&mut sim, sb, 2, &a, Op::Accept);
        sim.run();
        assert!(bodies(&sim.take_frames(sb)).contains(&(Body::FriendOpDone, 2)));
        let to_a = sim.take_frames(sa);
        assert!(has(&to_a, Body::FriendEvent));
        assert!(has(&to_a, Body::NotificationEvent), "a is told b accepted");
        assert_eq!(relation(&sim, &a, &b), Relation::Friend);
        assert_eq!(relation(&sim, &b, &a), Relation::Friend);
        assert_eq!(unread(&sim, &a), 1);
        let pair = sim.shard(sim.keys().of_pair(&a, &b));
        assert_eq!(pair.pairs().relation(&a, &b), Relation::Friend);
        // Both rows were kept, and the events went to the webhook bus.
        assert!(sim
            .recorded
            .events
            .iter()
            .any(|e| matches!(e, DomainEvent::FriendshipAccepted { .. })));
    }
}

#[test]
fn a_friend_operation_is_acknowledged_only_once_stored() {
    let mut sim = Sim::new(4, settings(), Delivery::InOrder, 7);
    let (a, b) = spread_users(&sim);
    let sa = sim.connect(&a);
    sim.run();
    sim.take_frames(sa);
    sim.hold_durable(true);
    friend(&mut sim, sa, 1, &b, Op::Request);
    sim.run();
    assert!(
        !has(&sim.take_frames(sa), Body::FriendOpDone),
        "nothing is acknowledged before the store has it"
    );
    sim.sync();
    assert!(bodies(&sim.take_frames(sa)).contains(&(Body::FriendOpDone, 1)));
}

#[test]
fn an_invitation_checks_friendship_on_the_pairs_shard() {
    let mut sim = Sim::new(4, settings(), Delivery::InOrder, 3);
    let (a, b) = spread_users(&sim);
    // A lobby on yet another shard when there is one.
    let lobby = (0..100)
        .map(|i| format!("l{i}"))
        .find(|l| {
            let k = sim.keys();
            let s = k.of_lobby(l);
            s != k.of_pair(&a, &b) && s != k.of_user(&b)
        })
        .unwrap();
    let sa = sim.connect(&a);
    let sb = sim.connect(&b);
    sim.run();
    create_lobby(&mut sim, sa, 1, &lobby, Visibility::InviteOnly);
    sim.run();
    assert!(has(&sim.take_frames(sa), Body::LobbyReply));
    sim.take_frames(sb);

    let invite = |sim: &mut Sim, request_id| {
        let cmd = lobbies::Command::Invite {
            request_id,
            lobby_id: Arc::from(lobby.as_str()),
            actor: UserId::from(a.as_str()),
            invitee: UserId::from(b.as_str()),
        };
        lobby_cmd(sim, sa, cmd, false);
        sim.run();
    };
    invite(&mut sim, 2);
    let to_a = sim.take_frames(sa);
    assert_eq!(
        error_code(&to_a, 2),
        Some(ErrorCode::ACCESS_DENIED),
        "not friends yet"
    );
    assert!(!has(&sim.take_frames(sb), Body::NotificationEvent));

    friend(&mut sim, sa, 3, &b, Op::Request);
    sim.run();
    friend(&mut sim, sb, 4, &a, Op::Accept);
    sim.run();
    sim.take_frames(sa);
    sim.take_frames(sb);
    let before = unread(&sim, &b);
    invite(&mut sim, 5);
    assert!(bodies(&sim.take_frames(sa)).contains(&(Body::LobbyInvited, 5)));
    assert!(has(&sim.take_frames(sb), Body::NotificationEvent));
    assert_eq!(unread(&sim, &b), before + 1);

    // Invited, b may join the invite-only lobby.
    let join = lobbies::Command::Join {
        request_id: 6,
        lobby_id: Arc::from(lobby.as_str()),
        user: author(&b),
        password: None,
    };
    lobby_cmd(&mut sim, sb, join, true);
    sim.run();
    let to_b = sim.take_frames(sb);
    assert!(
        bodies(&to_b).contains(&(Body::LobbyReply, 6)),
        "{:?}",
        bodies(&to_b)
    );
    assert_eq!(sim.shard(sim.keys().of_user(&b)).lobbies_of(&b).len(), 1);
}

#[test]
fn a_lobby_queues_as_a_party_on_the_games_shard_and_a_match_makes_a_lobby() {
    let mut sim = Sim::new(4, settings(), Delivery::InOrder, 11);
    let keys = sim.keys();
    configure_queues(&mut sim);
    // Two lobbies of two, neither on the game's shard.
    let game_shard = keys.of_game("arena");
    let lobbies: Vec<String> = (0..100)
        .map(|i| format!("p{i}"))
        .filter(|l| keys.of_lobby(l) != game_shard)
        .take(2)
        .collect();
    let mut hosts = Vec::new();
    let mut everyone = Vec::new();
    for (n, lobby) in lobbies.iter().enumerate() {
        let host = sim.connect(&format!("h{n}"));
        let guest = sim.connect(&format!("g{n}"));
        sim.run();
        create_lobby(&mut sim, host, 1, lobby, Visibility::Public);
        sim.run();
        let join = lobbies::Command::Join {
            request_id: 2,
            lobby_id: Arc::from(lobby.as_str()),
            user: author(&format!("g{n}")),
            password: None,
        };
        lobby_cmd(&mut sim, guest, join, true);
        sim.run();
        hosts.push(host);
        everyone.extend([host, guest]);
    }
    for s in &everyone {
        sim.take_frames(*s);
    }
    for (host, lobby) in hosts.iter().zip(&lobbies) {
        queue(&mut sim, *host, 10, Some(Arc::from(lobby.as_str())));
        sim.run();
        assert!(bodies(&sim.take_frames(*host)).contains(&(Body::MatchmakingReply, 10)));
    }
    assert_eq!(
        sim.shard(game_shard).queues().len(),
        2,
        "a ticket per party"
    );
    sim.advance(Duration::from_millis(500));
    // Every player hears of the match, and it has a lobby of four.
    for s in &everyone {
        let frames = sim.take_frames(*s);
        assert!(
            has(&frames, Body::MatchmakingEvent),
            "{:?}",
            bodies(&frames)
        );
    }
    assert!(sim
        .recorded
        .events
        .iter()
        .any(|e| matches!(e, DomainEvent::MatchmakingMatched { .. })));
    let match_lobbies: HashSet<Arc<str>> = (0..2)
        .flat_map(|n| {
            let user = format!("g{n}");
            sim.shard(keys.of_user(&user)).lobbies_of(&user)
        })
        .filter(|l| l.starts_with('m'))
        .collect();
    assert_eq!(match_lobbies.len(), 1, "one match lobby for both parties");
    let id = match_lobbies.into_iter().next().unwrap();
    let snapshot = sim
        .shard(keys.of_lobby(&id))
        .lobbies()
        .snapshot(&id)
        .unwrap();
    assert_eq!(snapshot.members.len(), 4);
}

/// A random workload step.
fn step() -> impl Strategy<Value = Step> {
    any::<[u8; 4]>().prop_map(Step::from_bytes)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Random workloads of many users across shards, under shuffled
    /// delivery, keep the cross-shard invariants (`Workload::check`).
    #[test]
    fn cross_shard_invariants_hold(steps in proptest::collection::vec(step(), 1..60), seed in any::<u64>()) {
        let mut w = Workload::new(seed);
        for step in steps {
            w.apply(step);
        }
        if let Err(broken) = w.check() {
            prop_assert!(false, "{}", broken);
        }
    }
}
