//! The replica on its own (a real SQLite file, no server): local ops apply
//! and queue in one transaction, the state always equals the core's for the
//! same ops, invariants hold after every step, and files round-trip.

use arbor_client::snapshot::{load_snapshot, write_snapshot};
use arbor_client::{Position, Replica, ReplicaError};
use arbor_shared::protocol::SeqOp;
use arbor_shared::{MemoryStore, NodeId, Tree};

use crate::harness::*;

/// The core's state for the replica's outbox (every op it made).
fn core_state(r: &Replica) -> arbor_shared::tree::TreeState {
    let mut core = Tree::new(MemoryStore::new());
    core.apply(&r.outbox(usize::MAX).unwrap()).unwrap();
    core.state().unwrap()
}

fn kids(r: &Replica, parent: NodeId) -> Vec<NodeId> {
    r.children(parent, None, 1000)
        .unwrap()
        .into_iter()
        .map(|v| v.id)
        .collect()
}

#[test]
fn local_ops_keep_order_invariants_and_the_cores_state() {
    let dir = TempDir::new("local");
    let mut r = Replica::open(&dir.0.join("r.db")).unwrap();
    let changes = r.subscribe();
    let a = r
        .create_with(NodeId::ROOT, Position::Last, &[("text", "a")])
        .unwrap();
    let c = r.create(NodeId::ROOT, Position::Last).unwrap();
    let b = r.create(NodeId::ROOT, Position::After(a)).unwrap();
    let first = r.create(NodeId::ROOT, Position::First).unwrap();
    let before_c = r.create(NodeId::ROOT, Position::Before(c)).unwrap();
    assert_eq!(kids(&r, NodeId::ROOT), [first, a, b, before_c, c]);
    let got = changes.try_recv().unwrap();
    assert!(got.moved.contains(&a) && got.parents.contains(&NodeId::ROOT));
    assert!(got.fields.contains(&a));
    r.check_invariants().unwrap();

    // Move, reorder among siblings, refuse a cycle.
    r.move_node(b, a, Position::Last).unwrap();
    let b2 = r.create(a, Position::First).unwrap();
    assert_eq!(kids(&r, a), [b2, b]);
    r.move_node(c, NodeId::ROOT, Position::First).unwrap();
    assert_eq!(kids(&r, NodeId::ROOT), [c, first, a, before_c]);
    assert!(matches!(
        r.move_node(a, b, Position::Last),
        Err(ReplicaError::Cycle { .. })
    ));
    assert!(matches!(
        r.move_node(a, a, Position::Last),
        Err(ReplicaError::Cycle { .. })
    ));
    assert!(matches!(
        r.create(NodeId(12345), Position::Last),
        Err(ReplicaError::UnknownNode(_))
    ));
    assert!(matches!(
        r.create(a, Position::After(c)),
        Err(ReplicaError::NotASibling { .. })
    ));
    assert!(matches!(
        r.delete(NodeId::ROOT),
        Err(ReplicaError::Reserved(_))
    ));
    assert_eq!(r.ancestors(b).unwrap(), [a, NodeId::ROOT]);

    // Delete and restore to the same place; set and clear fields.
    r.delete(a).unwrap();
    assert!(r.is_deleted(b).unwrap());
    assert_eq!(kids(&r, NodeId::ROOT), [c, first, before_c]);
    r.restore(a).unwrap();
    assert_eq!(kids(&r, NodeId::ROOT), [c, first, a, before_c]);
    r.set(b, "text", Some("bee")).unwrap();
    r.set(b, "color", Some("red")).unwrap();
    r.set(b, "color", None).unwrap();
    assert_eq!(r.field(b, "text").unwrap().as_deref(), Some("bee"));
    assert_eq!(r.field(b, "color").unwrap(), None);
    assert_eq!(r.fields(b).unwrap().len(), 1);
    let mut walked = Vec::new();
    r.walk(NodeId::ROOT, |n, d| {
        walked.push((n, d));
        true
    })
    .unwrap();
    assert_eq!(walked.len(), 6);
    assert!(walked.contains(&(b, 2)));
    r.check_invariants().unwrap();
    assert_eq!(r.state().unwrap(), core_state(&r));

    // Reopened: same replica, state, outbox; the clock continues.
    let (id, state, outbox) = (
        r.replica_id(),
        r.state().unwrap(),
        r.outbox(usize::MAX).unwrap(),
    );
    drop(r);
    let mut r = Replica::open(&dir.0.join("r.db")).unwrap();
    assert_eq!(r.replica_id(), id);
    assert_eq!(r.state().unwrap(), state);
    assert_eq!(r.outbox(usize::MAX).unwrap(), outbox);
    r.set(b, "text", Some("later")).unwrap();
    let last = r.outbox(usize::MAX).unwrap().pop().unwrap();
    assert!(last.stamp() > outbox.last().unwrap().stamp());
}

