//! Admin HTTP: `/healthz` (the process answers), `/readyz` (listeners bound,
//! shards running, not draining) and `/metrics` (Prometheus text). Operator
//! APIs of later issues mount here. Never on the client data path.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;

use crate::gateway::Gateway;
use crate::metrics::metrics;

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

/// Serves the admin API until the gateway's connections are gone.
pub async fn serve(gw: Arc<Gateway>, listener: TcpListener) {
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(prometheus))
        .with_state(gw.clone());
    let done = gw.shutdown.clone();
    let _ = axum::serve(listener, app)
        .with_graceful_shutdown(async move { done.cancelled().await })
        .await;
}
