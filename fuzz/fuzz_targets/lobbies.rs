//! Fuzzes the lobby engine (`huddle::core::engine::lobbies`): creates (by a
//! host or with assigned players), joins with and without passwords,
//! leaves, ready toggles, kicks, updates, host transfers, starts, closes,
//! invitations (approved by the fuzzer the way the shell approves them),
//! snapshots, backfill assignments, presence changes and stale or current
//! supersessions, over five users and three lobby ids (plus malformed
//! ones), with short grace periods and bans on a virtual clock whose steps
//! fire `handle_timeout`. Never reads the engine's private state.
//!
//! Invariants: each request is answered exactly once (a reply, a refusal
//! or an invitation to check), and nothing else is; a refusal comes alone
//! and changes no lobby; every lobby has 1..=max members with unique ids
//! and exactly one host among them; an open or ready lobby is READY exactly
//! when all of at least `min` members are ready; versions never go back,
//! every change bumps them and events never run ahead of them; the
//! membership effects (joined/left, with the version a membership began
//! at) track the members exactly; a kicked user cannot rejoin while
//! banned, an invite-only lobby admits only the invited, a password lobby
//! only the invited or those who know it; non-members never see the game
//! server's address; a disconnected member is gone once their grace ends;
//! `chat_member`, `party`, `list` and `poll_timeout` agree with the
//! snapshots.

#![no_main]

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use arbitrary::Arbitrary;
use huddle::core::engine::chat::Author;
use huddle::core::engine::lobbies::{
    Command, EventKind, ListFilter, Lobbies, LobbyEvent, LobbyLimits, LobbySpec, LobbyUpdate,
    Snapshot, Status, Visibility,
};
use huddle::core::engine::{DomainEvent, Effect, Event, Reply, UserId};
use huddle_fuzz::{
    assert_answered_once, assert_refusal_alone, pick, FuzzText, VirtualClock, MAX_OPS,
};
use libfuzzer_sys::fuzz_target;

const USERS: [&str; 5] = ["u0", "u1", "u2", "u3", "u4"];
const GAMES: [&str; 3] = ["g0", "g1", ""];
const PASSWORDS: [&str; 2] = ["pw", "other"];
const VISIBILITIES: [Visibility; 3] = [
    Visibility::Public,
    Visibility::Private,
    Visibility::InviteOnly,
];
const LIMITS: LobbyLimits = LobbyLimits {
    grace: Duration::from_millis(2_000),
    assigned_grace: Duration::from_millis(5_000),
    kick_ban: Duration::from_millis(3_000),
};

fn lobby_ids() -> Vec<String> {
    vec![
        "L0".into(),
        "L1".into(),
        "L2".into(),
        String::new(),
        "x".repeat(65),
    ]
}

/// The lobbies that can exist (the malformed ids are refused).
const REAL: usize = 3;

fn author(user: &str) -> Author {
    Author {
        id: UserId::from(user),
        username: Arc::from(user),
        display_name: Arc::from(user),
    }
}

fn password(i: u8) -> String {
    if i == u8::MAX {
        "p".repeat(65)
    } else {
        pick(&PASSWORDS, i).to_string()
    }
}

fn settings(n: u8) -> BTreeMap<String, String> {
    if n >= 200 {
        return BTreeMap::from([("big".to_string(), "v".repeat(5_000))]);
    }
    (0..n % 40)
        .map(|i| (format!("k{i}"), "v".to_string()))
        .collect()
}

fn capacity(min: u8, max: u8) -> (u16, u16) {
    let max = if max == u8::MAX {
        300
    } else {
        u16::from(max % 8)
    };
    (u16::from(min % 6), max)
}

