//! Apply benchmark: Postgres `apply_ops` against a naive per-op PL/pgSQL loop.
//!
//! ```text
//! cargo bench -p arbor-sync-server --bench apply
//! ```
//!
//! Starts its own Postgres cluster with durable settings (fsync on; set
//! `ARBOR_BENCH_PG_THROWAWAY=1` for fsync off) and `shared_buffers=2GB`, builds a thoughtspace of
//! `ARBOR_BENCH_NODES` nodes (default 1,000,000; each with a text field),
//! copies it for the baseline, then measures on both, with the same ops in
//! the same order:
//!
//! - in-order batches of 1, 100 and 1,000 ops of an outliner-like mix
//!   (40% creates, 25% sets, 20% reorders, 15% shallow moves: indent under a
//!   nearby node or outdent to the grandparent), from a client that is up to
//!   date: ops/s and per-batch latency percentiles;
//! - `apply_ops` only: one op older than the newest 1,000 and 10,000 logged
//!   moves (undo/redo of that many entries);
//! - the same in-order batches on a fork of the space through `apply_ops`
//!   itself, which records no place changes: the cost of the record the
//!   subtree feed reads (migration 0013);
//! - the same batches on another fork with the value index's triggers
//!   disabled for that run: the cost of the value index and its search
//!   index (migration 0018).
//!
//! The baseline (`benches/naive.sql`) applies op by op and walks ancestors
//! with one query per level.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use arbor_shared::sim::splitmix;
use arbor_shared::{
    KeyGen, MemoryStore, MoveOp, NodeId, Op, OrderKey, ReplicaId, SetOp, Stamp, Tree,
};
use arbor_sync_server::db::{Db, OpArrays};
use arbor_testkit::env::{self, now_ms};
use arbor_testkit::stats::ms;

mod common;

const REPLICA: u64 = 0x00C0_FFEE;

struct Gen {
    tree: Tree<MemoryStore>,
    nodes: Vec<NodeId>,
    last_key: HashMap<NodeId, OrderKey>,
    keys: KeyGen,
    hlc: u64,
    rng: u64,
    next_id: u128,
    /// Stamps of every move, in stamp order (to aim undo/redo depths).
    moves: Vec<Stamp>,
    /// Build walk: the path from ROOT to the current parent.
    path: Vec<NodeId>,
}

impl Gen {
    fn new() -> Gen {
        Gen {
            tree: Tree::new(MemoryStore::new()),
            nodes: Vec::new(),
            last_key: HashMap::new(),
            keys: KeyGen::new(7),
            // An hour back: millions of counter steps stay in the past.
            hlc: (now_ms() - 3_600_000) << 16,
            rng: 42,
            next_id: 1 << 100,
            moves: Vec::new(),
            path: vec![NodeId::ROOT],
        }
    }

    fn pick(&mut self, n: usize) -> usize {
        (splitmix(&mut self.rng) % n as u64) as usize
    }

    fn stamp(&mut self) -> Stamp {
        self.hlc += 1;
        Stamp::new(self.hlc, REPLICA)
    }

    fn append_key(&mut self, parent: NodeId) -> OrderKey {
        let k = self.keys.append_after(self.last_key.get(&parent));
        self.last_key.insert(parent, k.clone());
        k
    }

    fn mv(&mut self, node: NodeId, parent: NodeId, key: OrderKey, known: u64) -> Op {
        let stamp = self.stamp();
        self.moves.push(stamp);
        Op::Move(MoveOp {
            stamp,
            known_seq: known,
            node,
            parent,
            key,
        })
    }

    fn create(&mut self, parent: NodeId, known: u64) -> Op {
        self.next_id += 1;
        let node = NodeId(self.next_id);
        let key = self.append_key(parent);
        self.nodes.push(node);
        self.mv(node, parent, key, known)
    }

