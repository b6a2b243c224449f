//! The restore rule: a delete only removes what its author had seen.

use arbor_shared::{MoveOp, NodeId, Op, ReplicaId};
use arbor_sync_server::db::{Committed, Db, Origin};

use crate::harness::*;

const A: u64 = 1;
const B: u64 = 2;
const C: u64 = 3;
const ROOT: NodeId = NodeId::ROOT;
const TRASH: NodeId = NodeId::TRASH;

struct Scene {
    db: Db,
    reference: MemTree,
    t: u64,
}

impl Scene {
    async fn new() -> Scene {
        let db = test_db().await;
        db.create_space("s").await.unwrap();
        Scene {
            db,
            reference: tree(),
            t: now_ms() << 16,
        }
    }

    /// Stamp `i` steps after the scene's start.
    fn at(&self, i: u64) -> u64 {
        self.t + i
    }

    async fn push(&mut self, ops: &[Op]) -> Vec<Committed> {
        let got = self.db.apply("s", None, ops).await.unwrap();
        check_same(&self.db, "s", &mut self.reference, &got).await;
        got
    }

    fn parent(&self, node: NodeId) -> Option<NodeId> {
        self.reference.parent(node).unwrap()
    }

    async fn head(&self) -> u64 {
        self.db.space("s").await.unwrap().unwrap().head_seq
    }

    /// Re-pushes ops one by one and all together: only duplicates, no seq,
    /// no restore.
    async fn repush(&mut self, ops: &[Op]) {
        let head = self.head().await;
        for op in ops {
            let got = self.push(std::slice::from_ref(op)).await;
            assert!(got.iter().all(|c| c.origin == Origin::Duplicate), "{got:?}");
        }
        let got = self.push(ops).await;
        assert!(got.iter().all(|c| c.origin == Origin::Duplicate), "{got:?}");
        assert_eq!(self.head().await, head);
    }
}

fn restores(got: &[Committed]) -> Vec<MoveOp> {
    got.iter()
        .filter(|c| c.origin == Origin::Restore)
        .map(|c| match &c.op {
            Op::Move(m) => {
                assert_eq!(m.stamp.replica, ReplicaId::SERVER);
                m.clone()
            }
            Op::Set(_) => panic!("a restore is a move"),
        })
        .collect()
}

/// ROOT -> x; B deletes x knowing seq 1; A adds c under x knowing seq 1.
async fn delete_vs_add(delete_first: bool, add_stamp_before_delete: bool) {
    let mut s = Scene::new().await;
    let (x, c) = (n(1), n(2));
    s.push(&[mv(s.at(0), A, x, ROOT, &[0x80], 0)]).await;
    let delete = mv(s.at(10), B, x, TRASH, &[0x80], 1);
    let add_at = if add_stamp_before_delete { 5 } else { 20 };
    let add = mv(s.at(add_at), A, c, x, &[0x80], 1);
    let (first, second) = if delete_first {
        (&delete, &add)
    } else {
        (&add, &delete)
    };
    let got1 = s.push(std::slice::from_ref(first)).await;
    assert!(restores(&got1).is_empty());
    let got2 = s.push(std::slice::from_ref(second)).await;
    let r = restores(&got2);
    assert_eq!(r.len(), 1, "{got2:?}");
    assert_eq!(
        (r[0].node, r[0].parent, r[0].key.as_bytes()),
        (x, ROOT, &[0x80u8][..])
    );
    assert_eq!(s.parent(x), Some(ROOT));
    assert_eq!(s.parent(c), Some(x));
    s.repush(&[delete, add]).await;
    assert_eq!(s.parent(x), Some(ROOT));
}

#[tokio::test]
async fn delete_then_concurrent_add_restores() {
    delete_vs_add(true, false).await;
    delete_vs_add(true, true).await;
}

#[tokio::test]
async fn add_then_concurrent_delete_restores() {
    delete_vs_add(false, false).await;
    delete_vs_add(false, true).await;
}