#[test]
fn random_local_ops_match_the_core() {
    let seed = seed("random_local_ops_match_the_core");
    let mut rng = seed;
    let mut next = move |n: usize| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        (rng % n as u64) as usize
    };
    let dir = TempDir::new("random");
    let mut r = Replica::open(&dir.0.join("r.db")).unwrap();
    let mut nodes = vec![NodeId::ROOT];
    for step in 0..400 {
        let pick = nodes[next(nodes.len())];
        let target = nodes[next(nodes.len())];
        let result = match next(6) {
            0 | 1 => r
                .create_with(target, Position::Last, &[("text", &format!("n{step}"))])
                .map(|n| nodes.push(n)),
            2 => {
                let pos = match next(3) {
                    0 => Position::First,
                    1 => Position::Last,
                    _ => match kids(&r, target).first() {
                        Some(&k) if k != pick => Position::Before(k),
                        _ => Position::First,
                    },
                };
                r.move_node(pick, target, pos)
            }
            3 => r.delete(pick),
            4 => r.restore(pick),
            _ => r.set(pick, "text", Some(&format!("s{step}"))),
        };
        match result {
            Ok(())
            | Err(
                ReplicaError::Reserved(_)
                | ReplicaError::Cycle { .. }
                | ReplicaError::UnknownNode(_),
            ) => {}
            Err(e) => panic!("step {step}: {e}"),
        }
        if step % 50 == 0 {
            r.check_invariants().unwrap();
        }
    }
    r.check_invariants().unwrap();
    assert_eq!(r.state().unwrap(), core_state(&r));
}

#[test]
fn remote_ops_must_continue_the_cursor() {
    let dir = TempDir::new("gap");
    let mut source = Replica::open(&dir.0.join("s.db")).unwrap();
    source.create(NodeId::ROOT, Position::Last).unwrap();
    source.create(NodeId::ROOT, Position::Last).unwrap();
    let ops = source.outbox(10).unwrap();
    let mut r = Replica::open(&dir.0.join("r.db")).unwrap();
    let gap = [SeqOp::new(2, ops[1].clone())];
    assert!(matches!(
        r.apply_remote(&gap),
        Err(ReplicaError::Gap {
            expected: 1,
            got: 2
        })
    ));
    assert_eq!(r.node_count().unwrap(), 0);
    let good: Vec<SeqOp> = ops
        .iter()
        .enumerate()
        .map(|(i, op)| SeqOp::new(i as u64 + 1, op.clone()))
        .collect();
    r.apply_remote(&good).unwrap();
    assert_eq!(r.cursor().unwrap(), Some(2));
    assert_eq!(r.state().unwrap(), source.state().unwrap());
}

