//! The calls record: application calls whose edits this replica committed, by the key the caller gave, so a call resent after its answer was lost (a browser tab handover) is found done instead of being made twice.

use arbor_shared::NodeId;
use rusqlite::{Connection, OptionalExtension as _, params};

use super::{Replica, Result};
use crate::store::{id_blob, id_from_blob};

/// Call keys kept at most; the oldest go first. A call is resent within
/// seconds of its answer being lost, so this is far more than needed.
pub const MAX_CALLS: i64 = 1_000;

/// A call found in the record: its edit was committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallDone {
    /// The node the call created (a create's answer), if it created one.
    pub created: Option<NodeId>,
}

/// Records that the call `key` committed its edit, in `conn`'s transaction
/// (the edit's own), with the node it created; trims the record.
pub(super) fn record(conn: &Connection, key: &str, created: Option<NodeId>) -> Result<()> {
    conn.prepare_cached("INSERT OR IGNORE INTO calls (key, created) VALUES (?1, ?2)")?
        .execute(params![key, created.map(id_blob)])?;
    conn.prepare_cached("DELETE FROM calls WHERE ord <= (SELECT max(ord) FROM calls) - ?1")?
        .execute([MAX_CALLS])?;
    Ok(())
}

impl Replica {
    /// Names the application call the next local write belongs to: that
    /// write's transaction records `key` with the edit, so
    /// [`Replica::call_done`] finds it afterwards. The write takes the key
    /// (a second write records none); a call that writes nothing (an error,
    /// an undo with nothing to undo) leaves it set, so clear it with `None`
    /// after the call. A key names one call: make it unique (the browser
    /// worker uses its own random id and a counter).
    pub fn set_call_key(&mut self, key: Option<&str>) {
        self.call_key = key.map(str::to_owned);
    }

    /// Whether the call `key` committed its edit in this replica (among the
    /// last [`MAX_CALLS`] keyed calls), and what it created.
    pub fn call_done(&self, key: &str) -> Result<Option<CallDone>> {
        let row: Option<Option<Vec<u8>>> = self
            .conn
            .prepare_cached("SELECT created FROM calls WHERE key = ?1")?
            .query_row([key], |r| r.get(0))
            .optional()?;
        row.map(|created| {
            Ok(CallDone {
                created: created.map(|b| id_from_blob(&b)).transpose()?,
            })
        })
        .transpose()
    }
}
