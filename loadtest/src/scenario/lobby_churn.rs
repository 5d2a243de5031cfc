//! `lobby-churn`: `--clients` clients in groups of `--lobby-size` (clients
//! `0..S-1` in group 0, and so on), each group playing lobby rounds: the
//! group's first client, its *host*, creates a lobby (game `lt`, mode
//! `churn`, region `local`, min 1, max S, public, with its lobby chat as the
//! SDK creates one by default), the others join it, every member sends READY
//! and then LEAVE; the last LEAVE closes the lobby, and the host creates the
//! next one.
//!
//! Every client connects (`Hello` → `Welcome`), at most `--concurrency`
//! setups in flight, each within 30 s. Once **all** setups completed or
//! failed, the rounds run for `--duration-s`, hosts starting spread evenly
//! over one `--think-ms`. Clients are closed-loop: one request in flight at
//! a time, the next one `--think-ms` after the previous one's reply (or
//! timeout), so each client makes at most one request per think time and
//! the total rate stays bounded whatever the gateway's latency.
//!
//! Within a group, through a watch channel ([`Round`]):
//! - the lobby id goes from the host to the others as soon as the host has
//!   read its create reply; a member joins the group's newest lobby once its
//!   own think time has passed;
//! - the host sends its LEAVE only once every live member has finished its
//!   join (joined, refused or timed out), so a lobby never closes under a
//!   late joiner.
//!
//! Each request's latency, from writing it to reading its reply (matched by
//! request id), goes into the HDR histogram (µs) of its kind. An `Error`
//! reply, an unexpected reply, or no reply within [`REPLY_TIMEOUT`] counts as
//! an error of its kind, tallied by code. A failed create is retried after
//! the think time, a member whose join failed waits for the next lobby, and
//! a failed READY or LEAVE goes on as if it had succeeded.
//!
//! Lobby events (member joined, ready, left, all ready, host changed) are
//! read as they come and counted; the heartbeat `Ping`s acknowledge the
//! highest `seq` seen, as in chat-fanout, so the gateway can release them.
//! When the rounds start, each client's heartbeats move to their own slot,
//! client *i* at *i/C* of an interval: all clients connect within a second or
//! two, and their first `Ping`s would otherwise all fall due in that same
//! window every interval (with 15,000 clients on one 2-core machine such a
//! burst alone pushed the p99 of the operations in flight from ~5 ms to
//! 75-200 ms), which is the setup's artifact, not churn.
//!
//! The window (`duration_s`, CPU) runs from the first request slot until
//! every client has stopped: no request goes out after `--duration-s`, and
//! those still in flight then are waited for (each at most
//! [`REPLY_TIMEOUT`]). Then every connection is closed.
//!
//! The report's `sent` counts requests, `delivered` their replies (errors
//! included), `expected` equals `sent`, `lost` is the requests left without a
//! reply, `latency_us` is over every successful request; `operations` has
//! each kind apart and `ops_per_s`, the successful requests per second.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use hdrhistogram::Histogram;
use huddle_client::transport::Transport;
use huddle_schema::encode::LobbyCreateFields;
use huddle_schema::error_code_name;
use huddle_schema::wire::{Body, Frame, LobbyOpKind, LobbyVisibility};
use tokio::sync::watch;
use tokio::time::{sleep, sleep_until, Instant, Sleep};

use super::{print_failures, transport_name, Crowd, Phase, Probes};
use crate::report::{self, OpReport, Operations, Params, Percentiles, Report};
use crate::setup::{encode, histogram, Failure, Setup, MAX_ACK_SEQ, PINGS_SENT};
use crate::Args;

/// How long a request waits for its reply before it counts as an error.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long after `--duration-s` the requests in flight are waited for:
/// past [`REPLY_TIMEOUT`], so that each ends with its reply or its timeout.
const STRAGGLER_WAIT: Duration = Duration::from_secs(6);
/// Latency histograms per kind, each behind its own lock (client `i` records
/// into shard `i mod 8`), so `--threads` > 1 does not serialize on one.
const LATENCY_SHARDS: usize = 8;
/// Request id of a client's first lobby request (the `Hello` is 1); each
/// later one adds 1.
const FIRST_REQUEST_ID: u64 = 2;
/// Error replies printed one by one before only the counts go on.
const ERRORS_SHOWN: u64 = 10;
/// What a timer that is not armed waits for.
const FAR_AWAY: Duration = Duration::from_secs(86_400);
/// The created lobbies' game, mode and region.
const GAME: &str = "lt";
const MODE: &str = "churn";
const REGION: &str = "local";
/// The error code tallied for a request without a reply in time.
const TIMEOUT: &str = "TIMEOUT";

