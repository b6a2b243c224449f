//! Tokens limited to a subtree (the `root` claim, migration 0012): a
//! scoped push stays inside its subtree, and a scoped token reads nothing
//! outside it (children, subtree snapshots) and no whole-space route.

use arbor_shared::auth::{Claims, Role, mint};
use arbor_shared::{NodeId, Op};
use arbor_sync_server::db::{Committed, Db, DbError, Origin, Pusher, RejectCode};

use crate::harness::*;
use crate::http::{Server, error_code, key};

const A: NodeId = NodeId(1);
const B: NodeId = NodeId(2);
const C: NodeId = NodeId(3);
const D: NodeId = NodeId(4);
const E: NodeId = NodeId(5);
const F: NodeId = NodeId(6);

/// ROOT -> A -> {B -> C, D}; ROOT -> E -> F, in two batches from `t`. C
/// is made under E and moved into B by the second batch, so the log has a
/// move of C from outside A.
fn seed_ops(t: u64) -> [Vec<Op>; 2] {
    [
        vec![
            mv(t, 1, A, NodeId::ROOT, &[0x80], 0),
            mv(t + 1, 1, B, A, &[0x80], 0),
            mv(t + 2, 1, D, A, &[0x81], 0),
            mv(t + 3, 1, E, NodeId::ROOT, &[0x81], 0),
            mv(t + 4, 1, F, E, &[0x80], 0),
            mv(t + 5, 1, C, E, &[0x81], 0),
            set(t + 6, 1, E, "text", Some("outside"), 0),
            set(t + 7, 1, C, "text", Some("c"), 0),
        ],
        vec![mv(t + 8, 1, C, B, &[0x80], 8)],
    ]
}

/// The space `space` with [`seed_ops`]; returns the next free hlc.
async fn seed(db: &Db, space: &str) -> u64 {
    db.create_space(space).await.unwrap();
    let t = now_ms() << 16;
    for ops in seed_ops(t) {
        db.apply(space, None, &ops).await.unwrap();
    }
    t + 9
}

fn scoped(sub: &str) -> Pusher<'_> {
    Pusher {
        author: None,
        sub: Some(sub),
        root: Some(A),
    }
}

async fn head(db: &Db, space: &str) -> u64 {
    db.space(space).await.unwrap().unwrap().head_seq
}

async fn refused(db: &Db, space: &str, ops: &[Op]) -> DbError {
    let before = (head(db, space).await, db.state(space).await.unwrap());
    let err = db
        .apply_as(space, scoped("scoped"), ops)
        .await
        .expect_err("a push outside the subtree was committed");
    let after = (head(db, space).await, db.state(space).await.unwrap());
    assert!(before == after, "a refused push changed the space");
    err
}

fn code(e: &DbError) -> Option<RejectCode> {
    e.reject_code()
}

#[tokio::test]
async fn a_scoped_push_stays_inside_its_subtree() {
    let db = test_db().await;
    let mut t = seed(&db, "s").await;
    let mut next = || {
        t += 1;
        t
    };
    let x = NodeId(10);
    let y = NodeId(11);
    // Inside: a create and its child in one batch, a set on the root and
    // on a node, a move within, a delete and the restore of what it
    // deleted.
    let ok: Vec<Vec<Op>> = vec![
        vec![
            mv(next(), 9, x, A, &[0x82], 8),
            mv(next(), 9, y, x, &[0x80], 8),
            set(next(), 9, y, "text", Some("new"), 8),
        ],
        vec![set(next(), 9, A, "text", Some("root title"), 8)],
        vec![mv(next(), 9, C, D, &[0x80], 8)],
        vec![mv(next(), 9, B, NodeId::TRASH, &[0x80], 8)],
        vec![set(next(), 9, B, "text", Some("in the trash"), 8)],
        vec![mv(next(), 9, B, A, &[0x83], 8)],
    ];
    for ops in &ok {
        let answer = db.apply_as("s", scoped("scoped"), ops).await;
        assert!(answer.is_ok(), "{ops:?}: {answer:?}");
    }
    // Outside, each refused whole with nothing written: moving the root,
    // a node out, a node in, a set outside, an id the space has not stored
    // (as parent or as node: refused out_of_scope, never unknown_node), a
    // create outside, and a batch whose second op is outside.
    let unknown = NodeId(99);
    let bad: Vec<Vec<Op>> = vec![
        vec![mv(next(), 9, A, D, &[0x80], 8)],
        vec![mv(next(), 9, A, NodeId::TRASH, &[0x80], 8)],
        vec![mv(next(), 9, C, E, &[0x80], 8)],
        vec![mv(next(), 9, C, NodeId::ROOT, &[0x80], 8)],
        vec![mv(next(), 9, E, A, &[0x80], 8)],
        vec![mv(next(), 9, F, D, &[0x80], 8)],
        vec![set(next(), 9, E, "text", Some("mine"), 8)],
        vec![set(next(), 9, unknown, "text", Some("?"), 8)],
        vec![mv(next(), 9, NodeId(12), unknown, &[0x80], 8)],
        vec![mv(next(), 9, NodeId(12), NodeId::ROOT, &[0x80], 8)],
        vec![
            mv(next(), 9, NodeId(12), A, &[0x84], 8),
            mv(next(), 9, NodeId(12), E, &[0x80], 8),
        ],
    ];
    for ops in &bad {
        let err = refused(&db, "s", ops).await;
        assert_eq!(code(&err), Some(RejectCode::OutOfScope), "{ops:?}: {err}");
    }
    // A node deleted from outside the subtree stays out of reach.
    db.apply("s", None, &[mv(next(), 1, F, NodeId::TRASH, &[0x80], 8)])
        .await
        .unwrap();
    let err = refused(&db, "s", &[mv(next(), 9, F, A, &[0x85], 8)]).await;
    assert_eq!(code(&err), Some(RejectCode::OutOfScope), "{err}");
}

