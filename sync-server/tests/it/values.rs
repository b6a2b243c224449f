//! The value index (migration 0018): Postgres's `arbor_normalize` equals
//! the client's `normalize` on random strings; the index equals a
//! recomputation from the tree (checked after every push of the
//! differential test, with out-of-order batches and restores, and after
//! forks); the lookups by value over HTTP, scope-aware, with bad input
//! refused.

use arbor_client::normalize::normalize;
use arbor_shared::auth::{Claims, Role, mint};
use arbor_shared::http::{ChildrenBody, HoldersBody};
use arbor_shared::sim::splitmix;
use arbor_shared::{NodeId, Op};
use arbor_sync_server::db::Db;

use crate::harness::*;
use crate::http::{Server, error_code, key, token};

/// Asserts that `space`'s value index equals what its registers and places
/// imply, with the client's normalization of each value.
pub(crate) async fn check_value_index(db: &Db, space: &str) {
    let client = db.client().await.unwrap();
    let diff = |a: &str, b: &str| {
        format!(
            "SELECT count(*) FROM ({a} EXCEPT {b}) d",
            a = a.replace("$S", "(SELECT id FROM spaces WHERE name = $1)"),
            b = b.replace("$S", "(SELECT id FROM spaces WHERE name = $1)")
        )
    };
    let index = "SELECT node, field, norm, parent, key FROM value_index WHERE space = $S";
    let derived = "SELECT p.node, p.field, arbor_normalize(p.value), n.parent, n.key
                   FROM payloads p LEFT JOIN nodes n ON n.space = p.space AND n.id = p.node
                   WHERE p.space = $S AND p.value IS NOT NULL";
    for (a, b, what) in [(index, derived, "not derived"), (derived, index, "missing")] {
        let n: i64 = client
            .query_one(&diff(a, b), &[&space])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 0, "value index of {space}: {n} rows {what}");
    }
    for row in client
        .query(
            "SELECT p.value, v.norm FROM value_index v
             JOIN payloads p ON p.space = v.space AND p.node = v.node AND p.field = v.field
             WHERE v.space = (SELECT id FROM spaces WHERE name = $1)",
            &[&space],
        )
        .await
        .unwrap()
    {
        let (value, norm): (String, String) = (row.get(0), row.get(1));
        assert_eq!(normalize(&value), norm, "normalized {value:?}");
    }
}

/// Characters where lowercasing, composition or whitespace matter: ASCII,
/// Latin-1, Latin Extended-A, combining marks, Greek (final sigma),
/// Cyrillic, Armenian, Georgian, Cherokee, Hangul jamo and syllables,
/// every White_Space character, zero-width ones, CJK, Deseret (outside the
/// BMP), emoji.
const POOL: &[(u32, u32)] = &[
    (0x20, 0x7e),
    (0xa0, 0xff),
    (0x100, 0x17f),
    (0x300, 0x36f),
    (0x370, 0x3ff),
    (0x400, 0x45f),
    (0x531, 0x587),
    (0x10a0, 0x10ff),
    (0x13a0, 0x13f5),
    (0x1100, 0x1175),
    (0xac00, 0xac40),
    (0x9, 0xd),
    (0x85, 0x85),
    (0x1680, 0x1680),
    (0x2000, 0x200d),
    (0x2028, 0x2029),
    (0x202f, 0x202f),
    (0x205f, 0x205f),
    (0x3000, 0x3000),
    (0x1e9e, 0x1e9e),
    (0x130, 0x131),
    (0x4e00, 0x4e20),
    (0x10400, 0x1044f),
    (0x1f600, 0x1f60f),
];

fn random_string(s: &mut u64) -> String {
    let len = splitmix(s) % 12;
    (0..len)
        .filter_map(|_| {
            let (lo, hi) = POOL[(splitmix(s) % POOL.len() as u64) as usize];
            char::from_u32(lo + (splitmix(s) % u64::from(hi - lo + 1)) as u32)
        })
        .collect()
}

