//! The HTTP API of `kallad scheduler` (SPEC 3): thin axum handlers over the [`JobManager`].
//!
//! Every error is `{"error": {"code", "message", "field"?}}` with a code of the published enum;
//! axum's own rejections (bad JSON, body too large) are turned into that shape too.

use crate::jobs::{JobManager, Submitted};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use kalla_core::PlanDescription;
use kalla_recipe::{ErrorBody, ErrorCode, JobRequest, JobState, JobStatus, KallaError, Mode};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use uuid::Uuid;

/// Largest accepted request body.
pub(crate) const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Shared state of the handlers.
#[derive(Debug, Clone)]
pub(crate) struct AppState {
    pub(crate) jobs: Arc<JobManager>,
    pub(crate) api_token: Option<crate::secret::Secret<Arc<str>>>,
    /// The embedded Ballista scheduler executors register with.
    pub(crate) cluster: Arc<kalla_cluster::scheduler::EmbeddedScheduler>,
    /// `--mode`.
    pub(crate) mode: crate::scheduler::ModeArg,
}

/// An API error as an HTTP response.
#[derive(Debug)]
pub(crate) struct ApiError(pub(crate) KallaError);

impl From<KallaError> for ApiError {
    fn from(e: KallaError) -> Self {
        ApiError(e)
    }
}

/// The HTTP status of an error code.
pub(crate) fn http_status(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::BadJson => StatusCode::BAD_REQUEST,
        ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::RunIdConflict => StatusCode::CONFLICT,
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::QueueFull | ErrorCode::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::UNPROCESSABLE_ENTITY,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = http_status(self.0.code);
        let retry = matches!(self.0.code, ErrorCode::QueueFull | ErrorCode::ShuttingDown);
        let unauthorized = self.0.code == ErrorCode::Unauthorized;
        let mut response = (status, Json(ErrorBody { error: self.0 })).into_response();
        if retry {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        if unauthorized {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

fn not_found(run_id: &str) -> ApiError {
    ApiError(KallaError::new(ErrorCode::NotFound, format!("no job with run_id {run_id}")))
}

/// The answer to an admitted submission (202).
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct Accepted {
    run_id: String,
    /// Always `queued`.
    status: JobState,
}

/// `GET /api/jobs`: newest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct JobList {
    jobs: Vec<JobStatus>,
}

/// The answer to a cancel request (202, idempotent).
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct CancelRequested {
    run_id: String,
    cancel_requested: bool,
}

/// `/ready`: where a job starting now would run, and the load.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct Readiness {
    mode: Mode,
    executors: usize,
    queued: usize,
    running: usize,
}

/// One live executor of `/api/cluster`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct ExecutorView {
    id: String,
    host: String,
    flight_port: u16,
    grpc_port: u16,
    slots: u32,
    /// Seconds since its last heartbeat.
    last_heartbeat_secs: Option<u64>,
    /// Its last heartbeat, RFC 3339 UTC.
    last_seen: Option<String>,
}

/// `/api/cluster`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct ClusterView {
    mode: Mode,
    executors: Vec<ExecutorView>,
}

/// The bearer token of `--api-token`, declared for every `/api/*` operation.
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The OpenAPI document of this API, generated from the handlers' annotations.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "kallad", description = "Kalla's reconciliation compute daemon"),
    paths(submit, validate, list, status, cancel, health, ready, metrics, cluster, openapi),
    components(schemas(
        ErrorBody, KallaError, ErrorCode, JobRequest, JobStatus, PlanDescription, Accepted, JobList, CancelRequested,
        Readiness, ClusterView, ExecutorView
    )),
    modifiers(&BearerAuth)
)]
pub(crate) struct ApiDoc;

#[utoipa::path(get, path = "/api/openapi.json", security(("bearer" = [])), responses((status = 200, description = "this document"), (status = 401, body = ErrorBody)))]
async fn openapi() -> Response {
    Json(<ApiDoc as utoipa::OpenApi>::openapi()).into_response()
}

