//! Fuzzes matchmaking (`huddle::core::engine::matchmaking`): queue sets
//! built through the operator's own validation (`ops::config::queue_specs`,
//! so only rule sets a config could hold reach the engine), solo and party
//! tickets with ratings (NaN and huge ones included), latencies, attributes
//! and roles, cancels, watches, status queries, ready-check answers, rating
//! updates, backfills, failed lobbies and ticks on a virtual clock, over
//! two games and eight users. Never reads the engine's private state.
//!
//! Invariants: each request is answered exactly once, operator commands
//! once with request 0, and nothing else is; a user never holds two active
//! tickets of one game (a start that would is refused); every ticket ends
//! exactly once (matched, cancelled, timed out or removed) and is never
//! heard of as searching after; the active count agrees with the model; a
//! cancel of an active ticket is refused only once a match was found; a
//! match fills every team exactly, never splits a party, keeps its spread
//! within the allowed one, plays in a region every ticket measured within
//! the latency cap, agrees on must-match attributes and range attributes,
//! and respects role caps; a backfill never places more than its open
//! slots, in its region; ratings stay valid; and after a long enough wait
//! nothing is left (no ticket, no backfill).

#![no_main]

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use arbitrary::Arbitrary;
use huddle::core::engine::chat::Author;
use huddle::core::engine::matchmaking::matcher::{Attribute, AttributeMatch};
use huddle::core::engine::matchmaking::{
    BackfillRequest, Command, EventKind, FormedMatch, QueueSpec, Queues, Rating, Start, TicketState,
};
use huddle::core::engine::{DomainEvent, Effect, Event, Refusal, Reply, UserId};
use huddle::ops::config::{
    queue_specs, AttributeConfig, AttributeRuleConfig, QueueConfig, WideningConfig,
};
use huddle_fuzz::{assert_answered_once, pick, VirtualClock, MAX_OPS};
use libfuzzer_sys::fuzz_target;

const USERS: [&str; 8] = ["u0", "u1", "u2", "u3", "u4", "u5", "u6", "u7"];
const GAMES: [&str; 2] = ["arena", "chess"];
const MODES: [&str; 3] = ["duo", "solo", "ffa"];
const REGIONS: [&str; 3] = ["eu", "us", "ap"];
const ATTRIBUTES: [&str; 2] = ["map", "level"];
const MAPS: [&str; 2] = ["dust", "inferno"];
const ROLES: [&str; 2] = ["tank", "healer"];
const LOBBIES: [&str; 2] = ["B0", "B1"];
const GARBAGE_TICKETS: [&str; 7] = [
    "",
    "x",
    "17@",
    "@arena",
    "99999@arena",
    "1@chess",
    "abc@arena",
];

#[derive(Arbitrary, Debug, Clone, Copy)]
struct Wide {
    start: u16,
    step: u16,
    every_ms: u16,
    max: u16,
}

