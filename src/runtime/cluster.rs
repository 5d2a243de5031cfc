//! A node's membership task: the thin loop that runs the sans-IO
//! [`Ownership`] against the Redis [`Coordinator`] on the I/O runtime —
//! tick, sync, hand the reply back, sleep until the next wakeup — and
//! publishes the lease deadline where every serving thread can read it
//! without a lock. Owns the task and its channels; never decides
//! ownership (the core does) and never touches a slot's data (whoever
//! receives the [`OwnershipEvent`]s does).
//!
//! Whoever serves a slot checks [`Lease::valid_at`] before acting on it:
//! if this task stalls, the deadline still passes and serving stops, as
//! the lease rule requires. Events go out on a bounded channel sized for a
//! whole table's worth of changes; a consumer slower than that makes the
//! task wait (its lease may then lapse, which is safe, and is counted).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::backend::coordinator::Coordinator;
use crate::core::cluster::{NodeId, Ownership, OwnershipEvent, OwnershipSettings, Slot, SLOTS};

/// Room for every slot to change twice, plus membership news.
const EVENTS: usize = 2 * SLOTS as usize + 64;
const CONTROLS: usize = SLOTS as usize + 16;

/// The node's lease deadline, readable from any thread.
#[derive(Clone, Debug)]
pub struct Lease {
    base: Instant,
    /// Nanoseconds after `base` until which slots may be served; 0: none.
    until_ns: Arc<AtomicU64>,
}

impl Lease {
    fn new(base: Instant) -> Self {
        Self {
            base,
            until_ns: Arc::new(AtomicU64::new(0)),
        }
    }

    fn set(&self, until: Option<Instant>) {
        let ns = until.map_or(0, |t| {
            t.saturating_duration_since(self.base).as_nanos() as u64
        });
        self.until_ns.store(ns, Ordering::Release);
    }

    /// True while the slots this node was given may be served at `now`.
    pub fn valid_at(&self, now: Instant) -> bool {
        let until = self.until_ns.load(Ordering::Acquire);
        until != 0 && (now.saturating_duration_since(self.base).as_nanos() as u64) < until
    }
}

enum Control {
    HandedOver(Slot),
    Leave,
}

/// Counts of what the task saw, for the metrics and the logs.
#[derive(Debug, Default)]
pub struct MembershipStats {
    pub syncs: AtomicU64,
    pub sync_failures: AtomicU64,
    pub lapses: AtomicU64,
}

/// A running membership: its lease, its controls.
pub struct Membership {
    node: NodeId,
    lease: Lease,
    control: mpsc::Sender<Control>,
    stats: Arc<MembershipStats>,
    task: JoinHandle<()>,
}

impl Membership {
    /// Starts the task for `node` on the current tokio runtime; the events
    /// arrive on the returned receiver, in order.
    pub fn start(
        coordinator: Coordinator,
        node: NodeId,
        settings: OwnershipSettings,
    ) -> (Self, mpsc::Receiver<OwnershipEvent>) {
        let now = Instant::now();
        let lease = Lease::new(now);
        let (events, received) = mpsc::channel(EVENTS);
        let (control, controls) = mpsc::channel(CONTROLS);
        let stats = Arc::new(MembershipStats::default());
        let task = tokio::spawn(run(
            coordinator,
            Ownership::new(node, settings, now),
            lease.clone(),
            events,
            controls,
            stats.clone(),
        ));
        (
            Self {
                node,
                lease,
                control,
                stats,
                task,
            },
            received,
        )
    }

    /// This node.
    pub fn node(&self) -> NodeId {
        self.node
    }

    /// The lease deadline every server of a slot checks.
    pub fn lease(&self) -> &Lease {
        &self.lease
    }

    /// What the task counted.
    pub fn stats(&self) -> &MembershipStats {
        &self.stats
    }

    /// A released slot's state is stored: give it back.
    pub async fn handed_over(&self, slot: Slot) {
        let _ = self.control.send(Control::HandedOver(slot)).await;
    }

    /// Drain: hand every slot over, then end the membership; the events
    /// end with [`OwnershipEvent::Departed`].
    pub async fn leave(&self) {
        let _ = self.control.send(Control::Leave).await;
    }

    /// Stops the task at once, as a crash would (the membership expires at
    /// the coordinator a lease later).
    pub fn abort(&self) {
        self.task.abort();
        self.lease.set(None);
    }

    /// True once the task has ended (departed or aborted).
    pub fn finished(&self) -> bool {
        self.task.is_finished()
    }
}

async fn run(
    coordinator: Coordinator,
    mut own: Ownership,
    lease: Lease,
    events: mpsc::Sender<OwnershipEvent>,
    mut controls: mpsc::Receiver<Control>,
    stats: Arc<MembershipStats>,
) {
    let mut out = Vec::new();
    loop {
        let now = Instant::now();
        let request = own.tick(now, &mut out);
        if out
            .iter()
            .any(|e| matches!(e, OwnershipEvent::Suspended { .. }))
        {
            stats.lapses.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(node = %own.node(), "cluster lease lapsed: serving nothing until the coordinator answers");
        }
        lease.set(own.lease_until());
        if !deliver(&events, &mut out).await {
            return;
        }
        if let Some(request) = request {
            // One sync in flight at a time; it gives up after the
            // coordinator's own timeout, well inside a lease.
            match coordinator.sync(&request).await {
                Ok(reply) => {
                    stats.syncs.fetch_add(1, Ordering::Relaxed);
                    own.synced(Instant::now(), reply, &mut out);
                }
                Err(e) => {
                    stats.sync_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(node = %own.node(), error = %e, "cluster sync failed");
                    own.sync_failed(request.id);
                }
            }
            // The deadline first, then the news: a consumer that acts on
            // an Acquired event finds the lease already valid.
            lease.set(own.lease_until());
            let departed = own.departed();
            if !deliver(&events, &mut out).await || departed {
                lease.set(None);
                return;
            }
            continue;
        }
        let wake = own
            .next_wakeup()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
        tokio::select! {
            _ = tokio::time::sleep_until(wake.into()) => {}
            control = controls.recv() => {
                let Some(control) = control else { return };
                apply(&mut own, control);
                // Everything else already waiting goes into the same sync:
                // a node handing 500 slots over sends one release, not 500.
                while let Ok(control) = controls.try_recv() {
                    apply(&mut own, control);
                }
            }
        }
    }
}

fn apply(own: &mut Ownership, control: Control) {
    match control {
        Control::HandedOver(slot) => own.handed_over(slot),
        Control::Leave => own.leave(),
    }
}

async fn deliver(events: &mpsc::Sender<OwnershipEvent>, out: &mut Vec<OwnershipEvent>) -> bool {
    for event in out.drain(..) {
        if events.send(event).await.is_err() {
            return false;
        }
    }
    true
}
