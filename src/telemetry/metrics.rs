//! Process-wide Prometheus metrics. Every series is created at start-up and
//! held as a plain atomic handle, so recording on the hot path is one atomic
//! add with no lock and no lookup. Rendering happens only for `/metrics`.

use std::sync::atomic::AtomicU64;
use std::sync::OnceLock;

use huddle_schema::wire::{Body, ErrorCode};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

/// The transports, as metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    Ws,
    Quic,
}

impl TransportKind {
    pub fn label(self) -> &'static str {
        match self {
            TransportKind::Ws => "ws",
            TransportKind::Quic => "quic",
        }
    }
}

const BODIES: usize = Body::ENUM_MAX as usize + 1;

pub struct Metrics {
    registry: Registry,
    connections: [Gauge; 2],
    accepted: [Counter; 2],
    frames_in: [Counter; BODIES],
    frames_out: [Counter; BODIES],
    frames_invalid: Counter,
    /// One counter per error code, indexed by `error_slot`.
    errors: Vec<Counter>,
    pub outbound_depth: Gauge,
    pub events_shed: Counter,
    pub sessions_resumed: Counter,
    /// Webhook deliveries: sent (2xx), retried after a failure, given up.
    pub webhook_sent: Counter,
    pub webhook_retried: Counter,
    pub webhook_failed: Counter,
    shard_lag: Family<Labels, Gauge<f64, AtomicU64>>,
    shard_commands: Family<Labels, Counter>,
    pub history: HistoryMetrics,
}

/// The history writer's figures.
pub struct HistoryMetrics {
    /// Records waiting for the writer.
    pub queue_depth: Gauge,
    /// Times an engine found the writer's queue full and waited.
    pub enqueue_waits: Counter,
    /// Records per batch written to the store.
    pub batch_records: Histogram,
    /// Time to write one batch, tries included.
    pub write_seconds: Histogram,
    /// Tries of a batch after its first, and failed replays.
    pub retries: Counter,
    /// Records written to the spill journal instead of the store.
    pub spilled: Counter,
    /// Records replayed from the journal into the store.
    pub replayed: Counter,
    /// Records in the journal.
    pub journal_records: Gauge,
    /// Age of the oldest record handed to the writer and not yet persisted
    /// in the store (0 when none).
    pub oldest_unpersisted_seconds: Gauge<f64, AtomicU64>,
    /// Records and acknowledgements waiting for the acknowledgement journal.
    pub ack_queue_depth: Gauge,
    /// Records per group commit of the acknowledgement journal.
    pub ack_group_records: Histogram,
    /// Time of one group commit (write + fdatasync).
    pub ack_sync_seconds: Histogram,
    /// Seconds since the journal or the store started failing writes (0
    /// while they take them); sends are refused with STORE_UNAVAILABLE
    /// meanwhile.
    pub failing_seconds: Gauge<f64, AtomicU64>,
    /// Records the gateway gave up on at shutdown (the disk never took
    /// them; their senders were never acknowledged).
    pub abandoned_records: Counter,
}

impl HistoryMetrics {
    fn register(registry: &mut Registry) -> Self {
        let m = Self {
            queue_depth: Gauge::default(),
            enqueue_waits: Counter::default(),
            batch_records: Histogram::new(exponential_buckets(1.0, 2.0, 14)),
            write_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            retries: Counter::default(),
            spilled: Counter::default(),
            replayed: Counter::default(),
            journal_records: Gauge::default(),
            oldest_unpersisted_seconds: Gauge::default(),
            ack_queue_depth: Gauge::default(),
            ack_group_records: Histogram::new(exponential_buckets(1.0, 2.0, 14)),
            ack_sync_seconds: Histogram::new(exponential_buckets(0.00005, 2.0, 16)),
            failing_seconds: Gauge::default(),
            abandoned_records: Counter::default(),
        };
        let r = registry.sub_registry_with_prefix("history");
        r.register(
            "queue_depth",
            "Records waiting for the history writer",
            m.queue_depth.clone(),
        );
        r.register(
            "enqueue_waits",
            "Times an engine found the history queue full and waited",
            m.enqueue_waits.clone(),
        );
        r.register(
            "batch_records",
            "Records per batch written to the store",
            m.batch_records.clone(),
        );
        r.register(
            "write_seconds",
            "Time to write one batch to the store, tries included",
            m.write_seconds.clone(),
        );
        r.register(
            "retries",
            "Batch writes tried again, and failed journal replays",
            m.retries.clone(),
        );
        r.register(
            "spilled_records",
            "Records written to the spill journal instead of the store",
            m.spilled.clone(),
        );
        r.register(
            "replayed_records",
            "Records replayed from the spill journal into the store",
            m.replayed.clone(),
        );
        r.register(
            "journal_records",
            "Records waiting in the spill journal",
            m.journal_records.clone(),
        );
        r.register(
            "oldest_unpersisted_seconds",
            "Age of the oldest record not yet persisted in the store",
            m.oldest_unpersisted_seconds.clone(),
        );
        r.register(
            "ack_queue_depth",
            "Records and acknowledgements waiting for the acknowledgement journal",
            m.ack_queue_depth.clone(),
        );
        r.register(
            "ack_group_records",
            "Records per group commit of the acknowledgement journal",
            m.ack_group_records.clone(),
        );
        r.register(
            "ack_sync_seconds",
            "Time of one group commit of the acknowledgement journal (write and fdatasync)",
            m.ack_sync_seconds.clone(),
        );
        r.register(
            "failing_seconds",
            "Seconds since the journal or the store started refusing writes (0 while healthy)",
            m.failing_seconds.clone(),
        );
        r.register(
            "abandoned_records",
            "Records given up at shutdown because the disk never took them (never acknowledged)",
            m.abandoned_records.clone(),
        );
        m
    }
}

