//! Session tests against a scripted fake gateway on loopback WebSocket: the
//! test plays the gateway's side frame by frame, so handshake, replies,
//! dedupe, heartbeats, resume, reset, GoAway and close are checked without
//! the real server. Test-only; never compiled into the library.

use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use huddle_schema::encode::{PresenceEntry, WelcomeFields};
use huddle_schema::wire::{ErrorCode, PresenceStatus};
use huddle_schema::{stamp_seq, verify_frame, Encoder};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::{Client, ClientConfig, ClientError, Event, EventStream};

const WAIT: Duration = Duration::from_secs(5);

/// A fake gateway: hands each accepted WebSocket connection to the test.
struct Gateway {
    url: String,
    conns: mpsc::Receiver<WebSocketStream<TcpStream>>,
}

impl Gateway {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/", listener.local_addr().unwrap());
        let (tx, conns) = mpsc::channel(8);
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                if let Ok(ws) = tokio_tungstenite::accept_async(tcp).await {
                    if tx.send(ws).await.is_err() {
                        break;
                    }
                }
            }
        });
        Self { url, conns }
    }

    async fn accept(&mut self) -> Peer {
        let ws = tokio::time::timeout(WAIT, self.conns.recv())
            .await
            .expect("a connection")
            .expect("gateway running");
        Peer {
            ws,
            enc: Encoder::new(),
            last_ack: 0,
            pings: 0,
        }
    }

    fn config(&self) -> ClientConfig {
        let mut c = ClientConfig::new(&self.url, "good-token");
        c.backoff_initial = Duration::from_millis(20);
        c.backoff_max = Duration::from_millis(100);
        c.request_timeout = Duration::from_secs(2);
        c
    }
}

/// What a client's `Hello` said.
#[derive(Debug)]
struct Hello {
    request_id: u64,
    token: String,
    resume: Option<(String, String, u64)>,
}

/// The gateway's end of one connection.
struct Peer {
    ws: WebSocketStream<TcpStream>,
    enc: Encoder,
    last_ack: u64,
    pings: u32,
}

impl Peer {
    /// The next frame, or `None` when the client closed.
    async fn next_raw(&mut self) -> Option<Bytes> {
        loop {
            match tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("a frame in time")
            {
                Some(Ok(Message::Binary(b))) => return Some(b),
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
                Some(Ok(_)) => {}
            }
        }
    }

    /// The next frame that is not a heartbeat `Ping` (those are recorded).
    async fn next_frame(&mut self) -> Option<Bytes> {
        loop {
            let buf = self.next_raw().await?;
            let frame = verify_frame(&buf, 1 << 20).expect("client frames verify");
            if let Some(ping) = frame.body_as_ping() {
                assert_eq!(frame.request_id(), 0);
                self.last_ack = ping.ack_seq();
                self.pings += 1;
                continue;
            }
            return Some(buf);
        }
    }

    async fn send(&mut self, frame: Bytes) {
        self.ws.send(Message::Binary(frame)).await.unwrap();
    }

    async fn expect_hello(&mut self) -> Hello {
        let buf = self.next_frame().await.expect("a Hello");
        let frame = verify_frame(&buf, 1 << 20).unwrap();
        let hello = frame.body_as_hello().expect("first frame is Hello");
        assert_ne!(frame.request_id(), 0);
        assert_eq!(hello.protocol_version(), 1);
        assert!(!hello.datagrams(), "datagrams are QUIC-only");
        Hello {
            request_id: frame.request_id(),
            token: hello.token().unwrap_or_default().to_owned(),
            resume: hello.resume().map(|r| {
                (
                    r.session_id().unwrap_or_default().to_owned(),
                    r.resume_token().unwrap_or_default().to_owned(),
                    r.last_seq(),
                )
            }),
        }
    }

    async fn welcome(&mut self, hello: &Hello, session_id: &str, resumed: bool, replayed: u32) {
        self.welcome_with(hello, session_id, resumed, replayed, 10_000, 30_000)
            .await;
    }

    async fn welcome_with(
        &mut self,
        hello: &Hello,
        session_id: &str,
        resumed: bool,
        replayed: u32,
        heartbeat_ms: u32,
        heartbeat_timeout_ms: u32,
    ) {
        let heartbeat = (heartbeat_ms, heartbeat_timeout_ms);
        self.welcome_full(hello, session_id, resumed, replayed, heartbeat, 0)
            .await;
    }

