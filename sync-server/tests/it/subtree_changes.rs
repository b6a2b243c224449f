//! The subtree feed's read (`Db::subtree_changes`) stays bounded: a change
//! that moves too many nodes into a root, carries too many register bytes
//! for it, or touches too many nodes at all is answered
//! `snapshot_required` for the roots it concerns, and the other roots of
//! the same read still get their frames.

use std::collections::BTreeSet;

use arbor_shared::protocol::ServerMsg;
use arbor_shared::room::SubtreeAnswer;
use arbor_shared::{NodeId, Op};
use arbor_sync_server::db::{Db, MAX_CHANGED_NODES, MAX_ENTERED_NODES, MAX_REGISTER_BYTES};

use crate::harness::*;

/// A distinct key for the `i`th sibling.
fn key_of(i: usize) -> [u8; 4] {
    [0x80, (i >> 8) as u8, i as u8, 1]
}

/// Applies `ops` in pushes of at most 10,000 (the push cap); returns the
/// space's head.
async fn apply_all(db: &Db, space: &str, ops: &[Op]) -> u64 {
    for chunk in ops.chunks(10_000) {
        db.apply(space, None, chunk).await.unwrap();
    }
    db.space(space).await.unwrap().unwrap().head_seq
}

/// The ops that make `n` children under `parent`, ids from `first`.
fn children(t: &mut u64, parent: NodeId, first: u128, n: usize) -> Vec<Op> {
    (0..n)
        .map(|i| {
            *t += 1;
            mv(*t, 1, NodeId(first + i as u128), parent, &key_of(i), 0)
        })
        .collect()
}

/// The nodes and registers the frames of an answer carry, or `None` for
/// `snapshot_required`.
fn sent(a: &SubtreeAnswer) -> Option<(usize, usize)> {
    match a {
        SubtreeAnswer::SnapshotRequired { .. } => None,
        SubtreeAnswer::Frames(frames) => Some(frames.iter().fold((0, 0), |(n, r), f| match f {
            ServerMsg::Subtree {
                nodes, registers, ..
            } => (n + nodes.len(), r + registers.len()),
            _ => (n, r),
        })),
    }
}

#[tokio::test]
async fn a_change_too_large_for_one_root_sends_it_to_its_snapshot_and_the_others_get_frames() {
    let db = test_db().await;
    db.create_space("s").await.unwrap();
    let mut t = now_ms() << 16;
    let (r1, r2, r3) = (NodeId(1), NodeId(2), NodeId(3));
    let (x, y, z, w) = (NodeId(10), NodeId(11), NodeId(12), NodeId(13));
    let mut ops = Vec::new();
    for (i, n) in [r1, r2, r3, x, y, z, w].into_iter().enumerate() {
        t += 1;
        ops.push(mv(t, 1, n, NodeId::ROOT, &key_of(i), 0));
    }
    // X and Y hold more than half the entered limit each; Z ten nodes; W
    // registers over the register budget.
    let half = MAX_ENTERED_NODES / 2 + 1;
    ops.extend(children(&mut t, x, 1_000_000, half));
    ops.extend(children(&mut t, y, 2_000_000, half));
    ops.extend(children(&mut t, z, 3_000_000, 10));
    let value = "v".repeat(60_000);
    let fat = (MAX_REGISTER_BYTES as usize) / value.len() + 2;
    ops.extend(children(&mut t, w, 4_000_000, fat));
    for i in 0..fat {
        t += 1;
        ops.push(set(
            t,
            1,
            NodeId(4_000_000 + i as u128),
            "text",
            Some(&value),
            0,
        ));
    }
    let cursor = apply_all(&db, "s", &ops).await;
    // X and Y into R1 (too many nodes together), Z into R2, W into R3 (too
    // many register bytes).
    // One push each: the record of place changes is per push.
    let mut head = cursor;
    for (n, parent) in [(x, r1), (y, r1), (z, r2), (w, r3)] {
        t += 1;
        head = apply_all(&db, "s", &[mv(t, 1, n, parent, &[0x80], head)]).await;
    }
    let answers = db
        .subtree_changes("s", cursor, &BTreeSet::from([r1, r2, r3]))
        .await
        .unwrap();
    assert_eq!(
        answers[&r1],
        SubtreeAnswer::SnapshotRequired { head_seq: head }
    );
    assert_eq!(sent(&answers[&r2]), Some((11, 0)));
    assert_eq!(
        answers[&r3],
        SubtreeAnswer::SnapshotRequired { head_seq: head }
    );
    // From after X's move, R1's change is X's sibling Y alone: it fits.
    let answers = db
        .subtree_changes("s", cursor + 1, &BTreeSet::from([r1]))
        .await
        .unwrap();
    assert_eq!(sent(&answers[&r1]), Some((half + 1, 0)));
}

#[tokio::test]
async fn a_change_that_touches_too_many_nodes_sends_every_root_to_its_snapshot() {
    let db = test_db().await;
    db.create_space("s").await.unwrap();
    let mut t = now_ms() << 16;
    let (r, outside) = (NodeId(1), NodeId(2));
    let cursor = apply_all(
        &db,
        "s",
        &[
            mv(t, 1, r, NodeId::ROOT, &[0x80], 0),
            mv(t + 1, 1, outside, NodeId::ROOT, &[0x81], 0),
        ],
    )
    .await;
    t += 2;
    // Just under the cap: the root (which nothing touched) gets a frame.
    let ops = children(&mut t, outside, 1_000_000, MAX_CHANGED_NODES);
    let below = apply_all(&db, "s", &ops).await;
    let answers = db
        .subtree_changes("s", cursor, &BTreeSet::from([r]))
        .await
        .unwrap();
    assert_eq!(sent(&answers[&r]), Some((0, 0)));
    // One more node: too many to look at.
    let head = apply_all(&db, "s", &children(&mut t, outside, 2_000_000, 1)).await;
    assert!(head > below);
    let answers = db
        .subtree_changes("s", cursor, &BTreeSet::from([r]))
        .await
        .unwrap();
    assert_eq!(
        answers[&r],
        SubtreeAnswer::SnapshotRequired { head_seq: head }
    );
}
