//! Export and import over HTTP: a space exported and imported under a new
//! name has the same tree and registers, an empty log and its horizon at
//! the newest stamp; bad files are refused with typed errors and create
//! nothing.

use arbor_shared::auth::Role;
use arbor_shared::snapshot::copy::Writer;
use arbor_shared::snapshot::field::{int8, uuid};
use arbor_shared::snapshot::{Decoder, Encoder, Event, SnapshotHeader};
use arbor_shared::{NodeId, Op, Stamp};
use arbor_sync_server::db::Db;

use crate::harness::*;
use crate::http::{Server, error_code, token};

async fn push(s: &Server, space: &str, ops: &[Op]) -> reqwest::Response {
    s.push(space, token(space, Role::Admin, None, 60), ops)
        .await
}

async fn import(s: &Server, space: &str, role: Role, body: Vec<u8>) -> reqwest::Response {
    s.http
        .post(s.url(&format!("/v1/spaces/{space}/import")))
        .bearer_auth(token(space, role, None, 60))
        .body(body)
        .send()
        .await
        .unwrap()
}

/// A file with the given node and payload rows (no log).
fn file(nodes: &[(NodeId, NodeId, &[u8])], payloads: &[(NodeId, &str, &str, i64)]) -> Vec<u8> {
    let mut enc = Encoder::new();
    let mut out = enc.header(&SnapshotHeader {
        space: "x".into(),
        head_seq: 0,
        horizon: None,
        nodes: nodes.len() as u64,
        payloads: payloads.len() as u64,
        log: 0,
        root: None,
        owners: Default::default(),
    });
    let mut n = Writer::new();
    for (id, parent, key) in nodes {
        n.tuple(&[Some(&uuid(*id)), Some(&uuid(*parent)), Some(key)]);
    }
    let mut p = Writer::new();
    for (node, field, value, hlc) in payloads {
        p.tuple(&[
            Some(&uuid(*node)),
            Some(field.as_bytes()),
            Some(value.as_bytes()),
            Some(&int8(*hlc)),
            Some(&int8(i64::MIN ^ 1)),
        ]);
    }
    for (tag, w) in [(b'N', n), (b'P', p), (b'L', Writer::new())] {
        out.extend(enc.section(tag));
        out.extend(enc.chunk(&w.finish()));
        out.extend(enc.end_section());
    }
    out.extend(enc.trailer());
    out
}

