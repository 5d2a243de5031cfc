//! Tests of the matcher (one queue: windows, teams, attributes, roles); they
//! never touch I/O.

use super::*;
use proptest::prelude::*;
use std::collections::{HashMap, HashSet};

fn rules(teams: u16, team_size: u16) -> QueueRules {
    QueueRules {
        teams,
        team_size,
        regions: vec![Arc::from("eu"), Arc::from("us")],
        spread: Widening {
            start: 100.0,
            step: 50.0,
            every_ms: 10_000,
            max: 1000.0,
        },
        latency: Widening {
            start: 60.0,
            step: 20.0,
            every_ms: 15_000,
            max: 200.0,
        },
        timeout_ms: 120_000,
        attributes: Vec::new(),
        roles: Vec::new(),
    }
}

fn solo(id: u64, rating: f64, eu: u32, us: u32) -> TicketSpec {
    TicketSpec {
        id,
        players: vec![Player {
            user: UserId::from(format!("p{id}")),
            rating,
        }],
        latency_ms: vec![(Arc::from("eu"), eu), (Arc::from("us"), us)],
        attributes: Vec::new(),
        roles: Vec::new(),
    }
}

fn matches(out: &[Outcome]) -> Vec<&Match> {
    out.iter()
        .filter_map(|o| match o {
            Outcome::Matched(m) => Some(m),
            _ => None,
        })
        .collect()
}

#[test]
fn a_one_v_one_forms_within_the_spread_and_the_latency_limit() {
    let mut q = Queue::new(rules(2, 1)).unwrap();
    q.insert(0, solo(1, 1500.0, 30, 150)).unwrap();
    q.insert(0, solo(2, 1900.0, 30, 150)).unwrap(); // too far in rating
    q.insert(0, solo(3, 1550.0, 200, 40)).unwrap(); // too far from eu
    q.insert(0, solo(4, 1560.0, 40, 150)).unwrap();
    let mut out = Vec::new();
    q.tick(0, &mut out);
    let m = matches(&out);
    assert_eq!(m.len(), 1);
    assert_eq!(&*m[0].region, "eu");
    let ids: HashSet<u64> = m[0].teams.iter().flat_map(|t| t.tickets.clone()).collect();
    assert_eq!(ids, HashSet::from([1, 4]));
    assert_eq!(q.len(), 2);
}

#[test]
fn windows_widen_with_waiting_time_until_a_match_or_a_timeout() {
    let mut q = Queue::new(rules(2, 1)).unwrap();
    q.insert(0, solo(1, 1500.0, 30, 150)).unwrap();
    q.insert(0, solo(2, 1750.0, 30, 150)).unwrap();
    let mut out = Vec::new();
    q.tick(0, &mut out);
    assert!(out.is_empty(), "250 apart, spread 100");
    q.tick(30_000, &mut out);
    assert_eq!(matches(&out).len(), 1, "after 30 s the spread is 250");
    let mut q = Queue::new(rules(2, 1)).unwrap();
    q.insert(0, solo(9, 1500.0, 30, 150)).unwrap();
    let mut out = Vec::new();
    q.tick(120_000, &mut out);
    assert_eq!(out, vec![Outcome::TimedOut { ticket: 9 }]);
}

#[test]
fn bad_tickets_are_refused_and_change_nothing() {
    let mut q = Queue::new(rules(2, 2)).unwrap();
    let mut party = solo(1, 1500.0, 30, 30);
    party.players = (0..3)
        .map(|i| Player {
            user: UserId::from(format!("x{i}")),
            rating: 1500.0,
        })
        .collect();
    assert!(q.insert(0, party).is_err(), "a party larger than a team");
    let mut nowhere = solo(2, 1500.0, 30, 30);
    nowhere.latency_ms = vec![(Arc::from("mars"), 30)];
    assert!(q.insert(0, nowhere).is_err());
    let mut absurd = solo(3, 1500.0, 30, 30);
    absurd.latency_ms = vec![(Arc::from("eu"), 0)];
    assert!(q.insert(0, absurd).is_err());
    // Found by fuzzing: with two latencies to one region the last one won,
    // so a ticket far from eu (7,900 ms) played there on a 30 ms claim.
    let mut twice = solo(6, 1500.0, 7_900, 30);
    twice.latency_ms.push((Arc::from("eu"), 30));
    let refused = q.insert(0, twice).unwrap_err();
    assert!(
        format!("{refused:?}").contains("given twice"),
        "{refused:?}"
    );
    let mut empty = solo(4, 1500.0, 30, 30);
    empty.latency_ms.clear();
    assert!(q.insert(0, empty).is_err());
    q.insert(0, solo(5, 1500.0, 30, 30)).unwrap();
    assert!(
        q.insert(0, solo(5, 1500.0, 30, 30)).is_err(),
        "already queued"
    );
    assert_eq!(q.len(), 1);
    assert!(q.cancel(5) && !q.cancel(5));
}

