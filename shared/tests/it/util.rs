//! Helpers shared by the test modules.

use arbor_shared::{MemoryStore, MoveOp, NodeId, Op, OrderKey, SetOp, Stamp, Tree};

pub type MemTree = Tree<MemoryStore>;

pub fn tree() -> MemTree {
    Tree::new(MemoryStore::new())
}

pub fn n(i: u128) -> NodeId {
    NodeId(i)
}

pub fn key(b: &[u8]) -> OrderKey {
    OrderKey::new(b).unwrap()
}

/// A move with stamp (hlc, replica) and a fixed key.
pub fn mv(hlc: u64, replica: u64, node: u128, parent: u128) -> Op {
    mvk(hlc, replica, node, parent, &[0x80])
}

pub fn mvk(hlc: u64, replica: u64, node: u128, parent: u128, k: &[u8]) -> Op {
    Op::Move(MoveOp {
        stamp: Stamp::new(hlc, replica),
        known_seq: 0,
        node: NodeId(node),
        parent: NodeId(parent),
        key: key(k),
    })
}

pub fn set(hlc: u64, replica: u64, node: u128, field: &str, value: Option<&str>) -> Op {
    Op::Set(SetOp {
        stamp: Stamp::new(hlc, replica),
        known_seq: 0,
        node: NodeId(node),
        field: field.into(),
        value: value.map(Into::into),
    })
}

pub fn apply(t: &mut MemTree, ops: &[Op]) {
    t.apply(ops).unwrap();
    t.check_invariants().unwrap();
}

pub fn parent(t: &MemTree, node: u128) -> Option<NodeId> {
    t.parent(NodeId(node)).unwrap()
}

/// Seed from `ARBOR_SEED` or the clock; printed so a failure can be replayed.
pub fn seed(name: &str) -> u64 {
    let seed = std::env::var("ARBOR_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    eprintln!("{name}: seed {seed} (replay with ARBOR_SEED={seed})");
    seed
}
