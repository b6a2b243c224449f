//! The value index (migration 0018): Postgres's `arbor_normalize` equals
//! the client's `normalize` on random strings; the index equals a
//! recomputation from the tree (checked after every push of the
//! differential test, with out-of-order batches and restores, and after
//! forks); the lookups by value over HTTP, scope-aware, with bad input
//! refused.

use arbor_client::normalize::normalize;
use arbor_client::replica::search_words;
use arbor_shared::auth::Role;
use arbor_shared::http::{ChildrenBody, HoldersBody, SearchBody};
use arbor_shared::sim::splitmix;
use arbor_shared::{NodeId, Op};
use arbor_sync_server::db::Db;

use crate::harness::*;
use crate::http::{Server, error_code, token};
use crate::scope::scoped_token;

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
    let scoped = scoped_token("demo", Role::Read, B);
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

/// Words for the search tests' values.
const WORDS: &[&str] = &[
    "alpha", "Alphabet", "beta", "BETA", "gamma", "del", "delta", "x1",
];

/// The nodes whose value of `field` holds every word of `query` (the last
/// as a prefix) and that are `within` or below it, not deleted: computed
/// from the state alone.
fn searched(
    state: &arbor_shared::tree::TreeState,
    query: &str,
    within: NodeId,
) -> std::collections::BTreeSet<NodeId> {
    let words = search_words(query);
    let mut out = std::collections::BTreeSet::new();
    let Some((last, rest)) = words.split_last() else {
        return out;
    };
    for ((node, _), payload) in &state.payloads {
        let (Some(value), Some(place)) = (&payload.value, state.nodes.get(node)) else {
            continue;
        };
        // Up to ROOT, TRASH or a missing parent, noting `within` on the way.
        let (mut up, mut inside) = (*node, *node == within);
        while let Some(p) = state.nodes.get(&up) {
            up = p.parent;
            inside |= up == within;
        }
        let _ = place;
        if up == NodeId::TRASH || !inside {
            continue;
        }
        let have = search_words(&normalize(value));
        if rest.iter().all(|w| have.contains(w))
            && have.iter().any(|h| h.starts_with(last.as_str()))
        {
            out.insert(*node);
        }
    }
    out
}

#[tokio::test]
async fn search_matches_a_recomputation_after_random_pushes() {
    let seed = seed("search_matches_a_recomputation_after_random_pushes");
    let db = test_db().await;
    db.create_space("s").await.unwrap();
    let mut s = seed;
    let mut t = now_ms() << 16;
    let mut nodes: Vec<NodeId> = Vec::new();
    for round in 0..30u64 {
        let mut ops = Vec::new();
        for _ in 0..20 {
            t += 1;
            let pick = |s: &mut u64, n: usize| (splitmix(s) % n as u64) as usize;
            match pick(&mut s, 6) {
                0..=2 => {
                    let id = NodeId(u128::from(splitmix(&mut s)) << 1 | 1);
                    let parent = if nodes.is_empty() || pick(&mut s, 3) == 0 {
                        NodeId::ROOT
                    } else {
                        nodes[pick(&mut s, nodes.len())]
                    };
                    ops.push(mv(
                        t,
                        1,
                        id,
                        parent,
                        &[0x80, 1 + pick(&mut s, 200) as u8],
                        0,
                    ));
                    nodes.push(id);
                    t += 1;
                    let text = format!(
                        "{} {}",
                        WORDS[pick(&mut s, WORDS.len())],
                        WORDS[pick(&mut s, WORDS.len())]
                    );
                    ops.push(set(t, 1, id, "text", Some(&text), 0));
                }
                3 if !nodes.is_empty() => {
                    let id = nodes[pick(&mut s, nodes.len())];
                    ops.push(set(
                        t,
                        1,
                        id,
                        "text",
                        Some(WORDS[pick(&mut s, WORDS.len())]),
                        0,
                    ));
                }
                4 if !nodes.is_empty() => {
                    let id = nodes[pick(&mut s, nodes.len())];
                    ops.push(mv(t, 1, id, NodeId::TRASH, &[0x80], 0));
                }
                _ if nodes.len() > 1 => {
                    // A move, a cycle now and then (skipped by the server).
                    let id = nodes[pick(&mut s, nodes.len())];
                    let to = nodes[pick(&mut s, nodes.len())];
                    ops.push(mv(t, 1, id, to, &[0x81, pick(&mut s, 200) as u8 + 1], 0));
                }
                _ => {}
            }
        }
        db.apply("s", None, &ops)
            .await
            .unwrap_or_else(|e| panic!("ARBOR_SEED={seed} round {round}: {e}"));
    }
    check_value_index(&db, "s").await;
    let state = db.state("s").await.unwrap();
    let roots = [NodeId::ROOT, nodes[0], nodes[nodes.len() / 2]];
    for q in [
        "alpha",
        "alp",
        "beta",
        "gamma del",
        "del",
        "x1",
        "alphabet beta",
        "nothing",
        "",
        "!!",
    ] {
        for within in roots {
            let words = search_words(q);
            let (_, hits) = db
                .search("s", &words, Some("text"), Some(within), None, 1_000)
                .await
                .unwrap();
            let got: std::collections::BTreeSet<NodeId> = hits.iter().map(|h| h.node).collect();
            assert_eq!(got.len(), hits.len(), "one hit per node and field");
            assert_eq!(
                got,
                searched(&state, q, within),
                "ARBOR_SEED={seed}: search {q:?} within {within}"
            );
            // Best first.
            assert!(hits.windows(2).all(|w| w[0].rank >= w[1].rank));
        }
    }
}

