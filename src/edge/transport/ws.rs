//! WebSocket transport: one binary message is one frame. Accepts plain TCP
//! (`ws://`) or TLS (`wss://`) connections, upgrades them with
//! tokio-tungstenite, and enforces the frame limit at the WebSocket layer.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use huddle_schema::{close_reason, CloseCode};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::error::CapacityError;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use crate::edge::session::{serve, FrameReader, FrameWriter, Inbound};
use crate::edge::Edge;
use crate::telemetry::metrics::TransportKind;

pub struct WsReader<S> {
    inner: SplitStream<WebSocketStream<S>>,
}

pub struct WsWriter<S> {
    inner: SplitSink<WebSocketStream<S>, Message>,
    /// A close frame went out (or was tried): later closes do nothing.
    closed: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> FrameReader for WsReader<S> {
    async fn recv(&mut self) -> Inbound {
        loop {
            return match self.inner.next().await {
                None | Some(Ok(Message::Close(_))) => Inbound::Closed,
                Some(Ok(Message::Binary(b))) => Inbound::Frame(b),
                Some(Ok(Message::Text(_))) => Inbound::NotBinary,
                Some(Ok(_)) => continue,
                Some(Err(WsError::Capacity(CapacityError::MessageTooLong { size, .. }))) => {
                    Inbound::TooLarge(Some(size))
                }
                Some(Err(WsError::ConnectionClosed | WsError::AlreadyClosed)) => Inbound::Closed,
                Some(Err(e)) => Inbound::Failed(e.to_string()),
            };
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> FrameWriter for WsWriter<S> {
    async fn send(&mut self, frames: &[Bytes]) -> io::Result<()> {
        for f in frames {
            self.inner
                .feed(Message::Binary(f.clone()))
                .await
                .map_err(io::Error::other)?;
        }
        self.inner.flush().await.map_err(io::Error::other)
    }

    fn send_unordered(&mut self, _frame: &Bytes) -> bool {
        false
    }

    /// Sends a close frame with `code`'s status and `reason`, then flushes
    /// it; both together get two seconds (a client that stopped reading may
    /// never take it).
    async fn close(&mut self, code: CloseCode, reason: &str) {
        if std::mem::replace(&mut self.closed, true) {
            return;
        }
        let frame = CloseFrame {
            code: code.ws_status().into(),
            reason: close_reason(reason).into(),
        };
        let goodbye = async {
            self.inner.send(Message::Close(Some(frame))).await?;
            self.inner.close().await
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), goodbye).await;
    }
}

/// Upgrade limits: frames over `max_frame` are refused by tungstenite itself
/// before they are buffered whole; the read buffer stays small
/// (`session.ws_read_buffer_bytes`) so an idle connection costs little memory.
fn ws_config(max_frame: usize, read_buffer: usize) -> WebSocketConfig {
    let mut c = WebSocketConfig::default();
    c.max_message_size = Some(max_frame);
    c.max_frame_size = Some(max_frame);
    c.read_buffer_size = read_buffer;
    // Coalesce a batch into few writes: frames gather up to 16 KiB before a
    // write, and the writer flushes once per batch.
    c.write_buffer_size = 16 * 1024;
    c.max_write_buffer_size = max_frame * 4 + 64 * 1024;
    c
}

async fn upgrade_and_serve<S>(edge: Arc<Edge>, stream: S)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let cfg = &edge.session;
    let upgrade = tokio_tungstenite::accept_async_with_config(
        stream,
        Some(ws_config(
            cfg.max_frame_bytes as usize,
            cfg.ws_read_buffer_bytes,
        )),
    );
    // Boxed: the upgrade is a large, short-lived state that would otherwise
    // size every idle connection's task.
    let Ok(Ok(ws)) = Box::pin(tokio::time::timeout(
        Duration::from_millis(cfg.handshake_timeout_ms.into()),
        upgrade,
    ))
    .await
    else {
        return;
    };
    let (sink, stream) = ws.split();
    serve(
        edge,
        WsReader { inner: stream },
        WsWriter {
            inner: sink,
            closed: false,
        },
        TransportKind::Ws,
    )
    .await;
}

/// Accepts WebSocket connections until shutdown.
pub async fn accept_loop(edge: Arc<Edge>, listener: TcpListener, tls: Option<TlsAcceptor>) {
    loop {
        let accepted = tokio::select! {
            _ = edge.stop_accepting.cancelled() => break,
            a = listener.accept() => a,
        };
        let (tcp, _) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Counted from accept, handshakes included, so slow handshakes
        // cannot run the process out of file descriptors.
        let Ok(permit) = edge.connection_permits.clone().try_acquire_owned() else {
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let edge2 = edge.clone();
        match &tls {
            None => {
                edge.tracker.spawn(async move {
                    upgrade_and_serve(edge2, tcp).await;
                    drop(permit);
                });
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                edge.tracker.spawn(async move {
                    let tls = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp));
                    if let Ok(Ok(stream)) = Box::pin(tls).await {
                        upgrade_and_serve(edge2, stream).await;
                    }
                    drop(permit);
                });
            }
        }
    }
}
