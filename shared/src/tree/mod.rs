//! The tree CRDT (Kleppmann et al. 2021) over a storage trait.
//!
//! The state is a log of moves sorted by stamp plus the tree it produces.
//! Applying a batch undoes every logged move newer than the batch's lowest
//! new stamp (newest first), then redoes the merged sequence of undone and
//! new moves in stamp order. `do` records the node's effective previous
//! place, or that the move was skipped because it would make a cycle. `Set`
//! ops are last-writer-wins registers and never undo.
//!
//! Fast paths: a batch whose moves are all newer than the log needs no undo;
//! a move of a node without children needs no ancestor walk (a node with
//! no descendants cannot be an ancestor of its new parent).

mod memory;

use std::collections::BTreeMap;

pub use memory::MemoryStore;

use crate::clock::Stamp;
use crate::id::NodeId;
use crate::key::OrderKey;
use crate::op::{MoveOp, Op, OpError, SetOp};

/// Where a node sits: its parent and its order key among the siblings.
/// `N` is a node id, or a store's node handle inside the engine.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Place<N = NodeId> {
    /// The parent node.
    pub parent: N,
    /// Order key among the parent's children.
    pub key: OrderKey,
}

/// What applying a logged move did (what undo must revert).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect<N = NodeId> {
    /// The move would have made a cycle (or moved a node under itself):
    /// nothing changed.
    Skipped,
    /// The node moved; `prev` is its effective place before (None: it was
    /// not in the tree, so undo removes it).
    Moved {
        /// The place before the move.
        prev: Option<Place<N>>,
    },
}

/// One entry of the move log (`N`: node id, or a store's handle).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry<N = NodeId> {
    /// The move's stamp (the log is sorted by it, strictly increasing).
    pub stamp: Stamp,
    /// The node moved.
    pub node: N,
    /// The requested parent.
    pub parent: N,
    /// The requested order key.
    pub key: OrderKey,
    /// What the move did when last (re)done.
    pub effect: Effect<N>,
}

/// A last-writer-wins register value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload {
    /// Stamp of the winning write.
    pub stamp: Stamp,
    /// The value (`None`: cleared).
    pub value: Option<String>,
}

/// A child in sibling order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Child {
    /// The child node.
    pub id: NodeId,
    /// Its order key.
    pub key: OrderKey,
}

/// Storage the CRDT runs over: the in-memory [`MemoryStore`] here, SQLite
/// in the client. Methods are primitive reads and writes; the algorithm
/// lives in [`Tree`].
///
/// Nodes are addressed by a store-chosen handle ([`TreeStore::Node`]: a slot
/// index, a rowid, or the id itself) so that the hot paths (ancestor walks,
/// undo/redo) never go back through the id index. ROOT and TRASH are always
/// present and have no place.
pub trait TreeStore {
    /// The store's own error type (I/O for durable stores).
    type Error: std::error::Error + Send + Sync + 'static;
    /// A node handle. Invariant: handles and ids are in one-to-one
    /// correspondence for the store's lifetime.
    type Node: Copy + Eq + std::fmt::Debug;

