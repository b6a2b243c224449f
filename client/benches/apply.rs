//! The cost of the local history record and of the value index on the
//! path of committed ops: `Replica::apply_remote` as the client runs (the
//! default), without the record (`OpenOptions::no_history`) and without
//! the value index (its triggers dropped from the file: no value index or
//! search index writes), side by side in one run.
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

/// The value index's triggers (client schema 6), dropped for the
/// "no value index" variant.
const VALUE_TRIGGERS: &str = "DROP TRIGGER value_index_insert; DROP TRIGGER value_index_update;
     DROP TRIGGER value_index_delete; DROP TRIGGER value_index_node_insert;
     DROP TRIGGER value_index_node_update; DROP TRIGGER value_index_node_delete;";

fn run(ops: &[SeqOp], dir: &std::path::Path, variant: usize, round: usize) -> Run {
    let no_history = variant == 1;
    let path = dir.join(format!("apply-{round}-{variant}.db"));
    let mut r = Replica::open_with(
        &path,
        OpenOptions {
            no_history,
            ..OpenOptions::default()
        },
    )
    .expect("open");
    if variant == 2 {
        r.connection().execute_batch(VALUE_TRIGGERS).expect("drop");
    }
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
    // Default, no history record, no value index.
    let mut runs: [Vec<Run>; 3] = [Vec::new(), Vec::new(), Vec::new()];
    for round in 0..ROUNDS {
        // Rotate which goes first.
        for k in 0..3 {
            let variant = (round + k) % 3;
            runs[variant].push(run(&ops, &dir, variant, round));
        }
    }
    // Building the value index after a cold start: a replica of the
    // workload's state written as a snapshot, loaded into a fresh file
    // (which leaves the index pending), then `build_value_index`.
    let mut builds = Vec::new();
    for round in 0..ROUNDS {
        let source = dir.join(format!("apply-{round}-0.db"));
        let r = Replica::open(&source).expect("open");
        let mut bytes = Vec::new();
        arbor_client::snapshot::write_snapshot(&r, "bench", |chunk| {
            bytes.extend(chunk);
            Ok(())
        })
        .expect("snapshot");
        drop(r);
        let mut fresh = Replica::open(&dir.join(format!("cold-{round}.db"))).expect("open");
        arbor_client::snapshot::load_snapshot(
            &mut fresh,
            bytes
                .chunks(1 << 16)
                .map(|c| Ok::<_, String>(bytes::Bytes::copy_from_slice(c))),
            |_| {},
        )
        .expect("load");
        let t = Instant::now();
        fresh.build_value_index().expect("build");
        builds.push(t.elapsed().as_secs_f64());
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
    let names = [
        "default (history record, value index)",
        "no_history",
        "no value index",
    ];
    for (name, runs) in names.iter().zip(&runs) {
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
    println!(
        "value index built after a cold start of {} registers (median of {ROUNDS}): {:.3} s",
        CREATES,
        median(builds)
    );
    for (k, what) in [(1, "history"), (2, "the value index")] {
        let ratio = median(
            runs[0]
                .iter()
                .zip(&runs[k])
                .map(|(w, n)| n.batched_ops_per_s / w.batched_ops_per_s)
                .collect(),
        );
        println!("batched throughput without / with {what} (median of rounds): {ratio:.2}x");
    }
}