#[derive(Arbitrary, Debug)]
enum Op {
    Create {
        lobby: u8,
        host: Option<u8>,
        game: u8,
        min: u8,
        max: u8,
        visibility: u8,
        password: Option<u8>,
        chat: bool,
        settings: u8,
        assigned: Vec<(u8, Option<u8>)>,
    },
    Join {
        lobby: u8,
        user: u8,
        password: Option<u8>,
    },
    Leave {
        lobby: u8,
        user: u8,
    },
    Ready {
        lobby: u8,
        user: u8,
        ready: bool,
    },
    Kick {
        lobby: u8,
        actor: u8,
        target: u8,
        reason: FuzzText,
    },
    Update {
        lobby: u8,
        actor: u8,
        settings: Option<u8>,
        capacity: Option<(u8, u8)>,
        visibility: Option<u8>,
        password: Option<Option<u8>>,
        locked: Option<bool>,
    },
    TransferHost {
        lobby: u8,
        actor: u8,
        target: u8,
    },
    Start {
        lobby: u8,
        actor: Option<u8>,
        connection: Option<FuzzText>,
    },
    Close {
        lobby: u8,
        actor: Option<u8>,
    },
    Invite {
        lobby: u8,
        actor: u8,
        invitee: u8,
    },
    ApproveInvite {
        which: u8,
    },
    Get {
        lobby: u8,
        user: u8,
    },
    Assign {
        lobby: u8,
        players: Vec<(u8, Option<u8>)>,
    },
    Presence {
        lobby: u8,
        user: u8,
        online: bool,
    },
    Superseded {
        lobby: u8,
        user: u8,
        stale: bool,
    },
    Advance {
        ms: u16,
    },
}

#[derive(Arbitrary, Debug)]
struct Input {
    ops: Vec<Op>,
}

#[derive(Default)]
struct Model {
    /// (lobby, user) → the version the membership began at.
    members: HashMap<(String, String), u64>,
    /// (lobby, user) → Unix ms until which a rejoin is refused.
    bans: HashMap<(String, String), i64>,
    invited: HashSet<(String, String)>,
    passwords: HashMap<String, Option<String>>,
    /// (lobby, user) → elapsed ms at which a disconnected member's slot ends.
    deadlines: HashMap<(String, String), u64>,
    versions: HashMap<String, u64>,
    event_versions: HashMap<String, u64>,
    /// Invitations the shell has yet to approve.
    pending_invites: Vec<(Arc<str>, UserId)>,
}

fn snapshots(lobbies: &Lobbies, ids: &[String]) -> Vec<Option<Arc<Snapshot>>> {
    ids.iter().map(|id| lobbies.snapshot(id)).collect()
}

fn is_member(s: &Option<Arc<Snapshot>>, user: &str) -> bool {
    s.as_ref()
        .is_some_and(|s| s.members.iter().any(|m| &*m.user.id == user))
}

