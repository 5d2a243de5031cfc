//! The high-level SDK: [`Client`] (typed requests), [`EventStream`] (server
//! events and connection changes) and their configuration.
//!
//! This module owns the public API and the request plumbing: request ids,
//! matching replies to requests, timeouts and reply decoding. It never touches
//! a socket: the connection task in `driver` reads and writes the transport,
//! sends heartbeats and reconnects.
//!
//! # Backpressure
//!
//! Every queue is bounded:
//! - requests wait for room in the connection's outbound queue (within their
//!   timeout);
//! - when the [`EventStream`] buffer is full, the connection task stops
//!   reading for reliable events and connection events until the application
//!   drains it (the transport's flow control then pushes back to the gateway,
//!   which may end with `SLOW_CONSUMER` and a resume that replays what was
//!   missed); volatile events (`seq` 0) are dropped instead. Nothing reliable
//!   is ever dropped silently. While the reader waits, replies are not read
//!   either, so requests may time out.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use huddle_schema::encode::PresenceEntry;
use huddle_schema::wire::{ErrorCode, Frame};
use huddle_schema::{verify_frame, Encoder};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::driver;
use crate::error::ClientError;
use crate::transport::{self, TlsOptions, MAX_INBOUND_FRAME_BYTES};

/// How to reach a gateway and how to behave when the connection drops.
///
/// Its `Debug` output leaves the token out.
#[derive(Clone)]
pub struct ClientConfig {
    /// `ws://HOST:PORT/`, `wss://…` or `quic://HOST:PORT`.
    pub url: String,
    /// The JWT sent in `Hello`.
    pub token: String,
    /// Sent as `Hello.client`; defaults to `huddle-client-rust/<version>`.
    pub client_name: String,
    /// How long a request waits for its reply (default 5 s).
    pub request_timeout: Duration,
    /// How long dialing plus the `Hello`/`Welcome` handshake may take
    /// (default 10 s).
    pub connect_timeout: Duration,
    /// Reconnect (and resume) after a drop (default true).
    pub reconnect: bool,
    /// First reconnect delay (default 200 ms); doubles per failed attempt.
    pub backoff_initial: Duration,
    /// Largest reconnect delay (default 10 s).
    pub backoff_max: Duration,
    /// Which server certificates to trust for `wss://` and `quic://`.
    pub tls: TlsOptions,
    /// Accept volatile events as QUIC datagrams (default true; QUIC only).
    pub datagrams: bool,
    /// Bind the local end of the connection to this address.
    pub local_addr: Option<IpAddr>,
    /// Capacity of the [`EventStream`] buffer (default 1024; at least 1).
    pub event_buffer: usize,
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("url", &self.url)
            .field("token", &"<redacted>")
            .field("client_name", &self.client_name)
            .field("request_timeout", &self.request_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("reconnect", &self.reconnect)
            .field("backoff_initial", &self.backoff_initial)
            .field("backoff_max", &self.backoff_max)
            .field("tls", &self.tls)
            .field("datagrams", &self.datagrams)
            .field("local_addr", &self.local_addr)
            .field("event_buffer", &self.event_buffer)
            .finish()
    }
}

impl ClientConfig {
    /// A configuration with every default filled in.
    pub fn new(url: impl Into<String>, token: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            token: token.into(),
            client_name: concat!("huddle-client-rust/", env!("CARGO_PKG_VERSION")).into(),
            request_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(10),
            reconnect: true,
            backoff_initial: Duration::from_millis(200),
            backoff_max: Duration::from_secs(10),
            tls: TlsOptions::default(),
            datagrams: true,
            local_addr: None,
            event_buffer: 1024,
        }
    }
}

/// The session the gateway granted, from its latest `Welcome`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionInfo {
    pub session_id: String,
    pub user_id: String,
    pub username: String,
    pub display_name: String,
    pub roles: Vec<String>,
    /// The client pings at least this often.
    pub heartbeat_ms: u32,
    /// Silence after which either side gives the connection up.
    pub heartbeat_timeout_ms: u32,
    /// How long a dropped session can be resumed.
    pub resume_window_ms: u32,
    /// Largest frame the gateway accepts.
    pub max_frame_bytes: u32,
}

