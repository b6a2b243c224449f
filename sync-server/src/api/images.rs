//! Replica images (`GET .../image`, `.../subtree/{node}/image`): a cached image of the space's client replica, sent as a file, or 404 while there is none (the client loads rows).

use std::sync::Arc;

use arbor_shared::auth::{self, Need};
use arbor_shared::{ErrorCode, NodeId};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt as _;
use serde::Deserialize;

use super::auth::authorize;
use super::{ApiError, AppState};

/// Query of an image request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ImageQuery {
    /// The client's schema version: an image of another is never sent.
    schema: Option<i64>,
}

pub(super) async fn image(
    State(state): State<Arc<AppState>>,
    Path(space): Path<String>,
    headers: HeaderMap,
    query: Result<Query<ImageQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let claims = authorize(&state, &headers, &space, Need::Read)?;
    auth::check_unscoped(&claims, "the image")?;
    let Query(q) = query.map_err(|e| ApiError::new(ErrorCode::BadRequest, e.body_text()))?;
    send(&state, &claims, &space, None, q.schema).await
}

pub(super) async fn subtree_image(
    State(state): State<Arc<AppState>>,
    Path((space, node)): Path<(String, String)>,
    headers: HeaderMap,
    query: Result<Query<ImageQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let claims = authorize(&state, &headers, &space, Need::Read)?;
    let Query(q) = query.map_err(|e| ApiError::new(ErrorCode::BadRequest, e.body_text()))?;
    let root: NodeId = node
        .parse()
        .map_err(|_| ApiError::new(ErrorCode::BadRequest, "node is not a UUID"))?;
    if root.is_reserved() {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            "ROOT and TRASH have no subtree image: ask for the space's",
        ));
    }
    // A token limited to a subtree gets the image of its root only (a
    // node below it is checked by the subtree snapshot, which it loads).
    if claims.root.is_some_and(|r| r != root) {
        return Err(no_image(
            "a token limited to a subtree gets its root's image only",
        ));
    }
    send(&state, &claims, &space, Some(root), q.schema).await
}

fn no_image(why: &str) -> ApiError {
    ApiError::new(
        ErrorCode::NotFound,
        format!("no replica image: {why}; load the snapshot"),
    )
}

async fn send(
    state: &AppState,
    claims: &arbor_shared::auth::Claims,
    space: &str,
    root: Option<NodeId>,
    schema: Option<i64>,
) -> Result<Response, ApiError> {
    let Some(images) = &state.images else {
        return Err(no_image("this server keeps none"));
    };
    let version = arbor_client::schema::VERSION;
    if let Some(asked) = schema
        && asked != version
    {
        return Err(no_image(&format!(
            "its images have client schema {version}, not {asked}"
        )));
    }
    let (head, floor) = state.db.image_window(space, root.is_some()).await?;
    let Some(cached) = images.get(space, root, head, floor).await else {
        return Err(no_image("none is built yet (it is being built)"));
    };
    let permit = state
        .streams
        .try_start(&super::token_key(claims))
        .map_err(ApiError::limited)?;
    metrics::counter!(crate::metrics::IMAGES_SENT).increment(1);
    let chunks = crate::image::file_chunks(cached.file, 256 * 1024).boxed();
    let body = crate::limits::stall_guarded(chunks, state.stall_timeout, permit);
    let meta = &cached.meta;
    let mut response = axum::body::Body::from_stream(body).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/zstd"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(meta.compressed));
    use arbor_client::image as i;
    for (name, value) in [
        (i::SEQ_HEADER, meta.seq.to_string()),
        (i::SCHEMA_HEADER, meta.schema.to_string()),
        (i::SIZE_HEADER, meta.size.to_string()),
        (i::CRC32_HEADER, meta.crc32.clone()),
    ] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            h.insert(HeaderName::from_static(name), value);
        }
    }
    Ok(response)
}
