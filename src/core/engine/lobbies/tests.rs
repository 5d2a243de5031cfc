//! Tests of the lobby engine, driven with a virtual clock; they assert on
//! effects and never touch I/O.

use super::super::DomainEvent;
use super::*;
use proptest::prelude::*;

struct World {
    lobbies: Lobbies,
    base: Instant,
    at_ms: i64,
}

fn author(id: &str) -> Author {
    Author {
        id: UserId::from(id),
        username: Arc::from(id),
        display_name: Arc::from(id),
    }
}

fn spec(min: u16, max: u16, visibility: Visibility) -> LobbySpec {
    LobbySpec {
        game: "g".into(),
        mode: "m".into(),
        region: "eu".into(),
        min,
        max,
        visibility,
        password: None,
        chat: true,
        settings: BTreeMap::new(),
    }
}

impl World {
    fn new() -> Self {
        Self {
            lobbies: Lobbies::new(LobbyLimits::default()),
            base: Instant::now(),
            at_ms: 1_800_000_000_000,
        }
    }
    fn now(&self) -> Now {
        Now {
            mono: self.base + Duration::from_millis((self.at_ms - 1_800_000_000_000) as u64),
            unix_ms: self.at_ms,
        }
    }
    fn advance(&mut self, ms: i64) -> Vec<Effect> {
        self.at_ms += ms;
        let mut out = Vec::new();
        let now = self.now();
        self.lobbies.handle_timeout(now, &mut out);
        out
    }
    fn run(&mut self, cmd: Command) -> Vec<Effect> {
        let mut out = Vec::new();
        let now = self.now();
        self.lobbies.handle(now, cmd, &mut out);
        out
    }
    fn create(&mut self, host: &str, spec: LobbySpec) -> Vec<Effect> {
        self.run(Command::Create {
            request_id: 1,
            lobby_id: Arc::from("L"),
            host: Some(author(host)),
            spec,
            assigned: Vec::new(),
        })
    }
    fn join(&mut self, user: &str, password: Option<&str>) -> Vec<Effect> {
        self.run(Command::Join {
            request_id: 2,
            lobby_id: Arc::from("L"),
            user: author(user),
            password: password.map(String::from),
        })
    }
    fn leave(&mut self, user: &str) -> Vec<Effect> {
        self.run(Command::Leave {
            request_id: 3,
            lobby_id: Arc::from("L"),
            user: UserId::from(user),
        })
    }
    fn ready(&mut self, user: &str, ready: bool) -> Vec<Effect> {
        self.run(Command::Ready {
            request_id: 4,
            lobby_id: Arc::from("L"),
            user: UserId::from(user),
            ready,
        })
    }
    fn kick(&mut self, actor: &str, target: &str) -> Vec<Effect> {
        self.run(Command::Kick {
            request_id: 5,
            lobby_id: Arc::from("L"),
            actor: UserId::from(actor),
            target: UserId::from(target),
            reason: String::new(),
        })
    }
    fn state(&self) -> Option<Arc<Snapshot>> {
        self.lobbies.snapshot("L")
    }
    fn members(&self) -> Vec<String> {
        self.state()
            .map(|s| s.members.iter().map(|m| m.user.id.to_string()).collect())
            .unwrap_or_default()
    }
}

fn refusal(out: &[Effect]) -> Option<Refusal> {
    out.iter().find_map(|e| match e {
        Effect::Fail { failure, .. } => Some(failure.refusal),
        _ => None,
    })
}

fn kinds(out: &[Effect]) -> Vec<EventKind> {
    out.iter()
        .filter_map(|e| match e {
            Effect::ToUsers {
                event: Event::Lobby(e),
                ..
            }
            | Effect::ToUser {
                event: Event::Lobby(e),
                ..
            } => Some(e.kind),
            _ => None,
        })
        .collect()
}