    /// The handle of `id`, if the store has seen it.
    fn lookup(&self, id: NodeId) -> Result<Option<Self::Node>, Self::Error>;
    /// The handle of `id`, creating an entry (not in the tree) if needed.
    fn intern(&mut self, id: NodeId) -> Result<Self::Node, Self::Error>;
    /// The id of a handle.
    fn id(&self, node: Self::Node) -> Result<NodeId, Self::Error>;
    /// The node's place, or `None` if it is not in the tree (or is ROOT or
    /// TRASH).
    fn place(&self, node: Self::Node) -> Result<Option<Place<Self::Node>>, Self::Error>;
    /// The node's parent (default: from [`TreeStore::place`]).
    fn parent(&self, node: Self::Node) -> Result<Option<Self::Node>, Self::Error> {
        Ok(self.place(node)?.map(|p| p.parent))
    }
    /// `Some(true)` if `a` is `b` or an ancestor of `b`; `None` if the
    /// parent links up from `b` loop (a damaged store: no valid tree has a
    /// cycle). The default walks [`TreeStore::parent`] up from `b`, as deep
    /// as the tree goes, bounded by [`WalkBudget`].
    fn is_ancestor(&self, a: Self::Node, b: Self::Node) -> Result<Option<bool>, Self::Error> {
        walk_is_ancestor(self, a, b)
    }
    /// True if ROOT, TRASH, or a node in the tree.
    fn contains(&self, node: Self::Node) -> Result<bool, Self::Error>;
    /// True if any node has `node` as its parent.
    fn has_children(&self, node: Self::Node) -> Result<bool, Self::Error>;
    /// Inserts the node or moves it (keeping the children index in step).
    fn set_place(&mut self, node: Self::Node, place: Place<Self::Node>) -> Result<(), Self::Error>;
    /// Takes the node out of the tree (its children keep pointing at it).
    fn remove(&mut self, node: Self::Node) -> Result<(), Self::Error>;
    /// Up to `limit` children of `parent` in `(key, id)` order, starting
    /// after the cursor `(key, id)` if given.
    fn children(
        &self,
        parent: Self::Node,
        after: Option<(&OrderKey, NodeId)>,
        limit: usize,
    ) -> Result<Vec<Child>, Self::Error>;
    /// The last child of `parent` in sibling order (appending goes after it).
    fn last_child(&self, parent: Self::Node) -> Result<Option<Child>, Self::Error>;
    /// Number of nodes in the tree, ROOT and TRASH excluded.
    fn node_count(&self) -> Result<u64, Self::Error>;
    /// Every node with its place, in any order (checks and tests).
    fn all_nodes(&self) -> Result<Vec<(NodeId, Place)>, Self::Error>;

    /// The newest logged stamp.
    fn log_last(&self) -> Result<Option<Stamp>, Self::Error>;
    /// True if a move with this stamp is logged.
    fn log_contains(&self, stamp: Stamp) -> Result<bool, Self::Error>;
    /// Appends an entry newer than every logged one.
    fn log_push(&mut self, entry: LogEntry<Self::Node>) -> Result<(), Self::Error>;
    /// Removes every entry newer than `stamp`, appending them to `out`
    /// newest first.
    fn log_pop_above(
        &mut self,
        stamp: Stamp,
        out: &mut Vec<LogEntry<Self::Node>>,
    ) -> Result<(), Self::Error>;
    /// Removes every entry at or below `stamp`; returns how many.
    fn log_truncate_through(&mut self, stamp: Stamp) -> Result<u64, Self::Error>;
    /// Number of logged entries.
    fn log_len(&self) -> Result<u64, Self::Error>;
    /// Every logged entry in log order, by id (checks and tests).
    fn log_entries(&self) -> Result<Vec<LogEntry>, Self::Error>;

    /// The lowest stamp that may still be applied is above this one.
    fn horizon(&self) -> Result<Option<Stamp>, Self::Error>;
    /// Sets the horizon.
    fn set_horizon(&mut self, horizon: Stamp) -> Result<(), Self::Error>;

    /// The register of `(node, field)`.
    fn payload(&self, node: NodeId, field: &str) -> Result<Option<Payload>, Self::Error>;
    /// Overwrites the register of `(node, field)`.
    fn set_payload(
        &mut self,
        node: NodeId,
        field: &str,
        payload: Payload,
    ) -> Result<(), Self::Error>;
    /// Every register of `node`, sorted by field.
    fn payloads(&self, node: NodeId) -> Result<Vec<(String, Payload)>, Self::Error>;
    /// Every register, in any order (checks and tests).
    fn all_payloads(&self) -> Result<Vec<(NodeId, String, Payload)>, Self::Error>;

    /// Store-internal consistency (indexes agree with rows). Default: none.
    fn check_store(&self) -> Result<(), String> {
        Ok(())
    }
}

