//! Arbor vs loro (LoroTree) vs crdt_tree on identical workloads.
//!
//! `cargo bench -p arbor-bench --bench compare` prints a markdown report
//! (copied into `docs/BENCHMARKS.md`). `ARBOR_BENCH_QUICK=1` shrinks every
//! size by 10x for a smoke run.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use arbor_bench::{ArborReplica, CountingAlloc, Generator, Shape, Stats, WOp, Where};
use arbor_shared::{MemoryStore, Op, TreeStore};
use crdt_tree::{Clock as CClock, OpMove, State as CState};
use loro::{ExportMode, LoroDoc, LoroTree, TreeID, TreeParentId};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

const BASE_MS: u64 = 1_750_000_000_000;

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn median(mut xs: Vec<f64>) -> f64 {
    Stats::of(&std::mem::take(&mut xs)).median
}

// ---------------------------------------------------------------- arbor

fn arbor_build(ws: &[WOp], replica: u64) -> ArborReplica {
    let mut r = ArborReplica::new(replica, MemoryStore::new());
    for (i, w) in ws.iter().enumerate() {
        r.local(*w, BASE_MS + i as u64 / 16);
    }
    r
}

// ---------------------------------------------------------------- loro

struct LoroReplica {
    doc: LoroDoc,
    tree: LoroTree,
    /// Node index -> TreeID (index 0 unused: ROOT).
    ids: Vec<TreeID>,
    errors: usize,
}

impl LoroReplica {
    fn new(peer: u64) -> Self {
        let doc = LoroDoc::new();
        doc.set_peer_id(peer).unwrap();
        let tree = doc.get_tree("t");
        tree.enable_fractional_index(8);
        LoroReplica {
            doc,
            tree,
            ids: vec![TreeID::new(0, 0)],
            errors: 0,
        }
    }

    fn parent(&self, i: u32) -> Option<TreeID> {
        (i != 0).then(|| self.ids[i as usize])
    }

    fn build(&mut self, ws: &[WOp]) {
        for w in ws {
            let id = self.tree.create(self.parent(w.parent)).unwrap();
            self.ids.push(id);
        }
        self.doc.commit();
    }

    fn fork(&self, peer: u64) -> Self {
        let snap = self.doc.export(ExportMode::Snapshot).unwrap();
        let doc = LoroDoc::new();
        doc.set_peer_id(peer).unwrap();
        doc.import(&snap).unwrap();
        let tree = doc.get_tree("t");
        LoroReplica {
            doc,
            tree,
            ids: self.ids.clone(),
            errors: 0,
        }
    }

    fn local(&mut self, w: &WOp) {
        let x = self.ids[w.node as usize];
        let r = match w.at {
            Where::Last => self.tree.mov(x, self.parent(w.parent)),
            Where::First => self.tree.mov_to(x, self.parent(w.parent), 0),
            Where::After(s) => self.tree.mov_after(x, self.ids[s as usize]),
        };
        self.errors += usize::from(r.is_err());
    }

    fn updates_for(&self, other: &LoroReplica) -> Vec<u8> {
        self.doc.commit();
        self.doc
            .export(ExportMode::updates(&other.doc.oplog_vv()))
            .unwrap()
    }

    fn parents(&self) -> Vec<Option<TreeParentId>> {
        self.ids
            .iter()
            .skip(1)
            .map(|&t| self.tree.parent(t))
            .collect()
    }
}

// ---------------------------------------------------------------- crdt_tree

type CTree = CState<u32, (), u64>;

fn c_op(op: &Op) -> OpMove<u32, (), u64> {
    let Op::Move(m) = op else { unreachable!() };
    OpMove::new(
        CClock::new(m.stamp.replica.0, Some(m.stamp.hlc.0)),
        m.parent.0 as u32,
        (),
        m.node.0 as u32,
    )
}

/// Runs `f` on a thread with a large stack (crdt_tree recurses once per
/// logged op newer than an incoming one).
fn big_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new()
        .stack_size(4 << 30)
        .spawn(f)
        .unwrap()
        .join()
        .unwrap()
}

// ---------------------------------------------------------------- reports

fn row(cells: &[String]) {
    println!("| {} |", cells.join(" | "));
}

fn header(cols: &[&str]) {
    println!("| {} |", cols.join(" | "));
    println!(
        "|{}|",
        cols.iter().map(|_| "---").collect::<Vec<_>>().join("|")
    );
}

fn fmt_rate(r: f64) -> String {
    if r >= 1e6 {
        format!("{:.2} M/s", r / 1e6)
    } else if r >= 1e4 {
        format!("{:.0} k/s", r / 1e3)
    } else {
        format!("{r:.0} /s")
    }
}

