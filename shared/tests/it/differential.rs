//! Differential test against `crdt_tree`, an independent implementation of
//! the same paper: same parent for every node on random op sets.

use arbor_shared::sim::{shuffle, splitmix};
use arbor_shared::{NodeId, Op};
use crdt_tree::{Clock, OpMove, State};

use crate::util::*;

type Oracle = State<u128, (), u64>;

fn oracle_op(op: &Op) -> OpMove<u128, (), u64> {
    let Op::Move(m) = op else { unreachable!() };
    OpMove::new(
        Clock::new(m.stamp.replica.0, Some(m.stamp.hlc.0)),
        m.parent.0,
        (),
        m.node.0,
    )
}

/// A random op set: `ops` moves over `nodes` nodes by up to 5 replicas,
/// with unique stamps; parents include ROOT, TRASH and other nodes (so
/// cycles, deletes and restores all occur).
fn random_ops(s: &mut u64, nodes: u64, ops: usize) -> Vec<Op> {
    let mut out = Vec::with_capacity(ops);
    let mut used = std::collections::HashSet::new();
    while out.len() < ops {
        let hlc = 1 + splitmix(s) % (ops as u64 * 2);
        let replica = 1 + splitmix(s) % 5;
        if !used.insert((hlc, replica)) {
            continue;
        }
        let node = 1 + u128::from(splitmix(s) % nodes);
        let parent = match splitmix(s) % 10 {
            0 => u128::MAX,
            1 | 2 => 0,
            _ => 1 + u128::from(splitmix(s) % nodes),
        };
        out.push(mv(hlc, replica, node, parent));
    }
    out
}

#[test]
fn same_parents_as_crdt_tree_on_random_op_sets() {
    let seed = seed("differential");
    let mut s = seed;
    for case in 0..300 {
        let nodes = 2 + splitmix(&mut s) % 30;
        let n_ops = 1 + (splitmix(&mut s) % 200) as usize;
        let ops = random_ops(&mut s, nodes, n_ops);
        let mut delivery = ops.clone();
        shuffle(&mut delivery, &mut s);
        let mut oracle = Oracle::new();
        for op in &delivery {
            oracle.apply_op(oracle_op(op));
        }
        shuffle(&mut delivery, &mut s);
        let mut t = tree();
        let mut rest = &delivery[..];
        while !rest.is_empty() {
            let k = 1 + (splitmix(&mut s) % 13) as usize;
            let (batch, tail) = rest.split_at(k.min(rest.len()));
            apply(&mut t, batch);
            rest = tail;
        }
        for id in 1..=u128::from(nodes) {
            let ours = t.parent(NodeId(id)).unwrap().map(|p| p.0);
            let theirs = oracle.tree().find(&id).map(|n| *n.parent_id());
            assert_eq!(ours, theirs, "seed {seed} case {case}: parent of node {id}");
        }
    }
}
