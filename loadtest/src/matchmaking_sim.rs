//! The in-process simulation of `matchmaking-storm`: feeds a matchmaking
//! queue (the gateway's own engine,
//! `huddle::core::engine::matchmaking::matcher`) with arrivals at a given
//! rate on a simulated clock, ticks it like the gateway does, and reports
//! what players would see: matches per second, waiting times, rating spread
//! within matches, team rating difference, timeouts — and the real CPU time
//! of each tick.
//!
//! Deterministic for a seed; bounded by `--duration-s` of simulated time.
//! No network. The end-to-end scenario (`--url`,
//! `scenario::matchmaking_storm`) builds on what this module owns besides
//! the simulation: the queue's rules, the rating and latency distributions,
//! and the report's shape ([`StormParams`] and [`StormReport`], generic over
//! the figures only that mode has), so both print comparable JSON. The
//! dependency is one way: this module never refers to the scenarios, and it
//! must never touch a socket or a real clock (the tick timing aside).

use std::sync::Arc;
use std::time::Instant;

use hdrhistogram::Histogram;
use huddle::core::engine::matchmaking::matcher::{
    Outcome, Player, Queue, QueueRules, TicketSpec, Widening,
};
use huddle::core::engine::UserId;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::report::Percentiles;

/// How often the simulated gateway ticks the queue.
const TICK_MS: u64 = 250;
pub(crate) const REGIONS: [&str; 3] = ["eu", "us", "asia"];

/// The end-to-end figures of an in-process run: there are none, so its
/// `network` fields are always `None`.
#[derive(Debug, Serialize)]
pub(crate) enum InProcess {}

/// What a storm is asked to do; `Net` is the end-to-end mode's own flags
/// ([`InProcess`] here).
#[derive(Debug, Serialize)]
pub(crate) struct StormParams<Net> {
    pub(crate) arrivals_per_min: u64,
    pub(crate) duration_s: u64,
    pub(crate) teams: u16,
    pub(crate) team_size: u16,
    pub(crate) seed: u64,
    /// The end-to-end mode's flags; absent in process.
    #[serde(flatten)]
    pub(crate) network: Option<Net>,
}

/// The report of both modes; fields serialize in declaration order. `Net`
/// and `Figures` are the end-to-end mode's flags and figures ([`InProcess`]
/// for both here).
#[derive(Debug, Serialize)]
pub(crate) struct StormReport<Net, Figures> {
    pub(crate) scenario: &'static str,
    pub(crate) target: &'static str,
    /// `in-process` or `network`.
    pub(crate) mode: &'static str,
    pub(crate) params: StormParams<Net>,
    pub(crate) tickets: u64,
    pub(crate) matched_tickets: u64,
    pub(crate) matches: u64,
    pub(crate) matches_per_s: f64,
    pub(crate) timed_out: u64,
    pub(crate) still_waiting: u64,
    /// Ticket entry to match, ms (simulated in process, real end to end).
    pub(crate) wait_ms: Percentiles,
    /// Highest minus lowest rating within a match.
    pub(crate) rating_spread: Percentiles,
    /// Heaviest minus lightest team's mean rating.
    pub(crate) team_difference: Percentiles,
    /// In process only: real time of one tick, µs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) tick_us: Option<Percentiles>,
    /// In process only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) queue_peak: Option<u64>,
    /// End to end only: connections, skipped arrivals, errors, CPU.
    #[serde(flatten)]
    pub(crate) network: Option<Figures>,
}

