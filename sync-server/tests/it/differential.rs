//! Differential test: Postgres' `apply_ops` against the Rust core.
//!
//! Random op sets come from the core's simulation (`sim::Action`: several
//! replicas creating, moving with cycles, deleting, restoring and setting,
//! with random deliveries between them). Each set is split into random
//! batches and pushed in two random orders into spaces of their own. After
//! every push the `nodes` and `payloads` rows must equal the core's state for
//! the same committed ops (restores included) in the same order, and every
//! logged move's effect must equal the core's log entry. Batches naming a
//! node not in the tree yet must be refused (`unknown_node`) without a
//! change and are pushed again later, as a client would.
//!
//! Every batch also goes to a twin space in a database whose restore pass
//! is the simple reference (0002's, every delete of the window a candidate,
//! with 0007's test of which writes restore); the current pass (candidates
//! from the batch's writes) must commit the same ops, restores included
//! (their fresh stamps aside), and refuse the same batches.

use std::collections::HashSet;

use arbor_shared::sim::{Action, Sim, shuffle, splitmix};
use arbor_shared::tree::Effect;
use arbor_shared::{NodeId, Op, Stamp, TreeStore};
use arbor_sync_server::db::{
    Committed, Db, DbError, Origin, RejectCode, replica_from_sql, restore_pass_reference,
};
use uuid::Uuid;

use crate::harness::*;

fn pick(s: &mut u64, n: u64) -> u64 {
    splitmix(s) % n
}

/// The weights of the core's property test.
fn random_action(s: &mut u64) -> Action {
    let r = |s: &mut u64| splitmix(s) as u8;
    let w = |s: &mut u64| splitmix(s) as u16;
    match pick(s, 25) {
        0..=5 => Action::Create {
            replica: r(s),
            parent: w(s),
            pos: r(s),
        },
        6..=10 => Action::Move {
            replica: r(s),
            node: w(s),
            parent: w(s),
            pos: r(s),
        },
        11..=12 => Action::Delete {
            replica: r(s),
            node: w(s),
        },
        13 => Action::Restore {
            replica: r(s),
            node: w(s),
        },
        14..=15 => Action::Set {
            replica: r(s),
            node: w(s),
            field: r(s),
            value: (pick(s, 4)) as u8,
        },
        16..=17 => Action::CrossMove {
            a: r(s),
            b: r(s),
            x: w(s),
            y: w(s),
        },
        18..=21 => Action::Deliver {
            to: r(s),
            count: 1 + pick(s, 11) as u8,
            seed: splitmix(s),
        },
        22 => Action::Redeliver { to: r(s), op: w(s) },
        _ => Action::Tick {
            ms: pick(s, 3) as u16,
        },
    }
}

/// True if every op's target (a move's parent, a set's node) is ROOT, TRASH,
/// in the tree, or moved earlier in the batch: the server's rule.
fn targets_known(reference: &MemTree, batch: &[Op]) -> bool {
    let mut moved = HashSet::new();
    for op in batch {
        let target = match op {
            Op::Move(m) => m.parent,
            Op::Set(s) => s.node,
        };
        if !(target.is_reserved() || reference.contains(target).unwrap() || moved.contains(&target))
        {
            return false;
        }
        if let Op::Move(m) = op {
            moved.insert(m.node);
        }
    }
    true
}

