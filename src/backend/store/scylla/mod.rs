//! [`HistoryStore`] over CQL with the `scylla` crate: ScyllaDB in
//! production, any CQL v4 server in development (`deploy/cassandra-dev/`).
//! The schema is `deploy/scylla/schema.cql`, applied idempotently at
//! connect; every read is a single-partition query, except the warm-start
//! loads, which scan (as the embedded store's do).
//!
//! It owns a small tokio runtime of its own (the driver's connections,
//! keepalives and in-flight writes live there). The history writer hands it
//! batches with [`ScyllaStore::submit`] and goes on; the synchronous trait
//! methods block on the runtime, so they must never be called from a shard
//! thread or an async worker.
//!
//! Also owns the `[store.scylla]` settings ([`ScyllaConfig`]) and their
//! validation; it never reads the rest of the gateway's configuration.
//!
//! One file of about 1,000 lines on purpose: every CQL statement sits next
//! to the row mapping that reads or binds it, so a column change is one
//! edit in one place (its tests are `tests.rs`).

use std::sync::Arc;

use std::collections::HashMap;
use std::path::PathBuf;

use futures_util::{StreamExt, TryStreamExt};
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::prepared::PreparedStatement;
use scylla::statement::Consistency;
use serde::{Deserialize, Serialize};

use super::{HistoryStore, Stamped, StoreError, Write, WriteClock};
use crate::backend::store::jobs::Job;
use crate::core::engine::chat::{Author, HistoryRecord, Message};
use crate::core::engine::matchmaking::{Rating, RatingRecord};
use crate::core::engine::notifications::Notification;
use crate::core::engine::social::{PairState, RelationRecord};
use crate::core::engine::Record;

/// The schema, applied statement by statement.
const SCHEMA: &str = include_str!("../../../../deploy/scylla/schema.cql");
/// A day of message ids: ids carry milliseconds since 2025 above bit 23.
const BUCKET_MS: u64 = 86_400_000;
/// (chat, day) pairs remembered as written; forgotten all at once past this.
const KNOWN_DAYS: usize = 1 << 20;
/// ... and this often.
const KNOWN_DAYS_FOR: std::time::Duration = std::time::Duration::from_secs(600);

/// The (chat, day) rows known to be in `chat_buckets`, since when.
struct KnownDays {
    days: std::collections::HashSet<Day>,
    since: std::time::Instant,
}

impl Default for KnownDays {
    fn default() -> Self {
        Self {
            days: Default::default(),
            since: std::time::Instant::now(),
        }
    }
}
/// Tries of a batch before the writer is told it failed (and spills it).
const ATTEMPTS: u32 = 3;
/// Wait before the second try; doubled for each one after.
const RETRY_BASE: std::time::Duration = std::time::Duration::from_millis(25);