/// The queue both modes match in: regions [`REGIONS`], spread 100 widening
/// by 50 every 10 s up to 600, latency 80 ms widening by 20 every 15 s up
/// to 200, timeout 5 min.
pub(crate) fn rules(teams: u16, team_size: u16) -> QueueRules {
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

/// A player's rating: normal (Box-Muller), mean 1500, sd 300.
pub(crate) fn draw_rating(rng: &mut StdRng) -> f64 {
    let (u1, u2): (f64, f64) = (rng.random::<f64>().max(1e-12), rng.random());
    1500.0 + 300.0 * (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// A player's latency to each of [`REGIONS`]: 20–89 ms to a random home
/// region, 120–249 ms to the others.
pub(crate) fn draw_latencies(rng: &mut StdRng) -> [(&'static str, u32); REGIONS.len()] {
    let home = rng.random_range(0..REGIONS.len());
    let mut out = [("", 0); REGIONS.len()];
    for (i, (slot, region)) in out.iter_mut().zip(REGIONS).enumerate() {
        let ms = if i == home {
            rng.random_range(20..90)
        } else {
            rng.random_range(120..250)
        };
        *slot = (region, ms);
    }
    out
}

fn ticket(rng: &mut StdRng, id: u64) -> TicketSpec {
    let rating = draw_rating(rng);
    TicketSpec {
        id,
        players: vec![Player {
            user: UserId::from(format!("p{id}")),
            rating,
        }],
        latency_ms: draw_latencies(rng)
            .iter()
            .map(|&(r, ms)| (Arc::from(r), ms))
            .collect(),
        attributes: Vec::new(),
        roles: Vec::new(),
    }
}

/// Highest minus lowest of `ratings`, and heaviest minus lightest team
/// mean, `ratings` as `(team, rating)`; teams are `0..teams`, empty ones
/// left out.
pub(crate) fn match_balance(teams: u16, ratings: &[(u16, f64)]) -> (f64, f64) {
    let (lo, hi) = ratings
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), &(_, r)| {
            (lo.min(r), hi.max(r))
        });
    let means = (0..teams).filter_map(|t| {
        let (sum, n) = ratings
            .iter()
            .filter(|&&(team, _)| team == t)
            .fold((0.0, 0u32), |(s, n), &(_, r)| (s + r, n + 1));
        (n > 0).then(|| sum / f64::from(n))
    });
    let (mlo, mhi) = means.fold((f64::MAX, f64::MIN), |(lo, hi), m| (lo.min(m), hi.max(m)));
    ((hi - lo).max(0.0), (mhi - mlo).max(0.0))
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
pub(crate) fn run(params: StormParams<InProcess>) -> anyhow::Result<String> {
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
            if let Outcome::TimedOut { ticket } = outcome {
                timed_out += 1;
                entered.remove(&ticket);
                continue;
            }
            // The storm opens no backfills: a match is the only other outcome.
            let Outcome::Matched(m) = outcome else {
                continue;
            };
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
        now += TICK_MS;
    }
    let report: StormReport<InProcess, InProcess> = StormReport {
        scenario: "matchmaking-storm",
        target: "huddle-engine-in-process",
        mode: "in-process",
        tickets: next_id,
        matched_tickets: matched,
        matches,
        matches_per_s: matches as f64 / params.duration_s.max(1) as f64,
        timed_out,
        still_waiting: queue.len() as u64,
        wait_ms: percentiles(&wait),
        rating_spread: percentiles(&spread),
        team_difference: percentiles(&diff),
        tick_us: Some(percentiles(&tick_us)),
        queue_peak: Some(peak),
        network: None,
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
            network: None,
        })
        .unwrap();
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["tickets"], 6000);
        assert!(v["matches"].as_u64().unwrap() > 400, "{v}");
        assert!(v["rating_spread"]["max"].as_u64().unwrap() <= 600, "{v}");
        assert_eq!(v["mode"], "in-process");
        assert!(v.get("connections").is_none(), "{v}");
    }

    #[test]
    fn balance_is_the_rating_range_and_the_team_mean_gap() {
        let (spread, diff) =
            match_balance(2, &[(0, 1400.0), (0, 1600.0), (1, 1450.0), (1, 1500.0)]);
        assert_eq!(spread, 200.0);
        assert_eq!(diff, 25.0);
        assert_eq!(match_balance(2, &[(1, 1500.0)]), (0.0, 0.0));
    }
}
