//! Handshake and token rules over real sockets, on both transports: a good
//! token gets a Welcome and a working session; every failure gets its own
//! code and a closed connection.

mod common;

use common::*;
use huddle_schema::wire::ErrorCode;
use huddle_schema::{Encoder, PROTOCOL_VERSION};
use jsonwebtoken::{Algorithm, EncodingKey};

#[tokio::test]
async fn a_good_token_gets_a_session_that_answers() {
    let gw = TestGateway::start().await;
    for url in gw.urls() {
        let (client, _events) = gw.client(&url, "alice").await;
        let session = client.session();
        assert_eq!(session.user_id, "alice");
        assert_eq!(session.username, "name-alice");
        assert!(!session.session_id.is_empty());
        let reply = client.echo(b"ping over the shards").await.unwrap();
        assert_eq!(reply.payload, b"ping over the shards");
        assert!(reply.shard < 2, "one of the two shards answered");
        client.close().await;
    }
}

#[tokio::test]
async fn each_token_failure_has_its_own_code() {
    let gw = TestGateway::start().await;
    let hs = |c: &huddle::edge::auth::Claims| {
        sign(
            c,
            Algorithm::HS256,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
    };
    let mut expired = claims("u1");
    expired.exp = now_s() - 3600;
    let mut disabled = claims("u2");
    disabled.status = Some("banned".into());
    let mut not_yet = claims("u3");
    not_yet.nbf = Some(now_s() + 3600);
    let wrong_key = sign(
        &claims("u4"),
        Algorithm::HS256,
        &EncodingKey::from_secret(b"another secret"),
    );
    let cases: Vec<(&str, Option<String>, ErrorCode)> = vec![
        ("no token", None, ErrorCode::TOKEN_MISSING),
        ("empty token", Some(String::new()), ErrorCode::TOKEN_MISSING),
        (
            "garbage token",
            Some("not-a-jwt".into()),
            ErrorCode::TOKEN_INVALID,
        ),
        ("wrong key", Some(wrong_key), ErrorCode::TOKEN_INVALID),
        (
            "not valid yet",
            Some(hs(&not_yet)),
            ErrorCode::TOKEN_INVALID,
        ),
        ("expired", Some(hs(&expired)), ErrorCode::TOKEN_EXPIRED),
        (
            "disabled account",
            Some(hs(&disabled)),
            ErrorCode::ACCOUNT_DISABLED,
        ),
    ];
    for url in gw.urls() {
        for (what, token, code) in &cases {
            let mut conn = gw.raw(&url).await;
            let reply = hello(&mut conn, token.as_deref(), None).await;
            expect_refusal(&mut conn, &reply, *code, &format!("{what} over {url}")).await;
        }
    }
}

#[tokio::test]
async fn wrong_protocol_version_and_wrong_first_frame_are_refused() {
    let gw = TestGateway::start().await;
    for url in gw.urls() {
        let mut conn = gw.raw(&url).await;
        let frame = Encoder::new().hello(
            1,
            Some(&token("v")),
            "old-client",
            PROTOCOL_VERSION + 1,
            None,
            false,
        );
        conn.send(frame).await.unwrap();
        let reply = next_frame(&mut conn).await.unwrap();
        expect_refusal(
            &mut conn,
            &reply,
            ErrorCode::UNSUPPORTED_VERSION,
            "Hello.protocol_version 2",
        )
        .await;

        let mut conn = gw.raw(&url).await;
        conn.send(Encoder::new().echo_request(1, b"x", None, false))
            .await
            .unwrap();
        let reply = next_frame(&mut conn).await.unwrap();
        expect_refusal(
            &mut conn,
            &reply,
            ErrorCode::MALFORMED_FRAME,
            "a request before Hello",
        )
        .await;
    }
}

#[tokio::test]
async fn algorithm_is_pinned_against_confusion() {
    let public = fixture("rs256-public.pem");
    let gw = TestGateway::start_with(|c| {
        c.auth.algorithm = huddle::ops::config::JwtAlgorithm::RS256;
        c.auth.public_key = Some(public.clone());
        c.auth.secret = None;
    })
    .await;
    let private = std::fs::read(fixture("rs256-private.pem")).unwrap();
    let good = sign(
        &claims("rsa-user"),
        Algorithm::RS256,
        &EncodingKey::from_rsa_pem(&private).unwrap(),
    );
    // The classic attack: an HS256 token whose HMAC key is the server's public key.
    let public_pem = std::fs::read(&public).unwrap();
    let forged = sign(
        &claims("mallory"),
        Algorithm::HS256,
        &EncodingKey::from_secret(&public_pem),
    );
    for url in gw.urls() {
        let mut conn = gw.raw(&url).await;
        let reply = hello(&mut conn, Some(&good), None).await;
        assert_eq!(
            parse_welcome(&reply).expect("RS256 token accepted").user_id,
            "rsa-user"
        );

        let mut conn = gw.raw(&url).await;
        let reply = hello(&mut conn, Some(&forged), None).await;
        expect_refusal(
            &mut conn,
            &reply,
            ErrorCode::TOKEN_INVALID,
            "HS256 token under RS256",
        )
        .await;
    }
}

#[tokio::test]
async fn websocket_over_tls_works_with_the_dev_certificate() {
    let gw = TestGateway::start_with(|c| c.tls.ws_tls = true).await;
    let url = gw.ws_url.replace("ws://", "wss://");
    let (client, _events) = gw.client(&url, "secure").await;
    assert_eq!(client.echo(b"over tls").await.unwrap().payload, b"over tls");
    client.close().await;
}

#[tokio::test]
async fn es256_and_eddsa_keys_verify_their_own_tokens_only() {
    let dir = tempfile::tempdir().unwrap();
    for (alg, jwt_alg, rc_alg) in [
        (
            huddle::ops::config::JwtAlgorithm::ES256,
            Algorithm::ES256,
            &rcgen::PKCS_ECDSA_P256_SHA256,
        ),
        (
            huddle::ops::config::JwtAlgorithm::EdDSA,
            Algorithm::EdDSA,
            &rcgen::PKCS_ED25519,
        ),
    ] {
        let key = rcgen::KeyPair::generate_for(rc_alg).unwrap();
        let public = dir.path().join(format!("{alg:?}.pub.pem"));
        std::fs::write(&public, key.public_key_pem()).unwrap();
        let gw = TestGateway::start_with(|c| {
            c.auth.algorithm = alg;
            c.auth.public_key = Some(public.clone());
            c.auth.secret = None;
        })
        .await;
        let pem = key.serialize_pem();
        let signing = match jwt_alg {
            Algorithm::ES256 => EncodingKey::from_ec_pem(pem.as_bytes()).unwrap(),
            _ => EncodingKey::from_ed_pem(pem.as_bytes()).unwrap(),
        };
        let good = sign(&claims("keyed"), jwt_alg, &signing);
        let hs = sign(
            &claims("keyed"),
            Algorithm::HS256,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        );
        let mut conn = gw.raw(&gw.ws_url).await;
        let reply = hello(&mut conn, Some(&good), None).await;
        assert_eq!(
            parse_welcome(&reply).expect("accepted").user_id,
            "keyed",
            "{alg:?}"
        );
        let mut conn = gw.raw(&gw.ws_url).await;
        let reply = hello(&mut conn, Some(&hs), None).await;
        expect_refusal(
            &mut conn,
            &reply,
            ErrorCode::TOKEN_INVALID,
            &format!("HS256 under {alg:?}"),
        )
        .await;
    }
}

#[tokio::test]
async fn a_configured_audience_is_required_not_only_checked_when_present() {
    let gw = TestGateway::start_with(|c| c.auth.audience = Some("huddle-game".into())).await;
    let hs = |c: &huddle::edge::auth::Claims| {
        sign(
            c,
            Algorithm::HS256,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
    };
    let no_aud = hs(&claims("no-aud"));
    let mut ours = claims("ours");
    ours.aud = Some(huddle::edge::auth::Audience::One("huddle-game".into()));
    for url in gw.urls() {
        let mut conn = gw.raw(&url).await;
        let reply = hello(&mut conn, Some(&no_aud), None).await;
        let (_, _, _, message) = parse_error(&reply).expect("an Error frame");
        assert!(
            message.contains("`aud`"),
            "names the missing claim: {message}"
        );
        expect_refusal(
            &mut conn,
            &reply,
            ErrorCode::TOKEN_INVALID,
            &format!("a token without aud over {url}"),
        )
        .await;

        let mut conn = gw.raw(&url).await;
        let reply = hello(&mut conn, Some(&hs(&ours)), None).await;
        assert_eq!(
            parse_welcome(&reply).expect("a token with our aud").user_id,
            "ours"
        );
    }
}
