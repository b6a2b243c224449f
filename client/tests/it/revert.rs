//! A subtree brought back to a past seq against a real server: the
//! server's answer for the seq (`GET .../subtree/{id}/at`), the replica's
//! new ops, and a second replica that ends with exactly the subtree as it
//! was; the revert is one undo step.

use std::collections::BTreeMap;

use arbor_client::{Position, Replica};
use arbor_shared::auth::Role;
use arbor_shared::http::SubtreeAtBody;
use arbor_shared::{NodeId, OrderKey};

use crate::harness::*;

/// The subtree of `root` as a user sees it: every node below it with its
/// place and fields, and the root's fields.
type Shape = (
    BTreeMap<String, String>,
    BTreeMap<NodeId, (NodeId, OrderKey, BTreeMap<String, String>)>,
);

fn shape(r: &Replica, root: NodeId) -> Shape {
    let mut ids = Vec::new();
    r.walk(root, |id, _| {
        ids.push(id);
        true
    })
    .unwrap();
    let below = ids
        .into_iter()
        .filter(|id| *id != root)
        .map(|id| {
            let p = r.place(id).unwrap().unwrap();
            (id, (p.parent, p.key, r.fields(id).unwrap()))
        })
        .collect();
    (r.fields(root).unwrap(), below)
}

async fn past(server: &TestServer, root: NodeId, seq: u64, role: Role) -> reqwest::Response {
    reqwest::Client::new()
        .get(format!(
            "{}/v1/spaces/s/subtree/{root}/at?seq={seq}",
            server.url()
        ))
        .bearer_auth(token("s", role))
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subtree_goes_back_to_a_past_seq_everywhere_and_the_revert_is_one_undo_step() {
    let server = TestServer::start("s").await;
    let dir = TempDir::new("revert");
    let (a, b) = (dir.replica("a"), dir.replica("b"));
    let (s, c, outside) = {
        let mut r = a.lock().unwrap();
        let s = r
            .create_with(NodeId::ROOT, Position::Last, &[("text", "section")])
            .unwrap();
        let c: Vec<NodeId> = (0..4)
            .map(|i| {
                r.create_with(s, Position::Last, &[("text", &format!("c{i}"))])
                    .unwrap()
            })
            .collect();
        let outside = r
            .create_with(NodeId::ROOT, Position::Last, &[("text", "outside")])
            .unwrap();
        (s, c, outside)
    };
    sync(&server, &a).await;
    sync(&server, &b).await;
    let seq = a.lock().unwrap().cursor().unwrap().unwrap();
    let then = shape(&a.lock().unwrap(), s);
    let outside_then = a.lock().unwrap().place(outside).unwrap().unwrap();

    // Since then, on both replicas: a rename, a delete, a node moved out,
    // one created, one moved in, one moved deeper, a new field on the root.
    let created = {
        let mut r = a.lock().unwrap();
        r.set(c[0], "text", Some("renamed")).unwrap();
        r.delete(c[1]).unwrap();
        r.move_node(c[2], NodeId::ROOT, Position::First).unwrap();
        r.create_with(s, Position::First, &[("text", "new")])
            .unwrap()
    };
    {
        let mut r = b.lock().unwrap();
        r.move_node(outside, s, Position::Last).unwrap();
        r.move_node(c[3], c[0], Position::Last).unwrap();
        r.set(s, "color", Some("red")).unwrap();
    }
    sync(&server, &a).await;
    sync(&server, &b).await;
    sync(&server, &a).await;
    assert_ne!(shape(&a.lock().unwrap(), s), then);

    // The server's answer: the four children then, and where the two
    // newcomers were (one nowhere).
    let r = past(&server, s, seq, Role::Read).await;
    assert_eq!(r.status(), 200);
    let body: SubtreeAtBody = r.json().await.unwrap();
    assert!(body.present);
    assert_eq!(body.nodes.len(), 4);
    let elsewhere: BTreeMap<NodeId, Option<NodeId>> = body
        .elsewhere
        .iter()
        .map(|e| (e.id, e.place.as_ref().map(|p| p.0)))
        .collect();
    assert_eq!(
        elsewhere,
        BTreeMap::from([(created, None), (outside, Some(NodeId::ROOT))])
    );

    let before_revert = shape(&a.lock().unwrap(), s);
    let report = a.lock().unwrap().revert_subtree(&body).unwrap();
    assert!(report.moved >= 5 && report.set >= 2, "{report:?}");
    assert!(report.skipped.is_empty());
    assert_eq!(shape(&a.lock().unwrap(), s), then);
    sync(&server, &a).await;
    sync(&server, &b).await;
    assert_eq!(shape(&b.lock().unwrap(), s), then);
    assert_eq!(
        b.lock().unwrap().place(outside).unwrap(),
        Some(outside_then)
    );
    assert!(b.lock().unwrap().is_deleted(created).unwrap());
    a.lock().unwrap().check_invariants().unwrap();
    b.lock().unwrap().check_invariants().unwrap();

    // The revert is one undo step.
    a.lock().unwrap().undo().unwrap().unwrap();
    assert_eq!(shape(&a.lock().unwrap(), s), before_revert);

    // Outside the recorded history, or by a token limited to a subtree:
    // refused.
    let head = a.lock().unwrap().cursor().unwrap().unwrap();
    assert_eq!(past(&server, s, head + 100, Role::Read).await.status(), 400);
}
