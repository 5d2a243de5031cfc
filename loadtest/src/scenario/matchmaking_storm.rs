//! `matchmaking-storm` end to end (`--url`): `--clients` players connect
//! through the Rust SDK ([`huddle_client::Client`]), at most `--concurrency`
//! setups in flight, each with a token whose `ratings` claim carries the
//! player's skill for the storm's game: drawn once per user, from the
//! in-process mode's distribution, seeded by `--seed`. The loadtest keeps
//! every player's rating to judge the matches the gateway forms.
//!
//! Once every setup completed or failed, arrivals come at
//! `--arrivals-per-min` for `--duration-s`. Each takes a random idle player,
//! who starts a solo ticket (`matchmaking:start` with a fresh latency map,
//! drawn as in process) and waits for its outcome:
//! - `matched`: the wait (from sending the start to reading the event) is
//!   recorded, the player is filed under the match's lobby id, leaves that
//!   lobby and is idle again;
//! - `timeout`: counted as timed out; `cancelled` or `removed` by the
//!   gateway: counted apart; the player is idle again.
//!
//! An arrival that finds no idle player is counted
//! (`skipped_no_idle_client`) and dropped, never waited for.
//!
//! Before anyone connects, the queue (game [`GAME`], mode [`MODE`], the
//! in-process mode's rules with `--teams` and `--team-size`, no ready check)
//! is set with `PUT /v1/matchmaking/queues` on `--admin-url`. That replaces
//! **every** queue of the gateway: run this against a load-test gateway
//! only (`loadtest/run.sh` starts a fresh one).
//!
//! Bounded: no ticket starts after `--duration-s`; the tickets still out
//! then are waited for at most [`GRACE`], the rest cancelled
//! (`still_waiting`), and every connection is closed. Per match (grouped by
//! lobby id), once all its players have read their `matched`, the rating
//! spread and the team mean difference are computed from the known
//! ratings, as the engine reports them in process; matches not all of whose
//! players were seen are counted (`incomplete_matches`), not measured.
//! `matches_per_s` counts the matches first seen within `--duration-s`.
//!
//! The report has the in-process simulation's shape ([`StormReport`]) with
//! `mode: "network"`, the flags of this mode in `params`, and the
//! connection counts, errors, reply latencies and CPU of the run.
//!
//! Owns the end-to-end storm only; it builds on `matchmaking_sim` (the
//! queue's rules, the distributions, the report's shape), which never refers
//! back to it. It must never put a rating in a client payload (ratings ride
//! in the token), never block an arrival on a busy pool, and never wait
//! without a bound.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use anyhow::{anyhow, Context as _};
use hdrhistogram::Histogram;
use huddle::core::engine::matchmaking::matcher::{QueueRules, Widening};
use huddle_client::transport::Transport;
use huddle_client::{
    Client, ClientConfig, ClientError, Event, EventStream, MatchmakingEvent, MatchmakingEventKind,
};
use huddle_schema::error_code_name;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::time::{interval, sleep, Instant, MissedTickBehavior};

use super::{print_failures, setup_outcome, transport_name, wait_for_setups, Probes};
use crate::admin::AdminApi;
use crate::matchmaking_sim::{
    draw_latencies, draw_rating, match_balance, rules, StormParams, StormReport, REGIONS,
};
use crate::report::{self, Loadgen, Percentiles, Server};
use crate::setup::{histogram, now_ns, Failure, Setup, SETUP_TIMEOUT};
use crate::Args;

/// The storm's game (the key of the tokens' `ratings` claim) and mode.
pub(crate) const GAME: &str = "lt";
pub(crate) const MODE: &str = "storm";
/// The `sigma` of every token rating (matching uses `mu` only).
const SIGMA: f64 = 80.0;
/// How long the tickets still out after `--duration-s` are waited for.
const GRACE: Duration = Duration::from_secs(5);
/// How often the arrival clock looks for arrivals that fell due.
const ARRIVAL_STEP: Duration = Duration::from_millis(10);
/// How often the run prints its progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);
/// Each player's event buffer: a ticket brings a handful of events.
const EVENT_BUFFER: usize = 256;
/// Commands waiting for one player: at most a start and the finish.
const COMMAND_BUFFER: usize = 4;
/// Waits up to an hour, ms, at 3 significant digits.
const WAIT_MS_MAX: u64 = 3_600_000;