/// Every logged move's effect in Postgres equals the core's log.
pub(crate) async fn check_log(db: &Db, space: &str, reference: &MemTree) {
    let client = db.client().await.unwrap();
    let rows = client
        .query(
            "SELECT o.hlc, o.replica, o.applied, o.prev_parent, o.prev_key FROM ops o
             JOIN spaces s ON s.id = o.space AND s.name = $1
             WHERE o.kind = 'm' ORDER BY o.hlc, o.replica",
            &[&space],
        )
        .await
        .unwrap();
    let log = reference.store().log_entries().unwrap();
    assert_eq!(rows.len(), log.len(), "log length");
    for (row, entry) in rows.iter().zip(&log) {
        let stamp = Stamp::new(row.get::<_, i64>(0) as u64, replica_from_sql(row.get(1)));
        assert_eq!(stamp, entry.stamp);
        let applied: bool = row.get(2);
        let prev_parent: Option<Uuid> = row.get(3);
        let prev_key: Option<Vec<u8>> = row.get(4);
        let pg = (applied, prev_parent.map(|u| NodeId(u.as_u128())), prev_key);
        let core = match &entry.effect {
            Effect::Skipped => (false, None, None),
            Effect::Moved { prev: None } => (true, None, None),
            Effect::Moved { prev: Some(p) } => {
                (true, Some(p.parent), Some(p.key.as_bytes().to_vec()))
            }
        };
        assert_eq!(pg, core, "effect of {stamp:?}");
    }
}

#[derive(Default, Debug)]
struct Stats {
    op_sets: u64,
    ops: u64,
    pushes: u64,
    refused: u64,
    restores: u64,
    out_of_order: u64,
    /// Batches whose one move is older than the log's newest: migration
    /// 0009's path without undo and redo (or its fallback).
    past_single_moves: u64,
    skipped_moves: u64,
}

/// A database whose `arbor_restore_pass` is the simple reference.
async fn legacy_restore_db() -> Db {
    let db = test_db().await;
    let client = db.client().await.unwrap();
    client
        .batch_execute(&restore_pass_reference())
        .await
        .unwrap();
    drop(client);
    db
}

/// An answer with the fresh stamps of restores blanked (the two databases
/// make them at different times).
fn comparable(answer: &Result<Vec<Committed>, DbError>) -> Result<Vec<(u64, Origin, Op)>, String> {
    match answer {
        Ok(got) => Ok(got
            .iter()
            .map(|c| {
                let mut op = c.op.clone();
                if let (Origin::Restore, Op::Move(m)) = (c.origin, &mut op) {
                    m.stamp = Stamp::new(0, m.stamp.replica.0);
                }
                (c.seq, c.origin, op)
            })
            .collect()),
        Err(e) => Err(e.reject_code().map_or("failed", |c| c.as_str()).to_string()),
    }
}

