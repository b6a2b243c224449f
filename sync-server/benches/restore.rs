//! Restore-rule benchmark: a replica's backlog pushed after many concurrent
//! deletes, with migration 0006's restore pass against 0002's.
//!
//! ```text
//! cargo bench -p arbor-sync-server --bench restore
//! ```
//!
//! Starts its own Postgres cluster (durable settings) with two databases,
//! one migrated (0006's pass) and one with 0002's pass installed over it,
//! and builds the same thoughtspace in both: 20,000 nodes by replica C
//! (ten children per node, about four levels), then C deletes 1,000 leaves
//! knowing everything. Replica A was offline since seq 100: it pushes its
//! backlog as batches of 200 sets on live nodes with `known_seq` 100, so
//! every batch is concurrent with all 1,000 deletes and restores nothing.
//! Also single sets from an up-to-date replica (the realtime case, which
//! never reaches the pass). Prints per-batch medians and the ratio.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::time::{Duration, Instant};

use arbor_shared::{NodeId, Op};
use arbor_sync_server::db::{Db, restore_pass_0002};
use arbor_testkit::env::now_ms;
use arbor_testkit::ops;
use arbor_testkit::stats::{self, ms};

mod common;

const NODES: u128 = 20_000;
const DELETES: u128 = 1_000;
const BACKLOG_BATCHES: u64 = 5;
const BATCH: u64 = 200;
const SINGLES: u64 = 200;
const C: u64 = 3;
const A: u64 = 1;
const B: u64 = 2;

fn node(i: u128) -> NodeId {
    NodeId(1_000 + i)
}

fn mv(hlc: u64, replica: u64, node: NodeId, parent: NodeId, known: u64) -> Op {
    ops::mv(hlc, replica, node, parent, &[0x80], known)
}

fn set(hlc: u64, replica: u64, node: NodeId, known: u64) -> Op {
    ops::set(
        hlc,
        replica,
        node,
        "text",
        Some(&format!("edit {hlc}")),
        known,
    )
}

fn median(xs: Vec<Duration>) -> f64 {
    ms(stats::median(xs))
}

/// Builds the thoughtspace; returns the stamp base for later ops.
async fn build(db: &Db, t: u64) -> u64 {
    db.create_space("s").await.unwrap();
    let creates: Vec<Op> = (0..NODES)
        .map(|i| {
            let parent = if i < 10 { NodeId::ROOT } else { node(i / 10) };
            mv(t + i as u64, C, node(i), parent, 0)
        })
        .collect();
    for chunk in creates.chunks(5_000) {
        db.apply("s", None, chunk).await.unwrap();
    }
    // The last 1,000 nodes have no children (i / 10 < NODES - DELETES).
    let head = NODES as u64;
    let deletes: Vec<Op> = (NODES - DELETES..NODES)
        .map(|i| mv(t + 100_000 + i as u64, C, node(i), NodeId::TRASH, head))
        .collect();
    for chunk in deletes.chunks(500) {
        db.apply("s", None, chunk).await.unwrap();
    }
    t + 200_000
}

/// Per-batch times of A's backlog, then of B's up-to-date single sets.
async fn measure(db: &Db, base: u64) -> (Vec<Duration>, Vec<Duration>) {
    let mut backlog = Vec::new();
    let mut hlc = base;
    for b in 0..BACKLOG_BATCHES {
        let ops: Vec<Op> = (0..BATCH)
            .map(|i| {
                hlc += 1;
                set(hlc, A, node(u128::from((b * BATCH + i) % 10_000)), 100)
            })
            .collect();
        let t0 = Instant::now();
        let got = db.apply("s", None, &ops).await.unwrap();
        backlog.push(t0.elapsed());
        assert_eq!(got.len(), ops.len(), "no restore, no refusal");
    }
    let mut singles = Vec::new();
    for i in 0..SINGLES {
        let head = db.space("s").await.unwrap().unwrap().head_seq;
        hlc += 1;
        let op = set(hlc, B, node(u128::from(i)), head);
        let t0 = Instant::now();
        db.apply("s", None, std::slice::from_ref(&op))
            .await
            .unwrap();
        singles.push(t0.elapsed());
    }
    (backlog, singles)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let cluster = common::cluster(false, "256MB");
    let t = (now_ms() - 3_600_000) << 16;
    let mut results = Vec::new();
    for (name, legacy) in [("current", false), ("legacy", true)] {
        let c = common::database(&cluster, name).await;
        if legacy {
            c.batch_execute(&restore_pass_0002()).await.unwrap();
        }
        let db = Db::new(cluster.config(name), 1).unwrap();
        let base = build(&db, t).await;
        c.batch_execute("VACUUM ANALYZE").await.unwrap();
        results.push(measure(&db, base).await);
    }
    let [(new_backlog, new_single), (old_backlog, old_single)] =
        <[_; 2]>::try_from(results).ok().unwrap();
    let (nb, ob) = (median(new_backlog), median(old_backlog));
    let (ns, os) = (median(new_single), median(old_single));
    println!(
        "# restore benchmark: {NODES} nodes, {DELETES} concurrent deletes, backlog batches of {BATCH} sets (known_seq 100), median of {BACKLOG_BATCHES}; single sets median of {SINGLES}"
    );
    println!();
    println!("| push | 0006 pass, ms | 0002 pass, ms | speedup |");
    println!("|---|---|---|---|");
    println!(
        "| backlog batch of {BATCH} after {DELETES} concurrent deletes | {nb:.1} | {ob:.1} | {:.0}x |",
        ob / nb
    );
    println!(
        "| single set, up to date (realtime) | {ns:.2} | {os:.2} | {:.2}x |",
        os / ns
    );
    cluster.stop();
}
