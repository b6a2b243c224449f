//! Named regression scenarios (literal ops and literal `Action` lists).

use arbor_shared::sim::{Action, Sim};
use arbor_shared::{Clock, Effect, Hlc, KeyGen, MoveOp, NodeId, Op, ReplicaId, TreeStore};

use crate::util::*;

/// Applies `ops` one by one in every given order and checks all results
/// are equal; returns the first.
fn converge(ops: &[Op], orders: &[Vec<usize>]) -> MemTree {
    let mut first: Option<MemTree> = None;
    for order in orders {
        let mut t = tree();
        for &i in order {
            apply(&mut t, std::slice::from_ref(&ops[i]));
        }
        match &first {
            None => first = Some(t),
            Some(f) => assert_eq!(f.state().unwrap(), t.state().unwrap(), "order {order:?}"),
        }
    }
    first.unwrap()
}

fn all_orders(n: usize) -> Vec<Vec<usize>> {
    fn rec(prefix: &mut Vec<usize>, n: usize, out: &mut Vec<Vec<usize>>) {
        if prefix.len() == n {
            out.push(prefix.clone());
            return;
        }
        for i in 0..n {
            if !prefix.contains(&i) {
                prefix.push(i);
                rec(prefix, n, out);
                prefix.pop();
            }
        }
    }
    let mut out = Vec::new();
    rec(&mut Vec::new(), n, &mut out);
    out
}

#[test]
fn two_cycle_from_concurrent_moves() {
    // x=1, y=2 under ROOT; replica 1 moves x under y, replica 2 y under x.
    let ops = [
        mv(1, 1, 1, 0),
        mv(2, 1, 2, 0),
        mv(10, 1, 1, 2),
        mv(10, 2, 2, 1),
    ];
    let t = converge(&ops, &all_orders(4));
    // The lower stamp (10,1) wins; (10,2) would close a cycle and is skipped.
    assert_eq!(parent(&t, 1), Some(n(2)));
    assert_eq!(parent(&t, 2), Some(NodeId::ROOT));
}

#[test]
fn three_cycle_from_concurrent_moves() {
    let ops = [
        mv(1, 1, 1, 0),
        mv(2, 1, 2, 0),
        mv(3, 1, 3, 0),
        mv(10, 1, 1, 2),
        mv(10, 2, 2, 3),
        mv(10, 3, 3, 1),
    ];
    let t = converge(&ops, &all_orders(6));
    assert_eq!(parent(&t, 1), Some(n(2)));
    assert_eq!(parent(&t, 2), Some(n(3)));
    assert_eq!(
        parent(&t, 3),
        Some(NodeId::ROOT),
        "the newest move of the cycle is skipped"
    );
    let skipped = t
        .store()
        .log_entries()
        .unwrap()
        .iter()
        .filter(|e| e.effect == Effect::Skipped)
        .count();
    assert_eq!(skipped, 1);
}

#[test]
fn move_vs_delete_of_an_ancestor() {
    // a=1 > b=2, c=3 under ROOT. Replica 1 moves b under c while replica 2
    // deletes a: b survives under c.
    let ops = [
        mv(1, 1, 1, 0),
        mv(2, 1, 2, 1),
        mv(3, 1, 3, 0),
        mv(10, 1, 2, 3),
        mv(10, 2, 1, u128::MAX),
    ];
    let t = converge(&ops, &all_orders(5));
    assert_eq!(parent(&t, 2), Some(n(3)));
    assert!(!t.is_in_trash(n(2)).unwrap());
    assert!(t.is_in_trash(n(1)).unwrap());
    // Moving c into the deleted subtree concurrently with the delete puts c
    // in the trash too (restoring is the server's restore rule).
    let ops = [
        mv(1, 1, 1, 0),
        mv(2, 1, 2, 1),
        mv(3, 1, 3, 0),
        mv(10, 1, 3, 2),
        mv(10, 2, 1, u128::MAX),
    ];
    let t = converge(&ops, &all_orders(5));
    assert!(t.is_in_trash(n(3)).unwrap());
    assert_eq!(t.ancestors(n(3)).unwrap(), vec![n(2), n(1), NodeId::TRASH]);
}