#[tokio::test]
async fn a_scoped_push_never_restores_outside_its_subtree_and_a_repush_is_a_duplicate() {
    let db = test_db().await;
    let mut t = seed(&db, "s").await;
    // A scoped edit of C, committed; then C is moved out by an unscoped
    // user: re-pushing the edit (its ack was lost, say) is answered as the
    // duplicate it is, not refused.
    t += 1;
    let edit = [set(t, 9, C, "text", Some("edited"), 8)];
    db.apply_as("s", scoped("scoped"), &edit).await.unwrap();
    let seq_of_edit = head(&db, "s").await;
    t += 1;
    db.apply("s", None, &[mv(t, 1, C, E, &[0x82], seq_of_edit)])
        .await
        .unwrap();
    let again = db.apply_as("s", scoped("scoped"), &edit).await.unwrap();
    assert_eq!(
        (again[0].origin, again[0].seq),
        (Origin::Duplicate, seq_of_edit)
    );
    // The owner deletes A. A scoped edit inside A made without knowing of
    // the delete would make the restore rule put A back under ROOT, a
    // write outside the subtree: refused, nothing written. The same edit
    // by an unscoped writer restores A.
    let known = head(&db, "s").await;
    t += 1;
    db.apply("s", None, &[mv(t, 1, A, NodeId::TRASH, &[0x80], known)])
        .await
        .unwrap();
    t += 1;
    let concurrent = [set(t, 9, D, "text", Some("concurrent"), known)];
    let err = refused(&db, "s", &concurrent).await;
    assert_eq!(code(&err), Some(RejectCode::OutOfScope), "{err}");
    let unscoped = [set(t, 10, D, "text", Some("concurrent"), known)];
    let committed: Vec<Committed> = db
        .apply_as(
            "s",
            Pusher {
                author: None,
                sub: Some("owner"),
                root: None,
            },
            &unscoped,
        )
        .await
        .unwrap();
    assert!(
        committed
            .iter()
            .any(|c| c.origin == Origin::Restore && c.op.node() == A),
        "{committed:?}"
    );
}

