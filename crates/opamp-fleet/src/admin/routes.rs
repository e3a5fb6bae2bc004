//! The admin API's routes and handlers.

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::Extension;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use futures_util::{Stream, StreamExt};
use http::{StatusCode, header};
use serde::Deserialize;
use subtle::ConstantTimeEq;
use tokio::io::AsyncWriteExt;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::agents::{AgentView, RestartReport, RestartRequest};
use super::types::{
    AbortRequest, ApiError, EnrollmentToken, EnrollmentTokenRequest, RolloutRequest, RolloutUpdate,
    RolloutView,
};
use super::views::{self, AgentSummary, AuditEntry, PackageView, RolloutListItem};

/// The admin API's OpenAPI 3.1 document, generated from the handlers' annotations and served
/// at `/api/v1/openapi.json`.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "opamp-rs fleet server admin API",
        description = "Agents, the package catalog, staged rollouts and the audit log. Every \
                       route but the health probes and this document needs \
                       `Authorization: Bearer <operator token>`; read-only operators get 403 on writes."
    ),
    paths(
        agents, agent, restart_agents, packages, add_package, super::configs::configs,
        super::configs::add_config, create_rollout, rollouts, rollout, pause, resume, abort,
        rollout_events, audit, metrics, create_enrollment_token, super::health::healthz,
        super::health::readyz, super::health::openapi_json
    ),
    components(schemas(
        RolloutRequest,
        AbortRequest,
        ApiError,
        RestartRequest,
        RestartReport,
        EnrollmentTokenRequest,
        EnrollmentToken,
        super::configs::ConfigUpload,
        super::configs::ConfigFileUpload
    )),
    modifiers(&BearerToken),
    security(("bearer" = []))
)]
pub(crate) struct AdminApiDoc;

/// Declares the bearer-token scheme the document's `security` refers to.
struct BearerToken;

impl utoipa::Modify for BearerToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}
use crate::FleetError;
use crate::RolloutError;
use crate::admin::requests::{Operation, Request as DriverRequest};
use crate::catalog::{Catalog, MAX_PACKAGE_SIZE, SharedStore, lock};
use crate::config::OperatorToken;
use crate::metrics::FleetMetrics;
use crate::rollout::{Rollout, RolloutId};
use crate::store::{AuditQuery, FleetStore, StoreError};
use opamp_transport::server::TransportStats;

/// What the handlers share.
#[derive(Clone)]
pub(crate) struct AdminState {
    pub(crate) operators: Arc<[OperatorToken]>,
    pub(crate) store: SharedStore,
    /// What [`read`] uses: committed state, without waiting for the coordinator's writes.
    pub(crate) reader: SharedStore,
    pub(crate) catalog: Catalog,
    pub(crate) driver: mpsc::Sender<DriverRequest>,
    pub(crate) updates: broadcast::Sender<RolloutUpdate>,
    pub(crate) metrics: Arc<FleetMetrics>,
    pub(crate) transport: TransportStats,
    pub(crate) upload_dir: PathBuf,
    pub(crate) shutdown: CancellationToken,
    pub(crate) agent_identity: crate::config::AgentIdentityMode,
}

/// The operator whose token authorised the request; the audit log records its name.
#[derive(Clone, Debug)]
struct Operator(Arc<str>);

/// The admin listener's routes: the bearer-token API, the unauthenticated health probes and
/// the dashboard (its own sign-in).
pub(crate) fn router(state: AdminState) -> Router {
    let api = Router::new()
        .route("/api/v1/agents", get(agents))
        .route("/api/v1/agents/restart", post(restart_agents))
        .route("/api/v1/agents/{uid}", get(agent))
        .route(
            "/api/v1/packages",
            get(packages)
                .post(add_package)
                .layer(DefaultBodyLimit::disable()),
        )
        .route(
            "/api/v1/configs",
            get(super::configs::configs)
                .post(super::configs::add_config)
                // Base64 of up to MAX_CONFIG_SIZE bytes, plus the JSON around it.
                .layer(DefaultBodyLimit::max(
                    crate::config_catalog::MAX_CONFIG_SIZE / 3 * 4 + 64 * 1024,
                )),
        )
        .route("/api/v1/rollouts", get(rollouts).post(create_rollout))
        .route("/api/v1/rollouts/{id}", get(rollout))
        .route("/api/v1/rollouts/{id}/pause", post(pause))
        .route("/api/v1/rollouts/{id}/resume", post(resume))
        .route("/api/v1/rollouts/{id}/abort", post(abort))
        .route("/api/v1/rollouts/{id}/events", get(rollout_events))
        .route("/api/v1/audit", get(audit))
        .route("/api/v1/enrollment-tokens", post(create_enrollment_token))
        .route("/metrics", get(metrics))
        .layer(middleware::from_fn_with_state(state.clone(), require_token))
        .with_state(state.clone());
    Router::new()
        .merge(api)
        .merge(super::health::router(state.clone()))
        .merge(super::dashboard::router(state))
}