#[test]
fn create_under_a_concurrently_deleted_parent() {
    let ops = [mv(1, 1, 1, 0), mv(10, 1, 2, 1), mv(10, 2, 1, u128::MAX)];
    let t = converge(&ops, &all_orders(3));
    // The core keeps the child with its parent (no op is lost); the server
    // appends the restore (DESIGN section 6).
    assert_eq!(parent(&t, 2), Some(n(1)));
    assert!(t.is_in_trash(n(2)).unwrap());
    assert_eq!(t.node_count().unwrap(), 2);
}

#[test]
fn many_ops_from_one_replica_in_the_same_millisecond() {
    let mut clock = Clock::new(ReplicaId(9), Hlc(0));
    let mut keys = KeyGen::new(9);
    let mut last = keys.between(None, None).unwrap();
    let mut ops = Vec::new();
    for i in 0..100_000u128 {
        let stamp = clock.tick(1_700_000_000_000).unwrap();
        last = keys.after_key(&last);
        ops.push(Op::Move(MoveOp {
            stamp,
            known_seq: 0,
            node: NodeId(i + 1),
            parent: NodeId::ROOT,
            key: last.clone(),
        }));
    }
    let mut stamps: Vec<_> = ops.iter().map(Op::stamp).collect();
    stamps.dedup();
    assert_eq!(stamps.len(), 100_000, "all stamps distinct");
    assert!(stamps.windows(2).all(|w| w[0] < w[1]));
    let mut t = tree();
    for chunk in ops.chunks(1000) {
        t.apply(chunk).unwrap();
    }
    t.check_invariants().unwrap();
    assert_eq!(t.node_count().unwrap(), 100_000);
    assert_eq!(t.store().log_len().unwrap(), 100_000);
}

#[test]
fn cycle_attempt_across_a_chain_of_depth_10_000() {
    const D: u128 = 10_000;
    // Chain 1 > 2 > ... > D under ROOT, built by replica 1.
    let chain: Vec<Op> = (1..=D).map(|i| mv(i as u64, 1, i, i - 1)).collect();
    // Replica 2 moves the head under the tail: a cycle through 10,000 levels.
    let head_under_tail = mv(100_000, 2, 1, D);
    // Replica 1, concurrently and earlier, cuts the chain at D/2.
    let cut = mv(50_000, 1, D / 2, 0);
    for late_cut in [false, true] {
        let mut t = tree();
        apply(&mut t, &chain);
        if late_cut {
            apply(&mut t, std::slice::from_ref(&head_under_tail));
            assert_eq!(
                parent(&t, 1),
                Some(NodeId::ROOT),
                "skipped: would be a cycle"
            );
            apply(&mut t, std::slice::from_ref(&cut)); // undo, cut, redo: now valid
        } else {
            apply(&mut t, std::slice::from_ref(&cut));
            apply(&mut t, std::slice::from_ref(&head_under_tail));
        }
        assert_eq!(parent(&t, 1), Some(n(D)));
        assert_eq!(parent(&t, D / 2), Some(NodeId::ROOT));
        assert_eq!(
            t.ancestors(n(D / 2 - 1)).unwrap().len() as u128,
            D / 2 - 1 + D / 2 + 1
        );
    }
}

