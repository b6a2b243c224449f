//! The conflict list: what this replica wrote that did not stand (a value that lost last-writer-wins, a move skipped as a cycle or moved again by someone else) and the server's restores, found as committed ops are applied, kept for the application and sent with the change events.

use arbor_shared::protocol::{Origin, SeqOp};
use arbor_shared::snapshot::field::replica_to_stored;
use arbor_shared::{NodeId, Op, ReplicaId, Tree, TreeStore as _};
use rusqlite::{Connection, OptionalExtension as _, params};

use super::{Replica, Result};
use crate::store::{SqliteStore, hlc_to_sql, id_blob, id_from_blob};

/// Conflicts kept at most; the oldest go first.
pub const MAX_CONFLICTS: i64 = 1_000;

/// Something the application should be able to show: this replica's edit
/// did not stand, or the server brought a deleted node back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The seq of the committed op that caused it.
    pub seq: u64,
    /// The node.
    pub node: NodeId,
    /// Who made that op (its author as the server names it; `None`: the
    /// server's restore rule, or an unclaimed replica id).
    pub by: Option<String>,
    /// What happened.
    pub kind: ConflictKind,
}

/// What happened to this replica's edit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConflictKind {
    /// A value this replica wrote was replaced by another replica's write,
    /// made without knowing of it, that won last-writer-wins.
    FieldOverwritten {
        /// The field.
        field: String,
        /// This replica's value, lost.
        lost: Option<String>,
        /// The value that won.
        kept: Option<String>,
    },
    /// A move this replica made is not in effect: with moves it did not
    /// know of, it would have made a cycle.
    MoveSkipped {
        /// The parent it asked for.
        parent: NodeId,
    },
    /// A node this replica placed last was moved elsewhere by another
    /// replica that did not know of this replica's move (concurrently).
    MoveOverridden {
        /// Its parent now.
        parent: NodeId,
    },
    /// The server's restore rule brought a deleted node back (an edit
    /// inside it was concurrent with the delete).
    Restored {
        /// Where it went.
        parent: NodeId,
    },
}

/// Conflicts found before a batch is applied, to confirm after.
pub(super) struct Pending {
    /// With the stamp of the op that must win for it to hold (sets).
    found: Vec<(Conflict, Option<arbor_shared::Stamp>)>,
    /// This replica's moves in effect that the batch could undo (stamped
    /// at or after its oldest op): node, parent, stamp.
    own_moves: Vec<(NodeId, NodeId, arbor_shared::Stamp)>,
    /// The batch's last seq.
    last_seq: u64,
}

/// What `ops` (committed, about to be applied by `me`'s replica in
/// `conn`'s transaction) may take from this replica: read before they are
/// applied.
pub(super) fn before_apply(conn: &Connection, me: ReplicaId, ops: &[SeqOp]) -> Result<Pending> {
    let store = SqliteStore::new(conn);
    let tree = Tree::new(SqliteStore::new(conn));
    let mut found = Vec::new();
    let own_moves = match ops.iter().map(|o| o.op.stamp()).min() {
        Some(oldest) => own_moves_in_effect(conn, me, oldest)?,
        None => Vec::new(),
    };
    for o in ops {
        let by = o.author.clone();
        match &o.op {
            Op::Set(s) if s.stamp.replica != me => {
                if let Some(p) = store.payload(s.node, &s.field)?
                    && p.stamp.replica == me
                    && s.stamp > p.stamp
                    && p.value != s.value
                    && concurrent(conn, s.node, &s.field, p.stamp, s.known_seq)?
                {
                    let c = Conflict {
                        seq: o.seq,
                        node: s.node,
                        by,
                        kind: ConflictKind::FieldOverwritten {
                            field: s.field.clone(),
                            lost: p.value,
                            kept: s.value.clone(),
                        },
                    };
                    found.push((c, Some(s.stamp)));
                }
            }
            Op::Move(m) if o.origin == Origin::Restore => found.push((
                Conflict {
                    seq: o.seq,
                    node: m.node,
                    by,
                    kind: ConflictKind::Restored { parent: m.parent },
                },
                None,
            )),
            Op::Move(m) if m.stamp.replica == me => {}
            Op::Move(m) => {
                let placed_by_me = match last_applied_move_replica(conn, m.node)? {
                    Some((r, stamp)) if r == me && m.stamp > stamp => {
                        concurrent(conn, m.node, "", stamp, m.known_seq)?
                    }
                    _ => false,
                };
                let elsewhere = tree.place(m.node)?.is_some_and(|p| p.parent != m.parent);
                if placed_by_me && elsewhere {
                    let c = Conflict {
                        seq: o.seq,
                        node: m.node,
                        by,
                        kind: ConflictKind::MoveOverridden { parent: m.parent },
                    };
                    found.push((c, None));
                }
            }
            Op::Set(_) => {}
        }
    }
    Ok(Pending {
        found,
        own_moves,
        last_seq: ops.last().map_or(0, |o| o.seq),
    })
}