/// A scoped move from the past whose undo and redo would make another
/// user's skipped move valid again and pull an outside node into the
/// subtree is refused (migration 0014), and writes nothing.
#[tokio::test]
async fn a_scoped_move_from_the_past_cannot_pull_an_outside_node_in() {
    let db = test_db().await;
    let t = seed(&db, "s").await;
    let (o, p) = (NodeId(40), NodeId(41));
    // O and P outside; P under O (t+1); O under P (t+3) is a cycle, skipped;
    // P then moved into A (t+4).
    db.apply(
        "s",
        None,
        &[
            mv(t, 1, o, NodeId::ROOT, &[0x90], 9),
            mv(t + 1, 1, p, o, &[0x80], 9),
        ],
    )
    .await
    .unwrap();
    db.apply("s", None, &[mv(t + 3, 2, o, p, &[0x80], 9)])
        .await
        .unwrap();
    db.apply("s", None, &[mv(t + 4, 1, p, A, &[0x85], 9)])
        .await
        .unwrap();
    let state = db.state("s").await.unwrap();
    assert_eq!(state.nodes[&o].parent, NodeId::ROOT);
    // A scoped move of P (inside) stamped between the two: replayed after
    // it, O under P is no longer a cycle.
    let err = refused(&db, "s", &[mv(t + 2, 9, p, D, &[0x80], 9)]).await;
    assert_eq!(code(&err), Some(RejectCode::OutOfScope), "{err}");
    // The same move by an unscoped writer does pull O in: the case is real.
    let committed = db
        .apply("s", None, &[mv(t + 2, 3, p, D, &[0x80], 9)])
        .await
        .unwrap();
    assert!(!committed.is_empty());
    let state = db.state("s").await.unwrap();
    assert_eq!(state.nodes[&o].parent, p);
}

/// Nodes hanging under an id the space has not stored (an import allows
/// them: a replica's snapshot taken before a parent's create arrived) are
/// outside every subtree; a scoped create of that id inside the subtree
/// would pull them in, so it is refused (migration 0015). The same create
/// by an unscoped writer does pull them in: the case is real.
#[tokio::test]
async fn a_scoped_create_cannot_take_an_id_that_outside_nodes_hang_under() {
    let name = test_db_name().await;
    let cluster = arbor_testkit::PgCluster::shared();
    let db = Db::new(cluster.config(&name), 4).unwrap();
    let t = seed(&db, "s").await;
    let (waited, orphan) = (NodeId(50), NodeId(51));
    // What the import of such a snapshot leaves (docs/PROTOCOL.md, import).
    let sql = cluster.connect(&name).await.unwrap();
    sql.execute(
        "INSERT INTO nodes (space, id, parent, key)
         SELECT s.id, $1, $2, '\\x80'::bytea FROM spaces s WHERE s.name = 's'",
        &[
            &uuid::Uuid::from_u128(orphan.0),
            &uuid::Uuid::from_u128(waited.0),
        ],
    )
    .await
    .unwrap();
    let err = refused(&db, "s", &[mv(t, 9, waited, D, &[0x80], 9)]).await;
    assert_eq!(code(&err), Some(RejectCode::OutOfScope), "{err}");
    // A fresh id is still a create the scoped writer may make.
    db.apply_as(
        "s",
        scoped("scoped"),
        &[mv(t + 1, 9, NodeId(52), D, &[0x80], 9)],
    )
    .await
    .unwrap();
    db.apply("s", None, &[mv(t + 2, 3, waited, D, &[0x81], 9)])
        .await
        .unwrap();
    let state = db.state("s").await.unwrap();
    assert_eq!(state.nodes[&orphan].parent, waited);
    assert_eq!(state.nodes[&waited].parent, D);
}

pub(crate) fn scoped_token(space: &str, role: Role, root: NodeId) -> String {
    let claims = Claims {
        root: Some(root),
        ..arbor_testkit::tokens::claims("scoped", space, role, 60)
    };
    mint(&claims, &key())
}