/// The reply to an echo request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EchoReply {
    pub payload: Vec<u8>,
    /// The shard that handled the request.
    pub shard: u16,
    /// Connections the event was queued to (0 without a recipient).
    pub delivered: u32,
}

/// Something that happened on the session, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// An `EchoEvent`. `seq` is its reliable sequence number, or 0 when it
    /// was volatile. A reliable event is delivered exactly once, replays
    /// included.
    Echo {
        from_user: String,
        payload: Vec<u8>,
        seq: u64,
    },
    /// `chat:message`: a message in a joined chat (the sender's own too).
    ChatMessage {
        message: crate::chat::ChatMessage,
        seq: u64,
    },
    /// `user:status`: a user this session follows changed status (or came
    /// online, or went offline).
    UserStatus {
        user_id: String,
        status: huddle_schema::wire::PresenceStatus,
        text: String,
        updated_at_ms: i64,
        seq: u64,
    },
    /// `chat:message:updated`: a message was edited.
    ChatMessageUpdated {
        message: crate::chat::ChatMessage,
        seq: u64,
    },
    /// `chat:message:deleted`: a message became a tombstone.
    ChatMessageDeleted {
        chat_id: String,
        message_id: u64,
        deleted_by: String,
        seq: u64,
    },
    /// `chat:member:joined` / `chat:member:left`.
    ChatMember {
        chat_id: String,
        user: crate::chat::ChatUser,
        joined: bool,
        seq: u64,
    },
    /// `chat:typing` (volatile: may be shed under pressure).
    ChatTyping {
        chat_id: String,
        user: crate::chat::ChatUser,
        typing: bool,
    },
    /// `chat:read`: another member's read cursor moved.
    ChatRead {
        chat_id: String,
        user_id: String,
        read_up_to: u64,
        seq: u64,
    },
    /// `friend:update`: this user's relation to `user_id` changed (a request
    /// sent or received, accepted, rejected, cancelled, a friend removed, a
    /// block or unblock by this user). `relation` is as this user sees it.
    FriendUpdate {
        user_id: String,
        relation: huddle_schema::wire::Relation,
        since_ms: i64,
        seq: u64,
    },
    /// `notification:new`: a notification for this user (every session of
    /// the user gets it).
    Notification {
        notification: crate::social::Notification,
        seq: u64,
    },
    /// `notification:count`: this user's notification counts after any
    /// change (new, read, deleted).
    NotificationCount { total: u32, unread: u32, seq: u64 },
    /// A lobby this user is in (or was just kicked from) changed:
    /// `lobby:member:joined`, `lobby:member:left`, `lobby:host:changed`,
    /// `lobby:member:ready`, `lobby:ready` (everyone ready), back to open,
    /// `lobby:kicked` (this user), a member kicked, `lobby:update` and
    /// started (with the new state), closed, a member disconnected or
    /// reconnected; see [`crate::lobby::LobbyEvent`] for what each kind
    /// carries. Every session of every member gets it. `event.version` is
    /// bumped per change: a gap means events were missed, so call
    /// [`Client::lobby_get`] for a snapshot.
    Lobby {
        event: crate::lobby::LobbyEvent,
        seq: u64,
    },
    /// A matchmaking ticket of this user changed: `matchmaking:status`
    /// (volatile, to subscribed sessions), `found` (a ready check),
    /// `matched` (with the match's lobby and team), `cancelled`, `timeout`,
    /// requeued, removed, or a party ticket started by the lobby's host; see
    /// [`crate::matchmaking::MatchmakingEvent`].
    Matchmaking {
        event: crate::matchmaking::MatchmakingEvent,
        seq: u64,
    },
    /// The connection dropped; the client is reconnecting unless a
    /// [`Event::Closed`] follows. In-flight requests keep waiting (within
    /// their timeout): after a resume each gets its one reply, replayed or
    /// answered to a re-send; they fail with [`ClientError::Disconnected`]
    /// only when the session cannot be resumed or reconnecting is off.
    /// `close` is how the gateway closed it (e.g. `SLOW_CONSUMER` as close
    /// code 4108), when it did.
    Disconnected {
        reason: String,
        close: Option<crate::transport::PeerClose>,
    },
    /// Connected again. With `resumed`, the session carried on and `replayed`
    /// missed events and replies follow; otherwise a [`Event::SessionReset`]
    /// came first.
    Reconnected { resumed: bool, replayed: u32 },
    /// Resuming failed and the client started a fresh session: events of the
    /// old one may have been missed and requests in flight failed with
    /// [`ClientError::Disconnected`] (they may or may not have been carried
    /// out), so re-sync application state (re-query presence, rejoin, look
    /// for the lobby you were creating, …). [`Event::Reconnected`] follows.
    SessionReset,
    /// The gateway is going away; the client reconnects (with resume) after
    /// `reconnect_after_ms` plus a random extra of its own (up to half as
    /// much again, at least up to 250 ms), so clients told the same delay
    /// do not return at once. [`Event::Disconnected`] follows when the
    /// connection closes.
    GoAway {
        reason: String,
        reconnect_after_ms: u32,
    },
    /// A connection-level error from the gateway (an `Error` with
    /// `request_id` 0), or the error that stopped reconnection (just before
    /// [`Event::Closed`]).
    ServerError { code: ErrorCode, message: String },
    /// The client is closed for good: [`Client::close`] was called, every
    /// [`Client`] handle was dropped, reconnecting is off, or the gateway
    /// refused the token. The last event.
    Closed,
}

