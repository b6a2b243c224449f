//! Client benchmarks: cold start of a large thoughtspace into a fresh
//! replica, end to end, against its floor; local op latency on the loaded
//! replica.
//!
//! ```text
//! cargo bench -p arbor-client --bench client
//! ```
//!
//! - Cold start: a thoughtspace of `ARBOR_BENCH_NODES` nodes (default
//!   1,000,000, each with a text field; built through `apply_ops`, so the log
//!   holds 2 ops per node) loaded by `sync_once` into a fresh replica file in
//!   a child process (so its peak RSS is the client's alone): server, HTTP,
//!   decode, SQLite inserts, index build, catch-up. The floor, in the same
//!   run: `psql` running the snapshot's three `COPY ... (FORMAT binary)`
//!   queries into `/dev/null`, plus a plain bulk insert of the same rows
//!   (already in memory) into a SQLite file with the replica's schema, the
//!   index built after. Medians of 3.
//! - Local ops on the loaded replica: create (last under a parent with
//!   ~1,000 children), move (to another such parent), and a children page
//!   of 100: p50/p99 over 1,000 of each.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arbor_client::{Position, Replica, SyncConfig, SyncStatus, sync_once};
use arbor_e2e::stack;
use arbor_shared::auth::Role;
use arbor_sync_server::Config;
use arbor_testkit::ops::{Outline, outline_node as node_id};
use arbor_testkit::sql::{psql_discard, snapshot_copies};
use arbor_testkit::stats::{median, ms, percentile as pct};
use arbor_testkit::{PgCluster, PgOptions};

const SECRET: &[u8] = b"bench-secret-bench-secret-bench-secret";

fn token(space: &str) -> String {
    arbor_testkit::tokens::token(SECRET, "bench", space, Role::Write, 3600)
}

/// Peak resident set of this process, bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

/// Child mode: cold-start `db` from the server, print seconds and peak RSS.
fn child(server: &str, space: &str, db: &Path) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let replica = Arc::new(Mutex::new(Replica::open(db).unwrap()));
    let t = Instant::now();
    runtime.block_on(async {
        let (tx, _rx) = tokio::sync::watch::channel(SyncStatus::default());
        sync_once(
            replica,
            SyncConfig::new(server, space, &token(space)),
            tx,
            1,
        )
        .await
        .unwrap();
    });
    println!("{} {}", t.elapsed().as_secs_f64(), peak_rss());
}

