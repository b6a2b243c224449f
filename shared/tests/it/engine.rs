//! Behaviour of the engine API: queries, LWW, validation, horizon.

use arbor_shared::{Effect, NodeId, Stamp, TreeError, TreeStore};

use crate::util::*;

#[test]
fn children_are_paged_in_key_then_id_order() {
    let mut t = tree();
    // Equal keys fall back to id order.
    apply(
        &mut t,
        &[
            mvk(1, 1, 5, 0, &[0x90]),
            mvk(2, 1, 3, 0, &[0x80]),
            mvk(3, 1, 4, 0, &[0x80]),
            mvk(4, 1, 1, 0, &[0xA0]),
        ],
    );
    let all: Vec<NodeId> = t
        .children(NodeId::ROOT, None, 10)
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(all, vec![n(3), n(4), n(5), n(1)]);
    let page1 = t.children(NodeId::ROOT, None, 2).unwrap();
    let page2 = t.children(NodeId::ROOT, page1.last(), 2).unwrap();
    let ids: Vec<NodeId> = page1.iter().chain(&page2).map(|c| c.id).collect();
    assert_eq!(ids, all);
    assert!(
        t.children(NodeId::ROOT, page2.last(), 2)
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        t.last_child(NodeId::ROOT).unwrap().map(|c| c.id),
        Some(n(1))
    );
    assert_eq!(t.last_child(n(1)).unwrap(), None);
}

#[test]
fn ancestors_subtree_and_trash() {
    let mut t = tree();
    apply(
        &mut t,
        &[
            mv(1, 1, 1, 0),
            mvk(2, 1, 2, 1, &[0x81]),
            mvk(3, 1, 3, 1, &[0x82]),
            mv(4, 1, 4, 2),
        ],
    );
    assert_eq!(t.ancestors(n(4)).unwrap(), vec![n(2), n(1), NodeId::ROOT]);
    let sub: Vec<(NodeId, usize)> = t.subtree(n(1)).map(|r| r.unwrap()).collect();
    assert_eq!(sub, vec![(n(2), 1), (n(4), 2), (n(3), 1)]);
    assert!(!t.is_in_trash(n(4)).unwrap());
    apply(&mut t, &[mv(5, 1, 1, u128::MAX)]);
    assert!(t.is_in_trash(n(4)).unwrap());
    assert_eq!(t.ancestors(n(4)).unwrap().last(), Some(&NodeId::TRASH));
    // Restore is an ordinary move out of the trash.
    apply(&mut t, &[mv(6, 1, 1, 0)]);
    assert!(!t.is_in_trash(n(4)).unwrap());
    assert_eq!(t.node_count().unwrap(), 4);
}

#[test]
fn moving_a_node_under_itself_or_its_descendant_is_skipped_but_logged() {
    let mut t = tree();
    apply(
        &mut t,
        &[
            mv(1, 1, 1, 0),
            mv(2, 1, 2, 1),
            mv(3, 1, 1, 1),
            mv(4, 1, 1, 2),
        ],
    );
    assert_eq!(parent(&t, 1), Some(NodeId::ROOT));
    let log = t.store().log_entries().unwrap();
    assert_eq!(log.len(), 4);
    assert_eq!(log[2].effect, Effect::Skipped);
    assert_eq!(log[3].effect, Effect::Skipped);
}

#[test]
fn sets_are_last_writer_wins_per_field_in_any_order() {
    let ops = [
        set(5, 1, 1, "text", Some("b")),
        set(3, 2, 1, "text", Some("a")),
        set(5, 2, 1, "text", None),
        set(4, 1, 1, "color", Some("red")),
    ];
    let mut a = tree();
    apply(&mut a, &ops);
    let mut b = tree();
    for op in ops.iter().rev() {
        apply(&mut b, std::slice::from_ref(op));
    }
    assert_eq!(a.state().unwrap(), b.state().unwrap());
    let text = a.payload(n(1), "text").unwrap().unwrap();
    assert_eq!((text.stamp, text.value), (Stamp::new(5, 2), None));
    assert_eq!(
        a.payload(n(1), "color").unwrap().unwrap().value.as_deref(),
        Some("red")
    );
}

#[test]
fn an_invalid_op_rejects_the_whole_batch_and_changes_nothing() {
    let mut t = tree();
    apply(&mut t, &[mv(1, 1, 1, 0)]);
    let before = t.state().unwrap();
    let bad = [mv(2, 1, 2, 0), mv(3, 1, 0, 1)]; // second moves ROOT
    assert!(matches!(t.apply(&bad), Err(TreeError::Op(_))));
    let bad = [mv(2, 1, 2, 0), mv(3, 1, u128::MAX, 1)]; // TRASH
    assert!(matches!(t.apply(&bad), Err(TreeError::Op(_))));
    let bad = [mv(2, 1, 2, 0), set(3, 1, 1, &"f".repeat(65), None)];
    assert!(matches!(t.apply(&bad), Err(TreeError::Op(_))));
    assert_eq!(t.state().unwrap(), before);
    assert_eq!(t.store().log_len().unwrap(), 1);
}