#[tokio::test]
async fn export_then_import_copies_the_state_and_bad_files_create_nothing() {
    let config = test_db_config().await;
    let db = Db::new(config.clone(), 2).unwrap();
    let s = Server::start_on(config, 256, 5).await;
    s.create_space("src", &token("src", Role::Admin, None, 60))
        .await;
    // 3,000 nodes with ~100-byte texts (the file is larger than the
    // server's 256 KiB body limit, which imports do not use), a move and a
    // delete.
    let t0 = now_ms() << 16;
    let text = "x".repeat(100);
    for chunk in 0..6u64 {
        let ops: Vec<Op> = (0..500u64)
            .flat_map(|i| {
                let k = chunk * 500 + i + 1;
                [
                    mv(
                        t0 + 2 * k,
                        3,
                        n(u128::from(k)),
                        NodeId::ROOT,
                        &[0x80, 1 + (k % 200) as u8],
                        0,
                    ),
                    set(t0 + 2 * k + 1, 3, n(u128::from(k)), "text", Some(&text), 0),
                ]
            })
            .collect();
        assert_eq!(push(&s, "src", &ops).await.status(), 200);
    }
    let tail = [
        mv(t0 + 10_000, 3, n(2), n(1), &[0x80], 0),
        mv(t0 + 10_001, 3, n(3), NodeId::TRASH, &[0x80], 0),
    ];
    assert_eq!(push(&s, "src", &tail).await.status(), 200);

    let r = s
        .get("/v1/spaces/src/export", token("src", Role::Read, None, 60))
        .await;
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .contains("src.arbor")
    );
    let exported = r.bytes().await.unwrap().to_vec();
    assert!(exported.len() > 256 * 1024, "{} bytes", exported.len());
    let mut d = Decoder::new();
    d.push(&exported);
    let Some(Event::Header(h)) = d.next_event().unwrap() else {
        panic!("no header")
    };
    // The export carries the whole log.
    assert_eq!(
        (h.nodes, h.payloads, h.log, h.head_seq),
        (3000, 3000, 6002, 6002)
    );

    let r = import(&s, "copy", Role::Admin, exported.clone()).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    assert_eq!(
        db.state("copy").await.unwrap(),
        db.state("src").await.unwrap()
    );
    // The import's rows are in the value index: 2,999 holders of the
    // text (n3 is deleted), read in bounded pages.
    crate::values::check_value_index(&db, "copy").await;
    let (mut holders, mut after) = (0, None);
    loop {
        let page = db
            .holders("copy", "text", &text.to_uppercase(), after, 1_000, None)
            .await
            .unwrap();
        holders += page.holders.len();
        after = page.next;
        if after.is_none() {
            break;
        }
    }
    assert_eq!(holders, 2_999);
    let copy = db.space("copy").await.unwrap().unwrap();
    assert_eq!(copy.head_seq, 0);
    assert_eq!(copy.horizon, Some(Stamp::new(t0 + 10_001, 3)));
    // An op from before the import is stale there; a new one applies.
    let old = [set(t0 + 5, 3, n(1), "text", Some("late"), 0)];
    assert_eq!(
        error_code(push(&s, "copy", &old).await).await,
        (409, "stale".into())
    );
    let new = [set(t0 + 20_000, 4, n(1), "text", Some("new"), 0)];
    assert_eq!(push(&s, "copy", &new).await.status(), 200);
    assert_eq!(db.space("copy").await.unwrap().unwrap().head_seq, 1);

    // Refusals: each creates nothing.
    let again = import(&s, "copy", Role::Admin, exported.clone()).await;
    assert_eq!(error_code(again).await, (409, "space_exists".into()));
    let reader = import(&s, "bad", Role::Read, exported.clone()).await;
    assert_eq!(reader.status(), 403);
    let mut flipped = exported.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x40;
    assert_eq!(
        error_code(import(&s, "bad", Role::Admin, flipped).await)
            .await
            .1,
        "bad_snapshot"
    );
    let cut = exported[..exported.len() - 100].to_vec();
    assert_eq!(
        error_code(import(&s, "bad", Role::Admin, cut).await)
            .await
            .1,
        "bad_snapshot"
    );
    let (a, b) = (n(1), n(2));
    let cycle = file(&[(a, b, &[0x80]), (b, a, &[0x80])], &[]);
    assert_eq!(
        error_code(import(&s, "bad", Role::Admin, cycle).await).await,
        (400, "bad_import".into())
    );
    let reserved = file(&[(NodeId::ROOT, NodeId::TRASH, &[0x80])], &[]);
    assert_eq!(
        error_code(import(&s, "bad", Role::Admin, reserved).await)
            .await
            .1,
        "reserved_node"
    );
    let orphan_register = file(&[(a, NodeId::ROOT, &[0x80])], &[(b, "text", "x", 1)]);
    assert_eq!(
        error_code(import(&s, "bad", Role::Admin, orphan_register).await)
            .await
            .1,
        "unknown_node"
    );
    let bad_key = file(&[(a, NodeId::ROOT, &[0x80, 0x00])], &[]);
    assert_eq!(
        error_code(import(&s, "bad", Role::Admin, bad_key).await)
            .await
            .1,
        "bad_key"
    );
    assert!(db.space("bad").await.unwrap().is_none());
    // A good hand-made file: a node under a parent that is not a row hangs
    // there (as in the core), and the horizon is its newest register stamp.
    let good = file(
        &[(a, NodeId::ROOT, &[0x80]), (b, n(77), &[0x80])],
        &[(a, "text", "hi", 9 << 16)],
    );
    assert_eq!(import(&s, "made", Role::Admin, good).await.status(), 200);
    let made = db.space("made").await.unwrap().unwrap();
    assert_eq!(made.horizon, Some(Stamp::new(9 << 16, 1)));
    assert_eq!(db.state("made").await.unwrap().nodes.len(), 2);
    s.stop().await;
}
