//! Gateway configuration: one TOML file plus `HUDDLE_*` environment overrides
//! (`HUDDLE_SESSION__HEARTBEAT_MS=5000` sets `[session] heartbeat_ms`), every
//! key with an embedded default so `huddle` runs with no file at all.
//!
//! Owns parsing and validation only; it never opens sockets or files other
//! than the config file itself. Every key is documented in
//! `deploy/huddle.example.toml`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

/// The whole configuration.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub log: LogConfig,
    pub tls: TlsConfig,
    pub auth: AuthConfig,
    pub session: SessionConfig,
    pub shards: ShardConfig,
    pub chat: ChatConfig,
    pub notifications: NotificationConfig,
    pub webhooks: WebhookConfig,
    pub lobbies: LobbyConfig,
    pub matchmaking: MatchmakingConfig,
    pub store: StoreConfig,
}

/// Which store keeps history.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// `<data_dir>/history.redb`: one node, nothing to run.
    #[default]
    Embedded,
    /// A ScyllaDB cluster (any CQL v4 server), with a spill journal in
    /// `<data_dir>/journal.redb`.
    Scylla,
}

/// Where chat history, relations, notifications, ratings and the webhook
/// outbox are kept.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    pub kind: StoreKind,
    /// When a reply that something was stored is sent: `durable` once the
    /// record is synced to the acknowledgement journal (`<data_dir>/ack`,
    /// survives kill -9 and power loss), `fast` as soon as it is queued.
    pub ack: crate::backend::store::ack::AckMode,
    /// Page cache of the embedded store, MiB (redb's default would be
    /// 1 GiB; the spill journal's is 16 MiB).
    pub cache_mb: usize,
    /// Used when `kind = "scylla"`.
    pub scylla: ScyllaConfig,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            kind: StoreKind::default(),
            ack: crate::backend::store::ack::AckMode::Durable,
            cache_mb: 64,
            scylla: ScyllaConfig::default(),
        }
    }
}

/// A ScyllaDB cluster and the writer that feeds it. `Debug` leaves the
/// password out.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScyllaConfig {
    /// `host:port` of some nodes; the driver discovers the rest.
    pub nodes: Vec<String>,
    pub keyspace: String,
    /// Replicas per datacenter (NetworkTopologyStrategy), e.g.
    /// `{ dc1 = 3, dc2 = 3 }`. Empty: SimpleStrategy with
    /// `replication_factor` — for a development node only.
    pub datacenters: std::collections::BTreeMap<String, u32>,
    pub replication_factor: u32,
    /// The datacenter this gateway runs in: requests go to its replicas.
    pub local_datacenter: Option<String>,
    /// Consistency of every read and write: ONE, TWO, THREE, QUORUM, ALL,
    /// LOCAL_QUORUM or LOCAL_ONE (reads refuse EACH_QUORUM).
    pub consistency: String,
    /// Create the keyspace and tables (`deploy/scylla/schema.cql`) when
    /// missing. Off where the schema is managed by hand.
    pub apply_schema: bool,
    pub username: Option<String>,
    pub password: Option<String>,
    /// Talk TLS to the nodes.
    pub tls: bool,
    /// PEM file of the CA(s) the nodes' certificates chain to (TLS).
    pub ca: Option<PathBuf>,
    /// PEM client certificate and key, for clusters that require them.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    /// A request not answered in this time fails (and its batch is retried
    /// or spilled).
    pub request_timeout_ms: u64,
    /// Records per batch at most.
    pub batch_records: usize,
    /// How long the writer waits to fill a batch.
    pub linger_ms: u64,
    /// Batches written at once. This is the high-water mark: a batch that
    /// finds them all busy (ScyllaDB slow or down) spills to the journal.
    pub inflight_batches: usize,
    /// Statements of one batch in flight at once.
    pub concurrency: usize,
}

