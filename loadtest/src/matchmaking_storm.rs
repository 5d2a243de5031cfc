//! `matchmaking-storm`, in process: feeds a matchmaking queue (the
//! gateway's own engine, `huddle::engine::matchmaker`) with arrivals at a
//! given rate on a simulated clock, ticks it like the gateway does, and
//! reports what players would see: matches per second, waiting times,
//! rating spread within matches, team rating difference, timeouts — and
//! the real CPU time of each tick.
//!
//! Deterministic for a seed; bounded by `--duration-s` of simulated time.
//! No network: the end-to-end variant arrives with the matchmaking
//! protocol.

use std::sync::Arc;
use std::time::Instant;

use hdrhistogram::Histogram;
use huddle::engine::matchmaker::{Outcome, Player, Queue, QueueRules, TicketSpec, Widening};
use huddle::engine::UserId;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::report::Percentiles;

/// How often the simulated gateway ticks the queue.
const TICK_MS: u64 = 250;
const REGIONS: [&str; 3] = ["eu", "us", "asia"];

/// What the simulation is asked to do.
#[derive(Debug, Serialize)]
pub(crate) struct StormParams {
    pub(crate) arrivals_per_min: u64,
    pub(crate) duration_s: u64,
    pub(crate) teams: u16,
    pub(crate) team_size: u16,
    pub(crate) seed: u64,
}

#[derive(Debug, Serialize)]
struct StormReport {
    scenario: &'static str,
    target: &'static str,
    params: StormParams,
    tickets: u64,
    matched_tickets: u64,
    matches: u64,
    matches_per_s: f64,
    timed_out: u64,
    still_waiting: u64,
    /// Ticket entry to match, simulated ms.
    wait_ms: Percentiles,
    /// Highest minus lowest rating within a match.
    rating_spread: Percentiles,
    /// Heaviest minus lightest team's mean rating.
    team_difference: Percentiles,
    /// Real time of one tick, µs.
    tick_us: Percentiles,
    queue_peak: u64,
}

fn rules(teams: u16, team_size: u16) -> QueueRules {
    QueueRules {
        teams,
        team_size,
        regions: REGIONS.iter().map(|r| Arc::from(*r)).collect(),
        spread: Widening {
            start: 100.0,
            step: 50.0,
            every_ms: 10_000,
            max: 600.0,
        },
        latency: Widening {
            start: 80.0,
            step: 20.0,
            every_ms: 15_000,
            max: 200.0,
        },
        timeout_ms: 300_000,
        attributes: Vec::new(),
        roles: Vec::new(),
    }
}

fn ticket(rng: &mut StdRng, id: u64) -> TicketSpec {
    // A normal rating (Box-Muller), mean 1500, sd 300.
    let (u1, u2): (f64, f64) = (rng.random::<f64>().max(1e-12), rng.random());
    let rating = 1500.0 + 300.0 * (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
    let home = rng.random_range(0..REGIONS.len());
    TicketSpec {
        id,
        players: vec![Player {
            user: UserId::from(format!("p{id}")),
            rating,
        }],
        latency_ms: REGIONS
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let ms = if i == home {
                    rng.random_range(20..90)
                } else {
                    rng.random_range(120..250)
                };
                (Arc::from(*r), ms)
            })
            .collect(),
        attributes: Vec::new(),
        roles: Vec::new(),
    }
}

fn percentiles(h: &Histogram<u64>) -> Percentiles {
    Percentiles {
        p50: h.value_at_quantile(0.50),
        p90: h.value_at_quantile(0.90),
        p99: h.value_at_quantile(0.99),
        p999: h.value_at_quantile(0.999),
        max: h.max(),
    }
}

/// Runs the simulation and returns its JSON report.
pub(crate) fn run(params: StormParams) -> anyhow::Result<String> {
    let mut queue = Queue::new(rules(params.teams, params.team_size))
        .map_err(|f| anyhow::anyhow!("{}", f.message))?;
    let mut rng = StdRng::seed_from_u64(params.seed);
    let hist = || Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3);
    let (mut wait, mut spread, mut diff, mut tick_us) = (hist()?, hist()?, hist()?, hist()?);
    let mut entered: std::collections::HashMap<u64, u64> = std::collections::HashMap::new();
    let (mut next_id, mut matches, mut matched, mut timed_out, mut peak) =
        (0u64, 0u64, 0u64, 0u64, 0u64);
    let per_tick = params.arrivals_per_min as f64 * TICK_MS as f64 / 60_000.0;
    let mut owed = 0.0;
    let end = params.duration_s * 1000;
    let mut out = Vec::new();
    let mut now = 0;
    while now < end {
        owed += per_tick;
        while owed >= 1.0 {
            owed -= 1.0;
            next_id += 1;
            queue
                .insert(now, ticket(&mut rng, next_id))
                .map_err(|f| anyhow::anyhow!("{}", f.message))?;
            entered.insert(next_id, now);
        }
        peak = peak.max(queue.len() as u64);
        let started = Instant::now();
        queue.tick(now, &mut out);
        tick_us.record((started.elapsed().as_micros() as u64).max(1))?;
        for outcome in out.drain(..) {
            match outcome {
                Outcome::TimedOut { ticket } => {
                    timed_out += 1;
                    entered.remove(&ticket);
                }
                // This scenario asks for no backfill.
                Outcome::Backfilled { .. } | Outcome::BackfillExpired { .. } => {}
                Outcome::Matched(m) => {
                    matches += 1;
                    spread.record(m.spread.round().max(1.0) as u64)?;
                    let means: Vec<f64> = m
                        .teams
                        .iter()
                        .map(|t| t.rating_sum / t.players.len().max(1) as f64)
                        .collect();
                    let (lo, hi) = means
                        .iter()
                        .fold((f64::MAX, f64::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x)));
                    diff.record((hi - lo).round().max(1.0) as u64)?;
                    for t in m.teams.iter().flat_map(|t| t.tickets.iter()) {
                        matched += 1;
                        if let Some(at) = entered.remove(t) {
                            wait.record((now - at).max(1))?;
                        }
                    }
                }
            }
        }
        now += TICK_MS;
    }
    let report = StormReport {
        scenario: "matchmaking-storm",
        target: "huddle-engine-in-process",
        tickets: next_id,
        matched_tickets: matched,
        matches,
        matches_per_s: matches as f64 / params.duration_s.max(1) as f64,
        timed_out,
        still_waiting: queue.len() as u64,
        wait_ms: percentiles(&wait),
        rating_spread: percentiles(&spread),
        team_difference: percentiles(&diff),
        tick_us: percentiles(&tick_us),
        queue_peak: peak,
        params,
    };
    Ok(serde_json::to_string(&report)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_storm_matches_players_and_reports_in_bounds() {
        let json = run(StormParams {
            arrivals_per_min: 6000,
            duration_s: 60,
            teams: 2,
            team_size: 5,
            seed: 1,
        })
        .unwrap();
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["tickets"], 6000);
        assert!(v["matches"].as_u64().unwrap() > 400, "{v}");
        assert!(v["rating_spread"]["max"].as_u64().unwrap() <= 600, "{v}");
    }
}