    fn set(&mut self, node: NodeId, known: u64) -> Op {
        let stamp = self.stamp();
        let len = 20 + self.pick(40);
        let value: String = (0..len)
            .map(|i| (b'a' + ((self.hlc as usize + i) % 26) as u8) as char)
            .collect();
        Op::Set(SetOp {
            stamp,
            known_seq: known,
            node,
            field: "text".into(),
            value: Some(value),
        })
    }

    /// The outliner shape: siblings, indents and outdents with the depth kept
    /// between 1 and 12, plus one 150-deep chain per 100k nodes.
    fn build_batch(&mut self, creates: usize) -> Vec<Op> {
        let mut ops = Vec::with_capacity(creates * 2);
        for _ in 0..creates {
            if self.nodes.len() % 100_000 == 50_000 {
                // A deep chain (chains deeper than 100 exist).
                let mut parent = *self.path.last().unwrap();
                for _ in 0..150 {
                    ops.push(self.create(parent, 0));
                    parent = *self.nodes.last().unwrap();
                }
                continue;
            }
            let parent = *self.path.last().unwrap();
            ops.push(self.create(parent, 0));
            let node = *self.nodes.last().unwrap();
            ops.push(self.set(node, 0));
            let depth = self.path.len();
            match self.pick(10) {
                0..=2 if depth < 12 => self.path.push(node),
                3..=4 if depth > 1 => {
                    self.path.pop();
                }
                _ => {}
            }
        }
        ops
    }

    /// One op of the outliner mix, against the state the reference has.
    fn mix_op(&mut self, known: u64) -> Op {
        let n = self.nodes.len();
        let recent = |g: &mut Gen| {
            let i = n - 1 - g.pick(n.min(10_000));
            g.nodes[i]
        };
        let any = |g: &mut Gen| {
            let i = g.pick(n);
            g.nodes[i]
        };
        let roll = self.pick(100);
        let node = if self.pick(2) == 0 {
            recent(self)
        } else {
            any(self)
        };
        let place = self.tree.place(node).unwrap();
        match (roll, place) {
            (0..=39, _) | (_, None) => self.create(node, known),
            (40..=64, _) => self.set(node, known),
            (65..=84, Some(p)) => {
                // Reorder: to the front or the back of its siblings.
                let key = if self.pick(2) == 0 {
                    self.append_key(p.parent)
                } else {
                    let first = self.tree.children(p.parent, None, 1).unwrap();
                    self.keys
                        .between(None, first.first().map(|c| &c.key))
                        .unwrap()
                };
                self.mv(node, p.parent, key, known)
            }
            (_, Some(p)) => {
                let parent = if self.pick(2) == 0 {
                    // Indent under a node created nearby (a cycle is skipped).
                    let i = self.nodes.iter().position(|x| *x == node).unwrap_or(0);
                    let j = (i + self.pick(41)).saturating_sub(20).min(n - 1);
                    self.nodes[j]
                } else {
                    // Outdent to the grandparent.
                    self.tree.parent(p.parent).unwrap().unwrap_or(NodeId::ROOT)
                };
                let key = self.append_key(parent);
                self.mv(node, parent, key, known)
            }
        }
    }
}

#[derive(Default)]
struct Run {
    ops: usize,
    lat: Vec<Duration>,
}

