//! The durable webhook outbox: push and email deliveries of notifications,
//! and domain events for the game backend's integration webhook, POSTed
//! with retries and backoff until they succeed or run out of attempts.
//!
//! Durable: a job is written to the store before it is queued here, updated
//! after every failed attempt, and deleted when finished, so a restart
//! carries on with what was owed (at-least-once; every request carries an
//! `Idempotency-Key` so receivers can drop repeats). Outcomes of
//! notification deliveries go to the [`OutcomeSink`] the worker is started
//! with (the gateway's sends them to the user's shard, which owns the
//! notification's delivery state). Also owns the `[webhooks]` and
//! `[notifications]` settings.
//!
//! Never runs on a shard thread; a shard only calls [`Webhooks::enqueue`],
//! which never blocks. Knows nothing of shards, sessions or frames.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The stored job rows, kept by the store; re-exported where they were.
pub use crate::backend::store::jobs::{Job, Target};
use crate::backend::store::{History, HistoryStore, Write};
use crate::core::engine::notifications::{Channel, Delivery, Outcome};
use crate::core::engine::DomainEvent;
use crate::telemetry::metrics::metrics;

/// Jobs waiting for the worker. Full: the job is already in the store, and
/// the worker picks it up from there on its next sweep.
const QUEUE: usize = 16_384;
/// How often the worker looks in the store for jobs the full queue missed,
/// and for how long after the last miss it keeps looking (a job reaches the
/// store through the writer's queue, which may be behind).
const SWEEP_EVERY: Duration = Duration::from_secs(5);
const SWEEP_AFTER_MISS_MS: i64 = 60_000;
/// Finished job ids remembered, so a sweep that reads a job whose deletion
/// is still in the writer's queue does not send it again.
const RECENTLY_FINISHED: usize = 65_536;

fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The `[notifications]` section: what a user keeps, and the services that
/// push and email deliveries go to.
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

/// The `[webhooks]` section: the integration webhook, and how every
/// delivery is retried.
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

impl NotificationConfig {
    /// Why these settings cannot work, if they cannot.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_per_user == 0 {
            return Err("notifications.max_per_user must be > 0".into());
        }
        http_url("notifications.push_url", &self.push_url)?;
        http_url("notifications.email_url", &self.email_url)
    }
}

impl WebhookConfig {
    /// Why the delivery limits (attempts, backoff, timeout, batching,
    /// concurrency) cannot work, if they cannot.
    pub fn validate_limits(&self) -> Result<(), String> {
        if self.max_attempts == 0 || self.concurrency == 0 || self.events_batch == 0 {
            return Err(
                "webhooks.max_attempts, webhooks.concurrency and webhooks.events_batch must be > 0"
                    .into(),
            );
        }
        if self.retry_base_ms == 0 || self.retry_max_ms < self.retry_base_ms || self.timeout_ms == 0
        {
            return Err("webhooks.retry_base_ms and webhooks.timeout_ms must be > 0, and webhooks.retry_max_ms >= webhooks.retry_base_ms".into());
        }
        Ok(())
    }

    /// Why `events_url` is no webhook address, if it is not (empty is fine).
    pub fn validate_events_url(&self) -> Result<(), String> {
        http_url("webhooks.events_url", &self.events_url)
    }
}

/// Empty (not configured) or an http(s) URL; `key` names the setting.
fn http_url(key: &str, value: &str) -> Result<(), String> {
    if !value.is_empty()
        && !matches!(url::Url::parse(value), Ok(u) if u.scheme() == "http" || u.scheme() == "https")
    {
        return Err(format!("{key} must be an http(s) URL, got {value:?}"));
    }
    Ok(())
}

/// The enqueue side, cloned into every shard.
#[derive(Clone)]
pub struct Webhooks {
    tx: mpsc::Sender<Arc<Job>>,
    history: History,
    /// When a job last found the queue full (Unix ms; 0: never): the worker
    /// sweeps the store for a while after.
    missed_at: Arc<AtomicI64>,
    events_on: bool,
    node: u16,
    next_event: Arc<AtomicU64>,
}

/// The worker's half, handed to [`run`].
pub struct Worker {
    rx: mpsc::Receiver<Arc<Job>>,
    missed_at: Arc<AtomicI64>,
}

