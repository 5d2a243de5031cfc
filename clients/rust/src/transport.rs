//! Raw Huddle connections: dialing a gateway and moving whole frames.
//!
//! - `ws://` / `wss://`: one WebSocket binary message carries one frame.
//! - `quic://HOST:PORT`: the client opens one bidirectional stream (the
//!   control stream); each frame on it is preceded by its length as a 4-byte
//!   big-endian `u32`. Volatile events may also arrive as QUIC datagrams, one
//!   frame each.
//!
//! This module owns URL parsing, name resolution, local address binding, TLS
//! and framing. It never looks inside a frame, never verifies one and keeps no
//! session state — that is [`crate::client`]'s job — so tests and the load
//! generator can send anything, oversized or malformed frames included.
//!
//! It builds on `tls` (which certificates to trust, [`TlsOptions`]) and
//! nothing above it.
//!
//! Inbound frames are capped at [`MAX_INBOUND_FRAME_BYTES`] (1 MiB); outbound
//! frames are not capped here.
//!
//! Per connection it keeps small buffers only: a 4 KiB WebSocket read buffer
//! and no WebSocket write buffering; for QUIC a 2 KiB initial read buffer,
//! 256 KiB of stream flow-control credit and one UDP endpoint.
//!
//! QUIC close codes: `0` for a clean close ([`RawConnection::close`]), `1` for
//! an abort ([`RawConnection::abort`]). How the gateway closed a connection
//! (its WebSocket close status or QUIC application error code, see
//! [`huddle_schema::CloseCode`]) is [`RawReceiver::peer_close`].

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use huddle_schema::CloseCode;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};
use tokio_util::codec::{FramedRead, LengthDelimitedCodec};
use url::{Host, Url};

use crate::error::ClientError;
use crate::tls;
pub use crate::tls::TlsOptions;

/// Largest inbound frame a raw connection accepts, on either transport. It is
/// above the gateway's default frame limit on purpose, so that a test can see
/// what the gateway does with frames near (or over) its own limit.
pub const MAX_INBOUND_FRAME_BYTES: usize = 1 << 20;

/// Default port of `quic://` URLs without one.
pub const DEFAULT_QUIC_PORT: u16 = 7351;

/// QUIC application close code of a clean close.
const QUIC_CLOSE_CLEAN: u32 = 0;
/// QUIC application close code of an abort (a simulated network drop).
const QUIC_CLOSE_ABORT: u32 = 1;

/// How long a clean close waits for the peer (flush, acknowledgements).
const CLOSE_WAIT: Duration = Duration::from_millis(500);

/// WebSocket read buffer per connection; frames are small.
const WS_READ_BUFFER: usize = 4 * 1024;
/// Initial QUIC control-stream read buffer; it grows to the largest frame.
const QUIC_READ_BUFFER: usize = 2 * 1024;
/// QUIC flow-control credit of the control stream: at most this much
/// unread data is buffered for a connection whose reader is blocked.
const QUIC_STREAM_WINDOW: u32 = 256 * 1024;
/// QUIC flow-control credit of the whole connection.
const QUIC_CONNECTION_WINDOW: u32 = 512 * 1024;
/// Received QUIC datagrams buffered before the oldest are dropped.
const QUIC_DATAGRAM_BUFFER: usize = 64 * 1024;

/// How the gateway closed a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerClose {
    /// The WebSocket close status or the QUIC application error code, as
    /// received.
    pub code: u64,
    /// The close's reason text.
    pub reason: String,
    /// What `code` means, when it is one Huddle sends (a wire error code
    /// as `4000 + code`, going away, normal).
    pub meaning: Option<CloseCode>,
}

/// Which transport a connection uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// WebSocket, plain (`ws://`) or over TLS (`wss://`).
    Ws,
    /// QUIC (`quic://`), always TLS 1.3 with ALPN `huddle/1`.
    Quic,
}

/// A parsed gateway URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    pub(crate) transport: Transport,
    /// TLS (`wss://`, `quic://`).
    pub(crate) secure: bool,
    pub(crate) host: Host<String>,
    pub(crate) port: u16,
    pub(crate) url: Url,
}