#[test]
fn teams_are_balanced_and_parties_stay_together() {
    let mut q = Queue::new(rules(2, 3)).unwrap();
    let mut party = solo(1, 0.0, 30, 30);
    party.players = vec![
        Player {
            user: UserId::from("a"),
            rating: 1600.0,
        },
        Player {
            user: UserId::from("b"),
            rating: 1560.0,
        },
    ];
    q.insert(0, party).unwrap();
    for (id, r) in [(2, 1590.0), (3, 1500.0), (4, 1520.0), (5, 1570.0)] {
        q.insert(0, solo(id, r, 30, 30)).unwrap();
    }
    let mut out = Vec::new();
    q.tick(0, &mut out);
    let m = matches(&out);
    assert_eq!(m.len(), 1);
    let with_party = m[0].teams.iter().find(|t| t.tickets.contains(&1)).unwrap();
    assert_eq!(with_party.players.len(), 3);
    let sums: Vec<f64> = m[0].teams.iter().map(|t| t.rating_sum).collect();
    assert!((sums[0] - sums[1]).abs() <= 60.0, "{sums:?}");
}

fn with(mut t: TicketSpec, map: &str, level: f64, role: Option<&str>) -> TicketSpec {
    t.attributes = vec![
        (Arc::from("map"), Attribute::Text(Arc::from(map))),
        (Arc::from("level"), Attribute::Number(level)),
    ];
    t.roles = role.map(Arc::from).into_iter().collect();
    t
}

fn picky_rules() -> QueueRules {
    let mut r = rules(2, 2);
    r.attributes = vec![
        AttributeRule {
            name: Arc::from("map"),
            rule: AttributeMatch::Equal,
        },
        AttributeRule {
            name: Arc::from("level"),
            rule: AttributeMatch::Within(5.0),
        },
    ];
    r.roles = vec![(Arc::from("tank"), 1)];
    r
}

#[test]
fn attributes_must_match_or_stay_within_range_and_roles_respect_caps() {
    let mut q = Queue::new(picky_rules()).unwrap();
    // Five players near in rating: one on another map, one too high a
    // level; two tanks who must not share a team.
    q.insert(
        0,
        with(solo(1, 1500.0, 30, 30), "docks", 10.0, Some("tank")),
    )
    .unwrap();
    q.insert(0, with(solo(2, 1505.0, 30, 30), "ruins", 10.0, None))
        .unwrap();
    q.insert(0, with(solo(3, 1510.0, 30, 30), "docks", 30.0, None))
        .unwrap();
    q.insert(
        0,
        with(solo(4, 1515.0, 30, 30), "docks", 12.0, Some("tank")),
    )
    .unwrap();
    q.insert(0, with(solo(5, 1520.0, 30, 30), "docks", 14.0, None))
        .unwrap();
    let mut out = Vec::new();
    q.tick(0, &mut out);
    assert!(matches(&out).is_empty(), "only three fit together: {out:?}");
    q.insert(0, with(solo(6, 1490.0, 30, 30), "docks", 9.0, None))
        .unwrap();
    q.tick(0, &mut out);
    let m = matches(&out);
    assert_eq!(m.len(), 1);
    let ids: HashSet<u64> = m[0].teams.iter().flat_map(|t| t.tickets.clone()).collect();
    assert_eq!(
        ids,
        HashSet::from([1, 4, 5, 6]),
        "same map, levels within 5"
    );
    let tanks_team = |id: u64| m[0].teams.iter().position(|t| t.tickets.contains(&id));
    assert_ne!(tanks_team(1), tanks_team(4), "one tank per team");
}