/// The lobby operations, in round order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Create,
    Join,
    Ready,
    Leave,
}

impl Op {
    const ALL: [Self; 4] = [Self::Create, Self::Join, Self::Ready, Self::Leave];

    fn name(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Join => "join",
            Self::Ready => "ready",
            Self::Leave => "leave",
        }
    }

    /// The reply that means success.
    fn reply(self) -> Body {
        match self {
            Self::Leave => Body::LobbyLeft,
            Self::Create | Self::Join | Self::Ready => Body::LobbyReply,
        }
    }
}

/// What happened to the requests of one kind.
struct OpStats {
    sent: AtomicU64,
    ok: AtomicU64,
    errors: AtomicU64,
    /// `errors` by code.
    error_codes: Mutex<BTreeMap<String, u64>>,
    /// Request to reply, µs, successful requests.
    latency_us: Vec<Mutex<Histogram<u64>>>,
}

impl OpStats {
    fn new() -> Self {
        Self {
            sent: AtomicU64::new(0),
            ok: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            error_codes: Mutex::new(BTreeMap::new()),
            latency_us: (0..LATENCY_SHARDS)
                .map(|_| Mutex::new(histogram()))
                .collect(),
        }
    }

    /// All latency shards in one histogram.
    fn latency(&self) -> Histogram<u64> {
        self.latency_us.iter().fold(histogram(), |mut all, shard| {
            let shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            all.add(&*shard).expect("same histogram bounds");
            all
        })
    }

    fn report(&self, window_s: f64) -> OpReport {
        let count = self.ok.load(Relaxed);
        OpReport {
            count,
            errors: self.errors.load(Relaxed),
            per_s: report::round(count as f64 / window_s.max(1e-9), 1),
            latency_us: Percentiles::of(&self.latency()),
            error_codes: self
                .error_codes
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        }
    }
}

/// A group's current lobby, shared by its members through a watch channel.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Round {
    /// Lobbies the host has created; 0 before the first.
    n: u64,
    /// The id of lobby `n`.
    lobby_id: Option<Arc<str>>,
    /// Members other than the host done with their join of lobby `n`:
    /// joined, refused or timed out.
    joins_done: u32,
    /// Members whose setup completed and that did not drop since, the host
    /// included.
    alive: u32,
}

impl Round {
    /// Whether the host may leave lobby `n`: every other live member is
    /// done joining it.
    fn joins_settled(&self) -> bool {
        self.joins_done + 1 >= self.alive
    }

    /// A lobby newer than round `seen`, to join.
    fn newer_than(&self, seen: u64) -> Option<(u64, Arc<str>)> {
        (self.n > seen)
            .then(|| self.lobby_id.clone().map(|id| (self.n, id)))
            .flatten()
    }
}

/// What all client tasks share.
struct Churn {
    setup: Arc<Setup>,
    clients: u32,
    lobby_size: u32,
    think: Duration,
    duration: Duration,
    /// Group g's current lobby.
    groups: Vec<watch::Sender<Round>>,
    /// By [`Op`], in [`Op::ALL`] order.
    ops: [OpStats; 4],
    /// Clients that stopped sending: past the run's end, or dropped.
    finished: AtomicU64,
    /// `LobbyEvent`s received, by all clients.
    events: AtomicU64,
    /// Replies that answer no request in flight (after their timeout).
    late_replies: AtomicU64,
    /// `Error`s that answer no request in flight.
    stray_errors: AtomicU64,
    /// Errors printed so far.
    shown: AtomicU64,
}

/// How a request ended.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// Its reply; a create's carries the new lobby's id.
    Ok(Option<Arc<str>>),
    /// An error, by code.
    Failed(String),
}

impl Churn {
    fn new(args: &Args, setup: Arc<Setup>) -> Self {
        let groups = args.clients.div_ceil(args.lobby_size) as usize;
        Self {
            setup,
            clients: args.clients,
            lobby_size: args.lobby_size,
            think: Duration::from_millis(args.think_ms),
            duration: Duration::from_secs(args.duration_s),
            groups: (0..groups)
                .map(|_| watch::Sender::new(Round::default()))
                .collect(),
            ops: [
                OpStats::new(),
                OpStats::new(),
                OpStats::new(),
                OpStats::new(),
            ],
            finished: AtomicU64::new(0),
            events: AtomicU64::new(0),
            late_replies: AtomicU64::new(0),
            stray_errors: AtomicU64::new(0),
            shown: AtomicU64::new(0),
        }
    }

    fn stats(&self, op: Op) -> &OpStats {
        &self.ops[op as usize]
    }

    fn sum(&self, count: impl Fn(&OpStats) -> u64) -> u64 {
        self.ops.iter().map(count).sum()
    }

