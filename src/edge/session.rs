//! The connection shell: one task per client connection, the same for every
//! transport. It runs the handshake (Hello → Welcome or Error), verifies every
//! inbound frame, enforces the frame, malformed-frame and request-rate limits,
//! keeps the heartbeat, routes requests to their shards (recording each one
//! read in the outbox, for `Welcome.last_request_id` after a drop), and
//! drains the session's outbox to the socket in batches.
//!
//! It never touches engine state: everything keyed goes to the owning shard
//! as a message. Transports plug in through [`FrameReader`] / [`FrameWriter`].

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use huddle_schema::encode::{PresenceEntry, UnreadRow, WelcomeFields};
use huddle_schema::wire::{self, Body, ErrorCode};
use huddle_schema::{verify_frame, CloseCode, Encoder, FrameError, PROTOCOL_VERSION};
use tokio::sync::{oneshot, Notify};
use tokio::time::{timeout, Interval, MissedTickBehavior};

use crate::core::engine::chat::{self, Actor, Author};
use crate::core::engine::users::Command;
use crate::core::engine::{Failure, Refusal, SessionId, UserId};
use crate::core::outbox::{Closed, Outbox, OutboxLimits, Queued, Stop};
use crate::core::shard::{ResumeFailure, ShardMsg};
use crate::edge::auth::Identity;
use crate::edge::limits::TokenBucket;
use crate::ops::gateway::Gateway;
use crate::telemetry::metrics::{metrics, TransportKind};

mod lobby;
mod matchmaking;
mod social;

/// Most user ids one presence query may name.
pub const MAX_PRESENCE_IDS: usize = 500;

/// Most chats one unread-count query may name.
pub const MAX_UNREAD_CHATS: usize = 100;

/// Most users one connection may follow at once.
pub const MAX_FOLLOWS_PER_CONNECTION: usize = 1000;

/// Most chats one connection may be in at once.
pub const MAX_CHATS_PER_CONNECTION: usize = 256;

/// What a transport read produced.
#[derive(Debug)]
pub enum Inbound {
    Frame(Bytes),
    /// A frame over the size limit (its size when the transport knows it).
    TooLarge(Option<usize>),
    /// A WebSocket text message: the protocol is binary only.
    NotBinary,
    /// The client closed the connection cleanly.
    Closed,
    /// The connection broke.
    Failed(String),
}

/// The receiving half of a transport. `recv` must be cancel-safe.
pub trait FrameReader: Send {
    fn recv(&mut self) -> impl Future<Output = Inbound> + Send;
}

/// The sending half of a transport.
pub trait FrameWriter: Send {
    /// Writes the frames in order and flushes.
    fn send(&mut self, frames: &[Bytes]) -> impl Future<Output = io::Result<()>> + Send;
    /// Sends a volatile frame outside the ordered stream (a QUIC datagram);
    /// false when this transport cannot, so the caller sends it in order.
    fn send_unordered(&mut self, frame: &Bytes) -> bool;
    /// Closes gracefully with `code` (the WebSocket close status or QUIC
    /// application error code) and a short `reason`, giving queued bytes a
    /// moment to leave. Only the first call closes; later ones do nothing.
    fn close(&mut self, code: CloseCode, reason: &str) -> impl Future<Output = ()> + Send;
}

thread_local! {
    static ENCODER: RefCell<Encoder> = RefCell::new(Encoder::new());
}

/// Runs `f` with this thread's frame encoder (connection tasks share one per
/// worker thread instead of holding a builder each).
pub fn encode<R>(f: impl FnOnce(&mut Encoder) -> R) -> R {
    ENCODER.with(|e| f(&mut e.borrow_mut()))
}

fn error_frame(
    request_id: u64,
    code: ErrorCode,
    message: &str,
    retryable: bool,
    closing: bool,
) -> Bytes {
    metrics().error(code);
    encode(|e| e.error(request_id, code, message, retryable, closing))
}

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// How a connection ended, deciding what happens to its session.
#[derive(Debug)]
enum End {
    /// Clean close by the client: the session ends.
    ClientClosed,
    /// The socket broke: the session waits for a resume.
    Lost(String),
    /// The client sent nothing for the heartbeat timeout: the session waits
    /// for a resume.
    Silent(String),
    /// The client took no data for the heartbeat timeout: SLOW_CONSUMER,
    /// and the session waits for a resume.
    Stalled(String),
    /// The gateway is shutting down: GoAway, then close; resumable elsewhere.
    Shutdown,
    /// Closed for a protocol violation or slowness: the session ends.
    Refused(Closing),
    /// A newer connection resumed the session.
    Superseded,
    /// The session ended under us (resume window passed, shards stopping).
    Ended,
}

/// The established session a connection drives.
struct Attached {
    session: SessionId,
    user: UserId,
    /// What chat members see of this user.
    author: Author,
    /// Holds the `operator` or `moderator` role.
    operator: bool,
    outbox: Arc<Outbox>,
    generation: u64,
    wake: Arc<Notify>,
    datagrams: bool,
    /// Skill per game from the token, for the matchmaker.
    ratings: Vec<(Arc<str>, crate::core::engine::matchmaking::Rating)>,
}

/// The `Error { closing: true }` a connection ends with; its code is also
/// the close code (see [`CloseCode`]).
#[derive(Debug)]
struct Closing {
    request_id: u64,
    code: ErrorCode,
    message: String,
    retryable: bool,
}

impl Closing {
    fn new(request_id: u64, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            request_id,
            code,
            message: message.into(),
            retryable: false,
        }
    }

    fn frame(&self) -> Bytes {
        error_frame(
            self.request_id,
            self.code,
            &self.message,
            self.retryable,
            true,
        )
    }
}

