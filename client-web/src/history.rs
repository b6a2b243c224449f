//! Undo and redo, the conflict list, a node's history from the server and
//! bringing a subtree back to a past seq: the native client's
//! (`Replica::undo`, `Replica::conflicts`, `Replica::revert_subtree`,
//! docs/CLIENT.md), exported on [`WebReplica`] with their answers as JSON
//! in the shapes of `web/src/types.ts`.
//!
//! History and revert read the server (`GET .../nodes/{id}/history`,
//! `GET .../subtree/{id}/at`) with the running connection's server and
//! token, so they need `connect`; offline they fail with `unavailable`.

use std::rc::Rc;

use arbor_client::{Conflict, ConflictKind, Kept, RevertReport, UndoReport};
use arbor_shared::ErrorCode;
use arbor_shared::http::{NodeHistoryBody, Origin, SubtreeAtBody};
use serde_json::{Value, json};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;

use crate::js::{JsResult, err};
use crate::{Inner, WebReplica, node_id, replica_err};

/// Most history entries in one page (the server's limit).
const MAX_HISTORY_PAGE: u32 = 1_000;

/// Where the server's HTTP API is, and with which token (the last
/// `connect`'s; cleared by `disconnect`).
#[derive(Debug, Clone)]
pub(crate) struct Http {
    /// The sync server's HTTP base.
    pub(crate) server: String,
    /// The bearer token.
    pub(crate) token: String,
}

/// An undo report as JSON: `{reverted, unchanged, kept: [...]}`.
fn undo_json(report: Option<UndoReport>) -> String {
    let Some(r) = report else {
        return "null".into();
    };
    let kept: Vec<Value> = r
        .kept
        .iter()
        .map(|k| match k {
            Kept::MovedSince { node } => json!({ "kind": "moved_since", "node": node }),
            Kept::ParentGone { node, parent } => {
                json!({ "kind": "parent_gone", "node": node, "parent": parent })
            }
            Kept::WouldCycle { node, parent } => {
                json!({ "kind": "would_cycle", "node": node, "parent": parent })
            }
            Kept::Overwritten { node, field } => {
                json!({ "kind": "overwritten", "node": node, "field": field })
            }
        })
        .collect();
    json!({ "reverted": r.reverted, "unchanged": r.unchanged, "kept": kept }).to_string()
}

/// A conflict as a JSON value: `{seq, node, by, kind, ...}`.
pub(crate) fn conflict_json(c: &Conflict) -> Value {
    let mut o = json!({ "seq": c.seq, "node": c.node, "by": c.by });
    let extra = match &c.kind {
        ConflictKind::FieldOverwritten { field, lost, kept } => {
            json!({ "kind": "field_overwritten", "field": field, "lost": lost, "kept": kept })
        }
        ConflictKind::MoveSkipped { parent } => json!({ "kind": "move_skipped", "parent": parent }),
        ConflictKind::MoveOverridden { parent } => {
            json!({ "kind": "move_overridden", "parent": parent })
        }
        ConflictKind::Restored { parent } => json!({ "kind": "restored", "parent": parent }),
    };
    if let (Some(o), Value::Object(extra)) = (o.as_object_mut(), extra) {
        o.extend(extra);
    }
    o
}

/// A revert report as JSON: `{seq, moved, set, skipped}`.
fn revert_json(seq: u64, r: &RevertReport) -> String {
    json!({ "seq": seq, "moved": r.moved, "set": r.set, "skipped": r.skipped }).to_string()
}

/// A history page as JSON: `{entries, nextBefore, headSeq}`.
/// An op's origin as `HistoryEntry.origin` says it.
pub(crate) fn origin(o: Origin) -> &'static str {
    match o {
        Origin::Restore => "restore",
        _ => "new",
    }
}

/// A page of committed ops as `HistoryPage`: `{entries, nextBefore,
/// headSeq}`, each entry `{seq, op, origin, author, applied}`.
pub(crate) fn history_json(body: &NodeHistoryBody) -> String {
    let entries: Vec<Value> = body
        .entries
        .iter()
        .map(|e| {
            json!({
                "seq": e.seq,
                "op": e.op,
                "origin": origin(e.origin),
                "author": e.author,
                "applied": e.applied,
            })
        })
        .collect();
    json!({
        "entries": entries,
        "nextBefore": body.next_before,
        "headSeq": body.head_seq,
    })
    .to_string()
}