/// Parses `ws://HOST[:PORT][/PATH]`, `wss://…` or `quic://HOST[:PORT]`.
pub(crate) fn parse_url(raw: &str) -> Result<Target, ClientError> {
    let url = Url::parse(raw).map_err(|e| ClientError::InvalidUrl(format!("{raw}: {e}")))?;
    let (transport, secure, default_port) = match url.scheme() {
        "ws" => (Transport::Ws, false, 80),
        "wss" => (Transport::Ws, true, 443),
        "quic" => (Transport::Quic, true, DEFAULT_QUIC_PORT),
        other => {
            return Err(ClientError::InvalidUrl(format!(
                "{raw}: unsupported scheme `{other}`; use ws://, wss:// or quic://"
            )))
        }
    };
    let host = match url.host() {
        Some(Host::Domain("")) | None => {
            return Err(ClientError::InvalidUrl(format!("{raw}: no host")));
        }
        // Non-special schemes (quic) keep IP literals as opaque names.
        Some(Host::Domain(name)) => match name.parse::<IpAddr>() {
            Ok(IpAddr::V4(ip)) => Host::Ipv4(ip),
            Ok(IpAddr::V6(ip)) => Host::Ipv6(ip),
            Err(_) => Host::Domain(name.to_owned()),
        },
        Some(Host::Ipv4(ip)) => Host::Ipv4(ip),
        Some(Host::Ipv6(ip)) => Host::Ipv6(ip),
    };
    let port = url.port().unwrap_or(default_port);
    Ok(Target {
        transport,
        secure,
        host,
        port,
        url,
    })
}

/// Resolves `host:port`.
async fn resolve(host: &Host<String>, port: u16) -> Result<Vec<SocketAddr>, ClientError> {
    let addrs: Vec<SocketAddr> = match host {
        Host::Ipv4(ip) => vec![SocketAddr::new(IpAddr::V4(*ip), port)],
        Host::Ipv6(ip) => vec![SocketAddr::new(IpAddr::V6(*ip), port)],
        Host::Domain(name) => tokio::net::lookup_host((name.as_str(), port))
            .await
            .map_err(|e| ClientError::Transport(format!("cannot resolve {name}: {e}")))?
            .collect(),
    };
    if addrs.is_empty() {
        return Err(ClientError::Transport(format!(
            "{host} resolves to no address"
        )));
    }
    Ok(addrs)
}

/// The addresses to try, in order: those of `local`'s family when a local
/// address is given, otherwise all of them with IPv4 first (a dev gateway
/// listens on 127.0.0.1, and `localhost` often resolves to `::1` first).
fn candidates(mut addrs: Vec<SocketAddr>, local: Option<IpAddr>) -> Vec<SocketAddr> {
    match local {
        Some(ip) => addrs.retain(|a| a.is_ipv4() == ip.is_ipv4()),
        None => addrs.sort_by_key(|a| !a.is_ipv4()),
    }
    addrs
}

/// Dials `url` and returns a raw connection; no Huddle frame is exchanged.
///
/// `local_addr` binds the local end to that address (port chosen by the OS),
/// so one process can open more connections than one address has ports.
pub async fn connect_raw(
    url: &str,
    tls: &TlsOptions,
    local_addr: Option<IpAddr>,
) -> Result<RawConnection, ClientError> {
    let target = parse_url(url)?;
    let addrs = candidates(resolve(&target.host, target.port).await?, local_addr);
    if addrs.is_empty() {
        return Err(ClientError::Transport(format!(
            "{} has no address of the local address's family",
            target.host
        )));
    }
    match target.transport {
        Transport::Ws => connect_ws(&target, &addrs, tls, local_addr).await,
        Transport::Quic => connect_quic(&addrs, tls, local_addr).await,
    }
}

type WsStream = WebSocketStream<MaybeTlsStream<TcpStream>>;

fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(WS_READ_BUFFER)
        .write_buffer_size(0)
        .max_message_size(Some(MAX_INBOUND_FRAME_BYTES))
        .max_frame_size(Some(MAX_INBOUND_FRAME_BYTES))
}

