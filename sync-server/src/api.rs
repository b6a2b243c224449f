//! The HTTP API (`/v1/...`, `/livez`, `/readyz`): routes, authorization by
//! role, typed JSON errors.
//!
//! Error body: `{"error": {"code": "<stable snake_case>", "message": "..."}}`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arbor_shared::auth::{self, AuthError, Claims, Hs256Key, Role};
use arbor_shared::{NodeId, Op, OrderKey, ReplicaId, Stamp};
use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::db::{Committed, Db, DbError, MAX_BATCH, Origin, RejectCode};
use crate::snapshot::Scope;

/// Shared by every request.
#[derive(Debug)]
pub struct AppState {
    /// The database.
    pub db: Db,
    /// Token secret.
    pub key: Hs256Key,
    /// Token clock leeway, seconds.
    pub leeway_s: u64,
    /// Set once shutdown starts: `/readyz` answers 503 from then on.
    pub draining: AtomicBool,
    /// The realtime rooms.
    pub rooms: Arc<crate::realtime::Rooms>,
    /// Largest import file, bytes.
    pub max_import_bytes: u64,
}

/// An API error: HTTP status, stable code, message.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorInner<'a>,
}

#[derive(Serialize)]
struct ErrorInner<'a> {
    code: &'a str,
    message: &'a str,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorInner {
                code: self.code,
                message: &self.message,
            },
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> ApiError {
        match &e {
            DbError::Rejected { code, message } => {
                let status = match code {
                    RejectCode::UnknownSpace => StatusCode::NOT_FOUND,
                    RejectCode::StampConflict | RejectCode::Stale | RejectCode::SpaceExists => {
                        StatusCode::CONFLICT
                    }
                    RejectCode::UnknownNode | RejectCode::ClockAhead => {
                        StatusCode::UNPROCESSABLE_ENTITY
                    }
                    RejectCode::WrongReplica => StatusCode::FORBIDDEN,
                    _ => StatusCode::BAD_REQUEST,
                };
                ApiError::new(status, code.as_str(), message.clone())
            }
            DbError::Pool(_) | DbError::Postgres(_) | DbError::GroupFailed(_) => {
                tracing::warn!(error = %e, "database unavailable");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the database is unavailable; retry",
                )
            }
            DbError::Migration(_) | DbError::BadRow(_) => {
                tracing::error!(error = %e, "internal error");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error",
                )
            }
        }
    }
}

fn auth_error(e: AuthError) -> ApiError {
    let code = match e {
        AuthError::Expired { .. } => "token_expired",
        AuthError::NotYetValid { .. } | AuthError::IssuedInFuture { .. } => "token_not_yet_valid",
        _ => "bad_token",
    };
    ApiError::new(StatusCode::UNAUTHORIZED, code, e.to_string())
}

/// What a route needs from the caller's token.
#[derive(Debug, Clone, Copy)]
enum Need {
    Read,
    Write,
    Admin,
}

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Verifies the bearer token and its scope for `space` and `need`.
fn authorize(
    state: &AppState,
    headers: &HeaderMap,
    space: &str,
    need: Need,
) -> Result<Claims, ApiError> {
    authorize_token(state, bearer(headers), space, need)
}

/// The token of an `Authorization: Bearer` header.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

/// [`authorize`] for a token found anywhere (header, subprotocol, query).
fn authorize_token(
    state: &AppState,
    token: Option<&str>,
    space: &str,
    need: Need,
) -> Result<Claims, ApiError> {
    let token = token.ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing_token",
            "send Authorization: Bearer <token>",
        )
    })?;
    let claims =
        auth::verify(token.trim(), &state.key, now_s(), state.leeway_s).map_err(auth_error)?;
    let scoped = claims.space == space || (claims.role == Role::Service && claims.space == "*");
    if !scoped {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "wrong_space",
            format!("the token is for space {}, not {space}", claims.space),
        ));
    }
    let allowed = match need {
        Need::Read => true,
        Need::Write => claims.role.can_write(),
        Need::Admin => claims.role.can_admin(),
    };
    if !allowed {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("role {:?} may not do this", claims.role),
        ));
    }
    Ok(claims)
}

/// The admin routes: `/metrics` (Prometheus text), `/livez`, `/readyz`.
pub fn admin_router(
    state: Arc<AppState>,
    metrics: Option<&'static metrics_exporter_prometheus::PrometheusHandle>,
) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(move || async move {
                (
                    [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                    metrics.map(|h| h.render()).unwrap_or_default(),
                )
            }),
        )
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .with_state(state)
}

fn cors(origins: &[String]) -> Option<tower_http::cors::CorsLayer> {
    use tower_http::cors::{AllowOrigin, CorsLayer};
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| o.parse().ok()))
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([
                axum::http::Method::GET,
                axum::http::Method::POST,
                axum::http::Method::PUT,
            ])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE]),
    )
}