/// The report of this mode: the simulation's shape with this mode's flags
/// and figures.
type NetworkReport = StormReport<NetParams, NetFigures>;

/// This mode's flags, in the report's `params` after the shared ones.
#[derive(Debug, Serialize)]
pub(crate) struct NetParams {
    url: String,
    clients: u32,
    concurrency: u32,
    source_ips: u32,
    threads: u32,
    server_pid: Option<u32>,
    admin_url: String,
    run_id: String,
    /// The storm's queue, `game/mode`.
    queue: String,
}

/// What only the end-to-end mode measures, at the report's top level after
/// the shared figures.
#[derive(Debug, Serialize)]
pub(crate) struct NetFigures {
    transport: &'static str,
    /// Players whose setup completed.
    connections: u64,
    connect_failed: u64,
    /// Connections lost after their setup.
    dropped: u64,
    connect_per_s: f64,
    connect_p99_us: u64,
    /// Arrivals due within `--duration-s`: started, skipped, or refused.
    arrivals: u64,
    skipped_no_idle_client: u64,
    /// Starts the gateway refused (or did not answer), by error code.
    start_errors: BTreeMap<String, u64>,
    /// Tickets the gateway cancelled or removed.
    ended_otherwise: u64,
    /// Matches first seen within `--duration-s` (`matches_per_s` counts these).
    matches_in_window: u64,
    /// Matches not all of whose players read their `matched`.
    incomplete_matches: u64,
    /// `matched` events for no ticket of the player (its lobby is left too).
    unexpected_matches: u64,
    leave_errors: u64,
    /// End-of-run cancels the gateway refused (the ticket had just matched).
    cancel_errors: u64,
    /// From sending `matchmaking:start` to its reply.
    start_reply_us: Percentiles,
    /// From sending the lobby LEAVE to its reply.
    leave_reply_us: Percentiles,
    /// Most players busy at once (a ticket started and not yet over).
    busy_peak: u64,
    /// From the first arrival until the remaining tickets were cancelled, s.
    window_s: f64,
    /// `null` without `--server-pid`; CPU over `window_s`.
    server: Option<Server>,
    loadgen: Loadgen,
}

