//! The connection task behind a [`crate::Client`]: one per client, alive
//! across reconnects.
//!
//! It owns the `Hello`/`Welcome` handshake, the read loop (reply routing,
//! sequence dedupe of events and replies, event delivery, answering pings,
//! liveness), the writer task (outbound queue and heartbeat pings), and
//! reconnecting with resume. It never exposes the transport, and never
//! refers to the client above it: it works on the [`Shared`] state, and
//! server frames become events in `event`.
//!
//! Requests in flight when the connection drops wait for the resume: the
//! gateway replays the replies it owes (they carry `seq`, like events), and
//! the driver sends again, with the same id and before anything else, the
//! requests above `Welcome.last_request_id`, which the gateway never read. So
//! a request is carried out at most once per session and answered exactly
//! once. When the resume fails they fail with [`ClientError::Disconnected`].

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use huddle_schema::encode::ResumeFields;
use huddle_schema::wire::{self, ErrorCode};
use huddle_schema::{error_code_name, verify_frame, PROTOCOL_VERSION};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, Interval, MissedTickBehavior};

use crate::backoff;
use crate::error::ClientError;
use crate::event::{self, Event};
use crate::seq::{SeqCheck, SeqTracker};
use crate::session::SessionInfo;
use crate::shared::{encode, Link, Shared};
use crate::transport::{
    self, PeerClose, RawConnection, RawReceiver, RawSender, Transport, MAX_INBOUND_FRAME_BYTES,
};

/// Capacity of a connection's outbound queue, in frames. When full, request
/// callers wait for room (within their timeout) and answers to the gateway's
/// pings are skipped (the queue already carries frames, each a sign of life).
const OUTBOUND_QUEUE: usize = 64;

/// How long a clean close waits for the writer to flush and close.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// How long a clean close waits for the gateway to finish the close.
const CLOSE_DRAIN: Duration = Duration::from_secs(1);

/// After `GoAway`, how long the client waits at least for the gateway to
/// drain and close before dropping the connection itself.
const GOAWAY_DRAIN_MIN: Duration = Duration::from_secs(1);

/// What the gateway granted in a `Welcome`.
pub(crate) struct Welcomed {
    session: SessionInfo,
    resume_token: String,
    resumed: bool,
    replayed: u32,
    /// On resume: the highest request id the gateway had read.
    last_request_id: u64,
}

/// What a resuming `Hello` presents.
#[derive(Clone)]
pub(crate) struct Resume {
    session_id: String,
    resume_token: String,
}

/// Dials the gateway and performs the handshake: `Hello` (resuming when
/// `resume` is given), then `Welcome` or `Error`, all within
/// `connect_timeout`.
pub(crate) async fn handshake(
    shared: &Shared,
    resume: Option<&Resume>,
) -> Result<(RawConnection, Welcomed), ClientError> {
    let config = &shared.config;
    let attempt = async {
        let mut conn = transport::connect_raw(&config.url, &config.tls, config.local_addr).await?;
        let request_id = shared.next_request_id();
        let datagrams = config.datagrams && conn.transport() == Transport::Quic;
        let last_seq = shared.last_seq.load(Ordering::Acquire);
        let hello = encode(|enc| {
            enc.hello(
                request_id,
                Some(&config.token),
                &config.client_name,
                PROTOCOL_VERSION,
                resume.map(|r| ResumeFields {
                    session_id: &r.session_id,
                    resume_token: &r.resume_token,
                    last_seq,
                }),
                datagrams,
            )
        });
        conn.send(hello).await?;
        loop {
            let Some(buf) = conn.recv().await? else {
                return Err(ClientError::Transport(
                    "the gateway closed the connection during the handshake".into(),
                ));
            };
            let frame = verify_frame(&buf, MAX_INBOUND_FRAME_BYTES)
                .map_err(|e| ClientError::Protocol(format!("bad handshake reply: {e}")))?;
            if let Some(err) = frame.body_as_error() {
                return Err(ClientError::from_wire(&err));
            }
            if let Some(welcome) = frame.body_as_welcome() {
                let welcomed = parse_welcome(&welcome)?;
                return Ok((conn, welcomed));
            }
            // Nothing else is expected before Welcome; skip it.
        }
    };
    tokio::time::timeout(config.connect_timeout, attempt)
        .await
        .unwrap_or(Err(ClientError::Timeout))
}