/// The routes, with `state`, a body limit and CORS for `cors_origins`.
pub fn router(state: Arc<AppState>, max_body_bytes: usize, cors_origins: &[String]) -> Router {
    let router = api_routes(state, max_body_bytes);
    match cors(cors_origins) {
        Some(layer) => router.layer(layer),
        None => router,
    }
}

fn api_routes(state: Arc<AppState>, max_body_bytes: usize) -> Router {
    Router::new()
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/v1/spaces/{space}", put(create_space))
        .route("/v1/spaces/{space}/ops", post(ingest).get(catch_up))
        .route("/v1/spaces/{space}/nodes/{node}/children", get(children))
        .route("/v1/spaces/{space}/ws", get(websocket))
        .route("/v1/spaces/{space}/snapshot", get(snapshot))
        .route(
            "/v1/spaces/{space}/subtree/{node}/snapshot",
            get(subtree_snapshot),
        )
        .route("/v1/spaces/{space}/fork", post(fork))
        .route("/v1/spaces/{space}/export", get(export))
        // Imports stream into Postgres under their own limit.
        .route(
            "/v1/spaces/{space}/import",
            post(import).layer(DefaultBodyLimit::disable()),
        )
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(state)
}

async fn livez() -> &'static str {
    "ok"
}

async fn readyz(State(state): State<Arc<AppState>>) -> Result<&'static str, ApiError> {
    if state.draining.load(Ordering::Relaxed) {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "draining",
            "shutting down",
        ));
    }
    let client = state.db.client().await.map_err(ApiError::from)?;
    client
        .simple_query("SELECT 1")
        .await
        .map_err(|e| ApiError::from(DbError::Postgres(e)))?;
    Ok("ready")
}

#[derive(Serialize)]
struct SpaceBody {
    name: String,
    head_seq: u64,
}

async fn create_space(
    State(state): State<Arc<AppState>>,
    Path(space): Path<String>,
    headers: HeaderMap,
) -> Result<Json<SpaceBody>, ApiError> {
    authorize(&state, &headers, &space, Need::Admin)?;
    let info = state.db.create_space(&space).await?;
    Ok(Json(SpaceBody {
        name: info.name,
        head_seq: info.head_seq,
    }))
}

/// A committed op on the wire.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CommittedJson {
    /// Its seq in the space.
    pub seq: u64,
    /// The op.
    pub op: Op,
    /// `new`, `duplicate` or `restore`.
    pub origin: String,
}

impl From<Committed> for CommittedJson {
    fn from(c: Committed) -> CommittedJson {
        CommittedJson {
            seq: c.seq,
            op: c.op,
            origin: match c.origin {
                Origin::New => "new",
                Origin::Duplicate => "duplicate",
                Origin::Restore => "restore",
            }
            .into(),
        }
    }
}

/// Body of `POST /v1/spaces/{space}/ops`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestBody {
    /// The batch.
    pub ops: Vec<Op>,
}

/// Answer of ingest and catch-up.
#[derive(Debug, Serialize, Deserialize)]
pub struct OpsBody {
    /// Committed ops in seq order.
    pub ops: Vec<CommittedJson>,
    /// The space's head seq (catch-up only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_seq: Option<u64>,
}

/// Query of `POST /v1/spaces/{space}/ops`.
#[derive(Debug, Deserialize)]
pub struct IngestQuery {
    /// For service tokens: the replica every op must be by (the Durable
    /// Object pushes for a client whose hello it checked).
    pub author: Option<String>,
}

async fn ingest(
    State(state): State<Arc<AppState>>,
    Path(space): Path<String>,
    Query(query): Query<IngestQuery>,
    headers: HeaderMap,
    body: Result<Json<IngestBody>, JsonRejection>,
) -> Result<Json<OpsBody>, ApiError> {
    let claims = authorize(&state, &headers, &space, Need::Write)?;
    let Json(body) = body.map_err(|e| {
        let status = if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            StatusCode::PAYLOAD_TOO_LARGE
        } else {
            StatusCode::BAD_REQUEST
        };
        ApiError::new(status, "bad_request", e.body_text())
    })?;
    if body.ops.len() > MAX_BATCH {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "batch_too_large",
            format!("{} ops, at most {MAX_BATCH}", body.ops.len()),
        ));
    }
    for (i, op) in body.ops.iter().enumerate() {
        op.validate().map_err(|e| {
            ApiError::new(StatusCode::BAD_REQUEST, "bad_op", format!("op {i}: {e}"))
        })?;
    }
    // A token bound to a replica may only push that replica's ops; service
    // tokens push on behalf of clients they have checked.
    let author = if claims.role == Role::Service {
        match query.author.as_deref() {
            Some(a) => Some(a.parse::<ReplicaId>().map_err(|_| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    "author is a replica id (1 to 16 hex digits)",
                )
            })?),
            None => None,
        }
    } else {
        claims.rid
    };
    let started = std::time::Instant::now();
    let committed = match state.db.apply(&space, author, &body.ops).await {
        Ok(c) => c,
        Err(e) => {
            crate::metrics::ingest(
                Err(e.reject_code().map_or("unavailable", |c| c.as_str())),
                0.0,
            );
            return Err(e.into());
        }
    };
    crate::metrics::ingest(
        Ok(committed
            .iter()
            .filter(|c| c.origin != Origin::Duplicate)
            .count() as u64),
        started.elapsed().as_secs_f64(),
    );
    state.rooms.committed(&space, &committed).await;
    tracing::debug!(
        space,
        ops = body.ops.len(),
        ms = started.elapsed().as_millis() as u64,
        "ingest"
    );
    Ok(Json(OpsBody {
        ops: committed.into_iter().map(Into::into).collect(),
        head_seq: None,
    }))
}