/// Serves one connection from its first byte to its close.
pub async fn serve<R: FrameReader, W: FrameWriter>(
    gw: Arc<Gateway>,
    mut rd: R,
    mut wr: W,
    kind: TransportKind,
) {
    metrics().connection_opened(kind);
    // The handshake and the goodbye are boxed: they are large, short-lived
    // states, and inline they would size every idle connection's task.
    if let Some(attached) = Box::pin(handshake(&gw, &mut rd, &mut wr)).await {
        let (end, joined) = run(&gw, &attached, &mut rd, &mut wr).await;
        Box::pin(finish(&gw, &attached, end, joined, &mut wr)).await;
    }
    // Closes what nothing closed yet (a client that left mid-handshake).
    wr.close(CloseCode::Normal, "").await;
    linger(&mut rd).await;
    metrics().connection_closed(kind);
}

/// Reads on, discarding, until the client answers the close (or a moment
/// passes). A TCP socket closed with unread bytes (a stalled client's pings)
/// is reset, and a reset discards what is still on its way to the client:
/// the closing Error frame and the close frame.
async fn linger<R: FrameReader>(rd: &mut R) {
    let _ = timeout(FINAL_WRITE, async {
        while let Inbound::Frame(_) | Inbound::NotBinary = rd.recv().await {}
    })
    .await;
}

fn too_large_message(len: Option<usize>, max: u32) -> String {
    match len {
        Some(n) => format!("frame of {n} bytes exceeds the {max}-byte limit"),
        None => format!("frame exceeds the {max}-byte limit"),
    }
}

/// Requests whose effect is a record in the store (so an acknowledgement
/// stands for it): refused with STORE_UNAVAILABLE while writes cannot be
/// kept, before anything changes.
fn writes_to_store(body: Body) -> bool {
    matches!(
        body,
        Body::ChatSend
            | Body::ChatEdit
            | Body::ChatDelete
            | Body::ChatRead
            | Body::FriendOp
            | Body::NotificationMarkRead
            | Body::NotificationDelete
    )
}

/// How long a last frame (an error, GoAway) may take to leave before the
/// connection is closed anyway.
const FINAL_WRITE: Duration = Duration::from_secs(2);

/// What `GoAway` says, and the reason its close (1001) carries.
const GOAWAY_REASON: &str = "this node is draining; reconnect (with resume)";

async fn refuse<W: FrameWriter>(wr: &mut W, request_id: u64, code: ErrorCode, message: &str) {
    let frame = error_frame(request_id, code, message, false, true);
    let _ = timeout(FINAL_WRITE, wr.send(&[frame])).await;
    wr.close(CloseCode::Error(code), message).await;
}

