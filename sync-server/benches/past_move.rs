//! One move stamped just above the horizon, against 200,000 newer logged
//! moves: the current `apply_ops` (migrations 0009 and 0011) against
//! 0002's (which undoes and redoes every newer move).
//!
//! ```text
//! cargo bench -p arbor-sync-server --bench past_move
//! ```
//!
//! Starts its own durable Postgres cluster (`ARBOR_BENCH_PG_THROWAWAY=1`:
//! fsync off) with two databases built the same way: 1,000 folders under
//! ROOT, 20,000 leaves in them, then 200,000 moves of leaves between
//! folders (`ARBOR_BENCH_MOVES` to change it), and the horizon raised to
//! just below those moves. One database has 0002's `apply_ops` installed
//! over the current one. Then each takes the same single-op pushes stamped
//! just above the horizon, 5 of each kind:
//! - a create under a folder;
//! - a move of a leaf to another folder;
//! - a move of a leaf under another leaf (that leaf moved since);
//! - a move of a folder under a leaf that later moved into that folder:
//!   the later move becomes a cycle, history changes, and both undo and
//!   redo.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::time::Instant;

use arbor_shared::sim::splitmix;
use arbor_shared::{NodeId, Op, Stamp};
use arbor_sync_server::db::{Db, apply_ops_0002};
use arbor_testkit::PgCluster;
use arbor_testkit::env::{self, now_ms};
use arbor_testkit::ops;
use arbor_testkit::stats::ms;

mod common;

const FOLDERS: u64 = 1_000;
const LEAVES: u64 = 20_000;
const REPS: usize = 5;

fn folder(f: u64) -> NodeId {
    NodeId(u128::from(1_000_000 + f))
}

fn leaf(l: u64) -> NodeId {
    NodeId(u128::from(2_000_000 + l))
}

fn mv(hlc: u64, node: NodeId, parent: NodeId, k: u64, known: u64) -> Op {
    let key = [0x40, (k >> 8) as u8, k as u8 | 1];
    ops::mv(hlc, 7, node, parent, &key, known)
}

/// A database with the space built; returns it, the horizon's hlc and the
/// head.
async fn database(cluster: &PgCluster, name: &str, base: u64, moves: u64, old: bool) -> (Db, u64) {
    let c = common::database(cluster, name).await;
    if old {
        c.batch_execute(&apply_ops_0002()).await.unwrap();
    }
    let db = Db::new(cluster.config(name), 1).unwrap();
    db.create_space("s").await.unwrap();
    // Every database gets the same ops: stamps base + 1024 i (room for
    // the pushes between them).
    let mut i = 0u64;
    let mut s = 42u64;
    let mut head = 0u64;
    let mut ops = Vec::new();
    for f in 0..FOLDERS {
        i += 1;
        ops.push(mv(base + 1024 * i, folder(f), NodeId::ROOT, f, 0));
    }
    for l in 0..LEAVES {
        i += 1;
        ops.push(mv(base + 1024 * i, leaf(l), folder(l % FOLDERS), l, 0));
    }
    for chunk in ops.chunks(10_000) {
        head = db
            .apply("s", None, chunk)
            .await
            .unwrap()
            .last()
            .unwrap()
            .seq;
    }
    let horizon = base + 1024 * i + 1;
    let mut left = moves;
    while left > 0 {
        let n = left.min(10_000);
        left -= n;
        let ops: Vec<Op> = (0..n)
            .map(|_| {
                i += 1;
                let x = leaf(splitmix(&mut s) % LEAVES);
                let to = folder(splitmix(&mut s) % FOLDERS);
                mv(base + 1024 * i, x, to, splitmix(&mut s) % 60_000, head)
            })
            .collect();
        head = db.apply("s", None, &ops).await.unwrap().last().unwrap().seq;
    }
    db.raise_horizon("s", Stamp::new(horizon, 0)).await.unwrap();
    c.batch_execute("VACUUM ANALYZE").await.unwrap();
    (db, head)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let throwaway = env::flag("ARBOR_BENCH_PG_THROWAWAY");
    let moves: u64 = env::parsed("ARBOR_BENCH_MOVES").unwrap_or(200_000);
    let cluster = common::cluster(throwaway, "1GB");
    // Stamps from an hour ago, so the newest is not ahead of the clock.
    let base = (now_ms() - 3_600_000) << 16;
    let (after, head) = database(&cluster, "after", base, moves, false).await;
    let (before, _) = database(&cluster, "before", base, moves, true).await;
    let horizon = base + 1024 * (FOLDERS + LEAVES) + 1;
    println!(
        "# one push stamped just above the horizon, {moves} newer moves, fsync {}, {REPS} each",
        if throwaway { "off" } else { "on" }
    );
    println!();
    println!("| push | now median ms | max ms | 0002 median ms | max ms | speedup |");
    println!("|---|---|---|---|---|---|");
    let mut s = 7u64;
    let kinds = [
        "create under a folder",
        "leaf to another folder",
        "leaf under a moved leaf",
        "folder under a leaf that later moves into it",
    ];
    for (n, kind) in kinds.into_iter().enumerate() {
        let mut times = [Vec::new(), Vec::new()];
        for rep in 0..REPS {
            // Above the horizon, below every newer move.
            let hlc = horizon + 1 + rep as u64 + 64 * n as u64;
            let op = match kind {
                "create under a folder" => mv(
                    hlc,
                    NodeId(u128::from(9_000_000 + rep as u64)),
                    folder(splitmix(&mut s) % FOLDERS),
                    3,
                    head,
                ),
                "leaf to another folder" => mv(
                    hlc,
                    leaf(splitmix(&mut s) % LEAVES),
                    folder(splitmix(&mut s) % FOLDERS),
                    5,
                    head,
                ),
                "leaf under a moved leaf" => mv(
                    hlc,
                    leaf(splitmix(&mut s) % LEAVES),
                    leaf(splitmix(&mut s) % LEAVES),
                    7,
                    head,
                ),
                _ => {
                    // Every leaf moved since the horizon; the folder it is
                    // in now is where it moved last.
                    let l = leaf(splitmix(&mut s) % LEAVES);
                    let row = after
                        .client()
                        .await
                        .unwrap()
                        .query_one(
                            "SELECT parent FROM nodes WHERE id = $1",
                            &[&uuid::Uuid::from_u128(l.0)],
                        )
                        .await
                        .unwrap();
                    let f: uuid::Uuid = row.get(0);
                    mv(hlc, NodeId(f.as_u128()), l, 9, head)
                }
            };
            for (k, db) in [&after, &before].into_iter().enumerate() {
                let t = Instant::now();
                db.apply("s", None, std::slice::from_ref(&op))
                    .await
                    .unwrap();
                times[k].push(t.elapsed());
            }
        }
        for t in &mut times {
            t.sort();
        }
        let (a, b) = (ms(times[0][REPS / 2]), ms(times[1][REPS / 2]));
        println!(
            "| {kind} | {a:.1} | {:.1} | {b:.1} | {:.1} | {:.0}x |",
            ms(times[0][REPS - 1]),
            ms(times[1][REPS - 1]),
            b / a
        );
    }
    // Both databases took the same ops: their trees must be equal.
    assert_eq!(
        after.state("s").await.unwrap(),
        before.state("s").await.unwrap(),
        "0009 and 0002 disagree"
    );
}
