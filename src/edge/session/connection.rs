//! A connection's steady state, after the handshake: reads each inbound
//! frame (transport outcome, verification, decoding, the malformed-frame
//! budget) and hands it to the router; keeps the heartbeat; drains the
//! session's outbox to the socket in batches; and, when the connection
//! ends, settles the session (detach, leave chats, GoAway or the closing
//! error).
//!
//! It never decides what a request means (`route` does) and never touches
//! engine state.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use huddle_schema::wire::{Body, ErrorCode};
use huddle_schema::{verify_frame, CloseCode, FrameError};
use tokio::time::{timeout, Interval, MissedTickBehavior};

use super::{
    encode, error_frame, too_large_message, unix_ms, Attached, Closing, End, FrameReader,
    FrameWriter, Inbound, FINAL_WRITE,
};
use crate::core::engine::chat;
use crate::core::engine::UserId;
use crate::core::outbox::{Closed, Queued, Stop};
use crate::core::shard::ShardMsg;
use crate::edge::limits::TokenBucket;
use crate::edge::request::{Request, RequestKind};
use crate::edge::Edge;
use crate::telemetry::metrics::metrics;

/// What `GoAway` says, and the reason its close (1001) carries.
const GOAWAY_REASON: &str = "this node is draining; reconnect (with resume)";

/// Batches one wake-up writes before giving reads a turn.
const BATCHES_PER_WAKE: usize = 4;

/// Per-connection loop state.
pub(super) struct Conn<'a> {
    pub(super) edge: &'a Arc<Edge>,
    pub(super) at: &'a Attached,
    pub(super) bucket: TokenBucket,
    malformed: u32,
    last_in: Instant,
    last_out: Instant,
    /// Users this connection follows (bounded by MAX_FOLLOWS_PER_CONNECTION);
    /// boxed and created on first use, so idle connections carry 8 bytes
    /// for it instead of a 48-byte empty set in every task.
    #[allow(clippy::box_collection)]
    pub(super) follows: Option<Box<HashSet<UserId>>>,
    /// Chats joined over this connection, left for the session when it
    /// ends for good. (Chats joined before a resume are cleaned up by
    /// their shard's sweep once the session is over.)
    pub(super) joined: Vec<Arc<str>>,
}

pub(super) async fn run<R: FrameReader, W: FrameWriter>(
    edge: &Arc<Edge>,
    at: &Attached,
    rd: &mut R,
    wr: &mut W,
) -> (End, Vec<Arc<str>>) {
    let cfg = &edge.session;
    let now = Instant::now();
    let mut conn = Conn {
        edge,
        at,
        bucket: TokenBucket::new(cfg.rate_per_s, cfg.rate_burst, now),
        malformed: 0,
        last_in: now,
        last_out: now,
        joined: Vec::new(),
        follows: None,
    };
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::now() + tick_period(cfg.heartbeat_ms),
        tick_period(cfg.heartbeat_ms),
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
    let (edge, at) = (conn.edge, conn.at);
    let cfg = &edge.session;
    let silence = Duration::from_millis(cfg.heartbeat_timeout_ms.into());
    let quiet = tick_period(cfg.heartbeat_ms);
    loop {
        // Unbiased: a busy outbound stream must not starve reads (acks,
        // requests), nor the other way round.
        tokio::select! {
            _ = edge.shutdown.cancelled() => return End::Shutdown,
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
fn tick_period(heartbeat_ms: u32) -> Duration {
    Duration::from_millis(u64::from(heartbeat_ms / 2).max(1))
}

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
    let cfg = &conn.edge.session;
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
                    _ = conn.edge.shutdown.cancelled() => return Err(End::Shutdown),
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
    pub(super) fn reply(&self, bytes: Bytes, body: Body) {
        self.at.outbox.push_reply(bytes, body);
    }

    pub(super) fn error(&self, request_id: u64, code: ErrorCode, message: &str, retryable: bool) {
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
    pub(super) fn malformed(
        &mut self,
        request_id: u64,
        code: ErrorCode,
        message: &str,
    ) -> Option<End> {
        self.malformed += 1;
        let max = self.edge.session.max_malformed;
        if self.malformed >= max {
            let msg = format!("{message} ({max} malformed frames: closing)");
            return Some(End::Refused(Closing::new(request_id, code, msg)));
        }
        self.error(request_id, code, message, false);
        None
    }

    /// One transport read: a frame is verified, decoded, recorded and
    /// routed; anything else ends the connection or counts as malformed.
    fn inbound(&mut self, inbound: Inbound) -> Option<End> {
        let max_frame_bytes = self.edge.session.max_frame_bytes;
        let bytes = match inbound {
            Inbound::Frame(b) => b,
            Inbound::TooLarge(n) => {
                let msg = too_large_message(n, max_frame_bytes);
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
        let frame = match verify_frame(&bytes, max_frame_bytes as usize) {
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
        metrics().frame_in(Some(frame.body_type()));
        let request_id = frame.request_id();
        let request = Request::from_frame(&frame);
        // Heartbeats and signals get no reply, so they are no requests.
        let signal = matches!(&request, Ok(r) if r.kind() == RequestKind::Signal);
        if !signal {
            if let Err(end) = self.read_request(request_id) {
                return Some(end);
            }
        }
        match request {
            Ok(request) => self.route(request_id, request),
            Err(e) => self.malformed(request_id, e.code(), &e.to_string()),
        }
    }
}

pub(super) async fn detach(edge: &Edge, at: &Attached, resumable: bool) {
    if at.outbox.detach(at.generation) {
        let msg = ShardMsg::Detach {
            session: at.session,
            generation: at.generation,
            resumable,
        };
        edge.shards.send(edge.shards.of_user(&at.user), msg).await;
    }
}

/// Leaves, for a session that is over, the chats this connection joined,
/// so their other members hear of it at once.
fn leave_chats(edge: &Edge, at: &Attached, joined: Vec<Arc<str>>) {
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
        let _ = edge.shards.try_send(edge.shards.of_chat(&chat_id), msg);
    }
}

pub(super) async fn finish<W: FrameWriter>(
    edge: &Arc<Edge>,
    at: &Attached,
    end: End,
    joined: Vec<Arc<str>>,
    wr: &mut W,
) {
    if matches!(end, End::ClientClosed | End::Refused(_)) {
        leave_chats(edge, at, joined);
    }
    match end {
        End::ClientClosed => detach(edge, at, false).await,
        End::Lost(reason) => {
            tracing::debug!(session = at.session, %reason, "connection lost; session resumable");
            detach(edge, at, true).await
        }
        End::Silent(reason) => {
            tracing::debug!(session = at.session, %reason, "connection silent; session resumable");
            detach(edge, at, true).await;
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
            detach(edge, at, true).await;
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
            let reconnect_after_ms = edge.goaway.reconnect_after_ms(rand::random());
            wire.push(encode(|e| e.go_away(GOAWAY_REASON, reconnect_after_ms)));
            metrics().frame_out(Body::GoAway);
            let _ = timeout(FINAL_WRITE, wr.send(&wire)).await;
            detach(edge, at, true).await;
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
            detach(edge, at, false).await;
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