impl Default for ScyllaConfig {
    fn default() -> Self {
        Self {
            nodes: vec!["127.0.0.1:9042".into()],
            keyspace: "huddle".into(),
            datacenters: Default::default(),
            replication_factor: 1,
            local_datacenter: None,
            consistency: "LOCAL_QUORUM".into(),
            apply_schema: true,
            username: None,
            password: None,
            tls: false,
            ca: None,
            client_cert: None,
            client_key: None,
            request_timeout_ms: 5_000,
            batch_records: 1_024,
            linger_ms: 5,
            inflight_batches: 4,
            concurrency: 256,
        }
    }
}

impl std::fmt::Debug for ScyllaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScyllaConfig")
            .field("nodes", &self.nodes)
            .field("keyspace", &self.keyspace)
            .field("replication", &self.replication())
            .field("local_datacenter", &self.local_datacenter)
            .field("consistency", &self.consistency)
            .field("apply_schema", &self.apply_schema)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("tls", &self.tls)
            .field("ca", &self.ca)
            .field("client_cert", &self.client_cert)
            .field("client_key", &self.client_key)
            .field("request_timeout_ms", &self.request_timeout_ms)
            .field("batch_records", &self.batch_records)
            .field("linger_ms", &self.linger_ms)
            .field("inflight_batches", &self.inflight_batches)
            .field("concurrency", &self.concurrency)
            .finish()
    }
}

impl ScyllaConfig {
    /// The keyspace's replication, as CQL.
    pub fn replication(&self) -> String {
        if self.datacenters.is_empty() {
            format!(
                "{{'class': 'SimpleStrategy', 'replication_factor': {}}}",
                self.replication_factor
            )
        } else {
            let dcs: Vec<String> = self
                .datacenters
                .iter()
                .map(|(dc, n)| format!("'{dc}': {n}"))
                .collect();
            format!("{{'class': 'NetworkTopologyStrategy', {}}}", dcs.join(", "))
        }
    }

    fn validate(&self) -> Result<(), String> {
        let name =
            |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if self.nodes.is_empty() {
            return Err("store.scylla.nodes must name at least one host:port".into());
        }
        if !name(&self.keyspace) {
            return Err(format!(
                "store.scylla.keyspace {:?}: letters, digits and _ only",
                self.keyspace
            ));
        }
        if let Some(dc) = self.datacenters.keys().find(|dc| {
            dc.is_empty()
                || !dc
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
        }) {
            return Err(format!(
                "store.scylla.datacenters: {dc:?} is not a datacenter name"
            ));
        }
        if self.datacenters.values().any(|&n| n == 0) || self.replication_factor == 0 {
            return Err("store.scylla replication factors must be at least 1".into());
        }
        match &self.local_datacenter {
            Some(dc) if !self.datacenters.is_empty() && !self.datacenters.contains_key(dc) => {
                return Err(format!(
                    "store.scylla.local_datacenter {dc:?} is not one of store.scylla.datacenters"
                ));
            }
            None if self.datacenters.len() > 1 => {
                return Err(
                    "store.scylla.local_datacenter must name this gateway's datacenter when \
                     store.scylla.datacenters has several"
                        .into(),
                );
            }
            _ => {}
        }
        crate::backend::store::scylla::consistency(&self.consistency)?;
        if self.username.is_some() != self.password.is_some() {
            return Err("store.scylla.username and password go together".into());
        }
        if self.client_cert.is_some() != self.client_key.is_some() {
            return Err("store.scylla.client_cert and client_key go together".into());
        }
        if !self.tls && (self.ca.is_some() || self.client_cert.is_some()) {
            return Err("store.scylla.ca and client_cert need store.scylla.tls = true".into());
        }
        if self.tls && self.ca.is_none() {
            return Err("store.scylla.tls = true needs store.scylla.ca (a PEM file)".into());
        }
        if self.request_timeout_ms == 0
            || self.request_timeout_ms > 600_000
            || !(1..=65_536).contains(&self.batch_records)
            || !(1..=1_024).contains(&self.inflight_batches)
            || !(1..=4_096).contains(&self.concurrency)
            || self.linger_ms > 100
        {
            return Err(
                "store.scylla: request_timeout_ms 1..600000, batch_records 1..65536, \
                        inflight_batches 1..1024, concurrency 1..4096, linger_ms at most 100"
                    .into(),
            );
        }
        Ok(())
    }
}

