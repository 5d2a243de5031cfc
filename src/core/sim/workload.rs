//! A ready-made client for the simulation and a random workload over it:
//! the requests a session shell would send (friend operations, lobbies,
//! matchmaking) as [`ShardMsg`]s, a [`Step`] language for random
//! operation sequences of many users, and the cross-shard invariants every
//! sequence must keep ([`Workload::check`]). The property test
//! (`tests/simulation.rs`) and the `simulation` fuzz target both drive it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use huddle_schema::wire::{Body, ErrorCode};

use super::{settings, Delivery, Sim};
use crate::core::engine::chat::{Actor, Author};
use crate::core::engine::lobbies::{self, LobbySpec, Visibility};
use crate::core::engine::matchmaking::matcher::{QueueRules, Widening};
use crate::core::engine::matchmaking::{self, QueueSpec, Start};
use crate::core::engine::social::{Op, OpCommand, Relation};
use crate::core::engine::{DomainEvent, SessionId, UserId};
use crate::core::shard::{lobby_of, FriendStage, LobbyMember, PartyStart, ShardMsg};

/// The body and request id of every frame.
pub fn bodies(frames: &[Bytes]) -> Vec<(Body, u64)> {
    frames
        .iter()
        .map(|b| {
            let f = huddle_schema::verify_frame(b, 1 << 20).expect("the core encodes valid frames");
            (f.body_type(), f.request_id())
        })
        .collect()
}

pub fn error_code(frames: &[Bytes], request_id: u64) -> Option<ErrorCode> {
    frames.iter().find_map(|b| {
        let f = huddle_schema::verify_frame(b, 1 << 20).ok()?;
        let e = f.body_as_error()?;
        (f.request_id() == request_id).then(|| e.code())
    })
}

pub fn has(frames: &[Bytes], body: Body) -> bool {
    bodies(frames).iter().any(|(b, _)| *b == body)
}

pub fn author(id: &str) -> Author {
    Author {
        id: UserId::from(id),
        username: Arc::from(id),
        display_name: Arc::from(id),
    }
}

