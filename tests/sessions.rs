//! Session life over real sockets: heartbeats, several devices per user,
//! resume with exact replay, slow consumers, and shutdown.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use huddle_client::Event;
use huddle_schema::encode::ResumeFields;
use huddle_schema::wire::{ErrorCode, PresenceStatus};
use huddle_schema::{verify_frame, CloseCode, Encoder};

/// The slow-consumer tests count SLOW_CONSUMER errors in the process-wide
/// metrics: one at a time.
static SLOW_CONSUMER_TESTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn status_of(client: &huddle_client::Client, user: &str) -> (PresenceStatus, u32) {
    let rows = client.presence(&[user]).await.unwrap();
    (rows[0].status, rows[0].connections)
}

/// Polls presence until it shows `want` (the session directory updates
/// asynchronously after a close); panics after a generous hang guard.
async fn wait_for_status(client: &huddle_client::Client, user: &str, want: (PresenceStatus, u32)) {
    for _ in 0..200 {
        if status_of(client, user).await == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!(
        "{user} never reached {want:?}; last {:?}",
        status_of(client, user).await
    );
}

#[tokio::test]
async fn a_silent_connection_is_closed_after_the_heartbeat_timeout() {
    let gw = TestGateway::start_with(|c| {
        c.session.heartbeat_ms = 100;
        c.session.heartbeat_timeout_ms = 400;
        c.session.resume_window_ms = 200;
    })
    .await;
    for url in gw.urls() {
        let (observer, _) = gw.client(&url, "observer").await;
        let (mut silent, _) = gw.raw_session(&url, "silent").await;
        assert_eq!(
            status_of(&observer, "silent").await.0,
            PresenceStatus::ONLINE
        );
        // Never ping: the gateway gives up on us (its own pings don't count).
        let mut saw_ping = false;
        while let Ok(Some(frame)) = tokio::time::timeout(Duration::from_secs(20), silent.recv())
            .await
            .expect("hang guard")
        {
            let f = verify_frame(&frame, 1 << 20).unwrap();
            saw_ping |= f.body_as_ping().is_some();
        }
        assert!(
            saw_ping,
            "the gateway pinged the quiet client before giving up"
        );
        expect_closed_with(
            &mut silent,
            CloseCode::HeartbeatTimeout,
            &format!("silent client over {url}"),
        )
        .await;
        // After the resume window the session is cleaned up.
        wait_for_status(&observer, "silent", (PresenceStatus::OFFLINE, 0)).await;
        observer.close().await;
    }
}

#[tokio::test]
async fn two_devices_one_user_online_once_offline_after_the_last() {
    let gw = TestGateway::start().await;
    for url in gw.urls() {
        let (watcher, _) = gw.client(&url, "watcher").await;
        assert_eq!(
            status_of(&watcher, "dana").await,
            (PresenceStatus::OFFLINE, 0)
        );
        let (phone, mut phone_events) = gw.client(&url, "dana").await;
        let (pc, mut pc_events) = gw.client(&gw.quic_url, "dana").await;
        assert_eq!(
            status_of(&watcher, "dana").await,
            (PresenceStatus::ONLINE, 2)
        );

        // Send to user reaches every connection of theirs.
        let reply = watcher
            .echo_to("dana", b"to all devices", false)
            .await
            .unwrap();
        assert_eq!(reply.delivered, 2);
        for events in [&mut phone_events, &mut pc_events] {
            let next = tokio::time::timeout(Duration::from_secs(20), events.next());
            match next.await.expect("hang guard") {
                Some(Event::Echo {
                    from_user,
                    payload,
                    seq,
                }) => {
                    assert_eq!(
                        (from_user.as_str(), payload.as_slice(), seq),
                        ("watcher", &b"to all devices"[..], 1)
                    );
                }
                other => panic!("expected the echo event, got {other:?}"),
            }
        }

        phone.close().await;
        wait_for_status(&watcher, "dana", (PresenceStatus::ONLINE, 1)).await;
        pc.close().await;
        wait_for_status(&watcher, "dana", (PresenceStatus::OFFLINE, 0)).await;
        watcher.close().await;
    }
}

async fn next_echo(events: &mut huddle_client::EventStream) -> (u64, Vec<u8>) {
    loop {
        match tokio::time::timeout(Duration::from_secs(20), events.next())
            .await
            .expect("hang guard")
        {
            Some(Event::Echo { seq, payload, .. }) => return (seq, payload),
            Some(_) => continue,
            None => panic!("event stream ended"),
        }
    }
}

#[tokio::test]
async fn resume_replays_exactly_the_missed_events() {
    let gw = TestGateway::start().await;
    for url in gw.urls() {
        let (sender, _) = gw.client(&url, "sender").await;
        let (receiver, mut events) = gw.client(&url, "receiver").await;
        for i in 0..3u8 {
            sender.echo_to("receiver", &[i], false).await.unwrap();
        }
        for i in 0..3u8 {
            assert_eq!(next_echo(&mut events).await, (u64::from(i) + 1, vec![i]));
        }
        receiver.drop_connection_for_tests();
        // Sent while the receiver is away (or before the gateway notices).
        for i in 3..8u8 {
            sender.echo_to("receiver", &[i], false).await.unwrap();
        }
        let mut got = Vec::new();
        let mut resumed = None;
        while got.len() < 5 {
            match tokio::time::timeout(Duration::from_secs(20), events.next())
                .await
                .expect("hang guard")
            {
                Some(Event::Echo { seq, payload, .. }) => got.push((seq, payload)),
                Some(Event::Reconnected { resumed: r, .. }) => resumed = Some(r),
                Some(Event::SessionReset) => {
                    panic!("resume must succeed inside the window over {url}")
                }
                Some(other) => eprintln!("{url}: {other:?}"),
                None => panic!("stream ended"),
            }
        }
        assert_eq!(resumed, Some(true), "the SDK resumed the same session");
        let want: Vec<(u64, Vec<u8>)> = (3..8u8).map(|i| (u64::from(i) + 1, vec![i])).collect();
        assert_eq!(
            got, want,
            "every missed event once, in order, with its original seq"
        );
        // Nothing more: no duplicates trail behind.
        sender.echo_to("receiver", b"live", false).await.unwrap();
        assert_eq!(next_echo(&mut events).await, (9, b"live".to_vec()));
        receiver.close().await;
        sender.close().await;
    }
}

#[tokio::test]
async fn volatile_events_are_unsequenced_and_not_replayed() {
    let gw = TestGateway::start().await;
    for url in gw.urls() {
        let (sender, _) = gw.client(&url, "typist").await;
        let (_reader, mut events) = gw.client(&url, "watcher").await;
        sender.echo_to("watcher", b"is typing", true).await.unwrap();
        sender.echo_to("watcher", b"message", false).await.unwrap();
        let mut got = Vec::new();
        while got.len() < 2 {
            let next = tokio::time::timeout(Duration::from_secs(20), events.next());
            match next.await.expect("hang guard") {
                Some(Event::Echo { seq, payload, .. }) => got.push((seq, payload)),
                Some(_) => {}
                None => panic!("event stream ended"),
            }
        }
        got.sort();
        assert_eq!(
            got,
            vec![(0, b"is typing".to_vec()), (1, b"message".to_vec())],
            "volatile events carry seq 0 (over QUIC as datagrams); reliable ones are numbered from 1"
        );
    }
}

#[tokio::test]
async fn resume_after_the_window_fails_and_a_fresh_session_works() {
    let gw = TestGateway::start_with(|c| c.session.resume_window_ms = 300).await;
    for url in gw.urls() {
        let (conn, welcome) = gw.raw_session(&url, "late").await;
        conn.abort();
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let mut again = gw.raw(&url).await;
        let resume = ResumeFields {
            session_id: &welcome.session_id,
            resume_token: &welcome.resume_token,
            last_seq: 0,
        };
        let reply = hello(&mut again, Some(&token("late")), Some(resume)).await;
        expect_refusal(
            &mut again,
            &reply,
            ErrorCode::RESUME_FAILED,
            "resume after the window",
        )
        .await;

        // A wrong token inside the window is refused the same way.
        let (conn, welcome) = gw.raw_session(&url, "late").await;
        conn.abort();
        let mut again = gw.raw(&url).await;
        let resume = ResumeFields {
            session_id: &welcome.session_id,
            resume_token: "00000000000000000000000000000001",
            last_seq: 0,
        };
        let reply = hello(&mut again, Some(&token("late")), Some(resume)).await;
        expect_refusal(
            &mut again,
            &reply,
            ErrorCode::RESUME_FAILED,
            "resume with a wrong token",
        )
        .await;

        let (_conn, fresh) = gw.raw_session(&url, "late").await;
        assert!(!fresh.resumed);
    }
}

#[tokio::test]
async fn a_slow_consumer_is_cut_off_while_others_keep_receiving() {
    let _one = SLOW_CONSUMER_TESTS.lock().await;
    let gw = TestGateway::start_with(|c| {
        c.session.outbound_queue = 32;
        c.session.volatile_shed_at = 16;
        c.session.rate_per_s = 100_000.0;
        c.session.rate_burst = 100_000.0;
    })
    .await;
    for url in gw.urls() {
        let (sender, _) = gw.client(&url, "firehose").await;
        let (healthy, mut healthy_events) = gw.client(&url, "healthy").await;
        // The slow one handshakes and then never reads.
        let (mut slow, _) = gw.raw_session(&url, "slowpoke").await;
        let payload = vec![0xAB; 48 * 1024];
        let mut delivered_to_healthy = 0;
        for round in 0..400u32 {
            if sender
                .echo_to("slowpoke", &payload, false)
                .await
                .unwrap()
                .delivered
                == 0
            {
                break; // the gateway has dropped the slow session
            }
            sender
                .echo_to("healthy", &round.to_le_bytes(), false)
                .await
                .unwrap();
            let (seq, body) = next_echo(&mut healthy_events).await;
            assert_eq!(
                (seq, body),
                (u64::from(round) + 1, round.to_le_bytes().to_vec())
            );
            delivered_to_healthy += 1;
        }
        assert!(delivered_to_healthy > 0);
        // The slow client, reading again, finds its connection closed with
        // SLOW_CONSUMER as the close code. Over WebSocket the Error frame
        // gets through too (the gateway waits a moment for the full socket);
        // over QUIC the blocked write was cut inside a frame, so the stream
        // is reset and only the close says why.
        let frames = read_to_end(&mut slow).await;
        let last = frames.last().and_then(|f| parse_error(f));
        if slow.transport() == huddle_client::Transport::Ws {
            let (_, code, closing, _) = last.expect("the last frame is an Error");
            assert_eq!((code, closing), (ErrorCode::SLOW_CONSUMER, true));
        } else if let Some((_, code, closing, _)) = last {
            assert_eq!((code, closing), (ErrorCode::SLOW_CONSUMER, true));
        }
        expect_closed_with(
            &mut slow,
            CloseCode::Error(ErrorCode::SLOW_CONSUMER),
            &format!("slow consumer over {url}"),
        )
        .await;
        let rows = healthy.presence(&["slowpoke"]).await.unwrap();
        assert_eq!(
            rows[0].status,
            PresenceStatus::OFFLINE,
            "the slow session is over, not resumable"
        );
        // The healthy client is still served.
        assert_eq!(
            healthy.echo(b"still here").await.unwrap().payload,
            b"still here"
        );
        sender.close().await;
        healthy.close().await;
    }
}

#[tokio::test]
async fn a_client_that_stops_reading_is_closed_with_slow_consumer_and_may_resume() {
    let _one = SLOW_CONSUMER_TESTS.lock().await;
    // A queue too large to overflow here: the write stalls first.
    let gw = TestGateway::start_with(|c| {
        c.session.heartbeat_ms = 200;
        c.session.heartbeat_timeout_ms = 800;
        c.session.outbound_queue = 100_000;
        c.session.volatile_shed_at = 50_000;
        c.session.outbound_queue_bytes = 256 << 20;
        c.session.replay_buffer = 100_000;
        c.session.replay_buffer_bytes = 256 << 20;
        c.session.rate_per_s = 100_000.0;
        c.session.rate_burst = 100_000.0;
    })
    .await;
    for url in gw.urls() {
        let user = format!("stalled-{}", url.split(':').next().unwrap());
        let (sender, _) = gw.client(&url, "pusher").await;
        let (slow, welcome) = gw.raw_session(&url, &user).await;
        // It keeps pinging (so it is not silent) but never reads.
        let (mut tx, mut rx) = slow.split();
        let pinger = tokio::spawn(async move {
            let mut enc = Encoder::new();
            loop {
                if tx.send(enc.ping(0, 0, 0)).await.is_err() {
                    return tx;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        let before = errors_sent(ErrorCode::SLOW_CONSUMER);
        let payload = vec![0xCD; 48 * 1024];
        let mut rounds = 0;
        while errors_sent(ErrorCode::SLOW_CONSUMER) == before {
            assert!(rounds < 4_000, "the stalled write is noticed");
            sender.echo_to(&user, &payload, false).await.unwrap();
            rounds += 1;
        }
        pinger.abort();
        // Reading again: what the socket held, then why it closed.
        let mut last_seq = 0;
        let mut last = None;
        while let Ok(Some(frame)) = tokio::time::timeout(Duration::from_secs(20), rx.recv())
            .await
            .expect("hang guard")
        {
            last_seq = last_seq.max(verify_frame(&frame, 1 << 20).unwrap().seq());
            last = Some(frame);
        }
        let last = last.as_deref().and_then(parse_error);
        let what = format!("stalled reader over {url}");
        if url.starts_with("ws") {
            let (_, code, closing, message) = last.expect("the last frame is an Error");
            assert_eq!(
                (code, closing),
                (ErrorCode::SLOW_CONSUMER, true),
                "{message}"
            );
            assert!(message.contains("resume"), "{message}");
        }
        let close = rx.peer_close().await.expect("a close code");
        assert_eq!(
            close.meaning,
            Some(CloseCode::Error(ErrorCode::SLOW_CONSUMER)),
            "{what}: {close:?}"
        );
        // Unlike an overflowed queue, a stall leaves the session resumable.
        let mut again = gw.raw(&url).await;
        let resume = ResumeFields {
            session_id: &welcome.session_id,
            resume_token: &welcome.resume_token,
            last_seq,
        };
        let reply = hello(&mut again, Some(&token(&user)), Some(resume)).await;
        let resumed = parse_welcome(&reply).unwrap_or_else(|| panic!("{what}: {reply:?}"));
        assert!(resumed.resumed, "{what}");
        sender.close().await;
    }
}

#[tokio::test]
async fn shutdown_sends_goaway_after_what_is_owed() {
    let gw = TestGateway::start().await;
    let (_ws, mut ws_events) = gw.client(&gw.ws_url, "stayer").await;
    let (quic, mut quic_events) = gw.client(&gw.quic_url, "stayer").await;
    quic.echo_to("stayer", b"before shutdown", false)
        .await
        .unwrap();
    let drained = gw.shutdown().await;
    assert!(
        drained,
        "every connection finished within the shutdown timeout"
    );
    for events in [&mut ws_events, &mut quic_events] {
        let mut seen: HashMap<&str, bool> = HashMap::new();
        loop {
            match tokio::time::timeout(Duration::from_secs(20), events.next())
                .await
                .expect("hang guard")
            {
                Some(Event::Echo { payload, .. }) => {
                    assert_eq!(payload, b"before shutdown");
                    assert!(
                        !seen.contains_key("goaway"),
                        "owed events come before GoAway"
                    );
                    seen.insert("echo", true);
                }
                Some(Event::GoAway { .. }) => {
                    seen.insert("goaway", true);
                }
                Some(Event::Disconnected { close, .. }) => {
                    let close = close.expect("the gateway closed with a code");
                    assert_eq!(close.meaning, Some(CloseCode::GoingAway), "{close:?}");
                    seen.insert("going away", true);
                    break;
                }
                Some(_) => {}
                None => break,
            }
        }
        assert!(
            seen.contains_key("echo")
                && seen.contains_key("goaway")
                && seen.contains_key("going away"),
            "{seen:?}"
        );
    }
}

#[tokio::test]
async fn metrics_and_health_are_served() {
    let gw = TestGateway::start().await;
    let (client, _) = gw.client(&gw.ws_url, "metered").await;
    client.echo(b"count me").await.unwrap();
    let body = http_get(&format!("{}/metrics", gw.admin_url())).await;
    for series in [
        "huddle_connections{transport=\"ws\"}",
        "huddle_frames_in_total{type=\"EchoRequest\"}",
        "huddle_outbound_queue_depth",
        "huddle_shard_loop_lag_seconds{shard=\"0\"}",
    ] {
        assert!(body.contains(series), "missing {series} in\n{body}");
    }
    assert!(http_get(&format!("{}/healthz", gw.admin_url()))
        .await
        .contains("ok"));
    assert!(http_get(&format!("{}/readyz", gw.admin_url()))
        .await
        .contains("ready"));
}

/// A minimal HTTP/1.0 GET over a real socket.
async fn http_get(url: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut s = tokio::net::TcpStream::connect(host).await.unwrap();
    s.write_all(format!("GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test]
async fn followers_hear_status_changes_and_no_one_else_does() {
    let gw = TestGateway::start().await;
    for (n, url) in gw.urls().into_iter().enumerate() {
        let (star, star_name) = (format!("star{n}"), format!("star{n}"));
        let (fan, mut fan_events) = gw.client(&url, &format!("fan{n}")).await;
        let (_stranger, mut stranger_events) = gw.client(&url, &format!("stranger{n}")).await;
        let now = fan.follow(&[&star]).await.unwrap();
        assert_eq!(now[0].status, PresenceStatus::OFFLINE);

        let (player, _) = gw.client(&gw.quic_url, &star_name).await;
        let mut seen = Vec::new();
        player
            .set_status(PresenceStatus::IN_GAME, "ranked, map 3", false)
            .await
            .unwrap();
        player
            .set_status(PresenceStatus::AWAY, "", true)
            .await
            .unwrap();
        while seen.len() < 3 {
            let next = tokio::time::timeout(Duration::from_secs(20), fan_events.next());
            match next.await.expect("hang guard") {
                Some(Event::UserStatus {
                    user_id,
                    status,
                    text,
                    ..
                }) => {
                    assert_eq!(user_id, star);
                    seen.push((status, text));
                }
                Some(_) => {}
                None => panic!("stream ended"),
            }
        }
        assert_eq!(
            seen,
            vec![
                (PresenceStatus::ONLINE, String::new()),
                (PresenceStatus::IN_GAME, "ranked, map 3".to_string()),
                (PresenceStatus::OFFLINE, String::new()),
            ],
            "online, in game with its text, then invisible (looks offline)"
        );
        let rows = fan.presence(&[&star]).await.unwrap();
        assert_eq!(
            rows[0].status,
            PresenceStatus::OFFLINE,
            "invisible to presence queries too"
        );
        let err = player
            .set_status(PresenceStatus::BUSY, &"x".repeat(129), false)
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::INVALID_ARGUMENT));

        // Only followers were told.
        assert!(
            tokio::time::timeout(Duration::from_millis(300), async {
                loop {
                    if let Some(Event::UserStatus { .. }) = stranger_events.next().await {
                        return;
                    }
                }
            })
            .await
            .is_err(),
            "a user who does not follow hears nothing"
        );
        fan.unfollow(&[&star]).await.unwrap();
        player
            .set_status(PresenceStatus::BUSY, "", false)
            .await
            .unwrap();
        player.close().await;
        fan.close().await;
    }
}