fn bench_build(sizes: &[u32], runs: usize) {
    println!("\n### 1. Build (local creates, each under a uniformly random earlier node)\n");
    header(&[
        "nodes",
        "Arbor median",
        "loro median",
        "crdt_tree median",
        "Arbor vs loro",
        "Arbor vs crdt_tree",
    ]);
    for &n in sizes {
        let ws = Generator::new(42).build(n, Shape::Uniform);
        let mut a = Vec::new();
        let mut l = Vec::new();
        for _ in 0..runs {
            let t = Instant::now();
            let r = arbor_build(&ws, 1);
            a.push(secs(t.elapsed()));
            assert_eq!(r.tree.node_count().unwrap(), u64::from(n));
            drop(r);
            let t = Instant::now();
            let mut lr = LoroReplica::new(1);
            lr.build(&ws);
            l.push(secs(t.elapsed()));
        }
        // crdt_tree inserts each new log entry at the front of a Vec: O(log)
        // per op. Only run it where it finishes within a budget.
        let c = if n <= 10_000 {
            let ws2 = ws.clone();
            let t = big_stack(move || {
                let t = Instant::now();
                let mut s = CTree::new();
                for (i, w) in ws2.iter().enumerate() {
                    s.apply_op(OpMove::new(
                        CClock::new(1, Some(i as u64 + 1)),
                        w.parent,
                        (),
                        w.node,
                    ));
                }
                secs(t.elapsed())
            });
            Some(t)
        } else {
            None
        };
        let (am, lm) = (median(a), median(l));
        row(&[
            n.to_string(),
            format!("{am:.3} s ({})", fmt_rate(f64::from(n) / am)),
            format!("{lm:.3} s ({})", fmt_rate(f64::from(n) / lm)),
            c.map_or("not run (O(log length) per op)".into(), |c| {
                format!("{c:.3} s")
            }),
            format!("{:.1}x", lm / am),
            c.map_or("-".into(), |c| format!("{:.0}x", c / am)),
        ]);
    }
}

/// Two replicas of an `n`-node tree each make `moves` moves offline, then
/// merge both ways. Returns (arbor remote ops/s, loro remote ops/s,
/// crdt_tree remote ops/s if run).
fn bench_merge(
    n: u32,
    moves: u32,
    shape: Shape,
    runs: usize,
    with_crdt_tree: bool,
) -> (f64, f64, Option<f64>) {
    let base_ws = Generator::new(7).build(n, shape);
    let base = arbor_build(&base_ws, 100);
    let mut a_rates = Vec::new();
    let mut l_rates = Vec::new();
    let mut c_rate = None;
    // Every Arbor run first, then every loro run, so neither measures on a
    // heap the other one fragmented.
    let mut workloads = Vec::new();
    for run in 0..runs {
        let mut ra = ArborReplica::new(1, base.tree.store().clone());
        let mut rb = ArborReplica::new(2, base.tree.store().clone());
        let (mut ga, mut gb) = (
            Generator::new(1000 + run as u64),
            Generator::new(2000 + run as u64),
        );
        let (mut wa, mut wb, mut oa, mut ob) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for i in 0..moves {
            let now = BASE_MS + 1_000 + u64::from(i) / 8;
            let w = ga.next_move(&ra.tree, n, shape);
            oa.extend(ra.local(w, now));
            wa.push(w);
            let w = gb.next_move(&rb.tree, n, shape);
            ob.extend(rb.local(w, now));
            wb.push(w);
        }
        let t = Instant::now();
        ra.import(&ob);
        rb.import(&oa);
        let dt = secs(t.elapsed());
        a_rates.push((oa.len() + ob.len()) as f64 / dt);
        assert_eq!(
            ra.tree.state().unwrap(),
            rb.tree.state().unwrap(),
            "arbor replicas diverged"
        );
        ra.tree.check_invariants().unwrap();
        workloads.push((wa, wb, oa, ob));
    }
    drop(base);
    if std::env::var("ARBOR_BENCH_ARBOR_ONLY").is_ok_and(|v| v == "1") {
        // Profiling Arbor alone: skip loro and crdt_tree.
        return (median(a_rates), 1.0, None);
    }
    let mut lbase = LoroReplica::new(100);
    lbase.build(&base_ws);
    for (run, (wa, wb, oa, ob)) in workloads.into_iter().enumerate() {
        let mut la = lbase.fork(1);
        let mut lb = lbase.fork(2);
        for w in &wa {
            la.local(w);
        }
        for w in &wb {
            lb.local(w);
        }
        let (ua, ub) = (la.updates_for(&lb), lb.updates_for(&la));
        let t = Instant::now();
        la.doc.import(&ub).unwrap();
        lb.doc.import(&ua).unwrap();
        let dt = secs(t.elapsed());
        l_rates.push((wa.len() + wb.len()) as f64 / dt);
        assert_eq!(la.parents(), lb.parents(), "loro replicas diverged");

        if with_crdt_tree && run == 0 {
            let base_ops: Vec<Op> = {
                let mut r = ArborReplica::new(100, MemoryStore::new());
                base_ws
                    .iter()
                    .enumerate()
                    .filter_map(|(i, w)| r.local(*w, BASE_MS + i as u64 / 16))
                    .collect()
            };
            let (oa2, ob2) = (oa.clone(), ob.clone());
            c_rate = Some(big_stack(move || {
                let mut s0 = CTree::new();
                for op in &base_ops {
                    s0.apply_op(c_op(op));
                }
                let (mut sa, mut sb) = (s0.clone(), s0);
                for op in &oa2 {
                    sa.apply_op(c_op(op));
                }
                for op in &ob2 {
                    sb.apply_op(c_op(op));
                }
                let t = Instant::now();
                for op in &ob2 {
                    sa.apply_op(c_op(op));
                }
                for op in &oa2 {
                    sb.apply_op(c_op(op));
                }
                let dt = secs(t.elapsed());
                assert!(sa.tree() == sb.tree(), "crdt_tree replicas diverged");
                (oa2.len() + ob2.len()) as f64 / dt
            }));
        }
    }
    (median(a_rates), median(l_rates), c_rate)
}