    /// Every kind's latencies in one histogram.
    fn latency(&self) -> Histogram<u64> {
        self.ops.iter().fold(histogram(), |mut all, op| {
            all.add(op.latency()).expect("same histogram bounds");
            all
        })
    }

    /// A frame for client `i` that is not the session's own business: the
    /// reply to its request in flight `(op, request id)`, whose outcome is
    /// returned, or anything else (events, late replies), counted.
    fn on_frame(&self, i: u32, frame: &Frame<'_>, pending: Option<(Op, u64)>) -> Option<Outcome> {
        let body = frame.body_type();
        if body == Body::LobbyEvent {
            self.events.fetch_add(1, Relaxed);
            return None;
        }
        let request_id = frame.request_id();
        match pending {
            Some((op, want)) if request_id == want => Some(self.outcome(i, op, frame)),
            _ if body == Body::Error => {
                self.stray_errors.fetch_add(1, Relaxed);
                let (code, message) = error_of(frame);
                self.show(format_args!(
                    "client {i}: request {request_id}: server error {code}: {message}"
                ));
                None
            }
            _ => {
                if request_id != 0 {
                    self.late_replies.fetch_add(1, Relaxed);
                }
                None
            }
        }
    }

    /// The outcome of `op` from its reply.
    fn outcome(&self, i: u32, op: Op, frame: &Frame<'_>) -> Outcome {
        let body = frame.body_type();
        if body == op.reply() {
            if op != Op::Create {
                return Outcome::Ok(None);
            }
            let id = frame
                .body_as_lobby_reply()
                .and_then(|r| r.lobby())
                .and_then(|l| l.id())
                .filter(|id| !id.is_empty());
            return match id {
                Some(id) => Outcome::Ok(Some(Arc::from(id))),
                None => Outcome::Failed("reply without a lobby id".into()),
            };
        }
        let code = if body == Body::Error {
            let (code, message) = error_of(frame);
            self.show(format_args!(
                "client {i}: {}: server error {code}: {message}",
                op.name()
            ));
            code.to_owned()
        } else {
            format!("unexpected {}", body.variant_name().unwrap_or("frame"))
        };
        Outcome::Failed(code)
    }

    /// Prints `what` while fewer than [`ERRORS_SHOWN`] were.
    fn show(&self, what: std::fmt::Arguments<'_>) {
        if self.shown.fetch_add(1, Relaxed) < ERRORS_SHOWN {
            eprintln!("{what}");
        }
    }

    /// Counts the end of a request of client `i`.
    fn record(&self, i: u32, op: Op, outcome: &Outcome, sent: Instant, now: Instant) {
        let stats = self.stats(op);
        match outcome {
            Outcome::Ok(_) => {
                let us = now.saturating_duration_since(sent).as_micros() as u64;
                stats.latency_us[i as usize % LATENCY_SHARDS]
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .saturating_record(us.max(1));
                stats.ok.fetch_add(1, Relaxed);
            }
            Outcome::Failed(code) => {
                stats.errors.fetch_add(1, Relaxed);
                *stats
                    .error_codes
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .entry(code.clone())
                    .or_default() += 1;
            }
        }
    }
}

/// An `Error` frame's code name and message.
fn error_of<'a>(frame: &Frame<'a>) -> (&'static str, &'a str) {
    frame.body_as_error().map_or(("UNKNOWN", ""), |e| {
        (error_code_name(e.code()), e.message().unwrap_or_default())
    })
}

