//! The operator API for matchmaking: `POST /v1/ratings` (the game backend
//! sets players' skill per game; the only way besides the token),
//! `PUT /v1/matchmaking/queues` (replace every queue's rules without a
//! restart, the same path SIGHUP takes) and `POST /v1/matchmaking/backfill`
//! (a running match asks for replacements; `/cancel` withdraws it). Never
//! on the client data path.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;

use super::{Answer, Operator};
use crate::core::engine::matchmaking::{self, Command, Rating};
use crate::core::shard::ShardMsg;
use crate::ops::config::QueueConfig;
use crate::ops::node::Gateway;

/// Rows one `POST /v1/ratings` may carry.
const MAX_RATINGS: usize = 10_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RatingsRequest {
    game: String,
    ratings: Vec<RatingRow>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RatingRow {
    user_id: String,
    mu: f64,
    #[serde(default = "default_sigma")]
    sigma: f64,
}

fn default_sigma() -> f64 {
    matchmaking::DEFAULT_RATING.sigma
}

/// Sets ratings for one game; they apply to tickets started from now on.
pub(super) async fn set_ratings(
    _: Operator,
    State(gw): State<Arc<Gateway>>,
    Json(req): Json<RatingsRequest>,
) -> Answer {
    if let Err(refused) = super::store_refusal(&gw) {
        return refused;
    }
    let bad = |m: String| (StatusCode::BAD_REQUEST, m + "\n");
    if req.game.is_empty() || req.game.len() > matchmaking::MAX_NAME {
        return bad(format!("game must be 1..={} bytes", matchmaking::MAX_NAME));
    }
    if req.ratings.is_empty() || req.ratings.len() > MAX_RATINGS {
        return bad(format!("ratings must hold 1..={MAX_RATINGS} rows"));
    }
    for r in &req.ratings {
        let rating = Rating {
            mu: r.mu,
            sigma: r.sigma,
        };
        if r.user_id.is_empty() || r.user_id.len() > 128 || !rating.valid() {
            return bad(format!(
                "rating for {:?}: user_id is 1..=128 bytes, |mu| <= 1e9, 0 <= sigma <= 1e9",
                r.user_id
            ));
        }
    }
    let game: Arc<str> = Arc::from(req.game.as_str());
    let count = req.ratings.len();
    let cmd = Command::SetRatings {
        game: game.clone(),
        ratings: req
            .ratings
            .into_iter()
            .map(|r| {
                let rating = Rating {
                    mu: r.mu,
                    sigma: r.sigma,
                };
                (Arc::from(r.user_id), rating)
            })
            .collect(),
        from_token: false,
    };
    if let Err(answer) = matchmaking_admin(&gw, &game, cmd).await {
        return answer;
    }
    (StatusCode::OK, format!("{{\"set\":{count}}}\n"))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct QueuesRequest {
    queues: Vec<QueueConfig>,
}

/// Replaces every queue's rules; refused as a whole when any is bad.
pub(super) async fn put_queues(
    _: Operator,
    State(gw): State<Arc<Gateway>>,
    Json(req): Json<QueuesRequest>,
) -> Answer {
    match gw.configure_matchmaking(&req.queues).await {
        Ok(n) => (StatusCode::OK, format!("{{\"queues\":{n}}}\n")),
        Err(why) => (StatusCode::BAD_REQUEST, format!("{why}\n")),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct BackfillRequest {
    lobby_id: String,
    game: String,
    mode: String,
    region: String,
    /// The rating replacements should be near (the match's average).
    rating: f64,
    /// Open slots per team.
    open: Vec<u16>,
    #[serde(default)]
    match_id: String,
    /// The match's values for the queue's attributes: text or number.
    #[serde(default)]
    attributes: std::collections::BTreeMap<String, serde_json::Value>,
}

async fn matchmaking_admin(gw: &Gateway, game: &str, cmd: Command) -> Result<(), Answer> {
    let (reply, rx) = tokio::sync::oneshot::channel();
    let msg = ShardMsg::MatchmakingAdmin {
        cmd: Box::new(cmd),
        reply,
    };
    gw.shards.send(gw.shards.of_game(game), msg).await;
    match rx.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(f)) => {
            let status = if f.refusal == crate::core::engine::Refusal::MatchNotFound {
                StatusCode::NOT_FOUND
            } else {
                StatusCode::BAD_REQUEST
            };
            Err((status, format!("{}\n", f.message)))
        }
        Err(_) => Err((StatusCode::SERVICE_UNAVAILABLE, "shutting down\n".into())),
    }
}

/// A running match lost players: fill its open slots from the queue before
/// new matches form. Players placed join the lobby with their team and get
/// `matchmaking:matched` with its id. Replaces the lobby's open backfill.
pub(super) async fn backfill(
    _: Operator,
    State(gw): State<Arc<Gateway>>,
    Json(req): Json<BackfillRequest>,
) -> Answer {
    let names = [
        &req.lobby_id,
        &req.game,
        &req.mode,
        &req.region,
        &req.match_id,
    ];
    if names[..4].iter().any(|n| n.is_empty())
        || names.iter().any(|n| n.len() > matchmaking::MAX_NAME)
    {
        return (
            StatusCode::BAD_REQUEST,
            format!(
                "lobby_id, game, mode and region are 1..={} bytes (match_id at most that)\n",
                matchmaking::MAX_NAME
            ),
        );
    }
    let mut attributes = Vec::with_capacity(req.attributes.len());
    for (name, value) in &req.attributes {
        let value = match value {
            serde_json::Value::String(t) => {
                crate::core::engine::matchmaking::matcher::Attribute::Text(Arc::from(t.as_str()))
            }
            serde_json::Value::Number(n) => match n.as_f64() {
                Some(x) => crate::core::engine::matchmaking::matcher::Attribute::Number(x),
                None => {
                    return (
                        StatusCode::BAD_REQUEST,
                        format!("attribute {name}: not a number\n"),
                    )
                }
            },
            _ => {
                return (
                    StatusCode::BAD_REQUEST,
                    format!("attribute {name}: give text or a number\n"),
                )
            }
        };
        attributes.push((Arc::from(name.as_str()), value));
    }
    let request = matchmaking::BackfillRequest {
        attributes,
        lobby_id: Arc::from(req.lobby_id.as_str()),
        match_id: Arc::from(req.match_id.as_str()),
        game: Arc::from(req.game.as_str()),
        mode: Arc::from(req.mode.as_str()),
        region: Arc::from(req.region.as_str()),
        rating: req.rating,
        open: req.open,
    };
    match matchmaking_admin(&gw, &req.game, Command::Backfill(Box::new(request))).await {
        Ok(()) => (
            StatusCode::OK,
            format!("{{\"backfill\":{:?}}}\n", req.lobby_id),
        ),
        Err(answer) => answer,
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CancelBackfillRequest {
    lobby_id: String,
    game: String,
}

/// Withdraws a lobby's open backfill (404 when it has none).
pub(super) async fn cancel_backfill(
    _: Operator,
    State(gw): State<Arc<Gateway>>,
    Json(req): Json<CancelBackfillRequest>,
) -> Answer {
    let cmd = Command::CancelBackfill {
        game: Arc::from(req.game.as_str()),
        lobby_id: Arc::from(req.lobby_id.as_str()),
    };
    match matchmaking_admin(&gw, &req.game, cmd).await {
        Ok(()) => (
            StatusCode::OK,
            format!("{{\"cancelled\":{:?}}}\n", req.lobby_id),
        ),
        Err(answer) => answer,
    }
}