pub fn friend(sim: &mut Sim, session: SessionId, request_id: u64, target: &str, op: Op) {
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

pub fn create_lobby(
    sim: &mut Sim,
    session: SessionId,
    request_id: u64,
    lobby: &str,
    vis: Visibility,
) {
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

pub fn lobby_cmd(sim: &mut Sim, session: SessionId, cmd: lobbies::Command, joins: bool) {
    let user = sim.user(session).unwrap();
    let lobby_id = lobby_of(&cmd).clone();
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

pub fn relation(sim: &Sim, user: &str, other: &str) -> Relation {
    let shard = sim.shard(sim.keys().of_user(user));
    shard
        .rosters()
        .list(user)
        .into_iter()
        .find(|e| &*e.user_id == other)
        .map_or(Relation::None, |e| e.relation)
}

pub fn unread(sim: &Sim, user: &str) -> u32 {
    sim.shard(sim.keys().of_user(user))
        .notifications()
        .counts(user)
        .1
}

pub fn queue_spec() -> QueueSpec {
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

pub fn configure_queues(sim: &mut Sim) {
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
pub fn queue(sim: &mut Sim, session: SessionId, request_id: u64, party: Option<Arc<str>>) {
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

/// One operation of a random workload, over users `u0..u7`, lobbies
/// `lobby0..lobby3` and the `arena`/`duo` queue.
#[derive(Debug, Clone, Copy)]
pub enum Step {
    Connect(u8),
    /// The user's newest session closes cleanly.
    Disconnect(u8),
    FriendRequest(u8, u8),
    FriendAccept(u8, u8),
    CreateLobby(u8, u8),
    JoinLobby(u8, u8),
    LeaveLobby(u8, u8),
    /// Queue alone, or (host) the user's lobby as a party.
    Queue(u8, bool),
    /// Let this many virtual milliseconds pass.
    Wait(u16),
    /// Let the node settle: every message in flight is handled.
    Settle,
}

/// Users in a workload.
pub const USERS: u8 = 8;
/// Lobbies in a workload.
pub const LOBBIES: u8 = 4;

impl Step {
    /// A step from four bytes (a fuzzer's input), always valid.
    pub fn from_bytes(b: [u8; 4]) -> Step {
        let (u, v) = (b[1] % USERS, b[2] % USERS);
        let l = b[2] % LOBBIES;
        match b[0] % 10 {
            0 => Step::Connect(u),
            1 => Step::Disconnect(u),
            2 => Step::FriendRequest(u, v),
            3 => Step::FriendAccept(u, v),
            4 => Step::CreateLobby(u, l),
            5 => Step::JoinLobby(u, l),
            6 => Step::LeaveLobby(u, l),
            7 => Step::Queue(u, b[3] & 1 == 1),
            8 => Step::Wait(u16::from_le_bytes([b[2], b[3]]) % 3000),
            _ => Step::Settle,
        }
    }
}

/// A simulation of four shards under a random workload.
pub struct Workload {
    pub sim: Sim,
    /// Each user's live sessions, oldest first.
    sessions: HashMap<u8, Vec<SessionId>>,
    request: u64,
}

fn name(u: u8) -> String {
    format!("u{u}")
}

impl Workload {
    /// Four shards, shuffled delivery (up to 3 ms in flight) from `seed`,
    /// the `arena`/`duo` queue configured everywhere.
    pub fn new(seed: u64) -> Self {
        let delivery = Delivery::Shuffled {
            max_delay: Duration::from_millis(3),
        };
        let mut sim = Sim::new(4, settings(), delivery, seed);
        configure_queues(&mut sim);
        Self {
            sim,
            sessions: HashMap::new(),
            request: 0,
        }
    }

    /// Sends what `step` sends (nothing runs until [`Step::Settle`],
    /// [`Step::Wait`] or [`Workload::check`]).
    pub fn apply(&mut self, step: Step) {
        self.request += 1;
        let request = self.request;
        let sim = &mut self.sim;
        let newest = |sessions: &HashMap<u8, Vec<SessionId>>, u: u8| {
            sessions.get(&u).and_then(|v| v.last()).copied()
        };
        match step {
            Step::Connect(u) => {
                let s = sim.connect(&name(u));
                self.sessions.entry(u).or_default().push(s);
            }
            Step::Disconnect(u) => {
                if let Some(s) = self.sessions.get_mut(&u).and_then(|v| v.pop()) {
                    sim.disconnect(s, false);
                }
            }
            Step::FriendRequest(a, b) | Step::FriendAccept(a, b) => {
                let op = if matches!(step, Step::FriendRequest(..)) {
                    Op::Request
                } else {
                    Op::Accept
                };
                if let (Some(s), true) = (newest(&self.sessions, a), a != b) {
                    friend(sim, s, request, &name(b), op);
                }
            }
            Step::CreateLobby(u, l) | Step::JoinLobby(u, l) | Step::LeaveLobby(u, l) => {
                let Some(s) = newest(&self.sessions, u) else {
                    return;
                };
                let lobby = format!("lobby{l}");
                match step {
                    Step::CreateLobby(..) => {
                        create_lobby(sim, s, request, &lobby, Visibility::Public)
                    }
                    Step::JoinLobby(..) => {
                        let cmd = lobbies::Command::Join {
                            request_id: request,
                            lobby_id: Arc::from(lobby.as_str()),
                            user: author(&name(u)),
                            password: None,
                        };
                        lobby_cmd(sim, s, cmd, true);
                    }
                    _ => {
                        let cmd = lobbies::Command::Leave {
                            request_id: request,
                            lobby_id: Arc::from(lobby.as_str()),
                            user: UserId::from(name(u).as_str()),
                        };
                        lobby_cmd(sim, s, cmd, false);
                    }
                }
            }
            Step::Queue(u, party) => {
                let Some(s) = newest(&self.sessions, u) else {
                    return;
                };
                let user = name(u);
                let lobby = sim
                    .shard(sim.keys().of_user(&user))
                    .lobbies_of(&user)
                    .first()
                    .cloned();
                queue(sim, s, request, if party { lobby } else { None });
            }
            Step::Wait(ms) => sim.advance(Duration::from_millis(u64::from(ms))),
            Step::Settle => sim.run(),
        }
    }

    /// Lets the node settle, then checks the invariants: one reply per
    /// request; presence on each user's shard; relations agreeing on both
    /// users' shards and the pair's; each user's lobby index matching the
    /// lobbies' member lists (and one lobby per game); at most one active
    /// ticket per user per game; every notification a domain event raised
    /// there, unread. Returns what broke.
    pub fn check(&mut self) -> Result<(), String> {
        self.sim.run();
        let sim = &mut self.sim;
        let keys = sim.keys();
        for list in self.sessions.values() {
            for s in list {
                let frames = sim.take_frames(*s);
                let mut seen = HashSet::new();
                for (body, request_id) in bodies(&frames) {
                    if request_id != 0 && body != Body::NONE && !seen.insert(request_id) {
                        return Err(format!("session {s}: two replies to request {request_id}"));
                    }
                }
            }
        }
        let sim = &self.sim;
        for u in 0..USERS {
            let user = name(u);
            let home = sim.shard(keys.of_user(&user));
            let live = self.sessions.get(&u).map_or(0, Vec::len);
            let held = home.users().sessions_of(&user).len();
            if held != live {
                return Err(format!("{user}: {held} sessions held, {live} live"));
            }
            let online = home.users().connected_users().any(|x| **x == *user);
            if online != (live > 0) {
                return Err(format!("{user}: online is {online} with {live} sessions"));
            }
            for v in 0..USERS {
                if u == v {
                    continue;
                }
                let other = name(v);
                let mine = relation(sim, &user, &other);
                let theirs = relation(sim, &other, &user);
                let expected = match mine {
                    Relation::Friend => Relation::Friend,
                    Relation::RequestSent => Relation::RequestReceived,
                    Relation::RequestReceived => Relation::RequestSent,
                    Relation::None => Relation::None,
                    Relation::Blocked => theirs,
                };
                if theirs != expected {
                    return Err(format!(
                        "{user}→{other} is {mine:?} but {other}→{user} is {theirs:?}"
                    ));
                }
                let pair = sim
                    .shard(keys.of_pair(&user, &other))
                    .pairs()
                    .relation(&user, &other);
                if pair != mine {
                    return Err(format!("{user}→{other}: roster {mine:?}, pair {pair:?}"));
                }
            }
            let indexed: HashSet<Arc<str>> = home.lobbies_of(&user).into_iter().collect();
            for l in 0..LOBBIES {
                let lobby = format!("lobby{l}");
                let member = sim
                    .shard(keys.of_lobby(&lobby))
                    .lobbies()
                    .snapshot(&lobby)
                    .is_some_and(|s| s.members.iter().any(|m| *m.user.id == *user));
                if member != indexed.contains(lobby.as_str()) {
                    return Err(format!(
                        "{user} in {lobby}: member {member}, index {indexed:?}"
                    ));
                }
            }
            if indexed.len() > 1 {
                return Err(format!(
                    "{user} is in {} lobbies of one game",
                    indexed.len()
                ));
            }
            let tickets = sim
                .shard(keys.of_game("arena"))
                .queues()
                .tickets_of("arena", &user);
            if tickets > 1 {
                return Err(format!("{user} holds {tickets} arena tickets"));
            }
            let raised = sim
                .recorded
                .events
                .iter()
                .filter(|e| match e {
                    DomainEvent::FriendshipRequested { to, .. } => **to == *user,
                    DomainEvent::FriendshipAccepted { requester, .. } => **requester == *user,
                    _ => false,
                })
                .count();
            let unread = unread(sim, &user) as usize;
            if unread != raised {
                return Err(format!(
                    "{user}: {unread} unread notifications, {raised} raised"
                ));
            }
        }
        Ok(())
    }
}