    /// A resuming `Welcome` saying the gateway had read requests up to
    /// `last_request_id`.
    async fn welcome_resumed(
        &mut self,
        hello: &Hello,
        session_id: &str,
        replayed: u32,
        last_request_id: u64,
    ) {
        self.welcome_full(
            hello,
            session_id,
            true,
            replayed,
            (10_000, 30_000),
            last_request_id,
        )
        .await;
    }

    async fn welcome_full(
        &mut self,
        hello: &Hello,
        session_id: &str,
        resumed: bool,
        replayed: u32,
        (heartbeat_ms, heartbeat_timeout_ms): (u32, u32),
        last_request_id: u64,
    ) {
        let token = format!("resume-{session_id}-{}", hello.request_id);
        let frame = self.enc.welcome(
            hello.request_id,
            &WelcomeFields {
                session_id,
                user_id: "u1",
                username: "ann",
                display_name: "Ann",
                roles: &["player".to_string()],
                resume_token: &token,
                heartbeat_ms,
                heartbeat_timeout_ms,
                server_time_ms: 0,
                resumed,
                replayed,
                max_frame_bytes: 64 * 1024,
                resume_window_ms: 30_000,
                last_request_id,
            },
        );
        self.send(frame).await;
    }

    async fn error(&mut self, request_id: u64, code: ErrorCode, closing: bool) {
        let frame = self.enc.error(request_id, code, "nope", false, closing);
        self.send(frame).await;
    }

    async fn event(&mut self, seq: u64, payload: &[u8]) {
        let ev = self.enc.echo_event("u2", payload, seq != 0);
        let mut bytes = ev.bytes.to_vec();
        if let Some(at) = ev.seq_at {
            stamp_seq(&mut bytes, at, seq);
        }
        self.send(Bytes::from(bytes)).await;
    }

    /// Sends a reply as the gateway does: numbered with the session's events.
    async fn sequenced(&mut self, reply: Bytes, seq: u64) {
        let mut bytes = reply.to_vec();
        let at = huddle_schema::encode::seq_slot(&bytes).expect("replies have a seq slot");
        stamp_seq(&mut bytes, at, seq);
        self.send(Bytes::from(bytes)).await;
    }

    /// Reads the next request, which must be an echo: its id and payload.
    async fn expect_echo(&mut self) -> (u64, Vec<u8>) {
        let buf = self.next_frame().await.expect("a request");
        let frame = verify_frame(&buf, 1 << 20).unwrap();
        let req = frame.body_as_echo_request().expect("an EchoRequest");
        let payload = req.payload().map(|p| p.bytes().to_vec());
        (frame.request_id(), payload.unwrap_or_default())
    }

    /// Answers the next request if it is an echo.
    async fn answer_echo(&mut self, shard: u16) -> Option<String> {
        let buf = self.next_frame().await?;
        let frame = verify_frame(&buf, 1 << 20).unwrap();
        let req = frame.body_as_echo_request().expect("an EchoRequest");
        let payload = req
            .payload()
            .map(|p| p.bytes().to_vec())
            .unwrap_or_default();
        let to_user = req.to_user().map(str::to_owned);
        let reply = self.enc.echo_reply(
            frame.request_id(),
            &payload,
            shard,
            u32::from(to_user.is_some()),
        );
        self.send(reply).await;
        to_user
    }