#[test]
fn hundred_thousand_siblings_in_stable_order() {
    const N: usize = 100_000;
    let mut keys = KeyGen::new(3);
    let mut ops = Vec::with_capacity(N);
    let mut last = keys.between(None, None).unwrap();
    for i in 0..N {
        // Mostly appends, plus inserts between random earlier keys.
        let key = if i % 10 == 9 {
            let lo = match &ops[i / 2] {
                Op::Move(m) => m.key.clone(),
                Op::Set(_) => unreachable!(),
            };
            keys.between(Some(&lo), None).unwrap()
        } else {
            last = keys.after_key(&last);
            last.clone()
        };
        ops.push(Op::Move(MoveOp {
            stamp: arbor_shared::Stamp::new(i as u64 + 1, 1),
            known_seq: 0,
            node: NodeId(i as u128 + 1),
            parent: NodeId::ROOT,
            key,
        }));
    }
    let mut a = tree();
    for c in ops.chunks(5_000) {
        a.apply(c).unwrap();
    }
    let mut b = tree();
    for c in ops.chunks(5_000).rev() {
        b.apply(c).unwrap();
    }
    a.check_invariants().unwrap();
    b.check_invariants().unwrap();
    let page = |t: &MemTree| {
        let mut out = Vec::new();
        let mut cursor = None;
        loop {
            let p = t.children(NodeId::ROOT, cursor.as_ref(), 777).unwrap();
            if p.is_empty() {
                break out;
            }
            cursor = p.last().cloned();
            out.extend(p);
        }
    };
    let (pa, pb) = (page(&a), page(&b));
    assert_eq!(pa.len(), N);
    assert_eq!(pa, pb);
    assert!(
        pa.windows(2)
            .all(|w| (&w[0].key, w[0].id) < (&w[1].key, w[1].id))
    );
}

#[test]
fn remote_op_older_than_a_long_local_history() {
    // Replica 1 makes 20,000 local ops; replica 2's single op is older than
    // all but the first: replica 1 undoes and redoes ~20,000 entries.
    let mut local: Vec<Op> = vec![mv(1, 1, 1, 0), mv(2, 1, 2, 0)];
    for i in 0..20_000u64 {
        // Alternate node 3 between 1 and 2, with fresh nodes along the way.
        local.push(mv(10 + i, 1, 3, 1 + u128::from(i % 2)));
    }
    let remote = mv(5, 2, 2, 1); // 2 under 1: later moves of 3 still valid
    let mut r1 = tree();
    apply(&mut r1, &local);
    let a = r1.apply(std::slice::from_ref(&remote)).unwrap();
    assert_eq!(a.redone, 20_000);
    r1.check_invariants().unwrap();
    let mut r2 = tree();
    apply(&mut r2, &[local[0].clone(), local[1].clone(), remote]);
    apply(&mut r2, &local[2..]);
    assert_eq!(r1.state().unwrap(), r2.state().unwrap());
    assert_eq!(parent(&r1, 2), Some(n(1)));
    assert_eq!(parent(&r1, 3), Some(n(2)));
}

#[test]
fn literal_action_list_with_cross_moves_and_restores() {
    let actions = [
        Action::Create {
            replica: 0,
            parent: 0,
            pos: 0,
        },
        Action::Create {
            replica: 0,
            parent: 0,
            pos: 1,
        },
        Action::Create {
            replica: 0,
            parent: 1,
            pos: 0,
        },
        Action::Deliver {
            to: 1,
            count: 9,
            seed: 1,
        },
        Action::Deliver {
            to: 2,
            count: 9,
            seed: 2,
        },
        Action::CrossMove {
            a: 1,
            b: 2,
            x: 0,
            y: 1,
        },
        Action::Delete {
            replica: 0,
            node: 0,
        },
        Action::Create {
            replica: 2,
            parent: 1,
            pos: 0,
        },
        Action::Tick { ms: 0 },
        Action::Restore {
            replica: 0,
            node: 0,
        },
        Action::Set {
            replica: 1,
            node: 2,
            field: 0,
            value: 3,
        },
        Action::Set {
            replica: 2,
            node: 2,
            field: 0,
            value: 0,
        },
        Action::Redeliver { to: 1, op: 0 },
    ];
    let mut sim = Sim::new(3);
    for a in &actions {
        sim.step(a).unwrap();
    }
    sim.finish(7).unwrap();
}