/// Errors of [`Tree::apply`] and queries.
#[derive(Debug, thiserror::Error)]
pub enum TreeError<E: std::error::Error + 'static> {
    /// An op is malformed; nothing was applied.
    #[error(transparent)]
    Op(#[from] OpError),
    /// An op's stamp is at or below the horizon; nothing was applied.
    #[error("op {stamp} is at or below the log horizon {horizon}: re-stamp and retry")]
    Stale {
        /// The op.
        stamp: Stamp,
        /// The horizon.
        horizon: Stamp,
    },
    /// The store failed.
    #[error("store: {0}")]
    Store(#[source] E),
    /// The store's parent links loop through this node: the store is
    /// damaged (no sequence of ops makes a cycle). Nothing was applied.
    #[error("the store is damaged: the parent links through {node} form a cycle")]
    Corrupt {
        /// A node on the cycle.
        node: NodeId,
    },
}

/// Bounds a walk along parent links. Parent links form no cycle in a valid
/// store, but a damaged one (a hand-edited file) could make a walk loop
/// forever; a walk longer than the store's node count has gone round one.
/// The first 4,096 steps are free; past them the node count (an O(n) query
/// in SQLite) is read at each doubling, so it is read only for deep walks
/// and only a logarithmic number of times.
#[derive(Debug, Clone)]
pub struct WalkBudget {
    steps: u64,
    check_at: u64,
}

impl Default for WalkBudget {
    fn default() -> Self {
        WalkBudget {
            steps: 0,
            check_at: 4_096,
        }
    }
}

impl WalkBudget {
    /// Counts one step; `false` once the walk has taken more steps than
    /// there are nodes (plus ROOT and TRASH): it is going round a cycle.
    pub fn step<S: TreeStore + ?Sized>(&mut self, store: &S) -> Result<bool, S::Error> {
        self.steps += 1;
        self.allows(self.steps, store)
    }

    /// `false` if a path of `len` steps is longer than the store has nodes
    /// (plus ROOT and TRASH): it goes round a cycle.
    pub fn allows<S: TreeStore + ?Sized>(&mut self, len: u64, store: &S) -> Result<bool, S::Error> {
        if len < self.check_at {
            return Ok(true);
        }
        self.check_at = len.saturating_mul(2);
        Ok(len <= store.node_count()?.saturating_add(2))
    }
}

/// [`TreeStore::is_ancestor`]'s default: walks [`TreeStore::parent`] up
/// from `b`, bounded by [`WalkBudget`] (a store that answers some walks
/// another way falls back to it for the rest).
pub fn walk_is_ancestor<S: TreeStore + ?Sized>(
    store: &S,
    a: S::Node,
    b: S::Node,
) -> Result<Option<bool>, S::Error> {
    let mut cur = b;
    let mut budget = WalkBudget::default();
    loop {
        if cur == a {
            return Ok(Some(true));
        }
        match store.parent(cur)? {
            Some(p) => cur = p,
            None => return Ok(Some(false)),
        }
        if !budget.step(store)? {
            return Ok(None);
        }
    }
}

/// A broken invariant found by [`Tree::check_invariants`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invariant broken: {0}")]
pub struct InvariantError(pub String);

/// What one [`Tree::apply`] call did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Applied {
    /// New moves logged.
    pub moves: usize,
    /// Of those, moves skipped as cycles (at their place in stamp order).
    pub skipped: usize,
    /// Moves already logged (duplicates), ignored.
    pub duplicates: usize,
    /// Logged moves undone and redone to make room for older new ones.
    pub redone: usize,
    /// Sets that won their register.
    pub sets_won: usize,
}

/// A full state dump, for comparisons in tests: node places and registers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TreeState {
    /// Every node's place.
    pub nodes: BTreeMap<NodeId, Place>,
    /// Every register.
    pub payloads: BTreeMap<(NodeId, String), Payload>,
}