#[test]
fn join_ready_all_ready_and_revert() {
    let mut w = World::new();
    w.create("host", spec(2, 3, Visibility::Public));
    let out = w.join("ann", None);
    assert_eq!(kinds(&out), vec![EventKind::MemberJoined]);
    assert!(
        matches!(
            out.iter().find(|e| matches!(e, Effect::ToUsers { .. })),
            Some(Effect::ToUsers { users, .. }) if users.len() == 2
        ),
        "every member hears the join, the joiner's other devices too"
    );
    w.ready("host", true);
    let out = w.ready("ann", true);
    assert_eq!(
        kinds(&out),
        vec![EventKind::MemberReady, EventKind::AllReady]
    );
    assert_eq!(w.state().unwrap().status, Status::Ready);
    let out = w.ready("ann", false);
    assert_eq!(
        kinds(&out),
        vec![EventKind::MemberReady, EventKind::NotReady]
    );
    assert_eq!(w.state().unwrap().status, Status::Open);
    assert_eq!(refusal(&w.ready("zed", true)), Some(Refusal::ReadyError));
}

#[test]
fn joins_are_checked_and_refusals_change_nothing() {
    let mut w = World::new();
    let mut s = spec(1, 2, Visibility::Public);
    s.password = Some("pw".into());
    w.create("host", s);
    let before = w.state();
    assert_eq!(refusal(&w.join("ann", None)), Some(Refusal::LobbyError));
    assert_eq!(
        refusal(&w.join("ann", Some("nope"))),
        Some(Refusal::LobbyError)
    );
    assert_eq!(
        w.state(),
        before,
        "refusals change nothing, not even the version"
    );
    w.join("ann", Some("pw"));
    assert_eq!(
        refusal(&w.join("bob", Some("pw"))),
        Some(Refusal::LobbyError),
        "full"
    );
    let unknown = w.run(Command::Join {
        request_id: 2,
        lobby_id: Arc::from("nope"),
        user: author("bob"),
        password: None,
    });
    assert_eq!(refusal(&unknown), Some(Refusal::LobbyNotFound));
    let bad = w.run(Command::Create {
        request_id: 1,
        lobby_id: Arc::from("M"),
        host: Some(author("x")),
        spec: spec(3, 2, Visibility::Public),
        assigned: Vec::new(),
    });
    assert_eq!(refusal(&bad), Some(Refusal::InvalidArgument), "min > max");
}

#[test]
fn invite_only_needs_an_invitation() {
    let mut w = World::new();
    w.create("host", spec(1, 4, Visibility::InviteOnly));
    assert_eq!(refusal(&w.join("ann", None)), Some(Refusal::AccessDenied));
    let out = w.run(Command::Invite {
        request_id: 6,
        lobby_id: Arc::from("L"),
        actor: UserId::from("host"),
        invitee: UserId::from("ann"),
    });
    assert!(matches!(
        &out[..],
        [Effect::LobbyInvite {
            friends_only: true,
            ..
        }]
    ));
    w.run(Command::Invited {
        lobby_id: Arc::from("L"),
        invitee: UserId::from("ann"),
    });
    assert_eq!(refusal(&w.join("ann", None)), None);
    let outsider = w.run(Command::Invite {
        request_id: 6,
        lobby_id: Arc::from("L"),
        actor: UserId::from("zed"),
        invitee: UserId::from("bob"),
    });
    assert_eq!(refusal(&outsider), Some(Refusal::AccessDenied));
}

#[test]
fn host_leaves_and_the_longest_present_takes_over_then_the_last_closes_it() {
    let mut w = World::new();
    w.create("host", spec(1, 4, Visibility::Public));
    w.join("ann", None);
    w.join("bob", None);
    let out = w.leave("host");
    // The leaver's devices and the rest hear it, then the new host.
    assert_eq!(
        kinds(&out),
        vec![
            EventKind::MemberLeft,
            EventKind::MemberLeft,
            EventKind::HostChanged
        ]
    );
    assert_eq!(w.state().unwrap().host.as_deref(), Some("ann"));
    w.leave("ann");
    let out = w.leave("bob");
    assert!(
        w.state().is_none(),
        "the last member leaving closes the lobby"
    );
    assert!(out
        .iter()
        .any(|e| matches!(e, Effect::Domain(DomainEvent::LobbyClosed { .. }))));
}

