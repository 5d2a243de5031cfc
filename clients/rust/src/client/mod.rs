//! The high-level SDK, on top of everything else in the crate: [`Client`]
//! (typed requests), [`EventStream`] (server events and connection changes),
//! and re-exports of their configuration ([`ClientConfig`]), session
//! ([`SessionInfo`]) and event ([`Event`]) types.
//!
//! This module owns connecting (start-up of the connection task), the
//! handles' lifetime, and the echo and presence requests; each child adds one
//! feature's requests to [`Client`] (`chat`, `social`, `lobby`,
//! `matchmaking`). The request plumbing (ids, reply matching, timeouts) is in
//! `shared`, the connection task in `driver`, the reply and event types in
//! the feature modules and `event`, all below it. It never touches a socket
//! itself.
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

mod chat;
mod lobby;
mod matchmaking;
mod social;

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use huddle_schema::encode::PresenceEntry;
use huddle_schema::Encoder;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

pub use crate::config::ClientConfig;
use crate::driver;
use crate::error::ClientError;
pub use crate::event::Event;
use crate::reply::{presence_entry, reply_frame, unexpected};
pub use crate::session::SessionInfo;
use crate::shared::{lock, Shared};
use crate::transport;

/// The reply to an echo request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EchoReply {
    /// The payload as sent.
    pub payload: Vec<u8>,
    /// The shard that handled the request.
    pub shard: u16,
    /// Connections the event was queued to (0 without a recipient).
    pub delivered: u32,
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
            .field("session_id", &self.handle.shared.session().session_id)
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
        self.shared().session()
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

    /// Sends one request and returns its verified reply frame (see
    /// `Shared::request` for how drops, resumes and the timeout apply).
    pub(crate) async fn request(
        &self,
        build: impl FnOnce(&mut Encoder, u64) -> Bytes,
    ) -> Result<Bytes, ClientError> {
        self.shared().request(build).await
    }

    /// Sends a frame that gets no reply (a signal such as `chat:typing`).
    pub(crate) async fn signal(
        &self,
        build: impl FnOnce(&mut Encoder) -> Bytes,
    ) -> Result<(), ClientError> {
        self.shared().signal(build).await
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

#[cfg(test)]
mod tests {
    use super::*;
    use huddle_schema::wire::{ErrorCode, PresenceStatus};

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
}