fuzz_target!(|input: Input| {
    let ids = lobby_ids();
    let mut clock = VirtualClock::new();
    let mut lobbies = Lobbies::new(LIMITS);
    let mut model = Model::default();
    for (rid, op) in (1u64..).zip(input.ops.into_iter().take(MAX_OPS)) {
        let now = clock.now();
        let before = snapshots(&lobbies, &ids);
        let mut out = Vec::new();
        let mut request = Some(rid);
        // Who asked for a snapshot (non-members never see the address).
        let mut getting: Option<(usize, String)> = None;
        // A successful join of this (lobby, user) must respect the rules.
        let mut joining: Option<(usize, String, Option<String>)> = None;
        let mut timed_out = false;
        let lobby_at = |i: u8| usize::from(i) % ids.len();
        let cmd: Option<Command> = match op {
            Op::Create {
                lobby,
                host,
                game,
                min,
                max,
                visibility,
                password: pw,
                chat,
                settings: n,
                assigned,
            } => {
                let (min, max) = capacity(min, max);
                let spec = LobbySpec {
                    game: pick(&GAMES, game).to_string(),
                    mode: "m".into(),
                    region: "eu".into(),
                    min,
                    max,
                    visibility: pick(&VISIBILITIES, visibility),
                    password: pw.map(password),
                    chat,
                    settings: settings(n),
                };
                Some(Command::Create {
                    request_id: rid,
                    lobby_id: Arc::from(ids[lobby_at(lobby)].as_str()),
                    host: host.map(|h| author(pick(&USERS, h))),
                    spec,
                    assigned: assigned
                        .into_iter()
                        .take(6)
                        .map(|(u, t)| (author(pick(&USERS, u)), t.map(|t| t % 3)))
                        .collect(),
                })
            }
            Op::Join {
                lobby,
                user,
                password: pw,
            } => {
                let user = pick(&USERS, user);
                joining = Some((lobby_at(lobby), user.to_string(), pw.map(password)));
                Some(Command::Join {
                    request_id: rid,
                    lobby_id: Arc::from(ids[lobby_at(lobby)].as_str()),
                    user: author(user),
                    password: pw.map(password),
                })
            }
            Op::Leave { lobby, user } => Some(Command::Leave {
                request_id: rid,
                lobby_id: Arc::from(ids[lobby_at(lobby)].as_str()),
                user: UserId::from(pick(&USERS, user)),
            }),
            Op::Ready { lobby, user, ready } => Some(Command::Ready {
                request_id: rid,
                lobby_id: Arc::from(ids[lobby_at(lobby)].as_str()),
                user: UserId::from(pick(&USERS, user)),
                ready,
            }),
            Op::Kick {
                lobby,
                actor,
                target,
                reason,
            } => Some(Command::Kick {
                request_id: rid,
                lobby_id: Arc::from(ids[lobby_at(lobby)].as_str()),
                actor: UserId::from(pick(&USERS, actor)),
                target: UserId::from(pick(&USERS, target)),
                reason: reason.render(&["afk", ""], 40),
            }),
            Op::Update {
                lobby,
                actor,
                settings: n,
                capacity: cap,
                visibility,
                password: pw,
                locked,
            } => Some(Command::Update {
                request_id: rid,
                lobby_id: Arc::from(ids[lobby_at(lobby)].as_str()),
                actor: UserId::from(pick(&USERS, actor)),
                update: LobbyUpdate {
                    settings: n.map(settings),
                    capacity: cap.map(|(a, b)| capacity(a, b)),
                    visibility: visibility.map(|v| pick(&VISIBILITIES, v)),
                    password: pw.map(|p| p.map(password)),
                    locked,
                },
            }),
            Op::TransferHost {
                lobby,
                actor,
                target,
            } => Some(Command::TransferHost {
                request_id: rid,
                lobby_id: Arc::from(ids[lobby_at(lobby)].as_str()),
                actor: UserId::from(pick(&USERS, actor)),
                target: UserId::from(pick(&USERS, target)),
            }),
            Op::Start {
                lobby,
                actor,
                connection,
            } => Some(Command::Start {
                request_id: rid,
                lobby_id: Arc::from(ids[lobby_at(lobby)].as_str()),
                actor: actor.map(|a| UserId::from(pick(&USERS, a))),
                connection: connection.map(|c| c.render(&["10.0.0.1:7777", ""], 1_100)),
            }),
            Op::Close { lobby, actor } => Some(Command::Close {
                request_id: rid,
                lobby_id: Arc::from(ids[lobby_at(lobby)].as_str()),
                actor: actor.map(|a| UserId::from(pick(&USERS, a))),
            }),
            Op::Invite {
                lobby,
                actor,
                invitee,
            } => Some(Command::Invite {
                request_id: rid,
                lobby_id: Arc::from(ids[lobby_at(lobby)].as_str()),
                actor: UserId::from(pick(&USERS, actor)),
                invitee: UserId::from(pick(&USERS, invitee)),
            }),
            Op::ApproveInvite { which } => {
                if model.pending_invites.is_empty() {
                    continue;
                }
                let i = usize::from(which) % model.pending_invites.len();
                let (lobby_id, invitee) = model.pending_invites.remove(i);
                request = None;
                if lobbies.snapshot(&lobby_id).is_some() {
                    model
                        .invited
                        .insert((lobby_id.to_string(), invitee.to_string()));
                }
                Some(Command::Invited { lobby_id, invitee })
            }
            Op::Get { lobby, user } => {
                let user = pick(&USERS, user);
                getting = Some((lobby_at(lobby), user.to_string()));
                Some(Command::Get {
                    request_id: rid,
                    lobby_id: Arc::from(ids[lobby_at(lobby)].as_str()),
                    user: UserId::from(user),
                })
            }
            Op::Assign { lobby, players } => {
                request = Some(0);
                Some(Command::Assign {
                    lobby_id: Arc::from(ids[lobby_at(lobby)].as_str()),
                    players: players
                        .into_iter()
                        .take(6)
                        .map(|(u, t)| (author(pick(&USERS, u)), t.map(|t| t % 3)))
                        .collect(),
                })
            }
            Op::Presence {
                lobby,
                user,
                online,
            } => {
                request = None;
                Some(Command::Presence {
                    lobby_id: Arc::from(ids[lobby_at(lobby)].as_str()),
                    user: UserId::from(pick(&USERS, user)),
                    online,
                })
            }
            Op::Superseded { lobby, user, stale } => {
                request = None;
                let lobby = ids[lobby_at(lobby)].clone();
                let user = pick(&USERS, user);
                let since = model
                    .members
                    .get(&(lobby.clone(), user.to_string()))
                    .copied()
                    .unwrap_or(0);
                Some(Command::Superseded {
                    lobby_id: Arc::from(lobby.as_str()),
                    user: UserId::from(user),
                    since_version: if stale { since.wrapping_sub(1) } else { since },
                })
            }
            Op::Advance { ms } => {
                clock.advance_ms(u64::from(ms));
                lobbies.handle_timeout(clock.now(), &mut out);
                request = None;
                timed_out = true;
                None
            }
        };
        let spec_password = match &cmd {
            Some(Command::Create { spec, .. }) => Some(spec.password.clone()),
            _ => None,
        };
        let update_password = match &cmd {
            Some(Command::Update {
                lobby_id, update, ..
            }) => update.password.clone().map(|p| (lobby_id.to_string(), p)),
            _ => None,
        };
        if let Some(cmd) = cmd {
            lobbies.handle(clock.now(), cmd, &mut out);
        }
        let now_ms = now.unix_ms;
        let after = snapshots(&lobbies, &ids);

        assert_answered_once(&out, request, |e| match e {
            Effect::LobbyInvite { request_id, .. } => Some(*request_id),
            _ => None,
        });
        assert_refusal_alone(&out);
        let refused = out.iter().any(|e| matches!(e, Effect::Fail { .. }));
        if refused {
            assert_eq!(before, after, "a refusal changed a lobby");
        }

        // Lifetimes: a created lobby starts over.
        for e in &out {
            if let Effect::Domain(DomainEvent::LobbyCreated { lobby_id, .. }) = e {
                let id = lobby_id.to_string();
                model.versions.remove(&id);
                model.event_versions.remove(&id);
                model.bans.retain(|(l, _), _| *l != id);
                model.invited.retain(|(l, _)| *l != id);
                model.passwords.insert(id, spec_password.clone().flatten());
            }
        }
        if let Some((lobby, pw)) = update_password {
            if !refused {
                model.passwords.insert(lobby, pw);
            }
        }

        // Membership effects track the members exactly.
        for e in &out {
            match e {
                Effect::LobbyMembership {
                    user,
                    lobby_id,
                    joined,
                    since_version,
                    ..
                } => {
                    let key = (lobby_id.to_string(), user.to_string());
                    if *joined {
                        assert!(
                            model.members.insert(key, *since_version).is_none(),
                            "joined twice: {e:?}"
                        );
                    } else {
                        let since = model.members.remove(&key);
                        assert_eq!(since, Some(*since_version), "left without joining: {e:?}");
                        model
                            .deadlines
                            .remove(&(lobby_id.to_string(), user.to_string()));
                    }
                }
                Effect::LobbyInvite {
                    lobby_id,
                    invitee,
                    inviter,
                    friends_only,
                    ..
                } => {
                    let i = ids
                        .iter()
                        .position(|id| **id == **lobby_id)
                        .expect("a lobby of the universe");
                    let s = after[i]
                        .as_ref()
                        .expect("an invitation to an existing lobby");
                    assert!(is_member(&after[i], inviter) && !is_member(&after[i], invitee));
                    assert_eq!(*friends_only, s.visibility != Visibility::Public);
                    model
                        .pending_invites
                        .push((lobby_id.clone(), invitee.clone()));
                }
                _ => {}
            }
        }
        for (i, s) in after.iter().enumerate() {
            let want: BTreeSet<&str> = model
                .members
                .keys()
                .filter(|(l, _)| *l == ids[i])
                .map(|(_, u)| u.as_str())
                .collect();
            let have: BTreeSet<&str> = s
                .iter()
                .flat_map(|s| s.members.iter().map(|m| &*m.user.id))
                .collect();
            assert_eq!(have, want, "members of {:?}", ids[i]);
        }

        // Grace periods: disconnected members get a deadline.
        for e in &out {
            let (Effect::ToUsers {
                event: Event::Lobby(ev),
                ..
            }
            | Effect::ToUser {
                event: Event::Lobby(ev),
                ..
            }) = e
            else {
                continue;
            };
            let Some(user) = &ev.user else { continue };
            let key = (ev.lobby_id.to_string(), user.id.to_string());
            match ev.kind {
                EventKind::MemberDisconnected => {
                    model
                        .deadlines
                        .insert(key, clock.elapsed_ms() + LIMITS.grace.as_millis() as u64);
                }
                EventKind::MemberReconnected => {
                    model.deadlines.remove(&key);
                }
                _ => {}
            }
        }
        for (i, s) in after.iter().enumerate() {
            let Some(s) = s else { continue };
            for m in &s.members {
                let key = (ids[i].clone(), m.user.id.to_string());
                if !m.connected && !model.deadlines.contains_key(&key) {
                    // Assigned and never connected: the assigned grace.
                    model.deadlines.insert(
                        key,
                        clock.elapsed_ms() + LIMITS.assigned_grace.as_millis() as u64,
                    );
                }
            }
        }
        if timed_out {
            for (i, s) in after.iter().enumerate() {
                let Some(s) = s else { continue };
                for m in s.members.iter().filter(|m| !m.connected) {
                    let key = (ids[i].clone(), m.user.id.to_string());
                    let due = model.deadlines.get(&key).copied().unwrap_or(u64::MAX);
                    assert!(due > clock.elapsed_ms(), "{key:?} outstayed its grace");
                }
            }
            if let Some(next) = lobbies.poll_timeout() {
                assert!(next > clock.now().mono, "a grace due now was left");
            }
        }

        // Joins respect bans, invitations and passwords.
        if let Some((i, user, given)) = joining {
            let new_member = !is_member(&before[i], &user) && is_member(&after[i], &user);
            if new_member {
                let key = (ids[i].clone(), user.clone());
                let b = before[i].as_ref().expect("joined an existing lobby");
                let banned = model.bans.get(&key).is_some_and(|until| *until > now_ms);
                assert!(!banned, "{user} rejoined {} while banned", ids[i]);
                let invited = model.invited.remove(&key);
                if b.visibility == Visibility::InviteOnly {
                    assert!(invited, "{user} joined invite-only {} uninvited", ids[i]);
                }
                if let Some(Some(pw)) = model.passwords.get(&ids[i]) {
                    assert!(
                        invited || given.as_deref() == Some(pw.as_str()),
                        "{user} joined {} without the password",
                        ids[i]
                    );
                }
                assert!(
                    !b.locked && b.status != Status::InGame && b.members.len() < usize::from(b.max)
                );
            }
        }
        for e in &out {
            if let Effect::ToUser {
                user,
                event: Event::Lobby(ev),
            } = e
            {
                if ev.kind == EventKind::Kicked {
                    model.bans.insert(
                        (ev.lobby_id.to_string(), user.to_string()),
                        now_ms + LIMITS.kick_ban.as_millis() as i64,
                    );
                }
            }
        }

        // Non-members never see the server's address, nor a hidden lobby.
        if let Some((i, user)) = &getting {
            let member = is_member(&before[*i], user);
            for e in &out {
                match e {
                    Effect::Reply {
                        reply: Reply::Lobby(s),
                        ..
                    } => {
                        assert!(
                            member || s.visibility == Visibility::Public,
                            "{user} saw hidden {}",
                            s.id
                        );
                        assert!(
                            member || s.connection.is_none(),
                            "{user} saw the address of {}",
                            s.id
                        );
                        let mut want =
                            (**after[*i].as_ref().expect("a snapshot of an existing lobby"))
                                .clone();
                        if !member {
                            want.connection = None;
                        }
                        assert_eq!(**s, want, "a snapshot shows the lobby's state");
                    }
                    Effect::Fail { .. } => {
                        assert!(after[*i]
                            .as_ref()
                            .is_none_or(|s| !member && s.visibility != Visibility::Public));
                    }
                    other => panic!("a snapshot request produced {other:?}"),
                }
            }
        }

        // Versions and events.
        let mut events: Vec<&LobbyEvent> = Vec::new();
        for e in &out {
            match e {
                Effect::ToUsers {
                    users,
                    event: Event::Lobby(ev),
                } => {
                    let i = ids
                        .iter()
                        .position(|id| **id == *ev.lobby_id)
                        .expect("a lobby of the universe");
                    for u in users {
                        assert!(
                            is_member(&before[i], u) || is_member(&after[i], u),
                            "{u} told about {:?}",
                            ev.lobby_id
                        );
                    }
                    events.push(ev);
                }
                Effect::ToUser {
                    event: Event::Lobby(ev),
                    ..
                } => events.push(ev),
                _ => {}
            }
        }
        for ev in &events {
            let last = model
                .event_versions
                .entry(ev.lobby_id.to_string())
                .or_insert(0);
            assert!(
                ev.version >= *last,
                "event versions went back on {:?}",
                ev.lobby_id
            );
            *last = ev.version;
        }
        for (i, s) in after.iter().enumerate() {
            let Some(s) = s else {
                model.versions.remove(&ids[i]);
                continue;
            };
            let last = model.versions.get(&ids[i]).copied().unwrap_or(0);
            assert!(s.version >= last, "version of {} went back", ids[i]);
            let told = events.iter().any(|ev| *ev.lobby_id == *ids[i]);
            if told && last > 0 {
                assert!(
                    s.version > last,
                    "a change to {} kept version {last}",
                    ids[i]
                );
            }
            for ev in events.iter().filter(|ev| *ev.lobby_id == *ids[i]) {
                assert!(ev.version <= s.version, "an event ran ahead of {}", ids[i]);
            }
            model.versions.insert(ids[i].clone(), s.version);
            check_snapshot(&lobbies, s);
        }
        for s in &after[REAL..] {
            assert!(s.is_none(), "a lobby with a malformed id exists");
        }
        check_listing(&lobbies, &after);
    }
});