pub(super) async fn run(
    args: &Args,
    transport: Transport,
    source_ips: u32,
    setup: Arc<Setup>,
    probes: Probes,
) -> anyhow::Result<Report> {
    let ctx = Arc::new(Churn::new(args, setup.clone()));
    eprintln!(
        "  {} group(s) of {}, think {} ms, {} s of rounds",
        ctx.groups.len(),
        args.lobby_size,
        args.think_ms,
        args.duration_s
    );
    let crowd = Crowd::gather(&setup, args.clients, |i, phase| {
        client(ctx.clone(), i, phase)
    })
    .await?;
    let connections = crowd.connections;

    // The measurement window: from the first request slot until every
    // client stopped.
    let cpu_at_window = probes.mark();
    let start = crowd.start();
    sleep_until(start + ctx.duration).await;
    let deadline = Instant::now() + STRAGGLER_WAIT;
    while ctx.finished.load(Relaxed) < connections && Instant::now() < deadline {
        sleep(Duration::from_millis(10)).await;
    }
    let duration_s = start.elapsed().as_secs_f64();
    let cpu_used = probes.since(cpu_at_window);
    let sent = ctx.sum(|op| op.sent.load(Relaxed));
    let ok = ctx.sum(|op| op.ok.load(Relaxed));
    let errors = ctx.sum(|op| op.errors.load(Relaxed));
    let timeouts = ctx.sum(|op| {
        let codes = op
            .error_codes
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        codes.get(TIMEOUT).copied().unwrap_or(0)
    });
    let delivered = ok + errors - timeouts;
    let [create, join, ready, leave] = Op::ALL.map(|op| ctx.stats(op).report(duration_s));
    let operations = Operations {
        create,
        join,
        ready,
        leave,
        ops_per_s: report::round(ok as f64 / duration_s, 1),
    };
    let latency_us = ctx.latency();

    let connect = crowd.finish(&setup).await;
    let (server, loadgen) = probes.finish(cpu_used);
    let report = Report {
        scenario: args.scenario,
        target: report::TARGET,
        transport: transport_name(transport),
        params: Params::new(args, source_ips),
        connections,
        duration_s: report::round(duration_s, 3),
        sent,
        delivered,
        expected: sent,
        lost: sent.saturating_sub(delivered),
        delivered_per_s: report::round(delivered as f64 / duration_s, 1),
        latency_us: Percentiles::of(&latency_us),
        connect,
        server,
        loadgen,
        operations: Some(operations),
    };
    report::summarize(&report, setup.dropped.load(Relaxed));
    if let Some(ops) = &report.operations {
        for (op, r) in Op::ALL
            .iter()
            .zip([&ops.create, &ops.join, &ops.ready, &ops.leave])
        {
            let lat = &r.latency_us;
            eprintln!(
                "  {:<6} {} ok ({}/s), {} errors; us p50 {} p99 {} max {}",
                op.name(),
                r.count,
                r.per_s,
                r.errors,
                lat.p50,
                lat.p99,
                lat.max
            );
            for (code, n) in &r.error_codes {
                eprintln!("         {n} x {code}");
            }
        }
        eprintln!(
            "  {} ops/s; {} lobby events; {} late replies; {} other error frames",
            ops.ops_per_s,
            ctx.events.load(Relaxed),
            ctx.late_replies.load(Relaxed),
            ctx.stray_errors.load(Relaxed)
        );
    }
    eprintln!(
        "  heartbeats: {} Pings sent, highest ack_seq {}",
        PINGS_SENT.load(Relaxed),
        MAX_ACK_SEQ.load(Relaxed)
    );
    print_failures(&setup);
    Ok(report)
}

/// Where one client is in its rounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Before the run starts.
    Idle,
    /// Sends the op when the timer fires.
    Think(Op),
    /// Waits for its group: a member for the next lobby (`Join`), the host
    /// for every join before its `Leave`. The timer is the run's end.
    Wait(Op),
    /// The op is in flight; the timer is its reply deadline.
    Await {
        op: Op,
        request_id: u64,
        sent: Instant,
    },
    /// Past the run's end (or its connection lost): no more requests.
    Finished,
}

/// One client's rounds, less its connection.
struct Member<'a> {
    i: u32,
    /// Its group's current lobby.
    group: &'a watch::Sender<Round>,
    /// The same, as this member last saw it.
    rx: watch::Receiver<Round>,
    host: bool,
    /// The group's lobby round this member last took part in.
    round: u64,
    /// The lobby it is in (or joining, or leaving).
    lobby: Option<Arc<str>>,
    next_request_id: u64,
    state: State,
    /// When the next request may go: the last one's end + the think time.
    not_before: Instant,
    /// No request goes out from then on.
    run_end: Instant,
}

impl<'a> Member<'a> {
    fn new(i: u32, host: bool, group: &'a watch::Sender<Round>) -> Self {
        let now = Instant::now();
        Self {
            i,
            group,
            rx: group.subscribe(),
            host,
            round: 0,
            lobby: None,
            next_request_id: FIRST_REQUEST_ID,
            state: State::Idle,
            not_before: now,
            run_end: now + FAR_AWAY,
        }
    }

    fn timer_armed(&self) -> bool {
        matches!(
            self.state,
            State::Think(_) | State::Wait(_) | State::Await { .. }
        )
    }

    /// The request in flight: its op and request id.
    fn pending(&self) -> Option<(Op, u64)> {
        match self.state {
            State::Await { op, request_id, .. } => Some((op, request_id)),
            _ => None,
        }
    }

    fn finish(&mut self, ctx: &Churn) {
        if self.state != State::Finished {
            self.state = State::Finished;
            ctx.finished.fetch_add(1, Relaxed);
        }
    }

    /// Sends `op` once the think time passed (at the run's end, stops).
    fn think(&mut self, op: Op, timer: Pin<&mut Sleep>) {
        self.state = State::Think(op);
        timer.reset(self.not_before.min(self.run_end));
    }