/// A consistency level by its CQL name.
pub fn consistency(name: &str) -> Result<Consistency, String> {
    Ok(match name.to_ascii_uppercase().as_str() {
        "ONE" => Consistency::One,
        "TWO" => Consistency::Two,
        "THREE" => Consistency::Three,
        "QUORUM" => Consistency::Quorum,
        "ALL" => Consistency::All,
        "LOCAL_QUORUM" => Consistency::LocalQuorum,
        "LOCAL_ONE" => Consistency::LocalOne,
        _ => {
            return Err(format!(
                "store.scylla.consistency {name:?}: one of ONE, TWO, THREE, QUORUM, ALL, \
                 LOCAL_QUORUM, LOCAL_ONE (it applies to reads too, which refuse EACH_QUORUM)"
            ))
        }
    })
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

    /// Why these settings cannot work, if they cannot (checked only when
    /// `store.kind = "scylla"`).
    pub fn validate(&self) -> Result<(), String> {
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
        consistency(&self.consistency)?;
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

/// TLS to the nodes: the configured CA (or none: refused), and a client
/// certificate when one is configured.
fn tls_config(cfg: &ScyllaConfig) -> Result<Arc<rustls::ClientConfig>, StoreError> {
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|e| err(&format!("reading {}", path.display()), e))
    };
    let ca = cfg
        .ca
        .as_deref()
        .ok_or_else(|| StoreError("store.scylla.tls needs store.scylla.ca (a PEM file)".into()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut read(ca)?.as_slice()) {
        let cert = cert.map_err(|e| err(&format!("parsing {}", ca.display()), e))?;
        roots
            .add(cert)
            .map_err(|e| err(&format!("adding a CA from {}", ca.display()), e))?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| err("TLS versions", e))?
    .with_root_certificates(roots);
    let config = match (&cfg.client_cert, &cfg.client_key) {
        (Some(cert), Some(key)) => {
            let chain = rustls_pemfile::certs(&mut read(cert)?.as_slice())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| err(&format!("parsing {}", cert.display()), e))?;
            let key = rustls_pemfile::private_key(&mut read(key)?.as_slice())
                .map_err(|e| err(&format!("parsing {}", key.display()), e))?
                .ok_or_else(|| StoreError(format!("no private key in {}", key.display())))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| err("the client certificate", e))?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// The day partition of a message id.
pub fn bucket_of(id: u64) -> i32 {
    ((id >> 23) / BUCKET_MS) as i32
}

fn err(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError(format!("{what}: {e}"))
}

struct Statements {
    put_message: PreparedStatement,
    /// `put_message` with its write time bound last, for partition batches.
    put_message_at: PreparedStatement,
    put_bucket: PreparedStatement,
    newest_bucket: PreparedStatement,
    older_bucket: PreparedStatement,
    page: PreparedStatement,
    page_before: PreparedStatement,
    put_cursor: PreparedStatement,
    get_cursor: PreparedStatement,
    put_relation: PreparedStatement,
    del_relation: PreparedStatement,
    put_notification: PreparedStatement,
    del_notification: PreparedStatement,
    put_rating: PreparedStatement,
    put_channel: PreparedStatement,
    put_job: PreparedStatement,
    del_job: PreparedStatement,
    jobs: PreparedStatement,
}

/// A tokio runtime that may be dropped anywhere, an async context
/// included (the last handle to the store may go on any thread).
struct OwnRuntime(Option<tokio::runtime::Runtime>);

impl std::ops::Deref for OwnRuntime {
    type Target = tokio::runtime::Runtime;
    fn deref(&self) -> &Self::Target {
        // Taken only in drop.
        self.0
            .as_ref()
            .unwrap_or_else(|| unreachable!("runtime taken before drop"))
    }
}

impl Drop for OwnRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// A connected CQL store.
pub struct ScyllaStore {
    session: Session,
    statements: Statements,
    node: i32,
    /// Statements of one batch in flight at once.
    concurrency: usize,
    /// Write times for the synchronous [`HistoryStore::write`].
    pub(super) clock: WriteClock,
    /// (chat, day) rows known to be in `chat_buckets`.
    known_days: std::sync::Mutex<KnownDays>,
    /// Last: the session closes while its runtime still runs.
    runtime: OwnRuntime,
}

type MessageRow = (
    i64,
    String,
    String,
    String,
    String,
    i32,
    i64,
    i64,
    bool,
    Option<String>,
    // WRITETIME(content): when the stored version was written.
    Option<i64>,
);

/// A statement on its way.
type Pending<'a> = std::pin::Pin<
    Box<
        dyn std::future::Future<
                Output = Result<
                    scylla::response::query_result::QueryResult,
                    scylla::errors::ExecutionError,
                >,
            > + Send
            + 'a,
    >,
>;

/// A message row's values, in `MESSAGE_COLUMNS` order after the partition.
/// Borrowed from the message: the batch outlives its statements.
type MessageValues<'m> = (
    &'m str,
    i32,
    i64,
    &'m str,
    &'m str,
    &'m str,
    &'m str,
    i32,
    i64,
    i64,
    bool,
    Option<&'m str>,
);

fn message_values(m: &Message) -> MessageValues<'_> {
    (
        &m.chat_id,
        bucket_of(m.id),
        m.id as i64,
        &m.sender.id,
        &m.sender.username,
        &m.sender.display_name,
        &m.content,
        i32::from(m.content_type),
        m.created_at_ms,
        m.edited_at_ms,
        m.deleted,
        m.nonce.as_deref(),
    )
}

/// A chat's day: one partition of `messages`.
type Day = (Arc<str>, i32);

/// Messages of one partition written as one unlogged batch at most: a
/// single mutation for the replicas, and small (servers warn about big
/// batches, and fail multi-partition ones past their limit).
const PARTITION_BATCH: usize = 16;

const MESSAGE_COLUMNS: &str = "id, sender_id, sender_username, sender_display_name, content, \
     content_type, created_at_ms, edited_at_ms, deleted, nonce";

