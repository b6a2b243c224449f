//! The inspector's reads for the browser: the outbox, recent committed ops with origin and author, restores, rejected ops and the replica's size, as JSON.
//!
//! The replica's own reads (`client/src/replica/inspect.rs`: each indexed
//! or bounded), exported on [`WebReplica`] in the shapes of
//! `web/src/types.ts` (`OutboxEntry`, `HistoryPage`, `PlaceReport`,
//! `ReplicaSize`). The rejected ops are `WebReplica::rejected`.

use arbor_client::replica::MAX_HISTORY_PAGE;
use arbor_client::{LastMove, OutboxEntry, ReplicaSize, RowCount};
use arbor_shared::{ErrorCode, Place};
use serde_json::{Value, json};
use wasm_bindgen::prelude::*;

use crate::history::{history_json, origin};
use crate::js::{JsResult, err};
use crate::{WebReplica, node_id, replica_err};

/// `before` from JS: none, or a seq.
fn before_seq(before: Option<f64>) -> JsResult<Option<u64>> {
    match before {
        None => Ok(None),
        Some(b) if b.is_finite() && b >= 0.0 => Ok(Some(b as u64)),
        Some(b) => Err(err(
            ErrorCode::BadRequest,
            &format!("before must be a seq, not {b}"),
        )),
    }
}

fn page_limit(limit: u32) -> usize {
    (limit as usize).clamp(1, MAX_HISTORY_PAGE)
}

fn place_json(p: &Option<Place>) -> Value {
    match p {
        Some(p) => json!({ "parent": p.parent, "key": p.key }),
        None => Value::Null,
    }
}

fn outbox_json(e: &OutboxEntry) -> Value {
    json!({ "op": e.op, "applied": e.applied, "from": place_json(&e.from) })
}

fn last_move_json(m: &LastMove) -> Value {
    json!({
        "stamp": m.stamp,
        "parent": m.parent,
        "key": m.key,
        "from": place_json(&m.from),
        "inLog": m.in_log,
        "pending": m.pending,
        "seq": m.seq,
        "origin": m.origin.map(origin),
        "author": m.author,
    })
}

fn count_json(c: RowCount) -> Value {
    json!({ "rows": c.rows, "exact": c.exact })
}

fn size_json(s: &ReplicaSize) -> String {
    json!({
        "databaseBytes": s.database_bytes,
        "nodes": count_json(s.nodes),
        "fields": count_json(s.fields),
        "log": count_json(s.log),
        "history": count_json(s.history),
        "historyStart": s.history_start,
        "outbox": s.outbox,
        "rejected": s.rejected,
        "conflicts": s.conflicts,
        "cursor": s.cursor,
        "horizon": s.horizon,
    })
    .to_string()
}

#[wasm_bindgen]
impl WebReplica {
    /// The first `limit` (1 to 1,000) unacknowledged local ops, oldest
    /// first, as JSON `[{op, applied, from}]`.
    #[wasm_bindgen(js_name = outboxEntries)]
    pub fn outbox_entries(&self, limit: u32) -> Result<String, JsValue> {
        let list = self
            .inner
            .replica()?
            .outbox_entries((limit as usize).clamp(1, 1_000))
            .map_err(replica_err)?;
        Ok(Value::Array(list.iter().map(outbox_json).collect()).to_string())
    }

    /// Committed ops of any node with seq below `before` (none: from the
    /// newest), newest first, at most `limit` (1 to 1,000), from the
    /// replica's history record: JSON `{entries, nextBefore, headSeq}`.
    #[wasm_bindgen(js_name = recentOps)]
    pub fn recent_ops(&self, before: Option<f64>, limit: u32) -> Result<String, JsValue> {
        let before = before_seq(before)?;
        let page = self
            .inner
            .replica()?
            .recent_ops(before, page_limit(limit))
            .map_err(replica_err)?;
        Ok(history_json(&page))
    }

    /// The restore rule's moves among the newest 10,000 committed ops below
    /// `before`, newest first, at most `limit`: JSON `{entries, nextBefore,
    /// headSeq}`, `nextBefore` where to look on.
    pub fn restores(&self, before: Option<f64>, limit: u32) -> Result<String, JsValue> {
        let before = before_seq(before)?;
        let page = self
            .inner
            .replica()?
            .restores(before, page_limit(limit))
            .map_err(replica_err)?;
        Ok(history_json(&page))
    }

    /// Where `node` is and the move that put it there, as JSON `{id,
    /// parent, key, ancestors, deleted, lastMove}`, or `null` if the
    /// replica does not have it.
    pub fn place(&self, node: &str) -> Result<String, JsValue> {
        let node = node_id(node)?;
        let r = self.inner.replica()?;
        if node.is_reserved() || !r.contains(node).map_err(replica_err)? {
            return Ok("null".into());
        }
        let place = r.place(node).map_err(replica_err)?;
        let ancestors = r.ancestors(node).map_err(replica_err)?;
        let deleted = r.is_deleted(node).map_err(replica_err)?;
        let last = r.last_move(node).map_err(replica_err)?;
        Ok(json!({
            "id": node,
            "parent": place.as_ref().map(|p| p.parent),
            "key": place.as_ref().map(|p| &p.key),
            "ancestors": ancestors,
            "deleted": deleted,
            "lastMove": last.as_ref().map(last_move_json),
        })
        .to_string())
    }

    /// What the replica holds and how big it is, as JSON (`ReplicaSize`).
    pub fn size(&self) -> Result<String, JsValue> {
        let size = self.inner.replica()?.size().map_err(replica_err)?;
        Ok(size_json(&size))
    }
}
