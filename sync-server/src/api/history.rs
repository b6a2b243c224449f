//! The node history endpoint (`GET .../nodes/{id}/history`): a node's ops newest first, paged by seq.

use std::sync::Arc;

use arbor_shared::auth::Need;
use arbor_shared::http::{HistoryEntryJson, NodeHistoryBody};
use arbor_shared::{ErrorCode, NodeId};
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use serde::Deserialize;

use super::auth::authorize;
use super::ops::committed_json;
use super::{ApiError, AppState};
use crate::db::MAX_HISTORY_PAGE;

/// Query of a history page.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct HistoryQuery {
    /// Ops with seq below this (absent: from the newest).
    pub(super) before: Option<u64>,
    /// Page size (default 100, at most 1,000).
    pub(super) limit: Option<u32>,
}

pub(super) async fn node_history(
    State(state): State<Arc<AppState>>,
    Path((space, node)): Path<(String, String)>,
    headers: HeaderMap,
    query: Result<Query<HistoryQuery>, QueryRejection>,
) -> Result<Json<NodeHistoryBody>, ApiError> {
    let claims = authorize(&state, &headers, &space, Need::Read)?;
    // A node's past parents may lie outside any subtree: whole-space
    // tokens only.
    arbor_shared::auth::check_unscoped(&claims, "a node's history")?;
    let Query(q) = query.map_err(|e| ApiError::new(ErrorCode::BadRequest, e.body_text()))?;
    let node: NodeId = node
        .parse()
        .map_err(|_| ApiError::new(ErrorCode::BadRequest, "node is not a UUID"))?;
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_HISTORY_PAGE {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            format!("limit is 1 to {MAX_HISTORY_PAGE}"),
        ));
    }
    let (head_seq, entries) = state.db.node_history(&space, node, q.before, limit).await?;
    let next_before = if entries.len() == limit as usize {
        entries.last().map(|e| e.committed.seq)
    } else {
        None
    };
    Ok(Json(NodeHistoryBody {
        entries: entries
            .into_iter()
            .map(|e| {
                let c = committed_json(e.committed);
                HistoryEntryJson {
                    seq: c.seq,
                    op: c.op,
                    origin: c.origin,
                    author: c.author,
                    applied: e.applied,
                }
            })
            .collect(),
        next_before,
        head_seq,
    }))
}
