//! The node's shared state, [`Gateway`]: the configuration, the edge it
//! serves clients through, and the drain that takes it out of service
//! (`/readyz` → 503, then stop accepting and GoAway). Both the admin API
//! and the wiring (`ops::gateway`: start-up, `Running`, shutdown) use it;
//! it must never import either of them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::backend::store::ack::Health;
use crate::core::shard::ShardMsg;
use crate::edge::Edge;
use crate::ops::config::{Config, QueueConfig};
use crate::runtime::shards::Shards;

/// What the node's control paths share.
pub struct Gateway {
    pub config: Config,
    /// What the transports and sessions share (their cancellation tokens,
    /// connection tracker and permits included).
    pub edge: Arc<Edge>,
    /// The same shards the edge routes to, for the operator API.
    pub shards: Shards,
    /// Whether writes can be kept now (`/readyz` says why not; operator
    /// writes answer 503 while not).
    pub store_health: Arc<Health>,
    /// Cancelled first when the node drains: `/readyz` answers 503 while
    /// connections and new connections are still served, for
    /// `server.drain_readyz_ms`.
    pub draining: CancellationToken,
    /// Set by the first drain, so a second one only waits for it.
    drain_begun: AtomicBool,
    /// Cancelled last, once connections are gone: the admin API stops (so
    /// `/readyz` answers 503 throughout the drain).
    pub admin_stop: CancellationToken,
}

impl Gateway {
    pub fn new(config: Config, edge: Arc<Edge>) -> Self {
        Self {
            shards: edge.shards.clone(),
            store_health: edge.store_health.clone(),
            config,
            edge,
            draining: CancellationToken::new(),
            drain_begun: AtomicBool::new(false),
            admin_stop: CancellationToken::new(),
        }
    }

    /// Starts draining this node: `/readyz` answers 503 from now on.
    /// Returns false (and changes nothing) when a drain had begun already.
    pub fn begin_drain(&self) -> bool {
        if self.drain_begun.swap(true, Ordering::SeqCst) {
            return false;
        }
        self.draining.cancel();
        tracing::info!(
            readyz_503_for_ms = self.config.server.drain_readyz_ms,
            "draining: /readyz answers 503; connections are still served until GoAway"
        );
        true
    }

    /// The rest of a drain [`Gateway::begin_drain`] began: once
    /// `server.drain_readyz_ms` has passed (while everything is still
    /// served, so a load balancer sees the 503 first), new connections are
    /// refused and every connection gets GoAway, drains what it owes and
    /// closes.
    pub async fn finish_drain(&self) {
        let window = Duration::from_millis(self.config.server.drain_readyz_ms);
        tokio::time::sleep(window).await;
        self.edge.stop_accepting.cancel();
        self.edge.shutdown.cancel();
        tracing::info!("draining: GoAway to every connection; new connections refused");
    }

    /// Drains this node (see [`Gateway::finish_drain`]); returns once every
    /// connection has been told to go away. A drain already under way
    /// (`POST /v1/drain`) is waited for, not repeated.
    pub async fn drain(&self) {
        if self.begin_drain() {
            self.finish_drain().await;
        } else {
            self.edge.shutdown.cancelled().await;
        }
    }

    /// Replaces every matchmaking queue's rules (at start, and on a reload
    /// without a restart): waiting tickets keep their place and waiting
    /// time under the new rules; those that no longer fit, and the tickets
    /// of removed queues, end with a `matchmaking` REMOVED event. Refused
    /// as a whole, changing nothing, when any queue is bad. Answers how
    /// many queues are configured.
    pub async fn configure_matchmaking(&self, queues: &[QueueConfig]) -> Result<usize, String> {
        let specs = crate::ops::config::queue_specs(queues)?;
        let count = specs.len();
        for shard in 0..self.shards.count() {
            let cmd = crate::core::engine::matchmaking::Command::Configure(specs.clone());
            let msg = ShardMsg::Matchmaking {
                cmd: Box::new(cmd),
                reply_to: None,
                watcher: None,
            };
            self.shards.send(shard, msg).await;
        }
        Ok(count)
    }
}