#[utoipa::path(get, path = "/health", responses((status = 200, description = "the text OK", body = String)))]
async fn health() -> &'static str {
    "OK"
}

/// Builds the router.
pub(crate) fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/api/jobs", post(submit).get(list))
        .route("/api/jobs/validate", post(validate))
        .route("/api/jobs/{run_id}", get(status))
        .route("/api/jobs/{run_id}/cancel", post(cancel))
        .route("/api/cluster", get(cluster))
        .route("/api/openapi.json", get(openapi))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .merge(api)
        .fallback(|| async { ApiError(KallaError::new(ErrorCode::NotFound, "no such endpoint")) })
        .method_not_allowed_fallback(|| async {
            ApiError(KallaError::new(ErrorCode::MethodNotAllowed, "this endpoint does not take that method"))
        })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

async fn require_token(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if let Some(crate::secret::Secret(token)) = &state.api_token {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim_start());
        let ok = given.is_some_and(|g| constant_time_eq(g.as_bytes(), token.as_bytes()));
        if !ok {
            return ApiError(KallaError::new(ErrorCode::Unauthorized, "missing or wrong bearer token")).into_response();
        }
    }
    next.run(request).await
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The body, or the API's error when it is over the limit or unreadable.
fn checked_body(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError(KallaError::new(ErrorCode::PayloadTooLarge, format!("the body is over {MAX_BODY_BYTES} bytes")))
        } else {
            ApiError(KallaError::new(ErrorCode::BadJson, format!("cannot read the body: {}", e.body_text())))
        }
    })
}

#[utoipa::path(post, path = "/api/jobs", request_body = JobRequest, security(("bearer" = [])), responses((status = 202, description = "queued", body = Accepted), (status = 200, description = "the same request again: the job status", body = JobStatus), (status = 400, description = "bad_json", body = ErrorBody), (status = 401, description = "unauthorized", body = ErrorBody), (status = 409, description = "run_id_conflict", body = ErrorBody), (status = 413, description = "payload_too_large", body = ErrorBody), (status = 422, description = "a field the caller can fix", body = ErrorBody), (status = 503, description = "queue_full or shutting_down", body = ErrorBody)))]
async fn submit(State(state): State<AppState>, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    let body = checked_body(body)?;
    match state.jobs.submit(&body).await? {
        Submitted::Queued(s) => {
            Ok((StatusCode::ACCEPTED, Json(Accepted { run_id: s.run_id, status: JobState::Queued })).into_response())
        }
        Submitted::Existing(s) => Ok((StatusCode::OK, Json(s)).into_response()),
    }
}

#[utoipa::path(post, path = "/api/jobs/validate", request_body = JobRequest, security(("bearer" = [])), responses((status = 200, description = "what the job would produce", body = PlanDescription), (status = 400, description = "bad_json", body = ErrorBody), (status = 401, description = "unauthorized", body = ErrorBody), (status = 413, description = "payload_too_large", body = ErrorBody), (status = 422, description = "a field the caller can fix", body = ErrorBody)))]
async fn validate(State(state): State<AppState>, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    let body = checked_body(body)?;
    Ok(Json(state.jobs.validate(&body).await?).into_response())
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    limit: Option<usize>,
    status: Option<JobState>,
}

#[utoipa::path(get, path = "/api/jobs", params(("limit" = Option<usize>, Query, description = "at most this many, default 100"), ("status" = Option<JobState>, Query, description = "only jobs in this state")), security(("bearer" = [])), responses((status = 200, description = "newest first", body = JobList), (status = 401, body = ErrorBody), (status = 422, description = "a bad limit or status", body = ErrorBody)))]
async fn list(
    State(state): State<AppState>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    // The only field that can fail to parse names itself in the message (`limit` or `status`).
    let Query(q) = query.map_err(|e| {
        let text = e.body_text();
        let field = ["limit", "status"].into_iter().find(|f| text.contains(&format!("{f}:")));
        match field {
            Some(f) => ApiError(KallaError::at(ErrorCode::InvalidField, f, text)),
            None => ApiError(KallaError::new(ErrorCode::InvalidField, text)),
        }
    })?;
    let limit = q.limit.unwrap_or(100).min(1000);
    Ok(Json(JobList { jobs: state.jobs.list(limit, q.status) }).into_response())
}

