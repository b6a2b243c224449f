//! The local API: create, move, delete, restore and set, each applied and queued in the outbox in one transaction, with order keys chosen between the right neighbours.

use arbor_shared::{MoveOp, NodeId, Op, OrderKey, SetOp, Stamp, Tree};
use rusqlite::{OptionalExtension as _, TransactionBehavior, params};

use super::meta::{key, meta_set, now_ms, random_u128};
use super::outbox::outbox_insert;
use super::{Replica, ReplicaError, Result};
use crate::store::{Changes, SqliteStore, hlc_to_sql, id_blob, id_from_blob, key_from_blob};

/// Where a new or moved node goes among its new siblings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    /// Before every child.
    First,
    /// After every child.
    Last,
    /// Right before this sibling.
    Before(NodeId),
    /// Right after this sibling.
    After(NodeId),
}

/// Where a node goes: its key, and the siblings that must move first to make
/// room (new keys for a run of siblings whose keys equal the gap's lower
/// bound).
struct Placement {
    key: OrderKey,
    rekeys: Vec<(NodeId, OrderKey)>,
}

impl Replica {
    /// The key for `pos` among `parent`'s children (skipping `moving`).
    /// Between two siblings with equal keys there is no key: then the run
    /// of equal-keyed siblings after the gap gets new keys above the new
    /// node's, below the next greater key, in their order (extra moves the
    /// caller commits with the op, so every replica sees the same order).
    fn key_for(
        &mut self,
        parent: NodeId,
        pos: Position,
        moving: Option<NodeId>,
    ) -> Result<Placement> {
        let tree = Tree::new(SqliteStore::new(&self.conn));
        // Neighbors of the gap, skipping the node being moved (moving a node
        // next to itself keeps the order).
        let neighbors = |sib: NodeId| -> Result<(Option<OrderKey>, OrderKey, Option<OrderKey>)> {
            let place = tree.place(sib)?.ok_or(ReplicaError::UnknownNode(sib))?;
            if place.parent != parent {
                return Err(ReplicaError::NotASibling {
                    sibling: sib,
                    parent,
                });
            }
            let prev: Option<OrderKey> = self
                .conn
                .prepare_cached(
                    "SELECT key FROM nodes WHERE parent = ?1 AND (key, id) < (?2, ?3) AND id <> ?4
                     ORDER BY key DESC, id DESC LIMIT 1",
                )?
                .query_row(
                    params![
                        id_blob(parent),
                        place.key.as_bytes(),
                        id_blob(sib),
                        id_blob(moving.unwrap_or(NodeId::ROOT))
                    ],
                    |r| key_from_blob(&r.get::<_, Vec<u8>>(0)?),
                )
                .optional()?;
            let next: Option<OrderKey> = self
                .conn
                .prepare_cached(
                    "SELECT key FROM nodes WHERE parent = ?1 AND (key, id) > (?2, ?3) AND id <> ?4
                     ORDER BY key, id LIMIT 1",
                )?
                .query_row(
                    params![
                        id_blob(parent),
                        place.key.as_bytes(),
                        id_blob(sib),
                        id_blob(moving.unwrap_or(NodeId::ROOT))
                    ],
                    |r| key_from_blob(&r.get::<_, Vec<u8>>(0)?),
                )
                .optional()?;
            Ok((prev, place.key, next))
        };
        let edge = |desc: bool| -> Result<Option<OrderKey>> {
            let sql = if desc {
                "SELECT key FROM nodes WHERE parent = ?1 AND id <> ?2 ORDER BY key DESC, id DESC LIMIT 1"
            } else {
                "SELECT key FROM nodes WHERE parent = ?1 AND id <> ?2 ORDER BY key, id LIMIT 1"
            };
            Ok(self
                .conn
                .prepare_cached(sql)?
                .query_row(
                    params![id_blob(parent), id_blob(moving.unwrap_or(NodeId::ROOT))],
                    |r| key_from_blob(&r.get::<_, Vec<u8>>(0)?),
                )
                .optional()?)
        };
        // The gap, and the sibling just after it (the first of a run of
        // equal keys that may need new ones).
        let (lo, hi, after_gap) = match pos {
            Position::First => (None, edge(false)?, None),
            Position::Last => (edge(true)?, None, None),
            Position::Before(sib) => {
                let (prev, key, _) = neighbors(sib)?;
                (prev, Some(key), Some((sib, true)))
            }
            Position::After(sib) => {
                let (_, key, next) = neighbors(sib)?;
                (Some(key), next, Some((sib, false)))
            }
        };
        if lo.is_none() || lo != hi {
            return Ok(Placement {
                key: self.keys.between(lo.as_ref(), hi.as_ref())?,
                rekeys: Vec::new(),
            });
        }
        // lo == hi: the siblings after the gap whose key equals lo move up.
        let equal = lo.unwrap_or_else(|| unreachable!("checked above"));
        let skip = id_blob(moving.unwrap_or(NodeId::ROOT));
        let (from_id, inclusive) = match after_gap {
            Some((id, inclusive)) => (id, inclusive),
            None => (NodeId::ROOT, true),
        };
        let run: Vec<NodeId> = {
            let mut stmt = self.conn.prepare_cached(
                "SELECT id FROM nodes
                 WHERE parent = ?1 AND key = ?2 AND id <> ?3
                   AND (id > ?4 OR (?5 AND id = ?4))
                 ORDER BY id",
            )?;
            let rows = stmt.query_map(
                params![
                    id_blob(parent),
                    equal.as_bytes(),
                    skip,
                    id_blob(from_id),
                    inclusive
                ],
                |r| id_from_blob(&r.get::<_, Vec<u8>>(0)?),
            )?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        let above: Option<OrderKey> = self
            .conn
            .prepare_cached(
                "SELECT key FROM nodes WHERE parent = ?1 AND key > ?2 AND id <> ?3
                 ORDER BY key, id LIMIT 1",
            )?
            .query_row(params![id_blob(parent), equal.as_bytes(), skip], |r| {
                key_from_blob(&r.get::<_, Vec<u8>>(0)?)
            })
            .optional()?;
        let key = self.keys.between(Some(&equal), above.as_ref())?;
        let mut rekeys = Vec::with_capacity(run.len());
        let mut last = key.clone();
        for id in run {
            let k = self.keys.between(Some(&last), above.as_ref())?;
            rekeys.push((id, k.clone()));
            last = k;
        }
        Ok(Placement { key, rekeys })
    }

    /// The moves that give `rekeys` their new keys under `parent`.
    fn rekey_ops(&mut self, parent: NodeId, rekeys: Vec<(NodeId, OrderKey)>) -> Result<Vec<Op>> {
        let known_seq = self.known_seq()?;
        rekeys
            .into_iter()
            .map(|(node, key)| {
                Ok(Op::Move(MoveOp {
                    stamp: self.tick()?,
                    known_seq,
                    node,
                    parent,
                    key,
                }))
            })
            .collect()
    }

    /// Applies `ops` (made by this replica) and queues them, in one
    /// transaction; persists the clock; records their effects for undo.
    /// `created`: the node a create made (what its call answers, recorded
    /// with the call's key when one is set).
    fn commit_local(&mut self, ops: Vec<Op>, created: Option<NodeId>) -> Result<()> {
        for op in &ops {
            op.validate()?;
        }
        let clock = hlc_to_sql(self.clock.last().0)?;
        let call_key = self.call_key.take();
        // Write-behind: a savepoint in the held transaction, committed
        // later; otherwise a transaction of its own.
        let (effects, changes) = if self.hold()? {
            let sp = self.conn.savepoint()?;
            let done = write_local(&sp, &ops, clock, call_key.as_deref(), created)?;
            sp.commit()?;
            done
        } else {
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            let done = write_local(&tx, &ops, clock, call_key.as_deref(), created)?;
            tx.commit()?;
            done
        };
        self.undo_steps.record(effects);
        self.notify(changes);
        self.outbox_grew.notify_one();
        Ok(())
    }

    fn tick(&mut self) -> Result<Stamp> {
        Ok(self.clock.tick(now_ms())?)
    }

    fn known_seq(&self) -> Result<u64> {
        Ok(self.cursor()?.unwrap_or(0))
    }

    fn check_movable(&self, node: NodeId) -> Result<()> {
        if node.is_reserved() {
            return Err(ReplicaError::Reserved(node));
        }
        if !self.contains(node)? {
            return Err(ReplicaError::UnknownNode(node));
        }
        Ok(())
    }

    fn check_parent(&self, parent: NodeId) -> Result<()> {
        if !self.contains(parent)? {
            return Err(ReplicaError::UnknownNode(parent));
        }
        Ok(())
    }

    /// Creates a node under `parent` at `pos`, with `fields` set, in one
    /// transaction; returns its id.
    pub fn create_with(
        &mut self,
        parent: NodeId,
        pos: Position,
        fields: &[(&str, &str)],
    ) -> Result<NodeId> {
        self.check_parent(parent)?;
        if parent == NodeId::TRASH {
            // A node is deleted by moving it there, never created there.
            return Err(ReplicaError::Reserved(parent));
        }
        let node = NodeId::from_random_bits(random_u128());
        let Placement { key, rekeys } = self.key_for(parent, pos, None)?;
        let known_seq = self.known_seq()?;
        let mut ops = self.rekey_ops(parent, rekeys)?;
        ops.push(Op::Move(MoveOp {
            stamp: self.tick()?,
            known_seq,
            node,
            parent,
            key,
        }));
        for (field, value) in fields {
            ops.push(Op::Set(SetOp {
                stamp: self.tick()?,
                known_seq,
                node,
                field: (*field).to_string(),
                value: Some((*value).to_string()),
            }));
        }
        self.commit_local(ops, Some(node))?;
        Ok(node)
    }

    /// Creates an empty node under `parent` at `pos`.
    pub fn create(&mut self, parent: NodeId, pos: Position) -> Result<NodeId> {
        self.create_with(parent, pos, &[])
    }

    /// Moves `node` under `parent` at `pos`.
    pub fn move_node(&mut self, node: NodeId, parent: NodeId, pos: Position) -> Result<()> {
        self.check_movable(node)?;
        self.check_parent(parent)?;
        if node == parent || self.tree().is_ancestor(node, parent)? {
            return Err(ReplicaError::Cycle { node, parent });
        }
        let Placement { key, rekeys } = self.key_for(parent, pos, Some(node))?;
        let mut ops = self.rekey_ops(parent, rekeys)?;
        ops.push(Op::Move(MoveOp {
            stamp: self.tick()?,
            known_seq: self.known_seq()?,
            node,
            parent,
            key,
        }));
        self.commit_local(ops, None)
    }

    /// Deletes `node` (and so its subtree): moves it under TRASH.
    pub fn delete(&mut self, node: NodeId) -> Result<()> {
        self.check_movable(node)?;
        // Last under TRASH: never between two equal keys, so no re-key.
        let key = self.key_for(NodeId::TRASH, Position::Last, Some(node))?.key;
        let op = Op::Move(MoveOp {
            stamp: self.tick()?,
            known_seq: self.known_seq()?,
            node,
            parent: NodeId::TRASH,
            key,
        });
        self.commit_local(vec![op], None)
    }

    /// Restores a deleted node to where it was before its newest delete
    /// (under ROOT, last, if that place is no longer known).
    pub fn restore(&mut self, node: NodeId) -> Result<()> {
        self.check_movable(node)?;
        if self.parent(node)? != Some(NodeId::TRASH) {
            return Ok(());
        }
        // The newest applied move of `node` into TRASH, and where it was.
        let prev: Option<(Vec<u8>, Vec<u8>)> = self
            .conn
            .prepare_cached(
                "SELECT prev_parent, prev_key FROM ops
                 WHERE node = ?1 AND parent = ?2 AND applied AND prev_parent IS NOT NULL
                 ORDER BY hlc DESC, replica DESC LIMIT 1",
            )?
            .query_row(params![id_blob(node), id_blob(NodeId::TRASH)], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?;
        let (parent, key) = match prev {
            Some((p, k)) => {
                let parent = id_from_blob(&p)?;
                if parent == NodeId::TRASH || !self.contains(parent)? {
                    (
                        NodeId::ROOT,
                        self.key_for(NodeId::ROOT, Position::Last, Some(node))?.key,
                    )
                } else {
                    (parent, key_from_blob(&k)?)
                }
            }
            None => (
                NodeId::ROOT,
                self.key_for(NodeId::ROOT, Position::Last, Some(node))?.key,
            ),
        };
        let op = Op::Move(MoveOp {
            stamp: self.tick()?,
            known_seq: self.known_seq()?,
            node,
            parent,
            key,
        });
        self.commit_local(vec![op], None)
    }

    /// Sets (`Some`) or clears (`None`) a field.
    pub fn set(&mut self, node: NodeId, field: &str, value: Option<&str>) -> Result<()> {
        self.check_movable(node)?;
        let op = Op::Set(SetOp {
            stamp: self.tick()?,
            known_seq: self.known_seq()?,
            node,
            field: field.to_string(),
            value: value.map(str::to_string),
        });
        self.commit_local(vec![op], None)
    }
}

/// A local edit's writes (inside the caller's transaction or savepoint):
/// applied, queued in the outbox, the clock persisted, the call recorded.
/// Returns its undo effects and changes.
fn write_local(
    conn: &rusqlite::Connection,
    ops: &[Op],
    clock: i64,
    call_key: Option<&str>,
    created: Option<NodeId>,
) -> Result<(Vec<super::undo::Effect>, Changes)> {
    let effects = super::undo::effects_of(conn, ops)?;
    let changes = {
        let mut tree = Tree::new(SqliteStore::new(conn));
        tree.apply(ops)?;
        tree.into_store().changes
    };
    outbox_insert(conn, ops)?;
    meta_set(conn, key::CLOCK, clock)?;
    if let Some(k) = call_key {
        super::calls::record(conn, k, created)?;
    }
    Ok((effects, changes))
}