/// The operator whose token is `presented`. Every token is compared, in constant time, so
/// the answer's timing does not tell which operator's token a guess came close to.
pub(crate) fn find_operator<'a>(
    operators: &'a [OperatorToken],
    presented: &str,
) -> Option<&'a OperatorToken> {
    operators.iter().fold(None, |found, operator| {
        let matches = bool::from(presented.as_bytes().ct_eq(operator.token.as_bytes()));
        found.or(matches.then_some(operator))
    })
}

async fn require_token(
    State(state): State<AdminState>,
    mut request: Request,
    next: Next,
) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        // Compared exactly, like every admin token (HTTP already drops the header's own
        // surrounding whitespace).
        .and_then(|v| v.strip_prefix("Bearer "));
    let operator = presented.and_then(|presented| find_operator(&state.operators, presented));
    if let Some(operator) = operator {
        let reads = matches!(*request.method(), http::Method::GET | http::Method::HEAD);
        if operator.read_only && !reads {
            return failure(
                StatusCode::FORBIDDEN,
                format!("operator {} may only read", operator.name),
            );
        }
        let operator = Operator(Arc::from(operator.name.as_str()));
        request.extensions_mut().insert(operator);
    } else {
        let mut response = failure(StatusCode::UNAUTHORIZED, "missing or wrong admin token");
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            http::HeaderValue::from_static("Bearer"),
        );
        return response;
    }
    next.run(request).await
}

fn failure(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        Json(ApiError {
            error: message.into(),
        }),
    )
        .into_response()
}

/// A [`FleetError`] as an HTTP answer.
pub(super) struct Failure(FleetError);

impl From<FleetError> for Failure {
    fn from(error: FleetError) -> Self {
        Failure(error)
    }
}

impl From<StoreError> for Failure {
    fn from(error: StoreError) -> Self {
        Failure(error.into())
    }
}

/// The HTTP status that answers `error`.
pub(crate) fn status_of(error: &FleetError) -> StatusCode {
    match error {
        FleetError::Rollout(
            RolloutError::InvalidSpec { .. } | RolloutError::InvalidSelector { .. },
        )
        | FleetError::InvalidPackage { .. }
        | FleetError::InvalidConfig { .. }
        | FleetError::Config { .. } => StatusCode::BAD_REQUEST,
        FleetError::NotFound { .. } => StatusCode::NOT_FOUND,
        FleetError::Rollout(
            RolloutError::Conflict { .. } | RolloutError::InvalidTransition { .. },
        )
        | FleetError::Store(StoreError::AlreadyExists { .. }) => StatusCode::CONFLICT,
        FleetError::Rollout(
            RolloutError::NoAgents { .. }
            | RolloutError::DuplicateAgent { .. }
            | RolloutError::TooManyAgents { .. },
        )
        | FleetError::NothingToRestart { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        FleetError::Coordinator { status, .. } => {
            StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
        }
        FleetError::Stopped | FleetError::Rollout(RolloutError::Unsaved { .. }) => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        FleetError::Io { source, .. } if source.kind() == std::io::ErrorKind::StorageFull => {
            StatusCode::INSUFFICIENT_STORAGE
        }
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let status = status_of(&self.0);
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error = %self.0, "admin request failed");
        }
        failure(status, self.0.to_string())
    }
}

pub(super) type Answer<T> = Result<T, Failure>;

/// Runs a store read on the blocking pool, through the admin API's reader (with SQLite its own
/// connection; with PostgreSQL the store's, which the driver may hold for a write).
pub(crate) async fn read<T: Send + 'static>(
    state: &AdminState,
    f: impl FnOnce(&(dyn FleetStore + Send)) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, FleetError> {
    let store = state.reader.clone();
    tokio::task::spawn_blocking(move || f(&*lock(&store)).map_err(FleetError::from))
        .await
        .map_err(|_| FleetError::Stopped)?
}

