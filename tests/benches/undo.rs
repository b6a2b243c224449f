//! Undo of a 10,000-node section delete: the time until the section is
//! visible again on the replica that undid it, and on a second replica
//! syncing through the native endpoint.
//!
//! ```text
//! cargo bench -p arbor-e2e --bench undo
//! ```
//!
//! Replica A builds a section of `ARBOR_BENCH_NODES` (10,000) nodes under
//! ROOT, each with a text field; B syncs it. Then, `ROUNDS` times: A
//! deletes the section (B sees it go), A undoes the delete, timed from the
//! call to `undo` until it returns (the restore applied and shown
//! locally) and until B's replica reports the section moved back (a change
//! notification naming it). Postgres, the server and both replicas share
//! the 2 cores.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arbor_client::{Position, Replica, SyncConfig, SyncStatus, sync_forever};
use arbor_e2e::stack;
use arbor_shared::NodeId;
use arbor_shared::auth::Role;
use arbor_testkit::stats::{ms, percentile};
use arbor_testkit::wait::wait_for;
use tokio::sync::watch;

const SECRET: &str = "bench-secret-bench-secret-bench-secret";
const ROUNDS: usize = 20;

fn live_at(s: &SyncStatus, seq: u64) -> bool {
    s.state == arbor_client::SyncState::Live && s.outbox == 0 && s.cursor.is_some_and(|c| c >= seq)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let nodes: usize = std::env::var("ARBOR_BENCH_NODES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let cluster = arbor_testkit::PgCluster::start(arbor_testkit::PgOptions {
        throwaway: false,
        shared_buffers: "256MB",
    })
    .unwrap();
    let db = stack::database(&cluster, "bench", 2).await;
    db.create_space("s").await.unwrap();
    let server = stack::serve(stack::config(&cluster, "bench", SECRET.as_bytes())).await;
    let dir = std::env::temp_dir().join(format!("arbor-bench-undo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let sync = |name: &str| {
        let replica = Arc::new(Mutex::new(
            Replica::open(&dir.join(format!("{name}.db"))).unwrap(),
        ));
        let token = arbor_testkit::tokens::token(SECRET.as_bytes(), name, "s", Role::Write, 3600);
        let config = SyncConfig::new(&server, "s", &token);
        let (tx, rx) = watch::channel(SyncStatus::default());
        tokio::spawn(sync_forever(
            replica.clone(),
            config,
            tx,
            std::future::pending(),
        ));
        (replica, rx)
    };
    let (a, mut a_status) = sync("a");
    let (b, mut b_status) = sync("b");
    wait_for(&mut a_status, "a live", |s| live_at(s, 0)).await;

    // The section: a root and `nodes - 1` nodes below it, ten levels of
    // fan-out, each with a text field.
    let section = {
        let mut r = a.lock().unwrap();
        let top = r
            .create_with(NodeId::ROOT, Position::Last, &[("text", "section")])
            .unwrap();
        let mut parents = vec![top];
        for i in 1..nodes {
            let parent = parents[i / 10];
            let n = r
                .create_with(parent, Position::Last, &[("text", &format!("n{i}"))])
                .unwrap();
            parents.push(n);
        }
        top
    };
    let head = |s: &watch::Receiver<SyncStatus>| s.borrow().cursor.unwrap_or(0);
    wait_for(&mut a_status, "a pushed the section", |s| {
        live_at(s, 2 * nodes as u64)
    })
    .await;
    let seq = head(&a_status);
    wait_for(&mut b_status, "b has the section", |s| live_at(s, seq)).await;
    assert_eq!(b.lock().unwrap().node_count().unwrap(), nodes as u64);

    let mut changes = b.lock().unwrap().subscribe();
    let (mut local, mut remote) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let before = head(&a_status);
        a.lock().unwrap().delete(section).unwrap();
        wait_for(&mut a_status, "a pushed the delete", |s| {
            live_at(s, before + 1)
        })
        .await;
        let seq = head(&a_status);
        wait_for(&mut b_status, "b has the delete", |s| live_at(s, seq)).await;
        assert!(b.lock().unwrap().is_deleted(section).unwrap());
        while changes.try_recv().is_ok() {}
        let start = Instant::now();
        let report = a.lock().unwrap().undo().unwrap().unwrap();
        local.push(start.elapsed());
        assert_eq!(report.reverted, 1);
        assert!(!a.lock().unwrap().is_deleted(section).unwrap());
        // B's first change naming the section is the undo's move back.
        let waited = tokio::task::spawn_blocking(move || {
            loop {
                let c = changes.recv_timeout(Duration::from_secs(30)).unwrap();
                if c.moved.contains(&section) {
                    return (start.elapsed(), changes);
                }
            }
        })
        .await
        .unwrap();
        remote.push(waited.0);
        changes = waited.1;
        assert!(!b.lock().unwrap().is_deleted(section).unwrap());
        // The undo acknowledged before the next round's delete.
        wait_for(&mut a_status, "a pushed the undo", |s| live_at(s, seq + 1)).await;
    }
    println!("undo of a {nodes}-node section delete, {ROUNDS} rounds");
    println!();
    println!("| where | p50 ms | p99 ms | max ms |");
    println!("|---|---|---|---|");
    for (name, v) in [
        ("visible again on the replica that undid it", &mut local),
        (
            "visible again on a second replica (native endpoint)",
            &mut remote,
        ),
    ] {
        let max = v.iter().max().copied().unwrap_or_default();
        println!(
            "| {name} | {:.2} | {:.2} | {:.2} |",
            ms(percentile(v, 0.5)),
            ms(percentile(v, 0.99)),
            ms(max)
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
