//! Helpers shared by the test modules.

use arbor_shared::{NodeId, Op};
pub use arbor_testkit::env::seed;
pub use arbor_testkit::ops::{MemTree, n, tree};

/// A move with stamp (hlc, replica) and a fixed key.
pub fn mv(hlc: u64, replica: u64, node: u128, parent: u128) -> Op {
    mvk(hlc, replica, node, parent, &[0x80])
}

pub fn mvk(hlc: u64, replica: u64, node: u128, parent: u128, k: &[u8]) -> Op {
    arbor_testkit::ops::mv(hlc, replica, NodeId(node), NodeId(parent), k, 0)
}

pub fn set(hlc: u64, replica: u64, node: u128, field: &str, value: Option<&str>) -> Op {
    arbor_testkit::ops::set(hlc, replica, NodeId(node), field, value, 0)
}

pub fn apply(t: &mut MemTree, ops: &[Op]) {
    t.apply(ops).unwrap();
    t.check_invariants().unwrap();
}

pub fn parent(t: &MemTree, node: u128) -> Option<NodeId> {
    t.parent(NodeId(node)).unwrap()
}