#[test]
fn horizon_truncates_the_log_and_refuses_stale_ops() {
    let mut t = tree();
    apply(&mut t, &[mv(1, 1, 1, 0), mv(2, 1, 2, 0), mv(3, 1, 3, 0)]);
    assert_eq!(t.truncate_log(Stamp::new(2, 1)).unwrap(), 2);
    t.check_invariants().unwrap();
    assert_eq!(t.store().log_len().unwrap(), 1);
    let before = t.state().unwrap();
    let err = t.apply(&[mv(4, 1, 4, 0), mv(2, 1, 9, 0)]).unwrap_err();
    assert!(matches!(err, TreeError::Stale { stamp, .. } if stamp == Stamp::new(2, 1)));
    assert_eq!(t.state().unwrap(), before);
    // Lowering the horizon is a no-op.
    assert_eq!(t.truncate_log(Stamp::new(1, 1)).unwrap(), 0);
    assert_eq!(t.horizon().unwrap(), Some(Stamp::new(2, 1)));
    // Ops above the horizon still undo/redo over the remaining log: (4,2)
    // puts 1 under 3 first, so (5,1) moving 3 under 1 is skipped.
    apply(&mut t, &[mv(5, 1, 3, 1), mv(4, 2, 1, 3)]);
    assert_eq!(parent(&t, 1), Some(n(3)));
    assert_eq!(parent(&t, 3), Some(NodeId::ROOT));
}

#[test]
fn ops_under_a_parent_not_yet_received_wait_there() {
    let mut t = tree();
    apply(&mut t, &[mv(2, 1, 2, 1)]); // child before its parent's create
    assert!(t.contains(n(2)).unwrap());
    assert!(!t.contains(n(1)).unwrap());
    assert_eq!(t.ancestors(n(2)).unwrap(), vec![n(1)]);
    apply(&mut t, &[mv(1, 1, 1, 0)]);
    assert_eq!(t.ancestors(n(2)).unwrap(), vec![n(1), NodeId::ROOT]);
    // A later move of the parent under its own (orphan-era) child is a cycle.
    apply(&mut t, &[mv(3, 1, 1, 2)]);
    assert_eq!(parent(&t, 1), Some(NodeId::ROOT));
}

#[test]
fn duplicate_ops_in_and_across_batches_change_nothing() {
    let mut t = tree();
    let ops = [mv(1, 1, 1, 0), mv(2, 1, 2, 1), mv(1, 1, 1, 0)];
    let a = t.apply(&ops).unwrap();
    assert_eq!((a.moves, a.duplicates), (2, 1));
    let state = t.state().unwrap();
    let log = t.store().log_entries().unwrap();
    let a = t.apply(&ops).unwrap();
    assert_eq!((a.moves, a.duplicates), (0, 3));
    assert_eq!(t.state().unwrap(), state);
    assert_eq!(t.store().log_entries().unwrap(), log);
}

#[test]
fn duplicates_above_the_first_new_stamp_are_found_while_merging() {
    let mut t = tree();
    apply(&mut t, &[mv(1, 1, 1, 0), mv(3, 1, 2, 0), mv(5, 1, 3, 0)]);
    let log = t.store().log_entries().unwrap();
    // (4,1) is new; (3,1) and (5,1) are logged already.
    let a = t
        .apply(&[mv(5, 1, 3, 0), mv(4, 1, 3, 1), mv(3, 1, 2, 0)])
        .unwrap();
    t.check_invariants().unwrap();
    assert_eq!((a.moves, a.duplicates, a.redone), (1, 2, 1));
    let after = t.store().log_entries().unwrap();
    assert_eq!(after.len(), log.len() + 1);
    // (5,1) moved 3 under ROOT after (4,1) moved it under 1.
    assert_eq!(parent(&t, 3), Some(NodeId::ROOT));
}

/// A store whose parent links loop (a damaged file) makes no walk loop
/// forever: each stops within node-count steps with `TreeError::Corrupt`.
#[test]
fn walks_over_a_store_with_a_cycle_stop_with_a_typed_error() {
    let mut t = tree();
    // a under ROOT, b under a, c under b, then d, a long chain below c.
    apply(&mut t, &[mv(1, 1, 1, 0), mv(2, 1, 2, 1), mv(3, 1, 3, 2)]);
    let mut chain = Vec::new();
    for i in 0..5_000u64 {
        chain.push(mv(
            10 + i,
            1,
            100 + u128::from(i),
            if i == 0 { 3 } else { 99 + u128::from(i) },
        ));
    }
    apply(&mut t, &chain);
    t.check_invariants().unwrap();
    // Damage the store: a's parent becomes c (a -> c -> b -> a).
    let mut store = t.into_store();
    let (a, c) = (
        store.lookup(n(1)).unwrap().unwrap(),
        store.lookup(n(3)).unwrap().unwrap(),
    );
    let key = store.place(a).unwrap().unwrap().key;
    store
        .set_place(a, arbor_shared::Place { parent: c, key })
        .unwrap();
    let mut t = arbor_shared::Tree::new(store);
    assert!(t.check_invariants().is_err());
    let corrupt = |r: Result<_, TreeError<std::convert::Infallible>>| {
        matches!(r, Err(TreeError::Corrupt { .. }))
    };
    assert!(corrupt(t.ancestors(n(1)).map(|_| ())));
    assert!(corrupt(t.ancestors(n(5_099)).map(|_| ())));
    assert!(corrupt(t.is_ancestor(n(100), n(2)).map(|_| ())));
    assert!(corrupt(t.is_in_trash(n(5_099)).map(|_| ())));
    let mut walked: Vec<_> = t.subtree(n(1)).collect();
    assert!(walked.len() < 20_000, "{} steps", walked.len());
    assert!(corrupt(walked.pop().unwrap().map(|_| ())));
    // A move that needs the cycle check is refused, and changes nothing.
    let before = t.state().unwrap();
    let r = t.apply(&[mv(20_000, 2, 100, 2)]);
    assert!(corrupt(r.map(|_| ())), "the move was applied over a cycle");
    assert_eq!(t.state().unwrap(), before);
}