impl Webhooks {
    pub fn new(history: History, config: &WebhookConfig, node: u16) -> (Webhooks, Worker) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let missed_at = Arc::new(AtomicI64::new(0));
        (
            Webhooks {
                tx,
                history,
                missed_at: missed_at.clone(),
                events_on: !config.events_url.is_empty(),
                node,
                next_event: Arc::new(AtomicU64::new(0)),
            },
            Worker { rx, missed_at },
        )
    }

    /// Stores the job, then hands it to the worker. Never blocks on the
    /// worker.
    pub fn enqueue(&self, job: Job) {
        let job = Arc::new(job);
        self.history.write(Write::OutboxPut(job.clone()));
        if self.tx.try_send(job).is_err() {
            self.missed_at.store(unix_ms(), Ordering::Relaxed);
        }
    }

    /// A push or email delivery of a notification.
    pub fn deliver(&self, d: &Delivery) {
        let n = &d.notification;
        let id = format!("n:{}:{}", n.id, d.channel.name());
        let data = serde_json::from_str::<serde_json::Value>(&n.data).unwrap_or_default();
        self.enqueue(Job {
            payload: serde_json::json!({
                "id": id,
                "channel": d.channel.name(),
                "user_id": n.user_id,
                "notification": {
                    "id": n.id.to_string(),
                    "kind": n.kind,
                    "title": n.title,
                    "body": n.body,
                    "data": data,
                    "created_at_ms": n.created_at_ms,
                },
            }),
            id: Arc::from(id),
            target: match d.channel {
                Channel::Email => Target::Email,
                _ => Target::Push,
            },
            user: Some(n.user_id.clone()),
            notification_id: n.id,
            attempts: 0,
        });
    }

    /// A domain event for the integration webhook, when one is configured.
    pub fn publish(&self, event: &DomainEvent) {
        if !self.events_on {
            return;
        }
        let at_ms = unix_ms();
        let n = self.next_event.fetch_add(1, Ordering::Relaxed);
        let id = format!("e:{}:{at_ms}:{n}", self.node);
        self.enqueue(Job {
            payload: serde_json::json!({
                "id": id,
                "event": event.name(),
                "data": event.data(),
                "timestamp": at_ms,
            }),
            id: Arc::from(id),
            target: Target::Events,
            user: None,
            notification_id: 0,
            attempts: 0,
        });
    }
}

/// Where the outcome of each finished push or email delivery goes: to
/// whoever owns the notification's delivery state (the gateway hands the
/// worker one that sends it to the user's shard). The worker awaits each
/// report before it looks at the next finished job, so outcomes arrive in
/// the order the deliveries finished.
pub trait OutcomeSink: Send + Sync + 'static {
    /// Takes one outcome; `outcome.user` is the notification's user.
    fn report(&self, outcome: Outcome) -> impl Future<Output = ()> + Send;
}

/// What the worker needs besides its queue.
pub struct WorkerContext<S: OutcomeSink> {
    pub store: Arc<dyn HistoryStore>,
    pub history: History,
    /// Told the outcome of every finished notification delivery.
    pub outcomes: S,
    pub webhooks: WebhookConfig,
    pub notifications: NotificationConfig,
    pub stop: CancellationToken,
}

/// Requests in flight: each answers with the jobs it carried and how it went.
type Requests = JoinSet<(Vec<Arc<str>>, Result<(), String>)>;

struct State<S: OutcomeSink> {
    ctx: WorkerContext<S>,
    http: reqwest::Client,
    /// Every unfinished job, scheduled or in flight.
    jobs: HashMap<Arc<str>, Arc<Job>>,
    /// (due, id) of jobs waiting for their turn.
    due: BTreeSet<(Instant, Arc<str>)>,
    /// Ids finished lately, oldest first (see `RECENTLY_FINISHED`).
    finished: HashSet<Arc<str>>,
    finished_order: VecDeque<Arc<str>>,
}

impl<S: OutcomeSink> State<S> {
    fn add(&mut self, job: Arc<Job>, at: Instant) {
        if self.jobs.contains_key(&job.id) || self.finished.contains(&job.id) {
            return;
        }
        self.due.insert((at, job.id.clone()));
        self.jobs.insert(job.id.clone(), job);
    }

    fn url(&self, target: Target) -> &str {
        match target {
            Target::Push => &self.ctx.notifications.push_url,
            Target::Email => &self.ctx.notifications.email_url,
            Target::Events => &self.ctx.webhooks.events_url,
        }
    }

    fn backoff(&self, attempts: u16) -> Duration {
        let base = self.ctx.webhooks.retry_base_ms;
        let ms = base.saturating_mul(1u64 << attempts.saturating_sub(1).min(20));
        Duration::from_millis(ms.min(self.ctx.webhooks.retry_max_ms))
    }

