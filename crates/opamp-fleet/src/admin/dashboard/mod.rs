//! The operators' web dashboard, served on the admin listener under `/ui`.
//!
//! Server-rendered HTML with one small script and one stylesheet, both compiled into the
//! binary (`include_str!`): nothing is fetched from elsewhere, so it works on an air-gapped
//! management network, and `cargo build` needs no Node. Sign-in exchanges an operator token
//! for a session cookie ([`session`]); pages that change over time are refreshed over
//! Server-Sent Events ([`live`]). Every answer carries a strict `Content-Security-Policy`.
//!
//! | path | what |
//! | --- | --- |
//! | `GET /ui` | fleet overview: agents per version and health, running rollouts (live) |
//! | `GET /ui/agents?labels=&version=&health=&connection=&page=` | agents, filtered and paged on the server |
//! | `GET /ui/agents/{uid}` | one agent and the audit records that name it |
//! | `GET /ui/catalog` | packages, versions, sizes, hashes, signer key ids, who added them |
//! | `GET /ui/rollouts`, `POST /ui/rollouts` | rollouts; the start form |
//! | `GET /ui/rollouts/{id}` | waves, failures with reasons, pause/resume/abort, audit trail (live) |
//! | `POST /ui/rollouts/{id}/pause`, `/resume`, `/abort` | the controls (CSRF token required) |
//! | `GET /ui/audit?after=` | the audit log, a page at a time |

mod html;
mod live;
mod pages;
mod rollouts;
mod session;

use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use http::{HeaderValue, header};
use tokio::sync::watch;

use super::routes::AdminState;
use session::Sessions;

/// The policy every dashboard answer carries: only this server's own script, styles and
/// event streams; no inline script or style, no frames, forms post only here.
pub(crate) const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; \
     frame-ancestors 'none'; base-uri 'none'";

const APP_JS: &str = include_str!("assets/app.js");
const STYLE_CSS: &str = include_str!("assets/style.css");

/// What the dashboard's handlers share.
#[derive(Clone)]
pub(crate) struct Dashboard {
    admin: AdminState,
    sessions: Sessions,
    fleet: Arc<watch::Sender<String>>,
}

/// The dashboard's routes (merged into the admin router, outside its bearer-token layer).
pub(crate) fn router(admin: AdminState) -> Router {
    let shutdown = admin.shutdown.clone();
    let dashboard = Dashboard {
        admin,
        sessions: Sessions::default(),
        fleet: Arc::new(watch::Sender::new(String::new())),
    };
    live::spawn_fleet_task(dashboard.clone(), dashboard.fleet.clone(), shutdown);
    let signed_in = Router::new()
        .route("/ui", get(pages::overview))
        .route("/ui/agents", get(pages::agents))
        .route("/ui/agents/{uid}", get(pages::agent))
        .route("/ui/catalog", get(pages::catalog))
        .route("/ui/rollouts", get(rollouts::list).post(rollouts::start))
        .route("/ui/rollouts/{id}", get(rollouts::show))
        .route("/ui/rollouts/{id}/pause", post(rollouts::pause))
        .route("/ui/rollouts/{id}/resume", post(rollouts::resume))
        .route("/ui/rollouts/{id}/abort", post(rollouts::abort))
        .route("/ui/audit", get(pages::audit))
        .route("/ui/live/fleet", get(live::fleet))
        .route("/ui/live/rollouts/{id}", get(live::rollout))
        .route("/ui/logout", post(session::logout))
        .layer(middleware::from_fn_with_state(
            dashboard.clone(),
            session::require_session,
        ));
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui") }))
        .route("/ui/", get(|| async { Redirect::to("/ui") }))
        .route("/ui/login", get(session::login_page).post(session::login))
        .route(
            "/ui/assets/app.js",
            get(|| async { asset(APP_JS, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/ui/assets/style.css",
            get(|| async { asset(STYLE_CSS, "text/css; charset=utf-8") }),
        )
        .merge(signed_in)
        .layer(middleware::from_fn(security_headers))
        .with_state(dashboard)
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        body,
    )
        .into_response()
}

/// Headers every dashboard answer carries.
async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}