#[tokio::test]
async fn postgres_normalizes_as_the_client_does() {
    let seed = seed("postgres_normalizes_as_the_client_does");
    let db = test_db().await;
    let client = db.client().await.unwrap();
    let mut s = seed;
    let mut inputs: Vec<String> = [
        "  Hello\t World ",
        "ΟΔΟΣ ΣΑΣ",
        "İstanbul",
        "STRASSE straße ẞ",
        "Cafe\u{301} CAF\u{c9}",
        "\u{1100}\u{1161}\u{11a8}",
        "\u{3000}x\u{85}\u{2028}y\u{200b}z",
        "𐐀𐐨",
        "",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    inputs.extend((0..5_000).map(|_| random_string(&mut s)));
    let rows = client
        .query(
            "SELECT arbor_normalize(v) FROM unnest($1::text[]) v",
            &[&inputs],
        )
        .await
        .unwrap();
    for (input, row) in inputs.iter().zip(rows) {
        let pg: String = row.get(0);
        assert_eq!(
            pg,
            normalize(input),
            "ARBOR_SEED={seed}: {input:?} ({:x?})",
            input.chars().map(u32::from).collect::<Vec<_>>()
        );
    }
}

const A: NodeId = NodeId(1);
const B: NodeId = NodeId(2);
const C: NodeId = NodeId(3);
const D: NodeId = NodeId(4);
const E: NodeId = NodeId(5);
const F: NodeId = NodeId(6);
const G: NodeId = NodeId(7);

/// ROOT -> A -> {B "Pin" -> {D "=archive", F "=Archive "}, C "pin"};
/// ROOT -> E "PIN" (deleted later); G holds "pin" in another field.
fn seed_ops(t: u64) -> Vec<Op> {
    vec![
        mv(t, 1, A, NodeId::ROOT, &[0x80], 0),
        mv(t + 1, 1, B, A, &[0x80], 0),
        mv(t + 2, 1, C, A, &[0x81], 0),
        mv(t + 3, 1, D, B, &[0x82], 0),
        mv(t + 4, 1, F, B, &[0x81], 0),
        mv(t + 5, 1, E, NodeId::ROOT, &[0x81], 0),
        mv(t + 6, 1, G, A, &[0x83], 0),
        set(t + 7, 1, B, "text", Some("Pin"), 0),
        set(t + 8, 1, C, "text", Some("pin"), 0),
        set(t + 9, 1, D, "text", Some("=archive"), 0),
        set(t + 10, 1, F, "text", Some("=Archive "), 0),
        set(t + 11, 1, E, "text", Some("PIN"), 0),
        set(t + 12, 1, G, "note", Some("pin"), 0),
    ]
}

fn scoped_token(space: &str, root: NodeId) -> String {
    let claims = Claims {
        root: Some(root),
        ..arbor_testkit::tokens::claims("scoped", space, Role::Read, 60)
    };
    mint(&claims, &key())
}

fn ids(body: &HoldersBody) -> Vec<NodeId> {
    body.holders.iter().map(|h| h.node.id).collect()
}

#[tokio::test]
async fn holders_and_children_by_value_over_http() {
    let config = test_db_config().await;
    let s = Server::start_on(config.clone(), 256, 5).await;
    let admin = token("demo", Role::Admin, None, 60);
    s.create_space("demo", &admin).await;
    let db = Db::new(config, 2).unwrap();
    let t = now_ms() << 16;
    assert_eq!(s.push("demo", &admin, &seed_ops(t)).await.status(), 200);

    let all: HoldersBody = s
        .get_json("/v1/spaces/demo/values?field=text&value=%20pIN", &admin)
        .await;
    assert_eq!(ids(&all), [B, C, E]);
    assert_eq!(all.next, None);
    assert_eq!(all.holders[0].parent, A);
    assert_eq!(
        all.holders[0].node.payloads["text"].value.as_deref(),
        Some("Pin")
    );
    // Deleted: E leaves the holders.
    assert_eq!(
        s.push(
            "demo",
            &admin,
            &[mv(t + 20, 1, E, NodeId::TRASH, &[0x80], 13)]
        )
        .await
        .status(),
        200
    );
    // Pages of one, each with its next.
    let mut got = Vec::new();
    let mut after = String::new();
    loop {
        let page: HoldersBody = s
            .get_json(
                &format!("/v1/spaces/demo/values?field=text&value=pin&limit=1{after}"),
                &admin,
            )
            .await;
        got.extend(ids(&page));
        match page.next {
            Some(n) => after = format!("&after={n}"),
            None => break,
        }
    }
    assert_eq!(got, [B, C]);
    // Another field.
    let notes: HoldersBody = s
        .get_json("/v1/spaces/demo/values?field=note&value=PIN", &admin)
        .await;
    assert_eq!(ids(&notes), [G]);

    // Children by value: the first in sibling order is canonical (F's key
    // sorts before D's).
    let kids: ChildrenBody = s
        .get_json(
            &format!("/v1/spaces/demo/nodes/{B}/children/by-value?field=text&value=%3DARCHIVE"),
            &admin,
        )
        .await;
    let kid_ids: Vec<NodeId> = kids.children.iter().map(|c| c.id).collect();
    assert_eq!(kid_ids, [F, D]);

    // A token limited to B sees B's subtree only.
    let scoped = scoped_token("demo", B);
    let mine: HoldersBody = s
        .get_json("/v1/spaces/demo/values?field=text&value=pin", &scoped)
        .await;
    assert_eq!(ids(&mine), [B]);
    let archive: HoldersBody = s
        .get_json(
            "/v1/spaces/demo/values?field=text&value=%3Darchive",
            &scoped,
        )
        .await;
    assert_eq!(ids(&archive), [D, F]);
    assert_eq!(
        error_code(
            s.get(
                &format!("/v1/spaces/demo/nodes/{A}/children/by-value?field=text&value=pin"),
                &scoped
            )
            .await
        )
        .await,
        (403, "out_of_scope".to_string())
    );

    // Bad input: a clear 400, never a database error.
    for bad in [
        "/v1/spaces/demo/values?field=&value=x".to_string(),
        "/v1/spaces/demo/values?field=text&value=%00".to_string(),
        "/v1/spaces/demo/values?value=x".to_string(),
        "/v1/spaces/demo/values?field=text&value=x&after=nope".to_string(),
        format!("/v1/spaces/demo/values?field={}&value=x", "f".repeat(65)),
        "/v1/spaces/demo/nodes/nope/children/by-value?field=text&value=x".to_string(),
    ] {
        assert_eq!(error_code(s.get(&bad, &admin).await).await.0, 400, "{bad}");
    }
    let r = s
        .get("/v1/spaces/demo/values?field=text&value=x", "not-a-token")
        .await;
    assert_eq!(r.status(), 401);
    check_value_index(&db, "demo").await;
    s.stop().await;
}