async fn tcp_connect(addr: SocketAddr, local: Option<IpAddr>) -> io::Result<TcpStream> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(ip) = local {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    socket.connect(addr).await
}

async fn connect_ws(
    target: &Target,
    addrs: &[SocketAddr],
    tls: &TlsOptions,
    local: Option<IpAddr>,
) -> Result<RawConnection, ClientError> {
    let mut last_err = None;
    let mut stream = None;
    for addr in addrs {
        match tcp_connect(*addr, local).await {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last_err = Some(format!("cannot connect to {addr}: {e}")),
        }
    }
    let Some(stream) = stream else {
        return Err(ClientError::Transport(
            last_err.unwrap_or_else(|| "no address to connect to".into()),
        ));
    };
    // Latency matters more than packet count for small frames.
    let _ = stream.set_nodelay(true);

    let mut request_url = target.url.clone();
    let connector = if target.secure {
        // The request URL names the TLS server; the TCP connection is already
        // made, so rewriting its host only changes SNI, verification and the
        // Host header.
        if let Some(name) = &tls.server_name {
            request_url
                .set_host(Some(name))
                .map_err(|e| ClientError::InvalidUrl(format!("server name {name}: {e}")))?;
        }
        Connector::Rustls(tls::client_config(tls, false)?)
    } else {
        Connector::Plain
    };
    let (ws, _response) = tokio_tungstenite::client_async_tls_with_config(
        request_url.as_str(),
        stream,
        Some(ws_config()),
        Some(connector),
    )
    .await
    .map_err(|e| ClientError::Transport(format!("WebSocket handshake with {}: {e}", target.url)))?;
    let (sink, stream) = ws.split();
    Ok(RawConnection {
        tx: RawSender {
            inner: SenderInner::Ws(sink),
        },
        rx: RawReceiver {
            inner: ReceiverInner::Ws {
                stream,
                peer_close: None,
            },
        },
    })
}

/// The QUIC transport parameters every client connection uses.
fn quic_transport_config() -> Arc<quinn::TransportConfig> {
    static CONFIG: OnceLock<Arc<quinn::TransportConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let mut t = quinn::TransportConfig::default();
            // The gateway never opens streams towards the client.
            t.max_concurrent_bidi_streams(0u32.into())
                .max_concurrent_uni_streams(0u32.into())
                .stream_receive_window(QUIC_STREAM_WINDOW.into())
                .receive_window(QUIC_CONNECTION_WINDOW.into())
                .datagram_receive_buffer_size(Some(QUIC_DATAGRAM_BUFFER))
                .datagram_send_buffer_size(QUIC_DATAGRAM_BUFFER);
            Arc::new(t)
        })
        .clone()
}

async fn connect_quic(
    addrs: &[SocketAddr],
    tls: &TlsOptions,
    local: Option<IpAddr>,
) -> Result<RawConnection, ClientError> {
    let Some(&remote) = addrs.first() else {
        return Err(ClientError::Transport("no address to connect to".into()));
    };
    let bind_ip = local.unwrap_or(if remote.is_ipv4() {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    } else {
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    });
    let endpoint = quinn::Endpoint::client(SocketAddr::new(bind_ip, 0)).map_err(|e| {
        ClientError::Transport(format!("cannot bind a UDP socket on {bind_ip}: {e}"))
    })?;
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls::client_config(tls, true)?)
        .map_err(|e| ClientError::Transport(format!("QUIC TLS setup failed: {e}")))?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(quic_transport_config());
    let server_name = tls.server_name.as_deref().unwrap_or("localhost");
    let conn = endpoint
        .connect_with(config, remote, server_name)
        .map_err(|e| ClientError::Transport(format!("cannot connect to {remote}: {e}")))?
        .await
        .map_err(|e| ClientError::Transport(format!("QUIC handshake with {remote}: {e}")))?;
    let (send, recv) = conn
        .open_bi()
        .await
        .map_err(|e| ClientError::Transport(format!("cannot open the control stream: {e}")))?;
    let codec = LengthDelimitedCodec::builder()
        .length_field_length(4)
        .big_endian()
        .max_frame_length(MAX_INBOUND_FRAME_BYTES)
        .new_codec();
    let frames = Box::new(FramedRead::with_capacity(recv, codec, QUIC_READ_BUFFER));
    Ok(RawConnection {
        tx: RawSender {
            inner: SenderInner::Quic {
                send,
                conn: conn.clone(),
                endpoint: endpoint.clone(),
            },
        },
        rx: RawReceiver {
            inner: ReceiverInner::Quic {
                frames,
                conn,
                datagrams_open: true,
                _endpoint: endpoint,
            },
        },
    })
}