#[tokio::test]
async fn delete_that_saw_the_add_does_not_restore() {
    let mut s = Scene::new().await;
    let (x, c) = (n(1), n(2));
    s.push(&[mv(s.at(0), A, x, ROOT, &[0x80], 0)]).await;
    let add = mv(s.at(1), A, c, x, &[0x80], 1);
    s.push(std::slice::from_ref(&add)).await;
    // B had applied seq 2 (the add) when it deleted x.
    let delete = mv(s.at(2), B, x, TRASH, &[0x80], 2);
    let got = s.push(std::slice::from_ref(&delete)).await;
    assert!(restores(&got).is_empty());
    assert_eq!(s.parent(x), Some(TRASH));
    s.repush(&[add, delete]).await;
    assert_eq!(s.parent(x), Some(TRASH));
}

/// ROOT -> x -> y -> z; B deletes y, C deletes x, A (concurrently) adds w
/// under z: y is restored into x, and x, itself deleted concurrently, into
/// ROOT. Both arrival orders.
async fn nested(write_first: bool) {
    let mut s = Scene::new().await;
    let (x, y, z, w) = (n(1), n(2), n(3), n(4));
    s.push(&[
        mv(s.at(0), A, x, ROOT, &[0x80], 0),
        mv(s.at(1), A, y, x, &[0x81], 0),
        mv(s.at(2), A, z, y, &[0x82], 0),
    ])
    .await;
    let del_y = mv(s.at(10), B, y, TRASH, &[0x80], 3);
    let del_x = mv(s.at(11), C, x, TRASH, &[0x80], 3);
    let add = mv(s.at(12), A, w, z, &[0x80], 3);
    let got = if write_first {
        s.push(std::slice::from_ref(&add)).await;
        let mut got = s.push(std::slice::from_ref(&del_y)).await;
        got.extend(s.push(std::slice::from_ref(&del_x)).await);
        got
    } else {
        s.push(&[del_y.clone(), del_x.clone()]).await;
        s.push(std::slice::from_ref(&add)).await
    };
    let r = restores(&got);
    assert_eq!(r.len(), 2, "{got:?}");
    assert_eq!(s.parent(x), Some(ROOT));
    assert_eq!(s.parent(y), Some(x));
    assert_eq!(s.parent(z), Some(y));
    assert_eq!(s.parent(w), Some(z));
    s.repush(&[del_y, del_x, add]).await;
    assert_eq!(s.parent(x), Some(ROOT));
}

#[tokio::test]
async fn nested_deletes_restore_upward() {
    nested(false).await;
    nested(true).await;
}

#[tokio::test]
async fn set_and_reorder_inside_count_as_writes() {
    // A set on a node inside x.
    let mut s = Scene::new().await;
    let (x, y, y2) = (n(1), n(2), n(3));
    s.push(&[
        mv(s.at(0), A, x, ROOT, &[0x80], 0),
        mv(s.at(1), A, y, x, &[0x80], 0),
        mv(s.at(2), A, y2, x, &[0x90], 0),
    ])
    .await;
    s.push(&[mv(s.at(10), B, x, TRASH, &[0x80], 3)]).await;
    let got = s
        .push(&[set(s.at(11), A, y, "text", Some("kept"), 3)])
        .await;
    assert_eq!(restores(&got).len(), 1);
    assert_eq!(s.parent(x), Some(ROOT));

    // A reorder of y inside x.
    let mut s = Scene::new().await;
    s.push(&[
        mv(s.at(0), A, x, ROOT, &[0x80], 0),
        mv(s.at(1), A, y, x, &[0x80], 0),
        mv(s.at(2), A, y2, x, &[0x90], 0),
    ])
    .await;
    s.push(&[mv(s.at(10), B, x, TRASH, &[0x80], 3)]).await;
    let got = s.push(&[mv(s.at(11), A, y, x, &[0xa0], 3)]).await;
    assert_eq!(restores(&got).len(), 1);
    assert_eq!(s.parent(x), Some(ROOT));
}

