//! Multi-shard behaviour on the deterministic simulation harness
//! (`huddle::core::sim`): shard cores on a virtual clock, the harness
//! carrying every message between shards, in order or shuffled from a
//! seed. What crosses shards here — friend requests, invitations, parties,
//! notifications raised by domain events — is what a real node does with
//! threads and mailboxes; the harness makes each interleaving replayable.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use huddle::core::engine::chat::{Actor, Author};
use huddle::core::engine::lobbies::{self, LobbySpec, Visibility};
use huddle::core::engine::matchmaking::matcher::{QueueRules, Widening};
use huddle::core::engine::matchmaking::{self, QueueSpec, Start};
use huddle::core::engine::social::{Op, OpCommand, Relation};
use huddle::core::engine::{DomainEvent, SessionId, UserId};
use huddle::core::shard::{FriendStage, LobbyMember, PartyStart, ShardMsg};
use huddle::core::sim::{settings, Delivery, Sim};
use huddle_schema::wire::{Body, ErrorCode};
use proptest::prelude::*;

/// The body and request id of every frame.
fn bodies(frames: &[Bytes]) -> Vec<(Body, u64)> {
    frames
        .iter()
        .map(|b| {
            let f = huddle_schema::verify_frame(b, 1 << 20).expect("the core encodes valid frames");
            (f.body_type(), f.request_id())
        })
        .collect()
}

fn error_code(frames: &[Bytes], request_id: u64) -> Option<ErrorCode> {
    frames.iter().find_map(|b| {
        let f = huddle_schema::verify_frame(b, 1 << 20).ok()?;
        let e = f.body_as_error()?;
        (f.request_id() == request_id).then(|| e.code())
    })
}

fn has(frames: &[Bytes], body: Body) -> bool {
    bodies(frames).iter().any(|(b, _)| *b == body)
}

fn author(id: &str) -> Author {
    Author {
        id: UserId::from(id),
        username: Arc::from(id),
        display_name: Arc::from(id),
    }
}

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

fn friend(sim: &mut Sim, session: SessionId, request_id: u64, target: &str, op: Op) {
    let actor = sim.user(session).unwrap();
    let msg = ShardMsg::Friend {
        cmd: OpCommand {
            request_id,
            actor: actor.clone(),
            target: UserId::from(target),
            op,
        },
        reply_to: sim.outbox(session),
        stage: FriendStage::Actor,
    };
    sim.send(sim.keys().of_user(&actor), msg);
}

fn create_lobby(sim: &mut Sim, session: SessionId, request_id: u64, lobby: &str, vis: Visibility) {
    let user = sim.user(session).unwrap();
    let cmd = lobbies::Command::Create {
        request_id,
        lobby_id: Arc::from(lobby),
        host: Some(author(&user)),
        spec: LobbySpec {
            game: "arena".into(),
            mode: "duo".into(),
            region: "eu".into(),
            min: 1,
            max: 4,
            visibility: vis,
            password: None,
            chat: true,
            settings: BTreeMap::new(),
        },
        assigned: Vec::new(),
    };
    lobby_cmd(sim, session, cmd, true);
}

fn lobby_cmd(sim: &mut Sim, session: SessionId, cmd: lobbies::Command, joins: bool) {
    let user = sim.user(session).unwrap();
    let lobby_id = huddle::core::shard::lobby_of(&cmd).clone();
    let member = joins.then(|| {
        Box::new(LobbyMember {
            session,
            actor: Actor {
                author: author(&user),
                operator: false,
            },
            outbox: sim.outbox(session),
        })
    });
    let msg = ShardMsg::Lobby {
        cmd: Box::new(cmd),
        reply_to: Some(sim.outbox(session)),
        member,
    };
    sim.send(sim.keys().of_lobby(&lobby_id), msg);
}

fn relation(sim: &Sim, user: &str, other: &str) -> Relation {
    let shard = sim.shard(sim.keys().of_user(user));
    shard
        .rosters()
        .list(user)
        .into_iter()
        .find(|e| &*e.user_id == other)
        .map_or(Relation::None, |e| e.relation)
}

