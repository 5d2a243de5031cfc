//! The state every [`Client`](crate::Client) handle shares with its
//! connection task ([`Shared`]), and the request plumbing on it: request ids,
//! the table of requests waiting for their reply, the link to the current
//! connection's outbound queue, timeouts, and the per-thread frame builder.
//!
//! It owns no task and never touches a socket: the driver (above it) reads
//! and writes the transport and completes or fails pending requests; the
//! client (above both) sends through [`Shared::request`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use huddle_schema::Encoder;
use tokio::sync::{mpsc, oneshot, watch};

use crate::config::ClientConfig;
use crate::error::ClientError;
use crate::session::SessionInfo;

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

/// State shared by every [`Client`](crate::Client) handle and the
/// connection task.
pub(crate) struct Shared {
    pub(crate) config: ClientConfig,
    next_request_id: AtomicU64,
    pending: Mutex<HashMap<u64, Pending>>,
    link: Mutex<Link>,
    session: Mutex<SessionInfo>,
    max_frame_bytes: AtomicU32,
    /// Highest `seq` delivered: to the [`EventStream`](crate::EventStream)
    /// (reliable events) or to a waiting request (replies).
    pub(crate) last_seq: AtomicU64,
    /// Set once the client is closing for good.
    pub(crate) closed: watch::Sender<bool>,
    /// Bumped by
    /// [`Client::drop_connection_for_tests`](crate::Client::drop_connection_for_tests).
    pub(crate) drop_requests: watch::Sender<u64>,
}

/// Locks `m`, carrying on after a panic elsewhere poisoned it (the state
/// behind every lock here stays consistent between statements).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    /// Fresh state for a client about to connect: link down, no session.
    pub(crate) fn new(config: ClientConfig) -> Self {
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

    /// The current session (updated after each reconnect).
    pub(crate) fn session(&self) -> SessionInfo {
        lock(&self.session).clone()
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

    /// Sends one request and returns its verified reply frame. The reply may
    /// be an `Error`; [`crate::reply::reply_frame`] turns that into
    /// [`ClientError::Server`].
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
        let mut build = Some(build);
        let exchange = async {
            let (request_id, rx) = loop {
                let out = self.outbound()?;
                // Room first (waiting, within the timeout), then the id: ids
                // enter the queue in order.
                let permit = out.reserve().await.map_err(|_| ClientError::Disconnected)?;
                if let Some(sent) = self.send_request(&out, permit, &mut build)? {
                    break sent;
                }
            };
            // `out` is gone with its iteration: nothing holds the queue open
            // while waiting (a clean close waits for every sender to go).
            let _guard = PendingGuard {
                shared: self,
                request_id,
            };
            rx.await.unwrap_or(Err(ClientError::Disconnected))
        };
        tokio::time::timeout(self.config.request_timeout, exchange)
            .await
            .unwrap_or(Err(ClientError::Timeout))
    }

    /// Sends a frame that gets no reply (a signal such as `chat:typing`).
    pub(crate) async fn signal(
        &self,
        build: impl FnOnce(&mut Encoder) -> Bytes,
    ) -> Result<(), ClientError> {
        let frame = encode(build);
        let out = self.outbound()?;
        out.send(frame).await.map_err(|_| ClientError::Disconnected)
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

#[cfg(test)]
mod tests {
    use super::*;

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