/// A connection to a gateway that moves whole frames, without interpreting
/// them. [`RawConnection::split`] gives halves that can live in different
/// tasks.
pub struct RawConnection {
    tx: RawSender,
    rx: RawReceiver,
}

impl fmt::Debug for RawConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawConnection")
            .field("transport", &self.transport())
            .finish_non_exhaustive()
    }
}

impl RawConnection {
    /// Sends one frame: one WebSocket binary message, or a length-prefixed
    /// frame on the QUIC control stream.
    pub async fn send(&mut self, frame: Bytes) -> Result<(), ClientError> {
        self.tx.send(frame).await
    }

    /// The next inbound frame, from the stream or (QUIC) a datagram, whichever
    /// comes first; `None` once the peer closed the connection cleanly.
    pub async fn recv(&mut self) -> Result<Option<Bytes>, ClientError> {
        self.rx.recv().await
    }

    /// Which transport this connection uses.
    pub fn transport(&self) -> Transport {
        self.tx.transport()
    }

    /// How the gateway closed the connection; see [`RawReceiver::peer_close`].
    pub async fn peer_close(&mut self) -> Option<PeerClose> {
        self.rx.peer_close().await
    }

    /// Splits into a send half and a receive half.
    pub fn split(self) -> (RawSender, RawReceiver) {
        (self.tx, self.rx)
    }

    /// Closes cleanly (WebSocket close handshake; QUIC stream finish and close
    /// code 0), waiting briefly for the peer.
    pub async fn close(self) {
        let RawConnection { tx, mut rx } = self;
        tx.close().await;
        // Let the peer answer the close handshake; whatever else arrives is
        // discarded.
        let _ = tokio::time::timeout(CLOSE_WAIT, async {
            while let Ok(Some(_)) = rx.recv().await {}
        })
        .await;
    }

    /// Drops the connection without a close handshake (QUIC: close code 1),
    /// as a network failure would look to the gateway.
    pub fn abort(self) {
        self.rx.abort();
        drop(self.tx);
    }
}

/// The sending half of a [`RawConnection`].
pub struct RawSender {
    inner: SenderInner,
}

enum SenderInner {
    Ws(SplitSink<WsStream, Message>),
    Quic {
        send: quinn::SendStream,
        conn: quinn::Connection,
        /// Keeps the UDP endpoint (and its driver) alive with the connection.
        endpoint: quinn::Endpoint,
    },
}

impl fmt::Debug for RawSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawSender")
            .field("transport", &self.transport())
            .finish_non_exhaustive()
    }
}

impl RawSender {
    /// Sends one frame; see [`RawConnection::send`].
    pub async fn send(&mut self, frame: Bytes) -> Result<(), ClientError> {
        match &mut self.inner {
            SenderInner::Ws(sink) => sink
                .send(Message::Binary(frame))
                .await
                .map_err(|e| ClientError::Transport(format!("WebSocket send failed: {e}"))),
            SenderInner::Quic { send, .. } => {
                let len = u32::try_from(frame.len()).map_err(|_| {
                    ClientError::Protocol(format!("a {}-byte frame cannot be framed", frame.len()))
                })?;
                let mut chunks = [Bytes::copy_from_slice(&len.to_be_bytes()), frame];
                send.write_all_chunks(&mut chunks)
                    .await
                    .map_err(|e| ClientError::Transport(format!("QUIC send failed: {e}")))
            }
        }
    }