/// Matchmaking: how often queues tick, and the queues as data.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MatchmakingConfig {
    /// Time between two ticks of every queue.
    pub tick_ms: u64,
    pub queues: Vec<QueueConfig>,
}

impl Default for MatchmakingConfig {
    fn default() -> Self {
        Self {
            tick_ms: 250,
            queues: Vec::new(),
        }
    }
}

/// A limit that widens with waiting time (see `engine::matchmaking::matcher::Widening`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WideningConfig {
    pub start: f64,
    pub step: f64,
    pub every_ms: u64,
    pub max: f64,
}

/// One queue, keyed by game and mode.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    pub game: String,
    pub mode: String,
    pub teams: u16,
    pub team_size: u16,
    pub regions: Vec<String>,
    /// Largest rating difference within a match.
    pub spread: WideningConfig,
    /// Largest latency to the match's region, ms.
    pub latency: WideningConfig,
    pub timeout_ms: u64,
    /// Every player must accept within this long; absent: no ready check.
    #[serde(default)]
    pub ready_check_ms: Option<u64>,
    /// Preferences every ticket states and how they must agree in a match.
    #[serde(default)]
    pub attributes: Vec<AttributeConfig>,
    /// Roles players may take, each with the most one team may hold.
    #[serde(default)]
    pub roles: std::collections::BTreeMap<String, u16>,
}

/// One attribute of a queue: `{ name = "map", rule = "match" }` (every
/// ticket of a match gives the same text) or `{ name = "level", rule =
/// "range", within = 5.0 }` (numbers within 5 of each other).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AttributeConfig {
    pub name: String,
    pub rule: AttributeRuleConfig,
    #[serde(default)]
    pub within: f64,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AttributeRuleConfig {
    Match,
    Range,
}

impl QueueConfig {
    /// The engine's rule set, or why these rules cannot work.
    pub fn rules(&self) -> Result<crate::core::engine::matchmaking::matcher::QueueRules, String> {
        use crate::core::engine::matchmaking::matcher::{QueueRules, Widening, MAX_REGIONS};
        let name = format!("matchmaking queue {}/{}", self.game, self.mode);
        if self.game.is_empty() || self.mode.is_empty() {
            return Err("matchmaking queues need a game and a mode".into());
        }
        if self.teams == 0 || self.team_size == 0 {
            return Err(format!("{name}: teams and team_size must be at least 1"));
        }
        if self.regions.is_empty() || self.regions.len() > MAX_REGIONS {
            return Err(format!("{name}: 1..={MAX_REGIONS} regions"));
        }
        if self.regions.iter().any(|r| r.is_empty() || r.len() > 64) {
            return Err(format!("{name}: region names are 1..=64 bytes"));
        }
        let players = usize::from(self.teams) * usize::from(self.team_size);
        let most = usize::from(crate::core::engine::lobbies::MAX_CAPACITY);
        if players > most {
            return Err(format!(
                "{name}: a match of {players} players does not fit a lobby (at most {most})"
            ));
        }
        for (what, w) in [("spread", &self.spread), ("latency", &self.latency)] {
            let ok = w.start.is_finite()
                && w.step.is_finite()
                && w.max.is_finite()
                && w.start >= 0.0
                && w.step >= 0.0
                && w.max >= w.start
                && w.every_ms > 0;
            if !ok {
                return Err(format!(
                    "{name}: {what} needs 0 <= start <= max, step >= 0 and every_ms > 0"
                ));
            }
        }
        if self.timeout_ms == 0 || self.ready_check_ms == Some(0) {
            return Err(format!("{name}: timeout_ms and ready_check_ms must be > 0"));
        }
        let widening = |w: &WideningConfig| Widening {
            start: w.start,
            step: w.step,
            every_ms: w.every_ms,
            max: w.max,
        };
        use crate::core::engine::matchmaking::matcher::{
            AttributeMatch, AttributeRule, MAX_ATTRIBUTES, MAX_ROLES,
        };
        if self.attributes.len() > MAX_ATTRIBUTES || self.roles.len() > MAX_ROLES {
            return Err(format!(
                "{name}: at most {MAX_ATTRIBUTES} attributes and {MAX_ROLES} roles"
            ));
        }
        let mut attributes = Vec::with_capacity(self.attributes.len());
        for a in &self.attributes {
            if a.name.is_empty() || a.name.len() > 64 {
                return Err(format!("{name}: attribute names are 1..=64 bytes"));
            }
            if attributes
                .iter()
                .any(|r: &AttributeRule| *r.name == *a.name)
            {
                return Err(format!("{name}: attribute {} is listed twice", a.name));
            }
            let rule = match a.rule {
                AttributeRuleConfig::Match => AttributeMatch::Equal,
                AttributeRuleConfig::Range if a.within.is_finite() && a.within >= 0.0 => {
                    AttributeMatch::Within(a.within)
                }
                AttributeRuleConfig::Range => {
                    return Err(format!(
                        "{name}: range attribute {} needs within >= 0",
                        a.name
                    ))
                }
            };
            attributes.push(AttributeRule {
                name: std::sync::Arc::from(a.name.as_str()),
                rule,
            });
        }
        if self
            .roles
            .values()
            .any(|&cap| cap == 0 || cap > self.team_size)
        {
            return Err(format!(
                "{name}: a role's cap per team is 1..=team_size ({})",
                self.team_size
            ));
        }
        Ok(QueueRules {
            attributes,
            roles: self
                .roles
                .iter()
                .map(|(r, cap)| (std::sync::Arc::from(r.as_str()), *cap))
                .collect(),
            teams: self.teams,
            team_size: self.team_size,
            regions: self
                .regions
                .iter()
                .map(|r| std::sync::Arc::from(r.as_str()))
                .collect(),
            spread: widening(&self.spread),
            latency: widening(&self.latency),
            timeout_ms: self.timeout_ms,
        })
    }
}

