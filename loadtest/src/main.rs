//! `huddle-loadtest`: drives a Huddle gateway over WebSocket or QUIC and prints
//! one JSON report on stdout, in the shape of the baseline Socket.IO load
//! generator's report (`/work/shared/baseline/README.md`); a human summary
//! goes to stderr.
//!
//! It takes the baseline's flags (`--scenario --clients --room-size
//! --interval-ms --duration-s --hold-s --concurrency --source-ips --server-pid
//! --threads`) plus `--url ws://HOST:PORT` or `quic://HOST:PORT` and the
//! key/trust flags of a Huddle deployment (`--jwt-secret`, `--data-dir`,
//! `--ca-cert`, `--insecure`); chat-fanout also takes the operator API it
//! creates its rooms' channels with (`--admin-url`, `--admin-token`) and a
//! `--run-id` that keeps the rooms of different runs apart; lobby-churn takes
//! `--lobby-size` and `--think-ms`. matchmaking-storm takes
//! `--arrivals-per-min`, `--teams`, `--team-size` and `--seed`; it runs in
//! process unless `--url` is given, and then end to end against the gateway
//! (setting its queue through `--admin-url`).
//!
//! # Layout
//! - [`sys`]: the file limit, source addresses, `/proc` sampling.
//! - [`admin`]: the gateway's operator API (channel creation).
//! - [`setup`]: what every scenario shares: tokens, TLS trust, one
//!   connection's handshake and heartbeats, the setup phase's counters.
//! - [`report`]: the JSON report and the stderr summary.
//! - [`scenario`]: the scenarios, one module each.
//! - [`matchmaking_sim`]: matchmaking-storm in process (and what its
//!   end-to-end scenario shares with it).

mod admin;
mod matchmaking_sim;
mod report;
mod scenario;
mod setup;
mod sys;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::parser::ValueSource;
use clap::{value_parser, CommandFactory as _, FromArgMatches as _, Parser, ValueEnum};
use serde::Serialize;

/// The load patterns this generator knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Scenario {
    /// Rooms of --room-size clients; each client sends a chat message every --interval-ms.
    ChatFanout,
    /// Open --clients connections as fast as --concurrency allows, then hold them --hold-s seconds.
    ConnectStorm,
    /// Groups of --lobby-size clients create, join, READY and LEAVE a lobby, round after round,
    /// pausing --think-ms between a client's operations.
    LobbyChurn,
    /// Arrivals at --arrivals-per-min into a matchmaking queue for --duration-s:
    /// in process on a simulated clock, or with --url end to end, --clients
    /// players queueing through the gateway.
    MatchmakingStorm,
}

impl Scenario {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::ChatFanout => "chat-fanout",
            Self::ConnectStorm => "connect-storm",
            Self::LobbyChurn => "lobby-churn",
            Self::MatchmakingStorm => "matchmaking-storm",
        }
    }
}

