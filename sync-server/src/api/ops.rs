//! The ops endpoint: ingest (`POST .../ops`), group ingest (`POST .../ops/group`, the Durable Object's) and catch-up (`GET .../ops`).

use std::sync::Arc;

use arbor_shared::auth::{Need, Role};
use arbor_shared::error::ErrorDetail;
use arbor_shared::http::{
    CommittedJson, GroupIngestAnswer, GroupIngestBody, GroupPush, IngestBody, OpsBody, PushResult,
};
use arbor_shared::{ErrorCode, NodeId, Op, ReplicaId};
use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use serde::Deserialize;

use super::auth::authorize;
use super::spaces::json_refusal;
use super::{ApiError, AppState, db_refusal};
use crate::db::{Committed, MAX_BATCH, Origin};

/// Pushes in one group ingest at most (the room groups at most 64).
const MAX_GROUP_PUSHES: usize = 64;

/// Query of `POST /v1/spaces/{space}/ops`.
#[derive(Debug, Deserialize)]
pub struct IngestQuery {
    /// For service tokens: the replica every op must be by (the Durable
    /// Object pushes for a client whose hello it checked).
    pub author: Option<String>,
    /// For service tokens: the token subject the push is made for (its
    /// replica ids are claimed for it; absent: no owner check).
    pub sub: Option<String>,
    /// For service tokens: the subtree the client's token is limited to
    /// (its `root` claim): the push is checked as that token's would be.
    pub root: Option<NodeId>,
}

/// Charges a push's database time beyond the free share to its token's
/// request budget (service tokens are not limited per token).
fn charge_db_time(
    state: &AppState,
    claims: &arbor_shared::auth::Claims,
    held: std::time::Duration,
) {
    metrics::histogram!(crate::metrics::PUSH_DB_SECONDS).record(held.as_secs_f64());
    if claims.role != Role::Service {
        state.requests.charge(
            &super::auth::token_key(claims),
            crate::limits::db_time_units(held),
            std::time::Instant::now(),
        );
    }
}

/// A committed op on the wire.
pub(crate) fn committed_json(c: Committed) -> CommittedJson {
    CommittedJson {
        seq: c.seq,
        op: c.op,
        origin: match c.origin {
            Origin::New => arbor_shared::http::Origin::New,
            Origin::Duplicate => arbor_shared::http::Origin::Duplicate,
            Origin::Restore => arbor_shared::http::Origin::Restore,
        },
        author: c.author,
    }
}

/// Refuses a batch larger than the limit or with an op that breaks one,
/// before it reaches the database.
fn check_batch(ops: &[Op]) -> Result<(), ApiError> {
    if ops.len() > MAX_BATCH {
        return Err(ApiError::new(
            ErrorCode::BatchTooLarge,
            format!("{} ops, at most {MAX_BATCH}", ops.len()),
        ));
    }
    for (i, op) in ops.iter().enumerate() {
        op.validate()
            .map_err(|e| ApiError::new(ErrorCode::BadOp, format!("op {i}: {e}")))?;
    }
    Ok(())
}

/// New ops and restores of an answer (what a metric counts as applied).
fn applied(committed: &[Committed]) -> u64 {
    committed
        .iter()
        .filter(|c| c.origin != Origin::Duplicate)
        .count() as u64
}

pub(super) async fn ingest(
    State(state): State<Arc<AppState>>,
    Path(space): Path<String>,
    query: Result<Query<IngestQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Result<Json<IngestBody>, JsonRejection>,
) -> Result<Json<OpsBody>, ApiError> {
    let claims = authorize(&state, &headers, &space, Need::Write)?;
    let Query(query) = query.map_err(|e| ApiError::new(ErrorCode::BadRequest, e.body_text()))?;
    let Json(body) = body.map_err(json_refusal)?;
    check_batch(&body.ops)?;
    // A token bound to a replica may only push that replica's ops; service
    // tokens push on behalf of clients they have checked.
    let author = if claims.role == Role::Service {
        match query.author.as_deref() {
            Some(a) => Some(a.parse::<ReplicaId>().map_err(|_| {
                ApiError::new(
                    ErrorCode::BadRequest,
                    "author is a replica id (1 to 16 hex digits)",
                )
            })?),
            None => None,
        }
    } else {
        claims.rid
    };
    let started = std::time::Instant::now();
    let (sub, root) = match claims.role {
        Role::Service => (query.sub.as_deref(), query.root),
        _ => (Some(claims.sub.as_str()), claims.root),
    };
    let pusher = crate::db::Pusher { author, sub, root };
    let committed = match state.db.apply_as(&space, pusher, &body.ops).await {
        Ok(c) => c,
        Err(e) => {
            charge_db_time(&state, &claims, started.elapsed());
            let error = ApiError::from(e);
            crate::metrics::ingest(Err(error.code()), 0.0);
            return Err(error);
        }
    };
    crate::metrics::ingest(Ok(applied(&committed)), started.elapsed().as_secs_f64());
    charge_db_time(&state, &claims, started.elapsed());
    state.rooms.committed(&space, &committed).await;
    tracing::debug!(
        space,
        ops = body.ops.len(),
        ms = started.elapsed().as_millis() as u64,
        "ingest"
    );
    Ok(Json(OpsBody {
        ops: committed.into_iter().map(committed_json).collect(),
        head_seq: None,
        min_cursor: None,
    }))
}

