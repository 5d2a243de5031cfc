//! Tests of the shard's matchmaking (tickets, parties, backfills, ready
//! checks); they never touch I/O.

use super::super::Event;
use super::*;
use crate::core::engine::matchmaking::matcher::Widening;
use proptest::prelude::*;
use std::collections::HashSet;

fn spec(mode: &str, ready_check_ms: Option<u64>, team_size: u16) -> QueueSpec {
    QueueSpec {
        game: Arc::from("arena"),
        mode: Arc::from(mode),
        rules: QueueRules {
            teams: 2,
            team_size,
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
            timeout_ms: 10_000,
            attributes: Vec::new(),
            roles: Vec::new(),
        },
        ready_check_ms,
    }
}

/// Queue time `ms` after a fixed start, as the shell would pass it.
fn at(ms: impl TryInto<u64>) -> Now {
    static BASE: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let base = *BASE.get_or_init(std::time::Instant::now);
    let ms = ms.try_into().unwrap_or(0);
    Now {
        mono: base + std::time::Duration::from_millis(ms),
        unix_ms: 1_700_000_000_000 + ms as i64,
    }
}

fn author(id: &str) -> Author {
    Author {
        id: UserId::from(id),
        username: Arc::from(id),
        display_name: Arc::from(id),
    }
}

fn start(request_id: u64, mode: &str, players: &[String]) -> Command {
    Command::Start(Box::new(Start {
        request_id,
        session: Some(request_id),
        game: Arc::from("arena"),
        mode: Arc::from(mode),
        players: players.iter().map(|p| author(p)).collect(),
        token_rating: None,
        latency_ms: vec![(Arc::from("eu"), 40)],
        attributes: Vec::new(),
        role: None,
        party: None,
    }))
}

fn configured() -> Queues {
    let mut q = Queues::new();
    let mut out = Vec::new();
    q.handle(
        at(0),
        Command::Configure(vec![spec("duo", None, 2), spec("ranked", Some(2_000), 1)]),
        &mut out,
    );
    assert!(out.is_empty());
    q
}

fn started(out: &[Effect]) -> Option<Arc<str>> {
    out.iter().find_map(|e| match e {
        Effect::Reply {
            reply: Reply::Matchmaking(t),
            ..
        } if t.state == TicketState::Searching => Some(t.request_id.clone()),
        _ => None,
    })
}

#[test]
fn a_party_member_cannot_hold_a_second_ticket_and_a_match_makes_a_lobby() {
    let mut q = configured();
    let mut out = Vec::new();
    let party = vec!["a".to_string(), "b".to_string()];
    q.handle(at(0), start(1, "duo", &party), &mut out);
    let ticket = started(&out).expect("queued");
    assert!(
        out.iter().any(
            |e| matches!(e, Effect::ToUsers { users, .. } if users == &vec![UserId::from("b")])
        ),
        "the other member learns the ticket"
    );
    out.clear();
    q.handle(at(0), start(2, "ranked", &["b".to_string()]), &mut out);
    assert!(
        matches!(&out[0], Effect::Fail { failure, .. } if failure.refusal == Refusal::MatchmakingError)
    );
    out.clear();
    q.handle(at(0), start(3, "duo", &["c".into(), "d".into()]), &mut out);
    out.clear();
    q.tick(at(100), &mut out);
    let formed: Vec<&FormedMatch> = out
        .iter()
        .filter_map(|e| match e {
            Effect::MatchFormed(m) => Some(&**m),
            _ => None,
        })
        .collect();
    assert_eq!(formed.len(), 1);
    let teams: HashSet<(String, u8)> = formed[0]
        .players
        .iter()
        .map(|p| (p.author.id.to_string(), p.team))
        .collect();
    let team_of = |u: &str| teams.iter().find(|(p, _)| p == u).unwrap().1;
    assert_eq!(team_of("a"), team_of("b"), "the party stays together");
    assert_ne!(team_of("a"), team_of("c"));
    assert!(q.is_empty());
    out.clear();
    q.handle(
        at(200),
        Command::Cancel {
            request_id: 9,
            user: UserId::from("b"),
            ticket: ticket.clone(),
        },
        &mut out,
    );
    assert!(
        matches!(&out[0], Effect::Fail { failure, .. } if failure.refusal == Refusal::CancelError)
    );
}

fn backfill_cmd(game: &str, lobby: &str) -> Command {
    Command::Backfill(Box::new(BackfillRequest {
        lobby_id: Arc::from(lobby),
        match_id: Arc::from("m1"),
        game: Arc::from(game),
        mode: Arc::from("ranked"),
        region: Arc::from("eu"),
        rating: 1500.0,
        open: vec![1, 0],
        attributes: Vec::new(),
    }))
}

fn failed(out: &[Effect]) -> bool {
    out.iter().any(|e| matches!(e, Effect::Fail { .. }))
}