impl Run {
    fn total(&self) -> Duration {
        self.lat.iter().sum()
    }
    fn ops_per_s(&self) -> f64 {
        self.ops as f64 / self.total().as_secs_f64()
    }
    fn pct(&self, p: f64) -> Duration {
        let mut v = self.lat.clone();
        v.sort();
        v[((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1]
    }
}

/// The baseline.
const NAIVE: &str = "SELECT naive_apply($1, NULL, $2, $3, $4, $5, $6, $7, $8, $9, $10)";
/// `apply_ops` called directly (the profiling connection).
const APPLY: &str = "SELECT count(*) FROM apply_ops($1, NULL, $2, $3, $4, $5, $6, $7, $8, $9, $10)";

/// Calls `function` (NAIVE or APPLY) with a batch on `client`.
async fn call(client: &tokio_postgres::Client, function: &str, space: &str, ops: &[Op]) {
    let a = OpArrays::encode(ops).unwrap();
    client
        .query_one(
            function,
            &[
                &space,
                &a.hlc,
                &a.replica,
                &a.kind,
                &a.node,
                &a.parent,
                &a.key,
                &a.field,
                &a.value,
                &a.known_seq,
            ],
        )
        .await
        .unwrap();
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let quick = env::flag("ARBOR_BENCH_QUICK");
    let nodes: usize =
        env::parsed("ARBOR_BENCH_NODES").unwrap_or(if quick { 100_000 } else { 1_000_000 });
    let throwaway = env::flag("ARBOR_BENCH_PG_THROWAWAY");
    // shared_buffers sized like a database host's (a quarter of RAM is the
    // usual advice), so the 1M-node working set is resident.
    let cluster = common::cluster(throwaway, "2GB");
    let setup = common::database(&cluster, "bench").await;
    setup
        .batch_execute(include_str!("naive.sql"))
        .await
        .unwrap();
    let db = Db::new(cluster.config("bench"), 2).unwrap();
    db.create_space("main").await.unwrap();
    println!(
        "# apply benchmark: {nodes} nodes, shared_buffers 2GB, fsync {}",
        if throwaway {
            "off"
        } else {
            "on (durable defaults)"
        }
    );

    // Build.
    let mut g = Gen::new();
    let t0 = Instant::now();
    let mut built_ops = 0usize;
    while g.nodes.len() < nodes {
        let batch = g.build_batch(4_900.min(nodes - g.nodes.len()));
        db.apply("main", None, &batch).await.unwrap();
        g.tree.apply(&batch).unwrap();
        built_ops += batch.len();
    }
    let build = t0.elapsed();
    println!(
        "build: {built_ops} ops ({} nodes) in {:.1} s = {:.0} ops/s (batches of ~10k)",
        g.nodes.len(),
        build.as_secs_f64(),
        built_ops as f64 / build.as_secs_f64()
    );
    // The baseline's space: a copy of the tree and registers.
    db.create_space("naive").await.unwrap();
    setup
        .batch_execute(
            "INSERT INTO nodes (space, id, parent, key)
               SELECT (SELECT id FROM spaces WHERE name = 'naive'), id, parent, key FROM nodes
               WHERE space = (SELECT id FROM spaces WHERE name = 'main');
             INSERT INTO payloads (space, node, field, value, hlc, replica)
               SELECT (SELECT id FROM spaces WHERE name = 'naive'), node, field, value, hlc, replica
               FROM payloads WHERE space = (SELECT id FROM spaces WHERE name = 'main');
             UPDATE spaces SET head_seq = (SELECT head_seq FROM spaces WHERE name = 'main')
               WHERE name = 'naive';",
        )
        .await
        .unwrap();

    setup.batch_execute("VACUUM ANALYZE").await.unwrap();

    println!();
    println!(
        "| in-order batch | apply_ops ops/s | p50 ms | p99 ms | naive ops/s | p50 ms | p99 ms | ratio |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let plan: [(usize, usize); 3] = if quick {
        [(1, 300), (100, 50), (1000, 10)]
    } else {
        [(1, 2000), (100, 300), (1000, 60)]
    };
    // The cost of recording place changes (migration 0013): the same
    // batches on a fork, through `apply_ops` with no change tag.
    db.fork("main", "untracked").await.unwrap();
    // The cost of the node-history index (migration 0016): the same
    // batches through `Db::apply` on a fork, with the index dropped for
    // that run only.
    db.fork("main", "unindexed").await.unwrap();
    // The cost of the value index (migration 0018: its table, lookup and
    // search indexes and the triggers that keep them): the same batches
    // on a fork with its triggers disabled for that run only.
    db.fork("main", "unvalued").await.unwrap();
    setup.batch_execute("VACUUM ANALYZE").await.unwrap();
    let mut tracking = Vec::new();
    let mut indexing = Vec::new();
    let mut valuing = Vec::new();
    let client = db.client().await.unwrap();
    for (size, count) in plan {
        let mut head = db.space("main").await.unwrap().unwrap().head_seq;
        let mut batches = Vec::with_capacity(count);
        for _ in 0..count {
            let batch: Vec<Op> = (0..size).map(|_| g.mix_op(head)).collect();
            g.tree.apply(&batch).unwrap();
            head += batch.len() as u64;
            batches.push(batch);
        }
        if std::env::var("ARBOR_BENCH_PROFILE").is_ok_and(|v| v == size.to_string()) {
            // Per-statement times of one batch, from auto_explain in the
            // cluster's log (a profiling aid, not part of the report).
            let prof = cluster.connect("bench").await.unwrap();
            // Warm the session's plan cache first (PL/pgSQL switches to
            // generic plans after five calls): profile the steady state.
            for _ in 0..8 {
                call(&prof, APPLY, "main", &batches.remove(0)).await;
            }
            prof.batch_execute(
                "LOAD 'auto_explain'; SET auto_explain.log_min_duration = 0;
                 SET auto_explain.log_nested_statements = on; SET auto_explain.log_analyze = on;
                 SET auto_explain.log_timing = off;",
            )
            .await
            .unwrap();
            call(&prof, APPLY, "main", &batches.remove(0)).await;
            println!(
                "profile written to {}/postgres.log",
                cluster.socket_dir().display()
            );
        }
        let mut ours = Run::default();
        for b in &batches {
            let t = Instant::now();
            db.apply("main", Some(ReplicaId(REPLICA)), b).await.unwrap();
            ours.lat.push(t.elapsed());
            ours.ops += b.len();
        }
        let mut base = Run::default();
        for b in &batches {
            let t = Instant::now();
            call(&client, NAIVE, "naive", b).await;
            base.lat.push(t.elapsed());
            base.ops += b.len();
        }
        let mut untracked = Run::default();
        for b in &batches {
            let t = Instant::now();
            call(&client, APPLY, "untracked", b).await;
            untracked.lat.push(t.elapsed());
            untracked.ops += b.len();
        }
        setup
            .batch_execute("DROP INDEX ops_node_seq")
            .await
            .unwrap();
        let mut unindexed = Run::default();
        for b in &batches {
            let t = Instant::now();
            db.apply("unindexed", Some(ReplicaId(REPLICA)), b)
                .await
                .unwrap();
            unindexed.lat.push(t.elapsed());
            unindexed.ops += b.len();
        }
        setup
            .batch_execute("CREATE INDEX ops_node_seq ON ops (space, node, seq)")
            .await
            .unwrap();
        const VALUE_TRIGGERS: [(&str, &str); 6] = [
            ("payloads", "payloads_index_insert"),
            ("payloads", "payloads_index_update"),
            ("payloads", "payloads_index_delete"),
            ("nodes", "nodes_index_insert"),
            ("nodes", "nodes_index_update"),
            ("nodes", "nodes_index_delete"),
        ];
        let toggle = |on: &str| {
            VALUE_TRIGGERS
                .iter()
                .map(|(t, g)| format!("ALTER TABLE {t} {on} TRIGGER {g};"))
                .collect::<String>()
        };
        setup.batch_execute(&toggle("DISABLE")).await.unwrap();
        let mut unvalued = Run::default();
        for b in &batches {
            let t = Instant::now();
            db.apply("unvalued", Some(ReplicaId(REPLICA)), b)
                .await
                .unwrap();
            unvalued.lat.push(t.elapsed());
            unvalued.ops += b.len();
        }
        setup.batch_execute(&toggle("ENABLE")).await.unwrap();
        valuing.push(format!(
            "| {size} | {:.0} | {:.2} | {:.0} | {:.2} | {:.2}x |",
            ours.ops_per_s(),
            ms(ours.pct(0.99)),
            unvalued.ops_per_s(),
            ms(unvalued.pct(0.99)),
            unvalued.ops_per_s() / ours.ops_per_s()
        ));
        indexing.push(format!(
            "| {size} | {:.0} | {:.2} | {:.0} | {:.2} | {:.2}x |",
            ours.ops_per_s(),
            ms(ours.pct(0.99)),
            unindexed.ops_per_s(),
            ms(unindexed.pct(0.99)),
            unindexed.ops_per_s() / ours.ops_per_s()
        ));
        tracking.push(format!(
            "| {size} | {:.0} | {:.2} | {:.0} | {:.2} | {:.2}x |",
            ours.ops_per_s(),
            ms(ours.pct(0.99)),
            untracked.ops_per_s(),
            ms(untracked.pct(0.99)),
            untracked.ops_per_s() / ours.ops_per_s()
        ));
        println!(
            "| {size} | {:.0} | {:.2} | {:.2} | {:.0} | {:.2} | {:.2} | {:.1}x |",
            ours.ops_per_s(),
            ms(ours.pct(0.5)),
            ms(ours.pct(0.99)),
            base.ops_per_s(),
            ms(base.pct(0.5)),
            ms(base.pct(0.99)),
            ours.ops_per_s() / base.ops_per_s()
        );
    }

    println!();
    println!(
        "| in-order batch | tracked (`apply_ops_tracked`) ops/s | p99 ms | untracked (`apply_ops`) ops/s | p99 ms | cost of tracking |"
    );
    println!("|---|---|---|---|---|---|");
    for line in tracking {
        println!("{line}");
    }
    println!();
    println!(
        "| in-order batch | with `ops_node_seq` ops/s | p99 ms | without ops/s | p99 ms | cost of the index |"
    );
    println!("|---|---|---|---|---|---|");
    for line in indexing {
        println!("{line}");
    }

    println!();
    println!(
        "| in-order batch | with the value index ops/s | p99 ms | without ops/s | p99 ms | cost of the index |"
    );
    println!("|---|---|---|---|---|---|");
    for line in valuing {
        println!("{line}");
    }

    // Out of order: one create older than the newest k logged moves.
    println!();
    println!("| undo/redo of | median ms | max ms | reps |");
    println!("|---|---|---|---|");
    let reps = if quick { 3 } else { 5 };
    for k in [1_000usize, 10_000] {
        let mut run = Run::default();
        for rep in 0..reps {
            let below = g.moves[g.moves.len() - k - 1];
            g.next_id += 1;
            let stamp = Stamp::new(below.hlc.0, REPLICA + 1 + rep as u64);
            let key = g.keys.between(None, None).unwrap();
            let op = Op::Move(MoveOp {
                stamp,
                known_seq: 0,
                node: NodeId(g.next_id),
                parent: NodeId::ROOT,
                key,
            });
            let pos = g.moves.partition_point(|s| *s < stamp);
            g.moves.insert(pos, stamp);
            let t = Instant::now();
            db.apply("main", None, std::slice::from_ref(&op))
                .await
                .unwrap();
            run.lat.push(t.elapsed());
            run.ops += 1;
            g.tree.apply(std::slice::from_ref(&op)).unwrap();
        }
        println!(
            "| {k} entries | {:.1} | {:.1} | {reps} |",
            ms(run.pct(0.5)),
            ms(run.pct(1.0))
        );
    }

    // The reference and Postgres agree at the end (the benchmark applied
    // what it claims to).
    let pg = db.state("main").await.unwrap();
    let core = g.tree.state().unwrap();
    assert_eq!(pg.nodes.len(), core.nodes.len());
    assert!(
        pg == core,
        "postgres and the core differ after the benchmark"
    );
    println!(
        "\nfinal state equals the core's ({} nodes)",
        core.nodes.len()
    );
    drop(client);
    if std::env::var("ARBOR_BENCH_PROFILE").is_ok() {
        // Keep the log to read; the process exit stops the cluster.
        std::fs::copy(
            cluster.socket_dir().join("postgres.log"),
            "/tmp/arbor-bench-postgres.log",
        )
        .unwrap();
    }
    cluster.stop();
}
