//! Bad input on an open session: oversized frames, garbage, unknown union
//! members and request floods each get their code, and none of them takes
//! the gateway down for anyone else.

mod common;

use bytes::Bytes;
use common::*;
use huddle_schema::wire::ErrorCode;
use huddle_schema::{Encoder, PROTOCOL_VERSION};

#[tokio::test]
async fn an_oversized_frame_is_refused_and_closes_the_connection() {
    let gw = TestGateway::start().await;
    for url in gw.urls() {
        let (mut conn, _) = gw.raw_session(&url, "big").await;
        let payload = vec![7u8; 70 * 1024];
        conn.send(Encoder::new().echo_request(9, &payload, None, false))
            .await
            .unwrap();
        let reply = next_frame(&mut conn).await.expect("an answer");
        expect_refusal(
            &mut conn,
            &reply,
            ErrorCode::FRAME_TOO_LARGE,
            &format!("70 KiB frame over {url}"),
        )
        .await;
    }
}

#[tokio::test]
async fn garbage_is_malformed_and_the_limit_closes() {
    let gw = TestGateway::start_with(|c| c.session.max_malformed = 3).await;
    for url in gw.urls() {
        let (mut conn, _) = gw.raw_session(&url, "junk").await;
        for i in 0..2 {
            conn.send(Bytes::from_static(
                b"\x00\x01garbage that is not a flatbuffer",
            ))
            .await
            .unwrap();
            let (rid, code, closing, _) =
                parse_error(&next_frame(&mut conn).await.unwrap()).unwrap();
            assert_eq!(
                (rid, code, closing),
                (0, ErrorCode::MALFORMED_FRAME, false),
                "garbage #{i}"
            );
        }
        // Still usable in between.
        conn.send(Encoder::new().echo_request(5, b"ok", None, false))
            .await
            .unwrap();
        let reply = next_frame(&mut conn).await.unwrap();
        let f = huddle_schema::verify_frame(&reply, 1 << 20).unwrap();
        assert_eq!(f.request_id(), 5);
        assert!(f.body_as_echo_reply().is_some());

        conn.send(Bytes::from_static(b"third strike"))
            .await
            .unwrap();
        let reply = next_frame(&mut conn).await.unwrap();
        expect_refusal(
            &mut conn,
            &reply,
            ErrorCode::MALFORMED_FRAME,
            "third malformed frame",
        )
        .await;
    }
}

#[tokio::test]
async fn an_unknown_union_member_is_malformed_with_its_request_id() {
    let gw = TestGateway::start().await;
    for url in gw.urls() {
        let (mut conn, _) = gw.raw_session(&url, "future-client").await;
        conn.send(Encoder::new().raw_frame_for_tests(PROTOCOL_VERSION, 200))
            .await
            .unwrap();
        let (rid, code, closing, message) =
            parse_error(&next_frame(&mut conn).await.unwrap()).unwrap();
        assert_eq!((rid, code, closing), (1, ErrorCode::MALFORMED_FRAME, false));
        assert!(message.contains("200"), "names the unknown type: {message}");

        conn.send(Encoder::new().raw_frame_for_tests(PROTOCOL_VERSION + 4, 6))
            .await
            .unwrap();
        let (rid, code, closing, _) = parse_error(&next_frame(&mut conn).await.unwrap()).unwrap();
        assert_eq!(
            (rid, code, closing),
            (1, ErrorCode::UNSUPPORTED_VERSION, false)
        );

        conn.send(Encoder::new().welcome(3, &Default::default()))
            .await
            .unwrap();
        let (rid, code, _, message) = parse_error(&next_frame(&mut conn).await.unwrap()).unwrap();
        assert_eq!((rid, code), (3, ErrorCode::MALFORMED_FRAME), "{message}");
    }
}

#[tokio::test]
async fn a_request_flood_is_rate_limited_per_connection() {
    let gw = TestGateway::start_with(|c| {
        c.session.rate_per_s = 0.001;
        c.session.rate_burst = 5.0;
    })
    .await;
    for url in gw.urls() {
        let (mut flooder, _) = gw.raw_session(&url, "flooder").await;
        let mut enc = Encoder::new();
        for id in 1..=20u64 {
            flooder
                .send(enc.echo_request(id, b"x", None, false))
                .await
                .unwrap();
        }
        let (mut ok, mut limited) = (0, 0);
        for _ in 0..20 {
            let reply = next_frame(&mut flooder).await.unwrap();
            match parse_error(&reply) {
                Some((rid, ErrorCode::RATE_LIMITED, false, _)) => {
                    assert!((1..=20).contains(&rid));
                    limited += 1;
                }
                None => ok += 1,
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(ok, 5, "the burst goes through");
        assert_eq!(
            limited, 15,
            "the rest are refused, each with its request id"
        );

        // Another connection is not affected.
        let (other, _) = gw.client(&url, "bystander").await;
        assert_eq!(other.echo(b"fine").await.unwrap().payload, b"fine");
        other.close().await;
    }
}

#[tokio::test]
async fn presence_queries_are_bounded() {
    let gw = TestGateway::start().await;
    let (client, _) = gw.client(&gw.ws_url, "asker").await;
    let ids: Vec<String> = (0..501).map(|i| format!("u{i}")).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let err = client.presence(&refs).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::INVALID_ARGUMENT), "{err}");
    assert_eq!(client.presence(&refs[..500]).await.unwrap().len(), 500);
}