fn parse_welcome(w: &wire::Welcome<'_>) -> Result<Welcomed, ClientError> {
    let session_id = w
        .session_id()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ClientError::Protocol("Welcome without a session id".into()))?;
    let user = w.user();
    let text = |s: Option<&str>| s.unwrap_or_default().to_owned();
    let session = SessionInfo {
        session_id: session_id.to_owned(),
        user_id: text(user.and_then(|u| u.id())),
        username: text(user.and_then(|u| u.username())),
        display_name: text(user.and_then(|u| u.display_name())),
        roles: user
            .and_then(|u| u.roles())
            .map(|roles| roles.iter().map(str::to_owned).collect())
            .unwrap_or_default(),
        heartbeat_ms: w.heartbeat_ms(),
        heartbeat_timeout_ms: w.heartbeat_timeout_ms(),
        resume_window_ms: w.resume_window_ms(),
        max_frame_bytes: w.max_frame_bytes(),
    };
    Ok(Welcomed {
        session,
        resume_token: w.resume_token().unwrap_or_default().to_owned(),
        resumed: w.resumed(),
        replayed: w.replayed(),
        last_request_id: w.last_request_id(),
    })
}

/// Whether a handshake refusal means retrying cannot help.
fn is_fatal(err: &ClientError) -> bool {
    matches!(
        err.code(),
        Some(
            ErrorCode::TOKEN_MISSING
                | ErrorCode::TOKEN_INVALID
                | ErrorCode::TOKEN_EXPIRED
                | ErrorCode::ACCOUNT_DISABLED
                | ErrorCode::UNSUPPORTED_VERSION
        )
    )
}