/// `GET {server}/v1/spaces/{space}{path}` with the connection's token, its
/// JSON body read as `T`. A refusal keeps the server's code; no connection
/// or no answer is `unavailable`.
pub(crate) async fn get_json<T: serde::de::DeserializeOwned>(
    inner: &Inner,
    path: &str,
) -> JsResult<T> {
    let http = inner.http.borrow().clone().ok_or_else(|| {
        err(
            ErrorCode::Unavailable,
            "not connected: this reads the server, connect first",
        )
    })?;
    let url = format!(
        "{}/v1/spaces/{}{path}",
        http.server.trim_end_matches('/'),
        inner.space
    );
    let response = crate::sync::fetch(&url, &http.token)
        .await
        .map_err(|e| err(ErrorCode::Unavailable, &format!("GET {url}: {e}")))?;
    if !response.ok() {
        let status = response.status();
        return Err(match crate::sync::read_error(&response).await {
            Some(body) => err(body.error.code, &body.error.message),
            None => err(
                ErrorCode::Unavailable,
                &format!("GET {url}: the server answered HTTP {status}"),
            ),
        });
    }
    let text = JsFuture::from(
        response
            .text()
            .map_err(|e| err(ErrorCode::Unavailable, &crate::js::message(&e)))?,
    )
    .await
    .map_err(|e| err(ErrorCode::Unavailable, &crate::js::message(&e)))?
    .as_string()
    .unwrap_or_default();
    serde_json::from_str(&text).map_err(|e| {
        err(
            ErrorCode::Worker,
            &format!("GET {url}: an answer this client cannot read: {e}"),
        )
    })
}

async fn history(
    inner: Rc<Inner>,
    node: String,
    before: Option<f64>,
    limit: u32,
) -> JsResult<String> {
    let node = node_id(&node)?;
    let mut path = format!(
        "/nodes/{node}/history?limit={}",
        limit.clamp(1, MAX_HISTORY_PAGE)
    );
    if let Some(b) = before {
        if !(b.is_finite() && b >= 0.0) {
            return Err(err(
                ErrorCode::BadRequest,
                &format!("before must be a seq, not {b}"),
            ));
        }
        path.push_str(&format!("&before={}", b as u64));
    }
    let body: NodeHistoryBody = get_json(&inner, &path).await?;
    Ok(history_json(&body))
}

/// The subtree of `node` as it was at `seq`, from the server.
async fn read_subtree_at(inner: &Inner, node: &str, seq: f64) -> JsResult<SubtreeAtBody> {
    let node = node_id(node)?;
    if !(seq.is_finite() && seq >= 0.0) {
        return Err(err(
            ErrorCode::BadRequest,
            &format!("seq must be a seq, not {seq}"),
        ));
    }
    get_json(inner, &format!("/subtree/{node}/at?seq={}", seq as u64)).await
}

async fn subtree_at(inner: Rc<Inner>, node: String, seq: f64) -> JsResult<String> {
    let past = read_subtree_at(&inner, &node, seq).await?;
    serde_json::to_string(&past).map_err(|e| err(ErrorCode::Worker, &e.to_string()))
}

async fn revert(
    inner: Rc<Inner>,
    node: String,
    seq: f64,
    call_key: Option<String>,
) -> JsResult<String> {
    let past = read_subtree_at(&inner, &node, seq).await?;
    let seq = past.seq;
    // The key is set here, right before the write, not when the call came:
    // other calls ran while the server was read.
    let report = {
        let mut r = inner.replica_mut()?;
        r.set_call_key(call_key.as_deref());
        let report = r.revert_subtree(&past);
        r.set_call_key(None);
        report.map_err(replica_err)?
    };
    inner.wrote();
    Ok(revert_json(seq, &report))
}

/// A future as a JS promise of a string.
pub(crate) fn promise(
    f: impl std::future::Future<Output = JsResult<String>> + 'static,
) -> js_sys::Promise {
    wasm_bindgen_futures::future_to_promise(async move { f.await.map(|s| JsValue::from_str(&s)) })
}

#[wasm_bindgen]
impl WebReplica {
    /// Opens an undo step: the local edits until the matching `endStep`
    /// are undone together. Steps nest; the outermost counts.
    #[wasm_bindgen(js_name = beginStep)]
    pub fn begin_step(&self) -> Result<(), JsValue> {
        self.inner.replica_mut()?.begin_step();
        Ok(())
    }