fn unread(sim: &Sim, user: &str) -> u32 {
    sim.shard(sim.keys().of_user(user))
        .notifications()
        .counts(user)
        .1
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

fn queue_spec() -> QueueSpec {
    QueueSpec {
        game: Arc::from("arena"),
        mode: Arc::from("duo"),
        rules: QueueRules {
            teams: 2,
            team_size: 2,
            regions: vec![Arc::from("eu")],
            spread: Widening {
                start: 100.0,
                step: 100.0,
                every_ms: 1_000,
                max: 400.0,
            },
            latency: Widening {
                start: 100.0,
                step: 0.0,
                every_ms: 1_000,
                max: 100.0,
            },
            timeout_ms: 60_000,
            attributes: Vec::new(),
            roles: Vec::new(),
        },
        ready_check_ms: None,
    }
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

fn configure_queues(sim: &mut Sim) {
    for shard in 0..sim.keys().count() {
        let msg = ShardMsg::Matchmaking {
            cmd: Box::new(matchmaking::Command::Configure(vec![queue_spec()])),
            reply_to: None,
            watcher: None,
        };
        sim.send(shard, msg);
    }
}

/// `matchmaking:start` for arena/duo, solo, or for `party`'s members when
/// the session's user hosts it.
fn queue(sim: &mut Sim, session: SessionId, request_id: u64, party: Option<Arc<str>>) {
    let user = sim.user(session).unwrap();
    let start = Start {
        request_id,
        session: Some(session),
        game: Arc::from("arena"),
        mode: Arc::from("duo"),
        players: vec![author(&user)],
        token_rating: None,
        latency_ms: vec![(Arc::from("eu"), 30)],
        attributes: Vec::new(),
        role: None,
        party: None,
    };
    let keys = sim.keys();
    let reply_to = sim.outbox(session);
    match party {
        Some(lobby_id) => {
            let shard = keys.of_lobby(&lobby_id);
            let msg = ShardMsg::PartyStart(Box::new(PartyStart {
                start,
                lobby_id,
                reply_to,
            }));
            sim.send(shard, msg);
        }
        None => {
            let msg = ShardMsg::Matchmaking {
                cmd: Box::new(matchmaking::Command::Start(Box::new(start))),
                reply_to: Some(reply_to.clone()),
                watcher: Some(reply_to),
            };
            sim.send(keys.of_game("arena"), msg);
        }
    }
}

/// One step of the property test's random workload.
#[derive(Debug, Clone)]
enum Step {
    Connect(u8),
    Disconnect(u8),
    FriendRequest(u8, u8),
    FriendAccept(u8, u8),
    CreateLobby(u8, u8),
    JoinLobby(u8, u8),
    LeaveLobby(u8, u8),
    /// Queue alone, or (host) the user's lobby as a party.
    Queue(u8, bool),
    Wait(u16),
}

fn step() -> impl Strategy<Value = Step> {
    let u = 0u8..8;
    let l = 0u8..4;
    prop_oneof![
        u.clone().prop_map(Step::Connect),
        u.clone().prop_map(Step::Disconnect),
        (u.clone(), u.clone()).prop_map(|(a, b)| Step::FriendRequest(a, b)),
        (u.clone(), u.clone()).prop_map(|(a, b)| Step::FriendAccept(a, b)),
        (u.clone(), l.clone()).prop_map(|(a, b)| Step::CreateLobby(a, b)),
        (u.clone(), l.clone()).prop_map(|(a, b)| Step::JoinLobby(a, b)),
        (u.clone(), l).prop_map(|(a, b)| Step::LeaveLobby(a, b)),
        (u.clone(), any::<bool>()).prop_map(|(a, party)| Step::Queue(a, party)),
        (0u16..3000).prop_map(Step::Wait),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Random workloads of many users across shards, under shuffled
    /// delivery, keep the cross-shard invariants.
    #[test]
    fn cross_shard_invariants_hold(steps in proptest::collection::vec(step(), 1..60), seed in any::<u64>()) {
        let delivery = Delivery::Shuffled { max_delay: Duration::from_millis(3) };
        let mut sim = Sim::new(4, settings(), delivery, seed);
        let name = |u: u8| format!("u{u}");
        let mut sessions: HashMap<u8, Vec<SessionId>> = HashMap::new();
        let mut request = 0u64;
        configure_queues(&mut sim);
        for step in &steps {
            request += 1;
            match *step {
                Step::Connect(u) => {
                    let s = sim.connect(&name(u));
                    sessions.entry(u).or_default().push(s);
                }
                Step::Disconnect(u) => {
                    if let Some(s) = sessions.get_mut(&u).and_then(|v| v.pop()) {
                        sim.disconnect(s, false);
                    }
                }
                Step::FriendRequest(a, b) | Step::FriendAccept(a, b) => {
                    let op = if matches!(step, Step::FriendRequest(..)) { Op::Request } else { Op::Accept };
                    if let (Some(&s), true) = (sessions.get(&a).and_then(|v| v.last()), a != b) {
                        friend(&mut sim, s, request, &name(b), op);
                    }
                }
                Step::CreateLobby(u, l) | Step::JoinLobby(u, l) | Step::LeaveLobby(u, l) => {
                    let Some(&s) = sessions.get(&u).and_then(|v| v.last()) else { continue };
                    let lobby = format!("lobby{l}");
                    match step {
                        Step::CreateLobby(..) => create_lobby(&mut sim, s, request, &lobby, Visibility::Public),
                        Step::JoinLobby(..) => {
                            let cmd = lobbies::Command::Join {
                                request_id: request,
                                lobby_id: Arc::from(lobby.as_str()),
                                user: author(&name(u)),
                                password: None,
                            };
                            lobby_cmd(&mut sim, s, cmd, true);
                        }
                        _ => {
                            let cmd = lobbies::Command::Leave {
                                request_id: request,
                                lobby_id: Arc::from(lobby.as_str()),
                                user: UserId::from(name(u).as_str()),
                            };
                            lobby_cmd(&mut sim, s, cmd, false);
                        }
                    }
                }
                Step::Queue(u, party) => {
                    let Some(&s) = sessions.get(&u).and_then(|v| v.last()) else { continue };
                    let lobby = sim.shard(sim.keys().of_user(&name(u))).lobbies_of(&name(u)).first().cloned();
                    queue(&mut sim, s, request, if party { lobby } else { None });
                }
                Step::Wait(ms) => sim.advance(Duration::from_millis(u64::from(ms))),
            }
            // Interleave: sometimes let the node settle between steps.
            if request % 3 == 0 {
                sim.run();
            }
        }
        sim.run();
        let keys = sim.keys();

        // Exactly one reply per request to each session that asked.
        for list in sessions.values() {
            for s in list {
                let frames = sim.take_frames(*s);
                let mut seen = HashSet::new();
                for (body, request_id) in bodies(&frames) {
                    if request_id != 0 && body != Body::NONE {
                        prop_assert!(seen.insert(request_id), "two replies to request {request_id}");
                    }
                }
            }
        }

        for u in 0..8u8 {
            let user = name(u);
            let home = sim.shard(keys.of_user(&user));
            // Presence: the user's shard holds exactly their live sessions.
            let live = sessions.get(&u).map_or(0, Vec::len);
            prop_assert_eq!(home.users().sessions_of(&user).len(), live, "sessions of {}", user);
            let online = home.users().connected_users().any(|x| **x == *user);
            prop_assert_eq!(online, live > 0, "{} online", user);

            // Relations agree on both users' shards and the pair's.
            for v in 0..8u8 {
                if u == v { continue; }
                let other = name(v);
                let mine = relation(&sim, &user, &other);
                let theirs = relation(&sim, &other, &user);
                let expected = match mine {
                    Relation::Friend => Relation::Friend,
                    Relation::RequestSent => Relation::RequestReceived,
                    Relation::RequestReceived => Relation::RequestSent,
                    Relation::None => Relation::None,
                    Relation::Blocked => theirs,
                };
                prop_assert_eq!(theirs, expected, "{} and {}", user, other);
                let pair = sim.shard(keys.of_pair(&user, &other));
                prop_assert_eq!(pair.pairs().relation(&user, &other), mine);
            }

            // A user's lobby index matches the lobbies' member lists.
            let indexed: HashSet<Arc<str>> = home.lobbies_of(&user).into_iter().collect();
            for l in 0..4 {
                let lobby = format!("lobby{l}");
                let member = sim
                    .shard(keys.of_lobby(&lobby))
                    .lobbies()
                    .snapshot(&lobby)
                    .is_some_and(|s| s.members.iter().any(|m| *m.user.id == *user));
                prop_assert_eq!(member, indexed.contains(lobby.as_str()), "{} in {}", user, lobby);
            }
            // At most one lobby per game (the default setting).
            prop_assert!(indexed.len() <= 1);

            // At most one active ticket per user per game.
            let tickets = sim.shard(keys.of_game("arena")).queues().tickets_of("arena", &user);
            prop_assert!(tickets <= 1, "{} holds {} tickets", user, tickets);

            // Every notification raised for the user is there, unread.
            let raised = sim.recorded.events.iter().filter(|e| match e {
                DomainEvent::FriendshipRequested { to, .. } => **to == *user,
                DomainEvent::FriendshipAccepted { requester, .. } => **requester == *user,
                _ => false,
            }).count();
            prop_assert_eq!(unread(&sim, &user) as usize, raised, "notifications of {}", user);
        }
    }
}