    /// Waits for the group before `op`, checking it right away.
    fn wait(&mut self, op: Op, mut timer: Pin<&mut Sleep>) {
        self.state = State::Wait(op);
        timer.as_mut().reset(self.run_end);
        self.on_group(timer);
    }

    /// The run starts at `start`: the host's first create at `offset`
    /// after it, the others wait for it.
    fn start(&mut self, start: Instant, end: Instant, offset: Duration, timer: Pin<&mut Sleep>) {
        self.run_end = end;
        if self.host {
            self.not_before = start + offset;
            self.think(Op::Create, timer);
        } else {
            self.not_before = start;
            self.wait(Op::Join, timer);
        }
    }

    /// The group changed (or is to be checked): moves on when what this
    /// member waits for happened.
    fn on_group(&mut self, timer: Pin<&mut Sleep>) {
        let State::Wait(op) = self.state else {
            return;
        };
        let round = self.rx.borrow_and_update();
        match op {
            Op::Join => {
                if let Some((n, id)) = round.newer_than(self.round) {
                    drop(round);
                    self.round = n;
                    self.lobby = Some(id);
                    self.think(Op::Join, timer);
                }
            }
            Op::Leave => {
                if round.joins_settled() {
                    drop(round);
                    self.think(Op::Leave, timer);
                }
            }
            Op::Create | Op::Ready => {}
        }
    }

    /// The timer fired at `now`: the request to send, if any.
    fn on_timer(&mut self, ctx: &Churn, now: Instant, timer: Pin<&mut Sleep>) -> Option<Op> {
        match self.state {
            State::Think(_) if now >= self.run_end => {
                self.finish(ctx);
                None
            }
            State::Think(Op::Leave) if self.host && !self.group.borrow().joins_settled() => {
                self.wait(Op::Leave, timer);
                None
            }
            State::Think(op) => Some(op),
            State::Wait(_) => {
                self.finish(ctx);
                None
            }
            State::Await { op, sent, .. } => {
                let outcome = Outcome::Failed(TIMEOUT.into());
                ctx.record(self.i, op, &outcome, sent, now);
                self.done(ctx, op, outcome, now, timer);
                None
            }
            State::Idle | State::Finished => None,
        }
    }

    /// The frame of the request for `op`, which is now in flight.
    fn request(&mut self, ctx: &Churn, op: Op, timer: Pin<&mut Sleep>) -> Bytes {
        let request_id = self.next_request_id;
        self.next_request_id += 1;
        let lobby = self.lobby.as_deref().unwrap_or_default();
        let frame = encode(|enc| match op {
            Op::Create => enc.lobby_create(
                request_id,
                &LobbyCreateFields {
                    game: GAME,
                    mode: MODE,
                    region: REGION,
                    min: 1,
                    max: ctx.lobby_size as u16,
                    visibility: LobbyVisibility::PUBLIC,
                    password: "",
                    chat: true,
                    settings: Vec::new(),
                },
            ),
            Op::Join => enc.lobby_join(request_id, lobby, ""),
            Op::Ready => enc.lobby_op(request_id, LobbyOpKind::READY, lobby, "", ""),
            Op::Leave => enc.lobby_op(request_id, LobbyOpKind::LEAVE, lobby, "", ""),
        });
        ctx.stats(op).sent.fetch_add(1, Relaxed);
        let sent = Instant::now();
        self.state = State::Await {
            op,
            request_id,
            sent,
        };
        timer.reset(sent + REPLY_TIMEOUT);
        frame
    }

    /// The reply to the request in flight came, with `outcome`.
    fn on_reply(&mut self, ctx: &Churn, outcome: Outcome, timer: Pin<&mut Sleep>) {
        let State::Await { op, sent, .. } = self.state else {
            return;
        };
        let now = Instant::now();
        ctx.record(self.i, op, &outcome, sent, now);
        self.done(ctx, op, outcome, now, timer);
    }

    /// `op` ended at `now` with `outcome`: tells the group what it needs
    /// to know and moves on to the next op.
    fn done(
        &mut self,
        ctx: &Churn,
        op: Op,
        outcome: Outcome,
        now: Instant,
        timer: Pin<&mut Sleep>,
    ) {
        self.not_before = now + ctx.think;
        let ok = matches!(outcome, Outcome::Ok(_));
        match (op, outcome) {
            (Op::Create, Outcome::Ok(Some(id))) => {
                self.lobby = Some(id.clone());
                self.group.send_modify(|r| {
                    r.n += 1;
                    r.lobby_id = Some(id);
                    r.joins_done = 0;
                    self.round = r.n;
                });
            }
            (Op::Join, _) => {
                let round = self.round;
                self.group.send_if_modified(|r| {
                    let mine = r.n == round;
                    if mine {
                        r.joins_done += 1;
                    }
                    mine
                });
            }
            (Op::Leave, _) => self.lobby = None,
            _ => {}
        }
        if now >= self.run_end {
            return self.finish(ctx);
        }
        match op {
            Op::Create if ok => self.think(Op::Ready, timer),
            Op::Create => self.think(Op::Create, timer),
            Op::Join if ok => self.think(Op::Ready, timer),
            Op::Ready => self.think(Op::Leave, timer),
            Op::Leave if self.host => self.think(Op::Create, timer),
            Op::Join | Op::Leave => {
                self.lobby = None;
                self.wait(Op::Join, timer);
            }
        }
    }
}

