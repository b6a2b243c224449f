//! Local history: every committed op this replica has seen, kept by seq, and a node's history read from it without the server.

use arbor_shared::http::{HistoryEntryJson, NodeHistoryBody, Origin};
use arbor_shared::protocol::SeqOp;
use arbor_shared::snapshot::field::replica_to_stored;
use arbor_shared::{MoveOp, NodeId, Op, SetOp};
use rusqlite::{Connection, OptionalExtension as _, Row, params};

use super::{Replica, Result};
use crate::store::{hlc_to_sql, id_blob, id_from_blob, key_from_blob, stamp_from_sql};

/// Most entries of one history page (as the server's).
pub const MAX_HISTORY_PAGE: usize = 1_000;

/// Inserts (or replaces: a snapshot's copy of a seq wins) one committed op.
/// Parameters: seq, hlc, replica (stored form), known_seq, node, parent,
/// key, field, value, restore, author, applied.
pub(crate) const INSERT_HISTORY: &str = "INSERT OR REPLACE INTO history
     (seq, hlc, replica, known_seq, node, parent, key, field, value, restore, author, applied)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)";

/// Records committed ops just applied (in the apply's transaction): a move
/// with whether it took effect, as the move log says after the apply.
pub(super) fn record(tx: &Connection, ops: &[SeqOp]) -> Result<()> {
    let mut ins = tx.prepare_cached(INSERT_HISTORY)?;
    let mut applied =
        tx.prepare_cached("SELECT applied FROM ops WHERE hlc = ?1 AND replica = ?2")?;
    for o in ops {
        let stamp = o.op.stamp();
        let (hlc, rep) = (hlc_to_sql(stamp.hlc.0)?, replica_to_stored(stamp.replica.0));
        let seq = i64::try_from(o.seq).unwrap_or(i64::MAX);
        let restore = o.origin == Origin::Restore;
        match &o.op {
            Op::Move(m) => {
                let took: Option<bool> = applied
                    .query_row(params![hlc, rep], |r| r.get(0))
                    .optional()?;
                ins.execute(params![
                    seq,
                    hlc,
                    rep,
                    known(m.known_seq),
                    id_blob(m.node),
                    id_blob(m.parent),
                    m.key.as_bytes(),
                    None::<&str>,
                    None::<&str>,
                    restore,
                    o.author,
                    took,
                ])?;
            }
            Op::Set(s) => {
                ins.execute(params![
                    seq,
                    hlc,
                    rep,
                    known(s.known_seq),
                    id_blob(s.node),
                    None::<&[u8]>,
                    None::<&[u8]>,
                    s.field,
                    s.value,
                    restore,
                    o.author,
                    None::<bool>,
                ])?;
            }
        }
    }
    Ok(())
}

fn known(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

impl Replica {
    /// Up to `limit` (at most [`MAX_HISTORY_PAGE`]) committed ops of `node`
    /// with seq below `before` (`None`: from the newest), newest first, from
    /// this replica's own record: the same answer as the server's
    /// `GET .../nodes/{id}/history` for the seqs this replica holds (from
    /// [`Replica::history_start`] to its cursor). A move's `applied` is the
    /// move log's view now where the log still holds it (above the
    /// horizon), else its view when it was applied. `head_seq` is the
    /// cursor. Ops not yet acknowledged are not history yet: see
    /// [`Replica::outbox`].
    pub fn history(
        &self,
        node: NodeId,
        before: Option<u64>,
        limit: usize,
    ) -> Result<NodeHistoryBody> {
        let before = before.map_or(i64::MAX, |b| i64::try_from(b).unwrap_or(i64::MAX));
        let limit = limit.clamp(1, MAX_HISTORY_PAGE);
        let sql = format!(
            "SELECT {ENTRY_COLUMNS}
             FROM history h LEFT JOIN ops o ON o.hlc = h.hlc AND o.replica = h.replica
             WHERE h.node = ?1 AND h.seq < ?2
             ORDER BY h.seq DESC LIMIT ?3"
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let mut rows = stmt.query(params![id_blob(node), before, limit as i64 + 1])?;
        let mut entries = Vec::new();
        while let Some(r) = rows.next()? {
            entries.push(entry_from_row(r)?);
        }
        self.history_page(entries, limit)
    }

    /// A page of `entries` (read with one more than `limit`, newest first):
    /// `next_before` is set when that extra one says older entries remain.
    pub(super) fn history_page(
        &self,
        mut entries: Vec<HistoryEntryJson>,
        limit: usize,
    ) -> Result<NodeHistoryBody> {
        let next_before = if entries.len() > limit {
            entries.truncate(limit);
            entries.last().map(|e| e.seq)
        } else {
            None
        };
        Ok(NodeHistoryBody {
            entries,
            next_before,
            head_seq: self.cursor()?.unwrap_or(0),
        })
    }

    /// The lowest seq this replica's history holds (`None`: none yet). A
    /// replica records from the first op of the snapshot it loaded (the
    /// log above the space's horizon then) and every op it applies after;
    /// a replica loaded from a space's export holds the whole log.
    pub fn history_start(&self) -> Result<Option<u64>> {
        let seq: Option<i64> = self
            .conn
            .query_row("SELECT min(seq) FROM history", [], |r| r.get(0))?;
        Ok(seq.map(|s| s as u64))
    }

    /// Forgets the history below seq `before` (the record grows with every
    /// committed op; an application that does not need old history trims
    /// it). Returns the entries removed.
    pub fn trim_history(&mut self, before: u64) -> Result<u64> {
        let before = i64::try_from(before).unwrap_or(i64::MAX);
        Ok(self
            .conn
            .execute("DELETE FROM history WHERE seq < ?1", [before])? as u64)
    }
}

/// The columns [`entry_from_row`] reads, from `history h` joined with the
/// move log `o` (whose `applied` is the view now, where it holds the move).
pub(super) const ENTRY_COLUMNS: &str =
    "h.seq, h.hlc, h.replica, h.known_seq, h.node, h.parent, h.key,
     h.field, h.value, h.restore, h.author, COALESCE(o.applied, h.applied)";

/// A history row (selected as [`ENTRY_COLUMNS`]) as the server's entry.
pub(super) fn entry_from_row(r: &Row<'_>) -> Result<HistoryEntryJson> {
    let stamp = stamp_from_sql(r.get(1)?, r.get(2)?);
    let known_seq = r.get::<_, i64>(3)?.max(0) as u64;
    let node = id_from_blob(&r.get::<_, Vec<u8>>(4)?)?;
    let op = match r.get::<_, Option<Vec<u8>>>(5)? {
        Some(parent) => Op::Move(MoveOp {
            stamp,
            known_seq,
            node,
            parent: id_from_blob(&parent)?,
            key: key_from_blob(&r.get::<_, Vec<u8>>(6)?)?,
        }),
        None => Op::Set(SetOp {
            stamp,
            known_seq,
            node,
            field: r.get(7)?,
            value: r.get(8)?,
        }),
    };
    let applied: Option<bool> = r.get(11)?;
    Ok(HistoryEntryJson {
        seq: r.get::<_, i64>(0)?.max(0) as u64,
        applied: matches!(op, Op::Move(_)).then_some(applied.unwrap_or(true)),
        op,
        origin: if r.get(9)? {
            Origin::Restore
        } else {
            Origin::New
        },
        author: r.get(10)?,
    })
}