fn message(chat_id: &str, r: MessageRow) -> Arc<Message> {
    let (
        id,
        sender_id,
        username,
        display_name,
        content,
        content_type,
        created,
        edited,
        deleted,
        nonce,
        _written,
    ) = r;
    Arc::new(Message {
        id: id as u64,
        chat_id: Arc::from(chat_id),
        sender: Author {
            id: Arc::from(sender_id),
            username: Arc::from(username),
            display_name: Arc::from(display_name),
        },
        content: Arc::from(content),
        content_type: u8::try_from(content_type).unwrap_or(0),
        created_at_ms: created,
        edited_at_ms: edited,
        deleted,
        nonce: nonce.map(String::into_boxed_str),
    })
}

impl ScyllaStore {
    /// Connects, creates the keyspace and tables when missing (when
    /// `apply_schema`), and prepares every statement. `node` is this
    /// gateway's id: its webhook jobs are one partition.
    pub fn connect(cfg: &ScyllaConfig, node: u16) -> Result<Self, StoreError> {
        if cfg.keyspace.is_empty()
            || !cfg
                .keyspace
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(StoreError(format!(
                "keyspace {:?}: letters, digits and _ only",
                cfg.keyspace
            )));
        }
        let consistency = consistency(&cfg.consistency).map_err(StoreError)?;
        let replicas = if cfg.datacenters.is_empty() {
            cfg.replication_factor
        } else {
            cfg.datacenters.values().copied().max().unwrap_or(1)
        };
        let answering = match consistency {
            Consistency::One | Consistency::LocalOne => 1,
            Consistency::Two => 2,
            _ => replicas,
        };
        if 2 * answering <= replicas {
            tracing::warn!(
                consistency = %cfg.consistency,
                replicas,
                "reads and writes at this consistency may not overlap: a history read may miss \
                 a record written moments before (LOCAL_QUORUM always overlaps)"
            );
        }
        // Two workers: the driver's connection tasks and keepalives run
        // between the writer's calls, and a slow node never stalls them.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("huddle-cql")
            .enable_all()
            .build()
            .map_err(|e| err("a runtime for the CQL driver", e))?;
        let (session, statements) = runtime.block_on(async {
            let mut policy = scylla::policies::load_balancing::DefaultPolicy::builder().token_aware(true);
            if let Some(dc) = &cfg.local_datacenter {
                policy = policy.prefer_datacenter(dc.clone()).permit_dc_failover(false);
            }
            let profile = scylla::client::execution_profile::ExecutionProfile::builder()
                .consistency(consistency)
                .request_timeout(Some(std::time::Duration::from_millis(cfg.request_timeout_ms)))
                .load_balancing_policy(policy.build())
                .build();
            let mut builder = SessionBuilder::new()
                .known_nodes(&cfg.nodes)
                .connection_timeout(std::time::Duration::from_millis(cfg.request_timeout_ms))
                .default_execution_profile_handle(profile.into_handle());
            if let (Some(user), Some(password)) = (&cfg.username, &cfg.password) {
                builder = builder.user(user, password);
            }
            if cfg.tls {
                builder = builder.tls_context(Some(tls_config(cfg)?));
            }
            let session = builder
                .build()
                .await
                .map_err(|e| err(&format!("connecting to {:?}", cfg.nodes), e))?;
            let ks = &cfg.keyspace;
            if cfg.apply_schema {
                session
                    .query_unpaged(
                        format!(
                            "CREATE KEYSPACE IF NOT EXISTS {ks} WITH replication = {}",
                            cfg.replication()
                        ),
                        &[],
                    )
                    .await
                    .map_err(|e| err("creating the keyspace", e))?;
            }
            session
                .use_keyspace(ks, false)
                .await
                .map_err(|e| err(&format!("using keyspace {ks} (store.scylla.apply_schema creates it)"), e))?;
            if cfg.apply_schema {
                // Comments out first: they may hold a ';'.
                let schema: String = SCHEMA
                    .lines()
                    .filter(|l| !l.trim_start().starts_with("--"))
                    .collect::<Vec<_>>()
                    .join("\n");
                for statement in schema.split(';').filter(|s| !s.trim().is_empty()) {
                    session
                        .query_unpaged(statement, &[])
                        .await
                        .map_err(|e| err("applying deploy/scylla/schema.cql", e))?;
                }
            }
            let prepare = |cql: String| {
                let session = &session;
                async move {
                    let mut p = session
                        .prepare(cql.as_str())
                        .await
                        .map_err(|e| err(&format!("preparing {cql}"), e))?;
                    p.set_consistency(consistency);
                    p.set_is_idempotent(true);
                    Ok::<_, StoreError>(p)
                }
            };
            let statements = Statements {
                put_message: prepare(format!(
                    "INSERT INTO messages (chat_id, bucket, {MESSAGE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                ))
                .await?,
                put_message_at: prepare(format!(
                    "INSERT INTO messages (chat_id, bucket, {MESSAGE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) USING TIMESTAMP ?"
                ))
                .await?,
                put_bucket: prepare("INSERT INTO chat_buckets (chat_id, bucket) VALUES (?, ?)".into()).await?,
                newest_bucket: prepare("SELECT bucket FROM chat_buckets WHERE chat_id = ? LIMIT 1".into()).await?,
                older_bucket: prepare(
                    "SELECT bucket FROM chat_buckets WHERE chat_id = ? AND bucket < ? LIMIT 1".into(),
                )
                .await?,
                page: prepare(format!(
                    "SELECT {MESSAGE_COLUMNS}, WRITETIME(content) FROM messages WHERE chat_id = ? AND bucket = ? LIMIT ?"
                ))
                .await?,
                page_before: prepare(format!(
                    "SELECT {MESSAGE_COLUMNS}, WRITETIME(content) FROM messages WHERE chat_id = ? AND bucket = ? AND id < ? LIMIT ?"
                ))
                .await?,
                put_cursor: prepare(
                    "INSERT INTO read_cursors (chat_id, user_id, up_to) VALUES (?, ?, ?)".into(),
                )
                .await?,
                get_cursor: prepare(
                    "SELECT up_to FROM read_cursors WHERE chat_id = ? AND user_id = ?".into(),
                )
                .await?,
                put_relation: prepare(
                    "INSERT INTO relations (user_id, other_id, pair) VALUES (?, ?, ?)".into(),
                )
                .await?,
                del_relation: prepare(
                    "DELETE FROM relations WHERE user_id = ? AND other_id = ?".into(),
                )
                .await?,
                put_notification: prepare(
                    "INSERT INTO notifications (user_id, id, body) VALUES (?, ?, ?)".into(),
                )
                .await?,
                del_notification: prepare(
                    "DELETE FROM notifications WHERE user_id = ? AND id = ?".into(),
                )
                .await?,
                put_rating: prepare(
                    "INSERT INTO ratings (user_id, game, mu, sigma) VALUES (?, ?, ?, ?)".into(),
                )
                .await?,
                put_channel: prepare(
                    "INSERT INTO channels (name, spec) VALUES (?, ?)".into(),
                )
                .await?,
                put_job: prepare("INSERT INTO outbox (node, id, job) VALUES (?, ?, ?)".into()).await?,
                del_job: prepare("DELETE FROM outbox WHERE node = ? AND id = ?".into()).await?,
                jobs: prepare("SELECT job FROM outbox WHERE node = ?".into()).await?,
            };
            Ok::<_, StoreError>((session, statements))
        })?;
        Ok(Self {
            runtime: OwnRuntime(Some(runtime)),
            session,
            statements,
            node: i32::from(node),
            concurrency: cfg.concurrency.max(1),
            clock: WriteClock::default(),
            known_days: Default::default(),
        })
    }

    /// Writes `batch` on the store's runtime, trying a failed batch again
    /// with backoff, and calls `done` with the outcome, the tries it took
    /// and the time it took. Never blocks the caller.
    pub fn submit(
        self: &Arc<Self>,
        batch: Arc<Vec<Stamped>>,
        done: impl FnOnce(Result<(), StoreError>, u32, std::time::Duration) + Send + 'static,
    ) {
        let store = self.clone();
        self.runtime.spawn(async move {
            let started = std::time::Instant::now();
            let mut wait = RETRY_BASE;
            let mut tries = 1;
            loop {
                match store.write_stamped(&batch).await {
                    Ok(()) => break done(Ok(()), tries, started.elapsed()),
                    Err(e) if tries >= ATTEMPTS => break done(Err(e), tries, started.elapsed()),
                    Err(e) => {
                        tracing::debug!(error = %e, tries, "history batch failed; trying again");
                        tokio::time::sleep(wait).await;
                        wait *= 4;
                        tries += 1;
                    }
                }
            }
        });
    }

    /// [`Self::write_stamped`], waiting for it (start-up replay, tests).
    pub fn write_stamped_blocking(&self, batch: &[Stamped]) -> Result<(), StoreError> {
        self.runtime.block_on(self.write_stamped(batch))
    }

    /// Writes a batch: statements run `concurrency` at a time, each with
    /// the write time it was stamped with, so the later of two writes to
    /// one key (an edit after its message, a delete after its put) wins
    /// whatever order they land in — also when a batch is written again.
    async fn write_stamped(&self, batch: &[Stamped]) -> Result<(), StoreError> {
        let s = &self.statements;
        let session = &self.session;
        let node = self.node;
        // Each statement's future has its own type: box them to wait on a
        // chunk together.
        macro_rules! exec {
            ($at:expr, $statement:expr, $values:expr $(,)?) => {{
                let mut statement = ($statement).clone();
                statement.set_timestamp(Some($at));
                let values = $values;
                Box::pin(async move { session.execute_unpaged(&statement, values).await })
                    as Pending<'_>
            }};
        }
        // A chat's day is written to `chat_buckets` with its first message
        // in a while, not with every one: known once a batch that wrote it
        // landed, forgotten after a failure (a node may have lost it) and
        // every few minutes (a row lost anyway is written again).
        let mut new_days: std::collections::HashSet<Day> = Default::default();
        {
            let mut known = self.known_days.lock().unwrap_or_else(|e| e.into_inner());
            if known.since.elapsed() > KNOWN_DAYS_FOR {
                known.days.clear();
                known.since = std::time::Instant::now();
            }
            for r in batch {
                if let Write::Record(Record::Chat(HistoryRecord::Message(m))) = &r.write {
                    let day = (m.chat_id.clone(), bucket_of(m.id));
                    if !known.days.contains(&day) {
                        new_days.insert(day);
                    }
                }
            }
        }
        // Messages sharing a partition in this batch go together.
        let mut partitions: HashMap<Day, Vec<(i64, &Message)>> = HashMap::new();
        for r in batch {
            if let Write::Record(Record::Chat(HistoryRecord::Message(m))) = &r.write {
                partitions
                    .entry((m.chat_id.clone(), bucket_of(m.id)))
                    .or_default()
                    .push((r.at_us, m));
            }
        }
        let mut pending: Vec<Pending<'_>> = Vec::with_capacity(batch.len() + 1);
        for (day, messages) in &partitions {
            if new_days.contains(day) {
                let at_us = messages[0].0;
                pending.push(exec!(at_us, &s.put_bucket, (&*day.0, day.1)));
            }
            if messages.len() == 1 {
                let (at_us, m) = messages[0];
                pending.push(exec!(at_us, &s.put_message, message_values(m)));
                continue;
            }
            for group in messages.chunks(PARTITION_BATCH) {
                // Each statement binds its own write time (a batch may
                // carry one for all, which would lose the order).
                let mut b = Batch::new(BatchType::Unlogged);
                let values: Vec<_> = group
                    .iter()
                    .map(|(at_us, m)| {
                        b.append_statement(s.put_message_at.clone());
                        let v = message_values(m);
                        (
                            v.0, v.1, v.2, v.3, v.4, v.5, v.6, v.7, v.8, v.9, v.10, v.11, *at_us,
                        )
                    })
                    .collect();
                b.set_is_idempotent(true);
                pending.push(Box::pin(async move { session.batch(&b, values).await }));
            }
        }
        for Stamped { at_us, write } in batch {
            let at_us = *at_us;
            match write {
                Write::Record(Record::Chat(HistoryRecord::Message(_))) => {}
                Write::Record(Record::Chat(HistoryRecord::ReadCursor {
                    chat_id,
                    user_id,
                    up_to,
                })) => pending.push(exec!(
                    // A cursor only moves forward: written at its own value
                    // (ids grow), the higher cursor wins however the writes
                    // land — also one a chat warmed without its stored cursor
                    // sends later.
                    i64::try_from(*up_to).unwrap_or(i64::MAX).max(1),
                    &s.put_cursor,
                    (&**chat_id, &**user_id, *up_to as i64),
                )),
                Write::Record(Record::Relation(r)) => match &r.pair {
                    Some(pair) => {
                        let value = serde_json::to_string(pair)
                            .map_err(|e| err("encoding a relation", e))?;
                        pending.push(exec!(at_us, &s.put_relation, (&*r.user, &*r.other, value),));
                    }
                    None => pending.push(exec!(at_us, &s.del_relation, (&*r.user, &*r.other),)),
                },
                Write::Record(Record::Notification(n)) => {
                    let value = serde_json::to_string(&**n)
                        .map_err(|e| err("encoding a notification", e))?;
                    pending.push(exec!(
                        at_us,
                        &s.put_notification,
                        (&*n.user_id, n.id as i64, value),
                    ));
                }
                Write::Record(Record::NotificationDeleted { user, id }) => {
                    pending.push(exec!(at_us, &s.del_notification, (&**user, *id as i64)))
                }
                Write::Record(Record::Rating(r)) => pending.push(exec!(
                    at_us,
                    &s.put_rating,
                    (&*r.user, &*r.game, r.rating.mu, r.rating.sigma),
                )),
                Write::Record(Record::Channel(spec)) => {
                    let value =
                        serde_json::to_string(&**spec).map_err(|e| err("encoding a channel", e))?;
                    pending.push(exec!(at_us, &s.put_channel, (spec.name.as_str(), value)));
                }
                Write::OutboxPut(job) => {
                    let value =
                        serde_json::to_string(&**job).map_err(|e| err("encoding a job", e))?;
                    pending.push(exec!(at_us, &s.put_job, (node, &*job.id, value),));
                }
                Write::OutboxDone(id) => pending.push(exec!(at_us, &s.del_job, (node, &**id))),
            }
        }
        let written = futures_util::stream::iter(pending)
            .buffer_unordered(self.concurrency)
            .try_for_each(|_| async { Ok(()) })
            .await;
        let mut known = self.known_days.lock().unwrap_or_else(|e| e.into_inner());
        if written.is_err() || known.days.len() + new_days.len() > KNOWN_DAYS {
            known.days.clear();
        }
        if written.is_ok() {
            known.days.extend(new_days);
        }
        drop(known);
        written.map_err(|e| err("writing a batch", e))
    }

    /// [`HistoryStore::messages`], each with the time its stored version
    /// was written (µs; the write time it was stamped with).
    pub fn messages_written(
        &self,
        chat_id: &str,
        before_id: u64,
        limit: usize,
    ) -> Result<Vec<(i64, Arc<Message>)>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        // Ids are stored as bigint; a bound past its range bounds nothing.
        let before = i64::try_from(before_id).unwrap_or(i64::MAX);
        let s = &self.statements;
        let session = &self.session;
        self.runtime.block_on(async {
            let first = |rows: scylla::response::query_result::QueryResult| {
                rows.into_rows_result()
                    .map_err(|e| err("reading a bucket", e))?
                    .maybe_first_row::<(i32,)>()
                    .map_err(|e| err("reading a bucket", e))
                    .map(|r| r.map(|(b,)| b))
            };
            let mut bucket = if before_id == 0 {
                let rows = session
                    .execute_unpaged(&s.newest_bucket, (chat_id,))
                    .await
                    .map_err(|e| err("finding the newest day", e))?;
                first(rows)?
            } else {
                Some(bucket_of(before as u64))
            };
            let mut out: Vec<(i64, Arc<Message>)> = Vec::with_capacity(limit);
            while let Some(b) = bucket {
                let want = i32::try_from(limit - out.len()).unwrap_or(i32::MAX);
                let rows = if before_id == 0 {
                    session.execute_unpaged(&s.page, (chat_id, b, want)).await
                } else {
                    session
                        .execute_unpaged(&s.page_before, (chat_id, b, before, want))
                        .await
                }
                .map_err(|e| err("reading a page", e))?;
                let rows = rows
                    .into_rows_result()
                    .map_err(|e| err("reading a page", e))?;
                for row in rows
                    .rows::<MessageRow>()
                    .map_err(|e| err("reading a page", e))?
                {
                    let row = row.map_err(|e| err("reading a message", e))?;
                    let written = row.10.unwrap_or(i64::MIN);
                    out.push((written, message(chat_id, row)));
                }
                if out.len() >= limit {
                    break;
                }
                let rows = session
                    .execute_unpaged(&s.older_bucket, (chat_id, b))
                    .await
                    .map_err(|e| err("finding an older day", e))?;
                bucket = first(rows)?;
            }
            Ok(out)
        })
    }