#[test]
fn a_replica_written_as_a_snapshot_loads_and_a_cut_rolls_back() {
    let dir = TempDir::new("file");
    let mut a = Replica::open(&dir.0.join("a.db")).unwrap();
    a.bind_space("s").unwrap();
    let mut last = NodeId::ROOT;
    for i in 0..2_000 {
        let parent = if i % 10 == 0 { NodeId::ROOT } else { last };
        last = a
            .create_with(parent, Position::Last, &[("text", &format!("node {i}"))])
            .unwrap();
    }
    let mut bytes = Vec::new();
    write_snapshot(&a, "s", |chunk| {
        bytes.extend(chunk);
        Ok(())
    })
    .unwrap();

    let mut b = Replica::open(&dir.0.join("b.db")).unwrap();
    let keep = b.create(NodeId::ROOT, Position::Last).unwrap();
    let before = b.state().unwrap();
    // Cut: everything but the last byte.
    let cut = bytes[..bytes.len() - 1].to_vec();
    let err = load_snapshot(
        &mut b,
        cut.chunks(1000)
            .map(|c| Ok::<_, String>(bytes::Bytes::copy_from_slice(c))),
        |_| {},
    )
    .unwrap_err();
    assert!(matches!(err, ReplicaError::Snapshot(_)), "{err}");
    assert_eq!(b.state().unwrap(), before);
    assert_eq!(b.cursor().unwrap(), None);

    let mut seen = 0;
    let loaded = load_snapshot(
        &mut b,
        bytes
            .chunks(777)
            .map(|c| Ok::<_, String>(bytes::Bytes::copy_from_slice(c))),
        |p| seen = p.rows,
    )
    .unwrap();
    assert_eq!(loaded.header.nodes, 2_000);
    assert_eq!(seen, 2_000 * 3);
    // The loaded state plus b's own pending create, rebased on top.
    assert_eq!(loaded.pending, 1);
    assert!(b.contains(keep).unwrap());
    b.check_invariants().unwrap();
    let mut want = a.state().unwrap();
    let mine = b.place(keep).unwrap().unwrap();
    want.nodes.insert(keep, mine);
    assert_eq!(b.state().unwrap(), want);
    assert_eq!(b.cursor().unwrap(), Some(0));
}

/// Two siblings with one key (two replicas inserting at one spot with the
/// same key): inserting between them, or before the second, re-keys the
/// siblings after the gap, and every replica ends with the same order.
#[test]
fn inserting_between_siblings_with_equal_keys_rekeys_them() {
    use arbor_shared::{MoveOp, Op, OrderKey, Stamp};
    let dir = TempDir::new("equal-keys");
    let mut r = Replica::open(&dir.0.join("r.db")).unwrap();
    let mut other = Replica::open(&dir.0.join("o.db")).unwrap();
    let key = OrderKey::new(&[0x80, 0x10]).unwrap();
    let (a, b, c) = (NodeId(0xa), NodeId(0xb), NodeId(0xc));
    // Three siblings share one key (sorted by id), one more above them.
    let remote: Vec<SeqOp> = [(a, 1), (b, 2), (c, 3)]
        .into_iter()
        .map(|(node, i)| {
            SeqOp::new(
                i,
                Op::Move(MoveOp {
                    stamp: Stamp::new(i << 16, 0x99),
                    known_seq: 0,
                    node,
                    parent: NodeId::ROOT,
                    key: key.clone(),
                }),
            )
        })
        .chain(std::iter::once(SeqOp::new(
            4,
            Op::Move(MoveOp {
                stamp: Stamp::new(4 << 16, 0x99),
                known_seq: 0,
                node: NodeId(0xd),
                parent: NodeId::ROOT,
                key: OrderKey::new(&[0x80, 0x20]).unwrap(),
            }),
        )))
        .collect();
    r.apply_remote(&remote).unwrap();
    other.apply_remote(&remote).unwrap();
    assert_eq!(kids(&r, NodeId::ROOT), [a, b, c, NodeId(0xd)]);
    let x = r.create(NodeId::ROOT, Position::After(a)).unwrap();
    assert_eq!(kids(&r, NodeId::ROOT), [a, x, b, c, NodeId(0xd)]);
    let y = r.create(NodeId::ROOT, Position::Before(a)).unwrap();
    assert_eq!(kids(&r, NodeId::ROOT), [y, a, x, b, c, NodeId(0xd)]);
    // Moving an existing node into such a gap works too.
    r.move_node(NodeId(0xd), NodeId::ROOT, Position::Before(c))
        .unwrap();
    r.check_invariants().unwrap();
    let order = kids(&r, NodeId::ROOT);
    assert_eq!(order, [y, a, x, b, NodeId(0xd), c]);
    // Another replica that receives the ops (re-keys included) agrees.
    let ops: Vec<SeqOp> = r
        .outbox(usize::MAX)
        .unwrap()
        .into_iter()
        .enumerate()
        .map(|(i, op)| SeqOp::new(5 + i as u64, op))
        .collect();
    other.apply_remote(&ops).unwrap();
    other.check_invariants().unwrap();
    assert_eq!(kids(&other, NodeId::ROOT), order);
}

