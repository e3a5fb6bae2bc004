//! Health probes for process supervisors and load balancers, answered without a token.
//!
//! `GET /healthz` says the process is up (it answers at all). `GET /readyz` says it can do its
//! work: the store answers a query and the rollout driver is running (the agent listener is
//! bound before the admin listener, and both stop together). The API's OpenAPI document is
//! public too: it describes routes, not data.

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::StatusCode;

use super::routes::{AdminState, read};
use crate::rollout::RolloutId;

/// The probes' routes.
pub(crate) fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/api/v1/openapi.json", get(openapi_json))
        .with_state(state)
}

/// `GET /api/v1/openapi.json`: the admin API's description (public: it holds no data).
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "operations", security(()),
    responses((status = 200, description = "OpenAPI 3.1 document", body = Object)))]
pub(crate) async fn openapi_json() -> Response {
    axum::Json(<super::routes::AdminApiDoc as utoipa::OpenApi>::openapi()).into_response()
}

#[utoipa::path(get, path = "/healthz", tag = "operations", security(()),
    responses((status = 200, description = "the process is up", body = String)))]
pub(crate) async fn healthz() -> Response {
    (StatusCode::OK, "ok\n").into_response()
}

#[utoipa::path(get, path = "/readyz", tag = "operations", security(()),
    responses(
        (status = 200, description = "the store answers and the rollout driver runs", body = String),
        (status = 503, description = "not ready, with the reason", body = String),
    ))]
pub(crate) async fn readyz(State(state): State<AdminState>) -> Response {
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
