//! The operator API's bearer token over real HTTP: with `server.admin_token`
//! set, a `/v1/` request without it, or with any other token, is refused
//! with 401 and changes nothing; the right one is served. Probes stay open.

mod common;

use common::*;
use reqwest::StatusCode;

const ADMIN_TOKEN: &str = "operator-secret-4f9c";

#[tokio::test]
async fn the_operator_api_serves_only_the_configured_bearer_token() {
    let gw = TestGateway::start_with(|c| c.server.admin_token = Some(ADMIN_TOKEN.into())).await;
    let http = reqwest::Client::new();
    let channels = format!("{}/v1/channels", gw.admin_url());
    let create = |name: &str, authorization: Option<String>| {
        let mut req = http
            .post(&channels)
            .json(&serde_json::json!({ "name": name }));
        if let Some(value) = authorization {
            req = req.header(reqwest::header::AUTHORIZATION, value);
        }
        async move { req.send().await.expect("admin API answers").status() }
    };
    let refused = [
        ("no Authorization header", None),
        ("a wrong token", Some("Bearer not-the-token".to_string())),
        (
            "a prefix of the token",
            Some(format!("Bearer {}", &ADMIN_TOKEN[..8])),
        ),
        ("the token and more", Some(format!("Bearer {ADMIN_TOKEN}x"))),
        ("the token without Bearer", Some(ADMIN_TOKEN.to_string())),
    ];
    for (what, authorization) in refused {
        assert_eq!(
            create("refused", authorization).await,
            StatusCode::UNAUTHORIZED,
            "{what}"
        );
    }
    assert_eq!(
        create("lobby-news", Some(format!("Bearer {ADMIN_TOKEN}"))).await,
        StatusCode::OK,
        "the configured token"
    );

    // Nothing the refused requests asked for was done: only the authorized
    // channel exists.
    let (client, _events) = gw.client(&gw.ws_url, "reader").await;
    assert!(client.chat_join("channel:lobby-news").await.is_ok());
    assert!(client.chat_join("channel:refused").await.is_err());
    client.close().await;

    let health = http
        .get(format!("{}/healthz", gw.admin_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK, "probes need no token");
}