    /// Which transport this half belongs to.
    pub fn transport(&self) -> Transport {
        match self.inner {
            SenderInner::Ws(_) => Transport::Ws,
            SenderInner::Quic { .. } => Transport::Quic,
        }
    }

    /// Closes cleanly from the sending side: a WebSocket close frame, or
    /// (QUIC) finishing the control stream, waiting briefly for the peer to
    /// acknowledge it, and closing the connection with code 0. The receive
    /// half then sees the end of the connection.
    pub async fn close(self) {
        match self.inner {
            SenderInner::Ws(mut sink) => {
                let _ = tokio::time::timeout(CLOSE_WAIT, sink.close()).await;
            }
            SenderInner::Quic {
                mut send,
                conn,
                endpoint,
            } => {
                if send.finish().is_ok() {
                    let _ = tokio::time::timeout(CLOSE_WAIT, send.stopped()).await;
                }
                conn.close(QUIC_CLOSE_CLEAN.into(), b"client closed");
                let _ = tokio::time::timeout(CLOSE_WAIT, endpoint.wait_idle()).await;
            }
        }
    }
}

/// The receiving half of a [`RawConnection`].
pub struct RawReceiver {
    inner: ReceiverInner,
}

enum ReceiverInner {
    Ws {
        stream: SplitStream<WsStream>,
        /// The close frame the gateway sent, once received.
        peer_close: Option<PeerClose>,
    },
    Quic {
        /// Boxed: it dwarfs the WebSocket variant.
        frames: Box<FramedRead<quinn::RecvStream, LengthDelimitedCodec>>,
        conn: quinn::Connection,
        /// False once the connection stopped yielding datagrams.
        datagrams_open: bool,
        /// Keeps the UDP endpoint (and its driver) alive with the connection.
        _endpoint: quinn::Endpoint,
    },
}

impl fmt::Debug for RawReceiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawReceiver")
            .field("transport", &self.transport())
            .finish_non_exhaustive()
    }
}

impl RawReceiver {
    /// The next inbound frame; see [`RawConnection::recv`]. Cancel-safe: a
    /// frame is never lost when this future is dropped before completing.
    pub async fn recv(&mut self) -> Result<Option<Bytes>, ClientError> {
        match &mut self.inner {
            ReceiverInner::Ws { stream, peer_close } => loop {
                match stream.next().await {
                    None => return Ok(None),
                    Some(Ok(Message::Binary(frame))) => return Ok(Some(frame)),
                    Some(Ok(Message::Close(frame))) => {
                        *peer_close = frame.map(|f| {
                            let code = u16::from(f.code);
                            PeerClose {
                                code: code.into(),
                                reason: f.reason.to_string(),
                                meaning: CloseCode::from_ws_status(code),
                            }
                        });
                        return Ok(None);
                    }
                    // Control messages are handled by tungstenite itself.
                    Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                    Some(Ok(Message::Text(_))) => {
                        return Err(ClientError::Protocol(
                            "the gateway sent a text WebSocket message".into(),
                        ))
                    }
                    Some(Err(
                        tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed,
                    )) => return Ok(None),
                    Some(Err(e)) => {
                        return Err(ClientError::Transport(format!(
                            "WebSocket receive failed: {e}"
                        )))
                    }
                }
            },
            ReceiverInner::Quic {
                frames,
                conn,
                datagrams_open,
                ..
            } => loop {
                tokio::select! {
                    biased;
                    item = frames.next() => {
                        return match item {
                            None => Ok(None),
                            Some(Ok(frame)) => Ok(Some(frame.freeze())),
                            Some(Err(_)) if closed_by_application(conn) => Ok(None),
                            Some(Err(e)) if e.kind() == io::ErrorKind::InvalidData => {
                                Err(ClientError::Protocol(format!("bad frame on the control stream: {e}")))
                            }
                            Some(Err(e)) => {
                                Err(ClientError::Transport(format!("QUIC receive failed: {e}")))
                            }
                        };
                    }
                    datagram = conn.read_datagram(), if *datagrams_open => match datagram {
                        Ok(frame) => return Ok(Some(frame)),
                        // The connection is over; the stream says how.
                        Err(_) => *datagrams_open = false,
                    },
                }
            },
        }
    }

