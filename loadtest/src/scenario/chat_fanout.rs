//! `chat-fanout`: `--clients` clients in rooms of `--room-size` (clients
//! `0..S-1` in room 0, and so on), each room a public channel
//! `channel:<run-id>-lt-room-<k>` created through the operator API first.
//!
//! Every client connects (`Hello` → `Welcome`) and joins its room
//! (`ChatJoin` → `ChatJoined`), at most `--concurrency` setups in flight,
//! each within 30 s. Once **all** setups completed or failed, every client
//! sends a `ChatSend` every `--interval-ms` for `--duration-s`, client *i*
//! starting at *i/C* of an interval so sends are spread evenly. The content
//! is a [`Probe`], `<send time ns>:<sender>:<seq>`, the time counted from the
//! process-wide clock ([`now_ns`]); each receiver (the sender included)
//! records `now − send time` in an HDR histogram (µs) and counts the delivery.
//! Expected deliveries are Σ over rooms of messages sent × members that
//! completed setup; a connection lost later shows as lost deliveries (and on
//! stderr). After the send phase the run waits up to 5 s for stragglers.
//!
//! The window (`duration_s`, CPU) runs from the first send slot to the end
//! of that wait: the baseline load generator's semantics, field for field.
//!
//! One task per connection both reads and sends: it `select!`s the
//! connection (frames and heartbeat ticks) against its send timer and the
//! phase, and never waits for a `ChatSent`, so replies and events are read as
//! they come. Heartbeats acknowledge the highest `seq` seen, which lets the
//! gateway release its replay buffer.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context as _;
use hdrhistogram::Histogram;
use huddle_client::transport::Transport;
use huddle_schema::error_code_name;
use huddle_schema::wire::{Body, ContentType, Frame};
use tokio::sync::watch;
use tokio::time::{sleep, sleep_until, Instant};

use super::{print_failures, transport_name, Crowd, Phase, Probes};
use crate::admin::AdminApi;
use crate::report::{self, Params, Percentiles, Report};
use crate::setup::{encode, histogram, now_ns, Failure, Session, Setup, MAX_ACK_SEQ, PINGS_SENT};
use crate::Args;

/// How long after the send phase deliveries are still waited for.
const STRAGGLER_WAIT: Duration = Duration::from_secs(5);
/// Latency histograms, each behind its own lock (receiver `i` records into
/// shard `i mod 8`), so `--threads` > 1 does not serialize on one.
const LATENCY_SHARDS: usize = 8;
/// Request id of the `ChatJoin` (the `Hello` is 1).
const JOIN_REQUEST_ID: u64 = 2;
/// Request id of a client's first `ChatSend`; the n-th adds n.
const FIRST_SEND_REQUEST_ID: u64 = 3;
/// Error replies printed one by one before only the counts go on.
const ERRORS_SHOWN: u64 = 10;
/// What a timer that is not armed waits for.
const FAR_AWAY: Duration = Duration::from_secs(86_400);

/// The name (after `channel:`) of room `k` of run `run_id`.
fn room_name(run_id: &str, k: usize) -> String {
    format!("{run_id}-lt-room-{k}")
}

/// The latency probe carried as every message's content:
/// `<send time ns>:<sender>:<seq>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Probe {
    /// Send time, [`now_ns`].
    sent_ns: u64,
    /// The sending client's index.
    sender: u32,
    /// The sender's message number, from 0.
    seq: u32,
}

impl fmt::Display for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.sent_ns, self.sender, self.seq)
    }
}

impl Probe {
    fn parse(s: &str) -> Option<Self> {
        let mut parts = s.split(':');
        let probe = Self {
            sent_ns: parts.next()?.parse().ok()?,
            sender: parts.next()?.parse().ok()?,
            seq: parts.next()?.parse().ok()?,
        };
        parts.next().is_none().then_some(probe)
    }
}

