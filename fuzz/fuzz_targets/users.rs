//! Fuzzes the user directory (`huddle::core::engine::users`): attaches,
//! resumes, detaches, echoes, lookups, status changes and follows over four
//! users, on a virtual clock whose steps fire `handle_timeout`. Session ids
//! are fresh on every attach, as the shell hands them out. Never reaches
//! into the engine's private state: it is checked against a model built
//! from the engine's documented rules.
//!
//! Invariants: every request is answered exactly once and nothing else is;
//! a resume is accepted exactly when the session is still known, belongs to
//! the user and the token matches; a session ends only when its connection
//! ended for good, its resume window passed, or it was the oldest of too
//! many waiting sessions; online and offline alternate per user and follow
//! the first attach and the last session's end; presence rows, the session
//! count, `sessions_of` and `poll_timeout` agree with the model; every
//! visible status change goes to followers once, and invisible ones never.

#![no_main]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use arbitrary::Arbitrary;
use huddle::core::engine::users::{Command, Users, MAX_DETACHED_PER_USER, MAX_STATUS_TEXT};
use huddle::core::engine::{
    DomainEvent, Effect, Event, Reply, ResumeRefusal, SessionId, Status, UserId,
};
use huddle_fuzz::{assert_answered_once, pick, FuzzText, VirtualClock, MAX_OPS};
use libfuzzer_sys::fuzz_target;

const USERS: [&str; 4] = ["alice", "bob", "carol", "dave"];
const RESUME_WINDOW_MS: u64 = 30_000;
/// Follower sessions live on other shards: ids far from this shard's.
const FOLLOWER_BASE: SessionId = 1_000;
const STATUSES: [Status; 5] = [
    Status::Offline,
    Status::Online,
    Status::Away,
    Status::Busy,
    Status::InGame,
];

#[derive(Arbitrary, Debug)]
enum Op {
    Attach {
        user: u8,
        token: u8,
    },
    Resume {
        session: u8,
        user: u8,
        token: u8,
        next_token: u8,
    },
    Detach {
        session: u8,
        resumable: bool,
    },
    Echo {
        from: u8,
        to: Option<u8>,
        payload: Vec<u8>,
        volatile: bool,
    },
    Lookup {
        users: Vec<u8>,
    },
    SetStatus {
        user: u8,
        status: u8,
        text: Option<FuzzText>,
        invisible: bool,
    },
    Follow {
        follower: u8,
        targets: Vec<u8>,
        follow: bool,
    },
    FollowersGone {
        followers: Vec<u8>,
    },
    Advance {
        ms: u16,
    },
}

#[derive(Debug, Clone)]
struct SessionModel {
    user: UserId,
    token: u128,
    /// Detached and resumable since this many ms of virtual time.
    detached_at: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Chosen {
    status: Status,
    text: Option<Arc<str>>,
    invisible: bool,
}

impl Default for Chosen {
    fn default() -> Self {
        Self {
            status: Status::Online,
            text: None,
            invisible: false,
        }
    }
}

#[derive(Default)]
struct Model {
    /// Live sessions (attached or awaiting resume).
    sessions: BTreeMap<SessionId, SessionModel>,
    /// Every session id handed out, in order (ended ones stay).
    ever: Vec<SessionId>,
    chosen: HashMap<UserId, Chosen>,
    followers: HashMap<UserId, BTreeSet<SessionId>>,
    online: BTreeSet<UserId>,
}

impl Model {
    fn live_of(&self, user: &str) -> BTreeSet<SessionId> {
        self.sessions
            .iter()
            .filter(|(_, s)| &*s.user == user)
            .map(|(id, _)| *id)
            .collect()
    }

    /// How many of `user`'s sessions wait for a resume, and the oldest
    /// (earliest deadline, then lowest id).
    fn waiting(&self, user: &str) -> (usize, Option<SessionId>) {
        let waiting = self
            .sessions
            .iter()
            .filter(|(_, s)| &*s.user == user)
            .filter_map(|(id, s)| s.detached_at.map(|at| (at, *id)));
        let (mut count, mut oldest) = (0, None);
        for w in waiting {
            count += 1;
            oldest = Some(oldest.map_or(w, |o: (u64, SessionId)| o.min(w)));
        }
        (count, oldest.map(|(_, id)| id))
    }

    fn live_count(&self, user: &str) -> usize {
        self.sessions.values().filter(|s| &*s.user == user).count()
    }

