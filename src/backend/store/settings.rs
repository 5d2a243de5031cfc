//! The `[store]` settings: which store keeps history, when a write counts
//! as stored, and the embedded store's cache ([`ScyllaConfig`], the
//! cluster's own section, lives with the cluster store).
//!
//! Owns the settings' shape, defaults and validation only; it never opens a
//! store and never reads the rest of the gateway's configuration.

use serde::{Deserialize, Serialize};

use super::ack::AckMode;
pub use super::scylla::ScyllaConfig;

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
    pub ack: AckMode,
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
            ack: AckMode::Durable,
            cache_mb: 64,
            scylla: ScyllaConfig::default(),
        }
    }
}

impl StoreConfig {
    /// Why these settings cannot work, if they cannot. The cluster's are
    /// checked only when it is the chosen store.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=65_536).contains(&self.cache_mb) {
            return Err("store.cache_mb must be 1..=65536 (MiB)".into());
        }
        if self.kind == StoreKind::Scylla {
            self.scylla.validate()?;
        }
        Ok(())
    }
}
