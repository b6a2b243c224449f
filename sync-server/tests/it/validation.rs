//! Every rejected input gets its typed code and leaves the database
//! unchanged (the valid ops of a rejected batch are not applied either).

use arbor_shared::{NodeId, ReplicaId, Stamp};
use arbor_sync_server::db::{Db, RejectCode, replica_to_sql};
use uuid::Uuid;

use crate::harness::*;

/// Everything a rejected call could have touched.
async fn snapshot(db: &Db) -> String {
    let client = db.client().await.unwrap();
    let mut out = String::new();
    for sql in [
        "SELECT string_agg(concat_ws(',', name, head_seq, log_hlc, log_replica, clock_hlc), ';' ORDER BY id) FROM spaces",
        "SELECT string_agg(concat_ws(',', space, seq, hlc, replica, kind, node, parent, key, field, value, known_seq, applied, prev_parent, prev_key), ';' ORDER BY space, seq) FROM ops",
        "SELECT string_agg(concat_ws(',', space, id, parent, key), ';' ORDER BY space, id) FROM nodes",
        "SELECT string_agg(concat_ws(',', space, node, field, value, hlc, replica), ';' ORDER BY space, node, field) FROM payloads",
        "SELECT count(*)::text FROM restores",
    ] {
        let row = client.query_one(sql, &[]).await.unwrap();
        out.push_str(&row.get::<_, Option<String>>(0).unwrap_or_default());
        out.push('\n');
    }
    out
}

/// One raw op for `apply_ops`, any element may be NULL.
#[derive(Clone)]
struct Raw {
    hlc: Option<i64>,
    replica: Option<i64>,
    kind: Option<i8>,
    node: Option<Uuid>,
    parent: Option<Uuid>,
    key: Option<Vec<u8>>,
    field: Option<String>,
    value: Option<String>,
    known: Option<i64>,
}

fn raw_move(hlc: i64, node: u128, parent: u128, key: &[u8]) -> Raw {
    Raw {
        hlc: Some(hlc),
        replica: Some(replica_to_sql(5)),
        kind: Some(b'm' as i8),
        node: Some(Uuid::from_u128(node)),
        parent: Some(Uuid::from_u128(parent)),
        key: Some(key.to_vec()),
        field: None,
        value: None,
        known: Some(0),
    }
}

fn raw_set(hlc: i64, node: u128, field: &str, value: Option<String>) -> Raw {
    Raw {
        hlc: Some(hlc),
        replica: Some(replica_to_sql(5)),
        kind: Some(b's' as i8),
        node: Some(Uuid::from_u128(node)),
        parent: None,
        key: None,
        field: Some(field.into()),
        value,
        known: Some(0),
    }
}

async fn raw_apply(db: &Db, space: &str, author: Option<i64>, ops: &[Raw]) -> Result<(), String> {
    let client = db.client().await.unwrap();
    let col = |f: &dyn Fn(&Raw) -> Option<i64>| ops.iter().map(f).collect::<Vec<_>>();
    let hlc = col(&|r| r.hlc);
    let rep = col(&|r| r.replica);
    let known = col(&|r| r.known);
    let kind: Vec<Option<i8>> = ops.iter().map(|r| r.kind).collect();
    let node: Vec<Option<Uuid>> = ops.iter().map(|r| r.node).collect();
    let parent: Vec<Option<Uuid>> = ops.iter().map(|r| r.parent).collect();
    let key: Vec<Option<Vec<u8>>> = ops.iter().map(|r| r.key.clone()).collect();
    let field: Vec<Option<String>> = ops.iter().map(|r| r.field.clone()).collect();
    let value: Vec<Option<String>> = ops.iter().map(|r| r.value.clone()).collect();
    client
        .query(
            "SELECT * FROM apply_ops($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            &[
                &space, &author, &hlc, &rep, &kind, &node, &parent, &key, &field, &value, &known,
            ],
        )
        .await
        .map(|_| ())
        .map_err(|e| {
            e.as_db_error()
                .map(|d| d.code().code().to_string())
                .unwrap_or_else(|| e.to_string())
        })
}