/// What all client tasks share.
struct Fanout {
    setup: Arc<Setup>,
    clients: u32,
    room_size: u32,
    interval: Duration,
    duration: Duration,
    /// Room k's chat id.
    chat_ids: Vec<Box<str>>,
    /// Messages sent per room.
    room_sent: Vec<AtomicU64>,
    /// Members per room that completed setup.
    room_members: Vec<AtomicU64>,
    /// Probes received, by all receivers.
    delivered: AtomicU64,
    /// Clients past their last send slot.
    done_sending: AtomicU64,
    /// `ChatSent` replies.
    acked: AtomicU64,
    /// `Error` replies (non-closing: RATE_LIMITED, NOT_IN_CHAT, ...).
    errors: AtomicU64,
    /// `Error` replies by request and code, for the summary.
    error_kinds: Mutex<BTreeMap<String, u64>>,
    /// Chat messages that are no probe of this run (another chat, other
    /// content); ignored.
    foreign: AtomicU64,
    /// End-to-end message latency, µs.
    latency_us: Vec<Mutex<Histogram<u64>>>,
    /// Send time of each client's recent sends ([`now_ns`]), by message
    /// number modulo [`ACK_RING`], for the sender's acknowledgement latency.
    sent_at: Vec<[AtomicU64; ACK_RING]>,
    /// Send → `ChatSent`, µs: what a durable acknowledgement costs.
    ack_latency_us: Mutex<Histogram<u64>>,
}

/// Sends per client whose send time is remembered (far more than are ever
/// unanswered at once).
const ACK_RING: usize = 64;

impl Fanout {
    fn new(args: &Args, setup: Arc<Setup>, run_id: &str) -> Self {
        let rooms = args.clients.div_ceil(args.room_size) as usize;
        let counters = || (0..rooms).map(|_| AtomicU64::new(0)).collect();
        Self {
            setup,
            clients: args.clients,
            room_size: args.room_size,
            interval: Duration::from_millis(args.interval_ms),
            duration: Duration::from_secs(args.duration_s),
            chat_ids: (0..rooms)
                .map(|k| format!("channel:{}", room_name(run_id, k)).into())
                .collect(),
            room_sent: counters(),
            room_members: counters(),
            delivered: AtomicU64::new(0),
            done_sending: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            error_kinds: Mutex::new(BTreeMap::new()),
            foreign: AtomicU64::new(0),
            latency_us: (0..LATENCY_SHARDS)
                .map(|_| Mutex::new(histogram()))
                .collect(),
            sent_at: (0..args.clients)
                .map(|_| std::array::from_fn(|_| AtomicU64::new(0)))
                .collect(),
            ack_latency_us: Mutex::new(histogram()),
        }
    }

    fn sent(&self) -> u64 {
        self.room_sent.iter().map(|n| n.load(Relaxed)).sum()
    }

    /// Every message reaches each member of its room, the sender included.
    fn expected(&self) -> u64 {
        let rooms = self.room_sent.iter().zip(&self.room_members);
        rooms
            .map(|(sent, members)| sent.load(Relaxed) * members.load(Relaxed))
            .sum()
    }

    /// All latency shards in one histogram.
    fn latency(&self) -> Histogram<u64> {
        self.latency_us.iter().fold(histogram(), |mut all, shard| {
            let shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            all.add(&*shard).expect("same histogram bounds");
            all
        })
    }

    /// A frame for client `i` of room `room` that is not the session's own
    /// business: a probe, a `ChatSent`, an `Error` reply, or anything else
    /// (member events), which is ignored.
    fn on_frame(&self, i: u32, room: usize, frame: Frame<'_>) {
        match frame.body_type() {
            Body::ChatMessageEvent => {
                let probe = frame
                    .body_as_chat_message_event()
                    .and_then(|e| e.message())
                    .filter(|m| m.chat_id() == Some(&*self.chat_ids[room]))
                    .and_then(|m| m.content())
                    .and_then(Probe::parse);
                match probe {
                    Some(probe) => self.record(i, probe),
                    None => {
                        self.foreign.fetch_add(1, Relaxed);
                    }
                }
            }
            Body::ChatSent => {
                self.acked.fetch_add(1, Relaxed);
                let seq = frame.request_id().saturating_sub(FIRST_SEND_REQUEST_ID) as usize;
                let sent = self.sent_at[i as usize][seq % ACK_RING].load(Relaxed);
                if sent > 0 {
                    let us = now_ns().saturating_sub(sent) / 1000;
                    self.ack_latency_us
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .saturating_record(us.max(1));
                }
            }
            Body::Error => {
                let (code, message) = frame.body_as_error().map_or(("UNKNOWN", ""), |e| {
                    (error_code_name(e.code()), e.message().unwrap_or_default())
                });
                let request = match frame.request_id() {
                    0 => "connection",
                    id if id >= FIRST_SEND_REQUEST_ID => "ChatSend",
                    _ => "request",
                };
                if self.errors.fetch_add(1, Relaxed) < ERRORS_SHOWN {
                    eprintln!(
                        "client {i}: {request} {}: server error {code}: {message}",
                        frame.request_id()
                    );
                }
                *self
                    .error_kinds
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .entry(format!("{request}: {code}"))
                    .or_default() += 1;
            }
            _ => {}
        }
    }