async fn run_case(db: &Db, legacy: &Db, case_seed: u64, stats: &mut Stats) {
    let mut s = case_seed;
    let mut sim = Sim::new(2 + pick(&mut s, 4) as usize);
    sim.check_every_step = false;
    let actions = 10 + pick(&mut s, 70);
    for _ in 0..actions {
        sim.step(&random_action(&mut s)).unwrap();
    }
    let ops = sim.ops.clone();
    stats.op_sets += 1;
    stats.ops += ops.len() as u64;
    let mut finals = Vec::new();
    for perm in 0..2 {
        let space = format!("c{case_seed:x}p{perm}");
        db.create_space(&space).await.unwrap();
        if perm == 0 {
            legacy.create_space(&space).await.unwrap();
        }
        let mut reference = tree();
        let mut order = ops.clone();
        shuffle(&mut order, &mut s);
        let mut queue = std::collections::VecDeque::new();
        let mut rest = &order[..];
        while !rest.is_empty() {
            let k = 1 + pick(&mut s, 8) as usize;
            let (batch, tail) = rest.split_at(k.min(rest.len()));
            queue.push_back(batch.to_vec());
            rest = tail;
        }
        let mut head = 0u64;
        let mut restored = false;
        let mut stuck = 0usize;
        while let Some(batch) = queue.pop_front() {
            let known = targets_known(&reference, &batch);
            let newest = reference
                .store()
                .log_entries()
                .unwrap()
                .last()
                .map(|e| e.stamp);
            let result = db.apply(&space, None, &batch).await;
            stats.pushes += 1;
            if perm == 0 {
                let twin = legacy.apply(&space, None, &batch).await;
                assert_eq!(
                    comparable(&result),
                    comparable(&twin),
                    "the restore pass differs from the reference (case {case_seed:x})"
                );
            }
            if !known {
                let err = result.expect_err("a batch naming an unknown node was accepted");
                assert_eq!(err.reject_code(), Some(RejectCode::UnknownNode), "{err}");
                assert_state_eq(
                    &db.state(&space).await.unwrap(),
                    &reference.state().unwrap(),
                );
                stats.refused += 1;
                queue.push_back(batch);
                stuck += 1;
                if stuck > queue.len() {
                    // Batches waiting on each other: resend op by op.
                    let all: Vec<Op> = queue.drain(..).flatten().collect();
                    queue.extend(all.into_iter().map(|op| vec![op]));
                    stuck = 0;
                }
                continue;
            }
            stuck = 0;
            let got = result.unwrap();
            let new: Vec<u64> = got
                .iter()
                .filter(|c| c.origin != Origin::Duplicate)
                .map(|c| c.seq)
                .collect();
            assert_eq!(
                new,
                ((head + 1)..=(head + new.len() as u64)).collect::<Vec<_>>(),
                "gapless seqs"
            );
            head += new.len() as u64;
            let restores = got.iter().filter(|c| c.origin == Origin::Restore).count() as u64;
            stats.restores += restores;
            restored |= restores > 0;
            if batch
                .iter()
                .any(|op| matches!(op, Op::Move(_)) && newest.is_some_and(|n| op.stamp() < n))
            {
                stats.out_of_order += 1;
                if batch.iter().filter(|op| matches!(op, Op::Move(_))).count() == 1 {
                    stats.past_single_moves += 1;
                }
            }
            check_same(db, &space, &mut reference, &got).await;
            check_log(db, &space, &reference).await;
            crate::values::check_value_index(db, &space).await;
        }
        stats.skipped_moves += reference
            .store()
            .log_entries()
            .unwrap()
            .iter()
            .filter(|e| e.effect == Effect::Skipped)
            .count() as u64;
        finals.push((restored, reference.state().unwrap()));
    }
    // Without restores (whose stamps are fresh), both arrival orders end in
    // the same tree.
    if !finals[0].0 && !finals[1].0 {
        assert_state_eq(&finals[0].1, &finals[1].1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_apply_equals_the_core_on_random_op_sets() {
    let cases: u64 = std::env::var("ARBOR_PG_DIFF_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    let seed = seed("postgres differential");
    let db = test_db().await;
    let legacy = legacy_restore_db().await;
    const TASKS: u64 = 4;
    let mut handles = Vec::new();
    for t in 0..TASKS {
        let (db, legacy) = (db.clone(), legacy.clone());
        handles.push(tokio::spawn(async move {
            let mut stats = Stats::default();
            let mut i = t;
            while i < cases {
                let mut s = seed ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
                let case_seed = splitmix(&mut s);
                run_case(&db, &legacy, case_seed, &mut stats).await;
                i += TASKS;
            }
            stats
        }));
    }
    let mut total = Stats::default();
    for h in handles {
        let s = h.await.unwrap();
        total.op_sets += s.op_sets;
        total.ops += s.ops;
        total.pushes += s.pushes;
        total.refused += s.refused;
        total.restores += s.restores;
        total.out_of_order += s.out_of_order;
        total.past_single_moves += s.past_single_moves;
        total.skipped_moves += s.skipped_moves;
    }
    eprintln!("postgres differential: {total:?}");
    assert_eq!(total.op_sets, cases);
    if cases >= 100 {
        // The run exercised what it claims to.
        assert!(
            total.refused > 0
                && total.restores > 0
                && total.out_of_order > 0
                && total.past_single_moves > 0
                && total.skipped_moves > 0,
            "{total:?}"
        );
    }
}