    /// Every row of a small table, paged by the driver.
    fn scan<T>(&self, cql: &str) -> Result<Vec<T>, StoreError>
    where
        T: for<'f, 'm> scylla::deserialize::row::DeserializeRow<'f, 'm> + 'static,
    {
        self.runtime.block_on(async {
            let pager = self
                .session
                .query_iter(cql, &[])
                .await
                .map_err(|e| err(cql, e))?;
            pager
                .rows_stream::<T>()
                .map_err(|e| err(cql, e))?
                .try_collect()
                .await
                .map_err(|e| err(cql, e))
        })
    }
}

impl HistoryStore for ScyllaStore {
    fn write(&self, batch: &[Write]) -> Result<(), StoreError> {
        let stamped: Vec<Stamped> = batch
            .iter()
            .map(|w| Stamped {
                at_us: self.clock.next(),
                write: w.clone(),
            })
            .collect();
        self.runtime.block_on(self.write_stamped(&stamped))
    }

    fn messages(
        &self,
        chat_id: &str,
        before_id: u64,
        limit: usize,
    ) -> Result<Vec<Arc<Message>>, StoreError> {
        Ok(self
            .messages_written(chat_id, before_id, limit)?
            .into_iter()
            .map(|(_, m)| m)
            .collect())
    }