    fn record(&self, receiver: u32, probe: Probe) {
        let us = now_ns().saturating_sub(probe.sent_ns) / 1000;
        self.latency_us[receiver as usize % LATENCY_SHARDS]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .saturating_record(us.max(1));
        self.delivered.fetch_add(1, Relaxed);
    }
}

pub(super) async fn run(
    args: &Args,
    transport: Transport,
    source_ips: u32,
    setup: Arc<Setup>,
    probes: Probes,
) -> anyhow::Result<Report> {
    let run_id = args.run_id();
    let ctx = Arc::new(Fanout::new(args, setup.clone(), &run_id));
    let rooms = ctx.chat_ids.len();
    let admin = AdminApi::new(&args.admin_url, args.admin_token.clone())?;
    let creating = Instant::now();
    for k in 0..rooms {
        admin
            .create_channel(&room_name(&run_id, k))
            .await
            .with_context(|| format!("creating the channel of room {k} at {}", args.admin_url))?;
    }
    eprintln!(
        "  {rooms} room(s) of {}: {} .. channel:{} (created in {:.2} s)",
        args.room_size,
        ctx.chat_ids[0],
        room_name(&run_id, rooms - 1),
        creating.elapsed().as_secs_f64()
    );

    let crowd = Crowd::gather(&setup, args.clients, |i, phase| {
        client(ctx.clone(), i, phase)
    })
    .await?;
    let connections = crowd.connections;

    // The measurement window: from the first send slot to the end of the
    // straggler wait.
    let cpu_at_window = probes.mark();
    let start = crowd.start();
    sleep_until(start + ctx.duration).await;
    let deadline = Instant::now() + STRAGGLER_WAIT;
    let pending = || {
        ctx.done_sending.load(Relaxed) + setup.dropped.load(Relaxed) < connections
            || ctx.delivered.load(Relaxed) < ctx.expected()
    };
    while pending() && Instant::now() < deadline {
        sleep(Duration::from_millis(10)).await;
    }
    let duration_s = start.elapsed().as_secs_f64();
    let cpu_used = probes.since(cpu_at_window);
    let (sent, delivered, expected) = (ctx.sent(), ctx.delivered.load(Relaxed), ctx.expected());
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
        expected,
        lost: expected.saturating_sub(delivered),
        delivered_per_s: report::round(delivered as f64 / duration_s, 1),
        latency_us: Percentiles::of(&latency_us),
        connect,
        server,
        loadgen,
        operations: None,
    };
    report::summarize(&report, setup.dropped.load(Relaxed));
    eprintln!(
        "  ChatSent replies: {} of {sent} sends; error replies: {}",
        ctx.acked.load(Relaxed),
        ctx.errors.load(Relaxed)
    );
    {
        let acks = ctx
            .ack_latency_us
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        eprintln!(
            "  sender ack (send → ChatSent) µs: p50 {} / p99 {} / p999 {} / max {}",
            acks.value_at_quantile(0.5),
            acks.value_at_quantile(0.99),
            acks.value_at_quantile(0.999),
            acks.max()
        );
    }
    for (kind, n) in ctx
        .error_kinds
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
    {
        eprintln!("  {n} x {kind}");
    }
    eprintln!(
        "  heartbeats: {} Pings sent, highest ack_seq {}",
        PINGS_SENT.load(Relaxed),
        MAX_ACK_SEQ.load(Relaxed)
    );
    let foreign = ctx.foreign.load(Relaxed);
    if foreign > 0 {
        eprintln!("  {foreign} chat message(s) not from this run ignored");
    }
    print_failures(&setup);
    Ok(report)
}

/// What a client task woke up for.
enum Wake {
    Connection(Result<crate::setup::Event, Failure>),
    SendSlot,
    Phase(Phase),
}