const A: u128 = 0xa;
const NEW: u128 = 0xb;

#[tokio::test]
async fn rejected_raw_inputs_change_nothing() {
    let db = test_db().await;
    db.create_space("s").await.unwrap();
    let base = now_ms() << 16;
    let ok = raw_move(base as i64, A, 0, &[0x80]);
    raw_apply(
        &db,
        "s",
        None,
        &[
            ok.clone(),
            raw_set(base as i64 + 1, A, "text", Some("x".into())),
        ],
    )
    .await
    .unwrap();
    let h = base as i64 + 10;
    // A valid create that must not survive any rejection below.
    let fresh = raw_move(h, NEW, A, &[0x80]);
    let trash = u128::MAX;
    let cases: Vec<(&str, &str, Vec<Raw>)> = vec![
        ("ROOT moved", "AR001", vec![raw_move(h + 1, 0, A, &[0x80])]),
        (
            "TRASH moved",
            "AR001",
            vec![raw_move(h + 1, trash, 0, &[0x80])],
        ),
        (
            "field of ROOT",
            "AR001",
            vec![raw_set(h + 1, 0, "text", None)],
        ),
        ("empty key", "AR002", vec![raw_move(h + 1, A, 0, &[])]),
        (
            "key ends in 0",
            "AR002",
            vec![raw_move(h + 1, A, 0, &[0x80, 0])],
        ),
        (
            "257-byte key",
            "AR002",
            vec![raw_move(h + 1, A, 0, &[0x80; 257])],
        ),
        ("empty field", "AR003", vec![raw_set(h + 1, A, "", None)]),
        (
            "65-byte field",
            "AR003",
            vec![raw_set(h + 1, A, &"f".repeat(65), None)],
        ),
        (
            "64 KiB + 1 value",
            "AR004",
            vec![raw_set(h + 1, A, "text", Some("v".repeat(65_537)))],
        ),
        (
            "clock ahead",
            "AR006",
            vec![raw_move(
                ((now_ms() + 3_600_000) << 16) as i64,
                A,
                0,
                &[0x80],
            )],
        ),
        (
            "unknown parent",
            "AR008",
            vec![raw_move(h + 1, A, 0x77, &[0x80])],
        ),
        (
            "set on unknown node",
            "AR008",
            vec![raw_set(h + 1, 0x77, "text", None)],
        ),
        (
            "parent created later in the batch",
            "AR008",
            vec![
                raw_move(h + 1, 0x78, 0x79, &[0x80]),
                raw_move(h + 2, 0x79, 0, &[0x80]),
            ],
        ),
        (
            "in-batch stamp conflict",
            "AR009",
            vec![
                raw_move(h + 1, A, 0, &[0x80]),
                raw_move(h + 1, A, 0, &[0x81]),
            ],
        ),
        (
            "stored stamp conflict",
            "AR009",
            vec![Raw {
                key: Some(vec![0x81]),
                ..ok.clone()
            }],
        ),
        (
            "NULL hlc",
            "AR011",
            vec![Raw {
                hlc: None,
                ..raw_move(h + 1, A, 0, &[0x80])
            }],
        ),
        (
            "NULL node",
            "AR011",
            vec![Raw {
                node: None,
                ..raw_move(h + 1, A, 0, &[0x80])
            }],
        ),
        (
            "NULL key",
            "AR011",
            vec![Raw {
                key: None,
                ..raw_move(h + 1, A, 0, &[0x80])
            }],
        ),
        (
            "NULL field",
            "AR011",
            vec![Raw {
                field: None,
                ..raw_set(h + 1, A, "t", None)
            }],
        ),
        (
            "NULL parent",
            "AR011",
            vec![Raw {
                parent: None,
                ..raw_move(h + 1, A, 0, &[0x80])
            }],
        ),
        (
            "unknown kind",
            "AR011",
            vec![Raw {
                kind: Some(b'x' as i8),
                ..raw_move(h + 1, A, 0, &[0x80])
            }],
        ),
        ("negative hlc", "AR011", vec![raw_move(-5, A, 0, &[0x80])]),
        (
            "negative known_seq",
            "AR011",
            vec![Raw {
                known: Some(-1),
                ..raw_move(h + 1, A, 0, &[0x80])
            }],
        ),
        (
            "move with a value",
            "AR011",
            vec![Raw {
                value: Some("x".into()),
                ..raw_move(h + 1, A, 0, &[0x80])
            }],
        ),
        (
            "set with a key",
            "AR011",
            vec![Raw {
                key: Some(vec![1]),
                ..raw_set(h + 1, A, "t", None)
            }],
        ),
        (
            "replica 0 is the server",
            "AR007",
            vec![Raw {
                replica: Some(replica_to_sql(0)),
                ..raw_move(h + 1, A, 0, &[0x80])
            }],
        ),
    ];
    for (what, code, bad) in cases {
        let before = snapshot(&db).await;
        let mut batch = vec![fresh.clone()];
        batch.extend(bad);
        let got = raw_apply(&db, "s", None, &batch).await;
        assert_eq!(got, Err(code.to_string()), "{what}");
        assert_eq!(snapshot(&db).await, before, "{what} changed the database");
    }
    // Arrays of different lengths, too many ops, wrong author, unknown space.
    let before = snapshot(&db).await;
    let client = db.client().await.unwrap();
    let short = client
        .query(
            "SELECT * FROM apply_ops('s', NULL, ARRAY[1]::bigint[], ARRAY[]::bigint[], ARRAY['m']::\"char\"[],
               ARRAY[gen_random_uuid()], ARRAY[NULL]::uuid[], ARRAY['\\x80'::bytea], ARRAY[NULL]::text[],
               ARRAY[NULL]::text[], ARRAY[0]::bigint[])",
            &[],
        )
        .await
        .unwrap_err();
    assert_eq!(short.code().map(|c| c.code()), Some("AR011"));
    let many: Vec<Raw> = (0..10_001)
        .map(|i| raw_move(h + 1 + i, 0x1000 + i as u128, 0, &[0x80]))
        .collect();
    assert_eq!(raw_apply(&db, "s", None, &many).await, Err("AR011".into()));
    assert_eq!(
        raw_apply(
            &db,
            "s",
            Some(replica_to_sql(6)),
            std::slice::from_ref(&fresh)
        )
        .await,
        Err("AR007".into())
    );
    assert_eq!(
        raw_apply(&db, "nope", None, std::slice::from_ref(&fresh)).await,
        Err("AR010".into())
    );
    assert_eq!(snapshot(&db).await, before);

    // Stale: after the horizon is raised, ops at or below it are refused.
    db.raise_horizon("s", Stamp::new(h as u64 + 5, 0))
        .await
        .unwrap();
    let before = snapshot(&db).await;
    assert_eq!(
        raw_apply(&db, "s", None, std::slice::from_ref(&fresh)).await,
        Err("AR005".into())
    );
    assert_eq!(snapshot(&db).await, before);
    // Above it, the same create goes through.
    let later = raw_move(h + 6, NEW, A, &[0x80]);
    raw_apply(&db, "s", Some(replica_to_sql(5)), &[later])
        .await
        .unwrap();
    assert_ne!(snapshot(&db).await, before);
}

