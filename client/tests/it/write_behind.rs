//! Write-behind on real SQLite files: a held edit is shown (reads and change
//! notifications) before it is saved, a second connection (what a crash
//! leaves) sees only committed edits, pushes never carry held ops, and every
//! other write commits what is held first.

use arbor_client::{Position, Replica};
use arbor_shared::NodeId;

use crate::harness::*;

/// The nodes under ROOT as a second connection to the file sees them: what
/// is saved.
fn saved_children(path: &std::path::Path) -> Vec<NodeId> {
    let other = Replica::open(path).unwrap();
    other
        .children(NodeId::ROOT, None, 1_000)
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect()
}

#[test]
fn a_held_edit_is_shown_at_once_and_saved_at_commit() {
    let dir = TempDir::new("write-behind");
    let path = dir.0.join("r.db");
    let mut r = Replica::open(&path).unwrap();
    let changes = r.subscribe();
    let a = r.create(NodeId::ROOT, Position::Last).unwrap();
    assert!(!r.has_held(), "off by default: every edit commits");
    assert_eq!(saved_children(&path), [a]);
    let _ = changes.try_iter().count();

    r.set_write_behind(true).unwrap();
    let b = r
        .create_with(NodeId::ROOT, Position::Last, &[("title", "b")])
        .unwrap();
    r.set(a, "title", Some("a")).unwrap();
    assert!(r.has_held());
    // Shown: this connection reads it, subscribers heard of it.
    assert_eq!(r.field(b, "title").unwrap().as_deref(), Some("b"));
    let heard: Vec<_> = changes.try_iter().collect();
    assert!(heard.iter().any(|c| c.fields.contains(&b)), "{heard:?}");
    assert!(heard.iter().any(|c| c.fields.contains(&a)), "{heard:?}");
    // Queued, but not for pushing yet (only `a`'s create, saved, is).
    assert_eq!(r.outbox(100).unwrap().len(), 4);
    assert_eq!(r.outbox_len().unwrap(), 4);
    assert_eq!(r.outbox_to_push(100).unwrap().len(), 1);
    // Not saved: what a crash now would leave.
    assert_eq!(saved_children(&path), [a]);

    assert!(r.commit_held().unwrap());
    assert!(!r.has_held());
    assert!(!r.commit_held().unwrap(), "nothing left to commit");
    assert_eq!(saved_children(&path), [a, b]);
    assert_eq!(r.outbox_to_push(100).unwrap().len(), 4);
    r.check_invariants().unwrap();
}

#[test]
fn a_failed_edit_in_the_held_transaction_undoes_only_itself() {
    let dir = TempDir::new("write-behind-fail");
    let path = dir.0.join("r.db");
    let mut r = Replica::open(&path).unwrap();
    r.set_write_behind(true).unwrap();
    let a = r.create(NodeId::ROOT, Position::Last).unwrap();
    let b = r.create(a, Position::Last).unwrap();
    assert!(r.move_node(a, b, Position::Last).is_err(), "a cycle");
    assert!(
        r.move_node(b, NodeId::from_random_bits(7), Position::Last)
            .is_err()
    );
    assert!(r.has_held());
    r.commit_held().unwrap();
    assert_eq!(saved_children(&path), [a]);
    assert_eq!(r.parent(b).unwrap(), Some(a));
    assert_eq!(r.outbox_to_push(100).unwrap().len(), 2);
    r.check_invariants().unwrap();
}

#[test]
fn every_other_write_and_closing_commit_what_is_held() {
    let dir = TempDir::new("write-behind-others");
    let path = dir.0.join("r.db");
    let mut r = Replica::open(&path).unwrap();
    r.set_write_behind(true).unwrap();

    // An undo is a transaction of its own: the held edit is saved first.
    let a = r.create(NodeId::ROOT, Position::Last).unwrap();
    let b = r.create(NodeId::ROOT, Position::Last).unwrap();
    assert!(r.has_held());
    assert!(r.undo().unwrap().is_some());
    assert!(!r.has_held());
    assert_eq!(saved_children(&path), [a]);

    // Acknowledging pushed ops (what sync does) saves what is held too.
    let c = r.create(NodeId::ROOT, Position::Last).unwrap();
    let first = r.outbox_to_push(1).unwrap();
    assert!(r.has_held());
    r.acknowledge(&[first[0].stamp()]).unwrap();
    assert!(!r.has_held());
    assert_eq!(saved_children(&path), [a, c]);

    // Turning it off saves what is held; so does closing the replica.
    let d = r.create(NodeId::ROOT, Position::Last).unwrap();
    r.set_write_behind(false).unwrap();
    assert_eq!(saved_children(&path), [a, c, d]);
    r.set_write_behind(true).unwrap();
    let e = r.create(NodeId::ROOT, Position::Last).unwrap();
    drop(r);
    assert_eq!(saved_children(&path), [a, c, d, e]);
    let _ = b;
}
