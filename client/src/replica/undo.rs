//! Undo and redo: each user action's effects kept as before and after, undone as new ops stamped now (they sync and converge like any edit), with the rules for what others changed since.
//!
//! Every local commit records, per node it moved and per field it set, the
//! state before the commit and what the commit wrote. A step is one local
//! API call, or everything between [`Replica::begin_step`] and
//! [`Replica::end_step`]. [`Replica::undo`] writes each effect of the last
//! step back to its "before", newest effect first, as ordinary moves and
//! sets in one transaction, and keeps the inverse as a redo step;
//! [`Replica::redo`] does the same with that. An effect that is no longer
//! what this replica wrote (another user moved the node or wrote the field
//! since) is left alone and reported, never overwritten: the rules are in
//! `docs/CLIENT.md`, "Undo and redo".
//!
//! The history lives in memory with the open replica (at most
//! [`MAX_UNDO_STEPS`] steps); a replica opened again starts with none.

use std::collections::VecDeque;

use arbor_shared::{MoveOp, NodeId, Op, Place, SetOp, Tree, TreeStore as _};
use rusqlite::{OptionalExtension as _, TransactionBehavior};

use super::meta::{key, meta_set, now_ms};
use super::outbox::outbox_insert;
use super::{Replica, Result};
use crate::store::{SqliteStore, hlc_to_sql, id_blob, key_from_blob};

/// Steps kept at most; the oldest are forgotten first.
pub const MAX_UNDO_STEPS: usize = 200;

/// One thing a step did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Effect {
    /// The node went from `before` (`None`: it did not exist) to `after`.
    Place {
        node: NodeId,
        before: Option<Place>,
        /// Whether the node was in the trash at `before` (then going back
        /// under a deleted parent is going back, not vanishing).
        was_deleted: bool,
        after: Place,
    },
    /// The field went from `before` to `after` (`None`: unset).
    Field {
        node: NodeId,
        field: String,
        before: Option<String>,
        after: Option<String>,
    },
}

/// A user action's effects, in the order they happened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Step {
    effects: Vec<Effect>,
}

impl Step {
    /// Adds an effect; a node or field the step already touched keeps its
    /// first "before" and takes the new "after".
    fn add(&mut self, e: Effect) {
        for old in &mut self.effects {
            match (old, &e) {
                (
                    Effect::Place { node, after, .. },
                    Effect::Place {
                        node: n, after: a, ..
                    },
                ) if node == n => {
                    *after = a.clone();
                    return;
                }
                (
                    Effect::Field {
                        node, field, after, ..
                    },
                    Effect::Field {
                        node: n,
                        field: f,
                        after: a,
                        ..
                    },
                ) if node == n && field == f => {
                    *after = a.clone();
                    return;
                }
                _ => {}
            }
        }
        self.effects.push(e);
    }
}

/// Which stack a commit's effects go to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Mode {
    /// A user edit: the undo stack (and the redo stack is cleared).
    #[default]
    Edit,
    /// An undo being applied: the redo stack.
    Undoing,
    /// A redo being applied: the undo stack (the redo stack is kept).
    Redoing,
}

/// The undo and redo stacks of an open replica.
#[derive(Debug, Default)]
pub(crate) struct UndoStacks {
    undo: VecDeque<Step>,
    redo: Vec<Step>,
    /// The step [`Replica::begin_step`] opened, and how deep.
    open: Option<(usize, Step)>,
    mode: Mode,
}

impl UndoStacks {
    /// A committed batch's effects.
    pub(crate) fn record(&mut self, effects: Vec<Effect>) {
        if effects.is_empty() {
            return;
        }
        match self.mode {
            Mode::Undoing => {
                let mut step = Step::default();
                effects.into_iter().for_each(|e| step.add(e));
                self.redo.push(step);
            }
            Mode::Redoing => {
                let mut step = Step::default();
                effects.into_iter().for_each(|e| step.add(e));
                self.push_undo(step);
            }
            Mode::Edit => {
                self.redo.clear();
                match &mut self.open {
                    Some((_, step)) => effects.into_iter().for_each(|e| step.add(e)),
                    None => {
                        let mut step = Step::default();
                        effects.into_iter().for_each(|e| step.add(e));
                        self.push_undo(step);
                    }
                }
            }
        }
    }

