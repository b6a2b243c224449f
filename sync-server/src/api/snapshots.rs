//! Snapshots (`GET .../snapshot`, `.../subtree/{node}/snapshot`), export (`GET .../export`) and import (`POST .../import`): snapshot files in and out.

use std::sync::Arc;

use arbor_shared::auth::Need;
use arbor_shared::{ErrorCode, NodeId};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};

use super::auth::authorize;
use super::spaces::SpaceBody;
use super::{ApiError, AppState};
use crate::snapshot::Scope;

pub(super) async fn snapshot(
    State(state): State<Arc<AppState>>,
    Path(space): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let claims = authorize(&state, &headers, &space, Need::Read)?;
    stream_snapshot(&state, &claims, &space, Scope::Space).await
}

pub(super) async fn subtree_snapshot(
    State(state): State<Arc<AppState>>,
    Path((space, node)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let claims = authorize(&state, &headers, &space, Need::Read)?;
    let root: NodeId = node
        .parse()
        .map_err(|_| ApiError::new(ErrorCode::BadRequest, "node is not a UUID"))?;
    stream_snapshot(&state, &claims, &space, Scope::Subtree(root)).await
}

pub(super) async fn export(
    State(state): State<Arc<AppState>>,
    Path(space): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    // Read role: the whole log is what a reader can already page through
    // with catch-up from seq 0.
    let claims = authorize(&state, &headers, &space, Need::Read)?;
    let mut response = stream_snapshot(&state, &claims, &space, Scope::Export).await?;
    if let Ok(value) = format!("attachment; filename=\"{space}.arbor\"").parse() {
        response
            .headers_mut()
            .insert(header::CONTENT_DISPOSITION, value);
    }
    Ok(response)
}

pub(super) async fn import(
    State(state): State<Arc<AppState>>,
    Path(space): Path<String>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Json<SpaceBody>, ApiError> {
    let claims = authorize(&state, &headers, &space, Need::Admin)?;
    // An import holds a pooled connection while the body streams in: it
    // draws from the stream budget, and a writer that stalls is dropped.
    let _permit = state
        .streams
        .try_start(&super::token_key(&claims))
        .map_err(ApiError::limited)?;
    let body = crate::limits::stall_limited(body.into_data_stream(), state.stall_timeout);
    let owner = super::auth::owner(&state, &claims);
    let info = crate::import::import(
        &state.db,
        &space,
        body,
        state.max_import_bytes,
        Some(&owner),
    )
    .await
    .map_err(|e| match e {
        crate::import::ImportError::Db(e) => ApiError::from(e),
        crate::import::ImportError::TooLarge(_) => {
            ApiError::new(ErrorCode::TooLarge, e.to_string())
        }
        crate::import::ImportError::Body(ref m) if m == crate::limits::STALLED => {
            ApiError::new(ErrorCode::Timeout, "the upload stalled")
        }
        crate::import::ImportError::Snapshot(_) | crate::import::ImportError::Body(_) => {
            ApiError::new(ErrorCode::BadSnapshot, e.to_string())
        }
    })?;
    tracing::info!(space, "imported");
    Ok(Json(SpaceBody {
        name: info.name,
        head_seq: info.head_seq,
    }))
}

/// Streams a snapshot under the stream budget: the permit is taken before
/// the pooled connection, and released with it when the stream ends, is
/// cut, or stalls past the stall timeout.
async fn stream_snapshot(
    state: &AppState,
    claims: &arbor_shared::auth::Claims,
    space: &str,
    scope: Scope,
) -> Result<Response, ApiError> {
    let permit = state
        .streams
        .try_start(&super::token_key(claims))
        .map_err(ApiError::limited)?;
    let (header, stream) = crate::snapshot::snapshot(&state.db, space, scope).await?;
    tracing::info!(space, nodes = header.nodes, log = header.log, "snapshot");
    let stream = crate::limits::stall_guarded(stream, state.stall_timeout, permit);
    Ok((
        [
            (header::CONTENT_TYPE, "application/vnd.arbor.snapshot"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        axum::body::Body::from_stream(stream),
    )
        .into_response())
}
