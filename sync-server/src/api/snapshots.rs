//! Snapshots (`GET .../snapshot`, `.../subtree/{node}/snapshot`), export (`GET .../export`) and import (`POST .../import`): snapshot files in and out.

use std::sync::Arc;

use arbor_shared::auth::{self, Need};
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
    auth::check_unscoped(&claims, "the snapshot")?;
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
    let scope = match claims.root {
        None => Scope::Subtree(root),
        Some(token_root) => Scope::ScopedSubtree {
            node: root,
            root: token_root,
        },
    };
    stream_snapshot(&state, &claims, &space, scope).await
}

pub(super) async fn export(
    State(state): State<Arc<AppState>>,
    Path(space): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    // Read role: the whole log is what a reader can already page through
    // with catch-up from seq 0.
    let claims = authorize(&state, &headers, &space, Need::Read)?;
    auth::check_unscoped(&claims, "the export")?;
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
    // The header's head seq is the seq the snapshot is consistent at, on
    // whichever server made it; the client catches up the rest.
    let (header, stream) = state
        .readers
        .read(
            |db| Box::pin(crate::snapshot::snapshot(db, space, scope)),
            |_| true,
        )
        .await?;
    tracing::info!(space, nodes = header.nodes, log = header.log, "snapshot");
    let stream = Measured {
        inner: crate::limits::stall_guarded(stream, state.stall_timeout, permit),
        scope: match scope {
            Scope::Space => "space",
            Scope::Subtree(_) | Scope::ScopedSubtree { .. } => "subtree",
            Scope::Export => "export",
        },
        started: None,
        done: false,
    };
    Ok((
        [
            (header::CONTENT_TYPE, "application/vnd.arbor.snapshot"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        axum::body::Body::from_stream(stream),
    )
        .into_response())
}

/// A snapshot stream that records, when it ends or is dropped, how long it
/// ran and whether it reached its end (`arbor_snapshots_total`,
/// `arbor_snapshot_seconds`; bytes are counted as they go out).
struct Measured<S> {
    inner: S,
    scope: &'static str,
    /// The first poll: the stream's time starts when its reader does.
    started: Option<std::time::Instant>,
    /// The inner stream ended without an error.
    done: bool,
}

impl<S, E> futures_util::Stream for Measured<S>
where
    S: futures_util::Stream<Item = Result<bytes::Bytes, E>> + Unpin,
{
    type Item = Result<bytes::Bytes, E>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.started.get_or_insert_with(std::time::Instant::now);
        let next = std::pin::Pin::new(&mut self.inner).poll_next(cx);
        if let std::task::Poll::Ready(None) = next {
            self.done = true;
        }
        next
    }
}

impl<S> Drop for Measured<S> {
    fn drop(&mut self) {
        let outcome = if self.done { "done" } else { "cut" };
        metrics::counter!(crate::metrics::SNAPSHOTS, "scope" => self.scope, "outcome" => outcome)
            .increment(1);
        if let (Some(started), true) = (self.started, self.done) {
            metrics::histogram!(crate::metrics::SNAPSHOT_SECONDS, "scope" => self.scope)
                .record(started.elapsed().as_secs_f64());
        }
    }
}