#[derive(Arbitrary, Debug, Clone)]
struct QueueCfg {
    game: u8,
    mode: u8,
    teams: u8,
    team_size: u8,
    regions: u8,
    spread: Wide,
    latency: Wide,
    timeout_ds: u16,
    ready_check_ds: Option<u16>,
    attributes: Vec<(u8, Option<u8>)>,
    roles: Vec<(u8, u8)>,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum RatingIn {
    Normal(i16, u16),
    NotANumber,
    Infinite,
    Huge,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum AttrIn {
    Text(u8),
    Number(i8),
    NotANumber,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum TicketRef {
    Known(u8),
    Garbage(u8),
}

#[derive(Arbitrary, Debug)]
enum Op {
    Configure {
        queues: Vec<QueueCfg>,
    },
    Start {
        session: Option<u8>,
        game: u8,
        mode: u8,
        players: Vec<u8>,
        token: Option<RatingIn>,
        latency: Vec<(u8, u16)>,
        attributes: Vec<(u8, AttrIn)>,
        role: Option<u8>,
        party: bool,
    },
    Cancel {
        user: u8,
        ticket: TicketRef,
    },
    Watch {
        session: u8,
        user: u8,
        ticket: TicketRef,
        watch: bool,
    },
    Status {
        user: u8,
        ticket: TicketRef,
    },
    Answer {
        user: u8,
        ticket: TicketRef,
        accept: bool,
    },
    SetRatings {
        game: u8,
        ratings: Vec<(u8, RatingIn)>,
        from_token: bool,
    },
    SessionsGone {
        sessions: Vec<u8>,
    },
    Backfill {
        lobby: u8,
        game: u8,
        mode: u8,
        region: u8,
        rating: RatingIn,
        open: Vec<u8>,
        attributes: Vec<(u8, AttrIn)>,
    },
    CancelBackfill {
        game: u8,
        lobby: u8,
    },
    MatchFailed {
        formed: u8,
        with_backfill: bool,
    },
    Tick {
        ms: u16,
    },
}

#[derive(Arbitrary, Debug)]
struct Input {
    ops: Vec<Op>,
}

#[derive(Debug, Clone)]
struct TicketModel {
    game: String,
    players: Vec<String>,
    latency: Vec<(Arc<str>, u32)>,
    attributes: Vec<(Arc<str>, Attribute)>,
    role: Option<Arc<str>>,
}

#[derive(Debug, Clone)]
struct BackfillModel {
    region: Arc<str>,
    attributes: Vec<(Arc<str>, Attribute)>,
    remaining: Vec<u16>,
}

/// A formed match as the shell would refuse it: game, tickets, backfill lobby.
type Formed = (String, Vec<Arc<str>>, Option<Arc<str>>);

#[derive(Default)]
struct Model {
    specs: HashMap<(String, String), QueueSpec>,
    active: HashMap<Arc<str>, TicketModel>,
    ended: HashSet<Arc<str>>,
    /// Every ticket ever started, in order (for fuzzed references).
    started: Vec<Arc<str>>,
    /// The rules a ticket's ready check began under.
    found_under: HashMap<Arc<str>, QueueSpec>,
    formed: Vec<Formed>,
    match_ids: HashSet<Arc<str>>,
    backfills: HashMap<(String, String), BackfillModel>,
}

impl Model {
    fn busy(&self, game: &str, user: &str) -> bool {
        self.active
            .values()
            .any(|t| t.game == game && t.players.iter().any(|p| p == user))
    }

    fn end(&mut self, request_id: &Arc<str>) {
        assert!(
            self.active.remove(request_id).is_some(),
            "{request_id} ended but was not active"
        );
        assert!(
            self.ended.insert(request_id.clone()),
            "{request_id} ended twice"
        );
    }
}

fn rating(r: RatingIn) -> Rating {
    match r {
        RatingIn::Normal(mu, sigma) => Rating {
            mu: f64::from(mu) * 10.0,
            sigma: f64::from(sigma),
        },
        RatingIn::NotANumber => Rating {
            mu: f64::NAN,
            sigma: 1.0,
        },
        RatingIn::Infinite => Rating {
            mu: f64::INFINITY,
            sigma: 1.0,
        },
        RatingIn::Huge => Rating {
            mu: 1e300,
            sigma: 1e300,
        },
    }
}

fn attribute(a: AttrIn) -> Attribute {
    match a {
        AttrIn::Text(t) => Attribute::Text(Arc::from(pick(&MAPS, t))),
        AttrIn::Number(x) => Attribute::Number(f64::from(x)),
        AttrIn::NotANumber => Attribute::Number(f64::NAN),
    }
}

fn attributes(given: Vec<(u8, AttrIn)>) -> Vec<(Arc<str>, Attribute)> {
    given
        .into_iter()
        .take(3)
        .map(|(n, a)| (Arc::from(pick(&ATTRIBUTES, n)), attribute(a)))
        .collect()
}

/// Mostly a valid widening; the top value of a field makes it invalid (a
/// zero interval, or a cap below the start) so refusals are exercised too.
fn widening(w: Wide) -> WideningConfig {
    let start = f64::from(w.start % 500);
    WideningConfig {
        start,
        step: f64::from(w.step % 200),
        every_ms: if w.every_ms == u16::MAX {
            0
        } else {
            u64::from(w.every_ms % 5_000) + 1
        },
        max: if w.max == u16::MAX {
            start - 1.0
        } else {
            start + f64::from(w.max % 1_000)
        },
    }
}

/// `1 + x % n`, or 0 for the top value (a refusal to exercise).
fn at_least_one(x: u8, n: u8) -> u16 {
    if x == u8::MAX {
        0
    } else {
        u16::from(x % n) + 1
    }
}

fn queue_config(q: QueueCfg) -> QueueConfig {
    QueueConfig {
        game: pick(&GAMES, q.game).into(),
        mode: pick(&MODES, q.mode).into(),
        teams: at_least_one(q.teams, 4),
        team_size: at_least_one(q.team_size, 3),
        regions: REGIONS
            .iter()
            .enumerate()
            .filter(|(i, _)| q.regions & (1 << i) != 0)
            .map(|(_, r)| r.to_string())
            .collect(),
        spread: widening(q.spread),
        latency: widening(q.latency),
        timeout_ms: u64::from(at_least_one((q.timeout_ds % 256) as u8, 200)) * 100,
        ready_check_ms: q
            .ready_check_ds
            .map(|d| u64::from(at_least_one((d % 256) as u8, 200)) * 100),
        attributes: q
            .attributes
            .into_iter()
            .take(3)
            .map(|(n, within)| AttributeConfig {
                name: pick(&ATTRIBUTES, n).into(),
                rule: if within.is_some() {
                    AttributeRuleConfig::Range
                } else {
                    AttributeRuleConfig::Match
                },
                within: within.map_or(0.0, |w| f64::from(w % 20)),
            })
            .collect(),
        roles: q
            .roles
            .into_iter()
            .take(3)
            .map(|(r, cap)| (pick(&ROLES, r).to_string(), at_least_one(cap, 3)))
            .collect::<BTreeMap<_, _>>(),
    }
}

fn ticket_ref(model: &Model, r: TicketRef) -> Arc<str> {
    match r {
        TicketRef::Known(i) if !model.started.is_empty() => pick(&model.started, i),
        TicketRef::Known(i) | TicketRef::Garbage(i) => Arc::from(pick(&GARBAGE_TICKETS, i)),
    }
}

fuzz_target!(|input: Input| {
    let mut clock = VirtualClock::new();
    let mut queues = Queues::new();
    let mut model = Model::default();
    for (rid, op) in (1u64..).zip(input.ops.into_iter().take(MAX_OPS)) {
        let now = clock.now();
        let mut out = Vec::new();
        let mut request = Some(rid);
        match op {
            Op::Configure { queues: cfgs } => {
                request = None;
                let cfgs: Vec<QueueConfig> = cfgs.into_iter().take(3).map(queue_config).collect();
                let Ok(specs) = queue_specs(&cfgs) else {
                    continue;
                };
                queues.handle(now, Command::Configure(specs.clone()), &mut out);
                model.specs = specs
                    .into_iter()
                    .map(|s| ((s.game.to_string(), s.mode.to_string()), s))
                    .collect();
            }
            Op::Start {
                session,
                game,
                mode,
                players,
                token,
                latency,
                attributes: attrs,
                role,
                party,
            } => {
                let game = pick(&GAMES, game);
                let mode = pick(&MODES, mode);
                let mut seen = BTreeSet::new();
                let players: Vec<&str> = players
                    .into_iter()
                    .take(4)
                    .map(|p| pick(&USERS, p))
                    .filter(|p| seen.insert(*p))
                    .collect();
                let busy = players.iter().any(|p| model.busy(game, p));
                let latency: Vec<(Arc<str>, u32)> = latency
                    .into_iter()
                    .take(4)
                    // Mostly a plausible measurement; the top values are absurd.
                    .map(|(r, ms)| {
                        let ms = if ms >= 65_000 {
                            u32::from(ms) * 100 % 20_000
                        } else {
                            u32::from(ms % 300) + 1
                        };
                        (Arc::from(pick(&REGIONS, r)), ms)
                    })
                    .collect();
                let attrs = attributes(attrs);
                let role = role.map(|r| Arc::<str>::from(pick(&ROLES, r)));
                queues.handle(
                    now,
                    Command::Start(Box::new(Start {
                        request_id: rid,
                        session: session.map(|s| u64::from(s % 4) + 1),
                        game: Arc::from(game),
                        mode: Arc::from(mode),
                        players: players.iter().map(|p| author(p)).collect(),
                        token_rating: token.map(rating),
                        latency_ms: latency.clone(),
                        attributes: attrs.clone(),
                        role: role.clone(),
                        party: (party && players.len() > 1).then(|| Arc::from("P1")),
                    })),
                    &mut out,
                );
                let started = out.iter().find_map(|e| match e {
                    Effect::Reply {
                        reply: Reply::Matchmaking(view),
                        ..
                    } => Some(view.clone()),
                    _ => None,
                });
                if let Some(view) = started {
                    assert!(!busy, "a user got a second ticket for {game}");
                    let regions: BTreeSet<&Arc<str>> = latency.iter().map(|(r, _)| r).collect();
                    assert_eq!(
                        regions.len(),
                        latency.len(),
                        "a ticket naming a region twice was accepted: {latency:?}"
                    );
                    assert_eq!(view.state, TicketState::Searching);
                    assert_eq!((&*view.game, &*view.mode), (game, mode));
                    let listed: Vec<&str> = view.players.iter().map(|p| &**p).collect();
                    assert_eq!(listed, players);
                    assert!(
                        !model.active.contains_key(&view.request_id)
                            && !model.ended.contains(&view.request_id)
                    );
                    model.started.push(view.request_id.clone());
                    model.active.insert(
                        view.request_id.clone(),
                        TicketModel {
                            game: game.to_string(),
                            players: players.iter().map(|p| p.to_string()).collect(),
                            latency,
                            attributes: attrs,
                            role,
                        },
                    );
                }
            }
            Op::Cancel { user, ticket } => {
                let user = pick(&USERS, user);
                let ticket = ticket_ref(&model, ticket);
                queues.handle(
                    now,
                    Command::Cancel {
                        request_id: rid,
                        user: UserId::from(user),
                        ticket: ticket.clone(),
                    },
                    &mut out,
                );
                let mine = model
                    .active
                    .get(&ticket)
                    .is_some_and(|t| t.players.iter().any(|p| p == user));
                for e in &out {
                    match e {
                        Effect::Reply {
                            reply: Reply::Matchmaking(view),
                            ..
                        } => {
                            assert!(mine, "{user} cancelled {ticket}, not theirs or not active");
                            assert_eq!(
                                (&view.request_id, view.state),
                                (&ticket, TicketState::Cancelled)
                            );
                        }
                        Effect::Fail { failure, .. } if mine => {
                            assert_eq!(
                                failure.refusal,
                                Refusal::CancelError,
                                "an active ticket's cancel refused"
                            );
                        }
                        _ => {}
                    }
                }
            }
            Op::Watch {
                session,
                user,
                ticket,
                watch,
            } => {
                let user = pick(&USERS, user);
                let ticket = ticket_ref(&model, ticket);
                queues.handle(
                    now,
                    Command::Watch {
                        request_id: rid,
                        session: u64::from(session % 4) + 1,
                        user: UserId::from(user),
                        ticket: ticket.clone(),
                        watch,
                    },
                    &mut out,
                );
                check_view_reply(&out, &ticket, user);
            }
            Op::Status { user, ticket } => {
                let user = pick(&USERS, user);
                let ticket = ticket_ref(&model, ticket);
                queues.handle(
                    now,
                    Command::Status {
                        request_id: rid,
                        user: UserId::from(user),
                        ticket: ticket.clone(),
                    },
                    &mut out,
                );
                check_view_reply(&out, &ticket, user);
            }
            Op::Answer {
                user,
                ticket,
                accept,
            } => {
                let user = pick(&USERS, user);
                let ticket = ticket_ref(&model, ticket);
                queues.handle(
                    now,
                    Command::Answer {
                        request_id: rid,
                        user: UserId::from(user),
                        ticket: ticket.clone(),
                        accept,
                    },
                    &mut out,
                );
                check_view_reply(&out, &ticket, user);
            }
            Op::SetRatings {
                game,
                ratings,
                from_token,
            } => {
                request = Some(0);
                let ratings = ratings
                    .into_iter()
                    .take(4)
                    .map(|(u, r)| (UserId::from(pick(&USERS, u)), rating(r)))
                    .collect();
                queues.handle(
                    now,
                    Command::SetRatings {
                        game: Arc::from(pick(&GAMES, game)),
                        ratings,
                        from_token,
                    },
                    &mut out,
                );
            }
            Op::SessionsGone { sessions } => {
                request = None;
                let sessions = sessions
                    .into_iter()
                    .take(4)
                    .map(|s| u64::from(s % 4) + 1)
                    .collect();
                queues.handle(now, Command::SessionsGone(sessions), &mut out);
            }
            Op::Backfill {
                lobby,
                game,
                mode,
                region,
                rating: r,
                open,
                attributes: attrs,
            } => {
                request = Some(0);
                let game = pick(&GAMES, game);
                let lobby = pick(&LOBBIES, lobby);
                let region: Arc<str> = Arc::from(pick(&REGIONS, region));
                let open: Vec<u16> = open.into_iter().take(5).map(|o| u16::from(o % 4)).collect();
                let attrs = attributes(attrs);
                queues.handle(
                    now,
                    Command::Backfill(Box::new(BackfillRequest {
                        lobby_id: Arc::from(lobby),
                        match_id: Arc::from("m-running"),
                        game: Arc::from(game),
                        mode: Arc::from(pick(&MODES, mode)),
                        region: region.clone(),
                        rating: rating(r).mu,
                        open: open.clone(),
                        attributes: attrs.clone(),
                    })),
                    &mut out,
                );
                if out.iter().any(|e| matches!(e, Effect::Reply { .. })) {
                    model.backfills.insert(
                        (game.to_string(), lobby.to_string()),
                        BackfillModel {
                            region,
                            attributes: attrs,
                            remaining: open,
                        },
                    );
                }
            }
            Op::CancelBackfill { game, lobby } => {
                request = Some(0);
                let key = (
                    pick(&GAMES, game).to_string(),
                    pick(&LOBBIES, lobby).to_string(),
                );
                queues.handle(
                    now,
                    Command::CancelBackfill {
                        game: Arc::from(key.0.as_str()),
                        lobby_id: Arc::from(key.1.as_str()),
                    },
                    &mut out,
                );
                let done = out.iter().any(|e| matches!(e, Effect::Reply { .. }));
                assert_eq!(
                    done,
                    model.backfills.remove(&key).is_some(),
                    "cancel of backfill {key:?}"
                );
            }
            Op::MatchFailed {
                formed,
                with_backfill,
            } => {
                request = None;
                if model.formed.is_empty() {
                    continue;
                }
                let (game, request_ids, backfill_lobby) = pick(&model.formed, formed);
                queues.handle(
                    now,
                    Command::MatchFailed {
                        game: Arc::from(game.as_str()),
                        request_ids,
                        backfill_lobby: backfill_lobby.filter(|_| with_backfill),
                    },
                    &mut out,
                );
            }
            Op::Tick { ms } => {
                request = None;
                clock.advance_ms(u64::from(ms));
                queues.tick(clock.now(), &mut out);
            }
        }
        assert_answered_once(&out, request, |_| None);
        settle(&mut model, &out);
        check_state(&queues, &model);
    }

    // Long enough: every ready check and ticket times out, backfills too.
    for _ in 0..4 {
        let mut out = Vec::new();
        clock.advance_ms(70_000);
        queues.tick(clock.now(), &mut out);
        settle(&mut model, &out);
        check_state(&queues, &model);
    }
    assert!(
        model.active.is_empty() && queues.is_empty(),
        "tickets dangle: {:?}",
        model.active
    );
    assert!(!queues.active(), "a backfill dangles");
});

fn author(id: &str) -> Author {
    Author {
        id: UserId::from(id),
        username: Arc::from(id),
        display_name: Arc::from(id),
    }
}

/// A ticket view answers for the ticket asked, to one of its players.
fn check_view_reply(out: &[Effect], ticket: &Arc<str>, user: &str) {
    for e in out {
        if let Effect::Reply {
            reply: Reply::Matchmaking(view),
            ..
        } = e
        {
            assert_eq!(&view.request_id, ticket);
            assert!(
                view.players.iter().any(|p| &**p == user),
                "{user} saw {ticket}"
            );
        }
    }
}

fn check_state(queues: &Queues, model: &Model) {
    assert_eq!(
        queues.len(),
        model.active.len(),
        "the engine and the model agree on what is active"
    );
    for game in GAMES {
        let mut seen = HashSet::new();
        for t in model.active.values().filter(|t| t.game == game) {
            for p in &t.players {
                assert!(seen.insert(p.clone()), "{p} in two tickets of {game}");
            }
        }
        for u in USERS {
            assert!(queues.rating(game, u).valid(), "rating of {u} for {game}");
        }
    }
}

/// Follows tickets through the effects, in order, checking each match.
fn settle(model: &mut Model, out: &[Effect]) {
    for e in out {
        match e {
            Effect::MatchFormed(m) => {
                check_match(model, m);
                let mut ids: Vec<Arc<str>> =
                    m.players.iter().map(|p| p.request_id.clone()).collect();
                ids.dedup();
                for id in &ids {
                    model.end(id);
                    model.found_under.remove(id);
                }
                model
                    .formed
                    .push((m.game.to_string(), ids, m.backfill_lobby.clone()));
            }
            Effect::ToUsers {
                event: Event::Matchmaking(ev),
                ..
            }
            | Effect::Deliver {
                event: Event::Matchmaking(ev),
                ..
            } => match ev.kind {
                EventKind::Cancelled | EventKind::TimedOut | EventKind::Removed => {
                    model.end(&ev.request_id);
                    model.found_under.remove(&ev.request_id);
                }
                EventKind::Found => {
                    let t = model
                        .active
                        .get(&ev.request_id)
                        .expect("a found ticket is active");
                    let spec = model
                        .specs
                        .iter()
                        .find(|((g, _), s)| {
                            *g == t.game && Some(&*s.mode) == ev.ticket.as_ref().map(|v| &*v.mode)
                        })
                        .map(|(_, s)| s.clone())
                        .expect("found in a configured queue");
                    model.found_under.insert(ev.request_id.clone(), spec);
                }
                EventKind::Status
                | EventKind::Requeued
                | EventKind::Started
                | EventKind::Matched => {
                    assert!(
                        model.active.contains_key(&ev.request_id),
                        "{:?} for inactive {}",
                        ev.kind,
                        ev.request_id
                    );
                    if ev.kind == EventKind::Requeued {
                        model.found_under.remove(&ev.request_id);
                    }
                }
            },
            Effect::Domain(DomainEvent::MatchmakingBackfillExpired { lobby_id, game }) => {
                model
                    .backfills
                    .remove(&(game.to_string(), lobby_id.to_string()));
            }
            _ => {}
        }
    }
}

fn check_match(model: &mut Model, m: &FormedMatch) {
    let mut teams_of: HashMap<&Arc<str>, BTreeSet<u8>> = HashMap::new();
    let mut players_of: HashMap<&Arc<str>, BTreeSet<&str>> = HashMap::new();
    let mut users = HashSet::new();
    for p in &m.players {
        teams_of.entry(&p.request_id).or_default().insert(p.team);
        players_of
            .entry(&p.request_id)
            .or_default()
            .insert(&p.author.id);
        assert!(
            users.insert(&p.author.id),
            "{} twice in one match",
            p.author.id
        );
    }
    // Parties stay whole, on one team.
    for (id, teams) in &teams_of {
        let t = model
            .active
            .get(*id)
            .unwrap_or_else(|| panic!("{id} matched but not active"));
        assert_eq!(t.game, *m.game);
        assert_eq!(teams.len(), 1, "{id} split across teams");
        let want: BTreeSet<&str> = t.players.iter().map(|p| p.as_str()).collect();
        assert_eq!(players_of[id], want, "{id}'s party");
        let (_, ms) = t
            .latency
            .iter()
            .find(|(r, _)| *r == m.region)
            .unwrap_or_else(|| panic!("{id} never measured {}", m.region));
        let _ = ms;
    }
    if let Some(lobby) = &m.backfill_lobby {
        let key = (m.game.to_string(), lobby.to_string());
        let b = model
            .backfills
            .get_mut(&key)
            .unwrap_or_else(|| panic!("a backfill into {key:?} that is not open"));
        assert_eq!(m.region, b.region, "backfilled in another region");
        assert_eq!(usize::from(m.teams), b.remaining.len());
        for p in &m.players {
            let slot = b
                .remaining
                .get_mut(usize::from(p.team))
                .expect("a team of the match");
            assert!(
                *slot > 0,
                "more placed in team {} of {lobby} than it had open",
                p.team
            );
            *slot -= 1;
        }
        let texts: Vec<(Arc<str>, Arc<str>)> = b
            .attributes
            .iter()
            .filter_map(|(n, a)| match a {
                Attribute::Text(t) => Some((n.clone(), t.clone())),
                Attribute::Number(_) => None,
            })
            .collect();
        let spec = model
            .specs
            .iter()
            .find(|((g, md), _)| *g == *m.game && *md == *m.mode)
            .map(|(_, s)| s.clone());
        if let Some(spec) = spec {
            for rule in spec
                .rules
                .attributes
                .iter()
                .filter(|r| r.rule == AttributeMatch::Equal)
            {
                let want = texts.iter().find(|(n, _)| *n == rule.name).map(|(_, t)| t);
                for id in teams_of.keys() {
                    let have = text_of(&model.active[*id].attributes, &rule.name);
                    assert_eq!(
                        have.as_ref(),
                        want,
                        "{id} backfilled with another {}",
                        rule.name
                    );
                }
            }
        }
        if b.remaining.iter().all(|&o| o == 0) {
            model.backfills.remove(&key);
        }
        return;
    }
    assert!(
        model.match_ids.insert(m.match_id.clone()),
        "match id {} twice",
        m.match_id
    );
    let first = teams_of
        .keys()
        .next()
        .copied()
        .expect("a match has players");
    let spec = model
        .found_under
        .get(first)
        .cloned()
        .or_else(|| {
            model
                .specs
                .get(&(m.game.to_string(), m.mode.to_string()))
                .cloned()
        })
        .expect("a match of a configured queue");
    let rules = &spec.rules;
    assert_eq!(m.teams, rules.teams, "team count");
    for team in 0..rules.teams {
        let size = m
            .players
            .iter()
            .filter(|p| u16::from(p.team) == team)
            .count();
        assert_eq!(
            size,
            usize::from(rules.team_size),
            "team {team} not filled exactly"
        );
    }
    assert!(m.players.iter().all(|p| u16::from(p.team) < rules.teams));
    assert!(
        m.spread <= m.allowed_spread,
        "spread {} over {}",
        m.spread,
        m.allowed_spread
    );
    assert!(rules.regions.contains(&m.region), "played in {}", m.region);
    for id in teams_of.keys() {
        let t = &model.active[*id];
        let (_, ms) = t
            .latency
            .iter()
            .find(|(r, _)| *r == m.region)
            .expect("checked above");
        assert!(
            f64::from(*ms) <= rules.latency.max,
            "{id} at {ms} ms to {}",
            m.region
        );
    }
    for rule in &rules.attributes {
        match rule.rule {
            AttributeMatch::Equal => {
                let values: BTreeSet<Option<Arc<str>>> = teams_of
                    .keys()
                    .map(|id| text_of(&model.active[*id].attributes, &rule.name))
                    .collect();
                assert_eq!(
                    values.len(),
                    1,
                    "{} differs within a match: {values:?}",
                    rule.name
                );
            }
            AttributeMatch::Within(w) => {
                let values: Vec<f64> = teams_of
                    .keys()
                    .filter_map(|id| number_of(&model.active[*id].attributes, &rule.name))
                    .collect();
                let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
                let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                assert!(
                    values.is_empty() || hi - lo <= w,
                    "{} spans {lo}..{hi}, over {w}",
                    rule.name
                );
            }
        }
    }
    for (role, cap) in &rules.roles {
        for team in 0..rules.teams {
            let holding = teams_of
                .iter()
                .filter(|(_, teams)| teams.contains(&(team as u8)))
                .filter(|(id, _)| model.active[**id].role.as_ref() == Some(role))
                .count();
            assert!(
                holding <= usize::from(*cap),
                "team {team} holds {holding} {role}s, cap {cap}"
            );
        }
    }
}

fn text_of(attrs: &[(Arc<str>, Attribute)], name: &str) -> Option<Arc<str>> {
    attrs
        .iter()
        .find(|(n, _)| &**n == name)
        .and_then(|(_, a)| match a {
            Attribute::Text(t) => Some(t.clone()),
            Attribute::Number(_) => None,
        })
}

fn number_of(attrs: &[(Arc<str>, Attribute)], name: &str) -> Option<f64> {
    attrs
        .iter()
        .find(|(n, _)| &**n == name)
        .and_then(|(_, a)| match a {
            Attribute::Number(x) => Some(*x),
            Attribute::Text(_) => None,
        })
}