#[tokio::test]
async fn moving_out_deleting_inside_and_own_deletes_do_not_restore() {
    let (x, y, z) = (n(1), n(2), n(3));
    let setup = |s: &Scene| {
        vec![
            mv(s.at(0), A, x, ROOT, &[0x80], 0),
            mv(s.at(1), A, y, x, &[0x80], 0),
            mv(s.at(2), A, z, x, &[0x90], 0),
        ]
    };
    // Moving a node out of x's subtree loses nothing.
    let mut s = Scene::new().await;
    s.push(&setup(&s)).await;
    s.push(&[mv(s.at(10), B, x, TRASH, &[0x80], 3)]).await;
    let got = s.push(&[mv(s.at(11), A, y, ROOT, &[0x70], 3)]).await;
    assert!(restores(&got).is_empty());
    assert_eq!(s.parent(x), Some(TRASH));
    assert_eq!(s.parent(y), Some(ROOT));

    // A concurrent delete inside x is not a write that needs x back.
    let mut s = Scene::new().await;
    s.push(&setup(&s)).await;
    s.push(&[mv(s.at(10), B, x, TRASH, &[0x80], 3)]).await;
    let got = s.push(&[mv(s.at(11), A, y, TRASH, &[0x80], 3)]).await;
    assert!(restores(&got).is_empty());
    assert_eq!(s.parent(x), Some(TRASH));

    // One author's own batch: add under x, then delete x.
    let mut s = Scene::new().await;
    s.push(&setup(&s)).await;
    let got = s
        .push(&[
            mv(s.at(10), C, n(9), x, &[0x80], 3),
            mv(s.at(11), C, x, TRASH, &[0x80], 3),
        ])
        .await;
    assert!(restores(&got).is_empty());
    assert_eq!(s.parent(x), Some(TRASH));
}

#[tokio::test]
async fn restore_that_would_cycle_goes_to_the_end_of_root() {
    // ROOT -> p -> x -> c, and q under ROOT with the highest key.
    let mut s = Scene::new().await;
    let (p, x, c, q) = (n(1), n(2), n(3), n(4));
    s.push(&[
        mv(s.at(0), A, p, ROOT, &[0x80], 0),
        mv(s.at(1), A, x, p, &[0x80], 0),
        mv(s.at(2), A, c, x, &[0x80], 0),
        mv(s.at(3), A, q, ROOT, &[0xff, 0x10], 0),
    ])
    .await;
    s.push(&[mv(s.at(10), B, x, TRASH, &[0x80], 4)]).await;
    // A, not knowing the delete, moves p under c (inside x): x's old parent
    // is now inside x, so x goes back to the end of ROOT's children.
    let got = s.push(&[mv(s.at(11), A, p, c, &[0x80], 4)]).await;
    let r = restores(&got);
    assert_eq!(r.len(), 1, "{got:?}");
    assert_eq!(r[0].parent, ROOT);
    assert!(r[0].key.as_bytes() > &[0xff, 0x10][..]);
    assert_eq!(s.parent(x), Some(ROOT));
    assert_eq!(s.parent(p), Some(c));
    let last = s.reference.last_child(ROOT).unwrap().unwrap();
    assert_eq!(last.id, x);
}

#[tokio::test]
async fn restore_is_idempotent_across_later_writes() {
    let mut s = Scene::new().await;
    let (x, c, d) = (n(1), n(2), n(3));
    s.push(&[mv(s.at(0), A, x, ROOT, &[0x80], 0)]).await;
    s.push(&[mv(s.at(10), B, x, TRASH, &[0x80], 1)]).await;
    let got = s.push(&[mv(s.at(11), A, c, x, &[0x80], 1)]).await;
    let r = restores(&got);
    assert_eq!(r.len(), 1);
    // B deletes x again, having seen the restore (so its clock is past the
    // restore's stamp): that delete stands, a write that saw it does not
    // restore, and a write that did not see it restores again (new cause).
    let after = r[0].stamp.hlc.0;
    let head = s.head().await;
    s.push(&[mv(after + 1, B, x, TRASH, &[0x80], head)]).await;
    let got = s.push(&[mv(after + 2, A, d, x, &[0x90], head + 1)]).await;
    assert!(restores(&got).is_empty());
    assert_eq!(s.parent(x), Some(TRASH));
    let got = s
        .push(&[set(after + 3, C, c, "text", Some("hi"), head)])
        .await;
    assert_eq!(restores(&got).len(), 1);
    assert_eq!(s.parent(x), Some(ROOT));
    let client = s.db.client().await.unwrap();
    let n: i64 = client
        .query_one("SELECT count(*) FROM restores", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 2);
}

