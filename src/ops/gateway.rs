//! Wiring: builds the authenticator, certificates, shards and listeners from
//! a [`Config`], runs the accept loops, drains the node (on SIGTERM or
//! `POST /v1/drain`) and shuts everything down in a fixed order under a
//! deadline: `/readyz` → 503 while connections are still served → stop
//! accepting, GoAway (jittered per session) and drain every connection →
//! stop the admin API and the shards.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::backend::store::cluster::{replay_all, WriterSettings};
use crate::backend::store::embedded::EmbeddedStore;
use crate::backend::store::journal::Journal;
use crate::backend::store::scylla::ScyllaStore;
use crate::backend::store::{
    ack, AckSettings, History, HistoryStore, HistoryThreads, Stamped, WriteClock,
};
use crate::backend::webhook::{self, OutcomeSink, Webhooks, WorkerContext};
use crate::core::engine::chat::ChatLimits;
use crate::core::engine::lobbies::LobbyLimits;
use crate::core::engine::notifications::{self, NotificationLimits, Outcome};
use crate::core::shard::{Restore, ShardMsg, ShardSettings};
use crate::edge::auth::{dev_secret, Authenticator};
use crate::edge::tls;
use crate::edge::transport::{quic, ws};
use crate::ops::admin;
use crate::ops::config::{Config, JwtAlgorithm, StoreKind};
use crate::runtime::shards::Services;
use crate::runtime::shards::{ShardThreads, Shards};
use crate::telemetry::metrics::metrics;

/// What every connection task shares.
pub struct Gateway {
    pub config: Config,
    pub auth: Authenticator,
    pub shards: Shards,
    /// Cancelled first when the node drains: `/readyz` answers 503 while
    /// connections and new connections are still served, for
    /// `server.drain_readyz_ms`.
    pub draining: CancellationToken,
    /// Set by the first drain, so a second one only waits for it.
    drain_begun: AtomicBool,
    /// Cancelled once that window is over: accept loops stop (WebSocket) or
    /// refuse every new connection (QUIC).
    pub stop_accepting: CancellationToken,
    /// Cancelled with `stop_accepting`: every connection sends GoAway,
    /// drains and closes.
    pub shutdown: CancellationToken,
    /// Cancelled last, once connections are gone: the admin API stops (so
    /// `/readyz` answers 503 throughout the drain).
    pub admin_stop: CancellationToken,
    /// Every connection task, so shutdown can wait for them.
    pub tracker: TaskTracker,
    /// One per open connection (from accept), `server.max_connections` in all.
    pub connection_permits: Arc<tokio::sync::Semaphore>,
    /// Whether writes can be kept now (requests that write are refused
    /// with STORE_UNAVAILABLE while not; `/readyz` says why).
    pub store_health: Arc<crate::backend::store::ack::Health>,
}

/// A started gateway.
pub struct Running {
    pub ws_addr: SocketAddr,
    pub quic_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    /// The certificate clients of this node should trust.
    pub cert_path: PathBuf,
    pub ws_tls: bool,
    gw: Arc<Gateway>,
    threads: ShardThreads,
    history_threads: HistoryThreads,
    endpoint: quinn::Endpoint,
    accept_loops: Vec<JoinHandle<()>>,
    admin: JoinHandle<()>,
    webhook_stop: CancellationToken,
    webhook_task: JoinHandle<()>,
}

fn quic_transport(cfg: &Config) -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    let idle = u64::from(cfg.session.heartbeat_timeout_ms) + 5_000;
    t.max_idle_timeout(quinn::IdleTimeout::try_from(Duration::from_millis(idle)).ok());
    t.max_concurrent_bidi_streams(1u32.into());
    t.max_concurrent_uni_streams(0u32.into());
    t.datagram_receive_buffer_size(Some(64 * 1024));
    t.stream_receive_window((4 * cfg.session.max_frame_bytes).into());
    t.receive_window((8 * cfg.session.max_frame_bytes).into());
    t
}

/// Socket buffer asked for the QUIC UDP socket: a connect storm delivers
/// hundreds of 1,200-byte Initial packets at once, and the kernel's default
/// (about 200 KiB) drops them, costing each lost handshake a resend timeout.
const QUIC_SOCKET_BUFFER: usize = 8 << 20;

fn quic_endpoint(
    server_config: quinn::ServerConfig,
    addr: SocketAddr,
) -> std::io::Result<quinn::Endpoint> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        let _ = socket.set_only_v6(false);
    }
    // Best effort: the kernel caps these at net.core.[rw]mem_max.
    let _ = socket.set_recv_buffer_size(QUIC_SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(QUIC_SOCKET_BUFFER);
    socket.bind(&addr.into())?;
    let runtime = quinn::default_runtime()
        .ok_or_else(|| std::io::Error::other("no async runtime for QUIC"))?;
    quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(server_config),
        socket.into(),
        runtime,
    )
}