/// The events of one client, in order. See the module docs for what happens
/// when it is not drained. Dropping it discards later events; the connection
/// stays up for requests.
pub struct EventStream {
    /// Bounded by [`ClientConfig::event_buffer`]. When full, the connection
    /// task waits for room for reliable and connection events (it stops
    /// reading from the gateway meanwhile) and drops volatile events.
    rx: mpsc::Receiver<Event>,
}

impl fmt::Debug for EventStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventStream")
            .field("buffered", &self.rx.len())
            .finish()
    }
}

impl EventStream {
    /// The next event; `None` after [`Event::Closed`].
    pub async fn next(&mut self) -> Option<Event> {
        self.rx.recv().await
    }

    /// The next event if one is buffered, without waiting.
    pub fn try_next(&mut self) -> Option<Event> {
        self.rx.try_recv().ok()
    }
}

/// The state of the link to the gateway, as requests see it.
pub(crate) enum Link {
    /// Connected: frames go to the connection's outbound queue.
    Up(mpsc::Sender<Bytes>),
    /// Reconnecting: requests fail with [`ClientError::Disconnected`].
    Down,
    /// Closed for good: requests fail with [`ClientError::Closed`].
    Closed,
}

/// Where a request's caller waits for its raw reply frame (or its failure).
type ReplyReceiver = oneshot::Receiver<Result<Bytes, ClientError>>;

/// A request waiting for its reply: the reader completes it with the raw
/// reply frame, or the connection task fails it.
pub(crate) struct Pending {
    reply: oneshot::Sender<Result<Bytes, ClientError>>,
    /// The request as sent, for sending it again on a resumed session when
    /// the gateway never read it.
    frame: Bytes,
}