/// Several pushes in one transaction, each under its own savepoint, so
/// each is answered exactly as if applied alone (service tokens only).
pub(super) async fn group_ingest(
    State(state): State<Arc<AppState>>,
    Path(space): Path<String>,
    headers: HeaderMap,
    body: Result<Json<GroupIngestBody>, JsonRejection>,
) -> Result<Json<GroupIngestAnswer>, ApiError> {
    authorize(&state, &headers, &space, Need::Service)?;
    let Json(body) = body.map_err(json_refusal)?;
    Ok(Json(GroupIngestAnswer {
        results: commit_group(&state, &space, body.pushes).await?,
    }))
}

/// Commits `pushes` as one group (the group ingest route and the upstream
/// socket): one result per push, in push order. The committed ops reach the
/// space's sockets on this server.
pub(super) async fn commit_group(
    state: &AppState,
    space: &str,
    pushes: Vec<GroupPush>,
) -> Result<Vec<PushResult>, ApiError> {
    let total: usize = pushes.iter().map(|p| p.ops.len()).sum();
    if pushes.len() > MAX_GROUP_PUSHES || total > MAX_BATCH {
        return Err(ApiError::new(
            ErrorCode::BatchTooLarge,
            format!(
                "{} pushes of {total} ops, at most {MAX_GROUP_PUSHES} and {MAX_BATCH}",
                pushes.len()
            ),
        ));
    }
    // A push that breaks a limit is refused alone; the others commit.
    let mut results: Vec<Option<PushResult>> = pushes
        .iter()
        .map(|p| {
            check_batch(&p.ops).err().map(|e| PushResult {
                ops: None,
                error: Some(e.into_detail()),
            })
        })
        .collect();
    let valid: Vec<GroupPush> = pushes
        .into_iter()
        .zip(&results)
        .filter(|(_, refused)| refused.is_none())
        .map(|(p, _)| p)
        .collect();
    let started = std::time::Instant::now();
    let answers = state.db.apply_group(space, &valid).await;
    let elapsed = started.elapsed().as_secs_f64();
    let mut relay = Vec::new();
    let mut answers = answers.into_iter();
    for slot in results.iter_mut().filter(|r| r.is_none()) {
        let result = match answers.next() {
            Some(Ok(committed)) => {
                crate::metrics::ingest(Ok(applied(&committed)), elapsed);
                relay.extend(committed.iter().cloned());
                PushResult {
                    ops: Some(committed.into_iter().map(committed_json).collect()),
                    error: None,
                }
            }
            Some(Err(e)) => {
                let (code, message) = db_refusal(&e);
                crate::metrics::ingest(Err(code), 0.0);
                PushResult {
                    ops: None,
                    error: Some(ErrorDetail { code, message }),
                }
            }
            None => PushResult {
                ops: None,
                error: Some(ErrorDetail {
                    code: ErrorCode::Internal,
                    message: "the push was not answered".into(),
                }),
            },
        };
        *slot = Some(result);
    }
    relay.sort_by_key(|c| c.seq);
    state.rooms.committed(space, &relay).await;
    Ok(results.into_iter().flatten().collect())
}

/// Query of catch-up.
#[derive(Debug, Deserialize)]
pub struct CatchUpQuery {
    /// Cursor: ops with seq above it.
    #[serde(default)]
    pub after: u64,
    /// Page size (default 1,000, at most 10,000).
    pub limit: Option<u32>,
}

pub(super) async fn catch_up(
    State(state): State<Arc<AppState>>,
    Path(space): Path<String>,
    headers: HeaderMap,
    query: Result<Query<CatchUpQuery>, QueryRejection>,
) -> Result<Json<OpsBody>, ApiError> {
    let claims = authorize(&state, &headers, &space, Need::Read)?;
    arbor_shared::auth::check_unscoped(&claims, "catch-up")?;
    let Query(q) = query.map_err(|e| ApiError::new(ErrorCode::BadRequest, e.body_text()))?;
    let limit = q.limit.unwrap_or(1_000).clamp(1, 10_000);
    // A standby serves only full pages: a page that is not full ends the
    // catch-up, and the standby may be behind the primary there, so the
    // primary answers it (the catch-up ends at the primary's head).
    let page = state
        .readers
        .read(
            |db| Box::pin(db.ops_after(&space, q.after, limit)),
            |page| page.ops.len() >= limit as usize,
        )
        .await?;
    Ok(Json(OpsBody {
        ops: page.ops.into_iter().map(committed_json).collect(),
        head_seq: Some(page.head_seq),
        min_cursor: page.min_cursor,
    }))
}
