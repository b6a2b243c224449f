//! The inspector's reads: the outbox with each op's local effect, recent committed ops and the restores among them, the move that put a node where it is, and the replica's size; each read indexed or bounded, so it stays cheap on a 1M-node replica.

use arbor_shared::http::{NodeHistoryBody, Origin};
use arbor_shared::snapshot::field::replica_to_stored;
use arbor_shared::{NodeId, Op, OrderKey, Place, Stamp};
use rusqlite::{OptionalExtension as _, params};

use super::history::{ENTRY_COLUMNS, MAX_HISTORY_PAGE, entry_from_row};
use super::{Replica, Result};
use crate::store::{hlc_to_sql, id_blob, id_from_blob, key_from_blob, stamp_from_sql};

/// Most history rows [`Replica::restores`] looks through in one call:
/// restores are rare and the `history` table has no index on them, so a
/// call reads a bounded window of seqs and says where to go on.
pub const RESTORE_SCAN: usize = 10_000;

/// Most rows [`Replica::size`] counts in one table: past it the count says
/// "more than" ([`RowCount::exact`] false). A count reads every row: on a
/// 1M-node replica a full count of `nodes` takes about 50 ms natively (its
/// log and history hold more), too much for an inspector that reads the
/// size twice a second in the worker that also serves edits; 10,000 rows
/// take about 1 ms. The database's size says how big the rest is, and
/// [`Replica::node_count`] counts the nodes when asked.
pub const SIZE_COUNT_CAP: u64 = 10_000;

/// A local op not yet acknowledged by the server, with what it does here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    /// The op, as it will be pushed.
    pub op: Op,
    /// Whether it is in effect in this replica now. A move: the move log's
    /// view (false: skipped, it would make a cycle with moves applied
    /// since); `None` when the log does not hold it (a move stamped at or
    /// below the horizon, waiting to be re-stamped, is not shown). A set:
    /// whether the register holds its value (false: a write with a greater
    /// stamp won).
    pub applied: Option<bool>,
    /// For a move in the log and in effect: where it took the node from
    /// (`None`: it created the node, or the move is not in effect).
    pub from: Option<Place>,
}

/// The move that put a node where it is: the applied move with the
/// greatest stamp among the node's moves (the tree CRDT's rule).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastMove {
    /// The move's stamp (which replica made it, and when).
    pub stamp: Stamp,
    /// The parent it put the node under.
    pub parent: NodeId,
    /// The order key it gave the node.
    pub key: OrderKey,
    /// Where it took the node from; `None` when it created the node, or
    /// when the move is not in the move log ([`LastMove::in_log`] false:
    /// below the horizon, where the log no longer keeps effects).
    pub from: Option<Place>,
    /// Whether the move log holds it (above the horizon); else it was
    /// found in the history record.
    pub in_log: bool,
    /// This replica's own move, not acknowledged yet (in the outbox).
    pub pending: bool,
    /// Its seq, if the history record holds it (`None`: pending, or made
    /// before the record starts).
    pub seq: Option<u64>,
    /// `new`, or `restore` (the server's restore rule); `None` as `seq`.
    pub origin: Option<Origin>,
    /// Who made it (the token subject), as the feed named it; `None` for
    /// restores, unclaimed replicas, or when `seq` is `None`.
    pub author: Option<String>,
}

/// A count of rows, exact up to [`SIZE_COUNT_CAP`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowCount {
    /// The rows counted (the cap when `exact` is false).
    pub rows: u64,
    /// False: the table holds more than `rows`.
    pub exact: bool,
}

/// What the replica holds and how big it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaSize {
    /// The database's size as of its last commit (`page_count` ×
    /// `page_size`: pages still in the WAL included, free pages too; the
    /// WAL file's own size is not).
    pub database_bytes: u64,
    /// Nodes in the tree (ROOT and TRASH excluded).
    pub nodes: RowCount,
    /// Field registers (cleared ones included: they hold a stamp).
    pub fields: RowCount,
    /// Moves in the move log (above the horizon).
    pub log: RowCount,
    /// Committed ops in the history record.
    pub history: RowCount,
    /// The lowest seq the history record holds (`None`: empty).
    pub history_start: Option<u64>,
    /// Local ops not acknowledged yet.
    pub outbox: u64,
    /// Local ops the server refused for good.
    pub rejected: u64,
    /// Entries of the conflict list (at most 1,000).
    pub conflicts: u64,
    /// The highest seq applied (`None`: never synced).
    pub cursor: Option<u64>,
    /// The log horizon (from the last snapshot).
    pub horizon: Option<Stamp>,
}

fn seq_param(before: Option<u64>) -> i64 {
    before.map_or(i64::MAX, |b| i64::try_from(b).unwrap_or(i64::MAX))
}

fn place_from(parent: Option<Vec<u8>>, key: Option<Vec<u8>>) -> Result<Option<Place>> {
    Ok(match (parent, key) {
        (Some(p), Some(k)) => Some(Place {
            parent: id_from_blob(&p)?,
            key: key_from_blob(&k)?,
        }),
        _ => None,
    })
}

