//! A node's history from the replica's own record (`Replica::history`)
//! against a real server: for every node, a replica that made the ops and
//! one that received them live give the server's answer entry for entry
//! (seq, op, origin, author, applied), pages included; one that joined by
//! cold start holds what came after its snapshot, and one loaded from the
//! space's export holds it all; trimming forgets the old part only.

use arbor_client::snapshot::load_export;
use arbor_client::{Position, SharedReplica};
use arbor_shared::NodeId;
use arbor_shared::auth::Role;
use arbor_shared::http::{HistoryEntryJson, NodeHistoryBody, Origin};

use crate::harness::*;

async fn server_history(server: &TestServer, node: NodeId) -> Vec<HistoryEntryJson> {
    let body: NodeHistoryBody = server
        .get_json(&format!("/v1/spaces/s/nodes/{node}/history?limit=1000"))
        .await;
    body.entries
}

fn local_history(r: &SharedReplica, node: NodeId) -> Vec<HistoryEntryJson> {
    r.lock()
        .unwrap()
        .history(node, None, 1_000)
        .unwrap()
        .entries
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_history_is_the_servers_history_on_every_replica() {
    let server = TestServer::start("s").await;
    let dir = TempDir::new("history");
    let (a, b) = (dir.replica("a"), dir.replica("b"));
    // Both join the empty space (a cold start at seq 0): everything after
    // reaches them as ops.
    sync(&server, &a).await;
    sync(&server, &b).await;
    let (p, q, n, section, inside) = {
        let mut r = a.lock().unwrap();
        let p = r.create(NodeId::ROOT, Position::Last).unwrap();
        let q = r.create(NodeId::ROOT, Position::Last).unwrap();
        let n = r
            .create_with(NodeId::ROOT, Position::Last, &[("text", "one")])
            .unwrap();
        let section = r.create(NodeId::ROOT, Position::Last).unwrap();
        let inside = r.create(section, Position::Last).unwrap();
        (p, q, n, section, inside)
    };
    sync(&server, &a).await;
    sync(&server, &b).await;
    // Field writes from both, a cycle (one of the two moves is skipped:
    // applied false), a move overridden, a delete undone by the server's
    // restore rule (origin restore).
    a.lock().unwrap().set(n, "text", Some("two")).unwrap();
    b.lock().unwrap().set(n, "text", Some("three")).unwrap();
    b.lock().unwrap().move_node(q, p, Position::Last).unwrap();
    a.lock().unwrap().move_node(p, q, Position::Last).unwrap();
    a.lock().unwrap().move_node(n, p, Position::First).unwrap();
    b.lock().unwrap().move_node(n, q, Position::Last).unwrap();
    a.lock().unwrap().delete(section).unwrap();
    b.lock().unwrap().set(inside, "text", Some("edit")).unwrap();
    for r in [&a, &b, &a, &b] {
        sync(&server, r).await;
    }
    // A replica that starts now loads the state by cold start: its record
    // starts after the snapshot (the server answers for what is before).
    let c = dir.replica("c");
    sync(&server, &c).await;
    let cursor = |r: &SharedReplica| r.lock().unwrap().cursor().unwrap();
    let joined = cursor(&c).unwrap();
    assert_eq!(c.lock().unwrap().history_start().unwrap(), None);
    // More edits after it joined, from all three.
    a.lock().unwrap().set(n, "text", Some("four")).unwrap();
    c.lock()
        .unwrap()
        .move_node(inside, NodeId::ROOT, Position::Last)
        .unwrap();
    b.lock()
        .unwrap()
        .move_node(p, NodeId::ROOT, Position::First)
        .unwrap();
    for r in [&a, &b, &c, &a, &b, &c] {
        sync(&server, r).await;
    }
    assert_eq!(cursor(&a), cursor(&b));
    assert_eq!(cursor(&a), cursor(&c));
    assert_eq!(c.lock().unwrap().history_start().unwrap(), Some(joined + 1));

    let mut restores = 0;
    let mut skipped = 0;
    for node in [p, q, n, section, inside] {
        let want = server_history(&server, node).await;
        assert!(!want.is_empty());
        restores += want.iter().filter(|e| e.origin == Origin::Restore).count();
        skipped += want.iter().filter(|e| e.applied == Some(false)).count();
        for (name, r) in [("a", &a), ("b", &b)] {
            assert_eq!(local_history(r, node), want, "replica {name}, node {node}");
        }
        let since: Vec<HistoryEntryJson> =
            want.iter().filter(|e| e.seq > joined).cloned().collect();
        assert_eq!(local_history(&c, node), since, "replica c, node {node}");
    }
    // The workload did what it is meant to exercise.
    assert!(restores >= 1, "no restore in the history");
    assert_eq!(skipped, 1, "exactly one of the two cycle moves is skipped");

    // A space's export holds its whole log and who owns each replica id: a
    // replica loaded from it has the whole history, from seq 1.
    let export = reqwest::Client::new()
        .get(format!("{}/v1/spaces/s/export", server.url()))
        .bearer_auth(token("s", Role::Read))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let d = dir.replica("d");
    load_export(
        &mut d.lock().unwrap(),
        [Ok::<_, std::convert::Infallible>(export)],
        |_| {},
    )
    .unwrap();
    assert_eq!(d.lock().unwrap().history_start().unwrap(), Some(1));
    for node in [p, q, n, section, inside] {
        assert_eq!(local_history(&d, node), server_history(&server, node).await);
    }

    // Pages: newest first, `before` continues, the last page has no next.
    let all = local_history(&b, n);
    let mut paged = Vec::new();
    let mut before = None;
    loop {
        let page = b.lock().unwrap().history(n, before, 2).unwrap();
        assert!(page.entries.len() <= 2);
        assert_eq!(Some(page.head_seq), cursor(&b));
        paged.extend(page.entries);
        match page.next_before {
            Some(s) => before = Some(s),
            None => break,
        }
    }
    assert_eq!(paged, all);

    // Trimming forgets what is below the seq, and only that.
    let start = b.lock().unwrap().history_start().unwrap().unwrap();
    assert_eq!(start, 1);
    let cut = all[all.len() / 2].seq;
    let removed = b.lock().unwrap().trim_history(cut).unwrap();
    assert!(removed > 0);
    assert_eq!(b.lock().unwrap().history_start().unwrap(), Some(cut));
    let kept: Vec<HistoryEntryJson> = all.into_iter().filter(|e| e.seq >= cut).collect();
    assert_eq!(local_history(&b, n), kept);
}