    fn push_undo(&mut self, step: Step) {
        self.undo.push_back(step);
        while self.undo.len() > MAX_UNDO_STEPS {
            self.undo.pop_front();
        }
    }
}

/// The effects `ops` (local, about to be applied in `store`'s
/// transaction) will have: read before they are applied.
pub(crate) fn effects_of(conn: &rusqlite::Connection, ops: &[Op]) -> Result<Vec<Effect>> {
    let store = SqliteStore::new(conn);
    let tree = Tree::new(SqliteStore::new(conn));
    let mut out = Vec::with_capacity(ops.len());
    for op in ops {
        match op {
            Op::Move(m) => out.push(Effect::Place {
                node: m.node,
                before: tree.place(m.node)?,
                was_deleted: tree.contains(m.node)? && tree.is_in_trash(m.node)?,
                after: Place {
                    parent: m.parent,
                    key: m.key.clone(),
                },
            }),
            Op::Set(s) => out.push(Effect::Field {
                node: s.node,
                field: s.field.clone(),
                before: store.payload(s.node, &s.field)?.and_then(|p| p.value),
                after: s.value.clone(),
            }),
        }
    }
    Ok(out)
}

/// What an undo or a redo did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UndoReport {
    /// Nodes moved back (or deleted, for a create undone) and fields set
    /// back.
    pub reverted: usize,
    /// Effects already as they were before (a restore, or another user,
    /// did it): nothing written.
    pub unchanged: usize,
    /// Effects left as others made them, and why.
    pub kept: Vec<Kept>,
}

/// An effect an undo or a redo left alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kept {
    /// Someone else moved the node since: their move stands.
    MovedSince {
        /// The node.
        node: NodeId,
    },
    /// The node's old parent is deleted (or gone): the node stays where it
    /// is rather than vanish into the trash with it.
    ParentGone {
        /// The node.
        node: NodeId,
        /// Its old parent.
        parent: NodeId,
    },
    /// Its old parent is now below it: putting it back would be a cycle.
    WouldCycle {
        /// The node.
        node: NodeId,
        /// Its old parent.
        parent: NodeId,
    },
    /// Someone else wrote the field since: their value stands.
    Overwritten {
        /// The node.
        node: NodeId,
        /// The field.
        field: String,
    },
}

impl Replica {
    /// Opens an undo step: the edits until the matching
    /// [`Replica::end_step`] are undone together (a create with its
    /// fields, a multi-select move, an import). Steps nest; the outermost
    /// one counts.
    pub fn begin_step(&mut self) {
        match &mut self.undo_steps.open {
            Some((depth, _)) => *depth += 1,
            None => self.undo_steps.open = Some((1, Step::default())),
        }
    }

    /// Closes the step [`Replica::begin_step`] opened.
    pub fn end_step(&mut self) {
        let Some((depth, step)) = self.undo_steps.open.take() else {
            return;
        };
        if depth > 1 {
            self.undo_steps.open = Some((depth - 1, step));
        } else if !step.effects.is_empty() {
            self.undo_steps.push_undo(step);
        }
    }

    /// Whether there is a step to undo.
    pub fn can_undo(&self) -> bool {
        !self.undo_steps.undo.is_empty()
    }

    /// Whether there is a step to redo.
    pub fn can_redo(&self) -> bool {
        !self.undo_steps.redo.is_empty()
    }

    /// Undoes the last step as new ops (they sync like any edit); `None`
    /// if there is none. What others changed since is left as they made it
    /// and reported.
    pub fn undo(&mut self) -> Result<Option<UndoReport>> {
        self.end_open_step();
        let Some(step) = self.undo_steps.undo.pop_back() else {
            return Ok(None);
        };
        self.revert(step, Mode::Undoing).map(Some)
    }

    /// Redoes the last undone step (while nothing new was edited since);
    /// `None` if there is none.
    pub fn redo(&mut self) -> Result<Option<UndoReport>> {
        self.end_open_step();
        let Some(step) = self.undo_steps.redo.pop() else {
            return Ok(None);
        };
        self.revert(step, Mode::Redoing).map(Some)
    }

