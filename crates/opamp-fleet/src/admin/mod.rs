//! The admin API (axum, JSON, bearer token) and its typed client.
//!
//! Every route requires `Authorization: Bearer <admin token>` (compared in constant time)
//! and answers 401 otherwise. Errors are `{"error": "..."}` with 400 (bad request), 404,
//! 409 (conflicting rollout, invalid transition, changed package bytes), 422 (no agent to
//! roll out to) or 500.
//!
//! | method and path | body | answer |
//! | --- | --- | --- |
//! | `GET /api/v1/agents` | | `[AgentSummary]` |
//! | `GET /api/v1/agents/{uid}` | | [`AgentView`] (details: description, package statuses, effective config, remote config status, health tree, connection) |
//! | `POST /api/v1/agents/restart` | [`RestartRequest`] | [`RestartReport`]; 422 when no connected agent that accepts the command matches |
//! | `GET /api/v1/packages` | | `[PackageView]` |
//! | `POST /api/v1/packages?name=&version=&signature=<base64>&file_name=` | the file | `201 PackageView` |
//! | `GET /api/v1/configs` | | `[ConfigView]` |
//! | `POST /api/v1/configs` | [`ConfigUpload`] | `201` [`ConfigView`] |
//! | `POST /api/v1/rollouts` | [`RolloutRequest`] | `201` [`RolloutView`] (started) |
//! | `GET /api/v1/rollouts` | | `[RolloutListItem]` |
//! | `GET /api/v1/rollouts/{id}` | | [`RolloutView`] |
//! | `POST /api/v1/rollouts/{id}/pause`, `/resume`, `/abort` | abort: [`AbortRequest`] (optional) | [`RolloutView`] |
//! | `GET /api/v1/rollouts/{id}/events` | | Server-Sent Events `progress`: [`RolloutUpdate`], ends when terminal |
//! | `GET /api/v1/audit?rollout=&after=&limit=` | | `[AuditEntry]` |
//! | `GET /metrics` | | OpenMetrics text: the fleet's metrics, `opamp_build_info` and `process_*` |
//!
//! Without a token: `GET /healthz` (the process answers) and `GET /readyz` (the store answers
//! and the rollout driver runs), both `200` or `503` with a one-line reason. The web dashboard
//! lives under `/ui` (signed in with an operator token, then a session cookie).

pub mod agents;
mod client;
mod configs;
mod dashboard;
mod health;
mod process_metrics;
pub(crate) mod requests;
pub(crate) mod routes;
mod transport_metrics;
pub mod types;
pub mod views;

pub use agents::{AgentView, RestartReport, RestartRequest};
pub use client::{AdminClient, RolloutEvents};
pub use configs::{ConfigFileUpload, ConfigFileView, ConfigUpload, ConfigView};
pub(crate) use routes::{AdminState, router};
pub use types::{
    AbortRequest, ApiError, EnrollmentToken, EnrollmentTokenRequest, RolloutRequest, RolloutUpdate,
    RolloutView,
};
pub use views::{AgentSummary, AuditEntry, PackageView, RolloutListItem};
