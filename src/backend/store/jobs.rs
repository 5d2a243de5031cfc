//! The webhook outbox's stored rows: one [`Job`] per delivery owed to a
//! webhook, as the store keeps it until the delivery is finished.
//!
//! Owns the row's shape (and so its serialized form, which is on disk and in
//! the cluster: fields may only be added, with defaults). Never sends
//! anything and knows nothing of who works the outbox
//! (`backend::webhook` does).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::core::engine::UserId;

/// Where a job goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    Push,
    Email,
    Events,
}

/// One delivery owed to a webhook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// Unique and stable: `n:<notification id>:<channel>` or `e:<node>:<ms>:<n>`.
    pub id: Arc<str>,
    pub target: Target,
    /// The notification's user, for reporting the outcome.
    #[serde(default)]
    pub user: Option<UserId>,
    #[serde(default)]
    pub notification_id: u64,
    /// The JSON sent (an events batch wraps several payloads).
    pub payload: serde_json::Value,
    pub attempts: u16,
}

impl Job {
    #[cfg(test)]
    pub fn for_test(id: &str) -> Self {
        Self {
            id: Arc::from(id),
            target: Target::Push,
            user: None,
            notification_id: 0,
            payload: serde_json::Value::Null,
            attempts: 0,
        }
    }
}