/// State shared by every [`Client`] handle and the connection task.
pub(crate) struct Shared {
    pub(crate) config: ClientConfig,
    next_request_id: AtomicU64,
    pending: Mutex<HashMap<u64, Pending>>,
    link: Mutex<Link>,
    session: Mutex<SessionInfo>,
    max_frame_bytes: AtomicU32,
    /// Highest `seq` delivered: to the [`EventStream`] (reliable events) or
    /// to a waiting request (replies).
    pub(crate) last_seq: AtomicU64,
    /// Set once the client is closing for good.
    pub(crate) closed: watch::Sender<bool>,
    /// Bumped by [`Client::drop_connection_for_tests`].
    pub(crate) drop_requests: watch::Sender<u64>,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    fn new(config: ClientConfig) -> Self {
        Self {
            config,
            next_request_id: AtomicU64::new(1),
            pending: Mutex::new(HashMap::new()),
            link: Mutex::new(Link::Down),
            session: Mutex::new(SessionInfo::default()),
            max_frame_bytes: AtomicU32::new(0),
            last_seq: AtomicU64::new(0),
            closed: watch::Sender::new(false),
            drop_requests: watch::Sender::new(0),
        }
    }

    /// A fresh, non-zero request id.
    pub(crate) fn next_request_id(&self) -> u64 {
        match self.next_request_id.fetch_add(1, Ordering::Relaxed) {
            // Skip 0 after a (theoretical) wrap-around.
            0 => self.next_request_id.fetch_add(1, Ordering::Relaxed),
            id => id,
        }
    }

    pub(crate) fn set_session(&self, session: SessionInfo) {
        self.max_frame_bytes
            .store(session.max_frame_bytes, Ordering::Relaxed);
        *lock(&self.session) = session;
    }

    /// Publishes the link state; a closed link stays closed.
    pub(crate) fn set_link(&self, link: Link) {
        let mut current = lock(&self.link);
        if !matches!(*current, Link::Closed) {
            *current = link;
        }
    }

    /// Opens the link to a new connection's queue `out` and returns the
    /// requests to write on it before anything else: on a resumed session,
    /// those in flight with an id above `resumed_after` (the gateway's
    /// `Welcome.last_request_id`: it never read them), in id order; none
    /// on a fresh connection (`None`).
    ///
    /// Requests are registered under the same lock ([`Shared::send_request`]),
    /// so each one in flight is either re-sent here or queued on `out` by its
    /// caller, never lost in between nor sent twice.
    pub(crate) fn open_link(
        &self,
        out: mpsc::Sender<Bytes>,
        resumed_after: Option<u64>,
    ) -> Vec<Bytes> {
        let mut link = lock(&self.link);
        if matches!(*link, Link::Closed) {
            return Vec::new();
        }
        *link = Link::Up(out);
        let Some(last_read) = resumed_after else {
            return Vec::new();
        };
        let pending = lock(&self.pending);
        let mut unread: Vec<(u64, Bytes)> = pending
            .iter()
            .filter(|(id, _)| **id > last_read)
            .map(|(id, p)| (*id, p.frame.clone()))
            .collect();
        unread.sort_unstable_by_key(|(id, _)| *id);
        unread.into_iter().map(|(_, frame)| frame).collect()
    }

    /// Registers and queues one request on the connection whose queue `out`
    /// reserved `permit`: picks its id, builds it, records it as pending and
    /// sends it, all under the link lock, so requests enter the queue in id
    /// order (the gateway's `last_request_id` then says exactly which ones
    /// it read). `Ok(None)` when a newer connection replaced `out` meanwhile
    /// (ask again on that one); `build` is only called on success.
    fn send_request<F>(
        &self,
        out: &mpsc::Sender<Bytes>,
        permit: mpsc::Permit<'_, Bytes>,
        build: &mut Option<F>,
    ) -> Result<Option<(u64, ReplyReceiver)>, ClientError>
    where
        F: FnOnce(&mut Encoder, u64) -> Bytes,
    {
        let link = lock(&self.link);
        match &*link {
            Link::Up(current) if current.same_channel(out) => {}
            Link::Up(_) => return Ok(None),
            Link::Down => return Err(ClientError::Disconnected),
            Link::Closed => return Err(ClientError::Closed),
        }
        let Some(build) = build.take() else {
            return Err(ClientError::Protocol("request built twice".into()));
        };
        let request_id = self.next_request_id();
        let frame = encode(|enc| build(enc, request_id));
        let max = self.max_frame_bytes.load(Ordering::Relaxed) as usize;
        if max > 0 && frame.len() > max {
            return Err(ClientError::Protocol(format!(
                "a {}-byte request exceeds the session's {max}-byte frame limit",
                frame.len()
            )));
        }
        let (reply, rx) = oneshot::channel();
        // Registered before sending: the reply may come back at once.
        let pending = Pending {
            reply,
            frame: frame.clone(),
        };
        lock(&self.pending).insert(request_id, pending);
        permit.send(frame);
        drop(link);
        Ok(Some((request_id, rx)))
    }