async fn load_rollout(state: &AdminState, id: RolloutId) -> Result<Rollout, FleetError> {
    let what = format!("rollout {id}");
    read(state, move |store| store.load_rollout(&id))
        .await?
        .ok_or(FleetError::NotFound { what })
}

/// Most agents one page of `GET /api/v1/agents` holds.
const MAX_AGENTS_PAGE: usize = 10_000;

#[derive(Debug, Deserialize)]
struct AgentsParams {
    after: Option<String>,
    limit: Option<usize>,
}

#[utoipa::path(get, path = "/api/v1/agents", tag = "agents",
    params(
        ("after" = Option<String>, Query, description = "only agents whose uid sorts after this one (the last uid of the previous page)"),
        ("limit" = Option<u32>, Query, description = "a page of at most this many agents in uid order (at most 10,000); without it and without `after`, every agent"),
    ),
    responses(
        (status = 200, description = "agents in uid order (`AgentSummary`: uid, labels, capabilities, package_versions, healthy, connected, last_seen in epoch ms, and with several server replicas the replica holding a connected agent); a page shorter than `limit` is the last", body = [Object]),
        (status = 400, description = "`after` is not an instance uid", body = ApiError),
        (status = 401, description = "missing or wrong token", body = ApiError),
    ))]
async fn agents(
    State(state): State<AdminState>,
    Query(params): Query<AgentsParams>,
) -> Answer<Response> {
    let after = match params.after.as_deref() {
        Some(text) => {
            Some(
                text.parse::<opamp_proto::InstanceUid>()
                    .map_err(|_| FleetError::Config {
                        reason: format!("after: {text:?} is not an instance uid"),
                    })?,
            )
        }
        None => None,
    };
    let limit = (after.is_some() || params.limit.is_some())
        .then(|| params.limit.unwrap_or(MAX_AGENTS_PAGE).min(MAX_AGENTS_PAGE));
    let (agents, replicas) = read(&state, move |store| {
        let agents = match limit {
            None => store.agents()?,
            Some(limit) => store.agents_page(after.as_ref(), limit)?,
        };
        let connected: Vec<_> = agents
            .iter()
            .filter(|a| a.connected)
            .map(|a| a.uid)
            .collect();
        let replicas = store.agent_replicas(&connected)?;
        Ok((agents, replicas))
    })
    .await?;
    let mut summaries = views::all::<_, AgentSummary>(&agents);
    for summary in summaries.iter_mut().filter(|summary| summary.connected) {
        summary.replica = replicas.get(&summary.uid).cloned();
    }
    Ok(Json(summaries).into_response())
}

#[utoipa::path(get, path = "/api/v1/agents/{uid}", tag = "agents",
    params(("uid" = String, Path, description = "instance uid (UUID text)")),
    responses(
        (status = 200, description = "the agent (`AgentView`: the `AgentSummary` fields plus `details`: identifying and non-identifying attributes, package statuses, effective config with its SHA-256, remote config status, component health tree, connection)", body = Object),
        (status = 400, description = "not an instance uid", body = ApiError),
        (status = 401, description = "missing or wrong token", body = ApiError),
        (status = 404, description = "no such agent", body = ApiError),
    ))]
async fn agent(State(state): State<AdminState>, Path(uid): Path<String>) -> Answer<Response> {
    let parsed: opamp_proto::InstanceUid = uid.parse().map_err(|_| FleetError::Config {
        reason: format!("{uid:?} is not an instance uid"),
    })?;
    let found = read(&state, move |store| {
        let Some(record) = store.agent(&parsed)? else {
            return Ok(None);
        };
        let details = store.agent_details(&parsed)?.unwrap_or_default();
        Ok(Some(AgentView::new(AgentSummary::from(&record), details)))
    })
    .await?;
    let view = found.ok_or(FleetError::NotFound {
        what: format!("agent {uid}"),
    })?;
    Ok(Json(view).into_response())
}

#[utoipa::path(post, path = "/api/v1/agents/restart", tag = "agents",
    request_body = RestartRequest,
    responses(
        (status = 200, description = "the `Restart` command was sent to the connected agents that match and accept it", body = RestartReport),
        (status = 400, description = "invalid selector", body = ApiError),
        (status = 401, description = "missing or wrong token", body = ApiError),
        (status = 403, description = "read-only operator", body = ApiError),
        (status = 422, description = "no connected agent that accepts restart commands matches", body = ApiError),
    ))]