/// Realtime: two replicas of an `n`-node tree exchange batches of `batch`
/// concurrent moves for `rounds` rounds. Returns per-batch import stats
/// for Arbor and loro (seconds).
fn bench_realtime(
    n: u32,
    batch: u32,
    rounds: u32,
    loro_rounds: u32,
    shape: Shape,
) -> (Stats, Stats) {
    let base_ws = Generator::new(9).build(n, shape);
    let base = arbor_build(&base_ws, 100);
    let mut ra = ArborReplica::new(1, base.tree.store().clone());
    let mut rb = ArborReplica::new(2, base.tree.store().clone());
    drop(base);
    let mut lbase = LoroReplica::new(100);
    lbase.build(&base_ws);
    let mut la = lbase.fork(1);
    let mut lb = lbase.fork(2);
    drop(lbase);
    let (mut ga, mut gb) = (Generator::new(11), Generator::new(12));
    let mut at = Vec::new();
    let mut lt = Vec::new();
    let budget = Instant::now();
    for round in 0..rounds {
        let (mut wa, mut wb, mut oa, mut ob) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for i in 0..batch {
            let now = BASE_MS + 1_000 + u64::from(round * batch + i) / 8;
            let w = ga.next_move(&ra.tree, n, shape);
            oa.extend(ra.local(w, now));
            wa.push(w);
            let w = gb.next_move(&rb.tree, n, shape);
            ob.extend(rb.local(w, now));
            wb.push(w);
        }
        let t = Instant::now();
        ra.import(&ob);
        at.push(secs(t.elapsed()));
        let t = Instant::now();
        rb.import(&oa);
        at.push(secs(t.elapsed()));
        if round < loro_rounds && budget.elapsed() < Duration::from_secs(120) {
            for w in &wa {
                la.local(w);
            }
            for w in &wb {
                lb.local(w);
            }
            let (ua, ub) = (la.updates_for(&lb), lb.updates_for(&la));
            let t = Instant::now();
            la.doc.import(&ub).unwrap();
            lt.push(secs(t.elapsed()));
            let t = Instant::now();
            lb.doc.import(&ua).unwrap();
            lt.push(secs(t.elapsed()));
        }
    }
    assert_eq!(
        ra.tree.state().unwrap(),
        rb.tree.state().unwrap(),
        "arbor replicas diverged"
    );
    assert_eq!(la.parents(), lb.parents(), "loro replicas diverged");
    (Stats::of(&at), Stats::of(&lt))
}

fn bench_memory(n: u32) {
    println!("\n### 4. Peak heap while building a {n}-node replica (counting allocator)\n");
    header(&[
        "library",
        "peak heap",
        "bytes/node (peak)",
        "live after build",
        "bytes/node (live)",
    ]);
    let ws = Generator::new(42).build(n, Shape::Uniform);
    let report = |name: &str, peak: usize, live: usize| {
        row(&[
            name.into(),
            format!("{:.1} MiB", peak as f64 / 1048576.0),
            format!("{:.0}", peak as f64 / f64::from(n)),
            format!("{:.1} MiB", live as f64 / 1048576.0),
            format!("{:.0}", live as f64 / f64::from(n)),
        ]);
    };
    let base = CountingAlloc::live();
    CountingAlloc::reset_peak();
    let r = arbor_build(&ws, 1);
    let (peak, live) = (CountingAlloc::peak() - base, CountingAlloc::live() - base);
    report("Arbor (MemoryStore, full log)", peak, live);
    let mut r = r;
    let h = r.tree.store().log_last().unwrap().unwrap();
    r.tree.truncate_log(h).unwrap();
    let live_no_log = CountingAlloc::live() - base;
    report("Arbor after log truncation", peak, live_no_log);
    drop(r);
    let base = CountingAlloc::live();
    CountingAlloc::reset_peak();
    let mut l = LoroReplica::new(1);
    l.build(&ws);
    let (peak, live) = (CountingAlloc::peak() - base, CountingAlloc::live() - base);
    report("loro", peak, live);
}

