//! A deterministic network of in-memory replicas driven by [`Action`]s.
//!
//! One `Action` enum drives the property tests (random action lists),
//! literal regression tests (hand-written lists) and fuzz targets. Every
//! replica issues ops against its own view; deliveries hand a replica a
//! random batch of ops from everything issued so far (random order,
//! duplicates, random batch boundaries). [`Sim::finish`] delivers the rest
//! and checks that all replicas converged.

use std::collections::BTreeSet;

use crate::clock::{Clock, Hlc, Stamp};
use crate::id::{NodeId, ReplicaId};
use crate::key::{KeyGen, OrderKey};
use crate::op::{MoveOp, Op, SetOp};
use crate::tree::{Child, MemoryStore, Tree, TreeState, TreeStore};

/// One step of a simulation. Numbers are picks, reduced modulo whatever
/// they choose from, so every value is valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Replica creates a node under a picked parent at a picked position.
    Create {
        /// Replica pick.
        replica: u8,
        /// Parent pick (ROOT or a node the replica has).
        parent: u16,
        /// Position pick among the parent's children.
        pos: u8,
    },
    /// Replica moves a picked node under a picked parent (may be a cycle).
    Move {
        /// Replica pick.
        replica: u8,
        /// Node pick.
        node: u16,
        /// Parent pick.
        parent: u16,
        /// Position pick.
        pos: u8,
    },
    /// Replica deletes a picked node (moves it under TRASH).
    Delete {
        /// Replica pick.
        replica: u8,
        /// Node pick.
        node: u16,
    },
    /// Replica moves a picked node out of the trash, under ROOT.
    Restore {
        /// Replica pick.
        replica: u8,
        /// Node pick (among nodes in its trash).
        node: u16,
    },
    /// Replica sets (or clears, when `value` is 0) a field of a node.
    Set {
        /// Replica pick.
        replica: u8,
        /// Node pick.
        node: u16,
        /// Field pick (one of three names).
        field: u8,
        /// Value (0 clears).
        value: u8,
    },
    /// Two replicas concurrently move `x` under `y` and `y` under `x`.
    CrossMove {
        /// First replica pick.
        a: u8,
        /// Second replica pick.
        b: u8,
        /// First node pick.
        x: u16,
        /// Second node pick.
        y: u16,
    },
    /// Delivers a batch of `count` ops picked at random (seeded) from all
    /// ops issued so far, duplicates included, to a replica.
    Deliver {
        /// Receiving replica pick.
        to: u8,
        /// Batch size.
        count: u8,
        /// Seed of the picks.
        seed: u64,
    },
    /// Re-delivers one op the replica already has: nothing may change.
    Redeliver {
        /// Replica pick.
        to: u8,
        /// Op pick.
        op: u16,
    },
    /// Wall time advances by this many milliseconds (0: same millisecond).
    Tick {
        /// Milliseconds.
        ms: u16,
    },
}

/// A check failed: divergence, a broken invariant or an apply error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("simulation: {0}")]
pub struct SimError(pub String);

/// One simulated device.
#[derive(Debug, Clone)]
pub struct SimReplica {
    /// Its replica.
    pub tree: Tree<MemoryStore>,
    clock: Clock,
    keys: KeyGen,
    next_node: u64,
    /// Stamps of the ops this replica has applied.
    have: BTreeSet<Stamp>,
    /// Every node id it has seen, in first-seen order.
    known: Vec<NodeId>,
}

/// The simulated network.
#[derive(Debug, Clone)]
pub struct Sim {
    /// The replicas.
    pub replicas: Vec<SimReplica>,
    /// Every op issued, in issue order.
    pub ops: Vec<Op>,
    now_ms: u64,
    /// Check invariants of the receiving replica after every step.
    pub check_every_step: bool,
}

/// splitmix64 step: deterministic picks without a `rand` dependency.
pub fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn err<E: std::fmt::Display>(e: E) -> SimError {
    SimError(e.to_string())
}

const FIELDS: [&str; 3] = ["text", "color", "done"];

impl Sim {
    /// A network of `n` empty replicas (replica ids 1..=n).
    pub fn new(n: usize) -> Self {
        let replicas = (1..=n as u64)
            .map(|r| SimReplica {
                tree: Tree::new(MemoryStore::new()),
                clock: Clock::new(ReplicaId(r), Hlc(0)),
                keys: KeyGen::new(r.wrapping_mul(0x2545_F491_4F6C_DD1D)),
                next_node: 0,
                have: BTreeSet::new(),
                known: Vec::new(),
            })
            .collect();
        Sim {
            replicas,
            ops: Vec::new(),
            now_ms: 1_000_000,
            check_every_step: true,
        }
    }

    fn rix(&self, pick: u8) -> usize {
        usize::from(pick) % self.replicas.len()
    }

    /// Nodes of replica `r` that are in its tree, in first-seen order.
    fn live(&self, r: usize) -> Vec<NodeId> {
        let rep = &self.replicas[r];
        rep.known
            .iter()
            .copied()
            .filter(|n| rep.tree.contains(*n).unwrap_or(false))
            .collect()
    }