    /// Which transport this half belongs to.
    pub fn transport(&self) -> Transport {
        match self.inner {
            ReceiverInner::Ws { .. } => Transport::Ws,
            ReceiverInner::Quic { .. } => Transport::Quic,
        }
    }

    /// How the gateway closed the connection, once [`RawReceiver::recv`]
    /// saw it end: the WebSocket close frame's status and reason, or the
    /// QUIC application close (waited for briefly, since it may trail the
    /// end of the stream). `None` when the gateway closed without one (or
    /// has not closed).
    pub async fn peer_close(&mut self) -> Option<PeerClose> {
        match &mut self.inner {
            ReceiverInner::Ws { peer_close, .. } => peer_close.clone(),
            ReceiverInner::Quic { conn, .. } => {
                let reason = match conn.close_reason() {
                    Some(reason) => reason,
                    None => tokio::time::timeout(CLOSE_WAIT, conn.closed()).await.ok()?,
                };
                match reason {
                    quinn::ConnectionError::ApplicationClosed(close) => {
                        let code = close.error_code.into_inner();
                        Some(PeerClose {
                            code,
                            reason: String::from_utf8_lossy(&close.reason).into_owned(),
                            meaning: CloseCode::from_quic_code(code),
                        })
                    }
                    _ => None,
                }
            }
        }
    }

    /// Drops the connection without a close handshake; see
    /// [`RawConnection::abort`]. For WebSocket the socket closes once the send
    /// half is dropped too.
    pub fn abort(self) {
        if let ReceiverInner::Quic { conn, .. } = &self.inner {
            conn.close(QUIC_CLOSE_ABORT.into(), b"connection dropped");
        }
    }
}