/// Query of catch-up.
#[derive(Debug, Deserialize)]
pub struct CatchUpQuery {
    /// Cursor: ops with seq above it.
    #[serde(default)]
    pub after: u64,
    /// Page size (default 1,000, at most 10,000).
    pub limit: Option<u32>,
}

async fn catch_up(
    State(state): State<Arc<AppState>>,
    Path(space): Path<String>,
    headers: HeaderMap,
    query: Result<Query<CatchUpQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<OpsBody>, ApiError> {
    authorize(&state, &headers, &space, Need::Read)?;
    let Query(q) =
        query.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.body_text()))?;
    let limit = q.limit.unwrap_or(1_000).clamp(1, 10_000);
    let page = state.db.ops_after(&space, q.after, limit).await?;
    Ok(Json(OpsBody {
        ops: page.ops.into_iter().map(Into::into).collect(),
        head_seq: Some(page.head_seq),
    }))
}

/// Query of a children page.
#[derive(Debug, Deserialize)]
pub struct ChildrenQuery {
    /// Cursor: the last child of the previous page, its key (hex)...
    pub after_key: Option<String>,
    /// ... and its id.
    pub after_id: Option<NodeId>,
    /// Page size (default 200, at most 1,000).
    pub limit: Option<u32>,
}

/// One register on the wire.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RegisterJson {
    /// The value (`null`: cleared).
    pub value: Option<String>,
    /// The winning write's stamp.
    pub stamp: Stamp,
}

/// One child on the wire.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ChildJson {
    /// The child.
    pub id: NodeId,
    /// Its order key (hex).
    pub key: OrderKey,
    /// Its registers by field.
    pub payloads: BTreeMap<String, RegisterJson>,
}

/// A page of children.
#[derive(Debug, Serialize, Deserialize)]
pub struct ChildrenBody {
    /// In sibling order.
    pub children: Vec<ChildJson>,
}

async fn children(
    State(state): State<Arc<AppState>>,
    Path((space, node)): Path<(String, String)>,
    headers: HeaderMap,
    query: Result<Query<ChildrenQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<ChildrenBody>, ApiError> {
    authorize(&state, &headers, &space, Need::Read)?;
    let Query(q) =
        query.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.body_text()))?;
    let parent: NodeId = node
        .parse()
        .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", "node is not a UUID"))?;
    let cursor = match (q.after_key, q.after_id) {
        (Some(k), Some(id)) => Some((
            OrderKey::from_hex(&k).map_err(|e| {
                ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.to_string())
            })?,
            id,
        )),
        (None, None) => None,
        _ => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "after_key and after_id go together",
            ));
        }
    };
    let limit = q.limit.unwrap_or(200).clamp(1, 1_000);
    let rows = state
        .db
        .children(&space, parent, cursor.as_ref().map(|(k, i)| (k, *i)), limit)
        .await?;
    Ok(Json(ChildrenBody {
        children: rows
            .into_iter()
            .map(|c| ChildJson {
                id: c.id,
                key: c.key,
                payloads: c
                    .payloads
                    .into_iter()
                    .map(|(f, p)| {
                        (
                            f,
                            RegisterJson {
                                value: p.value,
                                stamp: p.stamp,
                            },
                        )
                    })
                    .collect(),
            })
            .collect(),
    }))
}

/// Query of the WebSocket upgrade (browsers cannot set headers).
#[derive(Debug, Deserialize)]
pub struct WsQuery {
    /// The token, when neither the header nor a subprotocol carries it.
    pub access_token: Option<String>,
}

/// Subprotocol the server selects when the client offers its token as a
/// `bearer.<token>` subprotocol.
pub const WS_PROTOCOL: &str = "arbor.v1";