    /// Closes the step `beginStep` opened.
    #[wasm_bindgen(js_name = endStep)]
    pub fn end_step(&self) -> Result<(), JsValue> {
        self.inner.replica_mut()?.end_step();
        Ok(())
    }

    /// Undoes the last step as new ops; its report as JSON, or `null` if
    /// there was nothing to undo.
    pub fn undo(&self) -> Result<String, JsValue> {
        let report = self.inner.replica_mut()?.undo().map_err(replica_err)?;
        self.inner.wrote();
        Ok(undo_json(report))
    }

    /// Redoes the last undone step; its report as JSON, or `null`.
    pub fn redo(&self) -> Result<String, JsValue> {
        let report = self.inner.replica_mut()?.redo().map_err(replica_err)?;
        self.inner.wrote();
        Ok(undo_json(report))
    }

    /// Whether there is a step to undo.
    #[wasm_bindgen(js_name = canUndo)]
    pub fn can_undo(&self) -> Result<bool, JsValue> {
        Ok(self.inner.replica()?.can_undo())
    }

    /// Whether there is a step to redo.
    #[wasm_bindgen(js_name = canRedo)]
    pub fn can_redo(&self) -> Result<bool, JsValue> {
        Ok(self.inner.replica()?.can_redo())
    }

    /// The conflict list, newest first, at most `limit`, as JSON.
    pub fn conflicts(&self, limit: u32) -> Result<String, JsValue> {
        let list = self
            .inner
            .replica()?
            .conflicts(limit as usize)
            .map_err(replica_err)?;
        Ok(Value::Array(list.iter().map(conflict_json).collect()).to_string())
    }

    /// Empties the conflict list; returns how many it held.
    #[wasm_bindgen(js_name = clearConflicts)]
    pub fn clear_conflicts(&self) -> Result<f64, JsValue> {
        let n = self
            .inner
            .replica_mut()?
            .clear_conflicts()
            .map_err(replica_err)?;
        Ok(n as f64)
    }

    /// A page of `node`'s history from the server, newest first, with seq
    /// below `before` (none: from the newest), at most `limit` (1 to
    /// 1,000): a promise of JSON `{entries, nextBefore, headSeq}`.
    pub fn history(&self, node: String, before: Option<f64>, limit: u32) -> js_sys::Promise {
        promise(history(self.inner.clone(), node, before, limit))
    }

    /// A page of `node`'s history from this replica's own record (offline;
    /// the seqs it holds: docs/CLIENT.md, "History from the replica
    /// itself"), in the same JSON as [`Self::history`], `headSeq` the
    /// cursor.
    #[wasm_bindgen(js_name = localHistory)]
    pub fn local_history(
        &self,
        node: String,
        before: Option<f64>,
        limit: u32,
    ) -> Result<String, JsValue> {
        let node = node_id(&node)?;
        let before = match before {
            None => None,
            Some(b) if b.is_finite() && b >= 0.0 => Some(b as u64),
            Some(b) => {
                return Err(err(
                    ErrorCode::BadRequest,
                    &format!("before must be a seq, not {b}"),
                ));
            }
        };
        let body = self
            .inner
            .replica()?
            .history(node, before, limit.clamp(1, MAX_HISTORY_PAGE) as usize)
            .map_err(replica_err)?;
        Ok(history_json(&body))
    }

    /// The subtree of `node` as it was at `seq`, read from the server
    /// (`GET .../subtree/{id}/at?seq=N`): a promise of the server's JSON
    /// answer as it is (docs/PROTOCOL.md).
    #[wasm_bindgen(js_name = subtreeAt)]
    pub fn subtree_at(&self, node: String, seq: f64) -> js_sys::Promise {
        promise(subtree_at(self.inner.clone(), node, seq))
    }

    /// Brings the subtree of `node` back to how it was at `seq` (the server
    /// says what it was), as new ops in one undo step: a promise of JSON
    /// `{seq, moved, set, skipped}`. `callKey`: the key its write records
    /// (see `setCallKey`), set when the write happens.
    #[wasm_bindgen(js_name = revertSubtree)]
    pub fn revert_subtree(
        &self,
        node: String,
        seq: f64,
        call_key: Option<String>,
    ) -> js_sys::Promise {
        promise(revert(self.inner.clone(), node, seq, call_key))
    }
}
