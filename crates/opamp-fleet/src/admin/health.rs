//! Health probes for process supervisors and load balancers, answered without a token.
//!
//! `GET /healthz` says the process is up (it answers at all). `GET /readyz` says it can do its
//! work: the store answers a query and the rollout driver is running (the agent listener is
//! bound before the admin listener, and both stop together).

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::StatusCode;

use super::routes::{AdminState, read};
use crate::rollout::RolloutId;
use crate::store::FleetStore as _;

/// The probes' routes.
pub(crate) fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
}

async fn healthz() -> Response {
    (StatusCode::OK, "ok\n").into_response()
}

async fn readyz(State(state): State<AdminState>) -> Response {
    if state.driver.is_closed() || state.shutdown.is_cancelled() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the rollout driver stopped\n",
        )
            .into_response();
    }
    // A lookup of an id no rollout has: one indexed query, whatever the fleet's size.
    let probe = RolloutId::new("readyz-probe");
    match read(&state, move |store| store.load_rollout(&probe)).await {
        Ok(_) => (StatusCode::OK, "ready\n").into_response(),
        Err(error) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: the store does not answer: {error}\n"),
        )
            .into_response(),
    }
}
