//! The connection shell: one task per client connection, the same for every
//! transport. It runs the handshake (Hello → Welcome or Error), verifies every
//! inbound frame, enforces the frame, malformed-frame and request-rate limits,
//! keeps the heartbeat, routes requests to their shards (recording each one
//! read in the outbox, for `Welcome.last_request_id` after a drop), and
//! drains the session's outbox to the socket in batches.
//!
//! It never touches engine state: everything keyed goes to the owning shard
//! as a message. Transports plug in through [`FrameReader`] / [`FrameWriter`].
//!
//! # Layout
//! - this file: [`serve`], the transport traits, what the parts share.
//! - [`handshake`]: Hello → Welcome; [`handshake::parse_hello`] holds every
//!   check that needs no authenticator, callable without sockets.
//! - `connection`: the steady state — reads, verification, limits,
//!   heartbeats, batched writes — and how a connection ends.
//! - `route`: the one match over [`crate::edge::request::Request`] and the
//!   one send-or-busy helper every request goes through.
//! - `scatter`: queries answered by several shards (unread counts, presence).
//! - `social`, `lobby`, `matchmaking`: those requests → engine commands.

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use huddle_schema::wire::ErrorCode;
use huddle_schema::{CloseCode, Encoder};
use tokio::sync::Notify;
use tokio::time::timeout;

use crate::core::engine::chat::Author;
use crate::core::engine::{SessionId, UserId};
use crate::core::outbox::Outbox;
use crate::edge::Edge;
use crate::telemetry::metrics::{metrics, TransportKind};

mod connection;
pub mod handshake;
mod lobby;
mod matchmaking;
mod route;
mod scatter;
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
    edge: Arc<Edge>,
    mut rd: R,
    mut wr: W,
    kind: TransportKind,
) {
    metrics().connection_opened(kind);
    // The handshake and the goodbye are boxed: they are large, short-lived
    // states, and inline they would size every idle connection's task.
    if let Some(attached) = Box::pin(handshake::handshake(&edge, &mut rd, &mut wr)).await {
        let (end, joined) = connection::run(&edge, &attached, &mut rd, &mut wr).await;
        Box::pin(connection::finish(&edge, &attached, end, joined, &mut wr)).await;
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

/// How long a last frame (an error, GoAway) may take to leave before the
/// connection is closed anyway.
const FINAL_WRITE: Duration = Duration::from_secs(2);