/// Accept backlog of the WebSocket listener: a connect storm keeps hundreds
/// of handshakes in flight, and an overflowing backlog costs each refused SYN
/// a one-second retransmit. The kernel caps it at net.core.somaxconn.
const TCP_BACKLOG: i32 = 4096;

fn tcp_listener(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(TCP_BACKLOG as u32)
}

/// Opens the configured store and starts the history threads over it.
/// What a crash left in the acknowledgement journal goes to the store
/// first (over ScyllaDB, into the spill journal, which is then replayed),
/// so the warm start sees every record that was acknowledged. Blocking
/// work runs off the async workers.
async fn open_history(
    config: &Config,
) -> anyhow::Result<(History, HistoryThreads, Arc<dyn HistoryStore>)> {
    let dir = config.server.data_dir.clone();
    std::fs::create_dir_all(&dir).with_context(|| {
        format!(
            "creating the data directory {} (server.data_dir)",
            dir.display()
        )
    })?;
    let ack = AckSettings {
        dir: dir.join("ack"),
        mode: config.store.ack,
    };
    match config.store.kind {
        StoreKind::Embedded => {
            let cache = config.store.cache_mb << 20;
            let ack = ack.clone();
            tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
                let path = dir.join("history.redb");
                let store = Arc::new(
                    EmbeddedStore::open(&path, cache)
                        .context("opening the embedded history store (in server.data_dir)")?,
                );
                ack::recover(&ack.dir, 4096, |batch| store.write(batch)).with_context(|| {
                    format!(
                        "handing the acknowledgement journal {} to the store",
                        ack.dir.display()
                    )
                })?;
                // What the journal recovered is synced by now; from here on
                // the journal holds every record until the store syncs.
                store.sync_lazily();
                let store: Arc<dyn HistoryStore> = store;
                let (history, threads) = History::start(store.clone(), &ack)?;
                Ok((history, threads, store))
            })
            .await?
        }
        StoreKind::Scylla => {
            let cfg = config.store.scylla.clone();
            let node = config.server.node_id;
            let settings = WriterSettings {
                batch_records: cfg.batch_records,
                linger: Duration::from_millis(cfg.linger_ms),
                inflight_batches: cfg.inflight_batches,
            };
            tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
                let journal = Journal::open(&dir.join("journal.redb"))
                    .context("opening the history spill journal (in server.data_dir)")?;
                // Behind whatever the journal already holds: the
                // acknowledgement journal's records are newer.
                let clock = WriteClock::default();
                ack::recover(&ack.dir, cfg.batch_records, |batch| {
                    let stamped: Vec<Stamped> = batch
                        .iter()
                        .map(|w| Stamped {
                            at_us: clock.next(),
                            write: w.clone(),
                        })
                        .collect();
                    journal.append(&stamped)
                })
                .with_context(|| {
                    format!(
                        "moving the acknowledgement journal {} into the spill journal",
                        ack.dir.display()
                    )
                })?;
                let waiting = journal.len();
                let store = Arc::new(ScyllaStore::connect(&cfg, node).with_context(|| {
                    format!("connecting to ScyllaDB ({waiting} records wait in the spill journal)")
                })?);
                if waiting > 0 {
                    let replayed = replay_all(&store, &journal, cfg.batch_records)
                        .context("replaying the spill journal")?;
                    tracing::info!(replayed, "replayed the history spill journal");
                }
                Ok(History::start_cluster(store, journal, settings, &ack)?)
            })
            .await?
        }
    }
}

/// The webhook worker's [`OutcomeSink`]: each delivery outcome goes to the
/// shard of the notification's user (which owns its delivery state), waiting
/// for room in that shard's mailbox.
struct ShardOutcomes {
    shards: Shards,
}

impl OutcomeSink for ShardOutcomes {
    async fn report(&self, outcome: Outcome) {
        let shard = self.shards.of_user(&outcome.user);
        let msg = ShardMsg::Notifications {
            cmd: notifications::Command::Delivered(outcome),
            reply_to: None,
        };
        self.shards.send(shard, msg).await;
    }
}