    /// Marks the client closed: requests fail from now on and the connection
    /// task winds down.
    pub(crate) fn mark_closed(&self) {
        *lock(&self.link) = Link::Closed;
        self.closed.send_replace(true);
    }

    fn outbound(&self) -> Result<mpsc::Sender<Bytes>, ClientError> {
        match &*lock(&self.link) {
            Link::Up(tx) => Ok(tx.clone()),
            Link::Down => Err(ClientError::Disconnected),
            Link::Closed => Err(ClientError::Closed),
        }
    }

    /// Hands a reply frame to the request waiting for it, if any (it may have
    /// timed out).
    pub(crate) fn complete(&self, request_id: u64, reply: Bytes) -> bool {
        let pending = lock(&self.pending).remove(&request_id);
        match pending {
            Some(p) => {
                let _ = p.reply.send(Ok(reply));
                true
            }
            None => false,
        }
    }

    /// Fails every in-flight request with `err`.
    pub(crate) fn fail_pending(&self, err: &ClientError) {
        let drained: Vec<Pending> = lock(&self.pending).drain().map(|(_, p)| p).collect();
        for p in drained {
            let _ = p.reply.send(Err(err.clone()));
        }
    }
}

/// Removes a request from the pending table when its future ends, however it
/// ends (reply, timeout, cancellation).
struct PendingGuard<'a> {
    shared: &'a Shared,
    request_id: u64,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        lock(&self.shared.pending).remove(&self.request_id);
    }
}

thread_local! {
    /// One frame builder per thread, shared by every client on it.
    static ENCODER: std::cell::RefCell<Encoder> = std::cell::RefCell::new(Encoder::new());
}

/// Builds a frame with this thread's encoder.
pub(crate) fn encode(build: impl FnOnce(&mut Encoder) -> Bytes) -> Bytes {
    ENCODER.with(|cell| match cell.try_borrow_mut() {
        Ok(mut encoder) => build(&mut encoder),
        // Unreachable in practice (no re-entrancy), but never panic.
        Err(_) => build(&mut Encoder::new()),
    })
}

/// The part of a [`Client`] whose drop closes the connection.
struct Handle {
    shared: Arc<Shared>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        // The last `Client` is gone: nobody can use the connection any more.
        self.shared.mark_closed();
    }
}

/// A connection to a Huddle gateway. Cheap to clone: every clone is a handle
/// to the same connection, which closes when the last one is dropped (or on
/// [`Client::close`]).
///
/// Must be created inside a Tokio runtime; the connection runs on a task of
/// its own.
#[derive(Clone)]
pub struct Client {
    handle: Arc<Handle>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("url", &self.handle.shared.config.url)
            .field("session_id", &lock(&self.handle.shared.session).session_id)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Connects, sends `Hello` and waits for `Welcome`. A refusal comes back
    /// as [`ClientError::Server`] (`TOKEN_*`, `ACCOUNT_DISABLED`, …); the first
    /// connection is not retried.
    pub async fn connect(config: ClientConfig) -> Result<(Client, EventStream), ClientError> {
        transport::parse_url(&config.url)?;
        let shared = Arc::new(Shared::new(config));
        let (conn, welcomed) = driver::handshake(&shared, None).await?;
        let (events_tx, events_rx) = mpsc::channel(shared.config.event_buffer.max(1));
        let task = driver::start(shared.clone(), conn, welcomed, events_tx);
        let client = Client {
            handle: Arc::new(Handle {
                shared,
                task: Mutex::new(Some(task)),
            }),
        };
        Ok((client, EventStream { rx: events_rx }))
    }