#[test]
fn backfills_end_cleanly_on_a_wrong_cancel_a_rule_change_and_a_removed_queue() {
    let mut q = configured();
    let mut out = Vec::new();
    q.handle(at(0), backfill_cmd("arena", "L1"), &mut out);
    assert!(!failed(&out));
    out.clear();
    // A cancel naming another game finds nothing and changes nothing.
    let wrong = Command::CancelBackfill {
        game: Arc::from("chess"),
        lobby_id: Arc::from("L1"),
    };
    q.handle(at(0), wrong, &mut out);
    assert!(failed(&out));
    assert_eq!(q.backfills.len(), 1);
    out.clear();
    // New rules for the queue: the backfill ends, and the backend hears it.
    let mut wider = spec("ranked", Some(2_000), 1);
    wider.rules.spread.max = 800.0;
    q.handle(
        at(10),
        Command::Configure(vec![spec("duo", None, 2), wider.clone()]),
        &mut out,
    );
    assert!(out.iter().any(|e| matches!(
        e,
        Effect::Domain(DomainEvent::MatchmakingBackfillExpired { .. })
    )));
    assert!(q.backfills.is_empty());
    out.clear();
    // A backfill in a queue that is then removed ends too.
    q.handle(at(20), backfill_cmd("arena", "L2"), &mut out);
    out.clear();
    q.handle(
        at(30),
        Command::Configure(vec![spec("duo", None, 2)]),
        &mut out,
    );
    assert!(q.backfills.is_empty());
    // An idle shard still ticks while a backfill is open, so it expires.
    q.handle(
        at(40),
        Command::Configure(vec![spec("duo", None, 2), wider]),
        &mut out,
    );
    q.handle(at(50), backfill_cmd("arena", "L3"), &mut out);
    assert!(q.active(), "an open backfill keeps the queue ticking");
    out.clear();
    q.tick(at(50 + 10_000), &mut out);
    assert!(q.backfills.is_empty(), "expired at the queue's timeout");
    assert!(!q.active());
}

#[test]
fn the_accept_that_completes_a_ready_check_answers_matched() {
    let mut q = configured();
    let mut out = Vec::new();
    q.handle(at(0), start(1, "ranked", &["a".into()]), &mut out);
    let ta = started(&out).unwrap();
    out.clear();
    q.handle(at(0), start(2, "ranked", &["b".into()]), &mut out);
    let tb = started(&out).unwrap();
    out.clear();
    q.tick(at(100), &mut out);
    out.clear();
    for (user, ticket, want) in [
        ("a", ta, TicketState::Found),
        ("b", tb, TicketState::Matched),
    ] {
        let answer = Command::Answer {
            request_id: 9,
            user: UserId::from(user),
            ticket,
            accept: true,
        };
        q.handle(at(200), answer, &mut out);
        let state = out.iter().find_map(|e| match e {
            Effect::Reply {
                reply: Reply::Matchmaking(t),
                ..
            } => Some(t.state),
            _ => None,
        });
        assert_eq!(state, Some(want));
        out.clear();
    }
    assert!(q.is_empty() && q.checks.is_empty());
}

#[test]
fn a_queue_removed_during_a_ready_check_ends_its_tickets_and_ratings_need_a_queue() {
    let mut q = configured();
    let mut out = Vec::new();
    q.handle(at(0), start(1, "ranked", &["a".into()]), &mut out);
    q.handle(at(0), start(2, "ranked", &["b".into()]), &mut out);
    q.tick(at(100), &mut out);
    out.clear();
    q.handle(
        at(200),
        Command::Configure(vec![spec("duo", None, 2)]),
        &mut out,
    );
    let removed = out
        .iter()
        .filter(|e| matches!(e, Effect::ToUsers { event: Event::Matchmaking(m), .. } if m.kind == EventKind::Removed))
        .count();
    assert_eq!(removed, 2);
    assert!(q.is_empty() && q.checks.is_empty() && q.by_user.is_empty());
    out.clear();
    let set = Command::SetRatings {
        game: Arc::from("chess"),
        ratings: vec![(
            UserId::from("a"),
            Rating {
                mu: 1.0,
                sigma: 1.0,
            },
        )],
        from_token: false,
    };
    q.handle(at(300), set, &mut out);
    assert!(failed(&out), "no queue for chess: nothing kept");
    assert!(q.ratings.is_empty());
}

#[derive(Debug, Clone)]
enum Step {
    Start { user: u8, party: bool, ranked: bool },
    Cancel { user: u8 },
    Answer { user: u8, accept: bool },
    Tick(u16),
    Reconfigure { wide: bool },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        5 => (0u8..12, any::<bool>(), any::<bool>()).prop_map(|(user, party, ranked)| Step::Start { user, party, ranked }),
        1 => (0u8..12).prop_map(|user| Step::Cancel { user }),
        2 => (0u8..12, any::<bool>()).prop_map(|(user, accept)| Step::Answer { user, accept }),
        3 => (0u16..3_000).prop_map(Step::Tick),
        1 => any::<bool>().prop_map(|wide| Step::Reconfigure { wide }),
    ]
}

