//! The edge's settings: the `[server]` section (listeners, data directory,
//! drain and GoAway timing) and the `[session]` section (heartbeats,
//! windows, frame and queue bounds, rate limits), with their defaults and
//! validation. `ops::config` assembles them into the whole configuration
//! and re-exports them.
//!
//! Owns parsing shapes and checks only; never opens sockets or files and
//! never reads another layer's settings.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The `[server]` section: listeners, the data directory, connection and
/// drain limits, and the node's identity. The edge binds and drains by it;
/// the operator API (`admin_addr`, `admin_token`) and the node id are read
/// by `ops`, which checks them.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// WebSocket listener.
    pub ws_addr: SocketAddr,
    /// QUIC listener (UDP).
    pub quic_addr: SocketAddr,
    /// Admin HTTP listener: /healthz, /readyz, /metrics.
    pub admin_addr: SocketAddr,
    /// Where the dev secret, the self-signed certificate and (later) the
    /// embedded store live.
    pub data_dir: PathBuf,
    /// Tokio I/O worker threads; 0 = half the available cores (at least
    /// one), so that I/O workers and shard threads together do not
    /// oversubscribe the cores.
    pub io_threads: usize,
    /// Connections refused above this many (each holds a file descriptor).
    pub max_connections: usize,
    /// Upper bound on a graceful shutdown (GoAway, drain, close).
    pub shutdown_timeout_ms: u64,
    /// How long `/readyz` answers 503 before GoAway goes out (on SIGTERM or
    /// `POST /v1/drain`), while every connection is still served: long
    /// enough for a load balancer's health checks to take the node out.
    pub drain_readyz_ms: u64,
    /// The least a client is told to wait before reconnecting after GoAway.
    pub goaway_reconnect_ms: u32,
    /// Each session's GoAway adds a random 0..=this to
    /// `goaway_reconnect_ms`, so a drained node's clients do not all come
    /// back at once.
    pub goaway_jitter_ms: u32,
    /// This node's id (0..511), part of every message id; unique per cluster.
    pub node_id: u16,
    /// Bearer token the operator API (`/v1/...`) requires; none on loopback
    /// by default.
    pub admin_token: Option<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            ws_addr: "127.0.0.1:7350".parse().expect("literal"),
            quic_addr: "127.0.0.1:7351".parse().expect("literal"),
            admin_addr: "127.0.0.1:7352".parse().expect("literal"),
            data_dir: PathBuf::from("./huddle-data"),
            io_threads: 0,
            max_connections: 200_000,
            shutdown_timeout_ms: 10_000,
            drain_readyz_ms: 5_000,
            goaway_reconnect_ms: 1_000,
            goaway_jitter_ms: 4_000,
            node_id: 0,
            admin_token: None,
        }
    }
}

/// The `[session]` section: heartbeats, handshake and resume windows,
/// frame and queue bounds, and the per-connection rate limit.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionConfig {
    /// Clients ping at least this often; the gateway pings a quiet client.
    pub heartbeat_ms: u32,
    /// A connection silent this long is closed.
    pub heartbeat_timeout_ms: u32,
    /// Time to send `Hello` after connecting.
    pub handshake_timeout_ms: u32,
    /// How long a dropped session stays resumable.
    pub resume_window_ms: u32,
    /// Largest inbound frame.
    pub max_frame_bytes: u32,
    /// WebSocket read buffer per connection: also the most one read takes
    /// from the socket. Small keeps idle connections cheap; raise it when
    /// clients send many large frames.
    pub ws_read_buffer_bytes: usize,
    /// Frames waiting to be written per session. When a reliable frame finds
    /// it full the connection is closed with SLOW_CONSUMER (while attached) or
    /// the session is ended so its resume fails loudly (while detached).
    pub outbound_queue: usize,
    /// The same bound in bytes.
    pub outbound_queue_bytes: usize,
    /// Queue depth from which volatile events are shed instead of queued.
    pub volatile_shed_at: usize,
    /// Written-but-unacknowledged reliable events kept per session for
    /// resume. Older ones are released; a resume needing them fails.
    pub replay_buffer: usize,
    /// The same bound in bytes.
    pub replay_buffer_bytes: usize,
    /// Frames the writer takes from the queue per batch.
    pub write_batch: usize,
    /// Requests per second per connection (token bucket refill).
    pub rate_per_s: f64,
    /// Token bucket size.
    pub rate_burst: f64,
    /// Malformed frames tolerated before the connection is closed.
    pub max_malformed: u32,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            heartbeat_ms: 15_000,
            heartbeat_timeout_ms: 45_000,
            handshake_timeout_ms: 10_000,
            resume_window_ms: 30_000,
            max_frame_bytes: huddle_schema::DEFAULT_MAX_FRAME_BYTES as u32,
            ws_read_buffer_bytes: 128,
            outbound_queue: 1024,
            outbound_queue_bytes: 4 << 20,
            volatile_shed_at: 512,
            replay_buffer: 4096,
            replay_buffer_bytes: 4 << 20,
            write_batch: 64,
            rate_per_s: 100.0,
            rate_burst: 200.0,
            max_malformed: 3,
        }
    }
}

impl ServerConfig {
    /// Why the drain and GoAway timing cannot work, if it cannot.
    pub fn validate_drain(&self) -> Result<(), String> {
        if self.drain_readyz_ms > 600_000 {
            return Err("server.drain_readyz_ms must be at most 600000 (10 minutes)".into());
        }
        if u64::from(self.goaway_reconnect_ms) + u64::from(self.goaway_jitter_ms) > 3_600_000 {
            return Err(
                "server.goaway_reconnect_ms + server.goaway_jitter_ms must be at most 3600000 (an hour)"
                    .into(),
            );
        }
        Ok(())
    }
}

impl SessionConfig {
    /// Why the heartbeat, queue, frame, window and rate settings cannot
    /// work, if they cannot. (`write_batch` and `replay_buffer` are checked
    /// by `ops::config` together with `shards.mailbox`.)
    pub fn validate(&self) -> Result<(), String> {
        let bad = |m: &str| Err(m.to_string());
        if self.heartbeat_ms == 0 || self.heartbeat_timeout_ms <= self.heartbeat_ms {
            return bad(
                "session.heartbeat_timeout_ms must be larger than session.heartbeat_ms (> 0)",
            );
        }
        if self.outbound_queue < 2
            || self.volatile_shed_at == 0
            || self.volatile_shed_at > self.outbound_queue
        {
            return bad(
                "session.volatile_shed_at must be between 1 and session.outbound_queue (>= 2)",
            );
        }
        if self.max_frame_bytes < 256 || self.max_frame_bytes > 16 << 20 {
            return bad("session.max_frame_bytes must be 256 bytes to 16 MiB");
        }
        if self.outbound_queue_bytes < self.max_frame_bytes as usize
            || self.replay_buffer_bytes < self.max_frame_bytes as usize
        {
            return bad("session.outbound_queue_bytes and session.replay_buffer_bytes must hold at least one max_frame_bytes frame");
        }
        if self.handshake_timeout_ms == 0 || self.resume_window_ms == 0 {
            return bad("session.handshake_timeout_ms and session.resume_window_ms must be > 0");
        }
        if self.ws_read_buffer_bytes < 64 {
            return bad("session.ws_read_buffer_bytes must be at least 64");
        }
        if self.rate_per_s <= 0.0 || self.rate_burst < 1.0 {
            return bad("session.rate_per_s must be > 0 and session.rate_burst >= 1");
        }
        Ok(())
    }
}
