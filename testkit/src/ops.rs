//! Ops and trees for tests and benchmarks: ids, keys, moves and sets by their fields, a reference tree in memory, the benchmarks' outline.

// An invalid key in a test's own ops is the test's bug: failing at once is
// right.
#![allow(clippy::unwrap_used)]

use arbor_shared::{KeyGen, MemoryStore, MoveOp, NodeId, Op, OrderKey, SetOp, Stamp, Tree};

/// The reference tree: the core in memory.
pub type MemTree = Tree<MemoryStore>;

/// An empty reference tree.
pub fn tree() -> MemTree {
    Tree::new(MemoryStore::new())
}

/// Node `i`.
pub fn n(i: u128) -> NodeId {
    NodeId(i)
}

/// The order key of bytes `b` (panics on an invalid key).
pub fn key(b: &[u8]) -> OrderKey {
    OrderKey::new(b).unwrap()
}

/// A move with stamp (hlc, replica), a key and a known_seq.
pub fn mv(hlc: u64, replica: u64, node: NodeId, parent: NodeId, k: &[u8], known: u64) -> Op {
    Op::Move(MoveOp {
        stamp: Stamp::new(hlc, replica),
        known_seq: known,
        node,
        parent,
        key: key(k),
    })
}

/// A set of `field` (`None`: cleared) with stamp (hlc, replica) and a
/// known_seq.
pub fn set(
    hlc: u64,
    replica: u64,
    node: NodeId,
    field: &str,
    value: Option<&str>,
    known: u64,
) -> Op {
    Op::Set(SetOp {
        stamp: Stamp::new(hlc, replica),
        known_seq: known,
        node,
        field: field.into(),
        value: value.map(Into::into),
    })
}

/// Node `i` (from 1) of an [`Outline`].
pub fn outline_node(i: usize) -> NodeId {
    NodeId(i as u128 + (1 << 100))
}

/// The benchmarks' thoughtspace, as batches to apply in order: `nodes`
/// nodes, each created by replica 1 and given a `text` field; the first
/// 1,000 under ROOT, node `i` past them under node `i % 1,000 + 1`; keys
/// ascending; stamps from an hour ago (millions of counter steps stay in
/// the past). A batch holds 5,000 nodes (10,000 ops).
#[derive(Debug)]
pub struct Outline {
    nodes: usize,
    made: usize,
    keys: KeyGen,
    last: Option<OrderKey>,
    hlc: u64,
}

impl Outline {
    /// An outline of `nodes` nodes, its stamps from now minus an hour.
    pub fn new(nodes: usize) -> Outline {
        Outline {
            nodes,
            made: 0,
            keys: KeyGen::new(1),
            last: None,
            hlc: (crate::env::now_ms() - 3_600_000) << 16,
        }
    }
}

impl Iterator for Outline {
    type Item = Vec<Op>;

    fn next(&mut self) -> Option<Vec<Op>> {
        if self.made >= self.nodes {
            return None;
        }
        let mut ops = Vec::new();
        for _ in 0..5_000.min(self.nodes - self.made) {
            self.made += 1;
            let made = self.made;
            let parent = if made <= 1_000 {
                NodeId::ROOT
            } else {
                outline_node(made % 1_000 + 1)
            };
            let key = self.keys.append_after(self.last.as_ref());
            self.last = Some(key.clone());
            self.hlc += 1;
            ops.push(Op::Move(MoveOp {
                stamp: Stamp::new(self.hlc, 1),
                known_seq: 0,
                node: outline_node(made),
                parent,
                key,
            }));
            self.hlc += 1;
            ops.push(Op::Set(SetOp {
                stamp: Stamp::new(self.hlc, 1),
                known_seq: 0,
                node: outline_node(made),
                field: "text".into(),
                value: Some(format!("node number {made} of the benchmark outline")),
            }));
        }
        Some(ops)
    }
}