#[test]
fn missing_unknown_or_mistyped_attributes_and_roles_are_refused() {
    let mut q = Queue::new(picky_rules()).unwrap();
    let bare = solo(1, 1500.0, 30, 30);
    assert!(q.insert(0, bare.clone()).is_err(), "attributes missing");
    let mut typed = with(bare.clone(), "docks", 1.0, None);
    typed.attributes[1].1 = Attribute::Text(Arc::from("high"));
    assert!(q.insert(0, typed).is_err(), "level must be a number");
    let mut extra = with(bare.clone(), "docks", 1.0, None);
    extra
        .attributes
        .push((Arc::from("mood"), Attribute::Number(1.0)));
    assert!(q.insert(0, extra).is_err(), "unknown attribute");
    assert!(
        q.insert(0, with(bare.clone(), "docks", 1.0, Some("mage")))
            .is_err(),
        "unknown role"
    );
    assert!(q.is_empty());
    q.insert(0, with(bare, "docks", 1.0, Some("tank"))).unwrap();
}

#[derive(Debug, Clone)]
enum Step {
    Add {
        rating: u16,
        party: u8,
        eu: u16,
        us: u16,
    },
    Cancel(u8),
    Tick(u16),
    /// A backfill near `rating` with one slot open in `team`.
    Backfill {
        rating: u16,
        team: u8,
    },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (1000u16..2000, 1u8..=3, 10u16..300, 10u16..300)
            .prop_map(|(rating, party, eu, us)| Step::Add { rating, party, eu, us }),
        1 => any::<u8>().prop_map(Step::Cancel),
        3 => (0u16..20_000).prop_map(Step::Tick),
        1 => (1000u16..2000, any::<u8>()).prop_map(|(rating, team)| Step::Backfill { rating, team }),
    ]
}

