//! Admin HTTP: `/healthz` (the process answers), `/readyz` (503 from the
//! moment the node starts draining), `/metrics` (Prometheus text) and the
//! operator API under `/v1/` (bearer token `server.admin_token` when set,
//! checked by the [`Operator`] extractor before anything else of a request):
//! `POST /v1/drain` takes the node out of service without stopping it;
//! `POST /v1/channels` creates or reconfigures a chat channel;
//! `POST /v1/notifications` notifies one user, many, or everyone online;
//! `POST /v1/lobbies` creates lobbies in bulk with their players assigned,
//! `POST /v1/lobbies/close` closes one, `POST /v1/lobbies/start` starts one
//! with the game server's address; `POST /v1/ratings`,
//! `PUT /v1/matchmaking/queues` and `POST /v1/matchmaking/backfill[/cancel]`
//! are in [`matchmaking`].
//! Never on the client data path; reads and drains the node through
//! `ops::node`, never through the wiring in `ops::gateway`.

mod matchmaking;

use std::sync::Arc;

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::core::engine::chat::{Author, ChannelSpec};
use crate::core::engine::lobbies::{self, LobbySpec, Visibility};
use crate::core::engine::notifications::{Channel, NewNotification};
use crate::core::engine::UserId;
use crate::core::shard::ShardMsg;
use crate::ops::node::Gateway;
use crate::telemetry::metrics::metrics;

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(gw): State<Arc<Gateway>>) -> impl IntoResponse {
    if gw.draining.is_cancelled() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n".to_string())
    } else if let Some(why) = gw.store_health.failure() {
        // Still serving reads and volatile traffic, but sends are refused:
        // a load balancer should prefer other nodes.
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("store failing: {why}\n"),
        )
    } else {
        (StatusCode::OK, "ready\n".to_string())
    }
}