#[tokio::test]
async fn typed_api_maps_codes() {
    let db = test_db().await;
    db.create_space("s").await.unwrap();
    let a = n(1);
    let t = now_ms() << 16;
    db.apply("s", None, &[mv(t, 9, a, NodeId::ROOT, &[0x80], 0)])
        .await
        .unwrap();
    let err = db
        .apply(
            "s",
            Some(ReplicaId(8)),
            &[mv(t + 1, 9, n(2), a, &[0x80], 0)],
        )
        .await
        .unwrap_err();
    assert_eq!(err.reject_code(), Some(RejectCode::WrongReplica));
    let err = db
        .apply("s", None, &[mv(t + 1, 9, n(2), n(99), &[0x80], 0)])
        .await
        .unwrap_err();
    assert_eq!(err.reject_code(), Some(RejectCode::UnknownNode));
    assert!(err.to_string().contains("unknown_node"), "{err}");
    let err = db
        .apply("s", None, &[mv(u64::MAX, 9, n(2), a, &[0x80], 0)])
        .await
        .unwrap_err();
    assert_eq!(err.reject_code(), Some(RejectCode::BadBatch));
    let err = db
        .apply("nope", None, &[mv(t + 1, 9, n(2), a, &[0x80], 0)])
        .await
        .unwrap_err();
    assert_eq!(err.reject_code(), Some(RejectCode::UnknownSpace));
    assert_eq!(db.space("s").await.unwrap().unwrap().head_seq, 1);
}

