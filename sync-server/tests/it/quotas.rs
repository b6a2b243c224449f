//! Quotas: a space's usage is counted exactly on every path that writes it
//! (ingest with undo and redo, restores, fork, import); a push, fork,
//! import or create past a quota is refused `quota_exceeded` and changes
//! nothing; fork needs admin rights on its destination.

use arbor_shared::NodeId;
use arbor_shared::auth::{Claims, Role, mint};
use arbor_sync_server::db::{Db, Quotas, RejectCode, Usage};
use arbor_sync_server::snapshot::{Scope, snapshot};
use futures_util::StreamExt as _;
use serde_json::json;

use crate::harness::*;
use crate::http::{Server, error_code, key};

/// The usage counted from the rows themselves.
async fn counted(db: &Db, space: &str) -> Usage {
    let client = db.client().await.unwrap();
    let row = client
        .query_one(
            "SELECT (SELECT count(*) FROM nodes n WHERE n.space = s.id),
                    (SELECT count(*) FROM ops o WHERE o.space = s.id),
                    (SELECT coalesce(sum(coalesce(octet_length(o.key), 0)
                                         + coalesce(octet_length(o.field), 0)
                                         + coalesce(octet_length(o.value), 0)), 0)::bigint
                     FROM ops o WHERE o.space = s.id)
                    + (SELECT coalesce(sum(octet_length(p.field)
                                           + coalesce(octet_length(p.value), 0)), 0)::bigint
                       FROM payloads p WHERE p.space = s.id)
             FROM spaces s WHERE s.name = $1",
            &[&space],
        )
        .await
        .unwrap();
    Usage {
        nodes: row.get::<_, i64>(0) as u64,
        log_rows: row.get::<_, i64>(1) as u64,
        bytes: row.get::<_, i64>(2) as u64,
    }
}

async fn assert_exact(db: &Db, space: &str) {
    assert_eq!(
        db.usage(space).await.unwrap().unwrap(),
        counted(db, space).await,
        "usage of {space}"
    );
}

#[tokio::test]
async fn usage_is_exact_through_undo_restores_fork_and_import() {
    let db = test_db().await;
    db.create_space("s").await.unwrap();
    let t = now_ms() << 16;
    let (a, b, c, d) = (n(1), n(2), n(3), n(4));
    db.apply(
        "s",
        None,
        &[
            mv(t + 10, 1, a, NodeId::ROOT, &[0x80], 0),
            mv(t + 20, 1, b, a, &[0x80], 0),
            set(t + 30, 1, b, "text", Some("hello"), 0),
        ],
    )
    .await
    .unwrap();
    assert_exact(&db, "s").await;
    // Out of order: c is created before b's create in stamp order, so the
    // batch undoes b's create (its row leaves `nodes`) and redoes it.
    db.apply("s", None, &[mv(t + 15, 2, c, a, &[0x81], 0)])
        .await
        .unwrap();
    assert_exact(&db, "s").await;
    // A register overwritten by a longer value, and one cleared.
    db.apply(
        "s",
        None,
        &[
            set(t + 40, 2, b, "text", Some("a much longer value"), 3),
            set(t + 41, 2, c, "note", Some("x"), 3),
            set(t + 42, 2, c, "note", None, 3),
        ],
    )
    .await
    .unwrap();
    assert_exact(&db, "s").await;
    // A delete and a concurrent add under it: the server appends a restore.
    db.apply("s", None, &[mv(t + 50, 1, a, NodeId::TRASH, &[0x80], 7)])
        .await
        .unwrap();
    let got = db
        .apply("s", None, &[mv(t + 51, 2, d, b, &[0x80], 7)])
        .await
        .unwrap();
    assert!(
        got.iter()
            .any(|c| c.origin == arbor_sync_server::db::Origin::Restore)
    );
    assert_exact(&db, "s").await;

    db.fork("s", "copy").await.unwrap();
    assert_exact(&db, "copy").await;
    crate::values::check_value_index(&db, "s").await;
    crate::values::check_value_index(&db, "copy").await;
    assert_eq!(
        db.usage("copy").await.unwrap(),
        db.usage("s").await.unwrap()
    );

    let (_, body) = snapshot(&db, "s", Scope::Export).await.unwrap();
    let file: Vec<u8> = body
        .map(|c| c.unwrap().to_vec())
        .collect::<Vec<_>>()
        .await
        .concat();
    let chunks = futures_util::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from(file))]);
    arbor_sync_server::import::import(&db, "imported", chunks, 1 << 30, None)
        .await
        .unwrap();
    assert_exact(&db, "imported").await;
    let imported = db.usage("imported").await.unwrap().unwrap();
    assert_eq!(imported.log_rows, 0);
    assert_eq!(imported.nodes, db.usage("s").await.unwrap().unwrap().nodes);
}

/// A database whose sessions carry `quotas`.
async fn db_with(quotas: Quotas) -> Db {
    let mut config = test_db_config().await;
    quotas.apply_to(&mut config);
    Db::new(config, 2).unwrap()
}

/// A database whose sessions carry `quotas`, with the space `s` holding
/// `ops`.
async fn space_with(quotas: Quotas, ops: &[arbor_shared::Op]) -> Db {
    let db = db_with(quotas).await;
    db.create_space("s").await.unwrap();
    db.apply("s", None, ops).await.unwrap();
    db
}

