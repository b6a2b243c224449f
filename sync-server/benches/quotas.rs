//! What the usage triggers of migration 0008 (quotas) cost a push.
//!
//! ```text
//! cargo bench -p arbor-sync-server --bench quotas
//! ```
//!
//! Starts its own durable Postgres cluster (fsync on; `ARBOR_BENCH_PG_THROWAWAY=1`
//! for fsync off, which shows the CPU cost alone) with two databases
//! built the same way: one as migrated, one with the usage triggers
//! dropped (the schema before 0008, but for three unused columns). Each
//! gets a space of 50,000 nodes with a text field each, then both take the
//! same pushes in alternating rounds (5 rounds each of 300 single-op pushes,
//! half creates, half sets, and of 20 batches of 1,000 such ops): per-push
//! latency percentiles for each, and the ratio of their medians.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::time::{Duration, Instant};

use arbor_shared::{MoveOp, NodeId, Op, OrderKey, SetOp, Stamp};
use arbor_sync_server::db::Db;
use arbor_testkit::PgCluster;
use arbor_testkit::env::{self, now_ms};

mod common;

const NODES: u64 = 50_000;
const ROUNDS: usize = 5;

/// The ops of step `i` (node ids and stamps from a counter, so both
/// databases get the same ones).
struct Gen {
    next: u64,
    hlc: u64,
    /// The head the pushing client last saw (its ops' `known_seq`), as a
    /// connected client sends it.
    known: u64,
}

impl Gen {
    fn create(&mut self) -> Op {
        self.next += 1;
        self.hlc += 1;
        Op::Move(MoveOp {
            stamp: Stamp::new(self.hlc, 7),
            known_seq: self.known,
            node: NodeId(u128::from(self.next)),
            parent: NodeId::ROOT,
            key: OrderKey::new(&[
                0x80,
                (self.next >> 16) as u8,
                (self.next >> 8) as u8,
                self.next as u8 | 1,
            ])
            .unwrap(),
        })
    }

    fn set(&mut self) -> Op {
        self.hlc += 1;
        Op::Set(SetOp {
            stamp: Stamp::new(self.hlc, 7),
            known_seq: self.known,
            node: NodeId(u128::from(self.next)),
            field: "text".into(),
            value: Some(format!("a line of text {}", self.hlc)),
        })
    }

    fn mix(&mut self, n: usize) -> Vec<Op> {
        (0..n)
            .map(|i| {
                if i % 2 == 0 {
                    self.create()
                } else {
                    self.set()
                }
            })
            .collect()
    }
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

async fn database(cluster: &PgCluster, name: &str, triggers: bool) -> Db {
    let c = common::database(cluster, name).await;
    if !triggers {
        c.batch_execute(
            "DROP TRIGGER nodes_count_insert ON nodes; DROP TRIGGER nodes_count_delete ON nodes;
             DROP TRIGGER ops_count_insert ON ops; DROP TRIGGER ops_count_delete ON ops;
             DROP TRIGGER payloads_count_insert ON payloads;
             DROP TRIGGER payloads_count_update ON payloads;
             DROP TRIGGER payloads_count_delete ON payloads;",
        )
        .await
        .unwrap();
    }
    let db = Db::new(cluster.config(name), 1).unwrap();
    db.create_space("s").await.unwrap();
    let mut g = Gen {
        next: 0,
        hlc: now_ms() << 16,
        known: 0,
    };
    while g.next < NODES {
        let ops: Vec<Op> = (0..2_000).flat_map(|_| [g.create(), g.set()]).collect();
        let committed = db.apply("s", None, &ops).await.unwrap();
        g.known = committed.last().map_or(g.known, |c| c.seq);
    }
    c.batch_execute("VACUUM ANALYZE").await.unwrap();
    db
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let throwaway = env::flag("ARBOR_BENCH_PG_THROWAWAY");
    let cluster = common::cluster(throwaway, "512MB");
    let counted = database(&cluster, "counted", true).await;
    let uncounted = database(&cluster, "uncounted", false).await;
    println!(
        "# usage triggers (migration 0008): {NODES}-node space, fsync {}, {ROUNDS} alternating rounds",
        if throwaway { "off" } else { "on" }
    );
    println!();
    println!("| pushes | with triggers p50 ms | p99 ms | without p50 ms | p99 ms | ratio of p50 |");
    println!("|---|---|---|---|---|---|");
    // Stamps above the build's (and the database clock's): the realtime
    // case, in order.
    let mut g = Gen {
        next: NODES + 1,
        hlc: now_ms() << 16,
        known: 2 * NODES,
    };
    for (batch, pushes) in [(1usize, 300usize), (1_000, 20)] {
        let mut times = [Vec::new(), Vec::new()];
        for _ in 0..ROUNDS {
            let start = (g.next, g.hlc, g.known);
            for (k, db) in [&counted, &uncounted].into_iter().enumerate() {
                (g.next, g.hlc, g.known) = start;
                for _ in 0..pushes {
                    let ops = g.mix(batch);
                    let t = Instant::now();
                    let committed = db.apply("s", None, &ops).await.unwrap();
                    times[k].push(t.elapsed());
                    g.known = committed.last().map_or(g.known, |c| c.seq);
                }
            }
        }
        for t in &mut times {
            t.sort();
        }
        let (a, b) = (pct(&times[0], 0.5), pct(&times[1], 0.5));
        println!(
            "| {batch} op{} | {a:.2} | {:.2} | {b:.2} | {:.2} | {:.2}x |",
            if batch == 1 { "" } else { "s" },
            pct(&times[0], 0.99),
            pct(&times[1], 0.99),
            a / b
        );
    }
}
