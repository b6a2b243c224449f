//! A subtree brought back to how it was at a past seq, as new ops (one undo step): the server says what it was (`GET .../subtree/{id}/at`), the replica writes the difference.

use std::collections::{BTreeMap, BTreeSet};

use arbor_shared::http::SubtreeAtBody;
use arbor_shared::{MoveOp, NodeId, Op, Place, SetOp, Tree, TreeStore as _};
use rusqlite::TransactionBehavior;

use super::meta::{key, meta_set, now_ms};
use super::outbox::outbox_insert;
use super::undo::{effects_of, key_last};
use super::{Replica, ReplicaError, Result};
use crate::store::{SqliteStore, hlc_to_sql};

/// What [`Replica::revert_subtree`] wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RevertReport {
    /// Nodes moved back to their place then (or deleted: created since).
    pub moved: usize,
    /// Fields written back (or cleared: set since).
    pub set: usize,
    /// Nodes left where they are: their place then is now below them (they
    /// were moved above the subtree's root since).
    pub skipped: Vec<NodeId>,
}

impl Replica {
    /// Brings the subtree `past.root` back to `past` (the server's answer
    /// for a seq) as new ops stamped now, in one transaction and one undo
    /// step: every node that was below the root then goes back to its
    /// place then, parents first; every node below it now that was not
    /// goes back to where it was then, or to the trash if it did not exist;
    /// every field of the root and its nodes gets its value then (cleared
    /// if it had none). The ops sync like any edit.
    pub fn revert_subtree(&mut self, past: &SubtreeAtBody) -> Result<RevertReport> {
        if !past.present {
            return Err(ReplicaError::UnknownNode(past.root));
        }
        // Parents first: each node's depth below the root then.
        let parent_of: BTreeMap<NodeId, NodeId> =
            past.nodes.iter().map(|n| (n.id, n.parent)).collect();
        let depth = |mut id: NodeId| {
            let mut d = 0usize;
            while let Some(p) = parent_of.get(&id) {
                d += 1;
                id = *p;
                if d > parent_of.len() {
                    break;
                }
            }
            d
        };
        let mut places: Vec<(usize, NodeId, Place)> = past
            .nodes
            .iter()
            .map(|n| {
                (
                    depth(n.id),
                    n.id,
                    Place {
                        parent: n.parent,
                        key: n.key.clone(),
                    },
                )
            })
            .collect();
        places.sort_by_key(|(d, id, _)| (*d, *id));
        let mut then: BTreeMap<NodeId, BTreeMap<String, Option<String>>> = BTreeMap::new();
        then.entry(past.root).or_default();
        for n in &past.nodes {
            then.entry(n.id).or_default();
        }
        for r in &past.registers {
            then.entry(r.node)
                .or_default()
                .insert(r.field.clone(), r.value.clone());
        }

        let mut report = RevertReport::default();
        let known_seq = self.cursor()?.unwrap_or(0);
        self.commit_held()?;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut ops = Vec::new();
        let mut effects = Vec::new();
        let changes = {
            let mut tree = Tree::new(SqliteStore::new(&tx));
            let mut write = |tree: &mut Tree<SqliteStore<'_>>, op: Op| -> Result<()> {
                op.validate()?;
                effects.extend(effects_of(&tx, std::slice::from_ref(&op))?);
                tree.apply(std::slice::from_ref(&op))?;
                ops.push(op);
                Ok(())
            };
            let mut targets: Vec<(NodeId, Option<Place>)> = places
                .into_iter()
                .map(|(_, id, place)| (id, Some(place)))
                .collect();
            let below_then: BTreeSet<NodeId> = past.nodes.iter().map(|n| n.id).collect();
            targets.extend(
                past.elsewhere
                    .iter()
                    .filter(|e| !below_then.contains(&e.id))
                    .map(|e| {
                        (
                            e.id,
                            e.place.clone().map(|(parent, key)| Place { parent, key }),
                        )
                    }),
            );
            for (id, target) in targets {
                if !tree.contains(id)? && target.is_none() {
                    continue;
                }
                let target = match target {
                    Some(p) => p,
                    None if tree.is_in_trash(id)? => continue,
                    None => Place {
                        parent: NodeId::TRASH,
                        key: key_last(&tx, &mut self.keys, NodeId::TRASH, id)?,
                    },
                };
                if tree.place(id)?.as_ref() == Some(&target) {
                    continue;
                }
                if target.parent == id || tree.is_ancestor(id, target.parent)? {
                    report.skipped.push(id);
                    continue;
                }
                let op = Op::Move(MoveOp {
                    stamp: self.clock.tick(now_ms())?,
                    known_seq,
                    node: id,
                    parent: target.parent,
                    key: target.key,
                });
                write(&mut tree, op)?;
                report.moved += 1;
            }
            for (node, fields) in &then {
                if !tree.contains(*node)? {
                    continue;
                }
                let now: BTreeMap<String, Option<String>> = tree
                    .store()
                    .payloads(*node)?
                    .into_iter()
                    .map(|(f, p)| (f, p.value))
                    .collect();
                let names: BTreeSet<&String> = fields.keys().chain(now.keys()).collect();
                for field in names {
                    let was = fields.get(field).cloned().flatten();
                    let is = now.get(field).cloned().flatten();
                    if was == is {
                        continue;
                    }
                    let op = Op::Set(SetOp {
                        stamp: self.clock.tick(now_ms())?,
                        known_seq,
                        node: *node,
                        field: field.clone(),
                        value: was,
                    });
                    write(&mut tree, op)?;
                    report.set += 1;
                }
            }
            tree.into_store().changes
        };
        if ops.is_empty() {
            return Ok(report);
        }
        outbox_insert(&tx, &ops)?;
        meta_set(&tx, key::CLOCK, hlc_to_sql(self.clock.last().0)?)?;
        if let Some(k) = self.call_key.take() {
            super::calls::record(&tx, &k, None)?;
        }
        tx.commit()?;
        self.undo_steps.record(effects);
        self.notify(changes);
        self.outbox_grew.notify_one();
        Ok(report)
    }
}