#[tokio::test]
async fn restores_reach_a_fixpoint_whatever_the_batching() {
    // ROOT -> y -> x -> z. D2 deletes y (R2, knew 3), D deletes x (R1,
    // knew 4). One batch holds two writes to z: W1 (R3, knew 4) is
    // concurrent with D only, W2 (R4, knew 3) with both. x comes back for
    // either, and y for W2, even though x was still in the trash when D2
    // was first looked at.
    let mut s = Scene::new().await;
    let (y, x, z) = (n(1), n(2), n(3));
    s.push(&[
        mv(s.at(0), A, y, ROOT, &[0x80], 0),
        mv(s.at(1), A, x, y, &[0x80], 0),
        mv(s.at(2), A, z, x, &[0x80], 0),
    ])
    .await;
    s.push(&[mv(s.at(10), 12, y, TRASH, &[0x80], 3)]).await;
    s.push(&[mv(s.at(11), 11, x, TRASH, &[0x80], 4)]).await;
    let got = s
        .push(&[
            set(s.at(12), 13, z, "text", Some("w1"), 4),
            set(s.at(13), 14, z, "done", Some("w2"), 3),
        ])
        .await;
    assert_eq!(restores(&got).len(), 2, "{got:?}");
    assert_eq!(s.parent(y), Some(ROOT));
    assert_eq!(s.parent(x), Some(y));
}

#[tokio::test]
async fn a_chain_under_a_node_whose_create_is_late_resolves_when_it_arrives() {
    // A creates X under ROOT (h1) and, later, moves X under P (h5). B, who
    // saw the create, adds K under X (h3) and moves P under K (h4). The
    // server gets everything but the create first: the move at h5 acts as
    // X's create, and is then a cycle (P is under K under X), so K and P
    // hang under X, which is not in the tree, exactly as in the core. The
    // create arrives and everything lands in the tree.
    let mut s = Scene::new().await;
    let (p, x, k) = (n(1), n(2), n(3));
    s.push(&[mv(s.at(0), A, p, ROOT, &[0x80], 0)]).await;
    let create_x = mv(s.at(1), A, x, ROOT, &[0x90], 1);
    s.push(&[mv(s.at(5), A, x, p, &[0x80], 1)]).await;
    s.push(&[mv(s.at(3), B, k, x, &[0x80], 1)]).await;
    s.push(&[mv(s.at(4), B, p, k, &[0x80], 1)]).await;
    assert!(!s.reference.contains(x).unwrap());
    assert_eq!(s.parent(k), Some(x));
    s.push(std::slice::from_ref(&create_x)).await;
    assert_eq!(s.parent(x), Some(ROOT));
    assert_eq!(s.parent(k), Some(x));
    assert_eq!(s.parent(p), Some(k));
}

#[tokio::test]
async fn a_delete_from_a_long_offline_replica_still_restores() {
    // B deleted x knowing only seq 2; 2,500 ops later (a long window: the
    // subtree scan) A's concurrent add under x arrives first, then the
    // delete.
    let mut s = Scene::new().await;
    let (x, c, other) = (n(1), n(2), n(3));
    s.push(&[
        mv(s.at(0), A, x, ROOT, &[0x80], 0),
        mv(s.at(1), A, other, ROOT, &[0x90], 0),
    ])
    .await;
    let filler: Vec<_> = (0..2_500u64)
        .map(|i| set(s.at(10 + i), C, other, "text", Some("busy"), 2 + i))
        .collect();
    s.push(&filler).await;
    let add = mv(s.at(3_000), A, c, x, &[0x80], 2);
    s.push(std::slice::from_ref(&add)).await;
    let got = s.push(&[mv(s.at(3_001), B, x, TRASH, &[0x80], 2)]).await;
    assert_eq!(restores(&got).len(), 1, "{got:?}");
    assert_eq!(s.parent(x), Some(ROOT));
    assert_eq!(s.parent(c), Some(x));
}