#[test]
fn kick_is_host_only_reaches_the_target_and_bans_a_rejoin() {
    let mut w = World::new();
    w.create("host", spec(1, 4, Visibility::Public));
    w.join("ann", None);
    assert_eq!(refusal(&w.kick("ann", "host")), Some(Refusal::NotHost));
    assert_eq!(refusal(&w.kick("host", "host")), Some(Refusal::KickError));
    assert_eq!(refusal(&w.kick("host", "zed")), Some(Refusal::KickError));
    let out = w.kick("host", "ann");
    assert_eq!(
        kinds(&out),
        vec![EventKind::MemberKicked, EventKind::Kicked]
    );
    assert!(out
        .iter()
        .any(|e| matches!(e, Effect::ToUser { user, .. } if &**user == "ann")));
    assert_eq!(w.members(), vec!["host"]);
    assert_eq!(refusal(&w.join("ann", None)), Some(Refusal::LobbyError));
    w.at_ms += LobbyLimits::default().kick_ban.as_millis() as i64 + 1;
    assert_eq!(refusal(&w.join("ann", None)), None, "the ban ends");
}

#[test]
fn a_disconnected_member_keeps_the_slot_for_the_grace_period() {
    let mut w = World::new();
    w.create("host", spec(1, 4, Visibility::Public));
    w.join("ann", None);
    let presence = |online| Command::Presence {
        lobby_id: Arc::from("L"),
        user: UserId::from("ann"),
        online,
    };
    let out = w.run(presence(false));
    assert_eq!(kinds(&out), vec![EventKind::MemberDisconnected]);
    assert!(w.advance(59_000).is_empty());
    let out = w.run(presence(true));
    assert_eq!(kinds(&out), vec![EventKind::MemberReconnected]);
    assert!(w.advance(5_000).is_empty(), "back in time: still in");
    w.run(presence(false));
    w.advance(60_001);
    assert_eq!(w.members(), vec!["host"], "gone after the grace period");
}

#[test]
fn update_and_start_are_host_only_and_bump_the_version() {
    let mut w = World::new();
    w.create("host", spec(1, 4, Visibility::Public));
    w.join("ann", None);
    let v = w.state().unwrap().version;
    let update = |actor: &str, update: LobbyUpdate| Command::Update {
        request_id: 7,
        lobby_id: Arc::from("L"),
        actor: UserId::from(actor),
        update,
    };
    let lock = LobbyUpdate {
        locked: Some(true),
        ..Default::default()
    };
    assert_eq!(
        refusal(&w.run(update("ann", lock.clone()))),
        Some(Refusal::NotHost)
    );
    let small = LobbyUpdate {
        capacity: Some((1, 1)),
        ..Default::default()
    };
    assert_eq!(
        refusal(&w.run(update("host", small))),
        Some(Refusal::LobbyError)
    );
    let big = LobbyUpdate {
        settings: Some((0..40).map(|i| (format!("k{i}"), "v".into())).collect()),
        ..Default::default()
    };
    assert_eq!(
        refusal(&w.run(update("host", big))),
        Some(Refusal::InvalidArgument)
    );
    assert_eq!(w.state().unwrap().version, v);
    let out = w.run(update("host", lock));
    assert_eq!(kinds(&out), vec![EventKind::Updated]);
    assert!(w.state().unwrap().locked && w.state().unwrap().version > v);
    assert_eq!(
        refusal(&w.join("bob", None)),
        Some(Refusal::LobbyError),
        "locked"
    );
    let start = w.run(Command::Start {
        request_id: 8,
        lobby_id: Arc::from("L"),
        actor: Some(UserId::from("host")),
        connection: Some("10.0.0.7:7777".into()),
    });
    assert_eq!(kinds(&start), vec![EventKind::Started]);
    let s = w.state().unwrap();
    assert_eq!(
        (s.status, s.connection.as_deref()),
        (Status::InGame, Some("10.0.0.7:7777"))
    );
}

#[test]
fn a_stale_superseded_never_removes_a_newer_membership() {
    let mut w = World::new();
    w.create("host", spec(1, 4, Visibility::Public));
    let first = w.join("ann", None);
    let v1 = first
        .iter()
        .find_map(|e| match e {
            Effect::LobbyMembership { since_version, .. } => Some(*since_version),
            _ => None,
        })
        .unwrap();
    w.leave("ann");
    w.join("ann", None);
    w.run(Command::Superseded {
        lobby_id: Arc::from("L"),
        user: UserId::from("ann"),
        since_version: v1,
    });
    assert_eq!(
        w.members(),
        vec!["host", "ann"],
        "the stale message is ignored"
    );
}