async fn websocket(
    State(state): State<Arc<AppState>>,
    Path(space): Path<String>,
    headers: HeaderMap,
    query: Result<Query<WsQuery>, axum::extract::rejection::QueryRejection>,
    ws: axum::extract::ws::WebSocketUpgrade,
) -> Result<Response, ApiError> {
    // The token is checked before the upgrade: a bad one gets 401/403.
    let from_header = bearer(&headers).map(str::to_string);
    let from_protocol = headers
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.split(',')
                .map(str::trim)
                .find_map(|p| p.strip_prefix("bearer."))
                .map(str::to_string)
        });
    let from_query = query.ok().and_then(|Query(q)| q.access_token);
    let via_protocol = from_header.is_none() && from_protocol.is_some();
    let token = from_header.or(from_protocol).or(from_query);
    let claims = authorize_token(&state, token.as_deref(), &space, Need::Read)?;
    if state.db.space(&space).await?.is_none() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_space",
            format!("unknown_space: {space}"),
        ));
    }
    // The transport reads up to twice the protocol limit so a frame just
    // over it reaches the room, which answers `frame_too_large` and closes
    // 1009; anything larger fails in the transport (also closed 1009).
    let ws = ws
        .max_message_size(2 * arbor_shared::protocol::MAX_FRAME_BYTES)
        .max_frame_size(2 * arbor_shared::protocol::MAX_FRAME_BYTES);
    let ws = if via_protocol {
        ws.protocols([WS_PROTOCOL])
    } else {
        ws
    };
    let rooms = state.rooms.clone();
    Ok(ws.on_upgrade(move |socket| rooms.serve(space, claims, socket)))
}

async fn snapshot(
    State(state): State<Arc<AppState>>,
    Path(space): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, &space, Need::Read)?;
    stream_snapshot(&state, &space, Scope::Space).await
}

async fn subtree_snapshot(
    State(state): State<Arc<AppState>>,
    Path((space, node)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, &space, Need::Read)?;
    let root: NodeId = node
        .parse()
        .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", "node is not a UUID"))?;
    stream_snapshot(&state, &space, Scope::Subtree(root)).await
}

async fn export(
    State(state): State<Arc<AppState>>,
    Path(space): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    // Read role: the whole log is what a reader can already page through
    // with catch-up from seq 0.
    authorize(&state, &headers, &space, Need::Read)?;
    let mut response = stream_snapshot(&state, &space, Scope::Export).await?;
    if let Ok(value) = format!("attachment; filename=\"{space}.arbor\"").parse() {
        response
            .headers_mut()
            .insert(header::CONTENT_DISPOSITION, value);
    }
    Ok(response)
}

async fn import(
    State(state): State<Arc<AppState>>,
    Path(space): Path<String>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Json<SpaceBody>, ApiError> {
    authorize(&state, &headers, &space, Need::Admin)?;
    let info = crate::import::import(
        &state.db,
        &space,
        body.into_data_stream(),
        state.max_import_bytes,
    )
    .await
    .map_err(|e| match e {
        crate::import::ImportError::Db(e) => ApiError::from(e),
        crate::import::ImportError::TooLarge(_) => {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", e.to_string())
        }
        crate::import::ImportError::Snapshot(_) | crate::import::ImportError::Body(_) => {
            ApiError::new(StatusCode::BAD_REQUEST, "bad_snapshot", e.to_string())
        }
    })?;
    tracing::info!(space, "imported");
    Ok(Json(SpaceBody {
        name: info.name,
        head_seq: info.head_seq,
    }))
}

async fn stream_snapshot(
    state: &AppState,
    space: &str,
    scope: Scope,
) -> Result<Response, ApiError> {
    let (header, stream) = crate::snapshot::snapshot(&state.db, space, scope).await?;
    tracing::info!(space, nodes = header.nodes, log = header.log, "snapshot");
    Ok((
        [
            (header::CONTENT_TYPE, "application/vnd.arbor.snapshot"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        axum::body::Body::from_stream(stream),
    )
        .into_response())
}

/// Body of `POST /v1/spaces/{space}/fork`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForkBody {
    /// The new space's name.
    pub to: String,
}

async fn fork(
    State(state): State<Arc<AppState>>,
    Path(space): Path<String>,
    headers: HeaderMap,
    body: Result<Json<ForkBody>, JsonRejection>,
) -> Result<Json<SpaceBody>, ApiError> {
    authorize(&state, &headers, &space, Need::Admin)?;
    let Json(body) =
        body.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.body_text()))?;
    let info = state.db.fork(&space, &body.to).await?;
    Ok(Json(SpaceBody {
        name: info.name,
        head_seq: info.head_seq,
    }))
}