    fn pick_parent(&self, r: usize, pick: u16) -> NodeId {
        let live = self.live(r);
        let i = usize::from(pick) % (live.len() + 1);
        if i == 0 { NodeId::ROOT } else { live[i - 1] }
    }

    fn pick_node(&self, r: usize, pick: u16) -> Option<NodeId> {
        let live = self.live(r);
        (!live.is_empty()).then(|| live[usize::from(pick) % live.len()])
    }

    /// A key for position `pos` among `parent`'s children in replica `r`.
    fn key_at(
        &mut self,
        r: usize,
        parent: NodeId,
        pos: u8,
        skip: Option<NodeId>,
    ) -> Result<OrderKey, SimError> {
        let rep = &mut self.replicas[r];
        let kids: Vec<Child> = rep
            .tree
            .children(parent, None, 64)
            .map_err(err)?
            .into_iter()
            .filter(|c| Some(c.id) != skip)
            .collect();
        let i = usize::from(pos) % (kids.len() + 1);
        let lo = i.checked_sub(1).and_then(|j| kids.get(j)).map(|c| &c.key);
        let hi = kids.get(i).map(|c| &c.key);
        match rep.keys.between(lo, hi) {
            Ok(k) => Ok(k),
            // Equal neighbouring keys: put it after the low one instead (a
            // real client re-keys; any key is valid CRDT input).
            Err(_) => match lo {
                Some(lo) => Ok(rep.keys.after_key(lo)),
                None => rep.keys.between(None, None).map_err(err),
            },
        }
    }

    fn stamp(&mut self, r: usize) -> Result<(Stamp, u64), SimError> {
        let rep = &mut self.replicas[r];
        let s = rep.clock.tick(self.now_ms).map_err(err)?;
        Ok((s, rep.have.len() as u64))
    }

    fn issue(&mut self, r: usize, op: Op) -> Result<(), SimError> {
        self.deliver(r, std::slice::from_ref(&op))?;
        self.ops.push(op);
        Ok(())
    }

    fn move_op(&mut self, r: usize, node: NodeId, parent: NodeId, pos: u8) -> Result<Op, SimError> {
        let key = self.key_at(r, parent, pos, Some(node))?;
        let (stamp, known_seq) = self.stamp(r)?;
        Ok(Op::Move(MoveOp {
            stamp,
            known_seq,
            node,
            parent,
            key,
        }))
    }

    /// Applies a batch to replica `r`, checking invariants if asked.
    pub fn deliver(&mut self, r: usize, batch: &[Op]) -> Result<(), SimError> {
        let rep = &mut self.replicas[r];
        rep.tree.apply(batch).map_err(err)?;
        for op in batch {
            rep.clock.observe(op.stamp().hlc);
            rep.have.insert(op.stamp());
            let mut see = |n: NodeId| {
                if !n.is_reserved() && !rep.known.contains(&n) {
                    rep.known.push(n);
                }
            };
            see(op.node());
            if let Op::Move(m) = op {
                see(m.parent);
            }
        }
        if self.check_every_step {
            self.replicas[r].tree.check_invariants().map_err(err)?;
        }
        Ok(())
    }