#[tokio::test]
async fn a_scoped_token_reads_its_subtree_and_nothing_else() {
    let (s, admin) = Server::start_demo().await;
    let t = now_ms() << 16;
    for ops in seed_ops(t) {
        assert_eq!(s.push("demo", &admin, &ops).await.status(), 200);
    }
    let read = scoped_token("demo", Role::Read, A);
    let status = |r: reqwest::Response| r.status().as_u16();

    // Children: of the root and below it; nothing outside, and an id the
    // space has not stored looks the same as one outside.
    let page: arbor_sync_server::api::ChildrenBody = s
        .get_json(&format!("/v1/spaces/demo/nodes/{A}/children"), &read)
        .await;
    let ids: Vec<NodeId> = page.children.iter().map(|c| c.id).collect();
    assert_eq!(ids, [B, D]);
    let page: arbor_sync_server::api::ChildrenBody = s
        .get_json(&format!("/v1/spaces/demo/nodes/{B}/children"), &read)
        .await;
    assert_eq!(page.children.len(), 1);
    assert_eq!(page.children[0].id, C);
    for outside in [NodeId::ROOT, NodeId::TRASH, E, F, NodeId(99)] {
        let r = s
            .get(&format!("/v1/spaces/demo/nodes/{outside}/children"), &read)
            .await;
        assert_eq!(
            error_code(r).await,
            (403, "out_of_scope".into()),
            "{outside}"
        );
    }

    // The whole-space routes are refused (the live feed is the subtree's:
    // see the next test).
    for path in ["snapshot", "export", "ops?after=0"] {
        let r = s.get(&format!("/v1/spaces/demo/{path}"), &read).await;
        assert_eq!(error_code(r).await, (403, "out_of_scope".into()), "{path}");
    }

    // A subtree snapshot inside: its rows, and a log that names no node
    // outside the subtree (the move of C from E is left out, as are the
    // owners of replicas the log does not name).
    let r = s
        .get(&format!("/v1/spaces/demo/subtree/{B}/snapshot"), &read)
        .await;
    assert_eq!(r.status(), 200);
    let body = r.bytes().await.unwrap();
    let (header, sections) = crate::snapshot::parse(&body).unwrap();
    let nodes: Vec<NodeId> = sections[0]
        .iter()
        .map(|r| crate::snapshot::uuid(&r[0]))
        .collect();
    assert_eq!((nodes.len(), header.root), (2, Some(B)));
    assert!(nodes.contains(&B) && nodes.contains(&C));
    let inside = [A, B, C, D, NodeId::TRASH];
    // The subtree's own root names ROOT as its parent, not A.
    let b_row = sections[0]
        .iter()
        .find(|r| crate::snapshot::uuid(&r[0]) == B)
        .unwrap();
    assert_eq!(crate::snapshot::uuid(&b_row[1]), NodeId::ROOT);
    for row in &sections[2] {
        for col in [4, 5, 11] {
            if let Some(id) = row[col]
                .as_ref()
                .map(|b| crate::snapshot::uuid(&Some(b.clone())))
            {
                assert!(inside.contains(&id), "the log names {id}");
            }
        }
    }
    // The unscoped subtree snapshot of B does carry that move.
    let full = s
        .get(&format!("/v1/spaces/demo/subtree/{B}/snapshot"), &admin)
        .await;
    let (full_header, full_sections) =
        crate::snapshot::parse(&full.bytes().await.unwrap()).unwrap();
    assert!(
        full_header.log > header.log,
        "{full_header:?} vs {header:?}"
    );
    assert!(full_sections[2].len() > sections[2].len());
    for outside in [E, F, NodeId::ROOT, NodeId(99)] {
        let r = s
            .get(
                &format!("/v1/spaces/demo/subtree/{outside}/snapshot"),
                &read,
            )
            .await;
        assert_eq!(
            error_code(r).await,
            (403, "out_of_scope".into()),
            "{outside}"
        );
    }

    // Pushes: a scoped reader may not; a scoped writer inside, yes;
    // outside, out_of_scope and nothing committed.
    let write = scoped_token("demo", Role::Write, A);
    let inside_op = [mv(t + 20, 0x55, NodeId(20), A, &[0x82], 9)];
    let r = s.push("demo", &read, &inside_op).await;
    assert_eq!(error_code(r).await, (403, "forbidden".into()));
    assert_eq!(status(s.push("demo", &write, &inside_op).await), 200);
    let outside_op = [mv(t + 21, 0x55, NodeId(21), E, &[0x82], 9)];
    let r = s.push("demo", &write, &outside_op).await;
    assert_eq!(error_code(r).await, (403, "out_of_scope".into()));
    let ops: arbor_shared::http::OpsBody = s.get_json("/v1/spaces/demo/ops?after=0", &admin).await;
    assert_eq!(ops.ops.len(), 10, "the refused push committed something");

    // Catch-up over HTTP: the subtree's changes, for its own root only.
    let changes = |roots: Vec<NodeId>| {
        s.http
            .post(s.url("/v1/spaces/demo/subtree/changes"))
            .bearer_auth(&read)
            .json(&serde_json::json!({ "after": 9, "roots": roots }))
            .send()
    };
    let r = changes(vec![A]).await.unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    let body: arbor_shared::http::SubtreeChangesAnswer = r.json().await.unwrap();
    let frames = body.answers[0].frames.clone().unwrap();
    let text = serde_json::to_string(&frames).unwrap();
    assert!(text.contains(&NodeId(20).to_string()), "{text}");
    assert!(!text.contains(&E.to_string()), "{text}");
    let r = changes(vec![A, E]).await.unwrap();
    assert_eq!(error_code(r).await, (403, "out_of_scope".into()));

    // A root claim only on read and write tokens, and never TRASH.
    for (role, root) in [
        (Role::Admin, A),
        (Role::Service, A),
        (Role::Read, NodeId::TRASH),
    ] {
        let r = s
            .get(
                &format!("/v1/spaces/demo/nodes/{A}/children"),
                scoped_token("demo", role, root),
            )
            .await;
        assert_eq!(
            error_code(r).await,
            (401, "bad_token".into()),
            "{role:?} {root}"
        );
    }
    s.stop().await;
}