async fn handshake<R: FrameReader, W: FrameWriter>(
    gw: &Arc<Gateway>,
    rd: &mut R,
    wr: &mut W,
) -> Option<Attached> {
    let cfg = &gw.config.session;
    let first = match timeout(
        Duration::from_millis(cfg.handshake_timeout_ms.into()),
        rd.recv(),
    )
    .await
    {
        Ok(Inbound::Frame(bytes)) => bytes,
        Ok(Inbound::TooLarge(n)) => {
            let msg = too_large_message(n, cfg.max_frame_bytes);
            refuse(wr, 0, ErrorCode::FRAME_TOO_LARGE, &msg).await;
            return None;
        }
        Ok(Inbound::NotBinary) => {
            refuse(
                wr,
                0,
                ErrorCode::MALFORMED_FRAME,
                "text messages are not frames; send binary",
            )
            .await;
            return None;
        }
        Ok(Inbound::Closed | Inbound::Failed(_)) => return None,
        Err(_) => {
            let msg = format!(
                "no Hello within {} ms of connecting",
                cfg.handshake_timeout_ms
            );
            refuse(wr, 0, ErrorCode::MALFORMED_FRAME, &msg).await;
            return None;
        }
    };
    let frame = match verify_frame(&first, cfg.max_frame_bytes as usize) {
        Ok(f) => f,
        Err(e) => {
            metrics().frame_in(None);
            refuse(wr, e.request_id(), e.code(), &e.to_string()).await;
            return None;
        }
    };
    metrics().frame_in(Some(frame.body_type()));
    let request_id = frame.request_id();
    if request_id == 0 {
        refuse(
            wr,
            0,
            ErrorCode::MALFORMED_FRAME,
            "Hello needs a non-zero request_id",
        )
        .await;
        return None;
    }
    let Some(hello) = frame.body_as_hello() else {
        refuse(
            wr,
            request_id,
            ErrorCode::MALFORMED_FRAME,
            "the first frame must be Hello",
        )
        .await;
        return None;
    };
    if hello.protocol_version() != PROTOCOL_VERSION {
        let msg = format!(
            "protocol version {} is not supported; this gateway speaks version {PROTOCOL_VERSION}",
            hello.protocol_version()
        );
        refuse(wr, request_id, ErrorCode::UNSUPPORTED_VERSION, &msg).await;
        return None;
    }
    let identity = match gw.auth.verify(hello.token()) {
        Ok(id) => id,
        Err(e) => {
            refuse(wr, request_id, e.code(), &e.to_string()).await;
            return None;
        }
    };
    let datagrams = hello.datagrams();
    let wake = Arc::new(Notify::new());
    let home = gw.shards.of_user(&identity.user_id);
    let (session, resume_token, outbox, generation, resumed) = match hello.resume() {
        Some(resume) => {
            let parsed = (
                resume
                    .session_id()
                    .and_then(|s| u64::from_str_radix(s, 16).ok()),
                resume
                    .resume_token()
                    .and_then(|s| u128::from_str_radix(s, 16).ok()),
            );
            let (Some(session), Some(token)) = parsed else {
                refuse(
                    wr,
                    request_id,
                    ErrorCode::RESUME_FAILED,
                    "resume needs the session_id and resume_token from Welcome",
                )
                .await;
                return None;
            };
            let (tx, rx) = oneshot::channel();
            let next_token = rand::random::<u128>();
            let msg = ShardMsg::Resume {
                session,
                user: identity.user_id.clone(),
                resume_token: token,
                next_token,
                last_seq: resume.last_seq(),
                wake: wake.clone(),
                reply: tx,
            };
            gw.shards.send(home, msg).await;
            match rx.await {
                Ok(Ok(r)) => {
                    // Exact: the superseded connection reads no more requests.
                    let last_request_id = r.outbox.last_request_id();
                    let resumed = Resumption {
                        replayed: r.replayed,
                        last_request_id,
                    };
                    (session, next_token, r.outbox, r.generation, Some(resumed))
                }
                Ok(Err(failure)) => {
                    let msg = match failure {
                        ResumeFailure::Refused(r) => {
                            format!("cannot resume: {r}; connect without resume and re-sync")
                        }
                        ResumeFailure::Gap(g) => format!(
                            "cannot resume exactly: {g}; connect without resume and re-sync"
                        ),
                    };
                    refuse(wr, request_id, ErrorCode::RESUME_FAILED, &msg).await;
                    return None;
                }
                Err(_) => {
                    refuse(
                        wr,
                        request_id,
                        ErrorCode::INTERNAL,
                        "shard unavailable (shutting down?)",
                    )
                    .await;
                    return None;
                }
            }
        }
        None => {
            let session = rand::random::<u64>() | 1;
            let token = rand::random::<u128>();
            let outbox = Arc::new(Outbox::new(gw.outbox_limits(), wake.clone()));
            let msg = ShardMsg::Attach {
                session,
                user: identity.user_id.clone(),
                resume_token: token,
                outbox: outbox.clone(),
            };
            gw.shards.send(home, msg).await;
            (session, token, outbox, 1, None)
        }
    };
    let welcome = welcome_frame(
        gw,
        request_id,
        &identity,
        session,
        resume_token,
        resumed.as_ref(),
    );
    let resumed = resumed.is_some();
    metrics().frame_out(Body::Welcome);
    let operator = identity
        .roles
        .iter()
        .any(|r| r == "operator" || r == "moderator");
    let attached = Attached {
        session,
        author: {
            let username: Arc<str> = Arc::from(identity.username.as_str());
            // Usually the same text: share it rather than hold it twice.
            let display_name = if identity.display_name == identity.username {
                username.clone()
            } else {
                Arc::from(identity.display_name.as_str())
            };
            Author {
                id: identity.user_id.clone(),
                username,
                display_name,
            }
        },
        operator,
        ratings: identity.ratings,
        user: identity.user_id,
        outbox,
        generation,
        wake,
        datagrams,
    };
    let handshake_limit = Duration::from_millis(cfg.handshake_timeout_ms.into());
    if !matches!(
        timeout(handshake_limit, wr.send(&[welcome])).await,
        Ok(Ok(()))
    ) {
        // A fresh session whose Welcome never arrived cannot be resumed.
        detach(gw, &attached, resumed).await;
        return None;
    }
    // The matchmaker learns the token's ratings now, so a party queued by
    // another member's lobby host is matched on them too. Best effort: a
    // player's own start carries them again.
    for (game, rating) in &attached.ratings {
        let cmd = crate::core::engine::matchmaking::Command::SetRatings {
            game: game.clone(),
            ratings: vec![(attached.user.clone(), *rating)],
            from_token: true,
        };
        let msg = ShardMsg::Matchmaking {
            cmd: Box::new(cmd),
            reply_to: None,
            watcher: None,
        };
        let _ = gw.shards.try_send(gw.shards.of_game(game), msg);
    }
    Some(attached)
}

/// What a `Welcome` tells a client whose session carried on.
struct Resumption {
    /// Events and replies that follow with `seq > last_seq`.
    replayed: u32,
    /// The highest request id read on the session: the client re-sends
    /// only requests above it.
    last_request_id: u64,
}

fn welcome_frame(
    gw: &Gateway,
    request_id: u64,
    id: &Identity,
    session: SessionId,
    resume_token: u128,
    resumed: Option<&Resumption>,
) -> Bytes {
    let cfg = &gw.config.session;
    let session_id = format!("{session:016x}");
    let token = format!("{resume_token:032x}");
    encode(|e| {
        e.welcome(
            request_id,
            &WelcomeFields {
                session_id: &session_id,
                user_id: &id.user_id,
                username: &id.username,
                display_name: &id.display_name,
                roles: &id.roles,
                resume_token: &token,
                heartbeat_ms: cfg.heartbeat_ms,
                heartbeat_timeout_ms: cfg.heartbeat_timeout_ms,
                server_time_ms: unix_ms(),
                resumed: resumed.is_some(),
                replayed: resumed.map_or(0, |r| r.replayed),
                max_frame_bytes: cfg.max_frame_bytes,
                resume_window_ms: cfg.resume_window_ms,
                last_request_id: resumed.map_or(0, |r| r.last_request_id),
            },
        )
    })
}

/// Per-connection loop state.
struct Conn<'a> {
    gw: &'a Arc<Gateway>,
    at: &'a Attached,
    bucket: TokenBucket,
    malformed: u32,
    last_in: Instant,
    last_out: Instant,
    /// Users this connection follows (bounded by MAX_FOLLOWS_PER_CONNECTION);
    /// boxed and created on first use, so idle connections carry 8 bytes
    /// for it instead of a 48-byte empty set in every task.
    #[allow(clippy::box_collection)]
    follows: Option<Box<std::collections::HashSet<UserId>>>,
    /// Chats joined over this connection, left for the session when it
    /// ends for good. (Chats joined before a resume are cleaned up by
    /// their shard's sweep once the session is over.)
    joined: Vec<Arc<str>>,
}

