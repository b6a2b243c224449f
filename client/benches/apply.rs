//! The cost of the local history record on the path of committed ops:
//! `Replica::apply_remote` with the record (the default) and without it
//! (`OpenOptions::no_history`), side by side in one run.
//!
//!     cargo bench -p arbor-client --bench apply
//!
//! Each round gives each variant a fresh replica file (WAL, NORMAL, as the
//! client runs) and feeds it the same 100,000 committed ops (50,000
//! creates under 500 parents, each followed by a set of its text) in
//! batches of 100 (a catch-up page or a busy live feed) and then 2,000 ops
//! one per batch (a quiet live feed). Rounds alternate the variants, so
//! what the machine does meanwhile falls on both; the table gives medians
//! over the rounds.

// A benchmark binary: a failed step is a failed run.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use arbor_client::{OpenOptions, Replica};
use arbor_shared::protocol::{Origin, SeqOp};
use arbor_shared::{MoveOp, NodeId, Op, OrderKey, SetOp, Stamp};

const CREATES: u64 = 50_000;
const PARENTS: u64 = 500;
const SINGLES: u64 = 2_000;
const ROUNDS: usize = 5;

fn key(i: u64) -> OrderKey {
    // Big-endian, then 0x01: ordered, never ending in 0x00.
    let mut b = (i as u32).to_be_bytes().to_vec();
    b.push(1);
    OrderKey::new(&b).expect("a valid key")
}

/// The workload: parents first, then each create followed by its set, in
/// seq order from 1.
fn workload() -> Vec<SeqOp> {
    let author = 0x0a11_ce00_0000_0001u64;
    let mut ops = Vec::new();
    let mut hlc = 1_000_000u64 << 16;
    let push = |op: Op, ops: &mut Vec<SeqOp>| {
        ops.push(SeqOp {
            seq: ops.len() as u64 + 1,
            op,
            origin: Origin::New,
            author: Some("bench".into()),
        });
    };
    for p in 0..PARENTS {
        hlc += 1;
        let op = Op::Move(MoveOp {
            stamp: Stamp::new(hlc, author),
            known_seq: 0,
            node: NodeId(1 + p as u128),
            parent: NodeId::ROOT,
            key: key(p),
        });
        push(op, &mut ops);
    }
    for i in 0..CREATES + SINGLES / 2 {
        let node = NodeId(10_000 + i as u128);
        hlc += 1;
        let create = Op::Move(MoveOp {
            stamp: Stamp::new(hlc, author),
            known_seq: 0,
            node,
            parent: NodeId(1 + (i % PARENTS) as u128),
            key: key(i),
        });
        push(create, &mut ops);
        hlc += 1;
        let set = Op::Set(SetOp {
            stamp: Stamp::new(hlc, author),
            known_seq: 0,
            node,
            field: "text".into(),
            value: Some(format!("thought number {i}")),
        });
        push(set, &mut ops);
    }
    ops
}

struct Run {
    batched_ops_per_s: f64,
    single_p50: Duration,
    single_p99: Duration,
    file_bytes: u64,
}

fn run(ops: &[SeqOp], dir: &std::path::Path, no_history: bool, round: usize) -> Run {
    let path = dir.join(format!("apply-{round}-{no_history}.db"));
    let mut r = Replica::open_with(
        &path,
        OpenOptions {
            no_history,
            ..OpenOptions::default()
        },
    )
    .expect("open");
    let split = ops.len() - SINGLES as usize;
    let start = Instant::now();
    for batch in ops[..split].chunks(100) {
        r.apply_remote(batch).expect("apply");
    }
    let batched = start.elapsed();
    let mut singles = Vec::with_capacity(SINGLES as usize);
    for op in &ops[split..] {
        let t = Instant::now();
        r.apply_remote(std::slice::from_ref(op)).expect("apply");
        singles.push(t.elapsed());
    }
    singles.sort();
    let pct = |p: f64| singles[((singles.len() - 1) as f64 * p) as usize];
    drop(r);
    let file_bytes = ["", "-wal"]
        .iter()
        .map(|suffix| {
            let mut p = path.clone().into_os_string();
            p.push(suffix);
            std::fs::metadata(PathBuf::from(p)).map_or(0, |m| m.len())
        })
        .sum();
    Run {
        batched_ops_per_s: split as f64 / batched.as_secs_f64(),
        single_p50: pct(0.5),
        single_p99: pct(0.99),
        file_bytes,
    }
}

fn median<T: Copy + PartialOrd>(mut v: Vec<T>) -> T {
    v.sort_by(|a, b| a.partial_cmp(b).expect("comparable"));
    v[v.len() / 2]
}

fn main() {
    let dir = std::env::temp_dir().join(format!("arbor-bench-apply-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let ops = workload();
    let mut with = Vec::new();
    let mut without = Vec::new();
    for round in 0..ROUNDS {
        // Alternate which goes first.
        if round % 2 == 0 {
            with.push(run(&ops, &dir, false, round));
            without.push(run(&ops, &dir, true, round));
        } else {
            without.push(run(&ops, &dir, true, round));
            with.push(run(&ops, &dir, false, round));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "apply_remote, {} ops in batches of 100, then {SINGLES} one per batch; median of {ROUNDS} rounds",
        ops.len() - SINGLES as usize
    );
    println!(
        "| variant | batches of 100: ops/s | single op p50 ms | single op p99 ms | file MiB |"
    );
    println!("|---|---|---|---|---|");
    for (name, runs) in [("with history (default)", &with), ("no_history", &without)] {
        println!(
            "| {name} | {:.0} | {:.3} | {:.3} | {:.1} |",
            median(runs.iter().map(|r| r.batched_ops_per_s).collect()),
            median(
                runs.iter()
                    .map(|r| r.single_p50.as_secs_f64() * 1e3)
                    .collect()
            ),
            median(
                runs.iter()
                    .map(|r| r.single_p99.as_secs_f64() * 1e3)
                    .collect()
            ),
            median(
                runs.iter()
                    .map(|r| r.file_bytes as f64 / 1048576.0)
                    .collect()
            ),
        );
    }
    let ratio = median(
        with.iter()
            .zip(&without)
            .map(|(w, n)| n.batched_ops_per_s / w.batched_ops_per_s)
            .collect(),
    );
    println!("batched throughput without / with history (median of rounds): {ratio:.2}x");
}
