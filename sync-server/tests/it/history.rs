//! A node's history over HTTP (`GET .../nodes/{id}/history`, migration
//! 0016): every op of the node newest first with seq, origin, author and
//! whether each move took effect; paged by seq; whole-space tokens only.

use arbor_shared::auth::{Claims, Role, mint};
use arbor_shared::http::{NodeHistoryBody, Origin};
use arbor_shared::{NodeId, Op};

use crate::harness::*;
use crate::http::{Server, error_code, key, token_of};

#[tokio::test]
async fn a_nodes_history_is_every_op_of_it_newest_first_with_who_and_whether_it_took_effect() {
    let (s, _admin) = Server::start_demo().await;
    let (ann, bob) = (
        token_of("ann", "demo", Role::Write, 600),
        token_of("bob", "demo", Role::Write, 600),
    );
    let t = now_ms() << 16;
    let (a, b, x) = (NodeId(1), NodeId(2), NodeId(3));
    // Ann makes A, B and X under A, and names X; Bob renames X and moves B
    // under X; Ann's later move of X under B would close a cycle: it is
    // committed and skipped (applied false).
    let ann_ops: Vec<Op> = vec![
        mv(t, 1, a, NodeId::ROOT, &[0x80], 0),
        mv(t + 1, 1, b, NodeId::ROOT, &[0x81], 0),
        mv(t + 2, 1, x, a, &[0x80], 0),
        set(t + 3, 1, x, "text", Some("first"), 0),
    ];
    assert_eq!(s.push("demo", &ann, &ann_ops).await.status(), 200);
    let bob_ops: Vec<Op> = vec![
        set(t + 4, 2, x, "text", Some("second"), 4),
        mv(t + 5, 2, b, x, &[0x80], 4),
    ];
    assert_eq!(s.push("demo", &bob, &bob_ops).await.status(), 200);
    let cycle = vec![mv(t + 6, 1, x, b, &[0x80], 6)];
    assert_eq!(s.push("demo", &ann, &cycle).await.status(), 200);

    let page: NodeHistoryBody = s
        .get_json(&format!("/v1/spaces/demo/nodes/{x}/history"), &ann)
        .await;
    assert_eq!(page.head_seq, 7);
    let seqs: Vec<u64> = page.entries.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, [7, 5, 4, 3]);
    let who: Vec<Option<&str>> = page.entries.iter().map(|e| e.author.as_deref()).collect();
    assert_eq!(who, [Some("ann"), Some("bob"), Some("ann"), Some("ann")]);
    let applied: Vec<Option<bool>> = page.entries.iter().map(|e| e.applied).collect();
    assert_eq!(applied, [Some(false), None, None, Some(true)]);
    assert!(page.entries.iter().all(|e| e.origin == Origin::New));
    assert_eq!(page.next_before, None);

    // Paged: two at a time, by seq.
    let first: NodeHistoryBody = s
        .get_json(&format!("/v1/spaces/demo/nodes/{x}/history?limit=2"), &ann)
        .await;
    assert_eq!(
        first.entries.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [7, 5]
    );
    let before = first.next_before.unwrap();
    let second: NodeHistoryBody = s
        .get_json(
            &format!("/v1/spaces/demo/nodes/{x}/history?limit=2&before={before}"),
            &ann,
        )
        .await;
    assert_eq!(
        second.entries.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [4, 3]
    );

    // A node the space never had has no history; bad input is refused.
    let none: NodeHistoryBody = s
        .get_json(
            &format!("/v1/spaces/demo/nodes/{}/history", NodeId(99)),
            &ann,
        )
        .await;
    assert!(none.entries.is_empty());
    for (path, status) in [
        (format!("/v1/spaces/demo/nodes/{x}/history?limit=0"), 400),
        (format!("/v1/spaces/demo/nodes/{x}/history?limit=1001"), 400),
        (format!("/v1/spaces/demo/nodes/{x}/history?later=1"), 400),
        ("/v1/spaces/demo/nodes/not-a-uuid/history".to_string(), 400),
        (format!("/v1/spaces/nope/nodes/{x}/history"), 403),
    ] {
        let r = s.get(&path, &ann).await;
        assert_eq!(r.status().as_u16(), status, "{path}");
    }
    // A token limited to a subtree may not read it (past parents may lie
    // outside).
    let scoped = mint(
        &Claims {
            root: Some(a),
            ..arbor_testkit::tokens::claims("scoped", "demo", Role::Read, 60)
        },
        &key(),
    );
    let r = s
        .get(&format!("/v1/spaces/demo/nodes/{x}/history"), &scoped)
        .await;
    assert_eq!(error_code(r).await, (403, "out_of_scope".into()));
}
