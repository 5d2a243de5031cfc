//! The scenarios, one module each, and what they share: the source-address
//! choice, the `/proc` probes of the measurement window, waiting out the
//! setup phase, and assembling the report.
//!
//! A scenario module gets a ready [`Setup`] (shared by all its client tasks)
//! and a started [`Probes`], runs its clients, and returns the [`Report`]
//! (matchmaking-storm: its own report, shared with its in-process mode).

mod chat_fanout;
mod connect_storm;
mod lobby_churn;
mod matchmaking_storm;

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use huddle_client::transport::Transport;
use tokio::time::sleep;

use crate::report::{self, Loadgen, Server};
use crate::setup::{self, now_ns, Setup};
use crate::sys::{self, Monitor};
use crate::{Args, Scenario};

/// Where a timed run is; every client task watches it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Setups are under way.
    Setup,
    /// Work from this instant (+ the client's own offset) for `--duration-s`.
    Run(tokio::time::Instant),
    /// Close the connection.
    Done,
}

/// Time between telling the clients to start and the window's first slot,
/// so every client is waiting when it opens.
pub(crate) const START_DELAY: std::time::Duration = std::time::Duration::from_millis(100);

/// The clients of a phased scenario, connected (or failed) and waiting for
/// the run window.
pub(crate) struct Crowd {
    phase: tokio::sync::watch::Sender<Phase>,
    pub tasks: Vec<tokio::task::JoinHandle<()>>,
    pub connections: u64,
    pub failed: u64,
    pub connect_s: f64,
}

impl Crowd {
    /// Spawns `clients` client tasks (`client(i, phase)`) and waits until
    /// each has connected or failed.
    pub(crate) async fn gather<F, Fut>(
        setup: &Setup,
        clients: u32,
        client: F,
    ) -> anyhow::Result<Self>
    where
        F: Fn(u32, tokio::sync::watch::Receiver<Phase>) -> Fut,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let (phase, phase_rx) = tokio::sync::watch::channel(Phase::Setup);
        let started = Instant::now();
        let started_ns = now_ns();
        let tasks = (0..clients)
            .map(|i| tokio::spawn(client(i, phase_rx.clone())))
            .collect();
        drop(phase_rx);
        wait_for_setups(setup, clients, started).await;
        let (connections, failed, connect_s) = setup_outcome(setup, started_ns)?;
        Ok(Self {
            phase,
            tasks,
            connections,
            failed,
            connect_s,
        })
    }

    /// Opens the run window [`START_DELAY`] from now; answers its start.
    pub(crate) fn start(&self) -> tokio::time::Instant {
        let start = tokio::time::Instant::now() + START_DELAY;
        self.phase.send_replace(Phase::Run(start));
        start
    }

    /// Tells every client to close and waits for them; answers the
    /// report's connect figures.
    pub(crate) async fn finish(self, setup: &Setup) -> report::Connect {
        self.phase.send_replace(Phase::Done);
        close_all(self.tasks).await;
        report::Connect {
            per_s: report::round(self.connections as f64 / self.connect_s.max(1e-9), 1),
            p99_us: connect_latencies(setup).value_at_quantile(0.99),
            failed: self.failed,
        }
    }
}

/// Source addresses per connection count when `--source-ips` is not given:
/// the kernel's source-port search slows down as one address fills up.
const CONNECTIONS_PER_SOURCE_IP: u32 = 5_000;
/// How often the setup phase prints its progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// Runs the scenario `args` chooses and returns its JSON report.
pub(crate) async fn run(args: &Args) -> anyhow::Result<String> {
    let transport = setup::transport_of(&args.url)?;
    let source_ips = args
        .source_ips
        .unwrap_or(args.clients.div_ceil(CONNECTIONS_PER_SOURCE_IP))
        .max(1);
    let setup = Arc::new(Setup::new(args, transport, source_ips)?);
    let probes = Probes::start(args.server_pid);
    eprintln!(
        "{} {}: {} clients -> {} from {source_ips} source address(es), concurrency {}",
        args.scenario.name(),
        report::TARGET,
        args.clients,
        args.url,
        args.concurrency
    );
    let report = match args.scenario {
        Scenario::ConnectStorm => {
            connect_storm::run(args, transport, source_ips, setup, probes).await
        }
        Scenario::ChatFanout => chat_fanout::run(args, transport, source_ips, setup, probes).await,
        Scenario::LobbyChurn => lobby_churn::run(args, transport, source_ips, setup, probes).await,
        Scenario::MatchmakingStorm => {
            let report = matchmaking_storm::run(args, transport, source_ips, setup, probes).await?;
            return Ok(serde_json::to_string(&report)?);
        }
    }?;
    Ok(serde_json::to_string(&report)?)
}