/// Whether the connection ended by a deliberate close of either side.
fn closed_by_application(conn: &quinn::Connection) -> bool {
    matches!(
        conn.close_reason(),
        Some(quinn::ConnectionError::ApplicationClosed(_) | quinn::ConnectionError::LocallyClosed)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_schemes() {
        let t = parse_url("ws://127.0.0.1:7350").unwrap();
        assert_eq!(t.transport, Transport::Ws);
        assert!(!t.secure);
        assert_eq!(t.host, Host::<String>::Ipv4(Ipv4Addr::LOCALHOST));
        assert_eq!(t.port, 7350);

        let t = parse_url("wss://gateway.example.com/huddle").unwrap();
        assert_eq!(t.transport, Transport::Ws);
        assert!(t.secure);
        assert_eq!(t.host, Host::Domain("gateway.example.com".to_string()));
        assert_eq!(t.port, 443);

        let t = parse_url("ws://localhost").unwrap();
        assert_eq!(t.port, 80);

        let t = parse_url("quic://127.0.0.1:7351").unwrap();
        assert_eq!(t.transport, Transport::Quic);
        assert!(t.secure);
        assert_eq!(t.host, Host::<String>::Ipv4(Ipv4Addr::LOCALHOST));
        assert_eq!(t.port, 7351);

        let t = parse_url("quic://[::1]:9000").unwrap();
        assert_eq!(t.host, Host::<String>::Ipv6(Ipv6Addr::LOCALHOST));
        assert_eq!(t.port, 9000);

        let t = parse_url("quic://localhost").unwrap();
        assert_eq!(t.host, Host::Domain("localhost".to_string()));
        assert_eq!(t.port, DEFAULT_QUIC_PORT);
    }

    #[test]
    fn refuses_bad_urls() {
        for bad in [
            "http://127.0.0.1:7350",
            "127.0.0.1:7350",
            "quic://",
            "ws://",
            "",
        ] {
            assert!(
                matches!(parse_url(bad), Err(ClientError::InvalidUrl(_))),
                "{bad} should be refused"
            );
        }
    }

    #[test]
    fn candidates_prefer_ipv4_or_match_the_local_family() {
        let v6: SocketAddr = "[::1]:1".parse().unwrap();
        let v4: SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert_eq!(candidates(vec![v6, v4], None), vec![v4, v6]);
        assert_eq!(
            candidates(vec![v6, v4], Some(IpAddr::V6(Ipv6Addr::LOCALHOST))),
            vec![v6]
        );
        assert!(candidates(vec![v6], Some(IpAddr::V4(Ipv4Addr::LOCALHOST))).is_empty());
    }

    /// A QUIC loopback server with a self-signed certificate: checks framing
    /// both ways, datagrams, trust of the PEM and the insecure verifier.
    #[tokio::test]
    async fn quic_frames_and_datagrams_round_trip() {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut server_tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.cert.der().clone()], key)
            .unwrap();
        server_tls.alpn_protocols = vec![huddle_schema::ALPN.to_vec()];
        let server_config = quinn::ServerConfig::with_crypto(Arc::new(
            quinn::crypto::rustls::QuicServerConfig::try_from(server_tls).unwrap(),
        ));
        let server =
            quinn::Endpoint::server(server_config, "127.0.0.1:0".parse().unwrap()).unwrap();
        let port = server.local_addr().unwrap().port();

        let server_task = tokio::spawn(async move {
            for _ in 0..2 {
                let conn = server.accept().await.unwrap().await.unwrap();
                let (mut send, recv) = conn.accept_bi().await.unwrap();
                let mut frames = FramedRead::new(recv, LengthDelimitedCodec::new());
                let first = frames.next().await.unwrap().unwrap();
                // Echo it back on the stream, then as a datagram.
                send.write_all(&(first.len() as u32).to_be_bytes())
                    .await
                    .unwrap();
                send.write_all(&first).await.unwrap();
                conn.send_datagram(Bytes::from_static(b"datagram")).unwrap();
                // Wait for the client to finish.
                while frames.next().await.is_some() {}
                let _ = conn.closed().await;
            }
        });

        let url = format!("quic://127.0.0.1:{port}");
        let options = [
            TlsOptions {
                ca_cert_pem: Some(cert.cert.pem().into_bytes()),
                ..TlsOptions::default()
            },
            TlsOptions {
                accept_invalid_certs: true,
                server_name: Some("not-the-cert-name".into()),
                ..TlsOptions::default()
            },
        ];
        for tls in options {
            let mut conn = connect_raw(&url, &tls, Some(IpAddr::V4(Ipv4Addr::LOCALHOST)))
                .await
                .unwrap();
            assert_eq!(conn.transport(), Transport::Quic);
            conn.send(Bytes::from_static(b"hello frame")).await.unwrap();
            let mut got = vec![
                conn.recv().await.unwrap().unwrap(),
                conn.recv().await.unwrap().unwrap(),
            ];
            got.sort();
            assert_eq!(
                got,
                vec![
                    Bytes::from_static(b"datagram"),
                    Bytes::from_static(b"hello frame")
                ]
            );
            conn.close().await;
        }
        server_task.await.unwrap();
    }

    #[tokio::test]
    async fn wrong_name_is_refused_with_a_pinned_pem() {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut server_tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.cert.der().clone()], key)
            .unwrap();
        server_tls.alpn_protocols = vec![huddle_schema::ALPN.to_vec()];
        let server_config = quinn::ServerConfig::with_crypto(Arc::new(
            quinn::crypto::rustls::QuicServerConfig::try_from(server_tls).unwrap(),
        ));
        let server =
            quinn::Endpoint::server(server_config, "127.0.0.1:0".parse().unwrap()).unwrap();
        let port = server.local_addr().unwrap().port();
        let accept = tokio::spawn(async move {
            if let Some(incoming) = server.accept().await {
                let _ = incoming.await;
            }
        });
        let tls = TlsOptions {
            ca_cert_pem: Some(cert.cert.pem().into_bytes()),
            server_name: Some("elsewhere".into()),
            ..TlsOptions::default()
        };
        let err = connect_raw(&format!("quic://127.0.0.1:{port}"), &tls, None)
            .await
            .unwrap_err();
        assert!(matches!(err, ClientError::Transport(_)), "{err}");
        accept.abort();
    }
}