fn nonzero_ms(ms: u32) -> Option<Duration> {
    (ms > 0).then(|| Duration::from_millis(ms.into()))
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Resolves once the client is closing for good.
async fn wait_closed(closed: &mut watch::Receiver<bool>) {
    // An error means the sender is gone, which also means closing.
    let _ = closed.wait_for(|closed| *closed).await;
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

async fn tick(ticker: &mut Option<Interval>) {
    match ticker {
        Some(ticker) => {
            ticker.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// The writer task of one connection: sends `resend` (requests the gateway
/// never read before a resume), then queued frames, and a `Ping { ack_seq }`
/// every `heartbeat`. Ends with an error when sending fails, or closes the
/// transport cleanly once every queue sender is gone.
async fn write_loop(
    mut tx: RawSender,
    resend: Vec<Bytes>,
    mut queue: mpsc::Receiver<Bytes>,
    shared: Arc<Shared>,
    heartbeat: Option<Duration>,
) -> Result<(), ClientError> {
    for frame in resend {
        tx.send(frame).await?;
    }
    let mut ticker = heartbeat.map(|period| {
        let mut ticker = tokio::time::interval_at(Instant::now() + period, period);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        ticker
    });
    loop {
        tokio::select! {
            frame = queue.recv() => match frame {
                Some(frame) => tx.send(frame).await?,
                None => {
                    tx.close().await;
                    return Ok(());
                }
            },
            () = tick(&mut ticker) => {
                let ack_seq = shared.last_seq.load(Ordering::Acquire);
                let ping = encode(|enc| enc.ping(0, ack_seq, now_ms()));
                tx.send(ping).await?;
            }
        }
    }
}

/// One established connection.
struct Live {
    rx: RawReceiver,
    writer: JoinHandle<Result<(), ClientError>>,
    /// The writer's output was taken (a finished `JoinHandle` must not be
    /// polled again).
    writer_done: bool,
    /// The read loop's handle on the outbound queue (for pongs).
    out: mpsc::Sender<Bytes>,
    /// Give the connection up after this long without a frame.
    silence_limit: Option<Duration>,
}

/// Why a connection ended.
enum Ended {
    /// The client is closing for good.
    Closed,
    /// The connection dropped (closed by the gateway with `close`, when
    /// it said how); reconnect with backoff.
    Dropped {
        reason: String,
        close: Option<PeerClose>,
    },
    /// The gateway sent `GoAway`; reconnect at `reconnect_at`.
    GoAway {
        reason: String,
        reconnect_at: Instant,
        close: Option<PeerClose>,
    },
}

/// A `GoAway` in progress: the gateway drains and closes.
struct GoingAway {
    reason: String,
    reconnect_at: Instant,
    drain_until: Instant,
}

/// The connection task's own state.
struct Driver {
    shared: Arc<Shared>,
    /// The [`crate::EventStream`]'s sender; see its docs for what happens
    /// when the buffer is full.
    events: mpsc::Sender<Event>,
    closed: watch::Receiver<bool>,
    seq: SeqTracker,
    resume: Option<Resume>,
    heartbeat: Option<Duration>,
    silence_limit: Option<Duration>,
    dropped_volatile: u64,
}

/// Starts the connection task for a connection that just got its `Welcome`.
/// The link is up (requests can be sent) when this returns.
pub(crate) fn start(
    shared: Arc<Shared>,
    conn: RawConnection,
    welcomed: Welcomed,
    events: mpsc::Sender<Event>,
) -> JoinHandle<()> {
    let mut driver = Driver {
        closed: shared.closed.subscribe(),
        shared,
        events,
        seq: SeqTracker::new(),
        resume: None,
        heartbeat: None,
        silence_limit: None,
        dropped_volatile: 0,
    };
    driver.adopt(welcomed);
    let live = driver.start_link(conn, None);
    tokio::spawn(driver.run(live))
}

impl Driver {
    /// Takes a `Welcome`'s session as the current one.
    fn adopt(&mut self, welcomed: Welcomed) {
        self.resume = Some(Resume {
            session_id: welcomed.session.session_id.clone(),
            resume_token: welcomed.resume_token,
        });
        self.heartbeat = nonzero_ms(welcomed.session.heartbeat_ms);
        self.silence_limit = nonzero_ms(welcomed.session.heartbeat_timeout_ms);
        self.shared.set_session(welcomed.session);
    }

    /// Spawns the writer of a new connection and opens the link to requests.
    /// On a resumed session (`resumed_after`: `Welcome.last_request_id`) the
    /// writer first sends again the requests in flight the gateway never read.
    fn start_link(&mut self, conn: RawConnection, resumed_after: Option<u64>) -> Live {
        let (tx, rx) = conn.split();
        // Bounded: see OUTBOUND_QUEUE.
        let (out, queue) = mpsc::channel(OUTBOUND_QUEUE);
        let resend = self.shared.open_link(out.clone(), resumed_after);
        if !resend.is_empty() {
            tracing::debug!(
                requests = resend.len(),
                "sending again what the gateway never read"
            );
        }
        let writer = tokio::spawn(write_loop(
            tx,
            resend,
            queue,
            self.shared.clone(),
            self.heartbeat,
        ));
        Live {
            rx,
            writer,
            writer_done: false,
            out,
            silence_limit: self.silence_limit,
        }
    }

    async fn run(mut self, mut live: Live) {
        loop {
            let reconnect_at = match self.drive(&mut live).await {
                Ended::Closed => {
                    self.shutdown(live).await;
                    self.finish(None).await;
                    return;
                }
                Ended::Dropped { reason, close } => {
                    self.teardown(live).await;
                    tracing::debug!(%reason, "connection dropped");
                    self.emit(Event::Disconnected { reason, close }).await;
                    None
                }
                Ended::GoAway {
                    reason,
                    reconnect_at,
                    close,
                } => {
                    self.teardown(live).await;
                    let reason = format!("the gateway went away: {reason}");
                    self.emit(Event::Disconnected { reason, close }).await;
                    Some(reconnect_at)
                }
            };
            if !self.shared.config.reconnect {
                self.shared.fail_pending(&ClientError::Disconnected);
                self.finish(None).await;
                return;
            }
            match self.reconnect(reconnect_at).await {
                Ok((conn, resumed, replayed, last_request_id)) => {
                    if !resumed {
                        // A new session owes nothing to the old one's
                        // requests: they may or may not have been carried out.
                        self.shared.fail_pending(&ClientError::Disconnected);
                    }
                    live = self.start_link(conn, resumed.then_some(last_request_id));
                    if !resumed {
                        self.emit(Event::SessionReset).await;
                    }
                    self.emit(Event::Reconnected { resumed, replayed }).await;
                }
                Err(fatal) => {
                    self.finish(fatal).await;
                    return;
                }
            }
        }
    }

    /// The read loop of one connection, until it ends.
    async fn drive(&mut self, live: &mut Live) -> Ended {
        // Only drop requests made from now on count.
        let mut drop_requests = self.shared.drop_requests.subscribe();
        let mut last_heard = Instant::now();
        let mut going_away: Option<GoingAway> = None;
        // The last `Error { closing }` the gateway sent, for the reason.
        let mut closing: Option<String> = None;
        // The connection ended from the gateway's side: ask how it closed.
        let mut ended_by_peer = false;
        loop {
            let silence_deadline = live.silence_limit.map(|limit| last_heard + limit);
            let drain_deadline = going_away.as_ref().map(|g| g.drain_until);
            let lost: String = tokio::select! {
                biased;
                () = wait_closed(&mut self.closed) => return Ended::Closed,
                Ok(()) = drop_requests.changed() => {
                    return Ended::Dropped {
                        reason: "connection dropped for tests".into(),
                        close: None,
                    };
                }
                result = &mut live.writer, if !live.writer_done => {
                    live.writer_done = true;
                    match result {
                        Ok(Err(e)) => e.to_string(),
                        Ok(Ok(())) => "the outbound queue closed".into(),
                        Err(e) => format!("the writer task failed: {e}"),
                    }
                }
                () = sleep_until_opt(silence_deadline) => format!(
                    "nothing heard from the gateway for {} ms",
                    live.silence_limit.unwrap_or_default().as_millis()
                ),
                () = sleep_until_opt(drain_deadline) => {
                    "the gateway did not close the connection after GoAway".into()
                }
                received = live.rx.recv() => match received {
                    Ok(Some(frame)) => {
                        self.on_frame(frame, live, &mut going_away, &mut closing).await;
                        last_heard = Instant::now();
                        continue;
                    }
                    Ok(None) => {
                        ended_by_peer = true;
                        "the gateway closed the connection".into()
                    }
                    Err(e) => {
                        ended_by_peer = true;
                        e.to_string()
                    }
                },
            };
            let close = if ended_by_peer {
                live.rx.peer_close().await
            } else {
                None
            };
            if let Some(g) = going_away {
                return Ended::GoAway {
                    reason: g.reason,
                    reconnect_at: g.reconnect_at,
                    close,
                };
            }
            let reason = match (closing, &close) {
                (Some(error), _) => format!("{lost} ({error})"),
                // The Error frame did not get through; the close says why.
                (None, Some(c)) if !c.reason.is_empty() => {
                    format!("{lost} (close {}: {})", c.code, c.reason)
                }
                (None, _) => lost,
            };
            return Ended::Dropped { reason, close };
        }
    }

    /// Handles one inbound frame of an established connection.
    async fn on_frame(
        &mut self,
        buf: Bytes,
        live: &Live,
        going_away: &mut Option<GoingAway>,
        closing: &mut Option<String>,
    ) {
        let frame = match verify_frame(&buf, MAX_INBOUND_FRAME_BYTES) {
            Ok(frame) => frame,
            Err(e) => {
                tracing::warn!(error = %e, "ignoring a malformed frame from the gateway");
                return;
            }
        };
        let error = frame.body_as_error();
        if let Some(err) = error.filter(|e| e.closing()) {
            *closing = Some(format!(
                "{}: {}",
                error_code_name(err.code()),
                err.message().unwrap_or_default()
            ));
        }

        // Replies are numbered with the events (a resume replays both), so
        // both go through the same dedupe.
        let seq = frame.seq();
        match self.seq.observe(seq) {
            SeqCheck::Duplicate => {
                tracing::debug!(seq, "discarding a frame seen before");
                return;
            }
            SeqCheck::Fresh { missed } if missed > 0 => {
                tracing::warn!(seq, missed, "the gateway skipped sequence numbers");
            }
            SeqCheck::Fresh { .. } | SeqCheck::Volatile => {}
        }
        let reliable = seq != 0;

        let request_id = frame.request_id();
        if request_id != 0 {
            if !self.shared.complete(request_id, buf.clone()) {
                tracing::debug!(request_id, "reply to no waiting request (timed out?)");
            }
            if reliable {
                self.shared
                    .last_seq
                    .store(self.seq.last(), Ordering::Release);
            }
            return;
        }

        if let Some(event) = event::decode(&frame, seq) {
            if reliable {
                self.emit(event).await;
            } else {
                self.emit_volatile(event);
            }
        } else if let Some(ping) = frame.body_as_ping() {
            let pong = encode(|enc| enc.pong(0, ping.time_ms()));
            // Full: frames are flowing to the gateway anyway.
            let _ = live.out.try_send(pong);
        } else if let Some(err) = error {
            self.emit(Event::ServerError {
                code: err.code(),
                message: err.message().unwrap_or_default().to_owned(),
            })
            .await;
        } else if let Some(go_away) = frame.body_as_go_away() {
            let reason = go_away.reason().unwrap_or_default().to_owned();
            let reconnect_after_ms = go_away.reconnect_after_ms();
            let after = Duration::from_millis(reconnect_after_ms.into());
            let now = Instant::now();
            *going_away = Some(GoingAway {
                reason: reason.clone(),
                // Clients told the same delay still spread out.
                reconnect_at: now + backoff::after_goaway(after, rand::random()),
                drain_until: now + after.max(GOAWAY_DRAIN_MIN),
            });
            self.emit(Event::GoAway {
                reason,
                reconnect_after_ms,
            })
            .await;
        }
        // Pong, or a body this client does not handle: a sign of life only.

        if reliable {
            // Acknowledged (in the next Ping) only once delivered.
            self.shared
                .last_seq
                .store(self.seq.last(), Ordering::Release);
        }
    }

    /// Delivers an event that must not be lost, waiting for room in the
    /// event buffer (unless the client is closing).
    async fn emit(&mut self, event: Event) {
        let Self { events, closed, .. } = self;
        tokio::select! {
            biased;
            _ = events.send(event) => {}
            () = wait_closed(closed) => {}
        }
    }

    /// Delivers a volatile event if there is room; drops it otherwise.
    fn emit_volatile(&mut self, event: Event) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.events.try_send(event) {
            self.dropped_volatile += 1;
            if self.dropped_volatile.is_power_of_two() {
                tracing::debug!(
                    dropped = self.dropped_volatile,
                    "event buffer full: dropping volatile events"
                );
            }
        }
    }

    /// Ends a connection that dropped: no more requests on it, the transport
    /// aborted. In-flight requests stay pending for the resume.
    async fn teardown(&mut self, live: Live) {
        self.shared.set_link(Link::Down);
        let Live {
            rx,
            mut writer,
            writer_done,
            out,
            ..
        } = live;
        rx.abort();
        writer.abort();
        if !writer_done {
            // Once this returns the queue is gone, so a request that still
            // holds a sender fails to send instead of waiting for a reply.
            let _ = (&mut writer).await;
        }
        drop(out);
    }

    /// Ends the connection cleanly on close: queued frames are flushed, then
    /// the transport closes.
    async fn shutdown(&mut self, live: Live) {
        self.shared.fail_pending(&ClientError::Closed);
        let Live {
            mut rx,
            mut writer,
            writer_done,
            out,
            ..
        } = live;
        // With the link closed, this was the last queue sender besides
        // requests still sending; the writer then closes the transport.
        drop(out);
        if !writer_done
            && tokio::time::timeout(CLOSE_GRACE, &mut writer)
                .await
                .is_err()
        {
            writer.abort();
        }
        let _ = tokio::time::timeout(CLOSE_DRAIN, async {
            while let Ok(Some(_)) = rx.recv().await {}
        })
        .await;
        rx.abort();
    }

    /// Closes the client for good, telling the application why.
    async fn finish(&mut self, fatal: Option<ClientError>) {
        let by_user = *self.closed.borrow();
        if let Some(ClientError::Server { code, message, .. }) = fatal {
            tracing::warn!(code = error_code_name(code), %message, "reconnect refused; giving up");
            self.emit(Event::ServerError { code, message }).await;
        }
        self.shared.set_link(Link::Closed);
        self.shared.fail_pending(&ClientError::Closed);
        if by_user {
            // The application asked for this and may not be reading.
            let _ = self.events.try_send(Event::Closed);
        } else {
            self.emit(Event::Closed).await;
        }
        self.shared.mark_closed();
    }

    /// Reconnects: waits until `at` (after `GoAway`) or a jittered backoff,
    /// then handshakes with resume; a refused resume starts a fresh session.
    /// Returns the connection and whether it `(resumed, replayed,
    /// last_request_id)`; `Err` when the client closed (`None`) or the
    /// gateway refused for good.
    async fn reconnect(
        &mut self,
        mut at: Option<Instant>,
    ) -> Result<(RawConnection, bool, u32, u64), Option<ClientError>> {
        let shared = self.shared.clone();
        let config = &shared.config;
        let mut attempt: u32 = 0;
        loop {
            let wake = at.take().unwrap_or_else(|| {
                Instant::now()
                    + backoff::jittered(attempt, config.backoff_initial, config.backoff_max)
            });
            attempt = attempt.saturating_add(1);
            tokio::select! {
                biased;
                () = wait_closed(&mut self.closed) => return Err(None),
                () = tokio::time::sleep_until(wake) => {}
            }
            let resume = self.resume.clone();
            let result = tokio::select! {
                biased;
                () = wait_closed(&mut self.closed) => return Err(None),
                result = handshake(&shared, resume.as_ref()) => result,
            };
            match result {
                Ok((conn, welcomed)) => {
                    let resumed = resume.is_some() && welcomed.resumed;
                    let replayed = if resumed { welcomed.replayed } else { 0 };
                    let last_request_id = welcomed.last_request_id;
                    if !resumed {
                        // A fresh session numbers its events from 1.
                        self.seq.reset();
                        shared.last_seq.store(0, Ordering::Release);
                    }
                    self.adopt(welcomed);
                    return Ok((conn, resumed, replayed, last_request_id));
                }
                Err(ClientError::Server {
                    code: ErrorCode::RESUME_FAILED,
                    ..
                }) if resume.is_some() => {
                    tracing::info!("resume refused; starting a fresh session");
                    self.resume = None;
                    at = Some(Instant::now());
                }
                Err(e) if is_fatal(&e) => return Err(Some(e)),
                Err(e) => tracing::debug!(attempt, error = %e, "reconnect attempt failed"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_and_version_refusals_are_fatal() {
        let server = |code| ClientError::Server {
            code,
            message: String::new(),
            retryable: false,
        };
        for code in [
            ErrorCode::TOKEN_MISSING,
            ErrorCode::TOKEN_INVALID,
            ErrorCode::TOKEN_EXPIRED,
            ErrorCode::ACCOUNT_DISABLED,
            ErrorCode::UNSUPPORTED_VERSION,
        ] {
            assert!(is_fatal(&server(code)));
        }
        for code in [
            ErrorCode::RESUME_FAILED,
            ErrorCode::INTERNAL,
            ErrorCode::RATE_LIMITED,
        ] {
            assert!(!is_fatal(&server(code)));
        }
        assert!(!is_fatal(&ClientError::Timeout));
    }

    #[test]
    fn welcome_is_parsed() {
        let mut enc = huddle_schema::Encoder::new();
        let roles = vec!["admin".to_string()];
        let buf = enc.welcome(
            1,
            &huddle_schema::encode::WelcomeFields {
                session_id: "s1",
                user_id: "u1",
                username: "ann",
                display_name: "Ann",
                roles: &roles,
                resume_token: "rt",
                heartbeat_ms: 15_000,
                heartbeat_timeout_ms: 45_000,
                server_time_ms: 1,
                resumed: true,
                replayed: 4,
                max_frame_bytes: 65_536,
                resume_window_ms: 30_000,
                last_request_id: 9,
            },
        );
        let frame = verify_frame(&buf, 1 << 16).unwrap();
        let w = parse_welcome(&frame.body_as_welcome().unwrap()).unwrap();
        assert_eq!(w.session.session_id, "s1");
        assert_eq!(w.session.user_id, "u1");
        assert_eq!(w.session.username, "ann");
        assert_eq!(w.session.display_name, "Ann");
        assert_eq!(w.session.roles, roles);
        assert_eq!(w.session.heartbeat_ms, 15_000);
        assert_eq!(w.session.heartbeat_timeout_ms, 45_000);
        assert_eq!(w.session.resume_window_ms, 30_000);
        assert_eq!(w.session.max_frame_bytes, 65_536);
        assert_eq!(w.resume_token, "rt");
        assert!(w.resumed);
        assert_eq!(w.replayed, 4);
        assert_eq!(w.last_request_id, 9);
    }

    #[test]
    fn zero_durations_disable_timers() {
        assert_eq!(nonzero_ms(0), None);
        assert_eq!(nonzero_ms(5), Some(Duration::from_millis(5)));
    }
}
