//! The subtree changes endpoint (`POST .../subtree/changes`): what changed in given subtrees since a seq, as `subtree` frames (the Durable Object's subtree sockets, and catch-up over HTTP for a subtree replica).

use std::collections::BTreeSet;
use std::sync::Arc;

use arbor_shared::ErrorCode;
use arbor_shared::auth::Need;
use arbor_shared::http::{MAX_SUBTREE_ROOTS, SubtreeChangesAnswer, SubtreeChangesBody};
use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::HeaderMap;

use super::auth::authorize;
use super::spaces::json_refusal;
use super::{ApiError, AppState};

pub(super) async fn subtree_changes(
    State(state): State<Arc<AppState>>,
    Path(space): Path<String>,
    headers: HeaderMap,
    body: Result<Json<SubtreeChangesBody>, JsonRejection>,
) -> Result<Json<SubtreeChangesAnswer>, ApiError> {
    let claims = authorize(&state, &headers, &space, Need::Read)?;
    let Json(body) = body.map_err(json_refusal)?;
    // A token limited to a subtree asks for that subtree only.
    if let Some(root) = claims.root
        && let Some(other) = body.roots.iter().find(|r| **r != root)
    {
        return Err(arbor_shared::auth::out_of_scope(*other).into());
    }
    if body.roots.len() > MAX_SUBTREE_ROOTS {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            format!("at most {MAX_SUBTREE_ROOTS} roots"),
        ));
    }
    let roots: BTreeSet<_> = body.roots.into_iter().collect();
    let answers = state.db.subtree_changes(&space, body.after, &roots).await?;
    Ok(Json(SubtreeChangesAnswer::from_room(answers)))
}
