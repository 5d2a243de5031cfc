//! Admin HTTP: `/healthz` (the process answers), `/readyz` (503 once the
//! gateway stops accepting and drains), `/metrics` (Prometheus text) and the
//! operator API under `/v1/` (bearer token `server.admin_token` when set):
//! `POST /v1/channels` creates or reconfigures a chat channel;
//! `POST /v1/notifications` notifies one user, many, or everyone online.
//! Never on the client data path.

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
use crate::engine::notifications::{Channel, NewNotification};
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

/// `POST /v1/notifications` body: exactly one of `user_ids` or
/// `all_online`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NotifyRequest {
    #[serde(default)]
    user_ids: Vec<String>,
    /// Every user connected to this node now (a server-wide announcement).
    #[serde(default)]
    all_online: bool,
    #[serde(default = "announcement")]
    kind: String,
    title: String,
    #[serde(default)]
    body: String,
    /// Any JSON for the game.
    #[serde(default)]
    data: Option<serde_json::Value>,
    /// Besides in_app: push, email.
    #[serde(default)]
    channels: Vec<Channel>,
}

fn announcement() -> String {
    "announcement".into()
}

/// Users per request at most (an announcement to everyone uses `all_online`).
const MAX_NOTIFY_USERS: usize = 10_000;
/// Longest title, body and data, bytes.
const MAX_NOTIFY_TEXT: usize = 4096;

async fn notify(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    Json(req): Json<NotifyRequest>,
) -> Answer {
    if let Err(denied) = authorized(&gw, &headers) {
        return denied;
    }
    let bad = |m: String| (StatusCode::BAD_REQUEST, m + "\n");
    if req.all_online != req.user_ids.is_empty() {
        return bad("give either user_ids (1 or more) or all_online: true".into());
    }
    if req.user_ids.len() > MAX_NOTIFY_USERS {
        return bad(format!(
            "at most {MAX_NOTIFY_USERS} user_ids per request; use all_online for everyone"
        ));
    }
    if req.user_ids.iter().any(|u| u.is_empty() || u.len() > 128) {
        return bad("every user id must be 1..=128 bytes".into());
    }
    let data = req.data.map(|d| d.to_string()).unwrap_or_default();
    if req.title.is_empty()
        || req.title.len() > MAX_NOTIFY_TEXT
        || req.body.len() > MAX_NOTIFY_TEXT
        || data.len() > MAX_NOTIFY_TEXT
        || req.kind.is_empty()
        || req.kind.len() > 64
    {
        return bad(format!(
            "title (1..={MAX_NOTIFY_TEXT} bytes), body and data (≤ {MAX_NOTIFY_TEXT} bytes) and kind (1..=64 bytes) are required within limits"
        ));
    }
    let what = Arc::new(NewNotification {
        kind: req.kind,
        title: req.title,
        body: req.body,
        data,
        channels: req.channels,
    });
    let shards = &gw.shards;
    let mut parts: Vec<Option<Vec<UserId>>> = if req.all_online {
        vec![None; shards.count()]
    } else {
        let mut ids = req.user_ids;
        ids.sort();
        ids.dedup();
        let mut parts = vec![Some(Vec::new()); shards.count()];
        for id in ids {
            if let Some(part) = &mut parts[shards.of_user(&id)] {
                part.push(UserId::from(id));
            }
        }
        parts
    };
    let mut pending = Vec::new();
    for (shard, users) in parts.drain(..).enumerate() {
        if users.as_ref().is_some_and(|u| u.is_empty()) {
            continue;
        }
        let (reply, rx) = oneshot::channel();
        let msg = ShardMsg::Announce {
            users,
            what: what.clone(),
            reply,
        };
        shards.send(shard, msg).await;
        pending.push(rx);
    }
    let mut notified = 0;
    for rx in pending {
        match rx.await {
            Ok(n) => notified += n,
            Err(_) => return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n".into()),
        }
    }
    (StatusCode::OK, format!("{{\"notified\":{notified}}}\n"))
}

/// Serves the admin API until the gateway's connections are gone.
pub async fn serve(gw: Arc<Gateway>, listener: TcpListener) {
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(prometheus))
        .route("/v1/channels", post(create_channel))
        .route("/v1/notifications", post(notify))
        .with_state(gw.clone());
    let done = gw.admin_stop.clone();
    let _ = axum::serve(listener, app)
        .with_graceful_shutdown(async move { done.cancelled().await })
        .await;
}
