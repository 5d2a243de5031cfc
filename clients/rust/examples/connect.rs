//! Connects to a Huddle gateway, prints the session from `Welcome`, echoes
//! once (printing the shard and round-trip time), asks for its own presence,
//! and closes.
//!
//! ```text
//! cargo run -p huddle-client --example connect -- --url ws://127.0.0.1:7350 --token "$JWT"
//! cargo run -p huddle-client --example connect -- --url quic://127.0.0.1:7351 \
//!     --ca-cert data/tls/cert.pem --token "$JWT"
//! ```

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use huddle_client::{Client, ClientConfig, TlsOptions};

#[derive(Parser, Debug)]
#[command(about = "Connect to a Huddle gateway, echo once, query presence, close")]
struct Args {
    /// Gateway URL: ws://, wss:// or quic://HOST:PORT.
    #[arg(long, default_value = "ws://127.0.0.1:7350")]
    url: String,
    /// JWT to present in Hello.
    #[arg(long, env = "HUDDLE_TOKEN", hide_env_values = true)]
    token: String,
    /// Trust this PEM certificate (e.g. the dev gateway's <data dir>/tls/cert.pem).
    #[arg(long, value_name = "PATH")]
    ca_cert: Option<PathBuf>,
    /// Accept any server certificate (development only).
    #[arg(long)]
    insecure: bool,
    /// Name the server certificate must carry (default: URL host for wss, localhost for quic).
    #[arg(long)]
    server_name: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let args = Args::parse();

    let ca_cert_pem = match &args.ca_cert {
        Some(path) => {
            Some(std::fs::read(path).with_context(|| format!("reading {}", path.display()))?)
        }
        None => None,
    };
    let mut config = ClientConfig::new(&args.url, &args.token);
    config.tls = TlsOptions {
        ca_cert_pem,
        accept_invalid_certs: args.insecure,
        server_name: args.server_name.clone(),
    };
    config.reconnect = false;

    let started = Instant::now();
    let (client, _events) = Client::connect(config)
        .await
        .with_context(|| format!("connecting to {}", args.url))?;
    let session = client.session();
    println!("connected to {} in {:?}", args.url, started.elapsed());
    println!("  session_id:           {}", session.session_id);
    println!("  user_id:              {}", session.user_id);
    println!("  username:             {}", session.username);
    println!("  display_name:         {}", session.display_name);
    println!("  roles:                {:?}", session.roles);
    println!("  heartbeat_ms:         {}", session.heartbeat_ms);
    println!("  heartbeat_timeout_ms: {}", session.heartbeat_timeout_ms);
    println!("  resume_window_ms:     {}", session.resume_window_ms);
    println!("  max_frame_bytes:      {}", session.max_frame_bytes);

    let sent = Instant::now();
    let reply = client
        .echo(b"hello from huddle-client")
        .await
        .context("echo")?;
    println!(
        "echo: {} bytes back from shard {} in {:?}",
        reply.payload.len(),
        reply.shard,
        sent.elapsed()
    );

    let presence = client
        .presence(&[session.user_id.as_str()])
        .await
        .context("presence")?;
    for entry in &presence {
        println!(
            "presence: {} is {} with {} connection(s), last active at {} ms",
            entry.user_id,
            entry.status.variant_name().unwrap_or("UNKNOWN"),
            entry.connections,
            entry.last_active_ms
        );
    }

    client.close().await;
    println!("closed");
    Ok(())
}