    /// Takes due jobs into requests: events batched, deliveries one each.
    fn start_due(&mut self, inflight: &mut Requests) {
        let now = Instant::now();
        while inflight.len() < self.ctx.webhooks.concurrency {
            let Some((at, id)) = self.due.first().cloned() else {
                break;
            };
            if at > now {
                break;
            }
            self.due.pop_first();
            let Some(job) = self.jobs.get(&id).cloned() else {
                continue;
            };
            let (ids, body) = if job.target == Target::Events {
                // The other due events ride along, found in one pass.
                let batch = self.ctx.webhooks.events_batch;
                let more: Vec<(Instant, Arc<str>)> = self
                    .due
                    .iter()
                    .take_while(|(at, _)| *at <= now)
                    .filter(|(_, id)| {
                        self.jobs
                            .get(id)
                            .is_some_and(|j| j.target == Target::Events)
                    })
                    .take(batch.saturating_sub(1))
                    .cloned()
                    .collect();
                let mut ids = vec![id];
                let mut events = vec![job.payload.clone()];
                for entry in more {
                    self.due.remove(&entry);
                    if let Some(j) = self.jobs.get(&entry.1) {
                        events.push(j.payload.clone());
                    }
                    ids.push(entry.1);
                }
                (ids, serde_json::json!({ "events": events }))
            } else {
                (vec![id], job.payload.clone())
            };
            let request = self
                .http
                .post(self.url(job.target))
                .header("Idempotency-Key", &*ids[0])
                .json(&body);
            let request = match self.ctx.webhooks.token.as_str() {
                "" => request,
                token => request.bearer_auth(token),
            };
            inflight.spawn(async move {
                let result = match request.send().await {
                    Ok(r) if r.status().is_success() => Ok(()),
                    Ok(r) => Err(format!("webhook answered {}", r.status())),
                    Err(e) => Err(format!("webhook unreachable: {e}")),
                };
                (ids, result)
            });
        }
    }

    async fn finished(&mut self, ids: Vec<Arc<str>>, result: Result<(), String>) {
        for id in ids {
            let Some(job) = self.jobs.get(&id).cloned() else {
                continue;
            };
            let attempts = job.attempts.saturating_add(1);
            let give_up = attempts >= self.ctx.webhooks.max_attempts;
            match &result {
                Ok(()) => {
                    metrics().webhook_sent.inc();
                }
                Err(e) if give_up => {
                    metrics().webhook_failed.inc();
                    tracing::warn!(job = %id, error = %e, attempts, "webhook delivery gave up");
                }
                Err(e) => {
                    metrics().webhook_retried.inc();
                    tracing::debug!(job = %id, error = %e, attempts, "webhook delivery failed; will retry");
                    let retry = Arc::new(Job {
                        attempts,
                        ..(*job).clone()
                    });
                    self.write(Write::OutboxPut(retry.clone())).await;
                    self.jobs.insert(id.clone(), retry);
                    self.due
                        .insert((Instant::now() + self.backoff(attempts), id));
                    continue;
                }
            }
            self.jobs.remove(&id);
            self.finished.insert(id.clone());
            self.finished_order.push_back(id.clone());
            if self.finished_order.len() > RECENTLY_FINISHED {
                if let Some(old) = self.finished_order.pop_front() {
                    self.finished.remove(&old);
                }
            }
            self.write(Write::OutboxDone(id.clone())).await;
            if let (Some(user), Target::Push | Target::Email) = (&job.user, job.target) {
                let outcome = Outcome {
                    user: user.clone(),
                    id: job.notification_id,
                    channel: if job.target == Target::Email {
                        Channel::Email
                    } else {
                        Channel::Push
                    },
                    attempts,
                    result: result.clone(),
                };
                self.ctx.outcomes.report(outcome).await;
            }
        }
    }

    /// A store write from the async side: without waiting when the
    /// writer has room, else off the async workers.
    async fn write(&self, write: Write) {
        if let Err(write) = self.ctx.history.try_write(write) {
            let history = self.ctx.history.clone();
            let _ = tokio::task::spawn_blocking(move || history.write(write)).await;
        }
    }

    /// Jobs in the store the full queue never handed over (read off the
    /// async workers).
    async fn sweep_store(&mut self) {
        let store = self.ctx.store.clone();
        match tokio::task::spawn_blocking(move || store.load_outbox()).await {
            Ok(Ok(jobs)) => {
                let now = Instant::now();
                for job in jobs {
                    self.add(Arc::new(job), now);
                }
            }
            Ok(Err(e)) => tracing::error!(error = %e, "webhook outbox: reading the store failed"),
            Err(e) => tracing::error!(error = %e, "webhook outbox: the store read did not finish"),
        }
    }
}