    fn shared(&self) -> &Shared {
        &self.handle.shared
    }

    /// The current session (updated after each reconnect).
    pub fn session(&self) -> SessionInfo {
        lock(&self.shared().session).clone()
    }

    /// The highest reliable `seq` delivered to the [`EventStream`].
    pub fn last_seq(&self) -> u64 {
        self.shared().last_seq.load(Ordering::Acquire)
    }

    /// Echoes `payload` through a shard.
    pub async fn echo(&self, payload: &[u8]) -> Result<EchoReply, ClientError> {
        let reply = self
            .request(|enc, id| enc.echo_request(id, payload, None, false))
            .await?;
        decode_echo_reply(&reply)
    }

    /// Echoes `payload` and delivers it as an `EchoEvent` to every connection
    /// of `to_user` (reliably unless `volatile`).
    pub async fn echo_to(
        &self,
        to_user: &str,
        payload: &[u8],
        volatile: bool,
    ) -> Result<EchoReply, ClientError> {
        let reply = self
            .request(|enc, id| enc.echo_request(id, payload, Some(to_user), volatile))
            .await?;
        decode_echo_reply(&reply)
    }

    /// The presence of up to 500 users.
    pub async fn presence(&self, user_ids: &[&str]) -> Result<Vec<PresenceEntry>, ClientError> {
        let reply = self
            .request(|enc, id| enc.presence_query(id, user_ids))
            .await?;
        decode_presence_list(&reply)
    }

    /// `user:status`: ONLINE, AWAY, BUSY or IN_GAME with an optional text
    /// (≤ 128 characters); `invisible` shows this user OFFLINE to everyone.
    /// Followers are told.
    pub async fn set_status(
        &self,
        status: huddle_schema::wire::PresenceStatus,
        text: &str,
        invisible: bool,
    ) -> Result<(), ClientError> {
        let reply = self
            .request(|enc, id| enc.set_status(id, status, text, invisible, false))
            .await?;
        let frame = reply_frame(&reply)?;
        frame
            .body_as_status_set()
            .map(|_| ())
            .ok_or_else(|| unexpected(&frame, "StatusSet"))
    }

    /// Follow up to 500 users' status for this session: returns their
    /// presence now; changes arrive as [`Event::UserStatus`].
    pub async fn follow(&self, user_ids: &[&str]) -> Result<Vec<PresenceEntry>, ClientError> {
        let reply = self
            .request(|enc, id| enc.follow(id, user_ids, true))
            .await?;
        decode_presence_list(&reply)
    }

    /// Stop following these users' status.
    pub async fn unfollow(&self, user_ids: &[&str]) -> Result<(), ClientError> {
        let reply = self
            .request(|enc, id| enc.follow(id, user_ids, false))
            .await?;
        decode_presence_list(&reply).map(|_| ())
    }

    /// Sends one request and returns its verified reply frame. The reply may
    /// be an `Error`; [`reply_frame`] turns that into [`ClientError::Server`].
    ///
    /// Fails fast with [`ClientError::Disconnected`] while reconnecting, and
    /// with [`ClientError::Protocol`] when the frame exceeds the session's
    /// `max_frame_bytes` (the gateway would close the connection). Once
    /// sent, a drop does not fail it: after a resume its reply is replayed,
    /// or it is sent again (same id) when the gateway says it never read it;
    /// it fails with [`ClientError::Disconnected`] only if the session could
    /// not be resumed. The timeout covers all of it.
    pub(crate) async fn request(
        &self,
        build: impl FnOnce(&mut Encoder, u64) -> Bytes,
    ) -> Result<Bytes, ClientError> {
        let shared = self.shared();
        let mut build = Some(build);
        let exchange = async {
            let (request_id, rx) = loop {
                let out = shared.outbound()?;
                // Room first (waiting, within the timeout), then the id: ids
                // enter the queue in order.
                let permit = out.reserve().await.map_err(|_| ClientError::Disconnected)?;
                if let Some(sent) = shared.send_request(&out, permit, &mut build)? {
                    break sent;
                }
            };
            // `out` is gone with its iteration: nothing holds the queue open
            // while waiting (a clean close waits for every sender to go).
            let _guard = PendingGuard { shared, request_id };
            rx.await.unwrap_or(Err(ClientError::Disconnected))
        };
        tokio::time::timeout(shared.config.request_timeout, exchange)
            .await
            .unwrap_or(Err(ClientError::Timeout))
    }