async fn run<R: FrameReader, W: FrameWriter>(
    gw: &Arc<Gateway>,
    at: &Attached,
    rd: &mut R,
    wr: &mut W,
) -> (End, Vec<Arc<str>>) {
    let cfg = &gw.config.session;
    let now = Instant::now();
    let mut conn = Conn {
        gw,
        at,
        bucket: TokenBucket::new(cfg.rate_per_s, cfg.rate_burst, now),
        malformed: 0,
        last_in: now,
        last_out: now,
        joined: Vec::new(),
        follows: None,
    };
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::now() + tick_period(cfg),
        tick_period(cfg),
    );
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let end = serve_loop(&mut conn, &mut tick, rd, wr).await;
    (end, conn.joined)
}

/// The connection's steady state. `drain` is boxed where it is awaited: it
/// is the largest state (a pinned send plus its select), and inline it would
/// size every idle connection's task; one small allocation per wake-up
/// (not per frame) is the cheaper side of that trade.
async fn serve_loop<R: FrameReader, W: FrameWriter>(
    conn: &mut Conn<'_>,
    tick: &mut Interval,
    rd: &mut R,
    wr: &mut W,
) -> End {
    let (gw, at) = (conn.gw, conn.at);
    let cfg = &gw.config.session;
    let silence = Duration::from_millis(cfg.heartbeat_timeout_ms.into());
    let quiet = tick_period(cfg);
    loop {
        // Unbiased: a busy outbound stream must not starve reads (acks,
        // requests), nor the other way round.
        tokio::select! {
            _ = gw.shutdown.cancelled() => return End::Shutdown,
            _ = at.wake.notified() => {
                if let Err(end) = Box::pin(drain(conn, wr, tick)).await {
                    return end;
                }
            }
            inbound = rd.recv() => {
                conn.last_in = Instant::now();
                if let Some(end) = conn.inbound(inbound) {
                    return end;
                }
            }
            _ = tick.tick() => {
                if conn.last_in.elapsed() >= silence {
                    return End::Silent(format!("silent for {} ms", silence.as_millis()));
                }
                                // Quiet for a tick: ping, so the client never waits more
                // than heartbeat_ms for a sign of life.
                if conn.last_out.elapsed() >= quiet {
                    let ping = encode(|e| e.ping(0, 0, unix_ms()));
                    at.outbox.push_reply(ping, Body::Ping);
                }
                if let Err(end) = Box::pin(drain(conn, wr, tick)).await {
                    return end;
                }
            }
        }
    }
}

/// The heartbeat tick: half the heartbeat, so a ping goes out within
/// `heartbeat_ms` of the last frame, and silence is noticed within half a
/// heartbeat of the timeout.
fn tick_period(cfg: &crate::ops::config::SessionConfig) -> Duration {
    Duration::from_millis(u64::from(cfg.heartbeat_ms / 2).max(1))
}

/// Batches one wake-up writes before giving reads a turn.
const BATCHES_PER_WAKE: usize = 4;

fn stopped(stop: Stop) -> End {
    match stop {
        Stop::Superseded => End::Superseded,
        Stop::Closed(Closed::SlowConsumer) => End::Refused(Closing {
            retryable: true,
            ..Closing::new(
                0,
                ErrorCode::SLOW_CONSUMER,
                "the client did not read its events fast enough; reconnect and re-sync",
            )
        }),
        Stop::Closed(_) => End::Ended,
    }
}

/// Writes everything the outbox holds, batch by batch. A write the client
/// does not take within the heartbeat timeout, or an outbox closed under a
/// blocked write (slow consumer), ends the connection instead of waiting.
///
/// Stalls are timed with the connection's heartbeat `tick` rather than a
/// timer of their own, which keeps every idle connection's task smaller.
async fn drain<W: FrameWriter>(
    conn: &mut Conn<'_>,
    wr: &mut W,
    tick: &mut Interval,
) -> Result<(), End> {
    let cfg = &conn.gw.config.session;
    let stall = Duration::from_millis(cfg.heartbeat_timeout_ms.into());
    let mut batch: Vec<Queued> = Vec::new();
    let mut wire: Vec<Bytes> = Vec::new();
    for _ in 0..BATCHES_PER_WAKE {
        batch.clear();
        wire.clear();
        let at = conn.at;
        at.outbox
            .take_batch(at.generation, cfg.write_batch, &mut batch)
            .map_err(stopped)?;
        if batch.is_empty() {
            return Ok(());
        }
        for frame in &batch {
            metrics().frame_out(frame.body);
            if frame.volatile && at.datagrams && wr.send_unordered(&frame.bytes) {
                continue;
            }
            wire.push(frame.wire_bytes());
        }
        if !wire.is_empty() {
            let started = Instant::now();
            let send = wr.send(&wire);
            tokio::pin!(send);
            loop {
                tokio::select! {
                    sent = &mut send => {
                        sent.map_err(|e| End::Lost(e.to_string()))?;
                        break;
                    }
                                        _ = at.wake.notified() => at.outbox.check(at.generation).map_err(stopped)?,
                    _ = conn.gw.shutdown.cancelled() => return Err(End::Shutdown),
                    _ = tick.tick() => {
                        if started.elapsed() >= stall {
                            let msg = format!("client took no data for {} ms", stall.as_millis());
                            return Err(End::Stalled(msg));
                        }
                    }
                }
            }
        }
        conn.last_out = Instant::now();
    }
    // More may be queued: come back after reads had their turn.
    conn.at.wake.notify_one();
    Ok(())
}