/// Runs the worker until `ctx.stop` is cancelled. Unfinished jobs stay in
/// the store for the next start.
pub async fn run<S: OutcomeSink>(worker: Worker, ctx: WorkerContext<S>) {
    let Worker { mut rx, missed_at } = worker;
    let http = match reqwest::Client::builder()
        .timeout(Duration::from_millis(ctx.webhooks.timeout_ms))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "webhook outbox: no HTTP client; deliveries wait in the store");
            return;
        }
    };
    let mut state = State {
        ctx,
        http,
        jobs: HashMap::new(),
        due: BTreeSet::new(),
        finished: HashSet::new(),
        finished_order: VecDeque::new(),
    };
    state.sweep_store().await;
    let mut inflight = JoinSet::new();
    let mut next_sweep = Instant::now() + SWEEP_EVERY;
    loop {
        state.start_due(&mut inflight);
        let wake = state
            .due
            .first()
            .map_or(next_sweep, |(at, _)| (*at).min(next_sweep));
        tokio::select! {
            _ = state.ctx.stop.cancelled() => break,
            job = rx.recv() => match job {
                Some(job) => state.add(job, Instant::now()),
                None => break,
            },
            Some(done) = inflight.join_next(), if !inflight.is_empty() => {
                if let Ok((ids, result)) = done {
                    state.finished(ids, result).await;
                }
            }
            _ = tokio::time::sleep_until(wake) => {
                if Instant::now() >= next_sweep {
                    next_sweep = Instant::now() + SWEEP_EVERY;
                    let missed = missed_at.load(Ordering::Relaxed);
                    if missed > 0 && unix_ms() - missed < SWEEP_AFTER_MISS_MS {
                        state.sweep_store().await;
                    }
                }
            }
        }
    }
    inflight.abort_all();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::store::ack::AckMode;
    use crate::backend::store::embedded::EmbeddedStore;
    use crate::backend::store::AckSettings;

    /// Passes on every outcome it is told, in order.
    struct Recorded(mpsc::UnboundedSender<Outcome>);

    impl OutcomeSink for Recorded {
        async fn report(&self, outcome: Outcome) {
            let _ = self.0.send(outcome);
        }
    }

    #[tokio::test]
    async fn a_finished_delivery_is_reported_to_the_sink_and_leaves_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn HistoryStore> =
            Arc::new(EmbeddedStore::open(&dir.path().join("h.redb"), 8 << 20).unwrap());
        let ack = AckSettings {
            dir: dir.path().join("ack"),
            mode: AckMode::Durable,
        };
        let (history, threads) = History::start(store.clone(), &ack).unwrap();
        // No push service configured: the one attempt fails at once, and
        // with one attempt allowed the delivery gives up.
        let webhooks_config = WebhookConfig {
            max_attempts: 1,
            ..WebhookConfig::default()
        };
        let (webhooks, worker) = Webhooks::new(history.clone(), &webhooks_config, 0);
        let (tx, mut outcomes) = mpsc::unbounded_channel();
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(
            worker,
            WorkerContext {
                store: store.clone(),
                history: history.clone(),
                outcomes: Recorded(tx),
                webhooks: webhooks_config,
                notifications: NotificationConfig::default(),
                stop: stop.clone(),
            },
        ));
        webhooks.enqueue(Job {
            id: Arc::from("n:7:push"),
            target: Target::Push,
            user: Some(Arc::from("u1")),
            notification_id: 7,
            payload: serde_json::json!({}),
            attempts: 0,
        });
        let outcome = outcomes.recv().await.expect("the worker reports");
        assert_eq!(&*outcome.user, "u1");
        assert_eq!(outcome.id, 7);
        assert_eq!(outcome.channel, Channel::Push);
        assert_eq!(outcome.attempts, 1);
        assert!(outcome.result.is_err(), "{:?}", outcome.result);
        stop.cancel();
        task.await.unwrap();
        drop((webhooks, history));
        threads.join();
        assert!(store.load_outbox().unwrap().is_empty(), "the job is done");
    }

    #[test]
    fn webhook_addresses_must_be_http() {
        let mut n = NotificationConfig::default();
        assert!(n.validate().is_ok(), "empty: not configured");
        n.push_url = "ftp://push.example".into();
        let err = n.validate().unwrap_err();
        assert!(err.contains("notifications.push_url"), "{err}");
        let w = WebhookConfig {
            events_url: "https://hooks.example/events".into(),
            ..WebhookConfig::default()
        };
        assert!(w.validate_events_url().is_ok() && w.validate_limits().is_ok());
    }
}