    async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

/// Connects a client through the usual handshake; returns the gateway peer.
async fn connected(gw: &mut Gateway, config: ClientConfig) -> (Client, EventStream, Peer) {
    let connecting = tokio::spawn(Client::connect(config));
    let mut peer = gw.accept().await;
    let hello = peer.expect_hello().await;
    assert_eq!(hello.token, "good-token");
    assert!(hello.resume.is_none());
    peer.welcome(&hello, "s1", false, 0).await;
    let (client, events) = connecting.await.unwrap().unwrap();
    (client, events, peer)
}

async fn next_event(events: &mut EventStream) -> Event {
    tokio::time::timeout(WAIT, events.next())
        .await
        .expect("an event in time")
        .expect("stream open")
}

fn echo(seq: u64, payload: &[u8]) -> Event {
    Event::Echo {
        from_user: "u2".into(),
        payload: payload.to_vec(),
        seq,
    }
}

#[tokio::test]
async fn handshake_requests_and_session_info() {
    let mut gw = Gateway::start().await;
    let (client, _events, mut peer) = {
        let config = gw.config();
        connected(&mut gw, config)
    }
    .await;
    let session = client.session();
    assert_eq!(session.session_id, "s1");
    assert_eq!(session.user_id, "u1");
    assert_eq!(session.roles, vec!["player".to_string()]);
    assert_eq!(session.max_frame_bytes, 64 * 1024);

    let c = client.clone();
    let echo = tokio::spawn(async move { c.echo(b"ping").await });
    assert_eq!(peer.answer_echo(7).await, None);
    let reply = echo.await.unwrap().unwrap();
    assert_eq!(reply.payload, b"ping");
    assert_eq!(reply.shard, 7);

    let c = client.clone();
    let echo_to = tokio::spawn(async move { c.echo_to("u2", b"hi", true).await });
    assert_eq!(peer.answer_echo(1).await.as_deref(), Some("u2"));
    assert_eq!(echo_to.await.unwrap().unwrap().delivered, 1);

    let c = client.clone();
    let presence = tokio::spawn(async move { c.presence(&["u1", "u9"]).await });
    let buf = peer.next_frame().await.unwrap();
    let frame = verify_frame(&buf, 1 << 20).unwrap();
    let ids: Vec<String> = frame
        .body_as_presence_query()
        .unwrap()
        .user_ids()
        .unwrap()
        .iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(ids, vec!["u1", "u9"]);
    let rows = vec![PresenceEntry {
        user_id: "u1".into(),
        status: PresenceStatus::ONLINE,
        connections: 1,
        last_active_ms: 9,
        text: String::new(),
    }];
    let list = peer.enc.presence_list(frame.request_id(), &rows);
    peer.send(list).await;
    assert_eq!(presence.await.unwrap().unwrap(), rows);

    // An Error reply maps to ClientError::Server.
    let c = client.clone();
    let limited = tokio::spawn(async move { c.echo(b"x").await });
    let buf = peer.next_frame().await.unwrap();
    let rid = verify_frame(&buf, 1 << 20).unwrap().request_id();
    let err = peer
        .enc
        .error(rid, ErrorCode::RATE_LIMITED, "slow", true, false);
    peer.send(err).await;
    assert_eq!(
        limited.await.unwrap().unwrap_err(),
        ClientError::Server {
            code: ErrorCode::RATE_LIMITED,
            message: "slow".into(),
            retryable: true
        }
    );

    // Too large for the session: refused locally.
    let big = vec![0u8; 70 * 1024];
    assert!(matches!(
        client.echo(&big).await,
        Err(ClientError::Protocol(_))
    ));
    client.close().await;
}

#[tokio::test]
async fn refused_token_fails_connect() {
    let mut gw = Gateway::start().await;
    let mut config = gw.config();
    config.token = "bad".into();
    let connecting = tokio::spawn(Client::connect(config));
    let mut peer = gw.accept().await;
    let hello = peer.expect_hello().await;
    assert_eq!(hello.token, "bad");
    peer.error(hello.request_id, ErrorCode::TOKEN_INVALID, true)
        .await;
    peer.close().await;
    let err = connecting.await.unwrap().unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::TOKEN_INVALID));
}

#[tokio::test]
async fn events_are_deduplicated_and_pings_answered() {
    let mut gw = Gateway::start().await;
    let (client, mut events, mut peer) = {
        let config = gw.config();
        connected(&mut gw, config)
    }
    .await;
    peer.event(1, b"a").await;
    peer.event(2, b"b").await;
    peer.event(2, b"b-again").await;
    peer.event(0, b"volatile").await;
    peer.event(1, b"a-again").await;
    peer.event(3, b"c").await;
    assert_eq!(next_event(&mut events).await, echo(1, b"a"));
    assert_eq!(next_event(&mut events).await, echo(2, b"b"));
    assert_eq!(next_event(&mut events).await, echo(0, b"volatile"));
    assert_eq!(next_event(&mut events).await, echo(3, b"c"));
    assert_eq!(client.last_seq(), 3);

    // The gateway pings; the client answers with a Pong carrying its time.
    let ping = peer.enc.ping(0, 0, 1234);
    peer.send(ping).await;
    let buf = peer.next_frame().await.unwrap();
    let frame = verify_frame(&buf, 1 << 20).unwrap();
    assert_eq!(frame.body_as_pong().unwrap().time_ms(), 1234);

    // A connection-level error becomes an event.
    peer.error(0, ErrorCode::MALFORMED_FRAME, false).await;
    assert_eq!(
        next_event(&mut events).await,
        Event::ServerError {
            code: ErrorCode::MALFORMED_FRAME,
            message: "nope".into()
        }
    );
    client.close().await;
    assert_eq!(next_event(&mut events).await, Event::Closed);
    assert!(events.next().await.is_none());
    assert_eq!(client.echo(b"late").await.unwrap_err(), ClientError::Closed);
}