impl Conn<'_> {
    fn reply(&self, bytes: Bytes, body: Body) {
        self.at.outbox.push_reply(bytes, body);
    }

    fn error(&self, request_id: u64, code: ErrorCode, message: &str, retryable: bool) {
        self.reply(
            error_frame(request_id, code, message, retryable, false),
            Body::Error,
        );
    }

    /// Records a request (any frame answered with its non-zero id) as read
    /// on the session, for `Welcome.last_request_id` after a drop. Ends the
    /// connection instead when a resume superseded it: the client was told
    /// this request never arrived, and will send it again.
    fn read_request(&self, request_id: u64) -> Result<(), End> {
        if request_id == 0 {
            return Ok(());
        }
        self.at
            .outbox
            .read_request(self.at.generation, request_id)
            .map_err(stopped)
    }

    /// Counts a malformed frame; the last one allowed closes the connection.
    fn malformed(&mut self, request_id: u64, code: ErrorCode, message: &str) -> Option<End> {
        self.malformed += 1;
        let max = self.gw.config.session.max_malformed;
        if self.malformed >= max {
            let msg = format!("{message} ({max} malformed frames: closing)");
            return Some(End::Refused(Closing::new(request_id, code, msg)));
        }
        self.error(request_id, code, message, false);
        None
    }

    fn inbound(&mut self, inbound: Inbound) -> Option<End> {
        let bytes = match inbound {
            Inbound::Frame(b) => b,
            Inbound::TooLarge(n) => {
                let msg = too_large_message(n, self.gw.config.session.max_frame_bytes);
                return Some(End::Refused(Closing::new(
                    0,
                    ErrorCode::FRAME_TOO_LARGE,
                    msg,
                )));
            }
            Inbound::NotBinary => {
                metrics().frame_in(None);
                return self.malformed(
                    0,
                    ErrorCode::MALFORMED_FRAME,
                    "text messages are not frames; send binary",
                );
            }
            Inbound::Closed => return Some(End::ClientClosed),
            Inbound::Failed(e) => return Some(End::Lost(e)),
        };
        let frame = match verify_frame(&bytes, self.gw.config.session.max_frame_bytes as usize) {
            Ok(f) => f,
            Err(e @ FrameError::UnsupportedVersion { .. }) => {
                metrics().frame_in(None);
                if let Err(end) = self.read_request(e.request_id()) {
                    return Some(end);
                }
                self.error(e.request_id(), e.code(), &e.to_string(), false);
                return None;
            }
            Err(e) => {
                metrics().frame_in(None);
                if let Err(end) = self.read_request(e.request_id()) {
                    return Some(end);
                }
                return self.malformed(e.request_id(), e.code(), &e.to_string());
            }
        };
        let body = frame.body_type();
        metrics().frame_in(Some(body));
        let request_id = frame.request_id();
        // Heartbeats and signals get no reply, so they are no requests.
        if !matches!(body, Body::Ping | Body::Pong | Body::ChatTyping) {
            if let Err(end) = self.read_request(request_id) {
                return Some(end);
            }
        }
        match body {
            Body::Ping => {
                if let Some(ping) = frame.body_as_ping() {
                    self.at.outbox.ack(ping.ack_seq());
                }
                self.reply(encode(|e| e.pong(0, unix_ms())), Body::Pong);
                None
            }
            Body::Pong => None,
            Body::ChatTyping => {
                // A volatile signal: no reply, and silently dropped when the
                // connection is over its request budget.
                if self.bucket.try_take(Instant::now()) {
                    if let Some(t) = frame.body_as_chat_typing() {
                        let chat_id: Arc<str> = Arc::from(t.chat_id().unwrap_or(""));
                        let cmd = chat::Command::Typing {
                            session: self.at.session,
                            actor: self.actor(),
                            chat_id: chat_id.clone(),
                            typing: t.typing(),
                        };
                        self.chat(0, &chat_id, cmd, false);
                    }
                }
                None
            }
            Body::EchoRequest
            | Body::PresenceQuery
            | Body::ChatJoin
            | Body::ChatLeave
            | Body::ChatSend
            | Body::ChatRead
            | Body::ChatHistory
            | Body::ChatEdit
            | Body::ChatDelete
            | Body::ChatMute
            | Body::ChatUnread
            | Body::SetStatus
            | Body::Follow
            | Body::Unfollow
            | Body::FriendOp
            | Body::FriendList
            | Body::NotificationList
            | Body::NotificationMarkRead
            | Body::NotificationDelete
            | Body::LobbyCreate
            | Body::LobbyJoin
            | Body::LobbyUpdate
            | Body::LobbyOp
            | Body::LobbyList
            | Body::MatchmakingStart
            | Body::MatchmakingOp => {
                if request_id == 0 {
                    let msg = format!(
                        "{} needs a non-zero request_id",
                        body.variant_name().unwrap_or("request")
                    );
                    return self.malformed(0, ErrorCode::MALFORMED_FRAME, &msg);
                }
                if !self.bucket.try_take(Instant::now()) {
                    let cfg = &self.gw.config.session;
                    let msg = format!(
                        "more than {} requests/s (burst {}) on this connection; slow down and retry",
                        cfg.rate_per_s, cfg.rate_burst
                    );
                    self.error(request_id, ErrorCode::RATE_LIMITED, &msg, true);
                    return None;
                }
                if writes_to_store(body) && !self.gw.store_health.accepting() {
                    let why = self.gw.store_health.failure().unwrap_or_default();
                    let msg = format!(
                        "the gateway cannot store this right now ({why}); nothing changed, retry shortly"
                    );
                    self.error(request_id, ErrorCode::STORE_UNAVAILABLE, &msg, true);
                    return None;
                }
                if let Some(echo) = frame.body_as_echo_request() {
                    self.echo(request_id, echo);
                } else if let Some(query) = frame.body_as_presence_query() {
                    self.presence(request_id, query.user_ids(), None);
                } else if let Some(f) = frame.body_as_follow() {
                    self.presence(request_id, f.user_ids(), Some(true));
                } else if let Some(f) = frame.body_as_unfollow() {
                    self.presence(request_id, f.user_ids(), Some(false));
                } else if let Some(req) = frame.body_as_set_status() {
                    self.set_status(request_id, req);
                } else if let Some(query) = frame.body_as_chat_unread() {
                    self.unread(request_id, query);
                } else if !self.social_request(request_id, &frame)
                    && !self.lobby_request(request_id, &frame)
                    && !self.matchmaking_request(request_id, &frame)
                {
                    self.chat_request(request_id, &frame);
                }
                None
            }
            Body::Hello => self.malformed(
                request_id,
                ErrorCode::MALFORMED_FRAME,
                "Hello after the handshake",
            ),
            other => {
                let msg = format!(
                    "{} is a server-to-client frame",
                    other.variant_name().unwrap_or("this body")
                );
                self.malformed(request_id, ErrorCode::MALFORMED_FRAME, &msg)
            }
        }
    }

    fn actor(&self) -> Actor {
        Actor {
            author: self.at.author.clone(),
            operator: self.at.operator,
        }
    }

    /// Turns a chat request frame into its engine command and routes it.
    fn chat_request(&mut self, request_id: u64, frame: &wire::Frame<'_>) {
        let session = self.at.session;
        let id = |s: Option<&str>| -> Arc<str> { Arc::from(s.unwrap_or("")) };
        // Edit and delete are one engine command: with or without content.
        let amend = frame
            .body_as_chat_edit()
            .map(|e| {
                (
                    e.chat_id(),
                    e.message_id(),
                    Some(e.content().unwrap_or("").to_string()),
                )
            })
            .or_else(|| {
                frame
                    .body_as_chat_delete()
                    .map(|d| (d.chat_id(), d.message_id(), None))
            });
        let cmd = if let Some(j) = frame.body_as_chat_join() {
            chat::Command::Join {
                request_id,
                session,
                actor: self.actor(),
                chat_id: id(j.chat_id()),
            }
        } else if let Some(l) = frame.body_as_chat_leave() {
            chat::Command::Leave {
                request_id,
                session,
                chat_id: id(l.chat_id()),
            }
        } else if let Some(m) = frame.body_as_chat_send() {
            chat::Command::Send {
                request_id,
                session,
                actor: self.actor(),
                chat_id: id(m.chat_id()),
                content: m.content().unwrap_or("").to_string(),
                content_type: m.content_type().0,
                nonce: m.nonce().filter(|n| !n.is_empty()).map(str::to_string),
            }
        } else if let Some(r) = frame.body_as_chat_read() {
            chat::Command::Read {
                request_id,
                session,
                user: self.at.user.clone(),
                chat_id: id(r.chat_id()),
                message_id: r.message_id(),
            }
        } else if let Some((chat_id, message_id, content)) = amend {
            chat::Command::Amend {
                request_id,
                session,
                actor: self.actor(),
                chat_id: id(chat_id),
                message_id,
                content,
            }
        } else if let Some(m) = frame.body_as_chat_mute() {
            chat::Command::Mute {
                request_id,
                actor: self.actor(),
                chat_id: id(m.chat_id()),
                user: UserId::from(m.user_id().unwrap_or("")),
                duration_ms: m.duration_ms(),
            }
        } else if let Some(h) = frame.body_as_chat_history() {
            chat::Command::History {
                request_id,
                session,
                chat_id: id(h.chat_id()),
                before_id: h.before_id(),
                limit: h.limit(),
            }
        } else {
            return;
        };
        let Some(chat_id) = cmd.chat_id().cloned() else {
            return;
        };
        let joining = matches!(cmd, chat::Command::Join { .. });
        if joining
            && self.joined.len() >= MAX_CHATS_PER_CONNECTION
            && !self.joined.contains(&chat_id)
        {
            let msg =
                format!("at most {MAX_CHATS_PER_CONNECTION} chats per connection; leave one first");
            self.error(request_id, ErrorCode::JOIN_ERROR, &msg, false);
            return;
        }
        if joining && !self.joined.contains(&chat_id) {
            self.joined.push(chat_id.clone());
        } else if matches!(cmd, chat::Command::Leave { .. }) {
            self.joined.retain(|c| c != &chat_id);
        }
        self.chat(request_id, &chat_id, cmd, joining);
    }

    /// Sends a chat command to the chat's shard; a join hands over this
    /// session's outbox so the shard can deliver to it directly.
    fn chat(&self, request_id: u64, chat_id: &str, cmd: chat::Command, joining: bool) {
        let shard = self.gw.shards.of_chat(chat_id);
        let msg = ShardMsg::Chat {
            cmd: Box::new(cmd),
            reply_to: self.at.outbox.clone(),
            member: joining.then(|| self.at.outbox.clone()),
        };
        if self.gw.shards.try_send(shard, msg).is_err() && request_id != 0 {
            self.busy(request_id, shard);
        }
    }

    /// Unread counts over chats that may live on several shards: ask each
    /// shard for its part, answer once with rows in the order asked.
    fn unread(&mut self, request_id: u64, query: wire::ChatUnread<'_>) {
        let asked = query.chat_ids().map_or(0, |v| v.len());
        if asked > MAX_UNREAD_CHATS {
            let msg = format!("{asked} chats asked; at most {MAX_UNREAD_CHATS} per query");
            self.error(request_id, ErrorCode::INVALID_ARGUMENT, &msg, false);
            return;
        }
        let ids: Vec<Arc<str>> = query
            .chat_ids()
            .map(|v| v.iter().map(Arc::from).collect())
            .unwrap_or_default();
        let actor = self.actor();
        let Some(pending) = self.scatter(
            request_id,
            &ids,
            |shards, id| shards.of_chat(id),
            |chat_ids, reply| ShardMsg::ChatUnread {
                actor: actor.clone(),
                chat_ids,
                reply,
            },
        ) else {
            return;
        };
        let outbox = self.at.outbox.clone();
        tokio::spawn(async move {
            let mut rows = std::collections::HashMap::new();
            let mut refused = None;
            for rx in pending {
                match rx.await {
                    Ok(Ok(part)) => rows.extend(part.into_iter().map(|r| (r.chat_id.clone(), r))),
                    Ok(Err(f)) => refused = refused.or(Some(f)),
                    Err(_) => {
                        let f =
                            Failure::new(Refusal::RateLimited, "a shard is shutting down; retry");
                        refused = refused.or(Some(f));
                    }
                }
            }
            let (bytes, body) = match refused {
                Some(f) => (
                    encode(|e| crate::core::wire::failure_frame(e, request_id, &f)),
                    Body::Error,
                ),
                None => {
                    let out: Vec<UnreadRow> = ids
                        .iter()
                        .filter_map(|id| rows.get(id))
                        .map(|r| UnreadRow {
                            chat_id: r.chat_id.to_string(),
                            read_up_to: r.read_up_to,
                            unread: r.unread,
                            last_message_id: r.last_message_id,
                        })
                        .collect();
                    (
                        encode(|e| e.chat_unread_counts(request_id, &out)),
                        Body::ChatUnreadCounts,
                    )
                }
            };
            outbox.push_reply(bytes, body);
        });
    }

    /// Splits `keys` by owning shard and sends each shard its part; the
    /// receivers answer in shard order. A saturated shard answers the whole
    /// request RATE_LIMITED instead (returns `None`).
    fn scatter<K: Clone, T>(
        &self,
        request_id: u64,
        keys: &[K],
        owner: impl Fn(&crate::runtime::shards::Shards, &K) -> usize,
        message: impl Fn(Vec<K>, oneshot::Sender<T>) -> ShardMsg,
    ) -> Option<Vec<oneshot::Receiver<T>>> {
        let shards = &self.gw.shards;
        let mut by_shard: Vec<Vec<K>> = vec![Vec::new(); shards.count()];
        for key in keys {
            by_shard[owner(shards, key)].push(key.clone());
        }
        let mut pending = Vec::new();
        for (shard, part) in by_shard.into_iter().enumerate() {
            if part.is_empty() {
                continue;
            }
            let (tx, rx) = oneshot::channel();
            if shards.try_send(shard, message(part, tx)).is_err() {
                self.busy(request_id, shard);
                return None;
            }
            pending.push(rx);
        }
        Some(pending)
    }

    fn busy(&self, request_id: u64, shard: usize) {
        let msg = format!("shard {shard} is saturated; retry shortly");
        self.error(request_id, ErrorCode::RATE_LIMITED, &msg, true);
    }

    fn echo(&mut self, request_id: u64, echo: wire::EchoRequest<'_>) {
        let to_user: Option<UserId> = echo.to_user().filter(|u| !u.is_empty()).map(UserId::from);
        let shards = &self.gw.shards;
        let shard = match &to_user {
            Some(u) => shards.of_user(u),
            None => shards.of_session(self.at.session),
        };
        let cmd = Command::Echo {
            request_id,
            from_user: self.at.user.clone(),
            to_user,
            payload: echo
                .payload()
                .map(|p| p.bytes().to_vec())
                .unwrap_or_default(),
            volatile: echo.volatile(),
        };
        let msg = ShardMsg::Request {
            cmd,
            reply_to: self.at.outbox.clone(),
        };
        if shards.try_send(shard, msg).is_err() {
            self.busy(request_id, shard);
        }
    }

    /// Presence of up to 500 users (`follow: None`), or follow / unfollow
    /// them for this session (`Some(true | false)`): each owning shard
    /// answers its part, the reply keeps the order asked.
    fn presence(
        &mut self,
        request_id: u64,
        ids: Option<flatbuffers::Vector<'_, flatbuffers::ForwardsUOffset<&str>>>,
        follow: Option<bool>,
    ) {
        let asked = ids.map_or(0, |v| v.len());
        if asked > MAX_PRESENCE_IDS {
            let msg = format!("{asked} user ids asked; at most {MAX_PRESENCE_IDS} per request");
            self.error(request_id, ErrorCode::INVALID_ARGUMENT, &msg, false);
            return;
        }
        let ids: Vec<UserId> = ids
            .map(|v| v.iter().map(UserId::from).collect())
            .unwrap_or_default();
        match follow {
            Some(true) => {
                let follows = self.follows.get_or_insert_with(Default::default);
                let new = ids.iter().filter(|id| !follows.contains(*id)).count();
                if follows.len() + new > MAX_FOLLOWS_PER_CONNECTION {
                    let msg = format!(
                        "following {} users already; at most {MAX_FOLLOWS_PER_CONNECTION} per connection (unfollow some)",
                        follows.len()
                    );
                    self.error(request_id, ErrorCode::INVALID_ARGUMENT, &msg, false);
                    return;
                }
                follows.extend(ids.iter().cloned());
            }
            Some(false) => {
                if let Some(follows) = self.follows.as_mut() {
                    ids.iter().for_each(|id| {
                        follows.remove(id);
                    });
                }
            }
            None => {}
        }
        let (session, outbox) = (self.at.session, self.at.outbox.clone());
        let Some(pending) = self.scatter(
            request_id,
            &ids,
            |shards, id| shards.of_user(id),
            |user_ids, reply| match follow {
                None => ShardMsg::Lookup { user_ids, reply },
                Some(follow) => ShardMsg::Follow {
                    session,
                    targets: user_ids,
                    follow,
                    outbox: outbox.clone(),
                    reply,
                },
            },
        ) else {
            return;
        };
        let outbox = self.at.outbox.clone();
        tokio::spawn(async move {
            let mut rows = std::collections::HashMap::new();
            for rx in pending {
                for p in rx.await.unwrap_or_default() {
                    rows.insert(p.user_id.clone(), p);
                }
            }
            let entries: Vec<PresenceEntry> = ids
                .iter()
                .filter_map(|id| rows.get(id))
                .map(|p| PresenceEntry {
                    user_id: p.user_id.to_string(),
                    status: crate::core::wire::presence_status(p.status),
                    connections: p.connections,
                    last_active_ms: p.last_active_ms,
                    text: p.text.as_deref().unwrap_or("").to_string(),
                })
                .collect();
            let bytes = encode(|e| e.presence_list(request_id, &entries));
            outbox.push_reply(bytes, Body::PresenceList);
        });
    }

    /// `user:status` goes to the user's own shard.
    fn set_status(&mut self, request_id: u64, req: wire::SetStatus<'_>) {
        let Some(status) = crate::core::wire::status_from_wire(req.status()) else {
            let msg = format!("unknown status {}", req.status().0);
            self.error(request_id, ErrorCode::INVALID_ARGUMENT, &msg, false);
            return;
        };
        let cmd = Command::SetStatus {
            request_id,
            user: self.at.user.clone(),
            status,
            text: req.text().map(str::to_string),
            invisible: req.invisible(),
        };
        let shard = self.gw.shards.of_user(&self.at.user);
        let msg = ShardMsg::Request {
            cmd,
            reply_to: self.at.outbox.clone(),
        };
        if self.gw.shards.try_send(shard, msg).is_err() {
            self.busy(request_id, shard);
        }
    }
}