/// The replicated tree: the CRDT algorithm over a [`TreeStore`].
#[derive(Debug, Clone, Default)]
pub struct Tree<S> {
    store: S,
}

type Res<T, S> = Result<T, TreeError<<S as TreeStore>::Error>>;
/// (node, parent) handles of a batch's moves.
type Handles<S> = Vec<(<S as TreeStore>::Node, <S as TreeStore>::Node)>;

impl<S: TreeStore> Tree<S> {
    /// Wraps a store (empty or holding a previous state).
    pub fn new(store: S) -> Self {
        Tree { store }
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The store, mutably (callers must keep the CRDT's invariants).
    pub fn store_mut(&mut self) -> &mut S {
        &mut self.store
    }

    /// Unwraps the store.
    pub fn into_store(self) -> S {
        self.store
    }

    /// Applies a batch of ops, in any order, duplicates allowed. Either the
    /// whole batch is validated and applied, or (on a validation error)
    /// nothing changes.
    pub fn apply(&mut self, ops: &[Op]) -> Res<Applied, S> {
        let horizon = self.store.horizon().map_err(TreeError::Store)?;
        for op in ops {
            op.validate()?;
            if let Some(h) = horizon {
                if op.stamp() <= h {
                    return Err(TreeError::Stale {
                        stamp: op.stamp(),
                        horizon: h,
                    });
                }
            }
        }
        let mut applied = Applied::default();
        let mut moves: Vec<&MoveOp> = ops
            .iter()
            .filter_map(|op| match op {
                Op::Move(m) => Some(m),
                Op::Set(_) => None,
            })
            .collect();
        if !moves.is_sorted_by_key(|m| m.stamp) {
            moves.sort_unstable_by_key(|m| m.stamp);
        }
        let before = moves.len();
        moves.dedup_by_key(|m| m.stamp);
        applied.duplicates = before - moves.len();
        if let Some(first) = moves.first() {
            let last = self.store.log_last().map_err(TreeError::Store)?;
            if last.is_none_or(|l| first.stamp > l) {
                let handles = self.intern_all(&moves)?;
                for (m, (node, parent)) in moves.iter().zip(handles) {
                    applied.skipped +=
                        usize::from(self.do_move(m.stamp, node, parent, m.key.clone())?);
                }
                applied.moves = moves.len();
            } else {
                // Entries at or below the first new stamp stay in the log, so
                // only leading moves can duplicate them: look those up one by
                // one. Duplicates above it are found while merging with the
                // undone entries (no per-op log search).
                let mut start = 0;
                while let Some(m) = moves.get(start) {
                    if !self.store.log_contains(m.stamp).map_err(TreeError::Store)? {
                        break;
                    }
                    start += 1;
                }
                applied.duplicates += start;
                if let Some(first) = moves.get(start) {
                    let fresh = &moves[start..];
                    let (redone, skipped, dups) = self.undo_redo(first.stamp, fresh)?;
                    applied.moves = fresh.len() - dups;
                    applied.redone = redone;
                    applied.skipped = skipped;
                    applied.duplicates += dups;
                }
            }
        }
        for op in ops {
            if let Op::Set(s) = op {
                applied.sets_won += usize::from(self.set(s)?);
            }
        }
        Ok(applied)
    }

    /// Pops every logged move above `lowest` and undoes it (newest first):
    /// each node back to its place before, or out of the tree. Returns the
    /// entries, newest first, their effects spent.
    fn undo_above(&mut self, lowest: Stamp) -> Res<Vec<LogEntry<S::Node>>, S> {
        let mut undone = Vec::new();
        self.store
            .log_pop_above(lowest, &mut undone)
            .map_err(TreeError::Store)?;
        for e in &mut undone {
            match std::mem::replace(&mut e.effect, Effect::Skipped) {
                Effect::Skipped => {}
                Effect::Moved { prev: None } => {
                    self.store.remove(e.node).map_err(TreeError::Store)?
                }
                Effect::Moved { prev: Some(p) } => {
                    self.store.set_place(e.node, p).map_err(TreeError::Store)?
                }
            }
        }
        Ok(undone)
    }

    /// Undoes every logged move above `lowest`, then redoes them merged
    /// with `fresh` (sorted; the first not logged). A fresh move whose stamp
    /// equals an undone entry's is a duplicate and is dropped. Returns
    /// (redone, skipped fresh, duplicates).
    fn undo_redo(&mut self, lowest: Stamp, fresh: &[&MoveOp]) -> Res<(usize, usize, usize), S> {
        let mut undone = self.undo_above(lowest)?;
        let redone = undone.len();
        let (mut skipped, mut dups) = (0, 0);
        // Merge: `undone` is newest first, so pop from its end.
        let handles = self.intern_all(fresh)?;
        let mut fresh = fresh.iter().zip(handles).peekable();
        loop {
            let take_fresh = match (fresh.peek(), undone.last()) {
                (Some((f, _)), Some(u)) if f.stamp == u.stamp => {
                    fresh.next();
                    dups += 1;
                    continue;
                }
                (Some((f, _)), Some(u)) => f.stamp < u.stamp,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => break,
            };
            if take_fresh {
                if let Some((m, (node, parent))) = fresh.next() {
                    skipped += usize::from(self.do_move(m.stamp, node, parent, m.key.clone())?);
                }
            } else if let Some(e) = undone.pop() {
                self.do_move(e.stamp, e.node, e.parent, e.key)?;
            }
        }
        Ok((redone, skipped, dups))
    }

    /// Rewrites the state underneath the logged moves: undoes every logged
    /// move (newest first), lets `write` change the store (a subtree
    /// replica takes the server's state of its subtree so), then redoes, in
    /// stamp order, the undone moves `keep` accepts, each with the cycle
    /// check against the new state; the others leave the log. Returns the
    /// nodes of the moves that left the log (a caller may clean up after
    /// those no longer in the tree).
    pub fn rebase(
        &mut self,
        keep: impl Fn(Stamp) -> bool,
        write: impl FnOnce(&mut S) -> Result<(), S::Error>,
    ) -> Res<Vec<NodeId>, S> {
        let mut undone = self.undo_above(Stamp::MIN)?;
        write(&mut self.store).map_err(TreeError::Store)?;
        let mut dropped = Vec::new();
        while let Some(e) = undone.pop() {
            if keep(e.stamp) {
                self.do_move(e.stamp, e.node, e.parent, e.key)?;
            } else {
                dropped.push(self.store.id(e.node).map_err(TreeError::Store)?);
            }
        }
        Ok(dropped)
    }

    /// Handles of every move's node and parent, looked up in one pass (the
    /// lookups are independent, so their cache misses overlap).
    fn intern_all(&mut self, moves: &[&MoveOp]) -> Res<Handles<S>, S> {
        moves
            .iter()
            .map(|m| {
                let node = self.store.intern(m.node).map_err(TreeError::Store)?;
                let parent = self.store.intern(m.parent).map_err(TreeError::Store)?;
                Ok((node, parent))
            })
            .collect()
    }

    /// `do` of the paper; returns true if the move was skipped.
    fn do_move(
        &mut self,
        stamp: Stamp,
        node: S::Node,
        parent: S::Node,
        key: OrderKey,
    ) -> Res<bool, S> {
        let st = &mut self.store;
        let prev = st.place(node).map_err(TreeError::Store)?;
        let skip = node == parent
            || (st.has_children(node).map_err(TreeError::Store)?
                && match st.is_ancestor(node, parent).map_err(TreeError::Store)? {
                    Some(yes) => yes,
                    None => {
                        let node = st.id(parent).map_err(TreeError::Store)?;
                        return Err(TreeError::Corrupt { node });
                    }
                });
        let effect = if skip {
            Effect::Skipped
        } else {
            st.set_place(
                node,
                Place {
                    parent,
                    key: key.clone(),
                },
            )
            .map_err(TreeError::Store)?;
            Effect::Moved { prev }
        };
        st.log_push(LogEntry {
            stamp,
            node,
            parent,
            key,
            effect,
        })
        .map_err(TreeError::Store)?;
        Ok(skip)
    }

    fn set(&mut self, s: &SetOp) -> Res<bool, S> {
        let cur = self
            .store
            .payload(s.node, &s.field)
            .map_err(TreeError::Store)?;
        if cur.is_some_and(|p| p.stamp >= s.stamp) {
            return Ok(false);
        }
        self.store
            .set_payload(
                s.node,
                &s.field,
                Payload {
                    stamp: s.stamp,
                    value: s.value.clone(),
                },
            )
            .map_err(TreeError::Store)?;
        Ok(true)
    }

    /// True if `a` is `b` or an ancestor of `b` (walks up from `b`, as
    /// deep as the tree goes; a loop in a damaged store is
    /// [`TreeError::Corrupt`]).
    pub fn is_ancestor(&self, a: NodeId, b: NodeId) -> Res<bool, S> {
        if a == b {
            return Ok(true);
        }
        match (self.lookup(a)?, self.lookup(b)?) {
            (Some(ha), Some(hb)) => self
                .store
                .is_ancestor(ha, hb)
                .map_err(TreeError::Store)?
                .ok_or(TreeError::Corrupt { node: b }),
            _ => Ok(false),
        }
    }

    fn lookup(&self, id: NodeId) -> Res<Option<S::Node>, S> {
        self.store.lookup(id).map_err(TreeError::Store)
    }

    /// Truncates the log at or below `stamp` and raises the horizon to it:
    /// ops at or below it are refused from now on. Returns entries removed.
    pub fn truncate_log(&mut self, stamp: Stamp) -> Res<u64, S> {
        let cur = self.store.horizon().map_err(TreeError::Store)?;
        let h = cur.map_or(stamp, |c| c.max(stamp));
        self.store.set_horizon(h).map_err(TreeError::Store)?;
        self.store.log_truncate_through(h).map_err(TreeError::Store)
    }

    /// The log horizon.
    pub fn horizon(&self) -> Res<Option<Stamp>, S> {
        self.store.horizon().map_err(TreeError::Store)
    }

    /// The node's parent (`None` for ROOT, TRASH and unknown nodes).
    pub fn parent(&self, node: NodeId) -> Res<Option<NodeId>, S> {
        let Some(h) = self.lookup(node)? else {
            return Ok(None);
        };
        match self.store.parent(h).map_err(TreeError::Store)? {
            Some(p) => self.store.id(p).map(Some).map_err(TreeError::Store),
            None => Ok(None),
        }
    }

    /// The node's place.
    pub fn place(&self, node: NodeId) -> Res<Option<Place>, S> {
        let Some(h) = self.lookup(node)? else {
            return Ok(None);
        };
        match self.store.place(h).map_err(TreeError::Store)? {
            Some(p) => Ok(Some(Place {
                parent: self.store.id(p.parent).map_err(TreeError::Store)?,
                key: p.key,
            })),
            None => Ok(None),
        }
    }

    /// True if the node is in the tree (ROOT and TRASH always are).
    pub fn contains(&self, node: NodeId) -> Res<bool, S> {
        if node.is_reserved() {
            return Ok(true);
        }
        match self.lookup(node)? {
            Some(h) => self.store.contains(h).map_err(TreeError::Store),
            None => Ok(false),
        }
    }

    /// A page of `parent`'s children in sibling order, after `cursor`.
    pub fn children(
        &self,
        parent: NodeId,
        cursor: Option<&Child>,
        limit: usize,
    ) -> Res<Vec<Child>, S> {
        match self.lookup(parent)? {
            Some(h) => self
                .store
                .children(h, cursor.map(|c| (&c.key, c.id)), limit)
                .map_err(TreeError::Store),
            None => Ok(Vec::new()),
        }
    }

    /// The last child of `parent` (to append after it).
    pub fn last_child(&self, parent: NodeId) -> Res<Option<Child>, S> {
        match self.lookup(parent)? {
            Some(h) => self.store.last_child(h).map_err(TreeError::Store),
            None => Ok(None),
        }
    }

    /// Ancestors of `node`, its parent first, ending at ROOT or TRASH (or
    /// at a parent not yet in the tree).
    pub fn ancestors(&self, node: NodeId) -> Res<Vec<NodeId>, S> {
        let mut out = Vec::new();
        let Some(mut cur) = self.lookup(node)? else {
            return Ok(out);
        };
        let mut budget = WalkBudget::default();
        while let Some(p) = self.store.parent(cur).map_err(TreeError::Store)? {
            out.push(self.store.id(p).map_err(TreeError::Store)?);
            cur = p;
            if !budget.step(&self.store).map_err(TreeError::Store)? {
                return Err(TreeError::Corrupt { node });
            }
        }
        Ok(out)
    }

    /// True if `node` is TRASH or below it (deleted).
    pub fn is_in_trash(&self, node: NodeId) -> Res<bool, S> {
        self.is_ancestor(NodeId::TRASH, node)
    }

    /// Pre-order iteration over `root`'s subtree (root excluded), yielding
    /// `(node, depth)` with depth 1 for children; children are read in
    /// pages, so memory grows with depth, not with subtree size.
    pub fn subtree(&self, root: NodeId) -> Subtree<'_, S> {
        Subtree {
            budget: WalkBudget::default(),
            tree: self,
            stack: vec![Frame {
                parent: root,
                page: Vec::new(),
                pos: 0,
                done: false,
            }],
        }
    }

    /// The register of `(node, field)`.
    pub fn payload(&self, node: NodeId, field: &str) -> Res<Option<Payload>, S> {
        self.store.payload(node, field).map_err(TreeError::Store)
    }

    /// Number of nodes in the tree (ROOT and TRASH excluded).
    pub fn node_count(&self) -> Res<u64, S> {
        self.store.node_count().map_err(TreeError::Store)
    }

    /// Every node place and register, for comparisons.
    pub fn state(&self) -> Res<TreeState, S> {
        let nodes = self
            .store
            .all_nodes()
            .map_err(TreeError::Store)?
            .into_iter()
            .collect();
        let payloads = self
            .store
            .all_payloads()
            .map_err(TreeError::Store)?
            .into_iter()
            .map(|(n, f, p)| ((n, f), p))
            .collect();
        Ok(TreeState { nodes, payloads })
    }

    /// Checks the CRDT's invariants: every node has one parent, the parent
    /// relation is acyclic, every node reaches ROOT or TRASH (or a parent not
    /// yet received), the children index agrees with the parents, and the log
    /// is strictly sorted and above the horizon. Costs O(nodes + log).
    pub fn check_invariants(&self) -> Result<(), InvariantError> {
        let err = |m: String| InvariantError(m);
        let store_err = |e: S::Error| InvariantError(format!("store: {e}"));
        self.store.check_store().map_err(err)?;
        let nodes: BTreeMap<NodeId, Place> = self
            .store
            .all_nodes()
            .map_err(store_err)?
            .into_iter()
            .collect();
        for reserved in [NodeId::ROOT, NodeId::TRASH] {
            if nodes.contains_key(&reserved) {
                return Err(err(format!("{reserved:?} has a parent")));
            }
        }
        if self.store.node_count().map_err(store_err)? != nodes.len() as u64 {
            return Err(err("node_count disagrees with the node list".into()));
        }
        // Acyclic and rooted: walk up from each node, memoizing nodes known
        // to reach a root (ROOT, TRASH or a node not in the tree).
        let mut rooted: std::collections::HashSet<NodeId> = std::collections::HashSet::new();
        for &start in nodes.keys() {
            let mut path = Vec::new();
            let mut cur = start;
            loop {
                if rooted.contains(&cur) {
                    break;
                }
                match nodes.get(&cur) {
                    None => break, // ROOT, TRASH, or parent not received yet
                    Some(p) => {
                        path.push(cur);
                        if path.len() > nodes.len() {
                            return Err(err(format!("cycle through {start:?}")));
                        }
                        cur = p.parent;
                    }
                }
            }
            rooted.extend(path);
        }
        // Children index agrees with parents, in (key, id) order.
        let mut by_parent: BTreeMap<NodeId, Vec<(OrderKey, NodeId)>> = BTreeMap::new();
        for (id, p) in &nodes {
            by_parent
                .entry(p.parent)
                .or_default()
                .push((p.key.clone(), *id));
        }
        let mut listed = 0usize;
        for (parent, mut kids) in by_parent {
            kids.sort();
            let Some(ph) = self.store.lookup(parent).map_err(store_err)? else {
                return Err(err(format!("parent {parent:?} has no handle")));
            };
            let got = self
                .store
                .children(ph, None, usize::MAX)
                .map_err(store_err)?;
            let got: Vec<(OrderKey, NodeId)> = got.into_iter().map(|c| (c.key, c.id)).collect();
            if got != kids {
                return Err(err(format!(
                    "children index of {parent:?} disagrees with parents"
                )));
            }
            listed += got.len();
        }
        if listed != nodes.len() {
            return Err(err(
                "children index lists a different number of nodes".into()
            ));
        }
        let log = self.store.log_entries().map_err(store_err)?;
        if !log.windows(2).all(|w| w[0].stamp < w[1].stamp) {
            return Err(err("log not strictly sorted by stamp".into()));
        }
        if let (Some(h), Some(first)) = (self.store.horizon().map_err(store_err)?, log.first()) {
            if first.stamp <= h {
                return Err(err(format!(
                    "log entry {:?} at or below horizon {h:?}",
                    first.stamp
                )));
            }
        }
        if self.store.log_len().map_err(store_err)? != log.len() as u64 {
            return Err(err("log_len disagrees with the log".into()));
        }
        Ok(())
    }
}

struct Frame {
    parent: NodeId,
    page: Vec<Child>,
    pos: usize,
    done: bool,
}

/// Iterator returned by [`Tree::subtree`].
pub struct Subtree<'a, S> {
    tree: &'a Tree<S>,
    stack: Vec<Frame>,
    /// Bounds the depth: a subtree deeper than the store has nodes is a
    /// loop of parent links in a damaged store.
    budget: WalkBudget,
}