#[test]
fn creating_directly_under_trash_is_refused_and_emits_nothing() {
    let dir = TempDir::new("trash-create");
    let mut r = Replica::open(&dir.0.join("r.db")).unwrap();
    let before = r.outbox_len().unwrap();
    assert!(matches!(
        r.create(NodeId::TRASH, Position::Last),
        Err(ReplicaError::Reserved(p)) if p == NodeId::TRASH
    ));
    assert_eq!(r.outbox_len().unwrap(), before);
    assert!(kids(&r, NodeId::TRASH).is_empty());
}

/// A replica file whose parent links were edited into a loop: every walk
/// stops with `ReplicaError::Corrupt` instead of looping, and nothing
/// changes.
#[test]
fn a_damaged_file_with_a_cycle_is_reported_not_looped_over() {
    let dir = TempDir::new("cycle");
    let mut r = Replica::open(&dir.0.join("r.db")).unwrap();
    let a = r.create(NodeId::ROOT, Position::Last).unwrap();
    let b = r.create(a, Position::Last).unwrap();
    let other = r.create(NodeId::ROOT, Position::Last).unwrap();
    let child = r.create(other, Position::Last).unwrap();
    // a's parent becomes b: a -> b -> a.
    r.connection()
        .execute(
            "UPDATE nodes SET parent = ?1 WHERE id = ?2",
            rusqlite::params![b.to_bytes().to_vec(), a.to_bytes().to_vec()],
        )
        .unwrap();
    let corrupt = |e: ReplicaError| matches!(e, ReplicaError::Corrupt(_));
    assert!(corrupt(r.ancestors(b).unwrap_err()));
    assert!(corrupt(r.is_deleted(a).unwrap_err()));
    assert!(corrupt(r.walk(a, |_, _| true).unwrap_err()));
    let outbox = r.outbox_len().unwrap();
    assert!(corrupt(r.move_node(other, a, Position::Last).unwrap_err()));
    assert_eq!(r.outbox_len().unwrap(), outbox, "an op was queued");
    assert_eq!(r.parent(child).unwrap(), Some(other));
}

#[test]
fn the_ancestor_query_answers_as_the_walk_does_below_and_past_its_depth() {
    use arbor_client::store::SqliteStore;
    use arbor_shared::{TreeStore as _, walk_is_ancestor};

    let dir = TempDir::new("ancestors");
    let mut r = Replica::open(&dir.0.join("r.db")).unwrap();
    // A chain past the query's 4,096 levels, a branch off it, and a node
    // in TRASH.
    let mut chain = vec![NodeId::ROOT];
    for _ in 0..4_200 {
        let parent = *chain.last().unwrap();
        chain.push(r.create(parent, Position::Last).unwrap());
    }
    let branch = r.create(chain[10], Position::Last).unwrap();
    let trashed = r.create(chain[3], Position::Last).unwrap();
    r.delete(trashed).unwrap();
    let store = SqliteStore::new(r.connection());
    let mut nodes = vec![NodeId::TRASH, branch, trashed, NodeId::from_random_bits(9)];
    nodes.extend([0, 1, 2, 10, 11, 500, 4_095, 4_096, 4_097, 4_199, 4_200].map(|i| chain[i]));
    for &a in &nodes {
        for &b in &nodes {
            assert_eq!(
                store.is_ancestor(a, b).unwrap(),
                walk_is_ancestor(&store, a, b).unwrap(),
                "is {a} an ancestor of {b}"
            );
        }
    }
    assert_eq!(
        store.is_ancestor(NodeId::ROOT, chain[4_200]).unwrap(),
        Some(true)
    );
    assert_eq!(
        store.is_ancestor(chain[4_200], NodeId::ROOT).unwrap(),
        Some(false)
    );
    assert_eq!(
        store.is_ancestor(NodeId::TRASH, trashed).unwrap(),
        Some(true)
    );
    assert!(matches!(
        r.move_node(chain[1], chain[4_200], Position::Last),
        Err(ReplicaError::Cycle { .. })
    ));
    r.check_invariants().unwrap();
}