fn parse_run_id(text: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(text)
        .map_err(|_| ApiError(KallaError::at(ErrorCode::InvalidField, "run_id", "run_id must be a UUID")))
}

#[utoipa::path(get, path = "/api/jobs/{run_id}", params(("run_id" = String, Path, description = "the job's UUID")), security(("bearer" = [])), responses((status = 200, body = JobStatus), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn status(State(state): State<AppState>, Path(run_id): Path<String>) -> Result<Response, ApiError> {
    let id = parse_run_id(&run_id)?;
    match state.jobs.status(id) {
        Some(s) => Ok(Json(s).into_response()),
        None => Err(not_found(&run_id)),
    }
}

#[utoipa::path(post, path = "/api/jobs/{run_id}/cancel", params(("run_id" = String, Path, description = "the job's UUID")), security(("bearer" = [])), responses((status = 202, description = "cancel requested (idempotent)", body = CancelRequested), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn cancel(State(state): State<AppState>, Path(run_id): Path<String>) -> Result<Response, ApiError> {
    let id = parse_run_id(&run_id)?;
    if state.jobs.cancel(id) {
        Ok((StatusCode::ACCEPTED, Json(CancelRequested { run_id, cancel_requested: true })).into_response())
    } else {
        Err(not_found(&run_id))
    }
}

#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "OpenMetrics text")))]
async fn metrics(State(state): State<AppState>) -> Response {
    let (queued, running, _) = state.jobs.load();
    let executors = state.cluster.live_executors().await.len();
    match state.jobs.metrics.render(queued, running, executors) {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
            )],
            text,
        )
            .into_response(),
        Err(_) => ApiError(KallaError::new(ErrorCode::Internal, "cannot encode metrics")).into_response(),
    }
}

/// Where a job starting now would run: `cluster` when `--mode cluster`, or `--mode auto` with a
/// live executor; else `local`.
fn next_mode(mode: crate::scheduler::ModeArg, executors: usize) -> Mode {
    use crate::scheduler::ModeArg;
    match mode {
        ModeArg::Cluster => Mode::Cluster,
        ModeArg::Auto if executors > 0 => Mode::Cluster,
        _ => Mode::Local,
    }
}

/// The executors registered with the embedded scheduler and alive, and where a job starting now
/// would run (`mode`).
#[utoipa::path(get, path = "/api/cluster", security(("bearer" = [])), responses((status = 200, body = ClusterView), (status = 401, body = ErrorBody)))]
async fn cluster(State(state): State<AppState>) -> Response {
    let executors: Vec<ExecutorView> = state
        .cluster
        .live_executors()
        .await
        .into_iter()
        .map(|e| ExecutorView {
            last_seen: e
                .last_heartbeat_unix_secs
                .and_then(|t| chrono::DateTime::from_timestamp(i64::try_from(t).ok()?, 0))
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
            id: e.id,
            host: e.host,
            flight_port: e.flight_port,
            grpc_port: e.grpc_port,
            slots: e.slots,
            last_heartbeat_secs: e.last_heartbeat_secs,
        })
        .collect();
    let mode = next_mode(state.mode, executors.len());
    Json(ClusterView { mode, executors }).into_response()
}

#[utoipa::path(get, path = "/ready", responses((status = 200, body = Readiness), (status = 503, description = "draining", body = Readiness)))]
async fn ready(State(state): State<AppState>) -> Response {
    let (queued, running, draining) = state.jobs.load();
    let executors = state.cluster.live_executors().await.len();
    let body = Readiness { mode: next_mode(state.mode, executors), executors, queued, running };
    if draining { (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response() } else { Json(body).into_response() }
}
