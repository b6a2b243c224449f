//! The search endpoint: full-text search over register values, optionally within a subtree (`GET .../search`).

use std::sync::Arc;

use arbor_client::replica::search_words;
use arbor_shared::auth::Need;
use arbor_shared::http::{SearchBody, SearchHitJson};
use arbor_shared::op::MAX_FIELD_LEN;
use arbor_shared::{ErrorCode, NodeId};
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use serde::Deserialize;

use super::auth::authorize;
use super::{ApiError, AppState};

/// Longest search text, in bytes.
const MAX_QUERY_LEN: usize = 1_024;
/// Most words in a search.
const MAX_QUERY_WORDS: usize = 16;

/// Query of a search.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SearchQuery {
    /// The text searched for: its words (runs of letters and digits).
    q: String,
    /// Only this field.
    field: Option<String>,
    /// Only this node and its descendants.
    root: Option<NodeId>,
    /// Most hits (default 20, at most 1,000).
    limit: Option<u32>,
    /// The answer must hold every op up to this seq.
    min_seq: Option<u64>,
}

pub(super) async fn search(
    State(state): State<Arc<AppState>>,
    Path(space): Path<String>,
    headers: HeaderMap,
    query: Result<Query<SearchQuery>, QueryRejection>,
) -> Result<Json<SearchBody>, ApiError> {
    let claims = authorize(&state, &headers, &space, Need::Read)?;
    let Query(q) = query.map_err(|e| ApiError::new(ErrorCode::BadRequest, e.body_text()))?;
    if q.q.len() > MAX_QUERY_LEN {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            format!("q longer than {MAX_QUERY_LEN} bytes"),
        ));
    }
    let words = search_words(&q.q);
    if words.len() > MAX_QUERY_WORDS {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            format!("q has more than {MAX_QUERY_WORDS} words"),
        ));
    }
    if let Some(f) = &q.field {
        if f.is_empty() || f.len() > MAX_FIELD_LEN || f.contains('\0') {
            return Err(ApiError::new(
                ErrorCode::BadRequest,
                format!("field must be 1 to {MAX_FIELD_LEN} bytes, without NUL"),
            ));
        }
    }
    if q.root == Some(NodeId::TRASH) {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            "root may not be TRASH: deleted nodes are not searched",
        ));
    }
    let limit = q.limit.unwrap_or(20);
    let min_seq = q.min_seq.unwrap_or(0);
    let (head_seq, rows) = state
        .readers
        .read(
            |db| {
                Box::pin(db.search(
                    &space,
                    &words,
                    q.field.as_deref(),
                    q.root,
                    claims.root,
                    limit,
                ))
            },
            |(head, _)| *head >= min_seq,
        )
        .await?;
    Ok(Json(SearchBody {
        head_seq,
        hits: rows
            .into_iter()
            .map(|r| SearchHitJson {
                id: r.node,
                parent: r.parent,
                field: r.field,
                value: r.value,
            })
            .collect(),
    }))
}