/// `me`'s moves in effect in the log stamped at or after `from`.
fn own_moves_in_effect(
    conn: &Connection,
    me: ReplicaId,
    from: arbor_shared::Stamp,
) -> Result<Vec<(NodeId, NodeId, arbor_shared::Stamp)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT hlc, replica, node, parent FROM ops
         WHERE hlc >= ?1 AND replica = ?2 AND applied",
    )?;
    let rows = stmt.query_map(
        params![hlc_to_sql(from.hlc.0)?, replica_to_stored(me.0)],
        |r| {
            Ok((
                id_from_blob(&r.get::<_, Vec<u8>>(2)?)?,
                id_from_blob(&r.get::<_, Vec<u8>>(3)?)?,
                crate::store::stamp_from_sql(r.get(0)?, r.get(1)?),
            ))
        },
    )?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Whether another replica's op that knew the space up to `known_seq` was
/// concurrent with this replica's write `mine` of `node`'s `field` (`""`:
/// its place). Ops come back in seq order: if `mine` has not come back
/// committed yet, its seq is above the other op's, which cannot have known
/// it; if it has, its seq says.
fn concurrent(
    conn: &Connection,
    node: NodeId,
    field: &str,
    mine: arbor_shared::Stamp,
    known_seq: u64,
) -> Result<bool> {
    let row: Option<(i64, i64, i64)> = conn
        .prepare_cached("SELECT seq, hlc, replica FROM own_writes WHERE node = ?1 AND field = ?2")?
        .query_row(params![id_blob(node), field], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .optional()?;
    Ok(match row {
        Some((seq, h, r)) if crate::store::stamp_from_sql(h, r) == mine => {
            seq.max(0) as u64 > known_seq
        }
        _ => true,
    })
}

/// Records the seqs at which `me`'s ops among `ops` were committed.
pub(super) fn record_own_writes(conn: &Connection, me: ReplicaId, ops: &[SeqOp]) -> Result<()> {
    for o in ops.iter().filter(|o| o.op.stamp().replica == me) {
        let (node, field) = match &o.op {
            Op::Move(m) => (m.node, ""),
            Op::Set(s) => (s.node, s.field.as_str()),
        };
        let stamp = o.op.stamp();
        conn.prepare_cached(
            "INSERT INTO own_writes (node, field, seq, hlc, replica) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (node, field) DO UPDATE
             SET seq = excluded.seq, hlc = excluded.hlc, replica = excluded.replica
             WHERE (excluded.hlc, excluded.replica) > (own_writes.hlc, own_writes.replica)",
        )?
        .execute(params![
            id_blob(node),
            field,
            i64::try_from(o.seq).unwrap_or(i64::MAX),
            hlc_to_sql(stamp.hlc.0)?,
            replica_to_stored(stamp.replica.0)
        ])?;
    }
    Ok(())
}

/// The replica and stamp of the newest applied move of `node` in the log.
fn last_applied_move_replica(
    conn: &Connection,
    node: NodeId,
) -> Result<Option<(ReplicaId, arbor_shared::Stamp)>> {
    let row: Option<(i64, i64)> = conn
        .prepare_cached(
            "SELECT hlc, replica FROM ops WHERE node = ?1 AND applied
             ORDER BY hlc DESC, replica DESC LIMIT 1",
        )?
        .query_row([id_blob(node)], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    Ok(row.map(|(h, r)| {
        let stamp = crate::store::stamp_from_sql(h, r);
        (stamp.replica, stamp)
    }))
}

/// The conflicts that hold once the batch is applied: overwrites whose
/// op won, own moves that are not in effect; stored (the oldest trimmed).
pub(super) fn after_apply(conn: &Connection, pending: Pending) -> Result<Vec<Conflict>> {
    let store = SqliteStore::new(conn);
    let mut out = Vec::new();
    for (c, winner) in pending.found {
        let holds = match (&c.kind, winner) {
            (ConflictKind::FieldOverwritten { field, .. }, Some(stamp)) => store
                .payload(c.node, field)?
                .is_some_and(|p| p.stamp == stamp),
            _ => true,
        };
        if holds {
            out.push(c);
        }
    }
    // This replica's moves the batch took out of effect: ops stamped
    // before them, arriving now, make them cycles.
    for (node, parent, stamp) in pending.own_moves {
        let applied: Option<bool> = conn
            .prepare_cached("SELECT applied FROM ops WHERE hlc = ?1 AND replica = ?2")?
            .query_row(
                params![hlc_to_sql(stamp.hlc.0)?, replica_to_stored(stamp.replica.0)],
                |r| r.get(0),
            )
            .optional()?;
        if applied == Some(false) {
            out.push(Conflict {
                seq: pending.last_seq,
                node,
                by: None,
                kind: ConflictKind::MoveSkipped { parent },
            });
        }
    }
    for c in &out {
        let (kind, field, lost, kept, parent) = match &c.kind {
            ConflictKind::FieldOverwritten { field, lost, kept } => (
                "overwritten",
                Some(field.as_str()),
                lost.clone(),
                kept.clone(),
                None,
            ),
            ConflictKind::MoveSkipped { parent } => ("skipped", None, None, None, Some(*parent)),
            ConflictKind::MoveOverridden { parent } => {
                ("overridden", None, None, None, Some(*parent))
            }
            ConflictKind::Restored { parent } => ("restored", None, None, None, Some(*parent)),
        };
        conn.prepare_cached(
            "INSERT INTO conflicts (seq, kind, node, field, lost, kept, parent, by)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?
        .execute(params![
            i64::try_from(c.seq).unwrap_or(i64::MAX),
            kind,
            id_blob(c.node),
            field,
            lost,
            kept,
            parent.map(id_blob),
            c.by
        ])?;
    }
    if !out.is_empty() {
        conn.prepare_cached(
            "DELETE FROM conflicts WHERE ord <= (SELECT max(ord) FROM conflicts) - ?1",
        )?
        .execute([MAX_CONFLICTS])?;
    }
    Ok(out)
}

impl Replica {
    /// The conflict list, newest first, at most `limit` (the list keeps the
    /// last [`MAX_CONFLICTS`]).
    pub fn conflicts(&self, limit: usize) -> Result<Vec<Conflict>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq, kind, node, field, lost, kept, parent, by FROM conflicts
             ORDER BY ord DESC LIMIT ?1",
        )?;
        let rows = stmt.query_map([i64::try_from(limit).unwrap_or(i64::MAX)], |r| {
            let kind: String = r.get(1)?;
            let parent = r
                .get::<_, Option<Vec<u8>>>(6)?
                .map(|b| id_from_blob(&b))
                .transpose()?
                .unwrap_or(NodeId::ROOT);
            let kind = match kind.as_str() {
                "overwritten" => ConflictKind::FieldOverwritten {
                    field: r.get::<_, Option<String>>(3)?.unwrap_or_default(),
                    lost: r.get(4)?,
                    kept: r.get(5)?,
                },
                "skipped" => ConflictKind::MoveSkipped { parent },
                "overridden" => ConflictKind::MoveOverridden { parent },
                _ => ConflictKind::Restored { parent },
            };
            Ok(Conflict {
                seq: r.get::<_, i64>(0)?.max(0) as u64,
                node: id_from_blob(&r.get::<_, Vec<u8>>(2)?)?,
                by: r.get(7)?,
                kind,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Empties the conflict list; returns how many it held.
    pub fn clear_conflicts(&mut self) -> Result<u64> {
        Ok(self.conn.execute("DELETE FROM conflicts", [])? as u64)
    }
}
