//! The conflict list against a real server: a value that lost
//! last-writer-wins, a move skipped as a cycle, a move overridden by
//! another replica, and the server's restore of a deleted node reach the
//! replica whose edit did not stand, in the list and in the change events.

use arbor_client::{Conflict, ConflictKind, Position, SharedReplica};
use arbor_shared::NodeId;

use crate::harness::*;

fn kinds(r: &SharedReplica) -> Vec<(NodeId, ConflictKind)> {
    let mut v: Vec<(NodeId, ConflictKind)> = r
        .lock()
        .unwrap()
        .conflicts(100)
        .unwrap()
        .into_iter()
        .map(|c: Conflict| (c.node, c.kind))
        .collect();
    v.reverse();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_that_did_not_stand_and_restores_reach_the_conflict_list() {
    let server = TestServer::start("s").await;
    let dir = TempDir::new("conflicts");
    let (a, b) = (dir.replica("a"), dir.replica("b"));
    let events = a.lock().unwrap().subscribe();
    let (p, q, n, section, inside) = {
        let mut r = a.lock().unwrap();
        let p = r.create(NodeId::ROOT, Position::Last).unwrap();
        let q = r.create(NodeId::ROOT, Position::Last).unwrap();
        let n = r
            .create_with(NodeId::ROOT, Position::Last, &[("text", "a's")])
            .unwrap();
        let section = r.create(NodeId::ROOT, Position::Last).unwrap();
        let inside = r.create(section, Position::Last).unwrap();
        (p, q, n, section, inside)
    };
    sync(&server, &a).await;
    sync(&server, &b).await;

    // A and B write n's text without knowing of each other (both
    // offline): the later stamp wins everywhere, and the replica whose
    // value lost hears of it (the HLCs decide which; either way, exactly
    // one report). A write that knew of the other (after a sync) is an
    // edit, not a conflict.
    a.lock().unwrap().set(n, "text", Some("a2")).unwrap();
    b.lock().unwrap().set(n, "text", Some("b2")).unwrap();
    sync(&server, &a).await;
    sync(&server, &b).await;
    sync(&server, &a).await;
    let won = a.lock().unwrap().field(n, "text").unwrap().unwrap();
    assert_eq!(b.lock().unwrap().field(n, "text").unwrap().unwrap(), won);
    let (loser, lost) = if won == "a2" { (&b, "b2") } else { (&a, "a2") };
    let report = ConflictKind::FieldOverwritten {
        field: "text".into(),
        lost: Some(lost.into()),
        kept: Some(won.clone()),
    };
    let all: Vec<(NodeId, ConflictKind)> = kinds(&a).into_iter().chain(kinds(&b)).collect();
    assert_eq!(all, [(n, report.clone())]);
    assert_eq!(kinds(loser), [(n, report.clone())]);
    if won == "b2" {
        let seen: Vec<ConflictKind> = events
            .try_iter()
            .flat_map(|c| c.conflicts.clone())
            .map(|c| c.kind)
            .collect();
        assert_eq!(seen, [report]);
    }
    for r in [&a, &b] {
        r.lock().unwrap().clear_conflicts().unwrap();
    }
    b.lock().unwrap().set(n, "text", Some("b3")).unwrap();
    sync(&server, &b).await;
    sync(&server, &a).await;
    assert!(kinds(&a).is_empty(), "{:?}", kinds(&a));

    // Offline on both: B moves q under p, A moves p under q. Together they
    // would close a cycle: the later-stamped move is skipped, on whichever
    // replica made it, whatever order they sync in.
    b.lock().unwrap().move_node(q, p, Position::Last).unwrap();
    a.lock().unwrap().move_node(p, q, Position::Last).unwrap();
    sync(&server, &b).await;
    sync(&server, &a).await;
    sync(&server, &b).await;
    let skipped: Vec<(NodeId, ConflictKind)> = kinds(&a).into_iter().chain(kinds(&b)).collect();
    assert!(
        skipped == [(p, ConflictKind::MoveSkipped { parent: q })]
            || skipped == [(q, ConflictKind::MoveSkipped { parent: p })],
        "{skipped:?}"
    );
    for r in [&a, &b] {
        r.lock().unwrap().clear_conflicts().unwrap();
    }

    // A and B move n to different parents without knowing of each other:
    // the later stamp wins, and the replica whose move was overridden
    // hears of it (exactly one report). A move that knew of the other's is
    // an edit, not a conflict.
    a.lock().unwrap().move_node(n, p, Position::Last).unwrap();
    b.lock().unwrap().move_node(n, q, Position::Last).unwrap();
    sync(&server, &a).await;
    sync(&server, &b).await;
    sync(&server, &a).await;
    let parent = a.lock().unwrap().parent(n).unwrap().unwrap();
    assert_eq!(b.lock().unwrap().parent(n).unwrap(), Some(parent));
    let loser = if parent == p { &b } else { &a };
    let all: Vec<(NodeId, ConflictKind)> = kinds(&a).into_iter().chain(kinds(&b)).collect();
    let report = (n, ConflictKind::MoveOverridden { parent });
    assert_eq!(all, std::slice::from_ref(&report));
    assert_eq!(kinds(loser), [report]);
    for r in [&a, &b] {
        r.lock().unwrap().clear_conflicts().unwrap();
    }
    b.lock()
        .unwrap()
        .move_node(n, NodeId::ROOT, Position::Last)
        .unwrap();
    sync(&server, &b).await;
    sync(&server, &a).await;
    assert!(kinds(&a).is_empty(), "{:?}", kinds(&a));

    // A deletes the section while B, not knowing, edits inside it: the
    // server's restore rule brings the section back, and A hears of it.
    a.lock().unwrap().delete(section).unwrap();
    b.lock().unwrap().set(inside, "text", Some("edit")).unwrap();
    sync(&server, &a).await;
    sync(&server, &b).await;
    sync(&server, &a).await;
    let restored = a.lock().unwrap().conflicts(10).unwrap();
    assert_eq!(restored.len(), 1, "{restored:?}");
    assert_eq!(restored[0].node, section);
    assert!(matches!(restored[0].kind, ConflictKind::Restored { .. }));
    assert!(!a.lock().unwrap().is_deleted(section).unwrap());
}