proptest! {
    /// Every ticket ends exactly once (matched, cancelled, timed out or
    /// removed), no user is in two active tickets of a game, no player
    /// is in two matches at once, and a cancel after the match leaves
    /// nothing behind.
    #[test]
    fn every_ticket_ends_once_and_nothing_dangles(steps in proptest::collection::vec(step(), 1..120)) {
        let mut q = configured();
        let mut now = 0i64;
        let mut out = Vec::new();
        let mut rid = 0u64;
        // request id -> its players, while active
        let mut active: HashMap<Arc<str>, Vec<String>> = HashMap::new();
        let mut ended: HashSet<Arc<str>> = HashSet::new();
        let mut duo_team = 2;
        let settle = |out: &mut Vec<Effect>, active: &mut HashMap<Arc<str>, Vec<String>>, ended: &mut HashSet<Arc<str>>| -> Result<(), TestCaseError> {
            for e in out.drain(..) {
                let finished: Vec<Arc<str>> = match &e {
                    Effect::MatchFormed(m) => {
                        let mut ids: Vec<Arc<str>> = m.players.iter().map(|p| p.request_id.clone()).collect();
                        ids.dedup();
                        ids
                    }
                    Effect::ToUsers { event: Event::Matchmaking(m), .. } => match m.kind {
                        EventKind::Cancelled | EventKind::TimedOut | EventKind::Removed => vec![m.request_id.clone()],
                        _ => vec![],
                    },
                    _ => vec![],
                };
                for id in finished {
                    prop_assert!(active.remove(&id).is_some(), "{} ended but was not active", id);
                    prop_assert!(ended.insert(id.clone()), "{} ended twice", id);
                }
            }
            Ok(())
        };
        for s in steps {
            match s {
                Step::Start { user, party, ranked } => {
                    rid += 1;
                    let mut players = vec![format!("u{user}")];
                    if party && !ranked {
                        players.push(format!("u{}", (user + 1) % 12));
                    }
                    let busy = players.iter().any(|p| active.values().any(|ps| ps.contains(p)));
                    q.handle(at(now), start(rid, if ranked { "ranked" } else { "duo" }, &players), &mut out);
                    let ticket = started(&out);
                    let fits = players.len() <= if ranked { 1 } else { duo_team };
                    prop_assert_eq!(ticket.is_some(), !busy && fits, "one active ticket per user per game; parties fit a team");
                    if let Some(t) = ticket {
                        active.insert(t, players);
                    }
                }
                Step::Cancel { user } => {
                    let user = format!("u{user}");
                    let Some((ticket, _)) = active.iter().find(|(_, ps)| ps.contains(&user)) else { continue };
                    let ticket = ticket.clone();
                    rid += 1;
                    q.handle(at(now), Command::Cancel { request_id: rid, user: UserId::from(user.as_str()), ticket: ticket.clone() }, &mut out);
                    let refused = out.iter().any(|e| matches!(e, Effect::Fail { .. }));
                    if refused {
                        let cancel_error = out.iter().any(|e| matches!(e, Effect::Fail { failure, .. } if failure.refusal == Refusal::CancelError));
                        prop_assert!(cancel_error, "a cancel of an active ticket is refused only once a match was found");
                    }
                }
                Step::Answer { user, accept } => {
                    let user = format!("u{user}");
                    let Some((ticket, _)) = active.iter().find(|(_, ps)| ps.contains(&user)) else { continue };
                    let ticket = ticket.clone();
                    rid += 1;
                    q.handle(at(now), Command::Answer { request_id: rid, user: UserId::from(user.as_str()), ticket, accept }, &mut out);
                }
                Step::Tick(ms) => {
                    now += i64::from(ms);
                    q.tick(at(now), &mut out);
                }
                Step::Reconfigure { wide } => {
                    duo_team = if wide { 2 } else { 1 };
                    let duo = spec("duo", None, duo_team as u16);
                    q.handle(at(now), Command::Configure(vec![duo, spec("ranked", Some(2_000), 1)]), &mut out);
                }
            }
            settle(&mut out, &mut active, &mut ended)?;
            prop_assert_eq!(q.len(), active.len(), "the engine and the model agree on what is active");
            // No user in two active tickets of the game.
            let mut seen = HashSet::new();
            for ps in active.values() {
                for p in ps {
                    prop_assert!(seen.insert(p.clone()), "{} in two tickets", p);
                }
            }
        }
        // Long enough: everything ends (ready checks time out, tickets time out).
        for _ in 0..4 {
            now += 10_000;
            q.tick(at(now), &mut out);
            settle(&mut out, &mut active, &mut ended)?;
        }
        prop_assert!(active.is_empty() && q.is_empty(), "nothing dangles: {:?}", active);
        prop_assert!(q.by_user.is_empty(), "the user index is empty too");
        prop_assert!(q.checks.is_empty(), "no ready check is left mapped");
        prop_assert!(q.status_due.len() <= rid as usize, "status timers stay bounded");
    }
}
