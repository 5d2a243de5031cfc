//! Admin HTTP: `/healthz` (the process answers), `/readyz` (503 once the
//! gateway stops accepting and drains), `/metrics` (Prometheus text) and the
//! operator API under `/v1/` (bearer token `server.admin_token` when set):
//! `POST /v1/channels` creates or reconfigures a chat channel. Never on the
//! client data path.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::engine::chat::ChannelSpec;
use crate::engine::UserId;
use crate::gateway::Gateway;
use crate::metrics::metrics;
use crate::shard::ShardMsg;

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(gw): State<Arc<Gateway>>) -> impl IntoResponse {
    if gw.stop_accepting.is_cancelled() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n")
    } else {
        (StatusCode::OK, "ready\n")
    }
}

async fn prometheus() -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        metrics().render(),
    )
}

/// `POST /v1/channels` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChannelRequest {
    /// The name after `channel:`.
    name: String,
    #[serde(default = "yes")]
    public: bool,
    #[serde(default)]
    read_only: bool,
    #[serde(default)]
    slow_mode_ms: u32,
    /// Who may join when the channel is not public.
    #[serde(default)]
    members: Vec<String>,
}

fn yes() -> bool {
    true
}

type Answer = (StatusCode, String);

fn authorized(gw: &Gateway, headers: &HeaderMap) -> Result<(), Answer> {
    let Some(want) = gw.config.server.admin_token.as_deref() else {
        return Ok(());
    };
    let got = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if got == Some(want) {
        Ok(())
    } else {
        Err((
            StatusCode::UNAUTHORIZED,
            "send Authorization: Bearer <server.admin_token>\n".into(),
        ))
    }
}

async fn create_channel(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    Json(req): Json<ChannelRequest>,
) -> Answer {
    if let Err(denied) = authorized(&gw, &headers) {
        return denied;
    }
    let id = format!("channel:{}", req.name);
    let spec = ChannelSpec {
        name: req.name,
        public: req.public,
        read_only: req.read_only,
        slow_mode_ms: req.slow_mode_ms,
        members: req.members.into_iter().map(UserId::from).collect(),
    };
    let (tx, rx) = oneshot::channel();
    gw.shards
        .send(
            gw.shards.of_chat(&id),
            ShardMsg::CreateChannel { spec, reply: tx },
        )
        .await;
    match rx.await {
        Ok(Ok(())) => (StatusCode::OK, format!("{{\"chat_id\":{id:?}}}\n")),
        Ok(Err(f)) => (StatusCode::BAD_REQUEST, format!("{}\n", f.message)),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n".into()),
    }
}

/// Serves the admin API until the gateway's connections are gone.
pub async fn serve(gw: Arc<Gateway>, listener: TcpListener) {
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(prometheus))
        .route("/v1/channels", post(create_channel))
        .with_state(gw.clone());
    let done = gw.admin_stop.clone();
    let _ = axum::serve(listener, app)
        .with_graceful_shutdown(async move { done.cancelled().await })
        .await;
}