    fn end_open_step(&mut self) {
        while self.undo_steps.open.is_some() {
            self.end_step();
        }
    }

    /// Writes each effect of `step` back to its "before", newest first,
    /// where it is still what the step wrote. One transaction: each
    /// effect is checked against the state the earlier ones left (an undo
    /// of "move a node, then its ancestor" puts the ancestor back first),
    /// applied, and queued; the ops are recorded as the opposite step.
    fn revert(&mut self, step: Step, mode: Mode) -> Result<UndoReport> {
        let mut report = UndoReport::default();
        let known_seq = self.cursor()?.unwrap_or(0);
        self.commit_held()?;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut ops = Vec::new();
        let mut effects = Vec::new();
        let changes = {
            let mut tree = Tree::new(SqliteStore::new(&tx));
            for effect in step.effects.into_iter().rev() {
                let op = match effect {
                    Effect::Place {
                        node,
                        before,
                        was_deleted,
                        after,
                    } => {
                        let now = tree.place(node)?;
                        let back_already = match &before {
                            Some(b) => now.as_ref() == Some(b),
                            None => now.is_none() || tree.is_in_trash(node)?,
                        };
                        if back_already {
                            report.unchanged += 1;
                            continue;
                        }
                        if now.as_ref() != Some(&after) {
                            report.kept.push(Kept::MovedSince { node });
                            continue;
                        }
                        let target = match before {
                            Some(b) => {
                                let p = b.parent;
                                if !was_deleted
                                    && p != NodeId::TRASH
                                    && p != NodeId::ROOT
                                    && (!tree.contains(p)? || tree.is_in_trash(p)?)
                                {
                                    report.kept.push(Kept::ParentGone { node, parent: p });
                                    continue;
                                }
                                if p == node || tree.is_ancestor(node, p)? {
                                    report.kept.push(Kept::WouldCycle { node, parent: p });
                                    continue;
                                }
                                b
                            }
                            // A create undone: the node is deleted (last
                            // under TRASH).
                            None => Place {
                                parent: NodeId::TRASH,
                                key: key_last(&tx, &mut self.keys, NodeId::TRASH, node)?,
                            },
                        };
                        Op::Move(MoveOp {
                            stamp: self.clock.tick(now_ms())?,
                            known_seq,
                            node,
                            parent: target.parent,
                            key: target.key,
                        })
                    }
                    Effect::Field {
                        node,
                        field,
                        before,
                        after,
                    } => {
                        let now = tree.payload(node, &field)?.and_then(|p| p.value);
                        if now == before {
                            report.unchanged += 1;
                            continue;
                        }
                        if now != after || !tree.contains(node)? {
                            report.kept.push(Kept::Overwritten { node, field });
                            continue;
                        }
                        Op::Set(SetOp {
                            stamp: self.clock.tick(now_ms())?,
                            known_seq,
                            node,
                            field,
                            value: before,
                        })
                    }
                };
                op.validate()?;
                effects.extend(effects_of(&tx, std::slice::from_ref(&op))?);
                tree.apply(std::slice::from_ref(&op))?;
                ops.push(op);
                report.reverted += 1;
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
        self.undo_steps.mode = mode;
        self.undo_steps.record(effects);
        self.undo_steps.mode = Mode::Edit;
        self.notify(changes);
        self.outbox_grew.notify_one();
        Ok(report)
    }
}

/// A key after every child of `parent` but `node`, read in `conn`'s
/// transaction.
pub(super) fn key_last(
    conn: &rusqlite::Connection,
    keys: &mut arbor_shared::KeyGen,
    parent: NodeId,
    node: NodeId,
) -> Result<arbor_shared::OrderKey> {
    let last: Option<Vec<u8>> = conn
        .prepare_cached(
            "SELECT key FROM nodes WHERE parent = ?1 AND id <> ?2
             ORDER BY key DESC, id DESC LIMIT 1",
        )?
        .query_row(rusqlite::params![id_blob(parent), id_blob(node)], |r| {
            r.get(0)
        })
        .optional()?;
    let last = last.map(|k| key_from_blob(&k)).transpose()?;
    Ok(keys.between(last.as_ref(), None)?)
}