/// Command-line flags; serialized (less the secret) as the report's `params`.
#[derive(Debug, Parser, Serialize)]
#[command(version, about)]
pub(crate) struct Args {
    #[arg(long, value_enum, default_value = "chat-fanout")]
    pub(crate) scenario: Scenario,
    /// Gateway address: ws://HOST:PORT (wss:// with TLS) or quic://HOST:PORT;
    /// several, comma-separated, spread the clients round-robin over them
    /// (one transport for all). matchmaking-storm runs end to end only when
    /// it is given.
    #[arg(long, default_value = "ws://127.0.0.1:7350")]
    pub(crate) url: String,
    /// Whether `--url` was given on the command line (set by `main`).
    #[arg(skip)]
    #[serde(skip)]
    pub(crate) url_given: bool,
    /// Number of client connections.
    #[arg(long, default_value_t = 1000, value_parser = value_parser!(u32).range(1..))]
    pub(crate) clients: u32,
    /// chat-fanout: clients per room.
    #[arg(long, default_value_t = 10, value_parser = value_parser!(u32).range(1..))]
    pub(crate) room_size: u32,
    /// chat-fanout: each client sends one message per interval.
    #[arg(long, default_value_t = 1000, value_parser = value_parser!(u64).range(1..))]
    pub(crate) interval_ms: u64,
    /// chat-fanout: length of the send phase; lobby-churn: of the churn phase.
    #[arg(long, default_value_t = 20)]
    pub(crate) duration_s: u64,
    /// lobby-churn: clients per group, and the lobby's `max`.
    #[arg(long, default_value_t = 4, value_parser = value_parser!(u32).range(1..=256))]
    pub(crate) lobby_size: u32,
    /// lobby-churn: pause from a reply (or its timeout) to the client's next request.
    #[arg(long, default_value_t = 1000)]
    pub(crate) think_ms: u64,
    /// matchmaking-storm: tickets arriving per minute (solo players); end to
    /// end, each arrival takes an idle one of the --clients players.
    #[arg(long, default_value_t = 10_000, value_parser = value_parser!(u64).range(1..=10_000_000))]
    pub(crate) arrivals_per_min: u64,
    /// matchmaking-storm: teams per match and players per team.
    #[arg(long, default_value_t = 2, value_parser = value_parser!(u16).range(1..=64))]
    pub(crate) teams: u16,
    #[arg(long, default_value_t = 5, value_parser = value_parser!(u16).range(1..=64))]
    pub(crate) team_size: u16,
    /// matchmaking-storm: random seed (the run is deterministic for it).
    #[arg(long, default_value_t = 1)]
    pub(crate) seed: u64,
    /// connect-storm: how long to hold the connections open once all are up.
    #[arg(long, default_value_t = 10)]
    pub(crate) hold_s: u64,
    /// Connection setups (connect + Hello/Welcome [+ joins]) in flight at once.
    #[arg(long, default_value_t = 256, value_parser = value_parser!(u32).range(1..))]
    pub(crate) concurrency: u32,
    /// Spread connections over source addresses 127.0.0.1..127.0.0.N [default: ceil(clients/5000)].
    #[arg(long, value_parser = value_parser!(u32).range(1..))]
    pub(crate) source_ips: Option<u32>,
    /// Gateway process to sample from /proc every 100 ms (CPU and peak RSS).
    #[arg(long)]
    pub(crate) server_pid: Option<u32>,
    /// Tokio worker threads; 1 runs everything on a current-thread runtime.
    #[arg(long, default_value_t = 1, value_parser = value_parser!(u32).range(1..))]
    pub(crate) threads: u32,
    /// HS256 secret the tokens are signed with [default: the contents of
    /// <data-dir>/dev-secret, as `huddle token` uses]. Not echoed in the report.
    #[arg(long, env = "HUDDLE_JWT_SECRET", hide_env_values = true)]
    #[serde(skip)]
    pub(crate) jwt_secret: Option<String>,
    /// The gateway's data directory: dev-secret and tls/cert.pem are read from it.
    #[arg(long, default_value = "huddle-data")]
    pub(crate) data_dir: PathBuf,
    /// PEM certificate(s) to trust for quic:// and wss:// [default for quic://:
    /// <data-dir>/tls/cert.pem].
    #[arg(long)]
    pub(crate) ca_cert: Option<PathBuf>,
    /// Accept any server certificate (development only).
    #[arg(long)]
    pub(crate) insecure: bool,
    /// chat-fanout: the gateway's operator API, where each room's channel is
    /// created; matchmaking-storm end to end: where its queue is set.
    #[arg(long, default_value = "http://127.0.0.1:7352")]
    pub(crate) admin_url: String,
    /// chat-fanout, matchmaking-storm: bearer token for the operator API (the gateway's
    /// `server.admin_token`), when it has one. Not echoed in the report.
    #[arg(long, env = "HUDDLE_ADMIN_TOKEN", hide_env_values = true)]
    #[serde(skip)]
    pub(crate) admin_token: Option<String>,
    /// chat-fanout: prefix of the rooms' channels, `channel:<run-id>-lt-room-<k>`,
    /// so runs against one gateway never share a room [default: this process's id].
    #[arg(long, value_parser = parse_run_id)]
    pub(crate) run_id: Option<String>,
}

impl Args {
    /// `--run-id`, or this process's id.
    pub(crate) fn run_id(&self) -> String {
        self.run_id
            .clone()
            .unwrap_or_else(|| std::process::id().to_string())
    }
}

/// A run id: 1 to 64 of `[A-Za-z0-9._-]`, so that it fits any channel name.
fn parse_run_id(s: &str) -> Result<String, String> {
    let ok = (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(s.to_owned())
    } else {
        Err("use 1 to 64 characters of A-Z a-z 0-9 . _ -".into())
    }
}

fn main() -> ExitCode {
    let matches = Args::command().get_matches();
    let mut args = Args::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    args.url_given = matches.value_source("url") == Some(ValueSource::CommandLine);
    match run(&args) {
        Ok(report) => {
            println!("{report}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("huddle-loadtest: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> anyhow::Result<String> {
    if args.scenario == Scenario::MatchmakingStorm && !args.url_given {
        return matchmaking_sim::run(matchmaking_sim::StormParams {
            arrivals_per_min: args.arrivals_per_min,
            duration_s: args.duration_s,
            teams: args.teams,
            team_size: args.team_size,
            seed: args.seed,
            network: None,
        });
    }
    setup::init_clock();
    // Each connection holds one socket (TCP, or QUIC's UDP endpoint).
    let needed = u64::from(args.clients) + 64;
    let nofile = sys::raise_nofile_limit(needed);
    if nofile < needed {
        eprintln!(
            "warning: RLIMIT_NOFILE is {nofile}, below the {needed} this run may need; \
             setups past it fail with \"Too many open files\""
        );
    }
    let runtime = if args.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads as usize)
            .enable_all()
            .build()?
    };
    let report = runtime.block_on(scenario::run(args))?;
    // Connections still closing are not waited for.
    runtime.shutdown_background();
    Ok(report)
}
