//! Draining a node the way a load balancer sees it: `POST /v1/drain` turns
//! `/readyz` to 503 while every connection is still served, only then do
//! clients get `GoAway` (each its own jittered `reconnect_after_ms`) and a
//! going-away close, and the node stays up refusing new connections.

mod common;

use std::time::Duration;

use common::*;
use huddle_client::transport::connect_raw;
use huddle_schema::{verify_frame, CloseCode, Encoder};
use tokio::time::Instant;

const WINDOW_MS: u64 = 600;
const BASE_MS: u32 = 1_000;
const JITTER_MS: u32 = 60_000;

/// The status line's code of a raw HTTP answer.
fn status(answer: &str) -> u16 {
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("an HTTP answer: {answer:?}"))
}

async fn readyz(gw: &TestGateway) -> u16 {
    status(&admin_send(gw, "GET", "/readyz", "").await)
}

#[tokio::test]
async fn readyz_turns_503_before_any_client_hears_goaway() {
    let gw = TestGateway::start_with(|c| {
        c.server.drain_readyz_ms = WINDOW_MS;
        c.server.goaway_reconnect_ms = BASE_MS;
        c.server.goaway_jitter_ms = JITTER_MS;
        c.server.admin_token = Some("ops".into());
    })
    .await;
    assert_eq!(readyz(&gw).await, 200);
    // Two sessions per transport, each read by its own task, which notes
    // when GoAway came and what it said.
    let mut readers = Vec::new();
    let mut senders = Vec::new();
    for (n, url) in gw.urls().iter().chain(gw.urls().iter()).enumerate() {
        let (conn, _) = gw.raw_session(url, &format!("drained{n}")).await;
        let (tx, mut rx) = conn.split();
        senders.push(tx);
        readers.push(tokio::spawn(async move {
            let mut echoes = 0;
            loop {
                let frame = tokio::time::timeout(Duration::from_secs(20), rx.recv())
                    .await
                    .expect("hang guard")
                    .expect("the connection stays up until GoAway")
                    .expect("GoAway comes before the close");
                let f = verify_frame(&frame, 1 << 20).unwrap();
                if f.body_as_echo_reply().is_some() {
                    echoes += 1;
                }
                if let Some(go_away) = f.body_as_go_away() {
                    let at = Instant::now();
                    let after = go_away.reconnect_after_ms();
                    while let Ok(Some(_)) = rx.recv().await {}
                    return (at, after, echoes, rx.peer_close().await);
                }
            }
        }));
    }

    let denied = admin_post(&gw, "/v1/drain", "").await;
    assert_eq!(status(&denied), 401, "the drain needs the admin token");
    assert_eq!(readyz(&gw).await, 200, "a refused drain changes nothing");

    let addr = gw.running.as_ref().unwrap().admin_addr;
    let started = Instant::now();
    let answer = http(
        addr,
        "POST /v1/drain HTTP/1.0\r\nAuthorization: Bearer ops\r\nContent-Length: 0\r\n\r\n",
    )
    .await;
    assert_eq!(status(&answer), 202, "{answer}");
    // 503 from the moment the drain is accepted, and from then on.
    let mut first_503 = None;
    while started.elapsed() < Duration::from_millis(WINDOW_MS + 1_000) {
        let code = readyz(&gw).await;
        match first_503 {
            None => {
                assert_eq!(code, 503, "not ready as soon as the drain is accepted");
                first_503 = Some(Instant::now());
                // Existing connections are still served meanwhile.
                for (id, tx) in senders.iter_mut().enumerate() {
                    let echo =
                        Encoder::new().echo_request(id as u64 + 1, b"still here", None, false);
                    tx.send(echo).await.unwrap();
                }
            }
            Some(_) => assert_eq!(code, 503, "stays not ready"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let first_503 = first_503.unwrap();

    let mut delays = Vec::new();
    for reader in readers {
        let (goaway_at, after, echoes, close) = reader.await.unwrap();
        assert!(
            first_503 < goaway_at,
            "/readyz said 503 before any client heard GoAway"
        );
        assert!(
            goaway_at.duration_since(started) >= Duration::from_millis(WINDOW_MS),
            "GoAway waits out server.drain_readyz_ms"
        );
        assert_eq!(echoes, 1, "served during the window");
        assert!(
            (BASE_MS..=BASE_MS + JITTER_MS).contains(&after),
            "{after} ms is within the jitter window"
        );
        let close = close.expect("a close code after GoAway");
        assert_eq!(close.meaning, Some(CloseCode::GoingAway), "{close:?}");
        delays.push(after);
    }
    delays.sort_unstable();
    delays.dedup();
    assert!(delays.len() > 1, "sessions are told different delays");

    // The node stays up, out of service: new connections are refused.
    let health = admin_send(&gw, "GET", "/healthz", "").await;
    assert_eq!(status(&health), 200);
    for url in gw.urls() {
        assert!(
            connect_raw(&url, &gw.tls(), None).await.is_err(),
            "a drained node refuses new connections over {url}"
        );
    }
    let again = http(
        addr,
        "POST /v1/drain HTTP/1.0\r\nAuthorization: Bearer ops\r\nContent-Length: 0\r\n\r\n",
    )
    .await;
    assert_eq!(status(&again), 202);
    assert!(again.contains("\"already\":true"), "{again}");
    assert!(gw.shutdown().await, "shutdown after a drain still finishes");
}

/// One raw HTTP/1.0 exchange.
async fn http(addr: std::net::SocketAddr, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}
