//! [`Edge`]: what the transports and the session shell share — exactly the
//! settings, handles and signals they read, and nothing of the node's other
//! parts. The node (`ops`) builds it once and keeps it; the edge never
//! reaches up into the node, so it cannot start, drain or stop it: it only
//! obeys the signals the node hands it.

use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::backend::store::ack::Health;
use crate::core::outbox::OutboxLimits;
use crate::edge::auth::Authenticator;
// The session settings still live with the rest of the configuration.
use crate::edge::config::SessionConfig;
use crate::runtime::shards::Shards;

/// What every connection task shares.
pub struct Edge {
    /// Handshake, heartbeat, frame, queue and rate limits per connection.
    pub session: SessionConfig,
    /// When a drained node's clients are told to come back.
    pub goaway: GoAwayTiming,
    pub auth: Authenticator,
    pub shards: Shards,
    /// Cancelled when the node stops taking connections: accept loops stop
    /// (WebSocket) or refuse every new connection (QUIC).
    pub stop_accepting: CancellationToken,
    /// Cancelled with `stop_accepting`: every connection sends GoAway,
    /// drains and closes.
    pub shutdown: CancellationToken,
    /// Every connection task, so the node's shutdown can wait for them.
    pub tracker: TaskTracker,
    /// One per open connection (from accept), `server.max_connections` in all.
    pub connection_permits: Arc<Semaphore>,
    /// Whether writes can be kept now (requests that write are refused
    /// with STORE_UNAVAILABLE while not).
    pub store_health: Arc<Health>,
}

impl Edge {
    /// The bounds of each session's outbox.
    pub(crate) fn outbox_limits(&self) -> OutboxLimits {
        let s = &self.session;
        OutboxLimits {
            capacity: s.outbound_queue,
            capacity_bytes: s.outbound_queue_bytes,
            volatile_shed_at: s.volatile_shed_at,
            replay: s.replay_buffer,
            replay_bytes: s.replay_buffer_bytes,
        }
    }
}

/// `GoAway.reconnect_after_ms` of a draining node: `reconnect_ms` plus up to
/// `jitter_ms`, picked per session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GoAwayTiming {
    pub reconnect_ms: u32,
    pub jitter_ms: u32,
}

impl GoAwayTiming {
    /// The `reconnect_after_ms` one session's `GoAway` carries: uniform in
    /// `[reconnect_ms, reconnect_ms + jitter_ms]` (`unit`, in `[0, 1]`,
    /// picks where), so the clients of a draining node come back spread
    /// over the jitter window instead of all at the same moment.
    pub fn reconnect_after_ms(&self, unit: f64) -> u32 {
        let unit = if unit.is_finite() {
            unit.clamp(0.0, 1.0)
        } else {
            0.0
        };
        self.reconnect_ms
            .saturating_add((f64::from(self.jitter_ms) * unit).round() as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn after(reconnect_ms: u32, jitter_ms: u32, unit: f64) -> u32 {
        GoAwayTiming {
            reconnect_ms,
            jitter_ms,
        }
        .reconnect_after_ms(unit)
    }

    #[test]
    fn goaway_delays_spread_over_the_jitter_window() {
        assert_eq!(after(1_000, 4_000, 0.0), 1_000);
        assert_eq!(after(1_000, 4_000, 0.5), 3_000);
        assert_eq!(after(1_000, 4_000, 1.0), 5_000);
        assert_eq!(after(1_000, 0, 0.7), 1_000, "no jitter");
        assert_eq!(after(1_000, 4_000, f64::NAN), 1_000);
        assert_eq!(after(1_000, 4_000, 9.0), 5_000);
        assert_eq!(after(u32::MAX, u32::MAX, 1.0), u32::MAX);
        let picks: std::collections::HashSet<u32> = (0..64)
            .map(|_| after(1_000, 4_000, rand::random()))
            .collect();
        assert!(picks.iter().all(|ms| (1_000..=5_000).contains(ms)));
        assert!(picks.len() > 32, "sessions get different delays: {picks:?}");
    }
}