/// Client `i`: connect and join its room, send on its schedule once the run
/// starts, record every probe it receives, and close when told.
async fn client(ctx: Arc<Fanout>, i: u32, mut phase: watch::Receiver<Phase>) {
    let room = (i / ctx.room_size) as usize;
    let chat_id: &str = &ctx.chat_ids[room];
    let setup = &*ctx.setup;
    let opened = setup
        .run(
            i,
            Box::pin(async move {
                let mut session = setup.open(i).await?;
                join(&mut session, chat_id).await?;
                Ok(session)
            }),
        )
        .await;
    let Some(mut session) = opened else {
        return;
    };
    ctx.room_members[room].fetch_add(1, Relaxed);

    // Sends are spread evenly over one interval across clients, then repeat
    // at a fixed rate.
    let offset = ctx.interval.mul_f64(f64::from(i) / f64::from(ctx.clients));
    // End of the send phase, while this client still has messages to send.
    let mut send_until: Option<Instant> = None;
    let mut seq: u32 = 0;
    let next_send = sleep(FAR_AWAY);
    tokio::pin!(next_send);
    loop {
        let sending = send_until.is_some_and(|end| next_send.deadline() < end);
        if send_until.is_some() && !sending {
            ctx.done_sending.fetch_add(1, Relaxed);
            send_until = None;
        }
        let wake = tokio::select! {
            event = session.wait() => Wake::Connection(event),
            () = &mut next_send, if sending => Wake::SendSlot,
            changed = phase.changed() => match changed {
                Ok(()) => Wake::Phase(*phase.borrow_and_update()),
                Err(_) => Wake::Phase(Phase::Done),
            },
        };
        let outcome = match wake {
            Wake::Connection(Ok(event)) => session
                .handle(event, |frame| ctx.on_frame(i, room, frame))
                .await
                .map(drop),
            Wake::Connection(Err(failure)) => Err(failure),
            Wake::SendSlot => {
                ctx.room_sent[room].fetch_add(1, Relaxed);
                let probe = Probe {
                    sent_ns: now_ns(),
                    sender: i,
                    seq,
                };
                ctx.sent_at[i as usize][seq as usize % ACK_RING].store(probe.sent_ns, Relaxed);
                let content = probe.to_string();
                let frame = encode(|enc| {
                    enc.chat_send(
                        FIRST_SEND_REQUEST_ID + u64::from(seq),
                        chat_id,
                        &content,
                        ContentType::TEXT,
                        None,
                    )
                });
                drop(content);
                seq += 1;
                let next = next_send.deadline() + ctx.interval;
                next_send.as_mut().reset(next);
                session.send(frame).await
            }
            Wake::Phase(Phase::Run(start)) => {
                send_until = Some(start + ctx.duration);
                next_send.as_mut().reset(start + offset);
                Ok(())
            }
            Wake::Phase(Phase::Setup) => Ok(()),
            Wake::Phase(Phase::Done) => break,
        };
        if let Err(failure) = outcome {
            return ctx.setup.dropped(i, failure);
        }
    }
    session.close().await;
}

/// Joins `chat_id`: sends the `ChatJoin` and handles the session (pings,
/// other members' join events) until its reply, `ChatJoined` or an `Error`.
async fn join(session: &mut Session, chat_id: &str) -> Result<(), Failure> {
    session
        .send(encode(|enc| enc.chat_join(JOIN_REQUEST_ID, chat_id)))
        .await?;
    loop {
        let event = session.wait().await?;
        let reply = session
            .handle(event, |frame| {
                (frame.request_id() == JOIN_REQUEST_ID).then(|| join_reply(&frame))
            })
            .await?;
        if let Some(Some(result)) = reply {
            return result;
        }
    }
}