fn main() {
    let quick = std::env::var("ARBOR_BENCH_QUICK").is_ok_and(|v| v == "1");
    let div = if quick { 10 } else { 1 };
    // ARBOR_BENCH_ONLY=build,merge,small,realtime,memory runs a subset.
    let only = std::env::var("ARBOR_BENCH_ONLY").unwrap_or_default();
    let run = |section: &str| only.is_empty() || only.split(',').any(|s| s == section);
    println!("## Tree CRDT: Arbor vs loro 1.17.1 vs crdt_tree 0.0.16\n");
    println!(
        "Machine: {} cores. All numbers from one run of this binary.",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    if run("build") {
        bench_build(&[10_000, 100_000 / div, 1_000_000 / div], 3);
    }
    if run("merge") {
        merge_section(div);
    }
    if run("small") {
        small_merge_section(div);
    }
    if run("realtime") {
        realtime_section(div);
    }
    if run("memory") {
        bench_memory(1_000_000 / div);
    }
}

fn merge_section(div: u32) {
    println!(
        "\n### 2. Merge: two replicas of a {}-node tree each make {} moves offline, then merge both ways\n",
        100_000 / div,
        50_000 / div
    );
    header(&[
        "generator",
        "Arbor remote ops/s",
        "loro remote ops/s",
        "Arbor vs loro",
    ]);
    for (shape, name) in [(Shape::Uniform, "uniform"), (Shape::Outliner, "outliner")] {
        let (a, l, _) = bench_merge(100_000 / div, 50_000 / div, shape, 3, false);
        row(&[
            name.into(),
            fmt_rate(a),
            fmt_rate(l),
            format!("{:.0}x", a / l),
        ]);
    }
}

fn small_merge_section(div: u32) {
    println!(
        "\n### 2b. Merge at small scale, with crdt_tree (its out-of-order apply recurses once per newer log entry): 2k-node tree, 1k moves each\n"
    );
    header(&[
        "generator",
        "Arbor remote ops/s",
        "loro remote ops/s",
        "crdt_tree remote ops/s",
        "Arbor vs loro",
        "Arbor vs crdt_tree",
    ]);
    for (shape, name) in [(Shape::Uniform, "uniform"), (Shape::Outliner, "outliner")] {
        let (a, l, c) = bench_merge(2_000 / div, 1_000 / div, shape, 3, true);
        let c = c.unwrap_or(f64::NAN);
        row(&[
            name.into(),
            fmt_rate(a),
            fmt_rate(l),
            fmt_rate(c),
            format!("{:.0}x", a / l),
            format!("{:.0}x", a / c),
        ]);
    }
}

fn realtime_section(div: u32) {
    println!(
        "\n### 3. Realtime: two replicas exchange batches of 100 concurrent moves (per-batch import time)\n"
    );
    header(&[
        "generator",
        "nodes",
        "Arbor p50",
        "Arbor p99",
        "loro p50",
        "loro p99",
        "p99 Arbor vs loro",
    ]);
    let mut p99 = std::collections::BTreeMap::new();
    for (shape, name) in [(Shape::Uniform, "uniform"), (Shape::Outliner, "outliner")] {
        for n in [100_000 / div, 1_000_000 / div] {
            let loro_rounds = if n >= 1_000_000 / div { 10 } else { 50 };
            let (a, l) = bench_realtime(n, 100, 500, loro_rounds, shape);
            p99.insert((name, n), a.p99);
            row(&[
                name.into(),
                n.to_string(),
                format!("{:.3} ms", a.median * 1e3),
                format!("{:.3} ms", a.p99 * 1e3),
                format!("{:.2} ms", l.median * 1e3),
                format!("{:.2} ms", l.p99 * 1e3),
                format!("{:.0}x", l.p99 / a.p99),
            ]);
        }
    }
    println!();
    for name in ["uniform", "outliner"] {
        let (s, b) = (p99[&(name, 100_000 / div)], p99[&(name, 1_000_000 / div)]);
        println!(
            "- {name}: Arbor per-batch p99 at {} nodes / at {} nodes = {:.2}x",
            1_000_000 / div,
            100_000 / div,
            b / s
        );
    }
}