proptest! {
    #[test]
    fn matchmaking_invariants(steps in proptest::collection::vec(step(), 1..150), teams in 2u16..=4, team_size in 1u16..=3) {
        let rules = rules(teams, team_size);
        let mut q = Queue::new(rules.clone()).unwrap();
        let mut now = 0u64;
        let mut next = 1u64;
        // id -> (size, entered, latency to eu, to us)
        let mut waiting: HashMap<u64, (usize, u64, u32, u32)> = HashMap::new();
        let mut ended: HashSet<u64> = HashSet::new();
        let mut seen_players: HashSet<String> = HashSet::new();
        let mut out = Vec::new();
        // backfill id -> open slots per team, still unfilled
        let mut backfills: HashMap<u64, Vec<usize>> = HashMap::new();
        let mut check = |out: &mut Vec<Outcome>, waiting: &mut HashMap<u64, (usize, u64, u32, u32)>, ended: &mut HashSet<u64>, backfills: &mut HashMap<u64, Vec<usize>>| -> Result<(), TestCaseError> {
            for o in out.drain(..) {
                match o {
                    Outcome::Backfilled { backfill, teams, done } => {
                        let open = backfills.get_mut(&backfill).expect("an open backfill");
                        for (i, team) in teams.iter().enumerate() {
                            let mut placed = 0;
                            for t in &team.tickets {
                                let (size, ..) = waiting.remove(t).expect("a placed ticket was waiting");
                                placed += size;
                                prop_assert!(ended.insert(*t), "no ticket placed twice");
                            }
                            prop_assert_eq!(placed, team.players.len(), "parties whole");
                            prop_assert!(placed <= open[i], "never more than the open slots");
                            open[i] -= placed;
                            for p in &team.players {
                                prop_assert!(seen_players.insert(p.user.to_string()), "no player in two matches");
                            }
                        }
                        let all_filled = open.iter().all(|&o| o == 0);
                        prop_assert_eq!(done, all_filled);
                        if done {
                            backfills.remove(&backfill);
                        }
                    }
                    Outcome::BackfillExpired { backfill } => {
                        prop_assert!(backfills.remove(&backfill).is_some());
                    }
                    Outcome::TimedOut { ticket } => {
                        prop_assert!(waiting.remove(&ticket).is_some());
                        prop_assert!(ended.insert(ticket));
                    }
                    Outcome::Matched(m) => {
                        prop_assert_eq!(m.teams.len(), usize::from(rules.teams));
                        prop_assert!(m.spread <= m.allowed_spread + 1e-9, "within the window");
                        for team in &m.teams {
                            prop_assert_eq!(team.players.len(), usize::from(rules.team_size), "every team exactly full");
                            let mut in_team = 0;
                            for t in &team.tickets {
                                let (size, entered, eu, us) = waiting.remove(t).expect("a matched ticket was waiting");
                                let latency = if &*m.region == "eu" { eu } else { us };
                                prop_assert!(
                                    f64::from(latency) <= rules.latency.at(m.formed_ms - entered),
                                    "every player under their own latency limit"
                                );
                                in_team += size;
                                prop_assert!(ended.insert(*t), "no ticket in two matches");
                            }
                            prop_assert_eq!(in_team, team.players.len(), "parties whole within one team");
                            for p in &team.players {
                                prop_assert!(seen_players.insert(p.user.to_string()), "no player in two matches");
                            }
                        }
                    }
                }
            }
            Ok(())
        };
        for s in steps {
            match s {
                Step::Add { rating, party, eu, us } => {
                    let id = next;
                    next += 1;
                    let size = usize::from(party).min(usize::from(team_size));
                    let spec = TicketSpec {
                        id,
                        players: (0..size).map(|i| Player { user: UserId::from(format!("u{id}-{i}")), rating: f64::from(rating) + i as f64 }).collect(),
                        latency_ms: vec![(Arc::from("eu"), u32::from(eu)), (Arc::from("us"), u32::from(us))],
                        attributes: Vec::new(),
                        roles: Vec::new(),
                    };
                    q.insert(now, spec).unwrap();
                    waiting.insert(id, (size, now, u32::from(eu), u32::from(us)));
                }
                Step::Cancel(k) => {
                    let id = u64::from(k) % next.max(1);
                    let was = waiting.remove(&id).is_some();
                    prop_assert_eq!(q.cancel(id), was, "cancel succeeds exactly while waiting");
                    if was {
                        ended.insert(id);
                    }
                }
                Step::Tick(ms) => {
                    now += u64::from(ms);
                    q.tick(now, &mut out);
                    check(&mut out, &mut waiting, &mut ended, &mut backfills)?;
                }
                Step::Backfill { rating, team } => {
                    let id = 1_000_000 + next;
                    next += 1;
                    let mut open = vec![0u16; usize::from(teams)];
                    let slot = usize::from(team) % open.len();
                    open[slot] = team_size;
                    let spec = BackfillSpec { id, region: Arc::from("eu"), rating: f64::from(rating), open: open.clone(), attributes: Vec::new() };
                    q.backfill(now, spec).unwrap();
                    backfills.insert(id, open.into_iter().map(usize::from).collect());
                }
            }
            prop_assert_eq!(q.len(), waiting.len());
        }
        // Long enough: every ticket ends matched, cancelled or timed out.
        now += rules.timeout_ms;
        q.tick(now, &mut out);
        check(&mut out, &mut waiting, &mut ended, &mut backfills)?;
        prop_assert!(waiting.is_empty() && q.is_empty());
        prop_assert!(backfills.is_empty() && q.backfills() == 0, "backfills end too");
    }

    #[test]
    fn the_same_inputs_give_the_same_matches(ratings in proptest::collection::vec(1000u16..2000, 1..80)) {
        let run = || {
            let mut q = Queue::new(rules(2, 2)).unwrap();
            for (i, r) in ratings.iter().enumerate() {
                q.insert(i as u64, solo(i as u64 + 1, f64::from(*r), 40, 80)).unwrap();
            }
            let mut out = Vec::new();
            q.tick(1_000, &mut out);
            q.tick(31_000, &mut out);
            out
        };
        prop_assert_eq!(run(), run());
    }
}