/// The outcome of a join from its reply.
fn join_reply(frame: &Frame<'_>) -> Result<(), Failure> {
    match frame.body_type() {
        Body::ChatJoined => Ok(()),
        Body::Error => {
            let (code, message) = frame.body_as_error().map_or(("UNKNOWN", ""), |e| {
                (error_code_name(e.code()), e.message().unwrap_or_default())
            });
            Err(Failure::new(
                format!("join: server {code}"),
                anyhow::anyhow!("ChatJoin: server error {code}: {message}"),
            ))
        }
        other => Err(Failure::new(
            "join: unexpected reply",
            anyhow::anyhow!("ChatJoin answered with {:?}", other.variant_name()),
        )),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;
    use huddle_schema::{verify_frame, wire, PROTOCOL_VERSION};

    use super::*;

    fn args(extra: &[&str]) -> Args {
        let mut argv = vec!["huddle-loadtest", "--jwt-secret", "s"];
        argv.extend_from_slice(extra);
        Args::parse_from(argv)
    }

    #[test]
    fn probes_round_trip_and_reject_other_content() {
        let probe = Probe {
            sent_ns: 12_345_678_901,
            sender: 1999,
            seq: 19,
        };
        assert_eq!(probe.to_string(), "12345678901:1999:19");
        assert_eq!(Probe::parse(&probe.to_string()), Some(probe));
        for other in ["", "gg", "1:2", "1:2:3:4", "a:2:3", "1:-2:3"] {
            assert_eq!(Probe::parse(other), None, "{other:?}");
        }
    }

    #[test]
    fn rooms_group_consecutive_clients_and_name_the_run() {
        let setup = Arc::new(Setup::new(&args(&[]), Transport::Ws, 1).unwrap());
        let a = args(&["--clients", "25", "--room-size", "10"]);
        let ctx = Fanout::new(&a, setup, "42");
        assert_eq!(ctx.chat_ids.len(), 3, "the last room holds the 5 left over");
        assert_eq!(&*ctx.chat_ids[0], "channel:42-lt-room-0");
        assert_eq!(&*ctx.chat_ids[2], "channel:42-lt-room-2");
        assert_eq!(24 / ctx.room_size, 2);
        // Expected deliveries count every member, the sender included.
        ctx.room_sent[0].store(30, Relaxed);
        ctx.room_members[0].store(10, Relaxed);
        ctx.room_sent[2].store(15, Relaxed);
        ctx.room_members[2].store(4, Relaxed);
        assert_eq!((ctx.sent(), ctx.expected()), (45, 360));
    }

    #[test]
    fn run_ids_are_checked() {
        assert_eq!(args(&["--run-id", "ci-7.a_b"]).run_id(), "ci-7.a_b");
        assert_eq!(args(&[]).run_id(), std::process::id().to_string());
        for bad in ["", "a b", "x/y", "é", &"x".repeat(65)] {
            let argv = ["huddle-loadtest", "--run-id", bad];
            assert!(Args::try_parse_from(argv).is_err(), "{bad:?}");
        }
    }

    /// Probes in the room's chat are recorded; another run's chat, other
    /// content, replies and errors are not.
    #[test]
    fn receivers_record_only_this_runs_probes() {
        let setup = Arc::new(Setup::new(&args(&[]), Transport::Ws, 1).unwrap());
        let ctx = Fanout::new(&args(&["--clients", "20"]), setup, "9");
        let message = |chat_id: &str, content: &str| {
            let mut fbb = flatbuffers::FlatBufferBuilder::new();
            let chat_id = fbb.create_string(chat_id);
            let content = fbb.create_string(content);
            let message = wire::ChatMessage::create(
                &mut fbb,
                &wire::ChatMessageArgs {
                    id: 1,
                    chat_id: Some(chat_id),
                    content: Some(content),
                    ..Default::default()
                },
            );
            let body = wire::ChatMessageEvent::create(
                &mut fbb,
                &wire::ChatMessageEventArgs {
                    message: Some(message),
                },
            );
            let frame = wire::Frame::create(
                &mut fbb,
                &wire::FrameArgs {
                    version: PROTOCOL_VERSION,
                    seq: 1,
                    body_type: Body::ChatMessageEvent,
                    body: Some(body.as_union_value()),
                    ..Default::default()
                },
            );
            wire::finish_frame_buffer(&mut fbb, frame);
            fbb.finished_data().to_vec()
        };
        let probe = Probe {
            sent_ns: now_ns(),
            sender: 1,
            seq: 0,
        }
        .to_string();
        let frames = [
            message("channel:9-lt-room-0", &probe),
            message("channel:8-lt-room-0", &probe),
            message("channel:9-lt-room-1", &probe),
            message("channel:9-lt-room-0", "hello"),
        ];
        for frame in &frames {
            let frame = verify_frame(frame, 1 << 16).unwrap();
            ctx.on_frame(3, 0, frame);
        }
        assert_eq!(ctx.delivered.load(Relaxed), 1);
        assert_eq!(ctx.foreign.load(Relaxed), 3);
        assert_eq!(ctx.latency().len(), 1);
    }

    /// Every connection is one task; its future must stay small.
    #[test]
    fn a_connection_task_stays_small() {
        let setup = Arc::new(Setup::new(&args(&[]), Transport::Ws, 1).unwrap());
        let ctx = Arc::new(Fanout::new(&args(&[]), setup, "1"));
        let (_tx, rx) = watch::channel(Phase::Setup);
        let task = client(ctx, 0, rx);
        let size = std::mem::size_of_val(&task);
        assert!(size < 4096, "the connection task is {size} bytes");
    }
}