#[tokio::test]
async fn a_backlog_push_walks_once_per_write_not_once_per_delete() {
    // C deleted 200 nodes; then A pushes a backlog of 100 writes it made
    // before seeing any of those deletes (known_seq 1), none of them in a
    // deleted subtree. Every delete is concurrent with every write, yet the
    // restore pass may walk up only from each write's target once: the
    // trash roots name the candidate deletes. (Walking up from every write
    // once per delete, 20,000 walks, stalled the 30-minute fault soak.)
    let name = test_db_name().await;
    let cluster = arbor_testkit::PgCluster::shared();
    let admin = cluster.connect(&name).await.unwrap();
    admin
        .batch_execute(&format!("ALTER DATABASE {name} SET track_functions = 'pl'"))
        .await
        .unwrap();
    // One connection: the counters read below are the applying session's.
    let db = Db::new(cluster.config(&name), 1).unwrap();
    db.create_space("s").await.unwrap();
    let t = now_ms() << 16;
    let x = n(1);
    let deleted: Vec<NodeId> = (0..200u128).map(|i| n(100 + i)).collect();
    let mut setup = vec![mv(t, A, x, ROOT, &[0x80], 0)];
    for (i, d) in deleted.iter().enumerate() {
        setup.push(mv(t + 1 + i as u64, C, *d, ROOT, &[0x80], 1));
    }
    db.apply("s", None, &setup).await.unwrap();
    let deletes: Vec<Op> = deleted
        .iter()
        .enumerate()
        .map(|(i, d)| mv(t + 1_000 + i as u64, C, *d, TRASH, &[0x80], 201))
        .collect();
    db.apply("s", None, &deletes).await.unwrap();
    let backlog: Vec<Op> = (0..100u64)
        .map(|i| set(t + 500 + i, A, x, "text", Some("offline"), 1))
        .collect();
    let walks = || async {
        let c = db.client().await.unwrap();
        // Flush this session's pending counters, then read them.
        c.batch_execute("SELECT pg_stat_force_next_flush()")
            .await
            .unwrap();
        c.query_opt(
            "SELECT calls FROM pg_stat_user_functions WHERE funcname = 'arbor_trash_root'",
            &[],
        )
        .await
        .unwrap()
        .map_or(0, |r| r.get::<_, i64>(0))
    };
    let before = walks().await;
    let got = db.apply("s", None, &backlog).await.unwrap();
    assert!(restores(&got).is_empty(), "{got:?}");
    let walked = walks().await - before;
    assert!(
        (1..=150).contains(&walked),
        "{walked} trash-root walks for 100 writes and 200 concurrent deletes"
    );
}

/// Every order of `ops`' indexes (Heap's algorithm).
fn orders(n: usize) -> Vec<Vec<usize>> {
    fn heap(k: usize, a: &mut Vec<usize>, out: &mut Vec<Vec<usize>>) {
        if k <= 1 {
            out.push(a.clone());
            return;
        }
        for i in 0..k {
            heap(k - 1, a, out);
            let j = if k % 2 == 0 { i } else { 0 };
            a.swap(j, k - 1);
        }
    }
    let mut out = Vec::new();
    heap(n, &mut (0..n).collect(), &mut out);
    out
}

