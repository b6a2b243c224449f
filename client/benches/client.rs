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
//! - Cold start by replica image (issue 23), side by side with the row
//!   cold start in the same rounds: the server keeps images
//!   (`ImageConfig`); the image is built once first (the cold cache: its
//!   build time and the server's CPU for it), then each round cold-starts
//!   one fresh replica by rows and one by image. Server CPU per cold start
//!   is this process's CPU time (the server runs in it; Postgres is
//!   another process) while the child loads.
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

/// This process's CPU time (user + system), from `/proc/self/stat`.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command's closing parenthesis: utime and stime are
    // the 12th and 13th, in clock ticks (100 per second on Linux).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    Duration::from_millis((f.get(11).unwrap_or(&0) + f.get(12).unwrap_or(&0)) * 10)
}

/// Child mode: cold-start `db` from the server (by image when `images`),
/// print seconds, peak RSS and whether the image was used.
fn child(server: &str, space: &str, db: &Path, images: bool) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let replica = Arc::new(Mutex::new(Replica::open(db).unwrap()));
    let t = Instant::now();
    runtime.block_on(async {
        let (tx, _rx) = tokio::sync::watch::channel(SyncStatus::default());
        let report = sync_once(
            replica,
            SyncConfig {
                images,
                ..SyncConfig::new(server, space, &token(space))
            },
            tx,
            1,
        )
        .await
        .unwrap();
        assert_eq!(
            report.image_starts,
            u64::from(images),
            "image used as asked"
        );
    });
    println!("{} {}", t.elapsed().as_secs_f64(), peak_rss());
}

/// Cold start in a child process; returns (time, peak client RSS).
fn cold_start(server: &str, space: &str, db: &Path, images: bool) -> (Duration, u64) {
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .env(
            "ARBOR_BENCH_CHILD",
            format!("{server}|{space}|{}|{images}", db.display()),
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
/// into a fresh file with the replica's schema, the indexes built after
/// (the value index is left to the client, as after a cold start).
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
    arbor_client::schema::register_functions(&conn).unwrap();
    let t = Instant::now();
    let tx = conn.transaction().unwrap();
    tx.execute_batch("DROP INDEX nodes_children").unwrap();
    // No value index triggers while the rows go in, as in the cold start.
    tx.execute_batch(arbor_client::schema::VALUE_INDEX_DROP)
        .unwrap();
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
    // As the cold start: the value index's triggers made again, the index
    // left for the client to build (`Replica::build_value_index`).
    tx.execute_batch(arbor_client::schema::VALUE_INDEX_DDL)
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
        let parts: Vec<&str> = args.splitn(4, '|').collect();
        child(parts[0], parts[1], Path::new(parts[2]), parts[3] == "true");
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
    let (base, db_id, db) = runtime.block_on(async {
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
            images: Some(arbor_sync_server::image::ImageConfig {
                dir: dir.join("images"),
                rebuild_ops: 10_000,
                level: 3,
            }),
            ..stack::config(&cluster, "bench", SECRET)
        })
        .await;
        (base, info.id, db)
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
    // The image, built once in the same folder the server reads (the cold
    // cache: what the first request after a change costs the server).
    let images = arbor_sync_server::image::Images::new(
        arbor_sync_server::image::ImageConfig {
            dir: dir.join("images"),
            rebuild_ops: 10_000,
            level: 3,
        },
        Arc::new(arbor_sync_server::db::Readers::new(
            db.clone(),
            Vec::new(),
            Duration::from_secs(5),
        )),
    )
    .unwrap();
    let (cpu, t) = (cpu_time(), Instant::now());
    let built = runtime.block_on(images.build("big", None)).unwrap();
    let (build_wall, build_cpu) = (t.elapsed(), cpu_time() - cpu);
    let image_path = dir.join("image.db");
    let (mut ours, mut copies, mut inserts, mut rss) = (Vec::new(), Vec::new(), Vec::new(), 0);
    let (mut by_image, mut image_rss) = (Vec::new(), 0);
    let (mut rows_cpu, mut image_cpu) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        let cpu = cpu_time();
        let (t, r) = cold_start(&base, "big", &replica_path, false);
        rows_cpu.push(cpu_time() - cpu);
        ours.push(t);
        rss = rss.max(r);
        let cpu = cpu_time();
        let (t, r) = cold_start(&base, "big", &image_path, true);
        image_cpu.push(cpu_time() - cpu);
        by_image.push(t);
        image_rss = image_rss.max(r);
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
    let img = median(by_image);
    println!();
    println!(
        "| cold start of {nodes} nodes, rows vs image (image {:.1} MB, {:.1} MB compressed) | rows | image |",
        built.size as f64 / 1e6,
        built.compressed as f64 / 1e6
    );
    println!("|---|---|---|");
    println!(
        "| fresh replica to fully usable (`sync_once`), median s | {:.2} | {:.2} |",
        o.as_secs_f64(),
        img.as_secs_f64()
    );
    println!(
        "| peak client RSS | {} MiB | {} MiB |",
        rss >> 20,
        image_rss >> 20
    );
    println!(
        "| server CPU per cold start (this process; warm image cache), median s | {:.2} | {:.2} |",
        median(rows_cpu).as_secs_f64(),
        median(image_cpu).as_secs_f64()
    );
    println!(
        "| image build (cold cache): wall s, server CPU s | - | {:.2}, {:.2} |",
        build_wall.as_secs_f64(),
        build_cpu.as_secs_f64()
    );
    println!(
        "| image / rows | | {:.2}x |",
        img.as_secs_f64() / o.as_secs_f64()
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