async fn restart_agents(
    State(state): State<AdminState>,
    Extension(operator): Extension<Operator>,
    Json(request): Json<RestartRequest>,
) -> Answer<Response> {
    let report: RestartReport = ask(&state, |reply| DriverRequest::Restart {
        request,
        by: operator.0.to_string(),
        reply,
    })
    .await?;
    Ok(Json(report).into_response())
}

#[utoipa::path(get, path = "/api/v1/packages", tag = "packages",
    responses(
        (status = 200, description = "the catalog (`PackageView`: name, version, content_hash, size, signature, file_path, added_at, added_by)", body = [Object]),
        (status = 401, description = "missing or wrong token", body = ApiError),
    ))]
async fn packages(State(state): State<AdminState>) -> Answer<Response> {
    let packages = read(&state, |store| store.packages()).await?;
    Ok(Json(views::all::<_, PackageView>(&packages)).into_response())
}

#[derive(Debug, Deserialize)]
struct UploadQuery {
    name: String,
    version: String,
    /// Standard base64 of the release signature; empty or absent for none.
    #[serde(default)]
    signature: String,
    /// File name agents see at the end of the download URL (`package` when absent).
    file_name: Option<String>,
}

#[utoipa::path(post, path = "/api/v1/packages", tag = "packages",
    params(
        ("name" = String, Query, description = "package name"),
        ("version" = String, Query, description = "version"),
        ("signature" = Option<String>, Query, description = "standard base64 of the release signature"),
        ("file_name" = Option<String>, Query, description = "file name agents see in the download URL"),
    ),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "the package file"),
    responses(
        (status = 201, description = "added (`PackageView`)", body = Object),
        (status = 400, description = "bad name, version or signature", body = ApiError),
        (status = 401, description = "missing or wrong token", body = ApiError),
        (status = 403, description = "read-only operator", body = ApiError),
        (status = 409, description = "that version exists with other bytes", body = ApiError),
        (status = 413, description = "larger than the package size limit", body = ApiError),
    ))]
async fn add_package(
    State(state): State<AdminState>,
    Extension(operator): Extension<Operator>,
    Query(query): Query<UploadQuery>,
    body: Body,
) -> Answer<Response> {
    let invalid = |reason: String| FleetError::InvalidPackage {
        name: query.name.clone(),
        version: query.version.clone(),
        reason,
    };
    let signature = base64::engine::general_purpose::STANDARD
        .decode(query.signature.as_bytes())
        .map_err(|e| invalid(format!("signature is not base64: {e}")))?;
    let io = |context: &str| {
        let context = context.to_owned();
        move |source| FleetError::Io { context, source }
    };
    tokio::fs::create_dir_all(&state.upload_dir)
        .await
        .map_err(io("creating the upload directory"))?;
    // The upload lands in a temporary file first; the catalog then hashes it while copying
    // it into place, so the stored hash always describes the stored bytes.
    let upload =
        tempfile::tempdir_in(&state.upload_dir).map_err(io("creating an upload directory"))?;
    let file_name = query
        .file_name
        .as_deref()
        .and_then(|n| opamp_packages::PackageName::new(n).ok())
        .map_or_else(
            || "package".to_owned(),
            opamp_packages::PackageName::into_string,
        );
    let upload_path = upload.path().join(file_name);
    let mut file = tokio::fs::File::create(&upload_path)
        .await
        .map_err(io("creating the upload file"))?;
    let mut chunks = body.into_data_stream();
    let mut received: u64 = 0;
    // A failed write (a full disk) is answered once the body is read: a client still sending
    // would otherwise see a broken connection instead of the 507.
    let mut write_error = None;
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|e| invalid(format!("reading the body: {e}")))?;
        received = received.saturating_add(chunk.len() as u64);
        if received > MAX_PACKAGE_SIZE {
            return Ok(failure(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("packages are limited to {MAX_PACKAGE_SIZE} bytes"),
            ));
        }
        if write_error.is_none()
            && let Err(error) = file.write_all(&chunk).await
        {
            write_error = Some(error);
        }
    }
    if let Some(error) = write_error {
        return Err(io("writing the upload")(error).into());
    }
    file.flush().await.map_err(io("writing the upload"))?;
    drop(file);
    let catalog = state.catalog.clone();
    let entry = tokio::task::spawn_blocking(move || {
        let added = catalog.add_owned_file_by(
            &upload_path,
            &query.name,
            &query.version,
            signature,
            &operator.0,
        );
        drop(upload);
        added
    })
    .await
    .map_err(|_| FleetError::Stopped)??;
    Ok((StatusCode::CREATED, Json(PackageView::from(&entry))).into_response())
}