    fn read_cursor(&self, chat_id: &str, user_id: &str) -> Result<Option<u64>, StoreError> {
        self.runtime.block_on(async {
            let rows = self
                .session
                .execute_unpaged(&self.statements.get_cursor, (chat_id, user_id))
                .await
                .map_err(|e| err("reading a read cursor", e))?;
            let row = rows
                .into_rows_result()
                .map_err(|e| err("reading a read cursor", e))?
                .maybe_first_row::<(i64,)>()
                .map_err(|e| err("reading a read cursor", e))?;
            Ok(row.map(|(up_to,)| up_to as u64))
        })
    }

    fn load_relations(&self) -> Result<Vec<RelationRecord>, StoreError> {
        let rows: Vec<(String, String, String)> =
            self.scan("SELECT user_id, other_id, pair FROM relations")?;
        rows.into_iter()
            .map(|(user, other, pair)| {
                let pair: PairState =
                    serde_json::from_str(&pair).map_err(|e| err("decoding a relation", e))?;
                Ok(RelationRecord {
                    user: Arc::from(user),
                    other: Arc::from(other),
                    pair: Some(pair),
                })
            })
            .collect()
    }

    fn load_notifications(&self) -> Result<Vec<Notification>, StoreError> {
        let rows: Vec<(String,)> = self.scan("SELECT body FROM notifications")?;
        rows.into_iter()
            .map(|(body,)| {
                serde_json::from_str(&body).map_err(|e| err("decoding a notification", e))
            })
            .collect()
    }

