//! Migration 0009: a move older than the log's newest is placed without undo
//! and redo when no newer move can change outcome, and otherwise undone and
//! redone as before; either way the state and every logged effect equal the
//! Rust core's.

use std::collections::HashSet;

use arbor_shared::NodeId;
use arbor_shared::sim::splitmix;
use arbor_sync_server::db::{Committed, Db};

use crate::differential::check_log;
use crate::harness::*;

const FOLDERS: u128 = 20;
const LEAVES: u128 = 300;

/// Node rows the push that committed `seq` wrote: 1 or 0 when the move was
/// placed directly, every node moved after its stamp when undone and redone.
async fn rows_written(db: &Db, space: &str, seq: u64) -> i64 {
    db.client()
        .await
        .unwrap()
        .query_one(
            "SELECT count(*) FROM nodes n JOIN spaces s ON s.id = n.space AND s.name = $1
             WHERE n.xmin = (SELECT o.xmin FROM ops o WHERE o.space = s.id AND o.seq = $2)",
            &[&space, &(seq as i64)],
        )
        .await
        .unwrap()
        .get(0)
}

async fn push(db: &Db, space: &str, reference: &mut MemTree, ops: &[arbor_shared::Op]) -> u64 {
    let got: Vec<Committed> = db.apply(space, None, ops).await.unwrap();
    check_same(db, space, reference, &got).await;
    got.last().map_or(0, |c| c.seq)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_moves_equal_the_core_and_skip_undo_and_redo_when_they_can() {
    let seed = seed("past moves");
    let mut s = seed;
    let db = test_db().await;
    db.create_space("s").await.unwrap();
    let mut reference = tree();
    // Build stamps are base + 1000 i; past moves go in the gaps.
    let base = (now_ms() - 60_000) << 16;
    let mut i = 0u64;
    let stamp = |i: &mut u64| {
        *i += 1;
        base + 1000 * *i
    };
    let folder = |f: u128| n(1_000 + f);
    let leaf = |l: u128| n(10_000 + l);
    let mut head = 0;
    let ops: Vec<_> = (0..FOLDERS)
        .map(|f| {
            mv(
                stamp(&mut i),
                1,
                folder(f),
                NodeId::ROOT,
                &[0x40, f as u8 + 1],
                0,
            )
        })
        .collect();
    head = head.max(push(&db, "s", &mut reference, &ops).await);
    let ops: Vec<_> = (0..LEAVES)
        .map(|l| {
            let to = folder(u128::from(splitmix(&mut s)) % FOLDERS);
            mv(
                stamp(&mut i),
                1,
                leaf(l),
                to,
                &[0x40, (l % 200) as u8 + 1],
                head,
            )
        })
        .collect();
    head = head.max(push(&db, "s", &mut reference, &ops).await);
    let first_leaf_move = i;
    // Newer moves of leaves only: between folders, indents under leaves
    // (some skipped as cycles), deletes and moves back to ROOT.
    for _ in 0..20 {
        let ops: Vec<_> = (0..100)
            .map(|_| {
                let x = leaf(u128::from(splitmix(&mut s)) % LEAVES);
                let to = match splitmix(&mut s) % 20 {
                    0 => NodeId::TRASH,
                    1 => NodeId::ROOT,
                    2..=5 => leaf(u128::from(splitmix(&mut s)) % LEAVES),
                    _ => folder(u128::from(splitmix(&mut s)) % FOLDERS),
                };
                mv(
                    stamp(&mut i),
                    1,
                    x,
                    to,
                    &[0x50, (splitmix(&mut s) % 250) as u8 + 1],
                    head,
                )
            })
            .collect();
        head = head.max(push(&db, "s", &mut reference, &ops).await);
    }
    let newest = i;

    // A create under a folder (no folder has moved yet), older than every leaf
    // move: one row written.
    let at = base + 1000 * first_leaf_move + 999;
    let seq = push(
        &db,
        "s",
        &mut reference,
        &[mv(at, 3, n(90_000), folder(0), &[0x70], head)],
    )
    .await;
    assert_eq!(rows_written(&db, "s", seq).await, 1, "placed directly");
    check_log(&db, "s", &reference).await;

    // Random past moves, each alone in its push, each checked against the
    // core (state and every logged effect).
    let mut used = HashSet::new();
    let (mut direct, mut redone) = (0, 0);
    for k in 0..150u128 {
        let at = loop {
            let at = base
                + 1000 * (first_leaf_move + splitmix(&mut s) % (newest - first_leaf_move))
                + 1
                + splitmix(&mut s) % 998;
            if used.insert(at) {
                break at;
            }
        };
        let x = match splitmix(&mut s) % 10 {
            0 => n(50_000 + k), // a create
            1 => folder(u128::from(splitmix(&mut s)) % FOLDERS),
            _ => leaf(u128::from(splitmix(&mut s)) % LEAVES),
        };
        let to = match splitmix(&mut s) % 10 {
            0 => NodeId::TRASH,
            1 => NodeId::ROOT,
            2..=3 => leaf(u128::from(splitmix(&mut s)) % LEAVES),
            _ => folder(u128::from(splitmix(&mut s)) % FOLDERS),
        };
        if !reference.contains(to).unwrap() && !to.is_reserved() {
            continue;
        }
        let op = mv(at, 2, x, to, &[0x60, (k % 250) as u8 + 1], head);
        let seq = push(&db, "s", &mut reference, &[op]).await;
        head = head.max(seq);
        check_log(&db, "s", &reference).await;
        if rows_written(&db, "s", seq).await <= 1 {
            direct += 1;
        } else {
            redone += 1;
        }
    }
    eprintln!("past moves: {direct} placed directly, {redone} undone and redone");
    assert!(
        direct > 0,
        "the direct path never ran ({redone} undone and redone)"
    );

    // A past move that changes a newer move's outcome: B under A before
    // "A under B" makes that move a cycle, so it is undone and redone.
    let (a, b) = (n(80_001), n(80_002));
    let at = |k: u64| base + 1000 * (newest + k);
    head = head.max(
        push(
            &db,
            "s",
            &mut reference,
            &[
                mv(at(1), 1, a, folder(1), &[0x41], head),
                mv(at(2), 1, b, folder(1), &[0x42], head),
                mv(at(3), 1, a, b, &[0x43], head),
            ],
        )
        .await,
    );
    let seq = push(
        &db,
        "s",
        &mut reference,
        &[mv(at(2) + 500, 2, b, a, &[0x44], head)],
    )
    .await;
    assert!(rows_written(&db, "s", seq).await > 1, "undone and redone");
    check_log(&db, "s", &reference).await;
}
