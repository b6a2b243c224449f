//! The inspector's reads (`Replica::outbox_entries`, `recent_ops`,
//! `restores`, `last_move`, `size`) against a real server: pending ops
//! show with their effect here (a write that lost, a move skipped as a
//! cycle) and leave once committed; recent ops are the server's log,
//! newest first, with origin and author, in pages; restores are found a
//! bounded window at a time; the move that placed a node is named with its
//! seq and author (from the move log, or below the horizon from the
//! history record); sizes count what the replica holds.

use arbor_client::replica::{RESTORE_SCAN, SIZE_COUNT_CAP};
use arbor_client::{Position, SharedReplica};
use arbor_shared::http::{NodeHistoryBody, OpsBody, Origin};
use arbor_shared::protocol::SeqOp;
use arbor_shared::{NodeId, Op, Place, Stamp};

use crate::harness::*;

/// The server's log after `after`, in seq order (catch-up, as the sync
/// client reads it).
async fn server_log(server: &TestServer, after: u64) -> Vec<SeqOp> {
    let body: OpsBody = server
        .get_json(&format!("/v1/spaces/s/ops?after={after}&limit=10000"))
        .await;
    body.ops
        .into_iter()
        .map(|c| SeqOp {
            seq: c.seq,
            op: c.op,
            origin: c.origin,
            author: c.author,
        })
        .collect()
}

/// A sync that outlasts the server's per-token rate limit: a push of
/// thousands of ops is charged for its database time, and a loaded
/// machine can take it past the limit several times in a row (each
/// refusal says when to retry, which the session waits for).
async fn sync_patiently(server: &TestServer, r: &SharedReplica) {
    let (tx, _rx) = tokio::sync::watch::channel(arbor_client::SyncStatus::default());
    arbor_client::sync_once(r.clone(), server.sync_config("s"), tx, 30)
        .await
        .unwrap();
}

fn cursor(r: &SharedReplica) -> u64 {
    r.lock().unwrap().cursor().unwrap().unwrap_or(0)
}