#[test]
fn empty_lobbies_are_refused_and_non_members_never_see_the_server_address() {
    let mut w = World::new();
    let empty = w.run(Command::Create {
        request_id: 1,
        lobby_id: Arc::from("E"),
        host: None,
        spec: spec(1, 2, Visibility::Public),
        assigned: Vec::new(),
    });
    assert_eq!(refusal(&empty), Some(Refusal::InvalidArgument));
    w.create("host", spec(1, 4, Visibility::Public));
    w.run(Command::Start {
        request_id: 8,
        lobby_id: Arc::from("L"),
        actor: None,
        connection: Some("10.0.0.7:7777".into()),
    });
    let get = |w: &mut World, user: &str| {
        let out = w.run(Command::Get {
            request_id: 9,
            lobby_id: Arc::from("L"),
            user: UserId::from(user),
        });
        match &out[0] {
            Effect::Reply {
                reply: Reply::Lobby(l),
                ..
            } => l.connection.clone(),
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(get(&mut w, "host").as_deref(), Some("10.0.0.7:7777"));
    assert_eq!(get(&mut w, "outsider"), None);
}

/// Found by `fuzz/fuzz_targets/lobbies.rs`: a backfill naming a player
/// twice added them twice (two slots, two memberships for one user).
#[test]
fn an_assignment_naming_a_player_twice_adds_them_once() {
    let mut w = World::new();
    w.create("host", spec(2, 3, Visibility::Public));
    let out = w.run(Command::Assign {
        lobby_id: Arc::from("L"),
        players: vec![(author("ann"), None), (author("ann"), Some(1))],
    });
    assert_eq!(refusal(&out), None);
    assert_eq!(w.members(), vec!["host", "ann"]);
    let joined = out
        .iter()
        .filter(|e| matches!(e, Effect::LobbyMembership { joined: true, .. }))
        .count();
    assert_eq!(joined, 1, "one membership for one player: {out:?}");
}

#[derive(Debug, Clone)]
enum Op {
    Join(u8),
    Leave(u8),
    Ready(u8, bool),
    Kick(u8, u8),
    Transfer(u8, u8),
    Presence(u8, bool),
    Capacity(u8, u8),
    Wait(u16),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..8).prop_map(Op::Join),
        (0u8..8).prop_map(Op::Leave),
        (0u8..8, any::<bool>()).prop_map(|(u, r)| Op::Ready(u, r)),
        (0u8..8, 0u8..8).prop_map(|(a, b)| Op::Kick(a, b)),
        (0u8..8, 0u8..8).prop_map(|(a, b)| Op::Transfer(a, b)),
        (0u8..8, any::<bool>()).prop_map(|(u, o)| Op::Presence(u, o)),
        (0u8..6, 0u8..6).prop_map(|(a, b)| Op::Capacity(a, b)),
        (0u16..40_000).prop_map(Op::Wait),
    ]
}