/// What the arrival clock tells a player.
#[derive(Debug)]
enum Cmd {
    /// Start a ticket with these latencies.
    Start([(&'static str, u32); REGIONS.len()]),
    /// Cancel the ticket out, if any, and close.
    Finish,
}

/// One formed match while its players' `matched` events come in.
struct Group {
    /// `(team, rating)` of each player seen so far.
    players: Vec<(u16, f64)>,
    /// First seen within `--duration-s`.
    in_window: bool,
}

/// Tallies and histograms, behind one lock (never held across an await).
struct Stats {
    tickets: u64,
    matched_tickets: u64,
    timed_out: u64,
    ended_otherwise: u64,
    still_waiting: u64,
    unexpected_matches: u64,
    leave_errors: u64,
    cancel_errors: u64,
    start_errors: BTreeMap<String, u64>,
    matches: u64,
    matches_in_window: u64,
    groups: HashMap<String, Group>,
    wait_ms: Histogram<u64>,
    spread: Histogram<u64>,
    difference: Histogram<u64>,
    start_us: Histogram<u64>,
    leave_us: Histogram<u64>,
}

impl Stats {
    fn new() -> anyhow::Result<Self> {
        let wide = || Histogram::<u64>::new_with_bounds(1, WAIT_MS_MAX, 3);
        Ok(Self {
            tickets: 0,
            matched_tickets: 0,
            timed_out: 0,
            ended_otherwise: 0,
            still_waiting: 0,
            unexpected_matches: 0,
            leave_errors: 0,
            cancel_errors: 0,
            start_errors: BTreeMap::new(),
            matches: 0,
            matches_in_window: 0,
            groups: HashMap::new(),
            wait_ms: wide()?,
            spread: wide()?,
            difference: wide()?,
            start_us: histogram(),
            leave_us: histogram(),
        })
    }
}

/// State shared by the arrival clock and every player task.
struct Storm {
    setup: Arc<Setup>,
    teams: u16,
    /// Players per match.
    match_size: usize,
    /// Each player's rating, by client index.
    ratings: Vec<f64>,
    run_id: String,
    /// Connected players without a ticket, by client index.
    idle: Mutex<Vec<u32>>,
    /// Players sent a start and not idle again yet.
    busy: AtomicU64,
    /// Cleared when `--duration-s` is over.
    in_window: AtomicBool,
    stats: Mutex<Stats>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Storm {
    /// Player `i` is idle again.
    fn release(&self, i: u32) {
        self.busy.fetch_sub(1, Relaxed);
        lock(&self.idle).push(i);
    }

    /// Files player `i`'s `matched` under its lobby; measures the match
    /// once all its players are in.
    fn matched(&self, i: u32, team: u16, lobby_id: &str, wait: Duration) {
        let rating = self.ratings[i as usize];
        let in_window = self.in_window.load(Relaxed);
        let mut stats = lock(&self.stats);
        stats.matched_tickets += 1;
        stats
            .wait_ms
            .saturating_record((wait.as_millis() as u64).max(1));
        let group = stats
            .groups
            .entry(lobby_id.to_owned())
            .or_insert_with(|| Group {
                players: Vec::with_capacity(self.match_size),
                in_window,
            });
        group.players.push((team, rating));
        if group.players.len() < self.match_size {
            return;
        }
        let Some(group) = stats.groups.remove(lobby_id) else {
            return;
        };
        let (spread, difference) = match_balance(self.teams, &group.players);
        stats.matches += 1;
        stats.matches_in_window += u64::from(group.in_window);
        stats
            .spread
            .saturating_record(spread.round().max(1.0) as u64);
        stats
            .difference
            .saturating_record(difference.round().max(1.0) as u64);
    }
}

/// The user id of player `i`: the run id keeps concurrent runs' players
/// (and their one ticket per game) apart.
fn user_id(run_id: &str, i: u32) -> String {
    format!("mm-{run_id}-{i}")
}

/// The tally key of a failed request.
fn error_kind(e: &ClientError) -> String {
    match e {
        ClientError::Server { code, .. } => error_code_name(*code).to_owned(),
        ClientError::Timeout => "TIMEOUT".into(),
        ClientError::Disconnected | ClientError::Closed => "DISCONNECTED".into(),
        ClientError::Transport(_) => "TRANSPORT".into(),
        ClientError::Protocol(_) => "PROTOCOL".into(),
        ClientError::InvalidUrl(_) => "INVALID_URL".into(),
    }
}

/// The body of `PUT /v1/matchmaking/queues`: the storm's one queue, with
/// the in-process mode's `rules`.
pub(crate) fn queues_json(rules: &QueueRules) -> serde_json::Value {
    let widening = |w: &Widening| {
        serde_json::json!({
            "start": w.start, "step": w.step, "every_ms": w.every_ms, "max": w.max
        })
    };
    let regions: Vec<&str> = rules.regions.iter().map(|r| &**r).collect();
    serde_json::json!([{
        "game": GAME,
        "mode": MODE,
        "teams": rules.teams,
        "team_size": rules.team_size,
        "regions": regions,
        "spread": widening(&rules.spread),
        "latency": widening(&rules.latency),
        "timeout_ms": rules.timeout_ms,
    }])
}

/// Runs the storm against the gateway and returns its report.
pub(super) async fn run(
    args: &Args,
    transport: Transport,
    source_ips: u32,
    setup: Arc<Setup>,
    probes: Probes,
) -> anyhow::Result<NetworkReport> {
    let admin = AdminApi::new(&args.admin_url, args.admin_token.clone())?;
    let rules = rules(args.teams, args.team_size);
    admin
        .put_queues(&queues_json(&rules))
        .await
        .context("setting the storm's queue")?;
    eprintln!(
        "  queue {GAME}/{MODE}: {} teams of {}, set through {}",
        args.teams, args.team_size, args.admin_url
    );

    let mut rng = StdRng::seed_from_u64(args.seed);
    let storm = Arc::new(Storm {
        setup: setup.clone(),
        teams: args.teams,
        match_size: usize::from(args.teams) * usize::from(args.team_size),
        ratings: (0..args.clients).map(|_| draw_rating(&mut rng)).collect(),
        run_id: args.run_id(),
        idle: Mutex::new(Vec::with_capacity(args.clients as usize)),
        busy: AtomicU64::new(0),
        in_window: AtomicBool::new(true),
        stats: Mutex::new(Stats::new()?),
    });

    let started = std::time::Instant::now();
    let started_ns = now_ns();
    let mut senders = Vec::with_capacity(args.clients as usize);
    let tasks: Vec<_> = (0..args.clients)
        .map(|i| {
            let (tx, rx) = mpsc::channel(COMMAND_BUFFER);
            senders.push(tx);
            tokio::spawn(player(storm.clone(), i, rx))
        })
        .collect();
    wait_for_setups(&setup, args.clients, started).await;
    let (connections, failed, connect_s) = setup_outcome(&setup, started_ns)?;

    // Arrivals: the count due by now, at a steady rate, checked every
    // ARRIVAL_STEP; a late check catches up at once.
    let cpu_at_start = probes.mark();
    let window = Duration::from_secs(args.duration_s);
    let per_s = args.arrivals_per_min as f64 / 60.0;
    let run_start = Instant::now();
    let mut ticks = interval(ARRIVAL_STEP);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let (mut arrivals, mut skipped, mut busy_peak) = (0u64, 0u64, 0u64);
    let mut progress = run_start;
    loop {
        ticks.tick().await;
        let elapsed = run_start.elapsed();
        let due = (elapsed.min(window).as_secs_f64() * per_s) as u64;
        while arrivals < due {
            arrivals += 1;
            let picked = {
                let mut idle = lock(&storm.idle);
                if idle.is_empty() {
                    None
                } else {
                    let k = rng.random_range(0..idle.len());
                    Some(idle.swap_remove(k))
                }
            };
            let Some(i) = picked else {
                skipped += 1;
                continue;
            };
            let busy = storm.busy.fetch_add(1, Relaxed) + 1;
            busy_peak = busy_peak.max(busy);
            let start = Cmd::Start(draw_latencies(&mut rng));
            if senders[i as usize].try_send(start).is_err() {
                // The player's task is gone; it is not idle any more.
                storm.busy.fetch_sub(1, Relaxed);
                skipped += 1;
            }
        }
        if progress.elapsed() >= PROGRESS_EVERY {
            progress = Instant::now();
            let stats = lock(&storm.stats);
            eprintln!(
                "  {:.0} s: {arrivals} arrivals, {} tickets, {} matches, {} busy, {skipped} skipped",
                elapsed.as_secs_f64(),
                stats.tickets,
                stats.matches,
                storm.busy.load(Relaxed)
            );
        }
        if elapsed >= window {
            break;
        }
    }
    storm.in_window.store(false, Relaxed);
    let grace = Instant::now();
    while storm.busy.load(Relaxed) > 0 && grace.elapsed() < GRACE {
        sleep(Duration::from_millis(20)).await;
    }
    let outstanding = storm.busy.load(Relaxed);
    eprintln!(
        "  arrivals over; {outstanding} ticket(s) still out after {:.1} s, cancelling",
        grace.elapsed().as_secs_f64()
    );
    for tx in &senders {
        let _ = tx.try_send(Cmd::Finish);
    }
    drop(senders);
    let window_s = run_start.elapsed().as_secs_f64();
    let cpu_used = probes.since(cpu_at_start);
    super::close_all(tasks).await;

    let (server, loadgen) = probes.finish(cpu_used);
    let connect_us = super::connect_latencies(&setup);
    let dropped = setup.dropped.load(Relaxed);
    let stats = std::mem::replace(&mut *lock(&storm.stats), Stats::new()?);
    let report = StormReport {
        scenario: "matchmaking-storm",
        target: report::TARGET,
        mode: "network",
        params: StormParams {
            arrivals_per_min: args.arrivals_per_min,
            duration_s: args.duration_s,
            teams: args.teams,
            team_size: args.team_size,
            seed: args.seed,
            network: Some(NetParams {
                url: args.url.clone(),
                clients: args.clients,
                concurrency: args.concurrency,
                source_ips,
                threads: args.threads,
                server_pid: args.server_pid,
                admin_url: args.admin_url.clone(),
                run_id: args.run_id(),
                queue: format!("{GAME}/{MODE}"),
            }),
        },
        tickets: stats.tickets,
        matched_tickets: stats.matched_tickets,
        matches: stats.matches,
        matches_per_s: report::round(
            stats.matches_in_window as f64 / args.duration_s.max(1) as f64,
            2,
        ),
        timed_out: stats.timed_out,
        still_waiting: stats.still_waiting,
        wait_ms: Percentiles::of(&stats.wait_ms),
        rating_spread: Percentiles::of(&stats.spread),
        team_difference: Percentiles::of(&stats.difference),
        tick_us: None,
        queue_peak: None,
        network: Some(NetFigures {
            transport: transport_name(transport),
            connections,
            connect_failed: failed,
            dropped,
            connect_per_s: report::round(connections as f64 / connect_s.max(1e-9), 1),
            connect_p99_us: connect_us.value_at_quantile(0.99),
            arrivals,
            skipped_no_idle_client: skipped,
            start_errors: stats.start_errors,
            ended_otherwise: stats.ended_otherwise,
            matches_in_window: stats.matches_in_window,
            incomplete_matches: stats.groups.len() as u64,
            unexpected_matches: stats.unexpected_matches,
            leave_errors: stats.leave_errors,
            cancel_errors: stats.cancel_errors,
            start_reply_us: Percentiles::of(&stats.start_us),
            leave_reply_us: Percentiles::of(&stats.leave_us),
            busy_peak,
            window_s: report::round(window_s, 3),
            server,
            loadgen,
        }),
    };
    summarize(&report);
    print_failures(&setup);
    Ok(report)
}

/// The human summary, on stderr.
fn summarize(r: &NetworkReport) {
    if let Some(n) = &r.network {
        eprintln!(
            "matchmaking-storm over {}: {} players ({} failed, {} dropped later)",
            n.transport, n.connections, n.connect_failed, n.dropped
        );
        eprintln!(
            "  {} arrivals: {} tickets, {} skipped (no idle player), {} refused; {} busy at most",
            n.arrivals,
            r.tickets,
            n.skipped_no_idle_client,
            n.start_errors.values().sum::<u64>(),
            n.busy_peak
        );
    }
    eprintln!(
        "  {} matches ({} per s), {} matched tickets, {} timed out, {} still waiting at the end",
        r.matches, r.matches_per_s, r.matched_tickets, r.timed_out, r.still_waiting
    );
    let (w, s, d) = (&r.wait_ms, &r.rating_spread, &r.team_difference);
    eprintln!(
        "  wait ms p50 {} p90 {} p99 {} max {}; spread p50 {} p99 {} max {}; team difference p50 {} p99 {} max {}",
        w.p50, w.p90, w.p99, w.max, s.p50, s.p99, s.max, d.p50, d.p99, d.max
    );
}

/// Connects player `i` with its rating in the token; records the connect
/// latency.
async fn connect(storm: &Storm, i: u32) -> Result<(Client, EventStream), Failure> {
    let setup = &storm.setup;
    let ratings = serde_json::json!({
        GAME: { "mu": storm.ratings[i as usize], "sigma": SIGMA }
    });
    let token = setup
        .mint(
            user_id(&storm.run_id, i),
            format!("player{i}"),
            Some(ratings),
        )
        .map_err(|e| Failure::new("token", e))?;
    let mut config = ClientConfig::new(setup.url(i), token);
    config.client_name = concat!("huddle-loadtest/", env!("CARGO_PKG_VERSION")).into();
    config.connect_timeout = SETUP_TIMEOUT;
    // A lost connection is counted as dropped, not resumed.
    config.reconnect = false;
    config.tls = setup.tls().clone();
    config.local_addr = Some(setup.source_ip(i));
    config.event_buffer = EVENT_BUFFER;
    let t0 = std::time::Instant::now();
    let connected = Client::connect(config)
        .await
        .map_err(|e| Failure::client("connect", e))?;
    setup.record_connect(t0.elapsed().as_micros() as u64);
    Ok(connected)
}

/// Player `i`: connects, then starts a ticket whenever the arrival clock
/// says so and plays it out, until told to finish (or the connection is
/// lost); then cancels the ticket still out and closes.
async fn player(storm: Arc<Storm>, i: u32, mut cmds: mpsc::Receiver<Cmd>) {
    let setup = storm.setup.clone();
    let Some((client, mut events)) = setup.run(i, Box::pin(connect(&storm, i))).await else {
        return;
    };
    lock(&storm.idle).push(i);
    // The ticket out: its id and when its start was sent.
    let mut ticket: Option<(String, Instant)> = None;
    let lost = loop {
        tokio::select! {
            // Events first: a `matched` already here beats a finish.
            biased;
            event = events.next() => match event {
                Some(Event::Matchmaking { event, .. }) => {
                    on_event(&storm, &client, i, &mut ticket, event).await;
                }
                Some(Event::Disconnected { reason, .. }) => {
                    break Some(Failure::new("disconnected", anyhow!("disconnected: {reason}")));
                }
                Some(Event::Closed) | None => {
                    break Some(Failure::new("closed", anyhow!("the client closed")));
                }
                Some(_) => {}
            },
            cmd = cmds.recv() => match cmd {
                Some(Cmd::Start(latencies)) => {
                    start(&storm, &client, i, &mut ticket, &latencies).await;
                }
                Some(Cmd::Finish) | None => break None,
            },
        }
    };
    match lost {
        None => {
            if let Some((request_id, _)) = ticket.take() {
                let cancelled = client.matchmaking_cancel(&request_id).await;
                let mut stats = lock(&storm.stats);
                stats.still_waiting += 1;
                stats.cancel_errors += u64::from(cancelled.is_err());
                drop(stats);
                storm.busy.fetch_sub(1, Relaxed);
            }
            client.close().await;
        }
        Some(failure) => {
            setup.dropped(i, failure);
            if ticket.is_some() {
                storm.busy.fetch_sub(1, Relaxed);
            } else {
                lock(&storm.idle).retain(|&k| k != i);
            }
        }
    }
    // A start sent after the loop ended finds nobody: it is not busy.
    cmds.close();
    while let Ok(cmd) = cmds.try_recv() {
        if matches!(cmd, Cmd::Start(_)) {
            storm.busy.fetch_sub(1, Relaxed);
        }
    }
}

/// Starts player `i`'s ticket; a refusal leaves the player idle again.
async fn start(
    storm: &Storm,
    client: &Client,
    i: u32,
    ticket: &mut Option<(String, Instant)>,
    latencies: &[(&str, u32)],
) {
    let t0 = Instant::now();
    let started = client.matchmaking_start(GAME, MODE, latencies).await;
    let us = t0.elapsed().as_micros() as u64;
    let mut stats = lock(&storm.stats);
    match started {
        Ok(t) => {
            stats.tickets += 1;
            stats.start_us.saturating_record(us.max(1));
            *ticket = Some((t.request_id, t0));
        }
        Err(e) => {
            *stats.start_errors.entry(error_kind(&e)).or_default() += 1;
            drop(stats);
            storm.release(i);
        }
    }
}

/// Acts on a matchmaking event of player `i`.
async fn on_event(
    storm: &Storm,
    client: &Client,
    i: u32,
    ticket: &mut Option<(String, Instant)>,
    event: MatchmakingEvent,
) {
    let ours = ticket
        .as_ref()
        .filter(|(id, _)| *id == event.request_id)
        .map(|&(_, t0)| t0);
    let kind = event.kind;
    if kind == MatchmakingEventKind::MATCHED {
        match ours {
            Some(t0) => storm.matched(
                i,
                event.team.map_or(0, u16::from),
                &event.lobby_id,
                t0.elapsed(),
            ),
            // A start whose reply was lost still put the player in a lobby.
            None => lock(&storm.stats).unexpected_matches += 1,
        }
        leave(storm, client, &event.lobby_id).await;
    } else if ours.is_none() {
        return;
    } else if kind == MatchmakingEventKind::FOUND {
        // The storm's queue has no ready check; accept one anyway.
        let _ = client.matchmaking_accept(&event.request_id).await;
        return;
    } else if kind == MatchmakingEventKind::TIMEOUT {
        lock(&storm.stats).timed_out += 1;
    } else if kind == MatchmakingEventKind::CANCELLED || kind == MatchmakingEventKind::REMOVED {
        lock(&storm.stats).ended_otherwise += 1;
    } else {
        // Status, requeued, started: the ticket goes on.
        return;
    }
    if ours.is_some() {
        *ticket = None;
        storm.release(i);
    }
}

/// Leaves a match's lobby, timing the reply.
async fn leave(storm: &Storm, client: &Client, lobby_id: &str) {
    let t0 = Instant::now();
    let left = client.lobby_leave(lobby_id).await;
    let us = t0.elapsed().as_micros() as u64;
    let mut stats = lock(&storm.stats);
    match left {
        Ok(()) => stats.leave_us.saturating_record(us.max(1)),
        Err(_) => stats.leave_errors += 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The queue PUT to the gateway is the in-process mode's, as the
    /// gateway reads it.
    #[test]
    fn the_queue_is_the_in_process_rules_as_the_gateway_reads_them() {
        let rules = rules(2, 5);
        let queues: Vec<huddle::ops::config::QueueConfig> =
            serde_json::from_value(queues_json(&rules)).unwrap();
        assert_eq!(queues.len(), 1);
        assert_eq!(
            (queues[0].game.as_str(), queues[0].mode.as_str()),
            (GAME, MODE)
        );
        assert_eq!(queues[0].ready_check_ms, None);
        assert_eq!(queues[0].rules().unwrap(), rules);
    }

    /// A short storm against a gateway in this process, over each
    /// transport: every player connects, tickets start, 1v1 matches form,
    /// their players leave their lobbies, and the report adds up.
    async fn storm_against_a_gateway(quic: bool) -> serde_json::Value {
        use clap::Parser as _;
        let dir = std::env::temp_dir().join(format!(
            "huddle-loadtest-mm-{}-{}",
            std::process::id(),
            if quic { "quic" } else { "ws" }
        ));
        let mut config = huddle::ops::config::Config::default();
        config.server.ws_addr = "127.0.0.1:0".parse().unwrap();
        config.server.quic_addr = "127.0.0.1:0".parse().unwrap();
        config.server.admin_addr = "127.0.0.1:0".parse().unwrap();
        config.server.data_dir = dir.clone();
        config.server.shutdown_timeout_ms = 3_000;
        config.auth.secret = Some("loadtest-secret".into());
        config.shards.count = 2;
        config.shards.pin = false;
        let gw = huddle::ops::gateway::start(config).await.unwrap();
        let url = if quic {
            format!("quic://{}", gw.quic_addr)
        } else {
            format!("ws://{}", gw.ws_addr)
        };
        let admin = format!("http://{}", gw.admin_addr);
        let cert = gw.cert_path.display().to_string();
        let mut args = Args::parse_from([
            "huddle-loadtest",
            "--scenario",
            "matchmaking-storm",
            "--url",
            &url,
            "--admin-url",
            &admin,
            "--jwt-secret",
            "loadtest-secret",
            "--ca-cert",
            &cert,
            "--clients",
            "30",
            "--arrivals-per-min",
            "1200",
            "--duration-s",
            "2",
            "--teams",
            "2",
            "--team-size",
            "1",
        ]);
        args.url_given = true;
        crate::setup::init_clock();
        let json = super::super::run(&args).await.unwrap();
        gw.shutdown().await;
        let _ = std::fs::remove_dir_all(&dir);
        serde_json::from_str(&json).unwrap()
    }

    fn check(v: &serde_json::Value, transport: &str) {
        assert_eq!(v["mode"], "network", "{v}");
        assert_eq!(v["transport"], transport, "{v}");
        assert_eq!(v["connections"], 30, "{v}");
        assert_eq!(v["arrivals"], 40, "{v}");
        assert_eq!(v["start_errors"], serde_json::json!({}), "{v}");
        let n = |k: &str| v[k].as_u64().unwrap();
        assert!(n("tickets") > 0 && n("matches") > 0, "{v}");
        assert_eq!(
            n("tickets") + n("skipped_no_idle_client"),
            n("arrivals"),
            "{v}"
        );
        assert_eq!(
            n("matched_tickets"),
            2 * n("matches") + n("incomplete_matches"),
            "{v}"
        );
        assert_eq!(
            n("matched_tickets") + n("timed_out") + n("ended_otherwise") + n("still_waiting"),
            n("tickets"),
            "{v}"
        );
        assert_eq!((n("leave_errors"), n("unexpected_matches")), (0, 0), "{v}");
        assert!(v["rating_spread"]["max"].as_u64().unwrap() <= 600, "{v}");
    }

    #[tokio::test]
    async fn a_short_storm_over_websocket_matches_and_adds_up() {
        check(&storm_against_a_gateway(false).await, "ws");
    }

    #[tokio::test]
    async fn a_short_storm_over_quic_matches_and_adds_up() {
        check(&storm_against_a_gateway(true).await, "quic");
    }

    #[test]
    fn errors_are_tallied_by_code() {
        let e = ClientError::Server {
            code: huddle_client::ErrorCode::MATCHMAKING_ERROR,
            message: String::new(),
            retryable: false,
        };
        assert_eq!(error_kind(&e), "MATCHMAKING_ERROR");
        assert_eq!(error_kind(&ClientError::Timeout), "TIMEOUT");
    }
}
