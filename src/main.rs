//! The `huddle` command line: `huddle serve` (the default) runs the gateway;
//! `huddle token` mints a development token with the configured key.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Parser, Subcommand};
use huddle::edge::auth::{dev_secret, mint, MintRequest};
use huddle::ops::config::{Config, JwtAlgorithm, LogFormat};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "huddle", version, about = "Huddle real-time game gateway")]
struct Cli {
    /// Configuration file (TOML). Every key has a default; `HUDDLE_*`
    /// variables override, e.g. HUDDLE_SESSION__HEARTBEAT_MS=5000.
    #[arg(long, short, global = true, env = "HUDDLE_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the gateway (the default).
    Serve,
    /// Mint a token signed with the configured key.
    Token {
        /// User id (the `sub` claim).
        #[arg(long)]
        user: String,
        /// Username (the `name` claim); defaults to the user id.
        #[arg(long)]
        name: Option<String>,
        /// Display name.
        #[arg(long)]
        display_name: Option<String>,
        /// Role, repeatable (e.g. --role operator).
        #[arg(long = "role")]
        roles: Vec<String>,
        /// Lifetime, e.g. 1h, 30m, 7d.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: Duration,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // The log format is configuration: read it before the first event.
    let config = Config::load(cli.config.as_deref());
    init_logging(config.as_ref().map_or(LogFormat::Text, |c| c.log.format));
    let config = config?;
    let source = config_source(cli.config.as_deref());
    match cli.command.unwrap_or(Cmd::Serve) {
        Cmd::Token {
            user,
            name,
            display_name,
            roles,
            ttl,
        } => {
            let dev = match (&config.auth.algorithm, &config.auth.secret) {
                (JwtAlgorithm::HS256, None) => Some(dev_secret(&config.server.data_dir)?),
                _ => None,
            };
            let req = MintRequest {
                user_id: user,
                name,
                display_name,
                roles,
                ttl,
            };
            let token = mint(&config.auth, dev.as_deref(), &req)?;
            // On stderr, so `TOKEN=$(huddle token ...)` takes only the token.
            eprintln!("huddle token: configuration from {source}");
            eprintln!("huddle token: {}", minted_with(&config));
            println!("{token}");
            Ok(())
        }
        Cmd::Serve => {
            tracing::info!("configuration from {source}");
            serve(config, cli.config)
        }
    }
}

/// Where the configuration came from, in words.
fn config_source(path: Option<&Path>) -> String {
    match path {
        Some(path) => {
            let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
            format!("{} + HUDDLE_* environment", path.display())
        }
        None => "built-in defaults + HUDDLE_* environment (no --config)".into(),
    }
}

/// Which key signed a minted token and which `iss`/`aud` it carries: a
/// token the gateway refuses was most often minted with another data dir
/// or config than the gateway's.
fn minted_with(config: &Config) -> String {
    let auth = &config.auth;
    let key = match (auth.algorithm, &auth.secret, &auth.private_key) {
        (JwtAlgorithm::HS256, Some(_), _) => "auth.secret".to_string(),
        (JwtAlgorithm::HS256, None, _) => format!(
            "the dev secret {}",
            config.server.data_dir.join("dev-secret").display()
        ),
        (_, _, Some(path)) => format!("auth.private_key {}", path.display()),
        (_, _, None) => "auth.private_key".to_string(),
    };
    let claim = |name: &str, value: &Option<String>| match value {
        Some(v) => format!("{name}={v:?}"),
        None => format!("no {name}"),
    };
    format!(
        "{:?} with {key}; {}, {}",
        auth.algorithm,
        claim("iss", &auth.issuer),
        claim("aud", &auth.audience)
    )
}

/// The log on stderr, filtered by `HUDDLE_LOG` (default `info`), as text
/// (coloured only on a terminal, and never under `NO_COLOR`) or as JSON
/// lines.
fn init_logging(format: LogFormat) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("HUDDLE_LOG").unwrap_or_else(|_| "info".into());
    let log = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => {
            let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
            log.with_ansi(colour).init();
        }
        LogFormat::Json => log.json().flatten_event(true).with_ansi(false).init(),
    }
}

fn serve(config: Config, path: Option<PathBuf>) -> anyhow::Result<()> {
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.worker_threads(config.io_thread_count());
    let rt = rt.thread_name("huddle-io").enable_all().build()?;
    rt.block_on(async move {
        // Before the banner: whoever reads it may signal at once, and a
        // SIGTERM must never meet the default action (an unclean exit).
        let signals = Signals::install();
        let running = huddle::ops::gateway::start(config).await?;
        print_banner(&running);
        wait_for_signal(signals, &running, path.as_deref()).await;
        tracing::info!("shutting down: GoAway to clients, draining");
        let drained = running.shutdown().await;
        tracing::info!(drained, "stopped");
        anyhow::Ok(())
    })
}

/// The start-up banner on stdout: where Huddle listens and how to connect.
/// Write errors (a closed pipe) are ignored: the banner is a courtesy.
fn print_banner(running: &huddle::ops::gateway::Running) {
    use std::io::Write;
    let scheme = if running.ws_tls { "wss" } else { "ws" };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "huddle listening ws={scheme}://{} quic=quic://{} admin=http://{} shards={}",
        running.ws_addr,
        running.quic_addr,
        running.admin_addr,
        running.shards()
    );
    let _ = writeln!(
        out,
        "  mint a token:  cargo run --release -- token --user alice"
    );
    let _ = writeln!(
        out,
        "  connect:       cargo run --release -p huddle-client --example connect -- --url {scheme}://{} --token <TOKEN>",
        running.ws_addr
    );
    let _ = writeln!(
        out,
        "  over QUIC:     ... --url quic://{} --ca-cert {}",
        running.quic_addr,
        running.cert_path.display()
    );
    let _ = out.flush();
}

/// SIGTERM and SIGHUP handlers, installed before the gateway says it is
/// listening.
struct Signals {
    term: Option<tokio::signal::unix::Signal>,
    hup: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn install() -> Self {
        use tokio::signal::unix::{signal, SignalKind};
        Self {
            term: signal(SignalKind::terminate()).ok(),
            hup: signal(SignalKind::hangup()).ok(),
        }
    }
}

/// Waits for SIGTERM or Ctrl-C. SIGHUP re-reads the configuration file and
/// applies its matchmaking queues without a restart (everything else in
/// the file takes effect at the next start).
async fn wait_for_signal(
    signals: Signals,
    running: &huddle::ops::gateway::Running,
    path: Option<&Path>,
) {
    let (Some(mut term), Some(mut hup)) = (signals.term, signals.hup) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => return,
            _ = tokio::signal::ctrl_c() => return,
            _ = hup.recv() => {
                let reloaded = Config::load(path)
                    .map_err(|e| e.to_string())
                    .map(|c| c.matchmaking.queues);
                let applied = match reloaded {
                    Ok(queues) => running.reload_matchmaking(&queues).await,
                    Err(e) => Err(e),
                };
                match applied {
                    Ok(queues) => tracing::info!(queues, "SIGHUP: matchmaking queues reloaded"),
                    Err(why) => tracing::error!(%why, "SIGHUP: configuration refused; queues unchanged"),
                }
            }
        }
    }
}