/// What holds of every lobby at every moment.
fn check_snapshot(lobbies: &Lobbies, s: &Snapshot) {
    assert!(!s.members.is_empty(), "an empty lobby stays open");
    assert!(s.members.len() <= usize::from(s.max), "over capacity");
    let unique: BTreeSet<&str> = s.members.iter().map(|m| &*m.user.id).collect();
    assert_eq!(unique.len(), s.members.len(), "a member twice");
    let host = s.host.as_ref().expect("a host while not empty");
    assert!(unique.contains(&**host), "the host is not a member");
    let all_ready = s.members.len() >= usize::from(s.min) && s.members.iter().all(|m| m.ready);
    if s.status != Status::InGame {
        assert_eq!(
            s.status == Status::Ready,
            all_ready,
            "status {:?} of {}",
            s.status,
            s.id
        );
    } else {
        assert!(s
            .connection
            .as_ref()
            .is_none_or(|c| c.len() <= huddle::core::engine::lobbies::MAX_CONNECTION));
    }
    for m in &s.members {
        let id = &*m.user.id;
        assert_eq!(
            lobbies.chat_member(&s.id, id),
            Some(s.chat),
            "chat membership of {id}"
        );
        match lobbies.party(&s.id, id) {
            Ok((game, players)) => {
                assert!(
                    host.as_ref() == id && s.status != Status::InGame,
                    "{id} queued {}",
                    s.id
                );
                assert_eq!(game, s.game);
                assert_eq!(&*players[0].id, id, "the host first");
                assert_eq!(players.len(), s.members.len());
            }
            Err(_) => assert!(host.as_ref() != id || s.status == Status::InGame),
        }
    }
}

/// The public listing: exactly the public, unlocked, not-in-game lobbies
/// with room, in id order.
fn check_listing(lobbies: &Lobbies, after: &[Option<Arc<Snapshot>>]) {
    let listed: Vec<Arc<str>> = lobbies
        .list(&ListFilter::default(), "", 100)
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert!(
        listed.windows(2).all(|w| w[0] < w[1]),
        "listing in id order"
    );
    let mut want: Vec<Arc<str>> = after
        .iter()
        .flatten()
        .filter(|s| {
            s.visibility == Visibility::Public
                && !s.locked
                && s.status != Status::InGame
                && s.members.len() < usize::from(s.max)
        })
        .map(|s| s.id.clone())
        .collect();
    want.sort();
    assert_eq!(listed, want, "the public listing");
}
