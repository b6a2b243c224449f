//! The revocation list for the Durable Objects (`GET .../revocations`, service tokens): the list in force, with an `ETag` so an unchanged list costs a 304.

use std::sync::Arc;

use arbor_shared::auth::Need;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::auth::authorize;
use super::{ApiError, AppState};

pub(super) async fn revocations(
    State(state): State<Arc<AppState>>,
    Path(space): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, &space, Need::Service)?;
    let (list, version) = state.keys.revoked_with_version();
    let etag = format!("\"{version}\"");
    let unchanged = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == etag);
    if unchanged {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response());
    }
    Ok((
        [
            (header::ETAG, etag),
            (header::CONTENT_TYPE, "application/json".to_string()),
        ],
        list.to_json(),
    )
        .into_response())
}