/// The report's name of a transport.
fn transport_name(transport: Transport) -> &'static str {
    match transport {
        Transport::Ws => "ws",
        Transport::Quic => "quic",
    }
}

/// CPU and memory sampling of the gateway (with `--server-pid`) and of this
/// process.
pub(crate) struct Probes {
    server: Option<Monitor>,
    loadgen: Monitor,
}

/// CPU seconds (gateway, load generator) at one moment.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CpuMark(Option<f64>, f64);

impl Probes {
    fn start(server_pid: Option<u32>) -> Self {
        if let Some(pid) = server_pid.filter(|&pid| sys::usage(Some(pid)).is_none()) {
            eprintln!("warning: cannot read /proc/{pid}; the report's server figures will be 0");
        }
        Self {
            server: server_pid.map(|pid| Monitor::start(Some(pid))),
            loadgen: Monitor::start(None),
        }
    }

    /// CPU seconds used so far.
    pub(crate) fn mark(&self) -> CpuMark {
        CpuMark(
            self.server.as_ref().and_then(Monitor::cpu_s),
            self.loadgen.cpu_s().unwrap_or(0.0),
        )
    }

    /// CPU seconds used since `start`.
    pub(crate) fn since(&self, start: CpuMark) -> CpuMark {
        let now = self.mark();
        CpuMark(
            now.0.zip(start.0).map(|(end, begin)| end - begin),
            now.1 - start.1,
        )
    }

    /// Stops sampling; the report's `server` and `loadgen` for CPU `used`
    /// during the window.
    pub(crate) fn finish(self, used: CpuMark) -> (Option<Server>, Loadgen) {
        let server = self.server.map(|m| {
            let pid = m.pid().unwrap_or_default();
            Server {
                pid,
                rss_bytes_peak: m.stop(),
                cpu_s: report::round(used.0.unwrap_or(0.0), 2),
            }
        });
        let loadgen = Loadgen {
            rss_bytes_peak: self.loadgen.stop(),
            cpu_s: report::round(used.1, 2),
        };
        (server, loadgen)
    }
}

/// Waits until each of `clients` setups completed or failed, printing
/// progress on stderr.
pub(crate) async fn wait_for_setups(setup: &Setup, clients: u32, started: Instant) {
    let mut progress = Instant::now();
    loop {
        let (ready, failed) = (setup.ready.load(Relaxed), setup.failed.load(Relaxed));
        if ready + failed >= u64::from(clients) {
            eprintln!(
                "  setup done in {:.2} s: {ready} ready, {failed} failed",
                started.elapsed().as_secs_f64()
            );
            return;
        }
        if progress.elapsed() >= PROGRESS_EVERY {
            progress = Instant::now();
            eprintln!("  setup: {ready} ready, {failed} failed");
        }
        sleep(Duration::from_millis(20)).await;
    }
}

/// Prints the failures and drops by kind, when there were any.
/// How long closing every connection may take before the report goes out.
const CLOSE_WAIT: Duration = Duration::from_secs(10);

/// Waits (bounded) for every connection task to close cleanly.
pub(crate) async fn close_all(tasks: Vec<tokio::task::JoinHandle<()>>) {
    let closing = Instant::now();
    let all_closed = tokio::time::timeout(CLOSE_WAIT, async {
        for task in tasks {
            let _ = task.await;
        }
    })
    .await;
    match all_closed {
        Ok(()) => eprintln!("  closed in {:.2} s", closing.elapsed().as_secs_f64()),
        Err(_) => eprintln!(
            "  closing took over {} s; reporting anyway",
            CLOSE_WAIT.as_secs()
        ),
    }
}

/// The connect + handshake latencies the setups recorded.
pub(crate) fn connect_latencies(setup: &Setup) -> hdrhistogram::Histogram<u64> {
    setup
        .connect_us
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone()
}

pub(crate) fn print_failures(setup: &Setup) {
    let failures = setup
        .failures
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    for (kind, n) in failures.iter() {
        eprintln!("  {n} x {kind}");
    }
}

/// How the setups went: completed, failed, and the seconds from
/// `started_ns` to the last completed connect. Fails (after printing why)
/// when no client connected.
pub(crate) fn setup_outcome(setup: &Setup, started_ns: u64) -> anyhow::Result<(u64, u64, f64)> {
    let connections = setup.ready.load(Relaxed);
    let failed = setup.failed.load(Relaxed);
    let connect_s = setup
        .last_connect_ns
        .load(Relaxed)
        .saturating_sub(started_ns) as f64
        / 1e9;
    if connections == 0 {
        print_failures(setup);
        anyhow::bail!("no client could connect");
    }
    Ok((connections, failed, connect_s))
}