static METRICS: OnceLock<Metrics> = OnceLock::new();

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    METRICS.get_or_init(Metrics::new)
}

fn body_label(i: usize) -> String {
    Body(i as u8)
        .variant_name()
        .unwrap_or("unknown")
        .to_string()
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("huddle");
        let conns = Family::<Labels, Gauge>::default();
        let accepted = Family::<Labels, Counter>::default();
        let frames_in = Family::<Labels, Counter>::default();
        let frames_out = Family::<Labels, Counter>::default();
        let error_family = Family::<Labels, Counter>::default();
        let outbound_depth = Gauge::default();
        let events_shed = Counter::default();
        let sessions_resumed = Counter::default();
        let webhook = Family::<Labels, Counter>::default();
        registry.register(
            "webhook_deliveries",
            "Webhook delivery attempts by outcome (sent, retried, failed)",
            webhook.clone(),
        );
        let outcome = |o: &str| {
            webhook
                .get_or_create(&vec![("outcome", o.to_string())])
                .clone()
        };
        let (webhook_sent, webhook_retried, webhook_failed) =
            (outcome("sent"), outcome("retried"), outcome("failed"));
        let shard_lag = Family::<Labels, Gauge<f64, AtomicU64>>::default();
        let shard_commands = Family::<Labels, Counter>::default();
        registry.register("connections", "Open client connections", conns.clone());
        registry.register(
            "connections_accepted",
            "Connections accepted",
            accepted.clone(),
        );
        registry.register(
            "frames_in",
            "Inbound frames by body type",
            frames_in.clone(),
        );
        registry.register(
            "frames_out",
            "Outbound frames by body type",
            frames_out.clone(),
        );
        registry.register("errors", "Error frames sent, by code", error_family.clone());
        let errors = ErrorCode::ENUM_VALUES
            .iter()
            .map(|c| {
                error_family
                    .get_or_create(&vec![(
                        "code",
                        huddle_schema::error_code_name(*c).to_string(),
                    )])
                    .clone()
            })
            .collect();
        registry.register(
            "outbound_queue_depth",
            "Frames waiting in session outboxes, all sessions together",
            outbound_depth.clone(),
        );
        registry.register(
            "events_shed",
            "Volatile events shed under pressure",
            events_shed.clone(),
        );
        registry.register(
            "sessions_resumed",
            "Sessions resumed",
            sessions_resumed.clone(),
        );
        registry.register(
            "shard_loop_lag_seconds",
            "Time the last command waited in its shard's mailbox",
            shard_lag.clone(),
        );
        registry.register(
            "shard_commands",
            "Commands handled per shard",
            shard_commands.clone(),
        );
        let history = HistoryMetrics::register(&mut registry);
        let frames_invalid = frames_in
            .get_or_create(&vec![("type", "invalid".to_string())])
            .clone();
        let kind = |k: TransportKind| vec![("transport", k.label().to_string())];
        let body = |i: usize| vec![("type", body_label(i))];
        Self {
            connections: [TransportKind::Ws, TransportKind::Quic]
                .map(|k| conns.get_or_create(&kind(k)).clone()),
            accepted: [TransportKind::Ws, TransportKind::Quic]
                .map(|k| accepted.get_or_create(&kind(k)).clone()),
            frames_in: std::array::from_fn(|i| frames_in.get_or_create(&body(i)).clone()),
            frames_out: std::array::from_fn(|i| frames_out.get_or_create(&body(i)).clone()),
            frames_invalid,
            errors,
            outbound_depth,
            events_shed,
            sessions_resumed,
            webhook_sent,
            webhook_retried,
            webhook_failed,
            shard_lag,
            shard_commands,
            history,
            registry,
        }
    }

    pub fn connection_opened(&self, t: TransportKind) {
        self.connections[t as usize].inc();
        self.accepted[t as usize].inc();
    }

    pub fn connection_closed(&self, t: TransportKind) {
        self.connections[t as usize].dec();
    }

    pub fn frame_in(&self, body: Option<Body>) {
        match body {
            Some(b) if (b.0 as usize) < BODIES => self.frames_in[b.0 as usize].inc(),
            _ => self.frames_invalid.inc(),
        };
    }

    pub fn frame_out(&self, body: Body) {
        if let Some(c) = self.frames_out.get(body.0 as usize) {
            c.inc();
        }
    }

    pub fn error(&self, code: ErrorCode) {
        if let Some(slot) = ErrorCode::ENUM_VALUES.iter().position(|c| *c == code) {
            self.errors[slot].inc();
        }
    }

    /// Per-shard series, created once by each shard at start.
    pub fn shard_series(&self, shard: usize) -> (Gauge<f64, AtomicU64>, Counter) {
        let l = vec![("shard", shard.to_string())];
        (
            self.shard_lag.get_or_create(&l).clone(),
            self.shard_commands.get_or_create(&l).clone(),
        )
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