impl Replica {
    /// The first `limit` unacknowledged local ops, oldest first (the order
    /// they are pushed in), each with its effect here. Reads the outbox by
    /// its primary key and each op's row in the move log or its register.
    pub fn outbox_entries(&self, limit: usize) -> Result<Vec<OutboxEntry>> {
        let mut log = self.conn.prepare_cached(
            "SELECT applied, prev_parent, prev_key FROM ops WHERE hlc = ?1 AND replica = ?2",
        )?;
        let mut register = self.conn.prepare_cached(
            "SELECT hlc = ?3 AND replica = ?4 FROM payloads WHERE node = ?1 AND field = ?2",
        )?;
        let mut out = Vec::new();
        for op in self.outbox(limit)? {
            let s = op.stamp();
            let (hlc, rep) = (hlc_to_sql(s.hlc.0)?, replica_to_stored(s.replica.0));
            let entry = match &op {
                Op::Move(_) => {
                    let row = log
                        .query_row(params![hlc, rep], |r| {
                            Ok((
                                r.get::<_, bool>(0)?,
                                r.get::<_, Option<Vec<u8>>>(1)?,
                                r.get::<_, Option<Vec<u8>>>(2)?,
                            ))
                        })
                        .optional()?;
                    match row {
                        Some((applied, p, k)) => OutboxEntry {
                            applied: Some(applied),
                            from: if applied { place_from(p, k)? } else { None },
                            op,
                        },
                        None => OutboxEntry {
                            applied: None,
                            from: None,
                            op,
                        },
                    }
                }
                Op::Set(set) => {
                    let holds: bool = register
                        .query_row(params![id_blob(set.node), set.field, hlc, rep], |r| {
                            r.get(0)
                        })
                        .optional()?
                        .unwrap_or(false);
                    OutboxEntry {
                        applied: Some(holds),
                        from: None,
                        op,
                    }
                }
            };
            out.push(entry);
        }
        Ok(out)
    }