proptest! {
    #[test]
    fn lobby_invariants_hold_under_any_sequence(ops in proptest::collection::vec(op(), 1..80)) {
        let mut w = World::new();
        w.create("u0", spec(1, 4, Visibility::Public));
        let mut last_version = w.state().unwrap().version;
        let ban = LobbyLimits::default().kick_ban.as_millis() as i64;
        let mut kicked: HashMap<String, i64> = HashMap::new();
        let user = |i: u8| format!("u{i}");
        for op in ops {
            let out = match op {
                Op::Join(u) => w.join(&user(u), None),
                Op::Leave(u) => w.leave(&user(u)),
                Op::Ready(u, r) => w.ready(&user(u), r),
                Op::Kick(a, b) => {
                    let out = w.kick(&user(a), &user(b));
                    if refusal(&out).is_none() {
                        kicked.insert(user(b), w.at_ms);
                    }
                    out
                }
                Op::Transfer(a, b) => w.run(Command::TransferHost {
                    request_id: 9,
                    lobby_id: Arc::from("L"),
                    actor: UserId::from(user(a)),
                    target: UserId::from(user(b)),
                }),
                Op::Presence(u, online) => w.run(Command::Presence {
                    lobby_id: Arc::from("L"),
                    user: UserId::from(user(u)),
                    online,
                }),
                Op::Capacity(a, b) => {
                    let host = w.state().and_then(|s| s.host.clone()).unwrap_or_else(|| UserId::from("u0"));
                    w.run(Command::Update {
                        request_id: 10,
                        lobby_id: Arc::from("L"),
                        actor: host,
                        update: LobbyUpdate { capacity: Some((u16::from(a), u16::from(b))), ..Default::default() },
                    })
                }
                Op::Wait(ms) => w.advance(i64::from(ms)),
            };
            let Some(s) = w.state() else {
                // Closed: every later command is LOBBY_NOT_FOUND.
                break;
            };
            prop_assert!(s.members.len() <= usize::from(s.max), "never over capacity");
            prop_assert!(!s.members.is_empty(), "an empty lobby is closed");
            let host = s.host.clone().expect("a host while not empty");
            prop_assert_eq!(s.members.iter().filter(|m| m.user.id == host).count(), 1, "exactly one host, a member");
            for (k, at) in &kicked {
                if w.at_ms < at + ban {
                    prop_assert!(
                        s.members.iter().all(|m| &*m.user.id != k.as_str()),
                        "a kicked user is not a member while banned"
                    );
                }
            }
            prop_assert!(s.version >= last_version, "versions never go back");
            if refusal(&out).is_none() && !kinds(&out).is_empty() {
                prop_assert!(s.version > last_version, "every change bumps the version");
            }
            last_version = s.version;
        }
    }
}

#[test]
fn only_the_host_queues_a_lobby_for_its_own_game_host_first() {
    let mut w = World::new();
    w.create("host", spec(1, 3, Visibility::Public));
    w.join("ann", None);
    let ids = |players: Vec<Author>| -> Vec<String> {
        players.iter().map(|a| a.id.to_string()).collect()
    };
    assert_eq!(
        w.lobbies.party_ticket("L", "host", "g").map(ids),
        Ok(vec!["host".to_string(), "ann".to_string()])
    );
    let other_game = w.lobbies.party_ticket("L", "host", "h").unwrap_err();
    assert_eq!(other_game.refusal, Refusal::LobbyError);
    assert_eq!(
        other_game.message,
        "lobby L is a g lobby; it cannot queue for h"
    );
    let refused = |w: &World, lobby: &str, host: &str| {
        w.lobbies
            .party_ticket(lobby, host, "g")
            .map_err(|f| (f.refusal, f.message))
    };
    assert_eq!(
        refused(&w, "L", "ann"),
        Err((
            Refusal::NotHost,
            "only the lobby's host may queue it for matchmaking".to_string()
        ))
    );
    assert_eq!(
        refused(&w, "L", "zed"),
        Err((Refusal::LobbyNotFound, "no lobby L".to_string())),
        "a non-member does not learn the lobby exists"
    );
    assert_eq!(
        refused(&w, "nope", "host"),
        Err((Refusal::LobbyNotFound, "no lobby nope".to_string()))
    );
    w.run(Command::TransferHost {
        request_id: 6,
        lobby_id: Arc::from("L"),
        actor: UserId::from("host"),
        target: UserId::from("ann"),
    });
    assert_eq!(
        w.lobbies.party_ticket("L", "ann", "g").map(ids),
        Ok(vec!["ann".to_string(), "host".to_string()]),
        "the new host comes first"
    );
    w.run(Command::Start {
        request_id: 7,
        lobby_id: Arc::from("L"),
        actor: None,
        connection: None,
    });
    assert_eq!(
        refused(&w, "L", "ann"),
        Err((
            Refusal::LobbyError,
            "lobby L is in game; it cannot queue for a match".to_string()
        )),
        "the in-game refusal comes before the game check"
    );
    assert_eq!(
        w.lobbies
            .party_ticket("L", "ann", "h")
            .map_err(|f| f.message),
        Err("lobby L is in game; it cannot queue for a match".to_string())
    );
}