#[tokio::test]
async fn re_push_after_the_horizon_returns_seqs_not_stale() {
    let db = test_db().await;
    db.create_space("s").await.unwrap();
    let t = now_ms() << 16;
    let ops = vec![
        mv(t, 9, n(1), NodeId::ROOT, &[0x80], 0),
        set(t + 1, 9, n(1), "text", Some("x"), 0),
    ];
    let first = db.apply("s", None, &ops).await.unwrap();
    db.raise_horizon("s", Stamp::new(t + 5, 9)).await.unwrap();
    // A client that never got the answer pushes the same ops again.
    let again = db.apply("s", None, &ops).await.unwrap();
    assert_eq!(
        again.iter().map(|c| (c.seq, c.origin)).collect::<Vec<_>>(),
        first
            .iter()
            .map(|c| (c.seq, arbor_sync_server::db::Origin::Duplicate))
            .collect::<Vec<_>>()
    );
    // A new op at or below the horizon is stale, alone or with others.
    let new = mv(t + 2, 9, n(2), n(1), &[0x80], 0);
    for batch in [vec![new.clone()], vec![ops[0].clone(), new.clone()]] {
        let err = db.apply("s", None, &batch).await.unwrap_err();
        assert_eq!(err.reject_code(), Some(RejectCode::Stale), "{err}");
    }
    assert_eq!(db.space("s").await.unwrap().unwrap().head_seq, 2);
}

/// Parent links that close a cycle (a hand-edited or damaged database):
/// a move whose cycle check walks into it is refused with a typed error
/// and changes nothing, and a subtree snapshot of a node on it ends.
#[tokio::test]
async fn a_cycle_in_the_stored_tree_is_a_typed_error_not_a_hang() {
    use arbor_sync_server::db::DbError;
    use arbor_sync_server::snapshot::{Scope, snapshot as stream_snapshot};
    use futures_util::StreamExt;

    let db = test_db().await;
    db.create_space("s").await.unwrap();
    let t = now_ms() << 16;
    let (x, y, z, w) = (n(1), n(2), n(3), n(4));
    db.apply(
        "s",
        None,
        &[
            mv(t, 1, x, NodeId::ROOT, &[0x80], 0),
            mv(t + 1, 1, y, x, &[0x80], 0),
            mv(t + 2, 1, z, NodeId::ROOT, &[0x81], 0),
            mv(t + 3, 1, w, z, &[0x80], 0),
        ],
    )
    .await
    .unwrap();
    // x -> y -> x.
    let client = db.client().await.unwrap();
    client
        .execute(
            "UPDATE nodes SET parent = $1 WHERE id = $2",
            &[&Uuid::from_u128(y.0), &Uuid::from_u128(x.0)],
        )
        .await
        .unwrap();
    drop(client);
    let before = snapshot(&db).await;
    // z has a child, so moving it under y walks up from y: into the cycle.
    let err = db
        .apply("s", None, &[mv(t + 4, 2, z, y, &[0x80], 4)])
        .await
        .expect_err("a move through a cycle was applied");
    assert!(matches!(err, DbError::Corrupt(_)), "{err}");
    assert_eq!(snapshot(&db).await, before);

    let (header, body) = stream_snapshot(&db, "s", Scope::Subtree(x)).await.unwrap();
    assert_eq!(header.nodes, 2, "{header:?}");
    let chunks: Vec<_> = body.collect().await;
    assert!(chunks.iter().all(Result::is_ok));
}
