//! Sync against a real server on a real socket over real Postgres:
//! replicas editing offline converge with each other and with Postgres;
//! killing the server mid-push or mid-snapshot loses nothing; a replica
//! offline past the horizon re-stamps and converges.

use std::time::Duration;

use arbor_client::{Position, SharedReplica, SyncStatus, sync_forever, sync_once};
use arbor_shared::{NodeId, Stamp};
use arbor_testkit::sql::insert_nodes;
use tokio::sync::watch;

use crate::harness::*;

async fn sync(server: &TestServer, r: &SharedReplica, space: &str) {
    let (tx, _rx) = watch::channel(SyncStatus::default());
    sync_once(r.clone(), server.sync_config(space), tx, 3)
        .await
        .unwrap();
}

/// The replica's tree equals Postgres' `nodes` and `payloads` rows.
async fn assert_matches_server(server: &TestServer, r: &SharedReplica, space: &str) {
    let pg = server.db.state(space).await.unwrap();
    let local = r.lock().unwrap().state().unwrap();
    assert_eq!(local, pg, "replica differs from Postgres");
    r.lock().unwrap().check_invariants().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_offline_replicas_converge_with_postgres() {
    let seed = seed("three_offline_replicas_converge_with_postgres");
    let server = TestServer::start("s").await;
    let dir = TempDir::new("three");
    let (a, b, c) = (dir.replica("a"), dir.replica("b"), dir.replica("c"));
    // A builds the shared starting tree: x, y, z under ROOT.
    let (x, y, z) = {
        let mut r = a.lock().unwrap();
        let x = r
            .create_with(NodeId::ROOT, Position::Last, &[("text", "x")])
            .unwrap();
        let y = r
            .create_with(NodeId::ROOT, Position::Last, &[("text", "y")])
            .unwrap();
        let z = r
            .create_with(NodeId::ROOT, Position::Last, &[("text", "z")])
            .unwrap();
        (x, y, z)
    };
    for r in [&a, &b, &c] {
        sync(&server, r, "s").await;
    }
    assert_eq!(
        b.lock().unwrap().state().unwrap(),
        a.lock().unwrap().state().unwrap()
    );

    // Offline, concurrently: A moves x under y, B moves y under x (together
    // a cycle); C deletes z while A adds a child to z; all three set the
    // same field of x.
    a.lock().unwrap().move_node(x, y, Position::Last).unwrap();
    b.lock().unwrap().move_node(y, x, Position::Last).unwrap();
    c.lock().unwrap().delete(z).unwrap();
    let child = a
        .lock()
        .unwrap()
        .create_with(z, Position::Last, &[("text", "child of z")])
        .unwrap();
    for (r, v) in [(&a, "from a"), (&b, "from b"), (&c, "from c")] {
        r.lock().unwrap().set(x, "text", Some(v)).unwrap();
    }

    // Reconnect in a seeded random order, twice round.
    let mut order = [0usize, 1, 2];
    let mut s = seed;
    for i in (1..3).rev() {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        order.swap(i, (s >> 33) as usize % (i + 1));
    }
    let replicas = [&a, &b, &c];
    for _ in 0..2 {
        for &i in &order {
            sync(&server, replicas[i], "s").await;
        }
    }
    for r in replicas {
        assert_matches_server(&server, r, "s").await;
    }
    let r = a.lock().unwrap();
    // No cycle (checked), one of the two moves won; z came back from the
    // trash (the restore rule) with its new child.
    assert!(!r.is_deleted(z).unwrap(), "z should be restored");
    assert_eq!(r.parent(child).unwrap(), Some(z));
    let x_parent = r.parent(x).unwrap();
    let y_parent = r.parent(y).unwrap();
    assert!(
        (x_parent == Some(y)) != (y_parent == Some(x)),
        "exactly one of the cycle's moves applies"
    );
}

/// B and C delete p (in folder f) while A, unaware of both, adds a child
/// under p. Whatever order the three reconnect in, every replica ends with
/// p back in f at its old place, its new child under it, equal to Postgres.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_deletes_and_an_add_converge_to_the_folder_in_every_order() {
    let server = TestServer::start("s").await;
    let orders = [
        [0usize, 1, 2],
        [0, 2, 1],
        [1, 0, 2],
        [1, 2, 0],
        [2, 0, 1],
        [2, 1, 0],
    ];
    for (i, order) in orders.into_iter().enumerate() {
        let space = format!("o{i}");
        server.db.create_space(&space).await.unwrap();
        let dir = TempDir::new("two-deletes");
        let (a, b, c) = (dir.replica("a"), dir.replica("b"), dir.replica("c"));
        let (f, p) = {
            let mut r = a.lock().unwrap();
            let f = r.create(NodeId::ROOT, Position::Last).unwrap();
            r.create(f, Position::Last).unwrap();
            let p = r.create(f, Position::Last).unwrap();
            (f, p)
        };
        for r in [&a, &b, &c] {
            sync(&server, r, &space).await;
        }
        let before = a.lock().unwrap().place(p).unwrap();
        b.lock().unwrap().delete(p).unwrap();
        c.lock().unwrap().delete(p).unwrap();
        let child = a.lock().unwrap().create(p, Position::Last).unwrap();
        let replicas = [&b, &c, &a];
        for _ in 0..2 {
            for &k in &order {
                sync(&server, replicas[k], &space).await;
            }
        }
        for r in [&a, &b, &c] {
            assert_matches_server(&server, r, &space).await;
            let r = r.lock().unwrap();
            assert_eq!(r.place(p).unwrap(), before, "order {order:?}");
            assert_eq!(r.parent(child).unwrap(), Some(p), "order {order:?}");
            assert_eq!(r.parent(p).unwrap(), Some(f));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_server_mid_push_loses_nothing_acknowledged() {
    let mut server = TestServer::start("s").await;
    let dir = TempDir::new("killpush");
    let r = dir.replica("r");
    {
        let mut g = r.lock().unwrap();
        let mut parent = NodeId::ROOT;
        for i in 0..3_000 {
            let n = g
                .create_with(parent, Position::Last, &[("text", &format!("{i}"))])
                .unwrap();
            if i % 100 == 0 {
                parent = n;
            }
        }
    }
    let mut config = server.sync_config("s");
    config.batch_ops = 50;
    config.max_inflight = 2;
    let (tx, mut rx) = watch::channel(SyncStatus::default());
    let task = tokio::spawn(sync_forever(r.clone(), config, tx, std::future::pending()));
    // Some pushes committed, more to go: kill.
    wait_for(&mut rx, "first acks", |s| s.outbox > 0 && s.outbox < 5_500).await;
    server.kill().await;
    let left = r.lock().unwrap().outbox_len().unwrap();
    assert!(left > 0, "the push finished before the kill");
    wait_for(&mut rx, "offline", |s| {
        matches!(s.state, arbor_client::SyncState::Offline { .. })
    })
    .await;
    server.restart().await;
    wait_for(&mut rx, "live again", is_live).await;
    task.abort();
    assert_eq!(r.lock().unwrap().outbox_len().unwrap(), 0);
    assert_eq!(server.db.state("s").await.unwrap().nodes.len(), 3_000);
    assert_matches_server(&server, &r, "s").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_server_mid_snapshot_rolls_back_then_resumes() {
    let mut server = TestServer::start("s").await;
    let dir = TempDir::new("killsnap");
    // 300,000 nodes written straight into the tables: far more than the
    // socket buffers hold, so the kill lands mid-stream.
    let sql = arbor_testkit::PgCluster::shared()
        .connect(&server.db_name)
        .await
        .unwrap();
    let payloads = "INSERT INTO payloads (space, node, field, value, hlc, replica)
           SELECT s.id, md5(i::text)::uuid, 'text', 'node ' || i, i, 1
           FROM spaces s, generate_series(1, 300000) i WHERE s.name = 's';";
    sql.batch_execute(&format!("{}\n{payloads}", insert_nodes("s", 300_000)))
        .await
        .unwrap();
    let fresh = dir.replica("fresh");
    let (tx, mut rx) = watch::channel(SyncStatus::default());
    let task = tokio::spawn(sync_forever(
        fresh.clone(),
        server.sync_config("s"),
        tx,
        std::future::pending(),
    ));
    wait_for(
        &mut rx,
        "cold start under way",
        |s| matches!(s.state, arbor_client::SyncState::ColdStart(p) if p.rows > 1_000),
    )
    .await;
    server.kill().await;
    wait_for(&mut rx, "offline", |s| {
        matches!(s.state, arbor_client::SyncState::Offline { .. })
    })
    .await;
    {
        // Rolled back: nothing of the half-loaded snapshot is visible.
        let g = fresh.lock().unwrap();
        assert_eq!(g.node_count().unwrap(), 0);
        assert_eq!(g.cursor().unwrap(), None);
    }
    server.restart().await;
    wait_for(&mut rx, "live after the resumed cold start", is_live).await;
    task.abort();
    assert_matches_server(&server, &fresh, "s").await;
    assert_eq!(fresh.lock().unwrap().node_count().unwrap(), 300_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_offline_past_the_horizon_restamps_and_converges() {
    let server = TestServer::start("s").await;
    let dir = TempDir::new("horizon");
    let (a, b) = (dir.replica("a"), dir.replica("b"));
    let x = a
        .lock()
        .unwrap()
        .create_with(NodeId::ROOT, Position::Last, &[("text", "x")])
        .unwrap();
    sync(&server, &a, "s").await;
    sync(&server, &b, "s").await;
    // A edits offline; meanwhile B keeps writing and the server's horizon
    // passes A's ops.
    let offline = {
        let mut g = a.lock().unwrap();
        g.set(x, "text", Some("edited offline")).unwrap();
        g.create_with(x, Position::Last, &[("text", "made offline")])
            .unwrap()
    };
    tokio::time::sleep(Duration::from_millis(5)).await;
    b.lock()
        .unwrap()
        .create_with(NodeId::ROOT, Position::Last, &[("text", "from b")])
        .unwrap();
    sync(&server, &b, "s").await;
    horizon_passes_then_both_sync(&server, &a, &b).await;
    let g = b.lock().unwrap();
    assert_eq!(
        g.field(x, "text").unwrap().as_deref(),
        Some("edited offline")
    );
    assert_eq!(g.parent(offline).unwrap(), Some(x));
}

/// The server's horizon is raised to now; `a` syncs (it must cold-start),
/// then `b`; both end equal to the server.
async fn horizon_passes_then_both_sync(server: &TestServer, a: &SharedReplica, b: &SharedReplica) {
    server.raise_horizon_to_now("s").await;
    let (tx, _rx) = watch::channel(SyncStatus::default());
    let report = sync_once(a.clone(), server.sync_config("s"), tx, 3)
        .await
        .unwrap();
    assert!(report.cold_starts >= 1, "{report:?}");
    sync(server, b, "s").await;
    for r in [a, b] {
        assert_matches_server(server, r, "s").await;
    }
}

/// A replica that edits before its first sync, and syncs only once the
/// server's horizon has passed those edits: its cold start loads the
/// snapshot (the old ops wait in the outbox instead of failing the load),
/// the server answers them `stale`, they are re-stamped and committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_made_before_a_first_sync_past_the_horizon_are_restamped() {
    let server = TestServer::start("s").await;
    let dir = TempDir::new("first-sync-horizon");
    let (a, b) = (dir.replica("a"), dir.replica("b"));
    b.lock()
        .unwrap()
        .create_with(NodeId::ROOT, Position::Last, &[("text", "from b")])
        .unwrap();
    sync(&server, &b, "s").await;
    let early = a
        .lock()
        .unwrap()
        .create_with(NodeId::ROOT, Position::Last, &[("text", "made early")])
        .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    horizon_passes_then_both_sync(&server, &a, &b).await;
    assert_eq!(
        b.lock().unwrap().field(early, "text").unwrap().as_deref(),
        Some("made early")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subtree_replica_loads_its_subtree_and_a_fork_becomes_a_space() {
    let server = TestServer::start("s").await;
    let dir = TempDir::new("subtree");
    let w = dir.replica("w");
    let (a, a1, a11, b) = {
        let mut g = w.lock().unwrap();
        let a = g
            .create_with(NodeId::ROOT, Position::Last, &[("text", "a")])
            .unwrap();
        let a1 = g.create_with(a, Position::Last, &[("text", "a1")]).unwrap();
        g.create_with(a, Position::Last, &[("text", "a2")]).unwrap();
        let a11 = g
            .create_with(a1, Position::Last, &[("text", "a11")])
            .unwrap();
        let b = g
            .create_with(NodeId::ROOT, Position::Last, &[("text", "b")])
            .unwrap();
        g.create_with(b, Position::Last, &[("text", "b1")]).unwrap();
        (a, a1, a11, b)
    };
    sync(&server, &w, "s").await;

    let sub = dir.replica("sub");
    sub.lock().unwrap().bind_subtree(a).unwrap();
    let (tx, _rx) = watch::channel(SyncStatus::default());
    let report = sync_once(sub.clone(), server.sync_config("s"), tx, 3)
        .await
        .unwrap();
    assert_eq!(report.cold_starts, 1);
    {
        let g = sub.lock().unwrap();
        // The subtree: a (with its place under ROOT) and its 3 descendants.
        assert_eq!(g.node_count().unwrap(), 4);
        assert_eq!(g.parent(a).unwrap(), Some(NodeId::ROOT));
        assert_eq!(g.parent(a11).unwrap(), Some(a1));
        assert!(!g.contains(b).unwrap());
        assert_eq!(g.field(a11, "text").unwrap().as_deref(), Some("a11"));
    }
    // A live op inside the subtree reaches it.
    w.lock()
        .unwrap()
        .set(a11, "text", Some("a11 edited"))
        .unwrap();
    sync(&server, &w, "s").await;
    sync(&server, &sub, "s").await;
    assert_eq!(
        sub.lock().unwrap().field(a11, "text").unwrap().as_deref(),
        Some("a11 edited")
    );

    // Fork: the writer's replica becomes a new space with its state.
    w.lock()
        .unwrap()
        .set(b, "text", Some("unsynced edit"))
        .unwrap();
    arbor_client::fork(
        w.clone(),
        &server.url(),
        "copy",
        &token("copy", arbor_shared::auth::Role::Admin),
    )
    .await
    .unwrap();
    let copy = server.db.state("copy").await.unwrap();
    assert_eq!(copy, w.lock().unwrap().state().unwrap());
    let refused = arbor_client::fork(
        w.clone(),
        &server.url(),
        "copy",
        &token("copy", arbor_shared::auth::Role::Admin),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(refused, arbor_client::SyncError::Refused(_)),
        "{refused}"
    );
}

/// An op the server refuses for good (here a value holding NUL, written into
/// the outbox by hand as a buggy or older client might have) leaves the
/// outbox for the rejected list, is never pushed again, and the rest syncs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_op_refused_for_good_moves_to_the_rejected_list_and_is_not_retried() {
    use arbor_shared::{Op, SetOp};
    let server = TestServer::start("s").await;
    let dir = TempDir::new("rejected");
    let r = dir.replica("r");
    sync(&server, &r, "s").await;
    let (good, bad) = {
        let mut g = r.lock().unwrap();
        let good = g
            .create_with(NodeId::ROOT, Position::Last, &[("text", "kept")])
            .unwrap();
        // The local API refuses a NUL itself; forge the op into the outbox.
        assert!(g.set(good, "text", Some("a\0b")).is_err());
        let stamp = Stamp::new((arbor_client_now() << 16) + 7, g.replica_id().0);
        let bad = Op::Set(SetOp {
            stamp,
            known_seq: 0,
            node: good,
            field: "text".into(),
            value: Some("a\0b".into()),
        });
        g.connection()
            .execute(
                "INSERT INTO outbox (hlc, replica, op) VALUES (?1, ?2, ?3)",
                rusqlite::params![
                    stamp.hlc.0 as i64,
                    arbor_shared::snapshot::field::replica_to_stored(stamp.replica.0),
                    serde_json::to_string(&bad).unwrap()
                ],
            )
            .unwrap();
        (good, bad)
    };
    let (tx, rx) = watch::channel(SyncStatus::default());
    let report = sync_once(r.clone(), server.sync_config("s"), tx, 3)
        .await
        .unwrap();
    // The good ops were acknowledged; the NUL was not counted as pushed.
    assert_eq!(report.pushed, 2, "{report:?}");
    assert_eq!(rx.borrow().rejected, 1);
    {
        let g = r.lock().unwrap();
        assert_eq!(g.outbox_len().unwrap(), 0);
        let rejected = g.rejected().unwrap();
        assert_eq!(rejected.len(), 1);
        assert_eq!(rejected[0].op, bad);
        assert_eq!(rejected[0].code, arbor_shared::ErrorCode::BadOp);
        assert_eq!(g.field(good, "text").unwrap().as_deref(), Some("kept"));
    }
    // Nothing is retried: the next sync pushes nothing.
    let (tx, _rx) = watch::channel(SyncStatus::default());
    let again = sync_once(r.clone(), server.sync_config("s"), tx, 3)
        .await
        .unwrap();
    assert_eq!(again.pushed, 0);
    assert_matches_server(&server, &r, "s").await;
    let mut g = r.lock().unwrap();
    assert_eq!(g.clear_rejected().unwrap(), 1);
    assert!(g.rejected().unwrap().is_empty());
}

fn arbor_client_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}