pub(crate) async fn ask<T>(
    state: &AdminState,
    request: impl FnOnce(oneshot::Sender<Result<T, FleetError>>) -> DriverRequest,
) -> Result<T, FleetError> {
    let (reply, answer) = oneshot::channel();
    state
        .driver
        .send(request(reply))
        .await
        .map_err(|_| FleetError::Stopped)?;
    answer.await.map_err(|_| FleetError::Stopped)?
}

#[utoipa::path(post, path = "/api/v1/rollouts", tag = "rollouts",
    request_body = RolloutRequest,
    responses(
        (status = 201, description = "planned and started (`RolloutView`)", body = Object),
        (status = 400, description = "invalid spec or selector", body = ApiError),
        (status = 401, description = "missing or wrong token", body = ApiError),
        (status = 403, description = "read-only operator", body = ApiError),
        (status = 409, description = "conflicts with a running rollout", body = ApiError),
        (status = 422, description = "no agent to roll out to", body = ApiError),
    ))]
async fn create_rollout(
    State(state): State<AdminState>,
    Extension(operator): Extension<Operator>,
    Json(request): Json<RolloutRequest>,
) -> Answer<Response> {
    let view: RolloutView = ask(&state, |reply| DriverRequest::Create {
        request,
        by: operator.0.to_string(),
        reply,
    })
    .await?;
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

#[utoipa::path(post, path = "/api/v1/enrollment-tokens", tag = "agents",
    request_body = EnrollmentTokenRequest,
    responses(
        (status = 201, description = "a one-time enrollment token, shown this once", body = EnrollmentToken),
        (status = 400, description = "invalid body", body = ApiError),
        (status = 401, description = "missing or wrong token", body = ApiError),
        (status = 403, description = "read-only operator", body = ApiError),
        (status = 409, description = "agent_identity.mode is not enrollment", body = ApiError),
    ))]
async fn create_enrollment_token(
    State(state): State<AdminState>,
    Extension(operator): Extension<Operator>,
    body: axum::body::Bytes,
) -> Answer<Response> {
    if state.agent_identity != crate::config::AgentIdentityMode::Enrollment {
        return Ok(failure(
            StatusCode::CONFLICT,
            format!(
                "agent_identity.mode is {}, not enrollment: no agent would use the token",
                state.agent_identity.as_str()
            ),
        ));
    }
    let request: EnrollmentTokenRequest = if body.iter().all(u8::is_ascii_whitespace) {
        EnrollmentTokenRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|error| FleetError::Config {
            reason: format!("invalid enrollment token request: {error}"),
        })?
    };
    let store = state.store.clone();
    let by = operator.0.to_string();
    let (token, expires_at) = tokio::task::spawn_blocking(move || {
        crate::enrollment::create_token(&store, &by, request.ttl)
    })
    .await
    .map_err(|_| FleetError::Stopped)??;
    tracing::info!(operator = %operator.0, expires_at = expires_at.as_millis(), "enrollment token created");
    Ok((
        StatusCode::CREATED,
        Json(EnrollmentToken { token, expires_at }),
    )
        .into_response())
}

#[utoipa::path(get, path = "/api/v1/rollouts", tag = "rollouts",
    responses(
        (status = 200, description = "every rollout (`RolloutListItem`)", body = [Object]),
        (status = 401, description = "missing or wrong token", body = ApiError),
    ))]
async fn rollouts(State(state): State<AdminState>) -> Answer<Response> {
    let rollouts = read(&state, |store| store.list_rollouts()).await?;
    Ok(Json(views::all::<_, RolloutListItem>(&rollouts)).into_response())
}

#[utoipa::path(get, path = "/api/v1/rollouts/{id}", tag = "rollouts",
    params(("id" = String, Path, description = "rollout id (a UUID)")),
    responses(
        (status = 200, description = "the rollout (`RolloutView`: spec, status, state, progress, waves, agents, skipped)", body = Object),
        (status = 401, description = "missing or wrong token", body = ApiError),
        (status = 404, description = "no such rollout", body = ApiError),
    ))]