/// Cold start in a child process; returns (time, peak client RSS).
fn cold_start(server: &str, space: &str, db: &Path) -> (Duration, u64) {
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .env(
            "ARBOR_BENCH_CHILD",
            format!("{server}|{space}|{}", db.display()),
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut parts = text.split_whitespace();
    let secs: f64 = parts.next().unwrap().parse().unwrap();
    let rss: u64 = parts.next().unwrap().parse().unwrap();
    (Duration::from_secs_f64(secs), rss)
}

type NodeRow = (Vec<u8>, Vec<u8>, Vec<u8>);
type PayloadRow = (Vec<u8>, String, Option<String>, i64, i64);
type MoveRow = (
    i64,
    i64,
    Vec<u8>,
    Vec<u8>,
    Vec<u8>,
    bool,
    Option<Vec<u8>>,
    Option<Vec<u8>>,
);

/// The plain bulk insert of the floor: the same rows, already in memory,
/// into a fresh file with the replica's schema, the index built after.
fn bulk_insert(
    path: &Path,
    nodes: &[NodeRow],
    payloads: &[PayloadRow],
    moves: &[MoveRow],
) -> Duration {
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    let replica = Replica::open(path).unwrap();
    drop(replica);
    let mut conn = rusqlite_open(path);
    let t = Instant::now();
    let tx = conn.transaction().unwrap();
    tx.execute_batch("DROP INDEX nodes_children").unwrap();
    {
        let mut n = tx
            .prepare("INSERT INTO nodes (id, parent, key) VALUES (?1, ?2, ?3)")
            .unwrap();
        for r in nodes {
            n.execute((&r.0, &r.1, &r.2)).unwrap();
        }
        let mut p = tx
            .prepare("INSERT INTO payloads (node, field, value, hlc, replica) VALUES (?1, ?2, ?3, ?4, ?5)")
            .unwrap();
        for r in payloads {
            p.execute((&r.0, &r.1, &r.2, r.3, r.4)).unwrap();
        }
        let mut o = tx
            .prepare(
                "INSERT INTO ops (hlc, replica, node, parent, key, applied, prev_parent, prev_key)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )
            .unwrap();
        for r in moves {
            o.execute((r.0, r.1, &r.2, &r.3, &r.4, r.5, &r.6, &r.7))
                .unwrap();
        }
    }
    tx.execute_batch("CREATE INDEX nodes_children ON nodes (parent, key, id)")
        .unwrap();
    tx.commit().unwrap();
    t.elapsed()
}

fn rusqlite_open(path: &Path) -> rusqlite::Connection {
    let c = rusqlite::Connection::open(path).unwrap();
    c.pragma_update(None, "journal_mode", "WAL").unwrap();
    c.pragma_update(None, "synchronous", "NORMAL").unwrap();
    c
}

fn main() {
    if let Ok(args) = std::env::var("ARBOR_BENCH_CHILD") {
        let parts: Vec<&str> = args.splitn(3, '|').collect();
        child(parts[0], parts[1], Path::new(parts[2]));
        return;
    }
    let nodes: usize = arbor_testkit::env::parsed("ARBOR_BENCH_NODES").unwrap_or(1_000_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let cluster = PgCluster::start(PgOptions {
        throwaway: false,
        shared_buffers: "2GB",
    })
    .unwrap();
    let dir = std::env::temp_dir().join(format!("arbor-client-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (base, db_id) = runtime.block_on(async {
        let db = stack::database(&cluster, "bench", 4).await;
        let info = db.create_space("big").await.unwrap();
        let t = Instant::now();
        for ops in Outline::new(nodes) {
            db.apply("big", None, &ops).await.unwrap();
        }
        println!(
            "# client benchmark: {nodes} nodes built in {:.1} s",
            t.elapsed().as_secs_f64()
        );
        let c = cluster.connect("bench").await.unwrap();
        c.batch_execute("VACUUM ANALYZE").await.unwrap();
        let base = stack::serve(Config {
            max_import_bytes: 4 << 30,
            drain: Duration::from_secs(5),
            ..stack::config(&cluster, "bench", SECRET)
        })
        .await;
        (base, info.id)
    });

    // The floor's rows, fetched once (not timed).
    let (node_rows, payload_rows, move_rows) = runtime.block_on(async {
        let c = cluster.connect("bench").await.unwrap();
        let nodes: Vec<NodeRow> = c
            .query(
                "SELECT id, parent, key FROM nodes WHERE space = $1",
                &[&db_id],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| {
                let id: uuid::Uuid = r.get(0);
                let parent: uuid::Uuid = r.get(1);
                (id.as_bytes().to_vec(), parent.as_bytes().to_vec(), r.get(2))
            })
            .collect();
        let payloads: Vec<PayloadRow> = c
            .query(
                "SELECT node, field, value, hlc, replica FROM payloads WHERE space = $1",
                &[&db_id],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| {
                let node: uuid::Uuid = r.get(0);
                (
                    node.as_bytes().to_vec(),
                    r.get(1),
                    r.get(2),
                    r.get(3),
                    r.get(4),
                )
            })
            .collect();
        let moves: Vec<MoveRow> = c
            .query(
                "SELECT hlc, replica, node, parent, key, applied, prev_parent, prev_key
                 FROM ops WHERE space = $1 AND kind = 'm' ORDER BY seq",
                &[&db_id],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| {
                let node: uuid::Uuid = r.get(2);
                let parent: uuid::Uuid = r.get(3);
                let prev: Option<uuid::Uuid> = r.get(6);
                (
                    r.get(0),
                    r.get(1),
                    node.as_bytes().to_vec(),
                    parent.as_bytes().to_vec(),
                    r.get(4),
                    r.get(5),
                    prev.map(|p| p.as_bytes().to_vec()),
                    r.get(7),
                )
            })
            .collect();
        (nodes, payloads, moves)
    });

    let queries = snapshot_copies(db_id);
    let replica_path: PathBuf = dir.join("cold.db");
    let floor_path = dir.join("floor.db");
    let (mut ours, mut copies, mut inserts, mut rss) = (Vec::new(), Vec::new(), Vec::new(), 0);
    for _ in 0..3 {
        let (t, r) = cold_start(&base, "big", &replica_path);
        ours.push(t);
        rss = rss.max(r);
        let t = Instant::now();
        psql_discard(&cluster, "bench", &queries).unwrap();
        copies.push(t.elapsed());
        inserts.push(bulk_insert(
            &floor_path,
            &node_rows,
            &payload_rows,
            &move_rows,
        ));
    }
    let (o, c, i) = (median(ours), median(copies), median(inserts));
    let floor = c + i;
    println!();
    println!("| cold start of {nodes} nodes | median s |");
    println!("|---|---|");
    println!(
        "| `sync_once` into a fresh replica (server, HTTP, decode, SQLite, index, catch-up) | {:.2} |",
        o.as_secs_f64()
    );
    println!(
        "| floor: psql COPY of the 3 queries > /dev/null | {:.2} |",
        c.as_secs_f64()
    );
    println!(
        "| floor: plain bulk insert of the same rows into SQLite, index after | {:.2} |",
        i.as_secs_f64()
    );
    println!(
        "| ratio to the floor (target: within 1.5x) | {:.2}x |",
        o.as_secs_f64() / floor.as_secs_f64()
    );
    println!(
        "| peak client RSS (target: under 200 MiB) | {} MiB |",
        rss >> 20
    );

    // Local ops on the loaded replica.
    let mut r = Replica::open(&replica_path).unwrap();
    let (p1, p2) = (node_id(1), node_id(2));
    let (mut create, mut moves, mut pages) = (Vec::new(), Vec::new(), Vec::new());
    let mut made = Vec::new();
    for _ in 0..1_000 {
        let t = Instant::now();
        let n = r.create(p1, Position::Last).unwrap();
        create.push(t.elapsed());
        made.push(n);
    }
    for (k, n) in made.iter().enumerate() {
        let target = if k % 2 == 0 { p2 } else { p1 };
        let t = Instant::now();
        r.move_node(*n, target, Position::First).unwrap();
        moves.push(t.elapsed());
    }
    for k in 0..1_000 {
        let parent = node_id(k % 1_000 + 1);
        let t = Instant::now();
        let page = r.children(parent, None, 100).unwrap();
        pages.push(t.elapsed());
        assert!(!page.is_empty());
    }
    println!();
    println!("| local op on the {nodes}-node replica (1,000 each) | p50 ms | p99 ms |");
    println!("|---|---|---|");
    for (name, v) in [
        ("create (last of ~1,000 siblings)", &mut create),
        ("move (first among ~1,000 siblings)", &mut moves),
        ("children page of 100, with fields", &mut pages),
    ] {
        println!(
            "| {name} | {:.3} | {:.3} |",
            ms(pct(v, 0.5)),
            ms(pct(v, 0.99))
        );
    }
    drop(r);
    let _ = std::fs::remove_dir_all(&dir);
    cluster.stop();
}
