//! Creating a space (`PUT /v1/spaces/{space}`) and forking one server-side (`POST .../fork`).

use std::sync::Arc;

use arbor_shared::ErrorCode;
use arbor_shared::auth::Need;
use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};

use super::auth::authorize;
use super::{ApiError, AppState};

/// Answer of create, fork and import.
#[derive(Serialize)]
pub(super) struct SpaceBody {
    pub(super) name: String,
    pub(super) head_seq: u64,
}

pub(super) async fn create_space(
    State(state): State<Arc<AppState>>,
    Path(space): Path<String>,
    headers: HeaderMap,
) -> Result<Json<SpaceBody>, ApiError> {
    let claims = authorize(&state, &headers, &space, Need::Admin)?;
    let info = state
        .db
        .create_space_owned(&space, &super::auth::owner(&state, &claims))
        .await?;
    Ok(Json(SpaceBody {
        name: info.name,
        head_seq: info.head_seq,
    }))
}

/// Body of `POST /v1/spaces/{space}/fork`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ForkBody {
    /// The new space's name.
    to: String,
}

pub(super) async fn fork(
    State(state): State<Arc<AppState>>,
    Path(space): Path<String>,
    headers: HeaderMap,
    body: Result<Json<ForkBody>, JsonRejection>,
) -> Result<Json<SpaceBody>, ApiError> {
    let claims = authorize(&state, &headers, &space, Need::Admin)?;
    let Json(body) = body.map_err(json_refusal)?;
    super::auth::check_space_name(&body.to)?;
    // The copy is a new space: the token needs admin rights there too.
    arbor_shared::auth::check_scope(&claims, &body.to, Need::Admin)?;
    let info = state
        .db
        .fork_owned(&space, &body.to, &super::auth::owner(&state, &claims))
        .await?;
    Ok(Json(SpaceBody {
        name: info.name,
        head_seq: info.head_seq,
    }))
}

/// A JSON body the route cannot take: too large (`too_large`), or not the
/// shape it wants (`bad_request`).
pub(super) fn json_refusal(e: JsonRejection) -> ApiError {
    if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(ErrorCode::TooLarge, e.body_text())
    } else {
        ApiError::new(ErrorCode::BadRequest, e.body_text())
    }
}
