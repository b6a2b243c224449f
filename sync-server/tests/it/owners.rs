//! Replica owners (migration 0010): a replica id belongs to the token
//! subject that first pushed ops stamped with it; nobody else can push ops
//! stamped with it, and every op says who made it.

use arbor_shared::auth::Role;
use arbor_shared::http::OpsBody;
use arbor_shared::{NodeId, Op, ReplicaId};
use arbor_sync_server::db::{Committed, Db, DbError, Origin, RejectCode};

use crate::harness::*;
use crate::http::Server;

/// A token of `sub` in `space`, without a `rid` claim (the replica id is
/// whatever its ops say).
fn token_of(sub: &str, space: &str, role: Role) -> String {
    crate::http::token_of(sub, space, role, 60)
}

/// Applies `ops` to `space` as pushed by the token subject `who`.
async fn apply_as(db: &Db, space: &str, who: &str, ops: &[Op]) -> Result<Vec<Committed>, DbError> {
    db.apply_by(space, None, Some(who), ops).await
}

#[tokio::test]
async fn a_replica_id_belongs_to_its_first_user_and_every_op_names_its_author() {
    let db = test_db().await;
    db.create_space("s").await.unwrap();
    let t = now_ms() << 16;
    let create = [mv(t, 7, n(1), NodeId::ROOT, &[0x80], 0)];
    let alice = apply_as(&db, "s", "alice", &create).await.unwrap();
    assert_eq!(alice[0].author.as_deref(), Some("alice"));
    // Bob stamps an op with Alice's replica id: refused, nothing written.
    let squat = set(t + 1, 7, n(1), "text", Some("mine"), 1);
    let err = apply_as(&db, "s", "bob", std::slice::from_ref(&squat))
        .await
        .unwrap_err();
    assert_eq!(err.reject_code(), Some(RejectCode::WrongReplica), "{err}");
    assert_eq!(db.space("s").await.unwrap().unwrap().head_seq, 1);
    // ... also mixed into a batch of his own, and nothing of it is claimed.
    let mixed = [set(t + 2, 8, n(1), "text", Some("b"), 1), squat.clone()];
    let err = apply_as(&db, "s", "bob", &mixed).await.unwrap_err();
    assert_eq!(err.reject_code(), Some(RejectCode::WrongReplica), "{err}");
    // His own replica id is his; a re-push of Alice's op by Alice is a
    // duplicate that still names her.
    let own = [set(t + 3, 8, n(1), "text", Some("b"), 1)];
    let bob = apply_as(&db, "s", "bob", &own).await.unwrap();
    assert_eq!(bob[0].author.as_deref(), Some("bob"));
    let again = apply_as(&db, "s", "alice", &create).await.unwrap();
    assert_eq!(
        (again[0].origin, again[0].author.as_deref()),
        (Origin::Duplicate, Some("alice"))
    );
    // The server's own callers are not checked, and their ops name the
    // replica's owner.
    db.apply("s", None, &[set(t + 4, 7, n(1), "note", Some("x"), 2)])
        .await
        .unwrap();
    // Catch-up names every op's author.
    let page = db.ops_after("s", 0, 100).await.unwrap();
    let authors: Vec<_> = page.ops.iter().map(|c| c.author.as_deref()).collect();
    assert_eq!(authors, [Some("alice"), Some("bob"), Some("alice")]);
    // Owners are per space: in another space replica 7 is free.
    db.create_space("t").await.unwrap();
    apply_as(&db, "t", "bob", &create).await.unwrap();
}

/// Over HTTP: a token without `rid` cannot push ops stamped as another
/// user's replica, and catch-up and ingest answers carry `author`.
#[tokio::test]
async fn a_token_without_rid_cannot_push_as_another_users_replica() {
    let s = Server::start().await;
    let admin = token_of("admin", "demo", Role::Admin);
    s.create_space("demo", &admin).await;
    let t = now_ms() << 16;
    let victim = vec![mv(t, 0x77, n(1), NodeId::ROOT, &[0x80], 0)];
    let r = s
        .push("demo", token_of("victim", "demo", Role::Write), &victim)
        .await;
    assert_eq!(r.status(), 200);
    let body: OpsBody = r.json().await.unwrap();
    assert_eq!(body.ops[0].author.as_deref(), Some("victim"));
    // Stamp squatting: the victim's replica id at a stamp it will use.
    let squat = vec![set(t + 5, 0x77, n(1), "text", Some("gotcha"), 1)];
    let r = s
        .push("demo", token_of("mallory", "demo", Role::Write), &squat)
        .await;
    assert_eq!(r.status(), 403);
    let err: serde_json::Value = r.json().await.unwrap();
    assert_eq!(err["error"]["code"], "wrong_replica", "{err}");
    // The victim's own op at that stamp commits.
    let own = vec![set(t + 5, 0x77, n(1), "text", Some("mine"), 1)];
    let r = s
        .push("demo", token_of("victim", "demo", Role::Write), &own)
        .await;
    assert_eq!(r.status(), 200);
    let read = token_of("reader", "demo", Role::Read);
    let page: OpsBody = s
        .get("/v1/spaces/demo/ops?after=0", read)
        .await
        .json()
        .await
        .unwrap();
    let got: Vec<_> = page
        .ops
        .iter()
        .map(|c| (c.seq, c.author.as_deref(), c.op.stamp().replica))
        .collect();
    assert_eq!(
        got,
        [
            (1, Some("victim"), ReplicaId(0x77)),
            (2, Some("victim"), ReplicaId(0x77))
        ]
    );
    // An export carries the owners, and an import keeps them: in the new
    // space, too, nobody else can push as the victim's replica.
    let file = s
        .get(
            "/v1/spaces/demo/export",
            token_of("reader", "demo", Role::Read),
        )
        .await
        .bytes()
        .await
        .unwrap();
    let mut decoder = arbor_shared::snapshot::Decoder::new();
    decoder.push(&file);
    let mut owners = None;
    while let Some(event) = decoder.next_event().unwrap() {
        if let arbor_shared::snapshot::Event::Header(h) = event {
            owners = Some(h.owners);
        }
    }
    let owners = owners.expect("no header");
    assert_eq!(
        owners.into_iter().collect::<Vec<_>>(),
        [(ReplicaId(0x77), "victim".to_string())]
    );
    let r = s
        .http
        .post(s.url("/v1/spaces/copy/import"))
        .bearer_auth(token_of("admin", "copy", Role::Admin))
        .body(file.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    let squat = vec![set(t + 9, 0x77, n(1), "text", Some("gotcha"), 0)];
    let r = s
        .push("copy", token_of("mallory", "copy", Role::Write), &squat)
        .await;
    assert_eq!(r.status(), 403);
    s.stop().await;
}