async fn refused(db: &Db, ops: &[arbor_shared::Op]) {
    let before = (db.usage("s").await.unwrap(), db.state("s").await.unwrap());
    let err = db.apply("s", None, ops).await.expect_err("over quota");
    assert_eq!(err.reject_code(), Some(RejectCode::QuotaExceeded), "{err}");
    assert!(err.to_string().contains("quota"), "{err}");
    assert_eq!(
        (db.usage("s").await.unwrap(), db.state("s").await.unwrap()),
        before
    );
}

#[tokio::test]
async fn a_push_past_a_space_quota_is_refused_and_changes_nothing() {
    let t = now_ms() << 16;
    // Nodes: three fit, the fourth does not; moving one still does.
    let creates: Vec<_> = (1..=3)
        .map(|i| mv(t + i, 1, n(i.into()), NodeId::ROOT, &[0x80, i as u8], 0))
        .collect();
    let db = space_with(
        Quotas {
            max_nodes: 3,
            ..Quotas::NONE
        },
        &creates,
    )
    .await;
    refused(&db, &[mv(t + 10, 1, n(9), NodeId::ROOT, &[0x90], 3)]).await;
    db.apply("s", None, &[mv(t + 11, 1, n(1), n(2), &[0x80], 3)])
        .await
        .unwrap();

    // Log rows: a batch that would pass the quota is refused whole.
    let db = space_with(
        Quotas {
            max_log_rows: 4,
            ..Quotas::NONE
        },
        &creates,
    )
    .await;
    refused(
        &db,
        &[
            set(t + 20, 1, n(1), "text", Some("a"), 3),
            set(t + 21, 1, n(2), "text", Some("b"), 3),
        ],
    )
    .await;
    db.apply("s", None, &[set(t + 22, 1, n(1), "text", Some("a"), 3)])
        .await
        .unwrap();

    // Bytes: keys, field names and values.
    let db = space_with(
        Quotas {
            max_bytes: 100,
            ..Quotas::NONE
        },
        &creates,
    )
    .await;
    refused(
        &db,
        &[set(t + 30, 1, n(1), "text", Some(&"x".repeat(100)), 3)],
    )
    .await;
    db.apply("s", None, &[set(t + 31, 1, n(1), "text", Some("short"), 3)])
        .await
        .unwrap();
}

fn tenant_token(space: &str, sub: &str, tenant: Option<&str>) -> String {
    let claims = Claims {
        tenant: tenant.map(Into::into),
        ..arbor_testkit::tokens::claims(sub, space, Role::Admin, 600)
    };
    mint(&claims, &key())
}

#[tokio::test]
async fn a_tenant_past_its_quota_of_spaces_cannot_create_fork_or_import() {
    let s = Server::start_with_quotas(Quotas {
        max_spaces_per_tenant: 2,
        max_nodes: 2,
        ..Quotas::NONE
    })
    .await;
    let acme = tenant_token("acme.*", "alice", Some("acme"));
    let put = |space: &str, token: &str| {
        s.http
            .put(s.url(&format!("/v1/spaces/{space}")))
            .bearer_auth(token.to_string())
            .send()
    };
    assert_eq!(put("acme.a", &acme).await.unwrap().status(), 200);
    assert_eq!(put("acme.b", &acme).await.unwrap().status(), 200);
    assert_eq!(
        error_code(put("acme.c", &acme).await.unwrap()).await,
        (403, "quota_exceeded".into())
    );
    // Creating a space that exists is not a new one.
    assert_eq!(put("acme.a", &acme).await.unwrap().status(), 200);
    // Another tenant counts on its own; without a tenant claim the subject
    // is the tenant.
    let bob = tenant_token("bob.*", "bob", None);
    assert_eq!(put("bob.a", &bob).await.unwrap().status(), 200);

    let fork = s
        .http
        .post(s.url("/v1/spaces/acme.a/fork"))
        .bearer_auth(&acme)
        .json(&json!({ "to": "acme.c" }))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(fork).await, (403, "quota_exceeded".into()));

    let export = s.get("/v1/spaces/acme.a/export", &acme).await;
    assert_eq!(export.status(), 200);
    let file = export.bytes().await.unwrap();
    let import = s
        .http
        .post(s.url("/v1/spaces/acme.c/import"))
        .bearer_auth(&acme)
        .body(file)
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(import).await, (403, "quota_exceeded".into()));
    let missing = s.get("/v1/spaces/acme.c/ops", &acme).await;
    assert_eq!(error_code(missing).await, (404, "unknown_space".into()));

    // A push past the space's node quota, over HTTP.
    let t = now_ms() << 16;
    let push = |op: arbor_shared::Op| {
        s.http
            .post(s.url("/v1/spaces/acme.a/ops"))
            .bearer_auth(&acme)
            .json(&json!({ "ops": [op] }))
            .send()
    };
    for i in 1..=2u64 {
        let r = push(mv(t + i, 1, n(i.into()), NodeId::ROOT, &[0x80, i as u8], 0))
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let r = push(mv(t + 3, 1, n(3), NodeId::ROOT, &[0x83], 2))
        .await
        .unwrap();
    let (status, code) = error_code(r).await;
    assert_eq!((status, code.as_str()), (403, "quota_exceeded"));
    s.stop().await;
}