/// Binds every listener and starts serving.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    let dev = match (&config.auth.algorithm, &config.auth.secret) {
        (JwtAlgorithm::HS256, None) => Some(dev_secret(&config.server.data_dir)?),
        _ => None,
    };
    let auth = Authenticator::new(&config.auth, dev.as_deref())?;
    let cert = tls::load_or_generate(&config.tls, &config.server.data_dir)?;

    let ws_listener = tcp_listener(config.server.ws_addr)
        .with_context(|| format!("binding WebSocket listener {}", config.server.ws_addr))?;
    let admin_listener = TcpListener::bind(config.server.admin_addr)
        .await
        .with_context(|| format!("binding admin listener {}", config.server.admin_addr))?;
    let mut server_config = tls::quic_server_config(&cert)?;
    server_config.transport_config(Arc::new(quic_transport(&config)));
    let endpoint = quic_endpoint(server_config, config.server.quic_addr)
        .with_context(|| format!("binding QUIC endpoint {}", config.server.quic_addr))?;
    let ws_tls = if config.tls.ws_tls {
        Some(tls::ws_tls_acceptor(&cert)?)
    } else {
        None
    };

    let (history, history_threads, store) = open_history(&config).await?;
    let loader = store.clone();
    let restore = tokio::task::spawn_blocking(move || -> anyhow::Result<Restore> {
        Ok(Restore {
            relations: loader.load_relations()?,
            notifications: loader.load_notifications()?,
            ratings: loader.load_ratings()?,
            channels: loader.load_channels()?,
        })
    })
    .await??;
    let restore = Arc::new(restore);
    let (webhooks, webhook_worker) =
        Webhooks::new(history.clone(), &config.webhooks, config.server.node_id);
    let (shards, threads) = Shards::start(
        config.shard_count(),
        config.shards.mailbox,
        config.shards.pin,
        ShardSettings {
            resume_window: Duration::from_millis(config.session.resume_window_ms.into()),
            chat: ChatLimits {
                max_chars: config.chat.max_message_chars,
                recent: config.chat.recent_messages,
                nonces: config.chat.nonces_per_chat,
                typing_every: Duration::from_millis(config.chat.typing_interval_ms),
            },
            notifications: NotificationLimits {
                push_configured: !config.notifications.push_url.is_empty(),
                email_configured: !config.notifications.email_url.is_empty(),
                max_per_user: config.notifications.max_per_user,
            },
            lobbies: LobbyLimits {
                grace: Duration::from_millis(config.lobbies.grace_ms),
                assigned_grace: Duration::from_millis(config.lobbies.assigned_grace_ms),
                kick_ban: Duration::from_millis(config.lobbies.kick_ban_ms),
            },
            lobbies_per_game: config.lobbies.per_game,
            node: config.server.node_id,
            matchmaking_tick: Duration::from_millis(config.matchmaking.tick_ms),
        },
        Services {
            history: history.clone(),
            webhooks,
        },
        restore,
    );
    let store_health = history.health();
    let webhook_stop = CancellationToken::new();
    let webhook_task = tokio::spawn(webhook::run(
        webhook_worker,
        WorkerContext {
            store,
            history,
            outcomes: ShardOutcomes {
                shards: shards.clone(),
            },
            webhooks: config.webhooks.clone(),
            notifications: config.notifications.clone(),
            stop: webhook_stop.clone(),
        },
    ));
    metrics();
    let queues = config.matchmaking.queues.clone();
    let gw = Arc::new(Gateway {
        auth,
        shards,
        draining: CancellationToken::new(),
        drain_begun: AtomicBool::new(false),
        stop_accepting: CancellationToken::new(),
        shutdown: CancellationToken::new(),
        admin_stop: CancellationToken::new(),
        tracker: TaskTracker::new(),
        connection_permits: Arc::new(tokio::sync::Semaphore::new(config.server.max_connections)),
        store_health,
        config,
    });
    gw.configure_matchmaking(&queues)
        .await
        .map_err(anyhow::Error::msg)?;
    let running = Running {
        ws_addr: ws_listener.local_addr()?,
        quic_addr: endpoint.local_addr()?,
        admin_addr: admin_listener.local_addr()?,
        cert_path: cert.cert_path,
        ws_tls: ws_tls.is_some(),
        accept_loops: vec![
            tokio::spawn(ws::accept_loop(gw.clone(), ws_listener, ws_tls)),
            tokio::spawn(quic::accept_loop(gw.clone(), endpoint.clone())),
        ],
        admin: tokio::spawn(admin::serve(gw.clone(), admin_listener)),
        endpoint,
        threads,
        history_threads,
        webhook_stop,
        webhook_task,
        gw,
    };
    Ok(running)
}

/// The `reconnect_after_ms` one session's `GoAway` carries: uniform in
/// `[base, base + jitter]` (`unit`, in `[0, 1]`, picks where), so the
/// clients of a draining node come back spread over the jitter window
/// instead of all at the same moment.
pub fn goaway_reconnect_after_ms(base: u32, jitter: u32, unit: f64) -> u32 {
    let unit = if unit.is_finite() {
        unit.clamp(0.0, 1.0)
    } else {
        0.0
    };
    base.saturating_add((f64::from(jitter) * unit).round() as u32)
}