    fn load_channels(&self) -> Result<Vec<crate::core::engine::chat::ChannelSpec>, StoreError> {
        let rows: Vec<(String,)> = self.scan("SELECT spec FROM channels")?;
        rows.into_iter()
            .map(|(spec,)| serde_json::from_str(&spec).map_err(|e| err("decoding a channel", e)))
            .collect()
    }

    fn load_ratings(&self) -> Result<Vec<RatingRecord>, StoreError> {
        let rows: Vec<(String, String, f64, f64)> =
            self.scan("SELECT user_id, game, mu, sigma FROM ratings")?;
        Ok(rows
            .into_iter()
            .map(|(user, game, mu, sigma)| RatingRecord {
                game: Arc::from(game),
                user: Arc::from(user),
                rating: Rating { mu, sigma },
            })
            .collect())
    }

    fn load_outbox(&self) -> Result<Vec<Job>, StoreError> {
        let rows: Vec<(String,)> = self.runtime.block_on(async {
            let pager = self
                .session
                .execute_iter(self.statements.jobs.clone(), (self.node,))
                .await
                .map_err(|e| err("reading the outbox", e))?;
            pager
                .rows_stream::<(String,)>()
                .map_err(|e| err("reading the outbox", e))?
                .try_collect()
                .await
                .map_err(|e| err("reading the outbox", e))
        })?;
        rows.into_iter()
            .map(|(job,)| serde_json::from_str(&job).map_err(|e| err("decoding a job", e)))
            .collect()
    }
}

#[cfg(test)]
pub(crate) mod tests;