async fn rollout(State(state): State<AdminState>, Path(id): Path<String>) -> Answer<Response> {
    let rollout = load_rollout(&state, RolloutId::new(id)).await?;
    Ok(Json(RolloutView::of(&rollout)).into_response())
}

async fn operate(
    state: &AdminState,
    operator: Operator,
    id: String,
    operation: Operation,
) -> Answer<Response> {
    let view = ask(state, |reply| DriverRequest::Operate {
        id: RolloutId::new(id),
        operation,
        by: operator.0.to_string(),
        reply,
    })
    .await?;
    Ok(Json(view).into_response())
}

#[utoipa::path(post, path = "/api/v1/rollouts/{id}/pause", tag = "rollouts",
    params(("id" = String, Path, description = "rollout id")),
    responses(
        (status = 200, description = "paused (`RolloutView`)", body = Object),
        (status = 401, description = "missing or wrong token", body = ApiError),
        (status = 403, description = "read-only operator", body = ApiError),
        (status = 404, description = "no such rollout", body = ApiError),
        (status = 409, description = "cannot pause in its state", body = ApiError),
    ))]
async fn pause(
    State(state): State<AdminState>,
    Extension(operator): Extension<Operator>,
    Path(id): Path<String>,
) -> Answer<Response> {
    operate(&state, operator, id, Operation::Pause).await
}

#[utoipa::path(post, path = "/api/v1/rollouts/{id}/resume", tag = "rollouts",
    params(("id" = String, Path, description = "rollout id")),
    responses(
        (status = 200, description = "resumed (`RolloutView`)", body = Object),
        (status = 401, description = "missing or wrong token", body = ApiError),
        (status = 403, description = "read-only operator", body = ApiError),
        (status = 404, description = "no such rollout", body = ApiError),
        (status = 409, description = "not paused", body = ApiError),
    ))]
async fn resume(
    State(state): State<AdminState>,
    Extension(operator): Extension<Operator>,
    Path(id): Path<String>,
) -> Answer<Response> {
    operate(&state, operator, id, Operation::Resume).await
}

#[utoipa::path(post, path = "/api/v1/rollouts/{id}/abort", tag = "rollouts",
    params(("id" = String, Path, description = "rollout id")),
    request_body(content = Option<AbortRequest>, description = "optional reason"),
    responses(
        (status = 200, description = "aborting (`RolloutView`)", body = Object),
        (status = 401, description = "missing or wrong token", body = ApiError),
        (status = 403, description = "read-only operator", body = ApiError),
        (status = 404, description = "no such rollout", body = ApiError),
        (status = 409, description = "already over", body = ApiError),
    ))]
async fn abort(
    State(state): State<AdminState>,
    Extension(operator): Extension<Operator>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Answer<Response> {
    let request: AbortRequest = if body.is_empty() {
        AbortRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| FleetError::Config {
            reason: format!("abort body: {e}"),
        })?
    };
    let reason = if request.reason.is_empty() {
        "aborted by an operator".to_owned()
    } else {
        request.reason
    };
    operate(&state, operator, id, Operation::Abort { reason }).await
}

#[utoipa::path(get, path = "/api/v1/rollouts/{id}/events", tag = "rollouts",
    params(("id" = String, Path, description = "rollout id")),
    responses(
        (status = 200, description = "Server-Sent Events named `progress`, each a `RolloutUpdate` (rollout, sequence, status, progress, audit); the stream ends when the rollout does", content_type = "text/event-stream", body = String),
        (status = 401, description = "missing or wrong token", body = ApiError),
        (status = 404, description = "no such rollout", body = ApiError),
    ))]
