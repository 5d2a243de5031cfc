//! Gateway configuration: one TOML file plus `HUDDLE_*` environment overrides
//! (`HUDDLE_SESSION__HEARTBEAT_MS=5000` sets `[session] heartbeat_ms`), every
//! key with an embedded default so `huddle` runs with no file at all.
//!
//! Assembles the sections each layer owns — `[store]` (`backend::store`),
//! `[webhooks]` and `[notifications]` (`backend::webhook`), `[auth]`
//! (`edge::auth`), `[tls]` (`edge::tls`), `[server]` and `[session]`
//! (`edge::config`) — with the ones kept here (log, shards, chat, lobbies,
//! matchmaking), and re-exports them, so `ops::config::X` names every
//! section. Checks what spans sections (listeners on public addresses need
//! keys and a certificate, the operator token, node id, queue sizes).
//!
//! Owns parsing and validation only; it never opens sockets or files other
//! than the config file itself. Every key is documented in
//! `deploy/huddle.example.toml`.

use std::path::Path;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

pub use crate::backend::store::settings::{ScyllaConfig, StoreConfig, StoreKind};
pub use crate::backend::webhook::{NotificationConfig, WebhookConfig};
pub use crate::edge::auth::{AuthConfig, JwtAlgorithm};
pub use crate::edge::config::{ServerConfig, SessionConfig};
pub use crate::edge::tls::TlsConfig;

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
        let invalid = ConfigError::Invalid;
        let bad = |m: &str| Err(ConfigError::Invalid(m.to_string()));
        self.session.validate().map_err(invalid)?;
        self.server.validate_drain().map_err(invalid)?;
        self.webhooks.validate_limits().map_err(invalid)?;
        self.store.validate().map_err(invalid)?;
        if self.matchmaking.tick_ms == 0 {
            return bad("matchmaking.tick_ms must be > 0");
        }
        queue_specs(&self.matchmaking.queues).map_err(invalid)?;
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
        self.notifications.validate().map_err(invalid)?;
        self.webhooks.validate_events_url().map_err(invalid)?;
        if !self.server.admin_addr.ip().is_loopback() && self.server.admin_token.is_none() {
            return bad("server.admin_addr is not a loopback address: set server.admin_token for the operator API");
        }
        if self.server.node_id > 511 {
            return bad("server.node_id must be 0 to 511");
        }
        if self.chat.max_message_chars == 0 || self.chat.recent_messages == 0 {
            return bad("chat.max_message_chars and chat.recent_messages must be > 0");
        }
        let s = &self.session;
        if s.write_batch == 0 || s.replay_buffer == 0 || self.shards.mailbox == 0 {
            return bad(
                "session.write_batch, session.replay_buffer and shards.mailbox must be > 0",
            );
        }
        if !self.loopback_only()
            && (!self.auth.has_configured_key()
                || self.tls.cert.is_none()
                || self.tls.key.is_none())
        {
            return bad(
                "a listener is bound to a non-loopback address: configure [auth] secret or public_key \
                 and [tls] cert and key (generated dev keys are for loopback only)",
            );
        }
        self.auth.validate().map_err(invalid)?;
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
