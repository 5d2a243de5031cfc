//! QUIC transport (ALPN `huddle/1`): the client's first bidirectional stream
//! is the control stream of length-prefixed frames (4-byte big-endian length);
//! volatile events go out as QUIC datagrams when the client accepts them and
//! they fit.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use bytes::{BufMut, BytesMut};
use futures_util::StreamExt;
use huddle_schema::{close_reason, CloseCode};
use quinn::{Connection, ConnectionError, Endpoint, RecvStream, SendStream};
use tokio_util::codec::{FramedRead, LengthDelimitedCodec, LengthDelimitedCodecError};

use crate::edge::session::{serve, FrameReader, FrameWriter, Inbound};
use crate::edge::Edge;
use crate::telemetry::metrics::TransportKind;

pub struct QuicReader {
    conn: Connection,
    inner: FramedRead<RecvStream, LengthDelimitedCodec>,
}

pub struct QuicWriter {
    conn: Connection,
    /// Written directly: a framed writer would keep an 8 KiB buffer per
    /// idle connection; a batch is framed into one short-lived buffer.
    send: SendStream,
    /// A write was cut short (its future dropped, as a blocked write to a
    /// client that stopped reading is): the stream may end inside a frame,
    /// so nothing more is written and only the close code says why.
    torn: bool,
}

fn codec(max_frame: usize) -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .length_field_length(4)
        .big_endian()
        .max_frame_length(max_frame)
        .new_codec()
}

impl QuicReader {
    /// A clean end is the client closing the connection with code 0; any
    /// other close code or a transport error is a drop (resumable). When the
    /// control stream finishes first, the connection's close (usually in the
    /// same packet) decides; a client that finishes the stream but keeps the
    /// connection open has stopped talking, which counts as a close.
    async fn ended(&self) -> Inbound {
        let reason = match self.conn.close_reason() {
            Some(reason) => reason,
            None => match tokio::time::timeout(Duration::from_secs(1), self.conn.closed()).await {
                Ok(reason) => reason,
                Err(_) => return Inbound::Closed,
            },
        };
        match reason {
            ConnectionError::LocallyClosed => Inbound::Closed,
            ConnectionError::ApplicationClosed(c) if c.error_code == 0u32.into() => Inbound::Closed,
            e => Inbound::Failed(e.to_string()),
        }
    }
}

impl FrameReader for QuicReader {
    async fn recv(&mut self) -> Inbound {
        match self.inner.next().await {
            Some(Ok(frame)) => Inbound::Frame(frame.freeze()),
            None => self.ended().await,
            Some(Err(e)) => {
                if e.get_ref()
                    .is_some_and(|inner| inner.is::<LengthDelimitedCodecError>())
                {
                    Inbound::TooLarge(None)
                } else if self.conn.close_reason().is_some() {
                    self.ended().await
                } else {
                    Inbound::Failed(e.to_string())
                }
            }
        }
    }
}

impl FrameWriter for QuicWriter {
    async fn send(&mut self, frames: &[Bytes]) -> io::Result<()> {
        if self.torn {
            return Err(io::Error::other(
                "an earlier write was cut short inside a frame",
            ));
        }
        let len = frames.iter().map(|f| f.len() + 4).sum();
        let mut batch = BytesMut::with_capacity(len);
        for f in frames {
            batch.put_u32(f.len() as u32);
            batch.put_slice(f);
        }
        self.torn = true;
        self.send
            .write_all(&batch)
            .await
            .map_err(io::Error::other)?;
        self.torn = false;
        Ok(())
    }

    fn send_unordered(&mut self, frame: &Bytes) -> bool {
        match self.conn.max_datagram_size() {
            Some(max) if frame.len() <= max => self.conn.send_datagram(frame.clone()).is_ok(),
            _ => false,
        }
    }

    /// Closes the connection with `code`'s application error code and
    /// `reason`. A later call does nothing (the connection is closed).
    async fn close(&mut self, code: CloseCode, reason: &str) {
        if self.conn.close_reason().is_some() {
            return;
        }
        if self.torn {
            let _ = self.send.reset(code.quic_code().into());
        } else if self.send.finish().is_ok() {
            // Give the peer a moment to receive what is in flight: closing
            // a QUIC connection discards unacknowledged stream data.
            let _ = tokio::time::timeout(Duration::from_secs(2), self.send.stopped()).await;
        }
        let reason = if reason.is_empty() { "bye" } else { reason };
        self.conn
            .close(code.quic_code().into(), close_reason(reason).as_bytes());
    }
}

async fn serve_connection(edge: Arc<Edge>, incoming: quinn::Incoming) {
    let cfg = &edge.session;
    let handshake = Duration::from_millis(cfg.handshake_timeout_ms.into());
    // Boxed: the QUIC handshake is a large, short-lived state that would
    // otherwise size every idle connection's task.
    let setup = async {
        let conn = incoming.await.ok()?;
        let (send, recv) = conn.accept_bi().await.ok()?;
        Some((conn, send, recv))
    };
    let Ok(Some((conn, send, recv))) = tokio::time::timeout(handshake, Box::pin(setup)).await
    else {
        return;
    };
    let max = cfg.max_frame_bytes as usize;
    let reader = QuicReader {
        conn: conn.clone(),
        inner: FramedRead::with_capacity(recv, codec(max), 1024),
    };
    let writer = QuicWriter {
        conn,
        send,
        torn: false,
    };
    serve(edge, reader, writer, TransportKind::Quic).await;
}

/// Accepts QUIC connections; once the node drains (`stop_accepting`) it
/// refuses each new one at once (CONNECTION_REFUSED) rather than leave the
/// client waiting for a handshake that never comes. Ends with the endpoint
/// (or when shutdown aborts it).
pub async fn accept_loop(edge: Arc<Edge>, endpoint: Endpoint) {
    while let Some(incoming) = endpoint.accept().await {
        if edge.stop_accepting.is_cancelled() {
            incoming.refuse();
            continue;
        }
        // Counted from the first packet, handshakes included.
        let Ok(permit) = edge.connection_permits.clone().try_acquire_owned() else {
            incoming.refuse();
            continue;
        };
        let edge2 = edge.clone();
        edge.tracker.spawn(async move {
            serve_connection(edge2, incoming).await;
            drop(permit);
        });
    }
}