    /// Runs one action.
    pub fn step(&mut self, action: &Action) -> Result<(), SimError> {
        match *action {
            Action::Create {
                replica,
                parent,
                pos,
            } => {
                let r = self.rix(replica);
                let parent = self.pick_parent(r, parent);
                let rep = &mut self.replicas[r];
                rep.next_node += 1;
                let node = NodeId((u128::from(r as u64 + 1) << 64) | u128::from(rep.next_node));
                let op = self.move_op(r, node, parent, pos)?;
                self.issue(r, op)
            }
            Action::Move {
                replica,
                node,
                parent,
                pos,
            } => {
                let r = self.rix(replica);
                let Some(node) = self.pick_node(r, node) else {
                    return Ok(());
                };
                let parent = self.pick_parent(r, parent);
                let op = self.move_op(r, node, parent, pos)?;
                self.issue(r, op)
            }
            Action::Delete { replica, node } => {
                let r = self.rix(replica);
                let Some(node) = self.pick_node(r, node) else {
                    return Ok(());
                };
                let op = self.move_op(r, node, NodeId::TRASH, 255)?;
                self.issue(r, op)
            }
            Action::Restore { replica, node } => {
                let r = self.rix(replica);
                let trash = self.replicas[r]
                    .tree
                    .children(NodeId::TRASH, None, 64)
                    .map_err(err)?;
                if trash.is_empty() {
                    return Ok(());
                }
                let node = trash[usize::from(node) % trash.len()].id;
                let op = self.move_op(r, node, NodeId::ROOT, 255)?;
                self.issue(r, op)
            }
            Action::Set {
                replica,
                node,
                field,
                value,
            } => {
                let r = self.rix(replica);
                let Some(node) = self.pick_node(r, node) else {
                    return Ok(());
                };
                let (stamp, known_seq) = self.stamp(r)?;
                let op = Op::Set(SetOp {
                    stamp,
                    known_seq,
                    node,
                    field: FIELDS[usize::from(field) % FIELDS.len()].into(),
                    value: (value != 0).then(|| format!("v{value}")),
                });
                self.issue(r, op)
            }
            Action::CrossMove { a, b, x, y } => {
                let (ra, rb) = (self.rix(a), self.rix(b));
                let (Some(nx), Some(ny)) = (self.pick_node(ra, x), self.pick_node(ra, y)) else {
                    return Ok(());
                };
                if nx == ny
                    || !self.replicas[rb].tree.contains(nx).map_err(err)?
                    || !self.replicas[rb].tree.contains(ny).map_err(err)?
                {
                    return Ok(());
                }
                // Both ops are built before either is delivered: concurrent.
                let op_a = self.move_op(ra, nx, ny, 0)?;
                let op_b = self.move_op(rb, ny, nx, 0)?;
                self.issue(ra, op_a)?;
                self.issue(rb, op_b)
            }
            Action::Deliver { to, count, seed } => {
                if self.ops.is_empty() {
                    return Ok(());
                }
                let r = self.rix(to);
                let mut s = seed;
                let batch: Vec<Op> = (0..count)
                    .map(|_| self.ops[(splitmix(&mut s) % self.ops.len() as u64) as usize].clone())
                    .collect();
                self.deliver(r, &batch)
            }
            Action::Redeliver { to, op } => {
                let r = self.rix(to);
                let have: Vec<Op> = self
                    .ops
                    .iter()
                    .filter(|o| self.replicas[r].have.contains(&o.stamp()))
                    .cloned()
                    .collect();
                if have.is_empty() {
                    return Ok(());
                }
                let op = have[usize::from(op) % have.len()].clone();
                let before = self.replicas[r].tree.state().map_err(err)?;
                let log_before = self.replicas[r].tree.store().log_entries().map_err(err)?;
                self.deliver(r, std::slice::from_ref(&op))?;
                let tree = &self.replicas[r].tree;
                if tree.state().map_err(err)? != before
                    || tree.store().log_entries().map_err(err)? != log_before
                {
                    return Err(SimError(format!("re-applying {op:?} changed replica {r}")));
                }
                Ok(())
            }
            Action::Tick { ms } => {
                self.now_ms += u64::from(ms);
                Ok(())
            }
        }
    }

    /// Delivers every op to every replica (shuffled by `seed`, in random
    /// batch sizes), then checks invariants and that all replicas are
    /// identical (parents, keys, children order, registers). Returns the
    /// converged state.
    pub fn finish(&mut self, seed: u64) -> Result<TreeState, SimError> {
        let mut s = seed;
        for r in 0..self.replicas.len() {
            let mut ops = self.ops.clone();
            shuffle(&mut ops, &mut s);
            let mut rest = &ops[..];
            while !rest.is_empty() {
                let n = 1 + (splitmix(&mut s) % 17) as usize;
                let (batch, tail) = rest.split_at(n.min(rest.len()));
                self.deliver(r, batch)?;
                rest = tail;
            }
            self.replicas[r].tree.check_invariants().map_err(err)?;
        }
        let first = self.replicas[0].tree.state().map_err(err)?;
        let order0 = children_orders(&self.replicas[0].tree)?;
        for (r, rep) in self.replicas.iter().enumerate().skip(1) {
            if rep.tree.state().map_err(err)? != first {
                return Err(SimError(format!("replica {r} diverged from replica 0")));
            }
            if children_orders(&rep.tree)? != order0 {
                return Err(SimError(format!("replica {r} orders children differently")));
            }
        }
        // Every node reaches ROOT or TRASH once all ops are in.
        for n in first.nodes.keys() {
            let anc = self.replicas[0].tree.ancestors(*n).map_err(err)?;
            if !matches!(anc.last(), Some(&NodeId::ROOT) | Some(&NodeId::TRASH)) {
                return Err(SimError(format!("{n:?} does not reach ROOT or TRASH")));
            }
        }
        Ok(first)
    }
}

/// Every parent's full child list, in order (for convergence checks).
pub fn children_orders(tree: &Tree<MemoryStore>) -> Result<Vec<(NodeId, Vec<NodeId>)>, SimError> {
    let mut parents: BTreeSet<NodeId> = tree
        .state()
        .map_err(err)?
        .nodes
        .values()
        .map(|p| p.parent)
        .collect();
    parents.insert(NodeId::ROOT);
    parents
        .into_iter()
        .map(|p| {
            let kids = tree.children(p, None, usize::MAX).map_err(err)?;
            Ok((p, kids.into_iter().map(|c| c.id).collect()))
        })
        .collect()
}

/// Fisher-Yates shuffle with [`splitmix`].
pub fn shuffle<T>(v: &mut [T], state: &mut u64) {
    for i in (1..v.len()).rev() {
        let j = (splitmix(state) % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
}