    /// Sends a frame that gets no reply (a signal such as `chat:typing`).
    pub(crate) async fn signal(
        &self,
        build: impl FnOnce(&mut Encoder) -> Bytes,
    ) -> Result<(), ClientError> {
        let frame = encode(build);
        let out = self.shared().outbound()?;
        out.send(frame).await.map_err(|_| ClientError::Disconnected)
    }

    /// Closes the connection cleanly and stops reconnecting. In-flight
    /// requests fail with [`ClientError::Closed`]; the event stream ends with
    /// [`Event::Closed`] (unless its buffer is full) and then `None`. Waits
    /// (a couple of seconds at most) for the connection task to finish.
    pub async fn close(&self) {
        self.shared().mark_closed();
        let task = lock(&self.handle.task).take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }

    /// **Test hook.** Drops the current transport abruptly (no close
    /// handshake; QUIC close code 1), as a network failure would, so that
    /// reconnect and resume kick in. Does nothing while disconnected.
    #[doc(hidden)]
    pub fn drop_connection_for_tests(&self) {
        self.shared()
            .drop_requests
            .send_modify(|n| *n = n.wrapping_add(1));
    }
}

/// Verifies a reply frame and turns an `Error` reply into
/// [`ClientError::Server`].
pub(crate) fn reply_frame(buf: &[u8]) -> Result<Frame<'_>, ClientError> {
    let frame = verify_frame(buf, MAX_INBOUND_FRAME_BYTES)
        .map_err(|e| ClientError::Protocol(format!("bad reply: {e}")))?;
    if let Some(err) = frame.body_as_error() {
        return Err(ClientError::from_wire(&err));
    }
    Ok(frame)
}

pub(crate) fn unexpected(frame: &Frame<'_>, wanted: &str) -> ClientError {
    ClientError::Protocol(format!(
        "expected {wanted} in reply, got {:?}",
        frame.body_type()
    ))
}

fn decode_echo_reply(buf: &[u8]) -> Result<EchoReply, ClientError> {
    let frame = reply_frame(buf)?;
    let reply = frame
        .body_as_echo_reply()
        .ok_or_else(|| unexpected(&frame, "EchoReply"))?;
    Ok(EchoReply {
        payload: reply
            .payload()
            .map(|p| p.bytes().to_vec())
            .unwrap_or_default(),
        shard: reply.shard(),
        delivered: reply.delivered(),
    })
}

fn decode_presence_list(buf: &[u8]) -> Result<Vec<PresenceEntry>, ClientError> {
    let frame = reply_frame(buf)?;
    let list = frame
        .body_as_presence_list()
        .ok_or_else(|| unexpected(&frame, "PresenceList"))?;
    Ok(list
        .users()
        .map(|users| users.iter().map(presence_entry).collect())
        .unwrap_or_default())
}

