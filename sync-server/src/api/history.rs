//! The history endpoints: a node's ops newest first, paged by seq (`GET .../nodes/{id}/history`), and a subtree as it was at a seq (`GET .../subtree/{id}/at`).

use std::sync::Arc;

use arbor_shared::auth::Need;
use arbor_shared::http::{HistoryEntryJson, NodeHistoryBody, PlaceAtJson, SubtreeAtBody};
use arbor_shared::protocol::{SubtreeNode, SubtreeRegister};
use arbor_shared::{ErrorCode, NodeId};
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use serde::Deserialize;

use super::auth::authorize;
use super::ops::committed_json;
use super::{ApiError, AppState};
use crate::db::{MAX_HISTORY_PAGE, MAX_SUBTREE_AT, SubtreeAtRefusal};

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

/// Query of a subtree at a seq.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AtQuery {
    /// The seq.
    pub(super) seq: u64,
}

/// `GET .../subtree/{id}/at?seq=N`: the subtree as it was at seq N.
pub(super) async fn subtree_at(
    State(state): State<Arc<AppState>>,
    Path((space, node)): Path<(String, String)>,
    headers: HeaderMap,
    query: Result<Query<AtQuery>, QueryRejection>,
) -> Result<Json<SubtreeAtBody>, ApiError> {
    let claims = authorize(&state, &headers, &space, Need::Read)?;
    // What was below the node then may lie outside any subtree now.
    arbor_shared::auth::check_unscoped(&claims, "a subtree's past")?;
    let Query(q) = query.map_err(|e| ApiError::new(ErrorCode::BadRequest, e.body_text()))?;
    let root: NodeId = node
        .parse()
        .map_err(|_| ApiError::new(ErrorCode::BadRequest, "node is not a UUID"))?;
    if root == NodeId::TRASH {
        return Err(ApiError::new(ErrorCode::BadRequest, "not the trash"));
    }
    let at = match state.db.subtree_at(&space, root, q.seq).await? {
        Ok(at) => at,
        Err(SubtreeAtRefusal::OutsideHistory { from, head }) => {
            return Err(ApiError::new(
                ErrorCode::BadRequest,
                format!(
                    "seq {} is outside this space's recorded history ({from} to {head})",
                    q.seq
                ),
            ));
        }
        Err(SubtreeAtRefusal::TooLarge) => {
            return Err(ApiError::new(
                ErrorCode::TooLarge,
                format!("the subtree holds more than {MAX_SUBTREE_AT} nodes"),
            ));
        }
    };
    Ok(Json(SubtreeAtBody {
        seq: q.seq,
        root,
        present: at.present,
        nodes: at
            .nodes
            .into_iter()
            .map(|(id, parent, key)| SubtreeNode { id, parent, key })
            .collect(),
        registers: at
            .registers
            .into_iter()
            .map(|(node, field, value, stamp)| SubtreeRegister {
                node,
                field,
                value,
                stamp,
            })
            .collect(),
        elsewhere: at
            .elsewhere
            .into_iter()
            .map(|(id, place)| PlaceAtJson { id, place })
            .collect(),
    }))
}