async fn rollout_events(
    State(state): State<AdminState>,
    Path(id): Path<String>,
) -> Answer<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>> {
    let id = RolloutId::new(id);
    // Subscribe before reading the current state so no step falls in between.
    let receiver = state.updates.subscribe();
    let rollout = load_rollout(&state, id.clone()).await?;
    let first = RolloutUpdate::of(&rollout, Vec::new());
    let shutdown = state.shutdown.clone();
    let stream = futures_util::stream::unfold(
        (Some(first), receiver, false),
        move |(first, mut receiver, done)| {
            let id = id.clone();
            let shutdown = shutdown.clone();
            let state = state.clone();
            async move {
                if done {
                    return None;
                }
                if let Some(update) = first {
                    let done = update.status.is_terminal();
                    return Some((Ok(sse(&update)), (None, receiver, done)));
                }
                loop {
                    let received = tokio::select! {
                        () = shutdown.cancelled() => return None,
                        received = receiver.recv() => received,
                    };
                    match received {
                        Ok(update) if update.rollout == id => {
                            let done = update.status.is_terminal();
                            return Some((Ok(sse(&update)), (None, receiver, done)));
                        }
                        Ok(_) => {}
                        Err(broadcast::error::RecvError::Lagged(skipped)) => {
                            tracing::debug!(rollout = %id, skipped, "rollout event stream fell behind; resynchronising from the store");
                            // Updates were dropped: resynchronise from the store so a missed
                            // terminal update still ends the stream. Through the reader, off
                            // this thread: the coordinator's connection may be held by the
                            // driver, and every admin request shares this thread (a 100,000-
                            // agent rollout lags a client often; waiting here stalled pages).
                            let Ok(rollout) = load_rollout(&state, id.clone()).await else {
                                return None;
                            };
                            let update = RolloutUpdate::of(&rollout, Vec::new());
                            let done = update.status.is_terminal();
                            return Some((Ok(sse(&update)), (None, receiver, done)));
                        }
                        Err(broadcast::error::RecvError::Closed) => return None,
                    }
                }
            }
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

fn sse(update: &RolloutUpdate) -> SseEvent {
    SseEvent::default()
        .event("progress")
        .data(serde_json::to_string(update).unwrap_or_default())
}

#[derive(Debug, Deserialize)]
struct AuditParams {
    rollout: Option<String>,
    after: Option<i64>,
    limit: Option<u32>,
}

#[utoipa::path(get, path = "/api/v1/audit", tag = "audit",
    params(
        ("rollout" = Option<String>, Query, description = "only this rollout's records"),
        ("after" = Option<i64>, Query, description = "only records after this position"),
        ("limit" = Option<u32>, Query, description = "at most this many, oldest first"),
    ),
    responses(
        (status = 200, description = "audit records (`AuditEntry`: position, record)", body = [Object]),
        (status = 401, description = "missing or wrong token", body = ApiError),
    ))]
async fn audit(
    State(state): State<AdminState>,
    Query(params): Query<AuditParams>,
) -> Answer<Response> {
    let mut query = AuditQuery::all();
    if let Some(rollout) = params.rollout {
        query = query.rollout(RolloutId::new(rollout));
    }
    if let Some(after) = params.after {
        query = query.after(after);
    }
    if let Some(limit) = params.limit {
        query = query.limit(limit);
    }
    let records = read(&state, move |store| store.audit_log(&query)).await?;
    Ok(Json(views::all::<_, AuditEntry>(&records)).into_response())
}

#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses(
        (status = 200, description = "Prometheus / OpenMetrics text", content_type = "application/openmetrics-text", body = String),
        (status = 401, description = "missing or wrong token", body = ApiError),
    ))]
async fn metrics(State(state): State<AdminState>) -> Answer<Response> {
    let (agents, packages) = read(&state, |store| Ok((store.agents()?, store.packages()?))).await?;
    state.metrics.set_catalog(
        packages
            .into_iter()
            .map(|entry| (entry.name, entry.version)),
    );
    state.metrics.set_agents(&agents);
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        super::process_metrics::append_to(
            &state.metrics.encode(),
            &super::transport_metrics::encode(&state.transport.snapshot()),
        ),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use utoipa::OpenApi as _;

    use super::AdminApiDoc;

    /// The paths the API and probe routers register, read from their source: every one must
    /// be in the OpenAPI document and the document must hold no other (the dashboard's HTML
    /// pages under `/ui` are not API).
    #[test]
    fn the_openapi_document_lists_exactly_the_routed_paths() {
        let sources = [include_str!("routes.rs"), include_str!("health.rs")];
        let routed: BTreeSet<String> = sources
            .iter()
            .flat_map(|source| source.split(".route(").skip(1))
            .filter_map(|rest| rest.trim_start().strip_prefix('"'))
            .filter_map(|rest| rest.split('"').next())
            .filter(|path| path.starts_with('/'))
            .map(str::to_owned)
            .collect();
        let documented: BTreeSet<String> = AdminApiDoc::openapi().paths.paths.into_keys().collect();
        assert_eq!(routed, documented);
    }
}