async fn detach(gw: &Gateway, at: &Attached, resumable: bool) {
    if at.outbox.detach(at.generation) {
        let msg = ShardMsg::Detach {
            session: at.session,
            generation: at.generation,
            resumable,
        };
        gw.shards.send(gw.shards.of_user(&at.user), msg).await;
    }
}

/// Leaves, for a session that is over, the chats this connection joined,
/// so their other members hear of it at once.
fn leave_chats(gw: &Gateway, at: &Attached, joined: Vec<Arc<str>>) {
    for chat_id in joined {
        let cmd = chat::Command::Leave {
            request_id: 0,
            session: at.session,
            chat_id: chat_id.clone(),
        };
        let msg = ShardMsg::Chat {
            cmd: Box::new(cmd),
            reply_to: at.outbox.clone(),
            member: None,
        };
        // A full mailbox leaves it to the shard's sweep.
        let _ = gw.shards.try_send(gw.shards.of_chat(&chat_id), msg);
    }
}

async fn finish<W: FrameWriter>(
    gw: &Arc<Gateway>,
    at: &Attached,
    end: End,
    joined: Vec<Arc<str>>,
    wr: &mut W,
) {
    if matches!(end, End::ClientClosed | End::Refused(_)) {
        leave_chats(gw, at, joined);
    }
    match end {
        End::ClientClosed => detach(gw, at, false).await,
        End::Lost(reason) => {
            tracing::debug!(session = at.session, %reason, "connection lost; session resumable");
            detach(gw, at, true).await
        }
        End::Silent(reason) => {
            tracing::debug!(session = at.session, %reason, "connection silent; session resumable");
            detach(gw, at, true).await;
            wr.close(CloseCode::HeartbeatTimeout, &reason).await;
        }
        End::Stalled(reason) => {
            let session = format!("{:016x}", at.session);
            tracing::warn!(%session, user = %at.user, %reason, "slow consumer closed (SLOW_CONSUMER); session resumable");
            let closing = Closing {
                retryable: true,
                ..Closing::new(
                    0,
                    ErrorCode::SLOW_CONSUMER,
                    format!("{reason}; reconnect and resume"),
                )
            };
            // Best effort: the socket is full, so the frame (and maybe the
            // close) may not get through; the log line above says it all.
            let _ = timeout(FINAL_WRITE, wr.send(&[closing.frame()])).await;
            detach(gw, at, true).await;
            wr.close(CloseCode::Error(closing.code), &closing.message)
                .await;
        }
        End::Shutdown => {
            // Flush what is owed, then tell the client where it stands.
            let mut batch = Vec::new();
            let mut wire = Vec::new();
            while at.outbox.take_batch(at.generation, 256, &mut batch).is_ok() && !batch.is_empty()
            {
                wire.extend(batch.drain(..).map(|f| f.wire_bytes()));
            }
            let cfg = &gw.config.server;
            let reconnect_after_ms = crate::ops::gateway::goaway_reconnect_after_ms(
                cfg.goaway_reconnect_ms,
                cfg.goaway_jitter_ms,
                rand::random(),
            );
            wire.push(encode(|e| e.go_away(GOAWAY_REASON, reconnect_after_ms)));
            metrics().frame_out(Body::GoAway);
            let _ = timeout(FINAL_WRITE, wr.send(&wire)).await;
            detach(gw, at, true).await;
            wr.close(CloseCode::GoingAway, GOAWAY_REASON).await;
        }
        End::Refused(closing) => {
            if closing.code == ErrorCode::SLOW_CONSUMER {
                let session = format!("{:016x}", at.session);
                tracing::warn!(%session, user = %at.user, reason = %closing.message, "slow consumer closed (SLOW_CONSUMER); session over");
            } else {
                tracing::debug!(session = at.session, code = ?closing.code, reason = %closing.message, "connection refused");
            }
            // Best effort for a slow consumer: its socket may be full.
            let _ = timeout(FINAL_WRITE, wr.send(&[closing.frame()])).await;
            detach(gw, at, false).await;
            wr.close(CloseCode::Error(closing.code), &closing.message)
                .await;
        }
        End::Superseded => {
            wr.close(CloseCode::Normal, "a newer connection resumed this session")
                .await;
        }
        End::Ended => wr.close(CloseCode::Normal, "the session ended").await,
    }
}

impl Gateway {
    pub(crate) fn outbox_limits(&self) -> OutboxLimits {
        let s = &self.config.session;
        OutboxLimits {
            capacity: s.outbound_queue,
            capacity_bytes: s.outbound_queue_bytes,
            volatile_shed_at: s.volatile_shed_at,
            replay: s.replay_buffer,
            replay_bytes: s.replay_buffer_bytes,
        }
    }
}
