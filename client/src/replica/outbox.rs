//! The outbox: local ops not yet acknowledged by the server, queued in the transaction that applied them, and what sync does with them.

use std::collections::BTreeMap;

use arbor_shared::snapshot::field::{replica_from_stored, replica_to_stored};
use arbor_shared::{ErrorCode, MoveOp, Op, SetOp, Stamp};
use rusqlite::{Connection, TransactionBehavior, params};

use super::meta::{key, meta_i64, meta_set};
use super::{Replica, ReplicaError, Result};
use crate::store::{hlc_to_sql, id_from_blob, key_from_blob};

/// Queues `ops` in the outbox (inside the caller's transaction).
pub(super) fn outbox_insert<'a>(
    tx: &Connection,
    ops: impl IntoIterator<Item = &'a Op>,
) -> Result<()> {
    let mut insert =
        tx.prepare_cached("INSERT INTO outbox (hlc, replica, op) VALUES (?1, ?2, ?3)")?;
    for op in ops {
        let s = op.stamp();
        let json = serde_json::to_string(op).map_err(|e| ReplicaError::Snapshot(e.to_string()))?;
        insert.execute(params![
            hlc_to_sql(s.hlc.0)?,
            replica_to_stored(s.replica.0),
            json
        ])?;
    }
    Ok(())
}

/// Removes the ops with these stamps from the outbox (inside the caller's
/// transaction).
pub(super) fn outbox_delete(
    tx: &Connection,
    stamps: impl IntoIterator<Item = Stamp>,
) -> Result<()> {
    let mut delete = tx.prepare_cached("DELETE FROM outbox WHERE hlc = ?1 AND replica = ?2")?;
    for s in stamps {
        delete.execute(params![
            hlc_to_sql(s.hlc.0)?,
            replica_to_stored(s.replica.0)
        ])?;
    }
    Ok(())
}

/// A local op the server refused for good.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedOp {
    /// The op.
    pub op: Op,
    /// The refusal's code (its disposition is `refuse`).
    pub code: ErrorCode,
    /// The server's message.
    pub message: String,
}

impl Replica {
    /// The unacknowledged local ops, oldest first (at most `limit`), held
    /// ones (write-behind) included.
    pub fn outbox(&self, limit: usize) -> Result<Vec<Op>> {
        self.outbox_upto(i64::MAX, limit)
    }

    /// The ops to push: the outbox without held ops (an op goes to the
    /// server only once it is committed here, so the server never has an op
    /// a crash could take from this replica).
    pub fn outbox_to_push(&self, limit: usize) -> Result<Vec<Op>> {
        self.outbox_upto(self.held.map_or(i64::MAX, |h| h.outbox_committed), limit)
    }