/// What a client task woke up for.
enum Wake {
    Connection(Result<crate::setup::Event, Failure>),
    Timer,
    Group,
    Phase(Phase),
}

/// Client `i`: connect, play its group's rounds once the run starts, and
/// close when told.
async fn client(ctx: Arc<Churn>, i: u32, mut phase: watch::Receiver<Phase>) {
    let setup = &*ctx.setup;
    let Some(mut session) = setup.run(i, Box::pin(setup.open(i))).await else {
        return;
    };
    let g = (i / ctx.lobby_size) as usize;
    let group = &ctx.groups[g];
    group.send_modify(|r| r.alive += 1);
    let mut member = Member::new(i, i.is_multiple_of(ctx.lobby_size), group);
    // Hosts start spread evenly over one think time.
    let groups = ctx.groups.len() as u32;
    let offset = ctx.think.mul_f64(f64::from(g as u32) / f64::from(groups));
    let timer = sleep(FAR_AWAY);
    tokio::pin!(timer);
    loop {
        let armed = member.timer_armed();
        let waiting = matches!(member.state, State::Wait(_));
        let wake = tokio::select! {
            event = session.wait() => Wake::Connection(event),
            () = &mut timer, if armed => Wake::Timer,
            changed = member.rx.changed(), if waiting => match changed {
                Ok(()) => Wake::Group,
                Err(_) => Wake::Phase(Phase::Done),
            },
            changed = phase.changed() => match changed {
                Ok(()) => Wake::Phase(*phase.borrow_and_update()),
                Err(_) => Wake::Phase(Phase::Done),
            },
        };
        let outcome = match wake {
            Wake::Connection(Ok(event)) => {
                let pending = member.pending();
                match session
                    .handle(event, |frame| ctx.on_frame(i, &frame, pending))
                    .await
                {
                    Ok(Some(Some(outcome))) => {
                        member.on_reply(&ctx, outcome, timer.as_mut());
                        Ok(())
                    }
                    Ok(_) => Ok(()),
                    Err(failure) => Err(failure),
                }
            }
            Wake::Connection(Err(failure)) => Err(failure),
            Wake::Timer => match member.on_timer(&ctx, Instant::now(), timer.as_mut()) {
                Some(op) => {
                    let frame = member.request(&ctx, op, timer.as_mut());
                    session.send(frame).await
                }
                None => Ok(()),
            },
            Wake::Group => {
                member.on_group(timer.as_mut());
                Ok(())
            }
            Wake::Phase(Phase::Run(start)) => {
                // Heartbeats spread evenly over one interval, as the
                // connections of a steady population would be.
                session.spread_heartbeat(start, f64::from(i) / f64::from(ctx.clients));
                let end = start + ctx.duration;
                member.start(start, end, offset, timer.as_mut());
                Ok(())
            }
            Wake::Phase(Phase::Setup) => Ok(()),
            Wake::Phase(Phase::Done) => break,
        };
        if let Err(failure) = outcome {
            group.send_modify(|r| r.alive = r.alive.saturating_sub(1));
            member.finish(&ctx);
            return ctx.setup.dropped(i, failure);
        }
    }
    session.close().await;
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    fn args(extra: &[&str]) -> Args {
        let mut argv = vec![
            "huddle-loadtest",
            "--jwt-secret",
            "s",
            "--scenario",
            "lobby-churn",
        ];
        argv.extend_from_slice(extra);
        Args::parse_from(argv)
    }

    fn ctx(extra: &[&str]) -> Churn {
        let a = args(extra);
        let setup = Arc::new(Setup::new(&a, Transport::Ws, 1).unwrap());
        Churn::new(&a, setup)
    }

    #[test]
    fn flags_default_and_groups_hold_the_rest() {
        let a = args(&[]);
        assert_eq!((a.lobby_size, a.think_ms), (4, 1000));
        let c = ctx(&["--clients", "10", "--lobby-size", "4"]);
        assert_eq!(c.groups.len(), 3, "the last group holds the 2 left over");
        assert!(Args::try_parse_from(["huddle-loadtest", "--lobby-size", "0"]).is_err());
        assert!(Args::try_parse_from(["huddle-loadtest", "--lobby-size", "257"]).is_err());
    }

    #[test]
    fn rounds_hand_over_lobbies_and_settle_joins() {
        let mut r = Round {
            alive: 3,
            ..Round::default()
        };
        assert_eq!(r.newer_than(0), None, "no lobby yet");
        r.n = 1;
        r.lobby_id = Some(Arc::from("a"));
        assert_eq!(r.newer_than(0), Some((1, Arc::from("a"))));
        assert_eq!(r.newer_than(1), None, "already taken part");
        assert!(!r.joins_settled());
        r.joins_done = 2;
        assert!(r.joins_settled());
        r.joins_done = 1;
        r.alive = 2;
        assert!(r.joins_settled(), "a member dropped");
    }

    /// A whole round of one group of two, driven by hand: the host creates,
    /// the member joins the id it got, both READY, the host's LEAVE waits
    /// for the join, and the host creates the next lobby.
    #[tokio::test]
    async fn a_round_goes_create_join_ready_leave() {
        let c = ctx(&["--clients", "2", "--lobby-size", "2", "--think-ms", "100"]);
        let group = &c.groups[0];
        group.send_modify(|r| r.alive = 2);
        let mut host = Member::new(0, true, group);
        let mut member = Member::new(1, false, group);
        let host_timer = sleep(FAR_AWAY);
        let member_timer = sleep(FAR_AWAY);
        tokio::pin!(host_timer, member_timer);
        let start = Instant::now();
        let end = start + Duration::from_secs(10);
        host.start(start, end, Duration::ZERO, host_timer.as_mut());
        member.start(start, end, Duration::ZERO, member_timer.as_mut());
        assert_eq!(host.state, State::Think(Op::Create));
        assert_eq!(member.state, State::Wait(Op::Join));

        let now = Instant::now();
        assert_eq!(
            host.on_timer(&c, now, host_timer.as_mut()),
            Some(Op::Create)
        );
        host.request(&c, Op::Create, host_timer.as_mut());
        assert_eq!(host.pending(), Some((Op::Create, FIRST_REQUEST_ID)));
        let id: Arc<str> = Arc::from("lobby-1");
        host.on_reply(&c, Outcome::Ok(Some(id.clone())), host_timer.as_mut());
        assert_eq!(host.state, State::Think(Op::Ready));
        assert_eq!(host.lobby.as_deref(), Some("lobby-1"));

        member.on_group(member_timer.as_mut());
        assert_eq!(member.state, State::Think(Op::Join));
        assert_eq!((member.round, member.lobby.clone()), (1, Some(id)));

        // The host is through READY before the member joined: its LEAVE waits.
        assert_eq!(host.on_timer(&c, now, host_timer.as_mut()), Some(Op::Ready));
        host.request(&c, Op::Ready, host_timer.as_mut());
        host.on_reply(&c, Outcome::Ok(None), host_timer.as_mut());
        assert_eq!(host.state, State::Think(Op::Leave));
        assert_eq!(host.on_timer(&c, now, host_timer.as_mut()), None);
        assert_eq!(host.state, State::Wait(Op::Leave));

        assert_eq!(
            member.on_timer(&c, now, member_timer.as_mut()),
            Some(Op::Join)
        );
        member.request(&c, Op::Join, member_timer.as_mut());
        member.on_reply(&c, Outcome::Ok(None), member_timer.as_mut());
        assert_eq!(group.borrow().joins_done, 1);
        assert_eq!(member.state, State::Think(Op::Ready));

        host.on_group(host_timer.as_mut());
        assert_eq!(host.state, State::Think(Op::Leave));
        assert_eq!(host.on_timer(&c, now, host_timer.as_mut()), Some(Op::Leave));
        host.request(&c, Op::Leave, host_timer.as_mut());
        host.on_reply(&c, Outcome::Ok(None), host_timer.as_mut());
        assert_eq!(host.state, State::Think(Op::Create));
        assert_eq!(host.lobby, None);

        // A refused READY counts as an error and the member still leaves.
        member.request(&c, Op::Ready, member_timer.as_mut());
        member.on_reply(
            &c,
            Outcome::Failed("LOBBY_NOT_FOUND".into()),
            member_timer.as_mut(),
        );
        assert_eq!(member.state, State::Think(Op::Leave));
        // A LEAVE without a reply times out, and the member waits for the next lobby.
        member.request(&c, Op::Leave, member_timer.as_mut());
        let late = Instant::now() + REPLY_TIMEOUT;
        assert_eq!(member.on_timer(&c, late, member_timer.as_mut()), None);
        assert_eq!(member.state, State::Wait(Op::Join));

        let report = |op| c.stats(op).report(1.0);
        assert_eq!((report(Op::Create).count, report(Op::Join).count), (1, 1));
        assert_eq!((report(Op::Ready).count, report(Op::Ready).errors), (1, 1));
        assert_eq!(report(Op::Leave).error_codes.get(TIMEOUT), Some(&1));
        assert_eq!(c.sum(|op| op.sent.load(Relaxed)), 6);
        assert_eq!(c.finished.load(Relaxed), 0);

        // Past the run's end nothing more goes out.
        assert_eq!(host.on_timer(&c, end, host_timer.as_mut()), None);
        assert_eq!(host.state, State::Finished);
        assert_eq!(c.finished.load(Relaxed), 1);
    }

    #[test]
    fn report_params_and_operations_only_for_lobby_churn() {
        let a = args(&["--lobby-size", "3", "--think-ms", "200"]);
        let params = serde_json::to_string(&Params::new(&a, 1)).unwrap();
        assert!(
            params.contains(r#""lobby_size":3,"think_ms":200,"#),
            "{params}"
        );
        let chat = Args::parse_from(["huddle-loadtest", "--jwt-secret", "s"]);
        let params = serde_json::to_string(&Params::new(&chat, 1)).unwrap();
        assert!(!params.contains("lobby_size") && !params.contains("think_ms"));
        let c = ctx(&[]);
        let op = serde_json::to_string(&c.stats(Op::Join).report(2.0)).unwrap();
        assert_eq!(
            op,
            r#"{"count":0,"errors":0,"per_s":0.0,"latency_us":{"p50":0,"p90":0,"p99":0,"p999":0,"max":0}}"#
        );
    }

    /// Replies are matched by request id and kind; an `Error` counts by its
    /// code; events and replies to nothing in flight are only counted.
    #[test]
    fn replies_are_classified() {
        use huddle_schema::encode::LobbyStateFields;
        use huddle_schema::wire::{ErrorCode, LobbyStatus};
        use huddle_schema::{verify_frame, Encoder};

        let c = ctx(&[]);
        let mut enc = Encoder::new();
        let state = |id| LobbyStateFields {
            id,
            game: GAME,
            mode: MODE,
            region: REGION,
            min: 1,
            max: 4,
            visibility: LobbyVisibility::PUBLIC,
            has_password: false,
            chat: true,
            locked: false,
            status: LobbyStatus::OPEN,
            host: "u0",
            members: Vec::new(),
            settings: Vec::new(),
            connection: "",
            version: 1,
            created_at_ms: 0,
            updated_at_ms: 0,
        };
        let outcome = |bytes: Bytes, pending| {
            let frame = verify_frame(&bytes, 1 << 16).unwrap();
            c.on_frame(0, &frame, pending)
        };
        let created = enc.lobby_reply(7, &state("abc"));
        assert_eq!(
            outcome(created.clone(), Some((Op::Create, 7))),
            Some(Outcome::Ok(Some(Arc::from("abc"))))
        );
        assert_eq!(
            outcome(created.clone(), Some((Op::Ready, 7))),
            Some(Outcome::Ok(None))
        );
        assert_eq!(
            outcome(enc.lobby_reply(7, &state("")), Some((Op::Create, 7))),
            Some(Outcome::Failed("reply without a lobby id".into()))
        );
        assert_eq!(
            outcome(enc.lobby_left(8, "abc"), Some((Op::Leave, 8))),
            Some(Outcome::Ok(None))
        );
        assert_eq!(
            outcome(created.clone(), Some((Op::Leave, 7))),
            Some(Outcome::Failed("unexpected LobbyReply".into()))
        );
        let refused = enc.error(9, ErrorCode::LOBBY_NOT_FOUND, "gone", false, false);
        assert_eq!(
            outcome(refused.clone(), Some((Op::Join, 9))),
            Some(Outcome::Failed("LOBBY_NOT_FOUND".into()))
        );
        // Not the request in flight: counted, not an outcome.
        assert_eq!(outcome(refused, Some((Op::Join, 10))), None);
        assert_eq!(outcome(created, None), None);
        assert_eq!(c.stray_errors.load(Relaxed), 1);
        assert_eq!(c.late_replies.load(Relaxed), 1);
    }

    /// Every connection is one task; its future must stay small.
    #[test]
    fn a_connection_task_stays_small() {
        let c = Arc::new(ctx(&[]));
        let (_tx, rx) = watch::channel(Phase::Setup);
        let task = client(c, 0, rx);
        let size = std::mem::size_of_val(&task);
        assert!(size < 4096, "the connection task is {size} bytes");
    }
}