    /// Up to `limit` (1 to [`MAX_HISTORY_PAGE`]) committed ops of any node
    /// with seq below `before` (`None`: from the newest), newest first, from
    /// the history record: entries as [`Replica::history`] gives them for
    /// one node (seq, op, origin, author, applied). A range read of the
    /// record's primary key. `head_seq` is the cursor; `next_before` is
    /// present when older entries may remain.
    pub fn recent_ops(&self, before: Option<u64>, limit: usize) -> Result<NodeHistoryBody> {
        let limit = limit.clamp(1, MAX_HISTORY_PAGE);
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {ENTRY_COLUMNS}
             FROM history h LEFT JOIN ops o ON o.hlc = h.hlc AND o.replica = h.replica
             WHERE h.seq < ?1 ORDER BY h.seq DESC LIMIT ?2"
        ))?;
        let mut rows = stmt.query(params![seq_param(before), limit as i64 + 1])?;
        let mut entries = Vec::new();
        while let Some(r) = rows.next()? {
            entries.push(entry_from_row(r)?);
        }
        self.history_page(entries, limit)
    }

    /// The moves the server's restore rule made (origin `restore`: a
    /// deleted node brought back because an edit inside it was concurrent
    /// with the delete) among the newest [`RESTORE_SCAN`] committed ops
    /// with seq below `before` (`None`: from the newest), newest first, at
    /// most `limit` (1 to [`MAX_HISTORY_PAGE`]). `next_before` is where to
    /// go on (present while older ops remain unread), so a caller pages
    /// through the record a bounded window at a time.
    pub fn restores(&self, before: Option<u64>, limit: usize) -> Result<NodeHistoryBody> {
        let limit = limit.clamp(1, MAX_HISTORY_PAGE);
        // A range read of the primary key; only restores are looked up in
        // the move log.
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {ENTRY_COLUMNS}
             FROM history h LEFT JOIN ops o ON h.restore AND o.hlc = h.hlc AND o.replica = h.replica
             WHERE h.seq < ?1 ORDER BY h.seq DESC LIMIT ?2"
        ))?;
        let mut rows = stmt.query(params![seq_param(before), RESTORE_SCAN as i64])?;
        let mut entries = Vec::new();
        let (mut scanned, mut lowest) = (0usize, None);
        let mut full = false;
        while let Some(r) = rows.next()? {
            scanned += 1;
            let seq = r.get::<_, i64>(0)?.max(0) as u64;
            lowest = Some(seq);
            if r.get::<_, bool>(9)? {
                entries.push(entry_from_row(r)?);
                if entries.len() == limit {
                    full = true;
                    break;
                }
            }
        }
        // More may remain below the last row read when the page filled or
        // the window ended; a window that ran out of rows read them all.
        let more = full || scanned == RESTORE_SCAN;
        let next_before = if more { lowest } else { None };
        Ok(NodeHistoryBody {
            entries,
            next_before,
            head_seq: self.cursor()?.unwrap_or(0),
        })
    }

    /// The move that put `node` where it is (`None`: the replica has no
    /// record of one: the node is not here, or was placed below the horizon
    /// before the history record starts, or by a subtree replica's frames,
    /// which carry state, not ops). Read from the move log through its
    /// node index; below the horizon, from the node's history entries.
    pub fn last_move(&self, node: NodeId) -> Result<Option<LastMove>> {
        let in_log = self
            .conn
            .prepare_cached(
                "SELECT hlc, replica, parent, key, prev_parent, prev_key FROM ops
                 WHERE node = ?1 AND applied ORDER BY hlc DESC, replica DESC LIMIT 1",
            )?
            .query_row([id_blob(node)], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                    r.get::<_, Vec<u8>>(3)?,
                    r.get::<_, Option<Vec<u8>>>(4)?,
                    r.get::<_, Option<Vec<u8>>>(5)?,
                ))
            })
            .optional()?;
        // The node's history entries are few next to the record (one per
        // op of this node), read through the index `history (node, seq)`.
        let mut recorded = self.conn.prepare_cached(
            "SELECT seq, restore, author FROM history
             WHERE node = ?1 AND hlc = ?2 AND replica = ?3 AND parent IS NOT NULL",
        )?;
        let mut pending = self
            .conn
            .prepare_cached("SELECT 1 FROM outbox WHERE hlc = ?1 AND replica = ?2")?;
        if let Some((hlc, rep, parent, key, prev_parent, prev_key)) = in_log {
            let seen = recorded
                .query_row(params![id_blob(node), hlc, rep], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, bool>(1)?,
                        r.get::<_, Option<String>>(2)?,
                    ))
                })
                .optional()?;
            let (seq, origin, author) = match seen {
                Some((seq, restore, author)) => (
                    Some(seq.max(0) as u64),
                    Some(if restore {
                        Origin::Restore
                    } else {
                        Origin::New
                    }),
                    author,
                ),
                None => (None, None, None),
            };
            return Ok(Some(LastMove {
                stamp: stamp_from_sql(hlc, rep),
                parent: id_from_blob(&parent)?,
                key: key_from_blob(&key)?,
                from: place_from(prev_parent, prev_key)?,
                in_log: true,
                pending: pending.exists(params![hlc, rep])?,
                seq,
                origin,
                author,
            }));
        }
        // Below the horizon every move is final: the applied one with the
        // greatest stamp placed the node.
        let below = self
            .conn
            .prepare_cached(
                "SELECT h.seq, h.hlc, h.replica, h.parent, h.key, h.restore, h.author
                 FROM history h LEFT JOIN ops o ON o.hlc = h.hlc AND o.replica = h.replica
                 WHERE h.node = ?1 AND h.parent IS NOT NULL
                   AND COALESCE(o.applied, h.applied, 1)
                 ORDER BY h.hlc DESC, h.replica DESC LIMIT 1",
            )?
            .query_row([id_blob(node)], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, Vec<u8>>(3)?,
                    r.get::<_, Vec<u8>>(4)?,
                    r.get::<_, bool>(5)?,
                    r.get::<_, Option<String>>(6)?,
                ))
            })
            .optional()?;
        let Some((seq, hlc, rep, parent, key, restore, author)) = below else {
            return Ok(None);
        };
        Ok(Some(LastMove {
            stamp: stamp_from_sql(hlc, rep),
            parent: id_from_blob(&parent)?,
            key: key_from_blob(&key)?,
            from: None,
            in_log: false,
            pending: false,
            seq: Some(seq.max(0) as u64),
            origin: Some(if restore {
                Origin::Restore
            } else {
                Origin::New
            }),
            author,
        }))
    }

    /// What the replica holds and how big it is: the database's size from
    /// two pragmas, the big tables counted up to [`SIZE_COUNT_CAP`] rows, the
    /// small ones (outbox, rejected, conflicts) exactly.
    pub fn size(&self) -> Result<ReplicaSize> {
        let pragma = |name: &str| -> Result<u64> {
            let v: i64 = self.conn.pragma_query_value(None, name, |r| r.get(0))?;
            Ok(v.max(0) as u64)
        };
        let database_bytes = pragma("page_count")? * pragma("page_size")?;
        let capped = |table: &str| -> Result<RowCount> {
            let n: i64 = self
                .conn
                .prepare_cached(&format!(
                    "SELECT count(*) FROM (SELECT 1 FROM {table} LIMIT ?1)"
                ))?
                .query_row([SIZE_COUNT_CAP as i64 + 1], |r| r.get(0))?;
            let n = n.max(0) as u64;
            Ok(RowCount {
                rows: n.min(SIZE_COUNT_CAP),
                exact: n <= SIZE_COUNT_CAP,
            })
        };
        let conflicts: i64 = self
            .conn
            .prepare_cached("SELECT count(*) FROM conflicts")?
            .query_row([], |r| r.get(0))?;
        Ok(ReplicaSize {
            database_bytes,
            nodes: capped("nodes")?,
            fields: capped("payloads")?,
            log: capped("ops")?,
            history: capped("history")?,
            history_start: self.history_start()?,
            outbox: self.outbox_len()?,
            rejected: self.rejected_len()?,
            conflicts: conflicts.max(0) as u64,
            cursor: self.cursor()?,
            horizon: self.horizon()?,
        })
    }
}