/// ROOT -> f -> (q, p); B and C delete p concurrently, A (unaware of both)
/// adds c under p. Every arrival order, with the add stamped before, between
/// and after the deletes: p comes back under f at its old key, once.
#[tokio::test]
async fn two_concurrent_deletes_restore_to_the_place_before_the_first_in_every_order() {
    let (f, q, p, c) = (n(1), n(2), n(3), n(4));
    for add_at in [5, 15, 25] {
        let mut finals = Vec::new();
        for order in orders(3) {
            let mut s = Scene::new().await;
            s.push(&[
                mv(s.at(0), A, f, ROOT, &[0x80], 0),
                mv(s.at(1), A, q, f, &[0x80], 0),
                mv(s.at(2), A, p, f, &[0x90], 0),
            ])
            .await;
            let ops = [
                mv(s.at(10), B, p, TRASH, &[0x80], 3),
                mv(s.at(20), C, p, TRASH, &[0x81], 3),
                mv(s.at(add_at), A, c, p, &[0x80], 3),
            ];
            let mut restored = Vec::new();
            for &i in &order {
                let got = s.push(std::slice::from_ref(&ops[i])).await;
                restored.extend(restores(&got));
            }
            let ctx = format!("add at {add_at}, order {order:?}");
            assert_eq!(restored.len(), 1, "{ctx}: {restored:?}");
            assert_eq!(
                (
                    restored[0].node,
                    restored[0].parent,
                    restored[0].key.as_bytes()
                ),
                (p, f, &[0x90u8][..]),
                "{ctx}"
            );
            assert_eq!(s.parent(p), Some(f), "{ctx}");
            assert_eq!(s.parent(c), Some(p), "{ctx}");
            s.repush(&ops).await;
            finals.push((ctx, s.db.state("s").await.unwrap()));
        }
        for (ctx, state) in &finals[1..] {
            assert_eq!(state, &finals[0].1, "{ctx} differs from {}", finals[0].0);
        }
    }
}

/// The writer had seen the first delete: it added under a node it knew was
/// deleted, and the second delete removed nothing more. No restore.
#[tokio::test]
async fn a_write_that_saw_the_first_of_two_deletes_does_not_restore() {
    let mut s = Scene::new().await;
    let (f, p, c) = (n(1), n(2), n(3));
    s.push(&[
        mv(s.at(0), A, f, ROOT, &[0x80], 0),
        mv(s.at(1), A, p, f, &[0x80], 0),
    ])
    .await;
    s.push(&[mv(s.at(10), B, p, TRASH, &[0x80], 2)]).await;
    let got = s.push(&[mv(s.at(15), A, c, p, &[0x80], 3)]).await;
    assert!(restores(&got).is_empty(), "{got:?}");
    let got = s.push(&[mv(s.at(20), C, p, TRASH, &[0x81], 2)]).await;
    assert!(restores(&got).is_empty(), "{got:?}");
    assert_eq!(s.parent(p), Some(TRASH));
}

/// A set that lost to a newer value the deleter had seen changed nothing
/// the deleter did not know: arriving late, it restores nothing. A late set
/// that wins (newer than every value the deleter saw) still restores.
#[tokio::test]
async fn a_late_set_that_lost_to_a_value_the_deleter_saw_does_not_restore() {
    let x = n(1);
    for (late_at, restores_x) in [(5, false), (25, true)] {
        let mut s = Scene::new().await;
        s.push(&[mv(s.at(0), A, x, ROOT, &[0x80], 0)]).await;
        // B's value (seq 2) is seen by C's delete (seq 3).
        s.push(&[set(s.at(20), B, x, "text", Some("b"), 1)]).await;
        s.push(&[mv(s.at(30), C, x, TRASH, &[0x80], 2)]).await;
        // A's set, made knowing only seq 1, arrives last.
        let got = s
            .push(&[set(s.at(late_at), A, x, "text", Some("a"), 1)])
            .await;
        let ctx = format!("late set at {late_at}");
        assert_eq!(
            restores(&got).len(),
            usize::from(restores_x),
            "{ctx}: {got:?}"
        );
        let want = if restores_x { ROOT } else { TRASH };
        assert_eq!(s.parent(x), Some(want), "{ctx}");
    }
    // The same late set restores when the deleter had not seen B's value:
    // B's set is itself a write the deleter did not know.
    let mut s = Scene::new().await;
    s.push(&[mv(s.at(0), A, x, ROOT, &[0x80], 0)]).await;
    s.push(&[mv(s.at(30), C, x, TRASH, &[0x80], 1)]).await;
    let got = s.push(&[set(s.at(20), B, x, "text", Some("b"), 1)]).await;
    assert_eq!(restores(&got).len(), 1, "{got:?}");
}