#[tokio::test]
async fn a_scoped_socket_gets_its_subtree_changes_and_nothing_else() {
    use arbor_shared::protocol::{ClientMsg, ServerMsg};
    let (s, admin) = Server::start_demo().await;
    let t = now_ms() << 16;
    for ops in seed_ops(t) {
        assert_eq!(s.push("demo", &admin, &ops).await.status(), 200);
    }
    let read = scoped_token("demo", Role::Read, A);
    let hello = |cursor: Option<u64>, root: Option<NodeId>| ClientMsg::Hello {
        v: 1,
        replica: arbor_shared::ReplicaId(0x5c0),
        cursor,
        root,
    };
    // Another root than the claim: refused.
    let mut ws = crate::ws::connect(&s, "demo", &read).await.unwrap();
    crate::ws::send(&mut ws, hello(Some(9), Some(B))).await;
    match crate::ws::recv(&mut ws).await {
        ServerMsg::Error { code, .. } => assert_eq!(code, arbor_shared::ErrorCode::OutOfScope),
        other => panic!("{other:?}"),
    }
    // No cursor: a subtree replica starts from its subtree snapshot.
    let mut ws = crate::ws::connect(&s, "demo", &read).await.unwrap();
    crate::ws::send(&mut ws, hello(None, None)).await;
    assert!(matches!(
        crate::ws::recv(&mut ws).await,
        ServerMsg::SnapshotRequired { .. }
    ));
    // From the state at seq 9 (the seed): a create inside comes as a
    // node and its register; a create outside, and a set outside, come as
    // nothing but the new head; a move out is a removal.
    let mut ws = crate::ws::connect(&s, "demo", &read).await.unwrap();
    crate::ws::send(&mut ws, hello(Some(9), None)).await;
    assert!(matches!(
        crate::ws::recv(&mut ws).await,
        ServerMsg::Welcome { .. }
    ));
    let x = NodeId(30);
    let steps: Vec<Op> = vec![
        mv(t + 30, 1, x, D, &[0x80], 9),
        mv(t + 31, 1, NodeId(31), E, &[0x82], 9),
        set(t + 32, 1, E, "text", Some("secret"), 9),
        mv(t + 33, 1, C, F, &[0x80], 9),
    ];
    let mut frames = Vec::new();
    for (i, op) in steps.iter().enumerate() {
        assert_eq!(
            s.push("demo", &admin, std::slice::from_ref(op))
                .await
                .status(),
            200
        );
        loop {
            let msg = crate::ws::recv(&mut ws).await;
            if let ServerMsg::Subtree { head_seq, .. } = &msg {
                let done = *head_seq == Some(10 + i as u64);
                frames.push(msg);
                if done {
                    break;
                }
            }
        }
    }
    let text = frames
        .iter()
        .map(|f| serde_json::to_string(f).unwrap())
        .collect::<Vec<_>>()
        .join("\n");
    for outside in [E, F, NodeId(31)] {
        assert!(
            !text.contains(&outside.to_string()),
            "{outside} leaked: {text}"
        );
    }
    assert!(!text.contains("secret"), "{text}");
    match &frames[0] {
        ServerMsg::Subtree {
            nodes, registers, ..
        } => {
            assert_eq!((nodes.len(), nodes[0].id, nodes[0].parent), (1, x, D));
            assert!(registers.is_empty());
        }
        other => panic!("{other:?}"),
    }
    match frames.last().unwrap() {
        ServerMsg::Subtree { removed, nodes, .. } => {
            assert_eq!((removed.as_slice(), nodes.len()), ([C].as_slice(), 0));
        }
        other => panic!("{other:?}"),
    }
    s.stop().await;
}