/// The queues as the matchmaking engine takes them, or why this set of
/// queues cannot work (bad rules, a game/mode configured twice).
pub fn queue_specs(
    queues: &[QueueConfig],
) -> Result<Vec<crate::core::engine::matchmaking::QueueSpec>, String> {
    let mut keys = std::collections::HashSet::new();
    let mut specs = Vec::with_capacity(queues.len());
    for q in queues {
        let rules = q.rules()?;
        if q.game.len() > crate::core::engine::matchmaking::MAX_NAME
            || q.mode.len() > crate::core::engine::matchmaking::MAX_NAME
        {
            return Err(format!(
                "matchmaking queue {}/{}: game and mode are at most {} bytes",
                q.game,
                q.mode,
                crate::core::engine::matchmaking::MAX_NAME
            ));
        }
        if !keys.insert((q.game.as_str(), q.mode.as_str())) {
            return Err(format!(
                "matchmaking queue {}/{} is configured twice",
                q.game, q.mode
            ));
        }
        specs.push(crate::core::engine::matchmaking::QueueSpec {
            game: std::sync::Arc::from(q.game.as_str()),
            mode: std::sync::Arc::from(q.mode.as_str()),
            rules,
            ready_check_ms: q.ready_check_ms,
        });
    }
    Ok(specs)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LobbyConfig {
    /// How long a member whose last session ended keeps the slot.
    pub grace_ms: u64,
    /// How long a player assigned by an operator or the matchmaker keeps
    /// the slot before first connecting.
    pub assigned_grace_ms: u64,
    /// How long a kicked user may not rejoin that lobby.
    pub kick_ban_ms: u64,
    /// Lobbies of one game a user may be in at once; joining one more
    /// leaves the oldest.
    pub per_game: usize,
}

impl Default for LobbyConfig {
    fn default() -> Self {
        Self {
            grace_ms: 60_000,
            assigned_grace_ms: 600_000,
            kick_ban_ms: 300_000,
            per_game: 1,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NotificationConfig {
    /// Notifications kept per user; past it the oldest read one is deleted
    /// (the oldest, when all are unread).
    pub max_per_user: usize,
    /// The game's push service: POSTed one JSON body per push delivery.
    /// Empty: push is not configured and push deliveries fail with that reason.
    pub push_url: String,
    /// The game's email service, as `push_url`.
    pub email_url: String,
}

impl Default for NotificationConfig {
    fn default() -> Self {
        Self {
            max_per_user: 500,
            push_url: String::new(),
            email_url: String::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookConfig {
    /// The game backend's integration webhook: domain events are POSTed to
    /// it in batches. Empty: events stay inside the gateway.
    pub events_url: String,
    /// Sent as `Authorization: Bearer <token>` to every webhook when set.
    pub token: String,
    /// Attempts per delivery before it is marked failed.
    pub max_attempts: u16,
    /// First retry delay; doubles per attempt up to `retry_max_ms`.
    pub retry_base_ms: u64,
    pub retry_max_ms: u64,
    /// Per-request timeout.
    pub timeout_ms: u64,
    /// Domain events per integration POST at most.
    pub events_batch: usize,
    /// Requests in flight at once across all webhooks.
    pub concurrency: usize,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            events_url: String::new(),
            token: String::new(),
            max_attempts: 8,
            retry_base_ms: 1000,
            retry_max_ms: 60_000,
            timeout_ms: 5000,
            events_batch: 100,
            concurrency: 16,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChatConfig {
    /// Longest message, in characters (MESSAGE_ERROR above it).
    pub max_message_chars: usize,
    /// Messages kept in memory per chat (history pages, unread counts).
    pub recent_messages: usize,
    /// Client nonces remembered per chat, making retried sends idempotent.
    pub nonces_per_chat: usize,
    /// Least time between two typing signals of one user in one chat.
    pub typing_interval_ms: u64,
}

impl Default for ChatConfig {
    fn default() -> Self {
        Self {
            max_message_chars: 2000,
            recent_messages: 256,
            nonces_per_chat: 4096,
            typing_interval_ms: 1000,
        }
    }
}

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

/// How the gateway writes its log (to stderr). Which events is the
/// `HUDDLE_LOG` filter's business (`info` by default, e.g.
/// `HUDDLE_LOG=huddle=debug,info`), not a configuration key.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
}

/// One line per event: for a person, or for a log pipeline.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable; coloured only when stderr is a terminal.
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, the
    /// event's fields (`message` among them) and its spans.
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain for QUIC (and wss when `ws_tls`). Empty: a
    /// self-signed certificate is generated into `<data_dir>/tls/` — allowed
    /// only on loopback addresses.
    pub cert: Option<PathBuf>,
    /// PEM private key matching `cert`.
    pub key: Option<PathBuf>,
    /// Serve `wss://` instead of `ws://` on `ws_addr` with the same certificate.
    pub ws_tls: bool,
}

/// JWT algorithms the gateway accepts; exactly one is pinned.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
pub enum JwtAlgorithm {
    #[default]
    HS256,
    RS256,
    ES256,
    EdDSA,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// The one algorithm tokens must be signed with; others are refused.
    pub algorithm: JwtAlgorithm,
    /// HS256 shared secret. Empty: a random one is generated once into
    /// `<data_dir>/dev-secret` — allowed only on loopback addresses.
    pub secret: Option<String>,
    /// PEM public key for RS256 / ES256 / EdDSA.
    pub public_key: Option<PathBuf>,
    /// PEM private key used only by `huddle token` to mint dev tokens for
    /// RS256 / ES256 / EdDSA. The gateway itself never signs.
    pub private_key: Option<PathBuf>,
    /// When set, every token must carry `iss` equal to it (a token without
    /// `iss` is refused); `huddle token` mints it.
    pub issuer: Option<String>,
    /// When set, every token must carry `aud`, a string equal to it or an
    /// array containing it (a token without `aud` is refused); `huddle
    /// token` mints it.
    pub audience: Option<String>,
    /// Clock skew tolerated on exp / nbf, seconds.
    pub leeway_s: u64,
    /// User ids refused with ACCOUNT_DISABLED whatever their token says.
    pub disabled_users: Vec<String>,
}

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

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShardConfig {
    /// Engine shards (threads); 0 = available cores.
    pub count: usize,
    /// Pin each shard thread to a core.
    pub pin: bool,
    /// Commands waiting per shard. A request that finds it full is answered
    /// RATE_LIMITED (retryable); session control waits for room.
    pub mailbox: usize,
}

impl Default for ShardConfig {
    fn default() -> Self {
        Self {
            count: 0,
            pin: true,
            mailbox: 8192,
        }
    }
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Parse(#[from] Box<figment::Error>),
    #[error("configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Loads defaults, then `path` (when given), then `HUDDLE_*` variables.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = path {
            if !path.exists() {
                return Err(ConfigError::Invalid(format!(
                    "config file {} does not exist",
                    path.display()
                )));
            }
            fig = fig.merge(Toml::file(path));
        }
        // Only sectioned keys (HUDDLE_SECTION__KEY) are configuration;
        // HUDDLE_LOG, HUDDLE_CONFIG and the tools' own variables are not.
        fig = fig.merge(
            Env::prefixed("HUDDLE_")
                .filter(|key| key.as_str().contains("__"))
                .split("__"),
        );
        let config: Config = fig.extract().map_err(Box::new)?;
        config.validate()?;
        Ok(config)
    }

    /// Resolved I/O worker count.
    pub fn io_thread_count(&self) -> usize {
        if self.server.io_threads == 0 {
            (std::thread::available_parallelism().map_or(1, |n| n.get()) / 2).max(1)
        } else {
            self.server.io_threads
        }
    }

    /// Resolved shard count.
    pub fn shard_count(&self) -> usize {
        if self.shards.count == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            self.shards.count
        }
    }

    /// True when every listener is on a loopback address.
    pub fn loopback_only(&self) -> bool {
        [
            self.server.ws_addr,
            self.server.quic_addr,
            self.server.admin_addr,
        ]
        .iter()
        .all(|a| a.ip().is_loopback())
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let s = &self.session;
        let bad = |m: &str| Err(ConfigError::Invalid(m.to_string()));
        if s.heartbeat_ms == 0 || s.heartbeat_timeout_ms <= s.heartbeat_ms {
            return bad(
                "session.heartbeat_timeout_ms must be larger than session.heartbeat_ms (> 0)",
            );
        }
        if s.outbound_queue < 2 || s.volatile_shed_at == 0 || s.volatile_shed_at > s.outbound_queue
        {
            return bad(
                "session.volatile_shed_at must be between 1 and session.outbound_queue (>= 2)",
            );
        }
        if s.max_frame_bytes < 256 || s.max_frame_bytes > 16 << 20 {
            return bad("session.max_frame_bytes must be 256 bytes to 16 MiB");
        }
        if s.outbound_queue_bytes < s.max_frame_bytes as usize
            || s.replay_buffer_bytes < s.max_frame_bytes as usize
        {
            return bad("session.outbound_queue_bytes and session.replay_buffer_bytes must hold at least one max_frame_bytes frame");
        }
        if s.handshake_timeout_ms == 0 || s.resume_window_ms == 0 {
            return bad("session.handshake_timeout_ms and session.resume_window_ms must be > 0");
        }
        if s.ws_read_buffer_bytes < 64 {
            return bad("session.ws_read_buffer_bytes must be at least 64");
        }
        if s.rate_per_s <= 0.0 || s.rate_burst < 1.0 {
            return bad("session.rate_per_s must be > 0 and session.rate_burst >= 1");
        }
        let srv = &self.server;
        if srv.drain_readyz_ms > 600_000 {
            return bad("server.drain_readyz_ms must be at most 600000 (10 minutes)");
        }
        if u64::from(srv.goaway_reconnect_ms) + u64::from(srv.goaway_jitter_ms) > 3_600_000 {
            return bad(
                "server.goaway_reconnect_ms + server.goaway_jitter_ms must be at most 3600000 (an hour)",
            );
        }
        let w = &self.webhooks;
        if w.max_attempts == 0 || w.concurrency == 0 || w.events_batch == 0 {
            return bad(
                "webhooks.max_attempts, webhooks.concurrency and webhooks.events_batch must be > 0",
            );
        }
        if w.retry_base_ms == 0 || w.retry_max_ms < w.retry_base_ms || w.timeout_ms == 0 {
            return bad("webhooks.retry_base_ms and webhooks.timeout_ms must be > 0, and webhooks.retry_max_ms >= webhooks.retry_base_ms");
        }
        if !(1..=65_536).contains(&self.store.cache_mb) {
            return bad("store.cache_mb must be 1..=65536 (MiB)");
        }
        if self.store.kind == StoreKind::Scylla {
            self.store.scylla.validate().map_err(ConfigError::Invalid)?;
        }
        if self.matchmaking.tick_ms == 0 {
            return bad("matchmaking.tick_ms must be > 0");
        }
        queue_specs(&self.matchmaking.queues).map_err(ConfigError::Invalid)?;
        if self.lobbies.per_game == 0 {
            return bad("lobbies.per_game must be at least 1");
        }
        const MONTH_MS: u64 = 30 * 24 * 3600 * 1000;
        let l = &self.lobbies;
        if [l.grace_ms, l.assigned_grace_ms, l.kick_ban_ms]
            .iter()
            .any(|&ms| ms > MONTH_MS)
        {
            return bad(
                "lobbies.grace_ms, assigned_grace_ms and kick_ban_ms must be at most 30 days",
            );
        }
        if self.notifications.max_per_user == 0 {
            return bad("notifications.max_per_user must be > 0");
        }
        for (key, value) in [
            ("notifications.push_url", &self.notifications.push_url),
            ("notifications.email_url", &self.notifications.email_url),
            ("webhooks.events_url", &w.events_url),
        ] {
            if !value.is_empty()
                && !matches!(url::Url::parse(value), Ok(u) if u.scheme() == "http" || u.scheme() == "https")
            {
                return Err(ConfigError::Invalid(format!(
                    "{key} must be an http(s) URL, got {value:?}"
                )));
            }
        }
        if !self.server.admin_addr.ip().is_loopback() && self.server.admin_token.is_none() {
            return bad("server.admin_addr is not a loopback address: set server.admin_token for the operator API");
        }
        if self.server.node_id > 511 {
            return bad("server.node_id must be 0 to 511");
        }
        if self.chat.max_message_chars == 0 || self.chat.recent_messages == 0 {
            return bad("chat.max_message_chars and chat.recent_messages must be > 0");
        }
        if s.write_batch == 0 || s.replay_buffer == 0 || self.shards.mailbox == 0 {
            return bad(
                "session.write_batch, session.replay_buffer and shards.mailbox must be > 0",
            );
        }
        if !self.loopback_only() {
            let key = match self.auth.algorithm {
                JwtAlgorithm::HS256 => self.auth.secret.is_some(),
                _ => self.auth.public_key.is_some(),
            };
            if !key || self.tls.cert.is_none() || self.tls.key.is_none() {
                return bad(
                    "a listener is bound to a non-loopback address: configure [auth] secret or public_key \
                     and [tls] cert and key (generated dev keys are for loopback only)",
                );
            }
        }
        if self.auth.algorithm != JwtAlgorithm::HS256 && self.auth.public_key.is_none() {
            return bad("auth.algorithm other than HS256 needs auth.public_key (a PEM file)");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_loopback() {
        let c = Config::load(None).unwrap();
        assert!(c.loopback_only());
        assert_eq!(c.server.ws_addr.port(), 7350);
    }

    #[test]
    fn matchmaking_queues_are_data_and_bad_rules_are_refused() {
        let queue = r#"
            [matchmaking]
            tick_ms = 250
            [[matchmaking.queues]]
            game = "arena"
            mode = "5v5"
            teams = 2
            team_size = 5
            regions = ["eu", "us"]
            spread = { start = 100.0, step = 50.0, every_ms = 10000, max = 600.0 }
            latency = { start = 60.0, step = 20.0, every_ms = 15000, max = 200.0 }
            timeout_ms = 300000
            ready_check_ms = 15000
        "#;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.toml");
        std::fs::write(&path, queue).unwrap();
        let config = Config::load(Some(&path)).unwrap();
        let rules = config.matchmaking.queues[0].rules().unwrap();
        assert_eq!(rules.players(), 10);
        for (bad, why) in [
            ("team_size = 5", "team_size = 0"),
            ("max = 600.0", "max = 50.0"),
            ("regions = [\"eu\", \"us\"]", "regions = []"),
        ] {
            std::fs::write(&path, queue.replace(bad, why)).unwrap();
            assert!(Config::load(Some(&path)).is_err(), "{why} must be refused");
        }
        std::fs::write(
            &path,
            format!("{queue}{}", &queue[queue.find("[[").unwrap()..]),
        )
        .unwrap();
        assert!(
            Config::load(Some(&path)).is_err(),
            "a queue twice is refused"
        );
    }

    #[test]
    fn the_documented_example_is_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/huddle.example.toml");
        let example = Config::load(Some(&path)).unwrap();
        let defaults = Config::default();
        assert_eq!(
            toml::to_string(&example).unwrap(),
            toml::to_string(&defaults).unwrap(),
            "deploy/huddle.example.toml must document the embedded defaults"
        );
    }

    #[test]
    fn the_scylla_store_is_checked_when_chosen() {
        let mut c = Config::default();
        c.store.scylla.consistency = "SERIAL".into();
        assert!(c.validate().is_ok(), "unused while the store is embedded");
        c.store.kind = StoreKind::Scylla;
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("store.scylla.consistency"), "{err}");
        c.store.scylla.consistency = "local_quorum".into();
        assert!(c.validate().is_ok());
        c.store.scylla.username = Some("huddle".into());
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("username and password"), "{err}");
        c.store.scylla.password = Some("secret".into());
        c.store.scylla.ca = Some("/etc/ca.pem".into());
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("tls = true"), "{err}");
        c.store.scylla.tls = true;
        c.store.scylla.keyspace = "huddle; DROP".into();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("keyspace"), "{err}");
        c.store.scylla.keyspace = "huddle".into();
        assert!(c.validate().is_ok());
    }

    #[test]
    fn the_cluster_password_never_reaches_a_log() {
        let s = ScyllaConfig {
            password: Some("hunter2".into()),
            ..ScyllaConfig::default()
        };
        let shown = format!("{s:?}");
        assert!(
            !shown.contains("hunter2") && shown.contains("<redacted>"),
            "{shown}"
        );
    }

    #[test]
    fn replication_is_per_datacenter_in_production() {
        let mut s = ScyllaConfig::default();
        assert_eq!(
            s.replication(),
            "{'class': 'SimpleStrategy', 'replication_factor': 1}"
        );
        s.datacenters.insert("eu1".into(), 3);
        s.datacenters.insert("us1".into(), 3);
        assert_eq!(
            s.replication(),
            "{'class': 'NetworkTopologyStrategy', 'eu1': 3, 'us1': 3}"
        );
        s.datacenters.insert("x'y".into(), 1);
        assert!(s.validate().unwrap_err().contains("datacenter"));
    }

    #[test]
    fn drain_windows_are_bounded() {
        let mut c = Config::default();
        c.server.drain_readyz_ms = 0;
        c.server.goaway_jitter_ms = 0;
        assert!(c.validate().is_ok(), "no window and no jitter are allowed");
        c.server.drain_readyz_ms = 600_001;
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("server.drain_readyz_ms"), "{err}");
        c.server.drain_readyz_ms = 5_000;
        c.server.goaway_jitter_ms = u32::MAX;
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("server.goaway_jitter_ms"), "{err}");
    }

    #[test]
    fn public_bind_without_keys_is_refused() {
        let mut c = Config::default();
        c.server.ws_addr = "0.0.0.0:7350".parse().unwrap();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("non-loopback"), "{err}");
    }
}