/// One user's presence as the wire carries it (missing fields: defaults).
pub(crate) fn presence_entry(u: huddle_schema::wire::UserPresence<'_>) -> PresenceEntry {
    PresenceEntry {
        user_id: u.user_id().unwrap_or_default().to_owned(),
        status: u.status(),
        connections: u.connections(),
        last_active_ms: u.last_active_ms(),
        text: u.text().unwrap_or_default().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use huddle_schema::wire::PresenceStatus;

    #[test]
    fn config_defaults() {
        let c = ClientConfig::new("ws://127.0.0.1:7350", "jwt");
        assert_eq!(c.url, "ws://127.0.0.1:7350");
        assert_eq!(c.token, "jwt");
        assert!(c.client_name.starts_with("huddle-client-rust/"));
        assert_eq!(c.request_timeout, Duration::from_secs(5));
        assert_eq!(c.connect_timeout, Duration::from_secs(10));
        assert!(c.reconnect);
        assert_eq!(c.backoff_initial, Duration::from_millis(200));
        assert_eq!(c.backoff_max, Duration::from_secs(10));
        assert_eq!(c.tls, TlsOptions::default());
        assert!(c.datagrams);
        assert_eq!(c.local_addr, None);
        assert_eq!(c.event_buffer, 1024);
        assert!(
            !format!("{c:?}").contains("jwt"),
            "Debug must not leak the token"
        );
    }

    #[test]
    fn decodes_echo_replies_and_errors() {
        let mut enc = Encoder::new();
        let ok = enc.echo_reply(7, b"abc", 3, 2);
        assert_eq!(
            decode_echo_reply(&ok).unwrap(),
            EchoReply {
                payload: b"abc".to_vec(),
                shard: 3,
                delivered: 2
            }
        );
        let err = enc.error(7, ErrorCode::RATE_LIMITED, "slow down", true, false);
        assert_eq!(
            decode_echo_reply(&err).unwrap_err(),
            ClientError::Server {
                code: ErrorCode::RATE_LIMITED,
                message: "slow down".into(),
                retryable: true
            }
        );
        let wrong = enc.pong(7, 0);
        assert!(matches!(
            decode_echo_reply(&wrong),
            Err(ClientError::Protocol(_))
        ));
        assert!(matches!(
            decode_echo_reply(b"garbage"),
            Err(ClientError::Protocol(_))
        ));
    }

    #[test]
    fn decodes_presence_lists() {
        let mut enc = Encoder::new();
        let rows = vec![
            PresenceEntry {
                user_id: "u1".into(),
                status: PresenceStatus::ONLINE,
                connections: 2,
                last_active_ms: 5,
                text: "in a match".into(),
            },
            PresenceEntry {
                user_id: "u2".into(),
                status: PresenceStatus::OFFLINE,
                connections: 0,
                last_active_ms: 0,
                text: String::new(),
            },
        ];
        let buf = enc.presence_list(1, &rows);
        assert_eq!(decode_presence_list(&buf).unwrap(), rows);
    }

    #[test]
    fn request_ids_start_at_one_and_skip_zero() {
        let shared = Shared::new(ClientConfig::new("ws://x", "t"));
        assert_eq!(shared.next_request_id(), 1);
        assert_eq!(shared.next_request_id(), 2);
        shared.next_request_id.store(u64::MAX, Ordering::Relaxed);
        assert_eq!(shared.next_request_id(), u64::MAX);
        assert_eq!(shared.next_request_id(), 1);
    }

    #[test]
    fn pending_requests_fail_together() {
        let shared = Shared::new(ClientConfig::new("ws://x", "t"));
        let (tx1, mut rx1) = oneshot::channel();
        let (tx2, mut rx2) = oneshot::channel();
        let frame = Bytes::from_static(b"request");
        for (id, reply) in [(1, tx1), (2, tx2)] {
            let pending = Pending {
                reply,
                frame: frame.clone(),
            };
            lock(&shared.pending).insert(id, pending);
        }
        assert!(shared.complete(2, Bytes::from_static(b"r")));
        assert!(!shared.complete(2, Bytes::from_static(b"r")));
        shared.fail_pending(&ClientError::Disconnected);
        assert_eq!(rx1.try_recv().unwrap(), Err(ClientError::Disconnected));
        assert_eq!(rx2.try_recv().unwrap(), Ok(Bytes::from_static(b"r")));
    }
}
