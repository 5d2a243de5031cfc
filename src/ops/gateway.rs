//! Wiring: builds the authenticator, certificates, shards and listeners from
//! a [`Config`], the edge and the node state ([`Gateway`], in `ops::node`)
//! over them, runs the accept loops, drains the node (on SIGTERM or
//! `POST /v1/drain`) and shuts everything down in a fixed order under a
//! deadline: `/readyz` → 503 while connections are still served → stop
//! accepting, GoAway (jittered per session) and drain every connection →
//! stop the admin API and the shards.

use std::net::SocketAddr;
use std::path::PathBuf;
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
use crate::edge::{Edge, GoAwayTiming};
use crate::ops::admin;
use crate::ops::config::{Config, JwtAlgorithm, StoreKind};
use crate::ops::node::Gateway;
use crate::runtime::shards::Services;
use crate::runtime::shards::{ShardThreads, Shards};
use crate::telemetry::metrics::metrics;

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
    let edge = Arc::new(Edge {
        session: config.session.clone(),
        goaway: GoAwayTiming {
            reconnect_ms: config.server.goaway_reconnect_ms,
            jitter_ms: config.server.goaway_jitter_ms,
        },
        auth,
        shards,
        stop_accepting: CancellationToken::new(),
        shutdown: CancellationToken::new(),
        tracker: TaskTracker::new(),
        connection_permits: Arc::new(tokio::sync::Semaphore::new(config.server.max_connections)),
        store_health,
    });
    let gw = Arc::new(Gateway::new(config, edge));
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
            tokio::spawn(ws::accept_loop(gw.edge.clone(), ws_listener, ws_tls)),
            tokio::spawn(quic::accept_loop(gw.edge.clone(), endpoint.clone())),
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
        self.gw.edge.tracker.close();
        let drained = tokio::time::timeout(deadline, self.gw.edge.tracker.wait())
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