impl Gateway {
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
        self.stop_accepting.cancel();
        self.shutdown.cancel();
        tracing::info!("draining: GoAway to every connection; new connections refused");
    }

    /// Drains this node (see [`Gateway::finish_drain`]); returns once every
    /// connection has been told to go away. A drain already under way
    /// (`POST /v1/drain`) is waited for, not repeated.
    pub async fn drain(&self) {
        if self.begin_drain() {
            self.finish_drain().await;
        } else {
            self.shutdown.cancelled().await;
        }
    }

    /// Replaces every matchmaking queue's rules (at start, and on a reload
    /// without a restart): waiting tickets keep their place and waiting
    /// time under the new rules; those that no longer fit, and the tickets
    /// of removed queues, end with a `matchmaking` REMOVED event. Refused
    /// as a whole, changing nothing, when any queue is bad. Answers how
    /// many queues are configured.
    pub async fn configure_matchmaking(
        &self,
        queues: &[crate::ops::config::QueueConfig],
    ) -> Result<usize, String> {
        let specs = crate::ops::config::queue_specs(queues)?;
        let count = specs.len();
        for shard in 0..self.shards.count() {
            let cmd = crate::core::engine::matchmaking::Command::Configure(specs.clone());
            let msg = crate::core::shard::ShardMsg::Matchmaking {
                cmd: Box::new(cmd),
                reply_to: None,
                watcher: None,
            };
            self.shards.send(shard, msg).await;
        }
        Ok(count)
    }
}

impl Running {
    /// Reloads the matchmaking queues (see [`Gateway::configure_matchmaking`]).
    pub async fn reload_matchmaking(
        &self,
        queues: &[crate::ops::config::QueueConfig],
    ) -> Result<usize, String> {
        self.gw.configure_matchmaking(queues).await
    }

    /// The shard count in use.
    pub fn shards(&self) -> usize {
        self.gw.shards.count()
    }

    /// Graceful shutdown: drain ([`Gateway::drain`]: `/readyz` → 503 for
    /// `server.drain_readyz_ms`, then stop accepting and GoAway), wait for
    /// every connection to finish (bounded by `server.shutdown_timeout_ms`),
    /// then stop the admin API and the shards. Returns whether every
    /// connection finished in time.
    pub async fn shutdown(self) -> bool {
        let deadline = Duration::from_millis(self.gw.config.server.shutdown_timeout_ms);
        self.gw.drain().await;
        self.gw.tracker.close();
        let drained = tokio::time::timeout(deadline, self.gw.tracker.wait())
            .await
            .is_ok();
        // The WebSocket loop ended with the drain; the QUIC one only
        // refuses by now.
        for a in self.accept_loops {
            a.abort();
            let _ = a.await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), self.endpoint.wait_idle()).await;
        // A stuck admin client (a half-sent request) must not hold the exit.
        self.gw.admin_stop.cancel();
        let admin = self.admin.abort_handle();
        if tokio::time::timeout(Duration::from_secs(2), self.admin)
            .await
            .is_err()
        {
            admin.abort();
        }
        // The webhook outbox stops; what it still owes stays in the store.
        self.webhook_stop.cancel();
        let webhook = self.webhook_task.abort_handle();
        if tokio::time::timeout(Duration::from_secs(2), self.webhook_task)
            .await
            .is_err()
        {
            webhook.abort();
        }
        drop(self.gw);
        // Shards stop, then the journal and the writer drain what they
        // queued; a disk that keeps refusing is given up on in time to exit.
        let (threads, history) = (self.threads, self.history_threads);
        history.stop_within(Duration::from_secs(5));
        let stop = tokio::task::spawn_blocking(move || {
            threads.join();
            history.join();
        });
        let _ = tokio::time::timeout(Duration::from_secs(10), stop).await;
        drained
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn goaway_delays_spread_over_the_jitter_window() {
        assert_eq!(goaway_reconnect_after_ms(1_000, 4_000, 0.0), 1_000);
        assert_eq!(goaway_reconnect_after_ms(1_000, 4_000, 0.5), 3_000);
        assert_eq!(goaway_reconnect_after_ms(1_000, 4_000, 1.0), 5_000);
        assert_eq!(goaway_reconnect_after_ms(1_000, 0, 0.7), 1_000, "no jitter");
        assert_eq!(goaway_reconnect_after_ms(1_000, 4_000, f64::NAN), 1_000);
        assert_eq!(goaway_reconnect_after_ms(1_000, 4_000, 9.0), 5_000);
        assert_eq!(goaway_reconnect_after_ms(u32::MAX, u32::MAX, 1.0), u32::MAX);
        let picks: std::collections::HashSet<u32> = (0..64)
            .map(|_| goaway_reconnect_after_ms(1_000, 4_000, rand::random()))
            .collect();
        assert!(picks.iter().all(|ms| (1_000..=5_000).contains(ms)));
        assert!(picks.len() > 32, "sessions get different delays: {picks:?}");
    }
}
