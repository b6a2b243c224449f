//! The children endpoint: one ordered page of a node's children with their registers (`GET .../nodes/{id}/children`).

use std::sync::Arc;

use arbor_shared::auth::Need;
use arbor_shared::http::{ChildJson, ChildrenBody, RegisterJson};
use arbor_shared::{ErrorCode, NodeId, OrderKey};
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use serde::Deserialize;

use super::auth::authorize;
use super::{ApiError, AppState};
use crate::db::ChildRow;

/// Query of a children page.
#[derive(Debug, Deserialize)]
pub struct ChildrenQuery {
    /// Cursor: the last child of the previous page, its key (hex)...
    pub after_key: Option<String>,
    /// ... and its id.
    pub after_id: Option<NodeId>,
    /// Page size (default 200, at most 1,000).
    pub limit: Option<u32>,
    /// The page must hold every op up to this seq (the caller's cursor):
    /// a standby that has not replayed that far does not serve it.
    pub min_seq: Option<u64>,
}

pub(super) async fn children(
    State(state): State<Arc<AppState>>,
    Path((space, node)): Path<(String, String)>,
    headers: HeaderMap,
    query: Result<Query<ChildrenQuery>, QueryRejection>,
) -> Result<Json<ChildrenBody>, ApiError> {
    let claims = authorize(&state, &headers, &space, Need::Read)?;
    let Query(q) = query.map_err(|e| ApiError::new(ErrorCode::BadRequest, e.body_text()))?;
    let parent: NodeId = node
        .parse()
        .map_err(|_| ApiError::new(ErrorCode::BadRequest, "node is not a UUID"))?;
    let cursor = match (q.after_key, q.after_id) {
        (Some(k), Some(id)) => Some((
            OrderKey::from_hex(&k)
                .map_err(|e| ApiError::new(ErrorCode::BadRequest, e.to_string()))?,
            id,
        )),
        (None, None) => None,
        _ => {
            return Err(ApiError::new(
                ErrorCode::BadRequest,
                "after_key and after_id go together",
            ));
        }
    };
    let limit = q.limit.unwrap_or(200).clamp(1, 1_000);
    let after = cursor.as_ref().map(|(k, i)| (k, *i));
    let min_seq = q.min_seq.unwrap_or(0);
    let (head_seq, rows) = state
        .readers
        .read(
            |db| Box::pin(db.children_at(&space, parent, after, limit, claims.root)),
            |(head, _)| *head >= min_seq,
        )
        .await?;
    Ok(Json(ChildrenBody {
        head_seq,
        children: rows.into_iter().map(child_json).collect(),
    }))
}

/// A stored node on the wire.
pub(super) fn child_json(c: ChildRow) -> ChildJson {
    ChildJson {
        id: c.id,
        key: c.key,
        has_children: c.has_children,
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
    }
}