    fn outbox_upto(&self, last_ord: i64, limit: usize) -> Result<Vec<Op>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT op FROM outbox WHERE ord <= ?1 ORDER BY ord LIMIT ?2")?;
        let rows = stmt.query_map(
            params![last_ord, i64::try_from(limit).unwrap_or(i64::MAX)],
            |r| r.get::<_, String>(0),
        )?;
        let mut out = Vec::new();
        for text in rows {
            let text = text?;
            let op: Op = serde_json::from_str(&text)
                .map_err(|e| ReplicaError::Snapshot(format!("outbox row: {e}")))?;
            out.push(op);
        }
        Ok(out)
    }

    /// Number of unacknowledged local ops.
    pub fn outbox_len(&self) -> Result<u64> {
        let n: i64 = self
            .conn
            .prepare_cached("SELECT count(*) FROM outbox")?
            .query_row([], |r| r.get(0))?;
        Ok(n.max(0) as u64)
    }

    /// Removes ops the server committed (an `ack`) from the outbox.
    pub fn acknowledge(&mut self, stamps: &[Stamp]) -> Result<()> {
        if self.subtree_root()?.is_some() {
            return self.acknowledge_in_subtree(stamps);
        }
        self.commit_held()?;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Deferred)?;
        outbox_delete(&tx, stamps.iter().copied())?;
        tx.commit()?;
        Ok(())
    }

    /// Moves ops the server refused for good from the outbox to the
    /// rejected list, with the refusal, in one transaction (their local
    /// effects go away at the next cold start, which the caller triggers).
    /// They are never pushed again.
    pub fn reject(&mut self, stamps: &[Stamp], code: ErrorCode, message: &str) -> Result<()> {
        self.commit_held()?;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Deferred)?;
        {
            let mut keep = tx.prepare_cached(
                "INSERT INTO rejected (hlc, replica, op, code, message)
                 SELECT hlc, replica, op, ?3, ?4 FROM outbox WHERE hlc = ?1 AND replica = ?2",
            )?;
            for s in stamps {
                keep.execute(params![
                    hlc_to_sql(s.hlc.0)?,
                    replica_to_stored(s.replica.0),
                    code.as_str(),
                    message
                ])?;
            }
        }
        outbox_delete(&tx, stamps.iter().copied())?;
        tx.commit()?;
        Ok(())
    }

    /// The ops the server refused for good, oldest first, with why.
    pub fn rejected(&self) -> Result<Vec<RejectedOp>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT op, code, message FROM rejected ORDER BY ord")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (op, code, message) = row?;
            out.push(RejectedOp {
                op: serde_json::from_str(&op)
                    .map_err(|e| ReplicaError::Snapshot(format!("rejected row: {e}")))?,
                code: ErrorCode::parse(&code),
                message,
            });
        }
        Ok(out)
    }

    /// Number of ops in the rejected list.
    pub fn rejected_len(&self) -> Result<u64> {
        let n: i64 = self
            .conn
            .prepare_cached("SELECT count(*) FROM rejected")?
            .query_row([], |r| r.get(0))?;
        Ok(n.max(0) as u64)
    }

    /// Empties the rejected list (the application has shown it); returns
    /// how many ops it held.
    pub fn clear_rejected(&mut self) -> Result<u64> {
        Ok(self.conn.execute("DELETE FROM rejected", [])? as u64)
    }

    /// The server went back in time (restored from a backup: it has less
    /// than this replica's cursor). Queues again every op of this replica
    /// that it still holds (its own moves in the log, its own winning
    /// registers) with the outbox, in stamp order, so they are pushed
    /// again after the next snapshot load: the server keeps the ones it
    /// has (same stamps) and commits the ones the rewind lost. Returns how
    /// many were queued again.
    pub fn requeue_own_ops(&mut self) -> Result<u64> {
        let me = replica_to_stored(self.replica.0);
        self.commit_held()?;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut ops: BTreeMap<Stamp, Op> = BTreeMap::new();
        {
            let mut stmt =
                tx.prepare("SELECT hlc, node, parent, key FROM ops WHERE replica = ?1")?;
            let rows = stmt.query_map([me], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    id_from_blob(&r.get::<_, Vec<u8>>(1)?)?,
                    id_from_blob(&r.get::<_, Vec<u8>>(2)?)?,
                    key_from_blob(&r.get::<_, Vec<u8>>(3)?)?,
                ))
            })?;
            for row in rows {
                let (hlc, node, parent, key) = row?;
                let stamp = Stamp::new(hlc as u64, self.replica.0);
                ops.insert(
                    stamp,
                    Op::Move(MoveOp {
                        stamp,
                        known_seq: 0,
                        node,
                        parent,
                        key,
                    }),
                );
            }
            let mut stmt =
                tx.prepare("SELECT hlc, node, field, value FROM payloads WHERE replica = ?1")?;
            let rows = stmt.query_map([me], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    id_from_blob(&r.get::<_, Vec<u8>>(1)?)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, Option<String>>(3)?,
                ))
            })?;
            for row in rows {
                let (hlc, node, field, value) = row?;
                let stamp = Stamp::new(hlc as u64, self.replica.0);
                ops.insert(
                    stamp,
                    Op::Set(SetOp {
                        stamp,
                        known_seq: 0,
                        node,
                        field,
                        value,
                    }),
                );
            }
            // What the outbox holds already keeps its own text.
            let mut stmt = tx.prepare("SELECT op FROM outbox")?;
            let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
            for row in rows {
                let op: Op = serde_json::from_str(&row?)
                    .map_err(|e| ReplicaError::Snapshot(format!("outbox row: {e}")))?;
                ops.insert(op.stamp(), op);
            }
        }
        let queued = ops.len() as u64;
        tx.execute("DELETE FROM outbox", [])?;
        outbox_insert(&tx, ops.values())?;
        tx.commit()?;
        Ok(queued)
    }

    /// Marks the outbox for re-stamping at the next snapshot load: every
    /// op from the first one at or below the snapshot's horizon (refused as
    /// `stale`), or from `from` on (an op refused `stamp_conflict`: another
    /// op holds its stamp), whichever comes first; later ops are re-stamped
    /// too, so they keep their order.
    pub fn request_restamp(&mut self, from: Option<Stamp>) -> Result<()> {
        self.commit_held()?;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Deferred)?;
        meta_set(&tx, key::RESTAMP, 1i64)?;
        if let Some(from) = from {
            let earlier = meta_i64(&tx, key::RESTAMP_FROM_HLC)?
                .zip(meta_i64(&tx, key::RESTAMP_FROM_REPLICA)?)
                .map(|(h, r)| Stamp::new(h as u64, replica_from_stored(r)))
                .is_some_and(|s| s <= from);
            if !earlier {
                meta_set(&tx, key::RESTAMP_FROM_HLC, hlc_to_sql(from.hlc.0)?)?;
                meta_set(
                    &tx,
                    key::RESTAMP_FROM_REPLICA,
                    replica_to_stored(from.replica.0),
                )?;
            }
        }
        tx.commit()?;
        Ok(())
    }
}