    /// What others see of `user`.
    fn visible(&self, user: &str) -> (Status, Option<Arc<str>>) {
        if self.live_count(user) == 0 {
            return (Status::Offline, None);
        }
        match self.chosen.get(user) {
            Some(c) if c.invisible => (Status::Offline, None),
            Some(c) => (c.status, c.text.clone()),
            None => (Status::Online, None),
        }
    }
}

#[derive(Arbitrary, Debug)]
struct Input {
    ops: Vec<Op>,
}

fn uid(i: u8) -> UserId {
    UserId::from(pick(&USERS, i))
}

fuzz_target!(|input: Input| {
    let mut clock = VirtualClock::new();
    let mut users = Users::new(0, Duration::from_millis(RESUME_WINDOW_MS));
    let mut model = Model::default();
    let mut next_session: SessionId = 1;
    let mut next_request = 1u64;

    for op in input.ops.into_iter().take(MAX_OPS) {
        let before: HashMap<UserId, (Status, Option<Arc<str>>)> = USERS
            .iter()
            .map(|u| (UserId::from(*u), model.visible(u)))
            .collect();
        let mut out = Vec::new();
        let mut request = None;
        // Sessions this op may end, and whether the resume window counts.
        let mut may_end: BTreeSet<SessionId> = BTreeSet::new();
        let mut resumed: Option<(SessionId, Option<ResumeRefusal>)> = None;
        let mut timed_out = false;
        match op {
            Op::Attach { user, token } => {
                let session = next_session;
                next_session += 1;
                let user = uid(user);
                // Past the cap, the oldest waiting session of the user ends.
                if let (MAX_DETACHED_PER_USER.., Some(oldest)) = model.waiting(&user) {
                    may_end.insert(oldest);
                }
                users.handle(
                    clock.now(),
                    Command::Attach {
                        session,
                        user: user.clone(),
                        resume_token: u128::from(token),
                    },
                    &mut out,
                );
                model.ever.push(session);
                model.sessions.insert(
                    session,
                    SessionModel {
                        user,
                        token: u128::from(token),
                        detached_at: None,
                    },
                );
            }
            Op::Resume {
                session,
                user,
                token,
                next_token,
            } => {
                let session = pick_session(&model, session);
                let user = uid(user);
                let expected = match model.sessions.get(&session) {
                    None => Some(ResumeRefusal::UnknownSession),
                    Some(s) if s.user != user => Some(ResumeRefusal::WrongUser),
                    Some(s) if s.token != u128::from(token) => Some(ResumeRefusal::WrongToken),
                    Some(_) => None,
                };
                users.handle(
                    clock.now(),
                    Command::Resume {
                        session,
                        user,
                        resume_token: u128::from(token),
                        next_token: u128::from(next_token),
                    },
                    &mut out,
                );
                if expected.is_none() {
                    let s = model.sessions.get_mut(&session).expect("checked above");
                    s.token = u128::from(next_token);
                    s.detached_at = None;
                }
                resumed = Some((session, expected));
            }
            Op::Detach { session, resumable } => {
                let session = pick_session(&model, session);
                users.handle(
                    clock.now(),
                    Command::Detach { session, resumable },
                    &mut out,
                );
                if let Some(s) = model.sessions.get_mut(&session) {
                    if !resumable {
                        may_end.insert(session);
                    } else if s.detached_at.is_none() {
                        s.detached_at = Some(clock.elapsed_ms());
                        let user = s.user.clone();
                        // Past the cap, the oldest waiting session ends.
                        if let (waiting, Some(oldest)) = model.waiting(&user) {
                            if waiting > MAX_DETACHED_PER_USER {
                                may_end.insert(oldest);
                            }
                        }
                    }
                }
            }
            Op::Echo {
                from,
                to,
                mut payload,
                volatile,
            } => {
                payload.truncate(64);
                let rid = next_request;
                next_request += 1;
                request = Some(rid);
                let to = to.map(uid);
                users.handle(
                    clock.now(),
                    Command::Echo {
                        request_id: rid,
                        from_user: uid(from),
                        to_user: to.clone(),
                        payload: payload.clone(),
                        volatile,
                    },
                    &mut out,
                );
                let reach = to.as_deref().map(|t| model.live_of(t)).unwrap_or_default();
                check_echo(&out, rid, &payload, &reach, volatile);
            }
            Op::Lookup { users: asked } => {
                let asked: Vec<UserId> = asked.into_iter().take(8).map(uid).collect();
                users.handle(
                    clock.now(),
                    Command::Lookup {
                        user_ids: asked.clone(),
                    },
                    &mut out,
                );
                check_presence(&model, &out, &asked);
            }
            Op::SetStatus {
                user,
                status,
                text,
                invisible,
            } => {
                let rid = next_request;
                next_request += 1;
                request = Some(rid);
                let user = uid(user);
                let status = pick(&STATUSES, status);
                let text = text.map(|t| t.render(&["ranked", "afk", ""], MAX_STATUS_TEXT + 4));
                let shown = text.clone().filter(|t| !t.is_empty());
                let refused = status == Status::Offline
                    || shown
                        .as_deref()
                        .is_some_and(|t| t.chars().count() > MAX_STATUS_TEXT);
                users.handle(
                    clock.now(),
                    Command::SetStatus {
                        request_id: rid,
                        user: user.clone(),
                        status,
                        text,
                        invisible,
                    },
                    &mut out,
                );
                let replied = out.iter().find_map(|e| match e {
                    Effect::Reply {
                        reply:
                            Reply::StatusSet {
                                status,
                                text,
                                invisible,
                            },
                        ..
                    } => Some(Chosen {
                        status: *status,
                        text: text.clone(),
                        invisible: *invisible,
                    }),
                    _ => None,
                });
                match replied {
                    Some(chosen) => {
                        assert!(!refused, "accepted a status it must refuse: {out:?}");
                        assert_eq!(chosen.text.as_deref(), shown.as_deref());
                        assert_eq!((chosen.status, chosen.invisible), (status, invisible));
                        model.chosen.insert(user, chosen);
                    }
                    None => assert!(refused, "refused a valid status: {out:?}"),
                }
            }
            Op::Follow {
                follower,
                targets,
                follow,
            } => {
                let session = FOLLOWER_BASE + u64::from(follower % 4);
                let targets: Vec<UserId> = targets.into_iter().take(8).map(uid).collect();
                users.handle(
                    clock.now(),
                    Command::Follow {
                        session,
                        targets: targets.clone(),
                        follow,
                    },
                    &mut out,
                );
                for t in &targets {
                    let set = model.followers.entry(t.clone()).or_default();
                    if follow {
                        set.insert(session);
                    } else {
                        set.remove(&session);
                    }
                }
                let asked = if follow { targets } else { Vec::new() };
                check_presence(&model, &out, &asked);
            }
            Op::FollowersGone { followers } => {
                let gone: Vec<SessionId> = followers
                    .into_iter()
                    .take(8)
                    .map(|f| FOLLOWER_BASE + u64::from(f % 4))
                    .collect();
                users.handle(
                    clock.now(),
                    Command::FollowersGone {
                        sessions: gone.clone(),
                    },
                    &mut out,
                );
                for set in model.followers.values_mut() {
                    for s in &gone {
                        set.remove(s);
                    }
                }
            }
            Op::Advance { ms } => {
                clock.advance_ms(u64::from(ms));
                users.handle_timeout(clock.now(), &mut out);
                timed_out = true;
            }
        }

        // Expired sessions may end at a timeout (and must have, see below).
        if timed_out {
            for (id, s) in &model.sessions {
                if s.detached_at
                    .is_some_and(|at| at + RESUME_WINDOW_MS <= clock.elapsed_ms())
                {
                    may_end.insert(*id);
                }
            }
        }

        assert_answered_once(&out, request, |_| None);

        // Resumes are answered once, as the rules say.
        let resume_answers: Vec<(SessionId, Option<ResumeRefusal>)> = out
            .iter()
            .filter_map(|e| match e {
                Effect::ResumeAccepted { session } => Some((*session, None)),
                Effect::ResumeRefused { session, reason } => Some((*session, Some(*reason))),
                _ => None,
            })
            .collect();
        assert_eq!(resume_answers, resumed.into_iter().collect::<Vec<_>>());

        // Sessions end only when allowed, once each.
        for e in &out {
            if let Effect::SessionEnded { session } = e {
                assert!(
                    may_end.contains(session),
                    "session {session} ended unasked: {out:?}"
                );
                assert!(
                    model.sessions.remove(session).is_some(),
                    "session {session} ended twice or was never known"
                );
            }
        }
        if timed_out {
            for (id, s) in &model.sessions {
                assert!(
                    s.detached_at
                        .is_none_or(|at| at + RESUME_WINDOW_MS > clock.elapsed_ms()),
                    "session {id} outlived its resume window"
                );
            }
            if let Some(next) = users.poll_timeout() {
                assert!(next > clock.now().mono, "a timeout due now was left");
            }
        }

        // Online and offline alternate and follow the sessions.
        for e in &out {
            match e {
                Effect::Domain(DomainEvent::UserOnline { user }) => {
                    assert!(model.online.insert(user.clone()), "{user} online twice");
                }
                Effect::Domain(DomainEvent::UserOffline { user }) => {
                    assert!(model.online.remove(user), "{user} offline twice");
                }
                _ => {}
            }
        }
        for u in USERS {
            let live = model.live_of(u);
            assert_eq!(
                model.online.contains(u),
                !live.is_empty(),
                "{u} online state"
            );
            let of: BTreeSet<SessionId> = users.sessions_of(u).iter().copied().collect();
            assert_eq!(of, live, "sessions of {u}");
            let waiting = live
                .iter()
                .filter(|s| model.sessions[s].detached_at.is_some())
                .count();
            assert!(waiting <= MAX_DETACHED_PER_USER, "{u}: {waiting} waiting");
        }
        assert_eq!(users.session_count(), model.sessions.len());

        // Every visible change reaches the followers once; nothing else does.
        for u in USERS {
            let after = model.visible(u);
            let events: Vec<&Effect> = out
                .iter()
                .filter(|e| matches!(e, Effect::ToFriends { user, .. } if &**user == u))
                .collect();
            if after == before[u] {
                assert!(events.is_empty(), "{u}: no visible change, yet {events:?}");
                continue;
            }
            let [Effect::ToFriends {
                event: Event::UserStatus { status, text, .. },
                followers,
                ..
            }] = events[..]
            else {
                panic!(
                    "{u}: visible change {:?} -> {after:?} told {events:?}",
                    before[u]
                );
            };
            assert_eq!((*status, text.clone()), after);
            let told: BTreeSet<SessionId> = followers.iter().copied().collect();
            let want = model.followers.get(u).cloned().unwrap_or_default();
            assert_eq!(told, want, "{u}'s followers");
        }
    }
});

/// A session id from the ones handed out so far, or one never handed out.
fn pick_session(model: &Model, i: u8) -> SessionId {
    if model.ever.is_empty() || i == u8::MAX {
        return 9_999;
    }
    model.ever[usize::from(i) % model.ever.len()]
}

fn check_echo(
    out: &[Effect],
    rid: u64,
    payload: &[u8],
    reach: &BTreeSet<SessionId>,
    volatile: bool,
) {
    let delivered = out.iter().find_map(|e| match e {
        Effect::Deliver {
            sessions,
            event: Event::Echo { payload: p, .. },
            reliable,
        } => {
            assert_eq!(p, payload);
            assert_eq!(*reliable, !volatile);
            Some(sessions.iter().copied().collect::<BTreeSet<_>>())
        }
        _ => None,
    });
    assert_eq!(&delivered.unwrap_or_default(), reach, "echo reach");
    let reply = out.iter().find_map(|e| match e {
        Effect::Reply {
            request_id,
            reply:
                Reply::Echo {
                    payload: p,
                    shard,
                    delivered,
                },
        } if *request_id == rid => Some((p.clone(), *shard, *delivered)),
        _ => None,
    });
    assert_eq!(reply, Some((payload.to_vec(), 0, reach.len() as u32)));
}

/// One presence row per user asked, in order, as the model sees them.
fn check_presence(model: &Model, out: &[Effect], asked: &[UserId]) {
    let rows: Vec<_> = out
        .iter()
        .filter_map(|e| match e {
            Effect::Presence(rows) => Some(rows),
            _ => None,
        })
        .collect();
    let [rows] = rows[..] else {
        panic!("one presence answer, got {out:?}");
    };
    assert_eq!(rows.len(), asked.len());
    for (row, user) in rows.iter().zip(asked) {
        assert_eq!(&row.user_id, user);
        let (status, text) = model.visible(user);
        assert_eq!((row.status, row.text.clone()), (status, text), "{user}");
        let live = model.live_count(user) as u32;
        let connections = if status == Status::Offline { 0 } else { live };
        assert_eq!(row.connections, connections, "{user}'s connections");
    }
}