fn place(r: &SharedReplica, node: NodeId) -> Place {
    r.lock().unwrap().place(node).unwrap().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_shows_each_pending_op_with_its_effect_here() {
    let server = TestServer::start("s").await;
    let dir = TempDir::new("inspect-outbox");
    let (a, b) = (dir.replica("a"), dir.replica("b"));
    sync(&server, &a).await;
    sync(&server, &b).await;
    let (x, y) = {
        let mut r = a.lock().unwrap();
        (
            r.create(NodeId::ROOT, Position::Last).unwrap(),
            r.create(NodeId::ROOT, Position::Last).unwrap(),
        )
    };
    sync(&server, &a).await;
    sync(&server, &b).await;

    // Offline edits of a: each op in the outbox, oldest first, in effect.
    let y_before = place(&a, y);
    let (n, a_set) = {
        let mut r = a.lock().unwrap();
        let n = r
            .create_with(NodeId::ROOT, Position::Last, &[("text", "one")])
            .unwrap();
        r.move_node(y, n, Position::Last).unwrap();
        r.move_node(y, NodeId::ROOT, Position::Last).unwrap();
        r.set(x, "text", Some("a's")).unwrap();
        (n, r.outbox(100).unwrap().last().unwrap().stamp())
    };
    let entries = a.lock().unwrap().outbox_entries(100).unwrap();
    let ops: Vec<Op> = entries.iter().map(|e| e.op.clone()).collect();
    assert_eq!(ops, a.lock().unwrap().outbox(100).unwrap());
    assert_eq!(entries.len(), 5, "create, its field, two moves, a set");
    assert!(
        entries.iter().all(|e| e.applied == Some(true)),
        "{entries:?}"
    );
    // The create came from nowhere; each move from where the one before
    // left the node.
    assert!(matches!(&entries[0].op, Op::Move(m) if m.node == n));
    assert_eq!(entries[0].from, None);
    assert_eq!(entries[2].from, Some(y_before));
    assert_eq!(
        entries[3].from.as_ref().map(|p| p.parent),
        Some(n),
        "{entries:?}"
    );
    assert_eq!(entries[4].from, None, "a set has no place");
    assert_eq!(a.lock().unwrap().outbox_entries(2).unwrap(), entries[..2]);

    // b, which has not seen them: a later write of the same field, and a
    // move of y under x. a, still offline, moves x under y (after b, so
    // its move has the greater stamp and is the one a cycle skips).
    sync(&server, &b).await; // time passes: b's stamps come after a's set
    {
        let mut r = b.lock().unwrap();
        r.set(x, "text", Some("b's")).unwrap();
        r.move_node(y, x, Position::Last).unwrap();
    }
    sync(&server, &b).await;
    a.lock().unwrap().move_node(x, y, Position::Last).unwrap();
    let a_move = a
        .lock()
        .unwrap()
        .outbox(100)
        .unwrap()
        .last()
        .unwrap()
        .stamp();
    // a applies what the server committed without pushing (the catch-up
    // half of a sync): its two ops stay pending, now not in effect.
    let committed = server_log(&server, cursor(&a)).await;
    let b_stamps: Vec<Stamp> = committed.iter().map(|o| o.op.stamp()).collect();
    assert!(
        b_stamps.iter().all(|s| *s > a_set && *s < a_move),
        "b's ops {b_stamps:?} must come after a's set {a_set:?} and before a's move {a_move:?}"
    );
    a.lock().unwrap().apply_remote(&committed).unwrap();
    let entries = a.lock().unwrap().outbox_entries(100).unwrap();
    let by_stamp = |s: Stamp| entries.iter().find(|e| e.op.stamp() == s).unwrap();
    assert_eq!(by_stamp(a_set).applied, Some(false), "b's write won");
    assert_eq!(by_stamp(a_move).applied, Some(false), "skipped: a cycle");
    assert_eq!(by_stamp(a_move).from, None);
    assert_eq!(
        a.lock().unwrap().field(x, "text").unwrap().as_deref(),
        Some("b's")
    );
    assert_eq!(a.lock().unwrap().size().unwrap().outbox, 6);

    // Pushed and committed: the outbox is empty.
    sync(&server, &a).await;
    assert_eq!(a.lock().unwrap().outbox_entries(100).unwrap(), vec![]);
    assert_eq!(a.lock().unwrap().size().unwrap().outbox, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recent_ops_restores_last_move_and_size_match_the_record() {
    let server = TestServer::start("s").await;
    let dir = TempDir::new("inspect-recent");
    let (a, b) = (dir.replica("a"), dir.replica("b"));
    sync(&server, &a).await;
    sync(&server, &b).await;
    let empty = a.lock().unwrap().size().unwrap();
    assert_eq!(empty.nodes.rows, 0);
    assert_eq!(empty.history.rows, 0);
    assert_eq!(empty.history_start, None);

    let (p, q, section, inside) = {
        let mut r = a.lock().unwrap();
        let p = r
            .create_with(NodeId::ROOT, Position::Last, &[("title", "p")])
            .unwrap();
        let q = r.create(NodeId::ROOT, Position::Last).unwrap();
        let section = r.create(NodeId::ROOT, Position::Last).unwrap();
        let inside = r.create(section, Position::Last).unwrap();
        (p, q, section, inside)
    };
    // A move of a's, not acknowledged yet: pending, from where it was.
    let p_before = place(&a, p);
    a.lock().unwrap().move_node(p, q, Position::Last).unwrap();
    let pending = a.lock().unwrap().last_move(p).unwrap().unwrap();
    assert!(pending.pending && pending.in_log);
    assert_eq!((pending.seq, pending.author.clone()), (None, None));
    assert_eq!(pending.from, Some(p_before));
    assert_eq!(pending.parent, q);
    sync(&server, &a).await;
    sync(&server, &b).await;
    // A delete concurrent with an edit inside: the server's restore rule
    // brings the section back.
    a.lock().unwrap().delete(section).unwrap();
    b.lock().unwrap().set(inside, "text", Some("edit")).unwrap();
    for r in [&a, &b, &a, &b] {
        sync(&server, r).await;
    }
    assert_eq!(cursor(&a), cursor(&b));

    // Recent ops: the server's whole log, newest first, with origin and
    // author, and `applied` as a node's history gives it.
    let log = server_log(&server, 0).await;
    let recent = a.lock().unwrap().recent_ops(None, 1_000).unwrap();
    assert_eq!(recent.head_seq, cursor(&a));
    assert_eq!(recent.next_before, None);
    assert_eq!(recent.entries.len(), log.len());
    for (e, c) in recent.entries.iter().zip(log.iter().rev()) {
        assert_eq!(
            (e.seq, &e.op, e.origin, &e.author),
            (c.seq, &c.op, c.origin, &c.author)
        );
        let of_node = a
            .lock()
            .unwrap()
            .history(e.op.node(), Some(e.seq + 1), 1)
            .unwrap();
        assert_eq!(of_node.entries.first(), Some(e));
    }
    // In pages: the same entries.
    let mut paged = Vec::new();
    let mut before = None;
    loop {
        let page: NodeHistoryBody = a.lock().unwrap().recent_ops(before, 3).unwrap();
        assert!(page.entries.len() <= 3);
        paged.extend(page.entries);
        match page.next_before {
            Some(s) => before = Some(s),
            None => break,
        }
    }
    assert_eq!(paged, recent.entries);

    // Restores: the restore rule's moves among them, no author.
    let want: Vec<_> = recent
        .entries
        .iter()
        .filter(|e| e.origin == Origin::Restore)
        .cloned()
        .collect();
    assert!(!want.is_empty(), "the workload makes a restore");
    assert!(want.iter().all(|e| e.author.is_none()));
    let restores = a.lock().unwrap().restores(None, 100).unwrap();
    assert_eq!(restores.entries, want);
    assert_eq!(restores.next_before, None, "the window read every op");

    // The move that put each node where it is.
    let restored = a.lock().unwrap().last_move(section).unwrap().unwrap();
    assert_eq!(restored.origin, Some(Origin::Restore));
    assert_eq!(restored.author, None);
    assert_eq!(restored.seq, Some(want[0].seq));
    assert_eq!(
        restored.from.as_ref().map(|f| f.parent),
        Some(NodeId::TRASH)
    );
    assert!(!restored.pending);
    let moved = a.lock().unwrap().last_move(p).unwrap().unwrap();
    assert!(!moved.pending && moved.in_log);
    assert_eq!(moved.stamp, pending.stamp);
    assert_eq!(moved.author.as_deref(), Some("client-test"));
    assert_eq!(moved.origin, Some(Origin::New));
    let seq = moved.seq.unwrap();
    assert!(matches!(&log[seq as usize - 1].op, Op::Move(m) if m.node == p && m.parent == q));
    for node in [p, q, section, inside] {
        let m = b.lock().unwrap().last_move(node).unwrap().unwrap();
        assert_eq!(
            Place {
                parent: m.parent,
                key: m.key
            },
            place(&b, node),
            "node {node}"
        );
    }
    assert_eq!(
        a.lock()
            .unwrap()
            .last_move(NodeId::from_random_bits(
                0x1234_5678_9abc_def0_1234_5678_9abc_def0
            ))
            .unwrap(),
        None
    );

    // Sizes.
    let size = a.lock().unwrap().size().unwrap();
    assert_eq!(size.nodes.rows, 4);
    assert!(size.nodes.exact);
    assert_eq!(size.fields.rows, 2, "a title and a text");
    assert_eq!(size.history.rows, log.len() as u64);
    assert_eq!(size.history_start, Some(1));
    assert_eq!(
        size.log.rows,
        log.iter().filter(|o| matches!(o.op, Op::Move(_))).count() as u64
    );
    assert_eq!(size.outbox, 0);
    assert_eq!(
        size.conflicts,
        a.lock().unwrap().conflicts(1_000).unwrap().len() as u64
    );
    assert!(size.conflicts >= 1, "the restore is in the conflict list");
    assert_eq!(size.cursor, Some(cursor(&a)));

    // Below the horizon: a's pending edit is stale once the server's
    // horizon passes it; a cold-starts from a snapshot whose log is empty,
    // and the move that placed p is found in the history record.
    a.lock().unwrap().set(q, "text", Some("late")).unwrap();
    server.raise_horizon_to_now("s").await;
    sync(&server, &a).await;
    let size = a.lock().unwrap().size().unwrap();
    assert_eq!(size.log.rows, 0, "the snapshot's log is above its horizon");
    assert!(size.horizon.is_some());
    assert_eq!(size.history_start, Some(1), "the record is kept");
    let below = a.lock().unwrap().last_move(p).unwrap().unwrap();
    assert!(!below.in_log && !below.pending);
    assert_eq!(below.from, None);
    assert_eq!(
        (below.stamp, below.seq, below.author.as_deref()),
        (moved.stamp, moved.seq, Some("client-test"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restores_are_found_a_bounded_window_at_a_time() {
    let server = TestServer::start("s").await;
    let dir = TempDir::new("inspect-restores");
    let (a, b) = (dir.replica("a"), dir.replica("b"));
    sync(&server, &a).await;
    sync(&server, &b).await;
    let (section, inside) = {
        let mut r = a.lock().unwrap();
        let section = r.create(NodeId::ROOT, Position::Last).unwrap();
        (section, r.create(section, Position::Last).unwrap())
    };
    sync(&server, &a).await;
    sync(&server, &b).await;
    a.lock().unwrap().delete(section).unwrap();
    b.lock().unwrap().set(inside, "text", Some("edit")).unwrap();
    for r in [&a, &b, &a] {
        sync(&server, r).await;
    }
    let restore = {
        let r = a.lock().unwrap();
        let found = r.restores(None, 10).unwrap();
        assert_eq!(found.entries.len(), 1);
        found.entries[0].clone()
    };
    // More ops after it than one window holds.
    let small = a.lock().unwrap().size().unwrap();
    {
        let mut r = a.lock().unwrap();
        for i in 0..RESTORE_SCAN {
            r.set(section, "n", Some(&i.to_string())).unwrap();
        }
    }
    sync_patiently(&server, &a).await;
    let r = a.lock().unwrap();
    let size = r.size().unwrap();
    assert!(
        size.database_bytes > small.database_bytes,
        "{} bytes, then {} after {RESTORE_SCAN} more ops",
        small.database_bytes,
        size.database_bytes
    );
    // Past the cap, a count says "more than".
    assert!(small.history.exact);
    assert!(small.history.rows + RESTORE_SCAN as u64 > SIZE_COUNT_CAP);
    assert_eq!(
        (size.history.rows, size.history.exact),
        (SIZE_COUNT_CAP, false)
    );
    assert_eq!((size.nodes.rows, size.nodes.exact), (2, true));
    let first = r.restores(None, 10).unwrap();
    assert_eq!(first.entries, vec![], "the newest window holds only sets");
    let next = first.next_before.expect("older ops remain");
    assert_eq!(next, r.cursor().unwrap().unwrap() + 1 - RESTORE_SCAN as u64);
    let second = r.restores(Some(next), 10).unwrap();
    assert_eq!(second.entries, vec![restore]);
    assert_eq!(second.next_before, None);
}
