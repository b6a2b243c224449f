//! Migrations, apply, idempotency, catch-up and children pages.

use arbor_shared::{NodeId, ReplicaId};
use arbor_sync_server::db::{Db, Origin, RejectCode};

use crate::harness::*;

#[tokio::test]
async fn migrations_are_idempotent_and_detect_edits() {
    let db = test_db().await;
    // The template is migrated: running again applies nothing.
    assert!(db.migrate().await.unwrap().is_empty());
    assert!(db.migrate().await.unwrap().is_empty());
    let client = db.client().await.unwrap();
    client
        .execute(
            "UPDATE arbor_migrations SET checksum = checksum + 1 WHERE version = 1",
            &[],
        )
        .await
        .unwrap();
    let err = db.migrate().await.unwrap_err();
    assert!(err.to_string().contains("edited"), "{err}");
}

#[tokio::test]
async fn apply_catch_up_and_children() {
    let db = test_db().await;
    db.create_space("s").await.unwrap();
    // create_space is idempotent.
    assert_eq!(db.create_space("s").await.unwrap().head_seq, 0);
    let (a, b, c) = (n(1), n(2), n(3));
    let batch = vec![
        mv(100, 7, a, NodeId::ROOT, &[0x80], 0),
        mv(101, 7, b, NodeId::ROOT, &[0x40], 0),
        mv(102, 7, c, a, &[0x80], 0),
        set(103, 7, b, "text", Some("hello"), 0),
        set(104, 7, b, "color", Some("red"), 0),
    ];
    let got = db.apply("s", Some(ReplicaId(7)), &batch).await.unwrap();
    assert_eq!(
        got.iter().map(|c| c.seq).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    assert!(got.iter().all(|c| c.origin == Origin::New));
    // Seq order is stamp order within a batch, whatever the array order.
    let mut rev = batch.clone();
    rev.reverse();
    let again = db.apply("s", None, &rev).await.unwrap();
    assert!(again.iter().all(|c| c.origin == Origin::Duplicate));
    assert_eq!(
        again.iter().map(|c| c.seq).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    assert_eq!(db.space("s").await.unwrap().unwrap().head_seq, 5);

    // Catch-up pages.
    let p1 = db.ops_after("s", 0, 2).await.unwrap();
    assert_eq!(p1.head_seq, 5);
    assert_eq!(p1.ops.iter().map(|c| c.seq).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(p1.ops[0].op, batch[0]);
    let p2 = db.ops_after("s", 2, 10).await.unwrap();
    assert_eq!(
        p2.ops.iter().map(|c| c.op.clone()).collect::<Vec<_>>(),
        batch[2..]
    );
    assert!(db.ops_after("s", 5, 10).await.unwrap().ops.is_empty());
    let unknown = db.ops_after("nope", 0, 10).await.unwrap_err();
    assert_eq!(unknown.reject_code(), Some(RejectCode::UnknownSpace));

    // Children in (key, id) order with their registers.
    let kids = db.children("s", NodeId::ROOT, None, 10).await.unwrap();
    assert_eq!(kids.iter().map(|k| k.id).collect::<Vec<_>>(), [b, a]);
    let fields: Vec<_> = kids[0]
        .payloads
        .iter()
        .map(|(f, p)| (f.as_str(), p.value.as_deref()))
        .collect();
    assert_eq!(fields, [("color", Some("red")), ("text", Some("hello"))]);
    assert!(kids[1].payloads.is_empty());
    let page2 = db
        .children("s", NodeId::ROOT, Some((&kids[0].key, kids[0].id)), 10)
        .await
        .unwrap();
    assert_eq!(page2.iter().map(|k| k.id).collect::<Vec<_>>(), [a]);
    assert_eq!(db.children("s", a, None, 10).await.unwrap()[0].id, c);
}

#[tokio::test]
async fn children_pages_walk_many_siblings_in_order() {
    let db = test_db().await;
    db.create_space("s").await.unwrap();
    let mut reference = tree();
    let mut ops = Vec::new();
    let mut keys = arbor_shared::KeyGen::new(3);
    let mut last = None;
    for i in 0..2_000u64 {
        let k = keys.append_after(last.as_ref());
        // Every third sibling shares its key with the previous one: ties
        // order by id.
        let k = if i % 3 == 2 {
            last.clone().unwrap_or(k)
        } else {
            k
        };
        ops.push(mv(
            1_000 + i,
            1,
            n(u128::from(10_000 - i)),
            NodeId::ROOT,
            k.as_bytes(),
            0,
        ));
        last = Some(k);
    }
    let got = db.apply("s", None, &ops).await.unwrap();
    check_same(&db, "s", &mut reference, &got).await;
    let mut walked = Vec::new();
    let mut cursor = None;
    loop {
        let page = db
            .children(
                "s",
                NodeId::ROOT,
                cursor.as_ref().map(|(k, i)| (k, *i)),
                333,
            )
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        cursor = page.last().map(|c| (c.key.clone(), c.id));
        walked.extend(page.into_iter().map(|c| c.id));
    }
    let expected: Vec<NodeId> = reference
        .children(NodeId::ROOT, None, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(walked, expected);
}

#[tokio::test]
async fn a_group_commit_answers_each_push_as_if_applied_alone() {
    let db = test_db().await;
    db.create_space("s").await.unwrap();
    let (a, b) = (n(1), n(2));
    let pushes = vec![
        (
            Some(ReplicaId(7)),
            vec![mv(100, 7, a, NodeId::ROOT, &[0x80], 0)],
        ),
        // Refused (unknown parent): changes nothing, the others commit.
        (Some(ReplicaId(7)), vec![mv(101, 7, b, n(99), &[0x80], 0)]),
        // Depends on the first push of the group.
        (
            Some(ReplicaId(8)),
            vec![set(102, 8, a, "text", Some("hi"), 0)],
        ),
        // Wrong author: refused.
        (
            Some(ReplicaId(8)),
            vec![set(103, 7, a, "text", Some("no"), 0)],
        ),
    ];
    let pushes: Vec<_> = pushes
        .into_iter()
        .map(|(author, ops)| arbor_shared::http::GroupPush {
            author,
            sub: None,
            root: None,
            ops,
        })
        .collect();
    let answers = db.apply_group("s", &pushes).await;
    assert_eq!(answers.len(), 4);
    let seqs =
        |i: usize| -> Vec<u64> { answers[i].as_ref().unwrap().iter().map(|c| c.seq).collect() };
    assert_eq!(seqs(0), [1]);
    assert_eq!(
        answers[1].as_ref().unwrap_err().reject_code(),
        Some(RejectCode::UnknownNode)
    );
    assert_eq!(seqs(2), [2]);
    assert_eq!(
        answers[3].as_ref().unwrap_err().reject_code(),
        Some(RejectCode::WrongReplica)
    );
    let mut reference = tree();
    reference
        .apply(&[pushes[0].ops.clone(), pushes[2].ops.clone()].concat())
        .unwrap();
    assert_state_eq(&db.state("s").await.unwrap(), &reference.state().unwrap());
    assert_eq!(db.space("s").await.unwrap().unwrap().head_seq, 2);
}

/// A setting of the pooled session `db` hands out.
async fn show(db: &Db, setting: &str) -> String {
    let c = db.client().await.unwrap();
    c.query_one(&format!("SHOW {setting}"), &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn pooled_sessions_check_their_client_every_second() {
    // So that a server which dies mid-commit does not leave its apply
    // running, holding the space's lock, until the apply ends.
    let db = test_db().await;
    assert_eq!(show(&db, "client_connection_check_interval").await, "1s");
    // Options given in the config are kept.
    let mut config = test_db_config().await;
    config.options("-c application_name=arbor_test");
    let db = Db::new(config, 1).unwrap();
    assert_eq!(show(&db, "application_name").await, "arbor_test");
    assert_eq!(show(&db, "client_connection_check_interval").await, "1s");
}