/// A write the operator asked for is refused while the store cannot keep
/// it (503, retry later), before anything changes.
pub(crate) fn store_refusal(gw: &Gateway) -> Result<(), Answer> {
    match gw.store_health.failure() {
        None => Ok(()),
        Some(why) => Err((
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the gateway cannot store this right now ({why}); nothing changed, retry shortly\n"
            ),
        )),
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

/// `POST /v1/drain`: the node drains as on SIGTERM but the process stays
/// up: `/readyz` answers 503 at once (before this answer is sent), GoAway
/// goes to every connection `server.drain_readyz_ms` later, and from then
/// on new connections are refused. Answers 202 at once; asking again
/// changes nothing. There is no undo: restart the process to serve again.
async fn drain(_: Operator, State(gw): State<Arc<Gateway>>) -> Answer {
    let began = gw.begin_drain();
    if began {
        let gw = gw.clone();
        tokio::spawn(async move { gw.finish_drain().await });
    }
    let body = serde_json::json!({
        "draining": true,
        "already": !began,
        "drain_readyz_ms": gw.config.server.drain_readyz_ms,
    });
    (StatusCode::ACCEPTED, format!("{body}\n"))
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

pub(crate) type Answer = (StatusCode, String);

/// Checks `Authorization: Bearer <server.admin_token>` when a token is set.
/// The comparison takes the same time wherever the tokens differ, and, on
/// SHA-256 digests, whatever their lengths: answer times tell nothing of the
/// token.
fn authorized(gw: &Gateway, headers: &HeaderMap) -> Result<(), Answer> {
    use sha2::{Digest, Sha256};
    use subtle::ConstantTimeEq;
    let Some(want) = gw.config.server.admin_token.as_deref() else {
        return Ok(());
    };
    let got = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
    let digest = |bytes: &[u8]| -> [u8; 32] { Sha256::digest(bytes).into() };
    let want = digest(want.as_bytes());
    let matches = got.is_some_and(|got| bool::from(digest(got)[..].ct_eq(&want[..])));
    if matches {
        Ok(())
    } else {
        Err((
            StatusCode::UNAUTHORIZED,
            "send Authorization: Bearer <server.admin_token>\n".into(),
        ))
    }
}

/// An operator's request: taking one as a handler argument runs the bearer
/// check first ([`authorized`]); a request without the right token is
/// answered 401 before the handler (or its body) is looked at.
pub(crate) struct Operator;

impl FromRequestParts<Arc<Gateway>> for Operator {
    type Rejection = Answer;

    async fn from_request_parts(parts: &mut Parts, gw: &Arc<Gateway>) -> Result<Self, Answer> {
        authorized(gw, &parts.headers).map(|()| Operator)
    }
}

async fn create_channel(
    _: Operator,
    State(gw): State<Arc<Gateway>>,
    Json(req): Json<ChannelRequest>,
) -> Answer {
    if let Err(refused) = store_refusal(&gw) {
        return refused;
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
    _: Operator,
    State(gw): State<Arc<Gateway>>,
    Json(req): Json<NotifyRequest>,
) -> Answer {
    if let Err(refused) = store_refusal(&gw) {
        return refused;
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

/// One lobby of `POST /v1/lobbies`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LobbyRequest {
    game: String,
    mode: String,
    region: String,
    min: u16,
    max: u16,
    #[serde(default = "invite_only")]
    visibility: String,
    #[serde(default)]
    password: Option<String>,
    #[serde(default = "yes")]
    chat: bool,
    #[serde(default)]
    settings: std::collections::BTreeMap<String, String>,
    players: Vec<Player>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Player {
    user_id: String,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    team: Option<u8>,
}

fn invite_only() -> String {
    "invite_only".into()
}

/// `POST /v1/lobbies` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LobbiesRequest {
    lobbies: Vec<LobbyRequest>,
}

/// Lobbies per bulk request at most.
const MAX_BULK_LOBBIES: usize = 1000;

/// Creates many lobbies with their players assigned (a tournament round);
/// each assigned player gets a `lobby.assigned` notification. Answers the
/// created ids and, by index, the lobbies refused and why.
async fn create_lobbies(
    _: Operator,
    State(gw): State<Arc<Gateway>>,
    Json(req): Json<LobbiesRequest>,
) -> Answer {
    // Each lobby notifies its players: refused, before anything is created,
    // while those notifications could not be stored.
    if let Err(refused) = store_refusal(&gw) {
        return refused;
    }
    if req.lobbies.is_empty() || req.lobbies.len() > MAX_BULK_LOBBIES {
        return (
            StatusCode::BAD_REQUEST,
            format!("give 1..={MAX_BULK_LOBBIES} lobbies\n"),
        );
    }
    let shards = &gw.shards;
    let mut pending = Vec::new();
    let mut failed = Vec::new();
    for (index, l) in req.lobbies.into_iter().enumerate() {
        let visibility = match l.visibility.as_str() {
            "public" => Visibility::Public,
            "private" => Visibility::Private,
            "invite_only" => Visibility::InviteOnly,
            other => {
                failed.push(serde_json::json!({ "index": index, "error": format!("unknown visibility {other:?}; use public, private or invite_only") }));
                continue;
            }
        };
        if l.players
            .iter()
            .any(|p| p.user_id.is_empty() || p.user_id.len() > 128)
        {
            failed.push(serde_json::json!({ "index": index, "error": "every user_id must be 1..=128 bytes" }));
            continue;
        }
        let assigned: Vec<(Author, Option<u8>)> = l
            .players
            .into_iter()
            .map(|p| {
                let id = UserId::from(p.user_id.as_str());
                let username: Arc<str> = Arc::from(p.username.unwrap_or_else(|| p.user_id.clone()));
                let display_name: Arc<str> =
                    Arc::from(p.display_name.unwrap_or_else(|| username.to_string()));
                (
                    Author {
                        id,
                        username,
                        display_name,
                    },
                    p.team,
                )
            })
            .collect();
        let users: Vec<UserId> = assigned.iter().map(|(a, _)| a.id.clone()).collect();
        let lobby_id: Arc<str> = Arc::from(format!("{:016x}", rand::random::<u64>()));
        let cmd = lobbies::Command::Create {
            request_id: 0,
            lobby_id: lobby_id.clone(),
            host: None,
            spec: LobbySpec {
                game: l.game,
                mode: l.mode,
                region: l.region,
                min: l.min,
                max: l.max,
                visibility,
                password: l.password,
                chat: l.chat,
                settings: l.settings,
            },
            assigned,
        };
        let (reply, rx) = oneshot::channel();
        let msg = ShardMsg::LobbyAdmin {
            cmd: Box::new(cmd),
            reply,
        };
        shards.send(shards.of_lobby(&lobby_id), msg).await;
        pending.push((index, lobby_id, users, rx));
    }
    let mut created = Vec::new();
    // The answer waits until the `lobby.assigned` notifications are stored.
    let mut notified = Vec::new();
    for (index, lobby_id, users, rx) in pending {
        match rx.await {
            Ok(Ok(Some(lobby))) => {
                let what = Arc::new(NewNotification {
                    kind: "lobby.assigned".into(),
                    title: "Your lobby is ready".into(),
                    body: format!("You were assigned to a {} lobby", lobby.game),
                    data: serde_json::json!({ "lobby_id": lobby_id, "game": lobby.game, "mode": lobby.mode }).to_string(),
                    channels: vec![Channel::InApp, Channel::Push],
                });
                let mut by_shard: Vec<Vec<UserId>> = vec![Vec::new(); shards.count()];
                for u in users {
                    by_shard[shards.of_user(&u)].push(u);
                }
                for (shard, users) in by_shard.into_iter().enumerate() {
                    if users.is_empty() {
                        continue;
                    }
                    let (reply, stored) = oneshot::channel();
                    let msg = ShardMsg::Announce {
                        users: Some(users),
                        what: what.clone(),
                        reply,
                    };
                    shards.send(shard, msg).await;
                    notified.push(stored);
                }
                created.push(serde_json::json!({ "index": index, "lobby_id": lobby_id }));
            }
            Ok(Ok(None)) => {}
            Ok(Err(f)) => failed.push(serde_json::json!({ "index": index, "error": f.message })),
            Err(_) => return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n".into()),
        }
    }
    for stored in notified {
        if stored.await.is_err() {
            return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n".into());
        }
    }
    let status = if created.is_empty() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    let body = serde_json::json!({ "created": created, "failed": failed });
    (status, format!("{body}\n"))
}

/// `POST /v1/lobbies/close` and `/v1/lobbies/start` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CloseRequest {
    lobby_id: String,
    /// start: the game server's connection payload for the members.
    #[serde(default)]
    connection: Option<String>,
}

/// An operator closes a lobby: every member hears `lobby:closed`.
async fn close_lobby(
    _: Operator,
    State(gw): State<Arc<Gateway>>,
    Json(req): Json<CloseRequest>,
) -> Answer {
    lobby_admin(&gw, req, false).await
}

/// The game backend starts a lobby and hands its members the game
/// server's address (`connection`): every member hears `STARTED`.
async fn start_lobby(
    _: Operator,
    State(gw): State<Arc<Gateway>>,
    Json(req): Json<CloseRequest>,
) -> Answer {
    lobby_admin(&gw, req, true).await
}

async fn lobby_admin(gw: &Gateway, req: CloseRequest, start: bool) -> Answer {
    let lobby_id: Arc<str> = Arc::from(req.lobby_id);
    let (reply, rx) = oneshot::channel();
    let cmd = if start {
        lobbies::Command::Start {
            request_id: 0,
            lobby_id: lobby_id.clone(),
            actor: None,
            connection: req.connection,
        }
    } else {
        lobbies::Command::Close {
            request_id: 0,
            lobby_id: lobby_id.clone(),
            actor: None,
        }
    };
    let msg = ShardMsg::LobbyAdmin {
        cmd: Box::new(cmd),
        reply,
    };
    gw.shards.send(gw.shards.of_lobby(&lobby_id), msg).await;
    match rx.await {
        Ok(Ok(_)) => {
            let done = if start { "started" } else { "closed" };
            (StatusCode::OK, format!("{{\"{done}\":{lobby_id:?}}}\n"))
        }
        Ok(Err(f)) if f.refusal == crate::core::engine::Refusal::LobbyNotFound => {
            (StatusCode::NOT_FOUND, format!("{}\n", f.message))
        }
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
        .route("/v1/drain", post(drain))
        .route("/v1/channels", post(create_channel))
        .route("/v1/notifications", post(notify))
        .route("/v1/lobbies", post(create_lobbies))
        .route("/v1/lobbies/close", post(close_lobby))
        .route("/v1/lobbies/start", post(start_lobby))
        .route("/v1/ratings", post(matchmaking::set_ratings))
        .route("/v1/matchmaking/queues", put(matchmaking::put_queues))
        .route("/v1/matchmaking/backfill", post(matchmaking::backfill))
        .route(
            "/v1/matchmaking/backfill/cancel",
            post(matchmaking::cancel_backfill),
        )
        .with_state(gw.clone());
    let done = gw.admin_stop.clone();
    let _ = axum::serve(listener, app)
        .with_graceful_shutdown(async move { done.cancelled().await })
        .await;
}