#[tokio::test]
async fn heartbeat_pings_ack_the_last_seq() {
    let mut gw = Gateway::start().await;
    let connecting = tokio::spawn(Client::connect(gw.config()));
    let mut peer = gw.accept().await;
    let hello = peer.expect_hello().await;
    peer.welcome_with(&hello, "s1", false, 0, 50, 10_000).await;
    let (client, mut events) = connecting.await.unwrap().unwrap();
    peer.event(1, b"a").await;
    peer.event(2, b"b").await;
    assert_eq!(next_event(&mut events).await, echo(1, b"a"));
    assert_eq!(next_event(&mut events).await, echo(2, b"b"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Read whatever pings arrived: trigger one request to flush them through.
    let c = client.clone();
    let echo_task = tokio::spawn(async move { c.echo(b"x").await });
    peer.answer_echo(0).await;
    echo_task.await.unwrap().unwrap();
    assert!(peer.pings >= 2, "only {} pings", peer.pings);
    assert_eq!(peer.last_ack, 2);
    client.close().await;
}

#[tokio::test]
async fn drop_reconnects_with_resume_and_replays_without_duplicates() {
    let mut gw = Gateway::start().await;
    let (client, mut events, mut peer) = {
        let config = gw.config();
        connected(&mut gw, config)
    }
    .await;
    peer.event(1, b"a").await;
    peer.event(2, b"b").await;
    assert_eq!(next_event(&mut events).await, echo(1, b"a"));
    assert_eq!(next_event(&mut events).await, echo(2, b"b"));

    client.drop_connection_for_tests();
    assert!(matches!(
        next_event(&mut events).await,
        Event::Disconnected { .. }
    ));
    assert!(peer.next_raw().await.is_none(), "old connection is gone");

    let mut peer = gw.accept().await;
    let hello = peer.expect_hello().await;
    assert_eq!(
        hello.resume,
        Some(("s1".to_string(), "resume-s1-1".to_string(), 2))
    );
    peer.welcome(&hello, "s1", true, 1).await;
    peer.event(2, b"b-overlap").await;
    peer.event(3, b"c").await;
    assert_eq!(
        next_event(&mut events).await,
        Event::Reconnected {
            resumed: true,
            replayed: 1
        }
    );
    assert_eq!(next_event(&mut events).await, echo(3, b"c"));
    assert_eq!(client.last_seq(), 3);

    // Requests work on the new connection.
    let c = client.clone();
    let echo_task = tokio::spawn(async move { c.echo(b"again").await });
    peer.answer_echo(2).await;
    assert_eq!(echo_task.await.unwrap().unwrap().shard, 2);
    client.close().await;
}

#[tokio::test]
async fn requests_in_flight_across_a_drop_are_answered_once_after_the_resume() {
    let mut gw = Gateway::start().await;
    let (client, mut events, mut peer) = {
        let config = gw.config();
        connected(&mut gw, config)
    }
    .await;
    peer.event(1, b"a").await;
    assert_eq!(next_event(&mut events).await, echo(1, b"a"));

    // Two requests in flight; the gateway will say it read only the first
    // (the second was lost with the connection).
    let c = client.clone();
    let read = tokio::spawn(async move { c.echo(b"read").await });
    let (read_id, _) = peer.expect_echo().await;
    let c = client.clone();
    let unread = tokio::spawn(async move { c.echo(b"unread").await });
    let (unread_id, _) = peer.expect_echo().await;
    assert!(unread_id > read_id);
    // The gateway answered the first (seq 2) but the client never got it.
    client.drop_connection_for_tests();
    assert!(matches!(
        next_event(&mut events).await,
        Event::Disconnected { .. }
    ));
    assert!(peer.next_raw().await.is_none(), "old connection is gone");
    assert!(
        !read.is_finished() && !unread.is_finished(),
        "nothing failed"
    );

    let mut peer = gw.accept().await;
    let hello = peer.expect_hello().await;
    assert_eq!(hello.resume.as_ref().map(|r| r.2), Some(1));
    peer.welcome_resumed(&hello, "s1", 1, read_id).await;
    // First thing on the new connection: the request the gateway never
    // read, with its id.
    assert_eq!(peer.expect_echo().await, (unread_id, b"unread".to_vec()));
    let replayed = peer.enc.echo_reply(read_id, b"read", 1, 0);
    peer.sequenced(replayed.clone(), 2).await;
    // An overlapping replay of the same reply is a duplicate, never
    // delivered twice.
    peer.sequenced(replayed, 2).await;
    let answer = peer.enc.echo_reply(unread_id, b"unread", 2, 0);
    peer.sequenced(answer, 3).await;
    peer.event(4, b"after").await;

    assert_eq!(
        next_event(&mut events).await,
        Event::Reconnected {
            resumed: true,
            replayed: 1
        }
    );
    assert_eq!(next_event(&mut events).await, echo(4, b"after"));
    let read = read.await.unwrap().unwrap();
    assert_eq!((read.payload.as_slice(), read.shard), (&b"read"[..], 1));
    let unread = unread.await.unwrap().unwrap();
    assert_eq!(
        (unread.payload.as_slice(), unread.shard),
        (&b"unread"[..], 2)
    );
    assert_eq!(
        client.last_seq(),
        4,
        "replies count in what the client acks"
    );
    client.close().await;
}

#[tokio::test]
async fn refused_resume_starts_a_fresh_session() {
    let mut gw = Gateway::start().await;
    let (client, mut events, mut peer) = {
        let config = gw.config();
        connected(&mut gw, config)
    }
    .await;
    peer.event(1, b"a").await;
    assert_eq!(next_event(&mut events).await, echo(1, b"a"));
    let c = client.clone();
    let in_flight = tokio::spawn(async move { c.echo(b"lost").await });
    let _unanswered = peer.expect_echo().await;
    peer.close().await;
    assert!(matches!(
        next_event(&mut events).await,
        Event::Disconnected { .. }
    ));

    let mut peer = gw.accept().await;
    let hello = peer.expect_hello().await;
    assert!(hello.resume.is_some());
    assert!(!in_flight.is_finished(), "waits for the resume");
    peer.error(hello.request_id, ErrorCode::RESUME_FAILED, true)
        .await;
    peer.close().await;

    let mut peer = gw.accept().await;
    let hello = peer.expect_hello().await;
    assert!(hello.resume.is_none(), "fresh Hello after RESUME_FAILED");
    peer.welcome(&hello, "s2", false, 0).await;
    assert_eq!(next_event(&mut events).await, Event::SessionReset);
    assert_eq!(
        next_event(&mut events).await,
        Event::Reconnected {
            resumed: false,
            replayed: 0
        }
    );
    assert_eq!(client.session().session_id, "s2");
    assert_eq!(client.last_seq(), 0);
    assert_eq!(
        in_flight.await.unwrap().unwrap_err(),
        ClientError::Disconnected,
        "the new session owes the old one's requests nothing"
    );
    // The new session numbers from 1 again; nothing is mistaken for a dup.
    peer.event(1, b"fresh").await;
    assert_eq!(next_event(&mut events).await, echo(1, b"fresh"));
    client.close().await;
}

#[tokio::test]
async fn go_away_drains_then_reconnects_with_resume() {
    let mut gw = Gateway::start().await;
    let (client, mut events, mut peer) = {
        let config = gw.config();
        connected(&mut gw, config)
    }
    .await;
    let go_away = peer.enc.go_away("restarting", 200);
    peer.send(go_away).await;
    peer.event(1, b"drained").await;
    assert_eq!(
        next_event(&mut events).await,
        Event::GoAway {
            reason: "restarting".into(),
            reconnect_after_ms: 200
        }
    );
    assert_eq!(next_event(&mut events).await, echo(1, b"drained"));
    let closed_at = tokio::time::Instant::now();
    peer.close().await;
    assert!(matches!(
        next_event(&mut events).await,
        Event::Disconnected { .. }
    ));
    let mut peer = gw.accept().await;
    let hello = peer.expect_hello().await;
    assert!(closed_at.elapsed() >= Duration::from_millis(100));
    assert_eq!(hello.resume.as_ref().map(|r| r.2), Some(1));
    peer.welcome(&hello, "s1", true, 0).await;
    assert_eq!(
        next_event(&mut events).await,
        Event::Reconnected {
            resumed: true,
            replayed: 0
        }
    );
    client.close().await;
}

#[tokio::test]
async fn token_refused_on_reconnect_closes_the_client() {
    let mut gw = Gateway::start().await;
    let (client, mut events, peer) = {
        let config = gw.config();
        connected(&mut gw, config)
    }
    .await;
    peer.close().await;
    assert!(matches!(
        next_event(&mut events).await,
        Event::Disconnected { .. }
    ));
    let mut peer = gw.accept().await;
    let hello = peer.expect_hello().await;
    peer.error(hello.request_id, ErrorCode::TOKEN_EXPIRED, true)
        .await;
    assert_eq!(
        next_event(&mut events).await,
        Event::ServerError {
            code: ErrorCode::TOKEN_EXPIRED,
            message: "nope".into()
        }
    );
    assert_eq!(next_event(&mut events).await, Event::Closed);
    assert!(events.next().await.is_none());
    assert_eq!(client.echo(b"x").await.unwrap_err(), ClientError::Closed);
}

#[tokio::test]
async fn silent_gateway_is_given_up_and_resumed() {
    let mut gw = Gateway::start().await;
    let connecting = tokio::spawn(Client::connect(gw.config()));
    let mut peer = gw.accept().await;
    let hello = peer.expect_hello().await;
    peer.welcome_with(&hello, "s1", false, 0, 10_000, 200).await;
    let (client, mut events) = connecting.await.unwrap().unwrap();
    // Say nothing: the client gives up after 200 ms.
    match next_event(&mut events).await {
        Event::Disconnected { reason, .. } => assert!(reason.contains("nothing heard"), "{reason}"),
        other => panic!("unexpected {other:?}"),
    }
    drop(peer);
    let mut peer = gw.accept().await;
    let hello = peer.expect_hello().await;
    assert!(hello.resume.is_some());
    peer.welcome(&hello, "s1", true, 0).await;
    assert!(matches!(
        next_event(&mut events).await,
        Event::Reconnected { resumed: true, .. }
    ));
    client.close().await;
}

#[tokio::test]
async fn full_event_buffer_applies_backpressure_not_loss() {
    let mut gw = Gateway::start().await;
    let mut config = gw.config();
    config.event_buffer = 2;
    let (client, mut events, mut peer) = connected(&mut gw, config).await;
    for seq in 1..=20 {
        peer.event(seq, b"r").await;
    }
    // Volatile events sent while the buffer is full are shed.
    for _ in 0..5 {
        peer.event(0, b"v").await;
    }
    peer.event(21, b"last").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut reliable = Vec::new();
    loop {
        match next_event(&mut events).await {
            Event::Echo { seq: 0, .. } => {}
            Event::Echo { seq, .. } => {
                reliable.push(seq);
                if seq == 21 {
                    break;
                }
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(reliable, (1..=21).collect::<Vec<_>>());
    client.close().await;
}

#[tokio::test]
async fn dropping_every_handle_closes_the_connection() {
    let mut gw = Gateway::start().await;
    let (client, mut events, mut peer) = {
        let config = gw.config();
        connected(&mut gw, config)
    }
    .await;
    drop(client);
    assert!(peer.next_raw().await.is_none(), "the client closed");
    assert_eq!(next_event(&mut events).await, Event::Closed);
}

#[tokio::test]
async fn reconnect_off_closes_after_a_drop() {
    let mut gw = Gateway::start().await;
    let mut config = gw.config();
    config.reconnect = false;
    let (client, mut events, mut peer) = connected(&mut gw, config).await;
    let c = client.clone();
    let in_flight = tokio::spawn(async move { c.echo(b"lost").await });
    let _unanswered = peer.expect_echo().await;
    peer.close().await;
    assert_eq!(
        in_flight.await.unwrap().unwrap_err(),
        ClientError::Disconnected
    );
    assert!(matches!(
        next_event(&mut events).await,
        Event::Disconnected { .. }
    ));
    assert_eq!(next_event(&mut events).await, Event::Closed);
    assert_eq!(client.echo(b"x").await.unwrap_err(), ClientError::Closed);
}

#[tokio::test]
async fn raw_connection_round_trips_over_ws() {
    let mut gw = Gateway::start().await;
    let url = gw.url.clone();
    let raw = tokio::spawn(async move {
        let mut conn = crate::connect_raw(
            &url,
            &crate::TlsOptions::default(),
            Some(std::net::Ipv4Addr::LOCALHOST.into()),
        )
        .await
        .unwrap();
        assert_eq!(conn.transport(), crate::Transport::Ws);
        // Oversized frames can be sent raw.
        conn.send(Bytes::from(vec![1u8; 100 * 1024])).await.unwrap();
        let back = conn.recv().await.unwrap().unwrap();
        conn.close().await;
        back
    });
    let mut peer = gw.accept().await;
    let got = peer.next_raw().await.unwrap();
    assert_eq!(got.len(), 100 * 1024);
    let frame = peer.enc.pong(0, 5);
    peer.send(frame.clone()).await;
    assert_eq!(raw.await.unwrap(), frame);
    assert!(peer.next_raw().await.is_none());
}

/// The high-level client over QUIC against a minimal fake gateway: the
/// handshake (with `Hello.datagrams`), a request on the control stream, a
/// volatile event as a datagram, a reliable event on the stream, and close.
#[tokio::test]
async fn client_over_quic() {
    use std::sync::Arc;
    use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};

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
    let server = quinn::Endpoint::server(server_config, "127.0.0.1:0".parse().unwrap()).unwrap();
    let port = server.local_addr().unwrap().port();

    let gateway = tokio::spawn(async move {
        let conn = server.accept().await.unwrap().await.unwrap();
        let (send, recv) = conn.accept_bi().await.unwrap();
        let mut rx = FramedRead::new(recv, LengthDelimitedCodec::new());
        let mut tx = FramedWrite::new(send, LengthDelimitedCodec::new());
        let mut enc = Encoder::new();
        let next = |buf: Option<Result<bytes::BytesMut, std::io::Error>>| buf.unwrap().unwrap();

        let hello_buf = next(rx.next().await);
        let hello = verify_frame(&hello_buf, 1 << 20).unwrap();
        assert!(hello.body_as_hello().unwrap().datagrams());
        let welcome = enc.welcome(
            hello.request_id(),
            &WelcomeFields {
                session_id: "q1",
                user_id: "u1",
                resume_token: "rt",
                heartbeat_ms: 10_000,
                heartbeat_timeout_ms: 30_000,
                max_frame_bytes: 65_536,
                ..WelcomeFields::default()
            },
        );
        tx.send(welcome).await.unwrap();

        let req_buf = next(rx.next().await);
        let req = verify_frame(&req_buf, 1 << 20).unwrap();
        let payload = req
            .body_as_echo_request()
            .unwrap()
            .payload()
            .unwrap()
            .bytes();
        let reply = enc.echo_reply(req.request_id(), payload, 4, 0);
        tx.send(reply).await.unwrap();

        let volatile = enc.echo_event("u2", b"by datagram", false);
        conn.send_datagram(volatile.bytes).unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let reliable = enc.echo_event("u2", b"by stream", true);
        let mut bytes = reliable.bytes.to_vec();
        stamp_seq(&mut bytes, reliable.seq_at.unwrap(), 1);
        tx.send(Bytes::from(bytes)).await.unwrap();

        // The client finishes its stream and closes the connection.
        while rx.next().await.is_some() {}
        let _ = conn.closed().await;
    });

    let mut config = ClientConfig::new(format!("quic://127.0.0.1:{port}"), "good-token");
    config.tls.ca_cert_pem = Some(cert.cert.pem().into_bytes());
    let (client, mut events) = Client::connect(config).await.unwrap();
    assert_eq!(client.session().session_id, "q1");
    let reply = client.echo(b"over quic").await.unwrap();
    assert_eq!(
        (reply.payload.as_slice(), reply.shard),
        (&b"over quic"[..], 4)
    );
    assert_eq!(next_event(&mut events).await, {
        Event::Echo {
            from_user: "u2".into(),
            payload: b"by datagram".to_vec(),
            seq: 0,
        }
    });
    assert_eq!(
        next_event(&mut events).await,
        Event::Echo {
            from_user: "u2".into(),
            payload: b"by stream".to_vec(),
            seq: 1,
        }
    );
    client.close().await;
    assert_eq!(next_event(&mut events).await, Event::Closed);
    tokio::time::timeout(WAIT, gateway).await.unwrap().unwrap();
}