const SUBTREE_PAGE: usize = 256;

impl<S: TreeStore> Iterator for Subtree<'_, S> {
    type Item = Res<(NodeId, usize), S>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let depth = self.stack.len();
            let frame = self.stack.last_mut()?;
            if frame.pos == frame.page.len() {
                if frame.done {
                    self.stack.pop();
                    continue;
                }
                let cursor = frame.page.last().cloned();
                match self
                    .tree
                    .children(frame.parent, cursor.as_ref(), SUBTREE_PAGE)
                {
                    Ok(page) => {
                        frame.done = page.len() < SUBTREE_PAGE;
                        frame.page = page;
                        frame.pos = 0;
                        if frame.page.is_empty() {
                            self.stack.pop();
                        }
                        continue;
                    }
                    Err(e) => {
                        self.stack.clear();
                        return Some(Err(e));
                    }
                }
            }
            let id = frame.page.get(frame.pos).map(|c| c.id)?;
            frame.pos += 1;
            match self.budget.allows(depth as u64, &self.tree.store) {
                Ok(true) => {}
                Ok(false) => {
                    self.stack.clear();
                    return Some(Err(TreeError::Corrupt { node: id }));
                }
                Err(e) => {
                    self.stack.clear();
                    return Some(Err(TreeError::Store(e)));
                }
            }
            self.stack.push(Frame {
                parent: id,
                page: Vec::new(),
                pos: 0,
                done: false,
            });
            return Some(Ok((id, depth)));
        }
    }
}