#[tokio::test]
async fn search_over_http_is_scoped_ranked_and_refuses_bad_input() {
    let config = test_db_config().await;
    let s = Server::start_on(config, 256, 5).await;
    let admin = token("demo", Role::Admin, None, 60);
    s.create_space("demo", &admin).await;
    let t = now_ms() << 16;
    let mut ops = seed_ops(t);
    ops.push(set(
        t + 13,
        1,
        D,
        "text",
        Some("budget budget BUDGET review"),
        0,
    ));
    ops.push(set(t + 14, 1, C, "text", Some("Budget draft"), 0));
    ops.push(set(t + 15, 1, G, "text", Some("the budgeting"), 0));
    assert_eq!(s.push("demo", &admin, &ops).await.status(), 200);
    let find = |q: &str, tok: &str| {
        let path = format!("/v1/spaces/demo/search?{q}");
        let tok = tok.to_string();
        let s = &s;
        async move { s.get_json::<SearchBody>(&path, tok).await }
    };
    let all = find("q=budget", &admin).await;
    let ids: Vec<NodeId> = all.hits.iter().map(|h| h.id).collect();
    assert_eq!(ids[0], D, "the value that says it three times first");
    assert_eq!(ids.len(), 3, "{ids:?}");
    assert_eq!(all.hits[0].parent, B);
    assert_eq!(all.hits[0].value, "budget budget BUDGET review");
    let draft = find("q=%22BUDGET%22%20(dra", &admin).await;
    assert_eq!(draft.hits.iter().map(|h| h.id).collect::<Vec<_>>(), [C]);
    assert!(find("q=budget&field=note", &admin).await.hits.is_empty());
    let under_b = find(&format!("q=budget&root={B}"), &admin).await;
    assert_eq!(under_b.hits.iter().map(|h| h.id).collect::<Vec<_>>(), [D]);
    // A token limited to B: its subtree only, and no root outside it.
    let scoped = scoped_token("demo", Role::Read, B);
    let mine = find("q=budget", &scoped).await;
    assert_eq!(mine.hits.iter().map(|h| h.id).collect::<Vec<_>>(), [D]);
    assert_eq!(
        error_code(
            s.get(
                &format!("/v1/spaces/demo/search?q=budget&root={A}"),
                &scoped
            )
            .await
        )
        .await,
        (403, "out_of_scope".to_string())
    );
    // Deleted: gone.
    assert_eq!(
        s.push(
            "demo",
            &admin,
            &[mv(t + 30, 1, C, NodeId::TRASH, &[0x80], 16)]
        )
        .await
        .status(),
        200
    );
    assert_eq!(find("q=budget", &admin).await.hits.len(), 2);
    assert!(find("q=%20%21%21", &admin).await.hits.is_empty());
    for bad in [
        "/v1/spaces/demo/search".to_string(),
        "/v1/spaces/demo/search?q=x&root=nope".to_string(),
        "/v1/spaces/demo/search?q=x&field=".to_string(),
        format!("/v1/spaces/demo/search?q={}", "w ".repeat(17)),
        format!("/v1/spaces/demo/search?q={}", "x".repeat(1025)),
        format!("/v1/spaces/demo/search?q=x&root={}", NodeId::TRASH),
        "/v1/spaces/demo/search?q=x&other=1".to_string(),
    ] {
        assert_eq!(error_code(s.get(&bad, &admin).await).await.0, 400, "{bad}");
    }
    s.stop().await;
}
