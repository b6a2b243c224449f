//! The lookups by value: a value's holders (`GET .../values`) and a parent's children by value (`GET .../nodes/{id}/children/by-value`).

use std::sync::Arc;

use arbor_shared::auth::Need;
use arbor_shared::http::{ChildrenBody, HolderJson, HoldersBody};
use arbor_shared::op::{MAX_FIELD_LEN, MAX_VALUE_LEN};
use arbor_shared::{ErrorCode, NodeId};
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use serde::Deserialize;

use super::auth::authorize;
use super::children::child_json;
use super::{ApiError, AppState};

/// Query of a lookup by value.
#[derive(Debug, Deserialize)]
pub(super) struct ValueQuery {
    /// The field (1 to 64 bytes).
    pub field: String,
    /// The value looked for (compared normalized).
    pub value: String,
    /// Holders: the `next` of the previous page.
    pub after: Option<NodeId>,
    /// Page size (default 100, at most 1,000).
    pub limit: Option<u32>,
    /// The answer must hold every op up to this seq (the caller's cursor).
    pub min_seq: Option<u64>,
}

/// The field and value, checked as an op's would be: a bad one is a
/// `bad_request`, never a database error.
fn checked(q: &ValueQuery) -> Result<(), ApiError> {
    if q.field.is_empty() || q.field.len() > MAX_FIELD_LEN {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            format!("field must be 1 to {MAX_FIELD_LEN} bytes"),
        ));
    }
    if q.value.len() > MAX_VALUE_LEN {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            format!("value longer than {MAX_VALUE_LEN} bytes"),
        ));
    }
    if q.field.contains('\0') || q.value.contains('\0') {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            "field and value may not contain NUL (U+0000)",
        ));
    }
    Ok(())
}

pub(super) async fn holders(
    State(state): State<Arc<AppState>>,
    Path(space): Path<String>,
    headers: HeaderMap,
    query: Result<Query<ValueQuery>, QueryRejection>,
) -> Result<Json<HoldersBody>, ApiError> {
    let claims = authorize(&state, &headers, &space, Need::Read)?;
    let Query(q) = query.map_err(|e| ApiError::new(ErrorCode::BadRequest, e.body_text()))?;
    checked(&q)?;
    let limit = q.limit.unwrap_or(100);
    let min_seq = q.min_seq.unwrap_or(0);
    let page = state
        .readers
        .read(
            |db| Box::pin(db.holders(&space, &q.field, &q.value, q.after, limit, claims.root)),
            |page| page.head_seq >= min_seq,
        )
        .await?;
    Ok(Json(HoldersBody {
        head_seq: page.head_seq,
        next: page.next,
        holders: page
            .holders
            .into_iter()
            .map(|h| HolderJson {
                parent: h.parent,
                node: child_json(h.node),
            })
            .collect(),
    }))
}

pub(super) async fn children_by_value(
    State(state): State<Arc<AppState>>,
    Path((space, node)): Path<(String, String)>,
    headers: HeaderMap,
    query: Result<Query<ValueQuery>, QueryRejection>,
) -> Result<Json<ChildrenBody>, ApiError> {
    let claims = authorize(&state, &headers, &space, Need::Read)?;
    let Query(q) = query.map_err(|e| ApiError::new(ErrorCode::BadRequest, e.body_text()))?;
    checked(&q)?;
    let parent: NodeId = node
        .parse()
        .map_err(|_| ApiError::new(ErrorCode::BadRequest, "node is not a UUID"))?;
    let limit = q.limit.unwrap_or(100);
    let min_seq = q.min_seq.unwrap_or(0);
    let (head_seq, rows) = state
        .readers
        .read(
            |db| {
                Box::pin(db.children_by_value(
                    &space,
                    parent,
                    &q.field,
                    &q.value,
                    limit,
                    claims.root,
                ))
            },
            |(head, _)| *head >= min_seq,
        )
        .await?;
    Ok(Json(ChildrenBody {
        head_seq,
        children: rows.into_iter().map(child_json).collect(),
    }))
}
