//! The operator API for matchmaking: `POST /v1/ratings` (the game backend
//! sets players' skill per game; the only way besides the token) and
//! `PUT /v1/matchmaking/queues` (replace every queue's rules without a
//! restart, the same path SIGHUP takes). Never on the client data path.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::Deserialize;

use super::{authorized, Answer};
use crate::config::QueueConfig;
use crate::engine::queues::{self, Command, Rating};
use crate::gateway::Gateway;
use crate::shard::ShardMsg;

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
    queues::DEFAULT_RATING.sigma
}

/// Sets ratings for one game; they apply to tickets started from now on.
pub(super) async fn set_ratings(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    Json(req): Json<RatingsRequest>,
) -> Answer {
    if let Err(denied) = authorized(&gw, &headers) {
        return denied;
    }
    let bad = |m: String| (StatusCode::BAD_REQUEST, m + "\n");
    if req.game.is_empty() || req.game.len() > queues::MAX_NAME {
        return bad(format!("game must be 1..={} bytes", queues::MAX_NAME));
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
                "rating for {:?}: user_id is 1..=128 bytes, mu and sigma finite numbers, sigma >= 0",
                r.user_id
            ));
        }
    }
    let game: Arc<str> = Arc::from(req.game.as_str());
    let shard = gw.shards.of_game(&game);
    let count = req.ratings.len();
    for r in req.ratings {
        let cmd = Command::SetRating {
            game: game.clone(),
            user: Arc::from(r.user_id),
            rating: Rating {
                mu: r.mu,
                sigma: r.sigma,
            },
            from_token: false,
        };
        let msg = ShardMsg::Matchmaking {
            cmd: Box::new(cmd),
            reply_to: None,
            watcher: None,
        };
        gw.shards.send(shard, msg).await;
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
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    Json(req): Json<QueuesRequest>,
) -> Answer {
    if let Err(denied) = authorized(&gw, &headers) {
        return denied;
    }
    match gw.configure_matchmaking(&req.queues).await {
        Ok(n) => (StatusCode::OK, format!("{{\"queues\":{n}}}\n")),
        Err(why) => (StatusCode::BAD_REQUEST, format!("{why}\n")),
    }
}
