//! The value index on real SQLite files: lookups by value (holders, a
//! child by value, the canonical duplicate, merging), and a seeded
//! differential test: replicas editing concurrently and applying each
//! other's ops out of stamp order keep the index equal to a recomputation
//! from the tree after every step.

use std::collections::{BTreeMap, HashSet};

use arbor_client::normalize::normalize;
use arbor_client::replica::search_words;
use arbor_client::{Holder, Position, Replica, ReplicaError};
use arbor_shared::protocol::SeqOp;
use arbor_shared::{NodeId, Op, OrderKey};

use crate::harness::*;

#[test]
fn holders_and_children_are_found_by_normalized_value() {
    let dir = TempDir::new("values");
    let mut r = Replica::open(&dir.0.join("r.db")).unwrap();
    let a = r
        .create_with(NodeId::ROOT, Position::Last, &[("text", "Alpha")])
        .unwrap();
    let b = r
        .create_with(NodeId::ROOT, Position::Last, &[("text", "beta")])
        .unwrap();
    let a1 = r
        .create_with(a, Position::Last, &[("text", "  Shared\tValue ")])
        .unwrap();
    let b1 = r
        .create_with(b, Position::Last, &[("text", "shared value")])
        .unwrap();
    let b2 = r
        .create_with(b, Position::Last, &[("note", "shared value")])
        .unwrap();
    r.check_invariants().unwrap();

    let mut holders = r.holders("text", "SHARED VALUE", None, 10).unwrap();
    holders.sort_by_key(|h| h.node);
    let mut want = vec![
        Holder {
            node: a1,
            parent: a,
        },
        Holder {
            node: b1,
            parent: b,
        },
    ];
    want.sort_by_key(|h| h.node);
    assert_eq!(holders, want);
    // Another field is another index.
    assert_eq!(
        r.holders("note", "Shared Value", None, 10).unwrap(),
        vec![Holder {
            node: b2,
            parent: b
        }]
    );
    // Pages in node id order.
    let first = r.holders("text", "shared value", None, 1).unwrap();
    let rest = r
        .holders("text", "shared value", Some(first[0].node), 10)
        .unwrap();
    assert_eq!(first.len() + rest.len(), 2);
    assert!(first[0].node < rest[0].node);

    // A changed value leaves the old value's holders; a cleared one too.
    r.set(a1, "text", Some("other")).unwrap();
    assert_eq!(
        r.holders("text", "shared value", None, 10).unwrap().len(),
        1
    );
    assert_eq!(r.holders("text", "OTHER", None, 10).unwrap().len(), 1);
    r.set(a1, "text", None).unwrap();
    assert!(r.holders("text", "other", None, 10).unwrap().is_empty());

    // A deleted holder is left out, and back when restored; a moved one
    // has its new parent.
    r.delete(b).unwrap();
    assert!(
        r.holders("text", "shared value", None, 10)
            .unwrap()
            .is_empty()
    );
    r.restore(b).unwrap();
    r.move_node(b1, a, Position::First).unwrap();
    assert_eq!(
        r.holders("text", "shared value", None, 10).unwrap(),
        vec![Holder {
            node: b1,
            parent: a
        }]
    );
    assert_eq!(
        r.child_by_value(a, "text", "Shared value").unwrap(),
        Some(b1)
    );
    assert_eq!(r.child_by_value(b, "text", "shared value").unwrap(), None);
    r.check_invariants().unwrap();
}

#[test]
fn search_finds_words_best_first_within_a_subtree_and_not_deleted() {
    let dir = TempDir::new("search");
    let mut r = Replica::open(&dir.0.join("r.db")).unwrap();
    let a = r
        .create_with(NodeId::ROOT, Position::Last, &[("text", "Project notes")])
        .unwrap();
    let a1 = r
        .create_with(
            a,
            Position::Last,
            &[("text", "Meeting notes: budget, budget and BUDGET")],
        )
        .unwrap();
    let a2 = r
        .create_with(
            a,
            Position::Last,
            &[("text", "budget draft"), ("tag", "finance")],
        )
        .unwrap();
    let b = r
        .create_with(
            NodeId::ROOT,
            Position::Last,
            &[("text", "Budgeting elsewhere")],
        )
        .unwrap();
    let hits =
        |r: &mut Replica, q: &str, field: Option<&str>, within: Option<NodeId>| -> Vec<NodeId> {
            r.search(q, field, within, 10)
                .unwrap()
                .into_iter()
                .map(|h| h.node)
                .collect()
        };
    // Every word, the last as a prefix; case does not matter.
    assert_eq!(hits(&mut r, "NOTES", None, None).len(), 2);
    let budget = hits(&mut r, "budget", None, None);
    assert_eq!(budget.len(), 3, "{budget:?}");
    // BM25: the value that says it three times first.
    assert_eq!(budget[0], a1);
    assert!(budget.contains(&b), "a prefix of budgeting");
    assert_eq!(hits(&mut r, "budget dra", None, None), vec![a2]);
    assert_eq!(hits(&mut r, "budget", None, Some(a)).len(), 2);
    assert_eq!(hits(&mut r, "fin", Some("tag"), None), vec![a2]);
    assert!(hits(&mut r, "fin", Some("text"), None).is_empty());
    // Query syntax is never an error: only words count.
    assert_eq!(hits(&mut r, "\"budget\" (draft*", None, None), vec![a2]);
    assert!(hits(&mut r, "  ** \" ", None, None).is_empty());
    let hit = &r.search("draft", None, None, 1).unwrap()[0];
    assert_eq!(
        (hit.parent, hit.field.as_str(), hit.value.as_str()),
        (a, "text", "budget draft")
    );
    // Deleted: gone; changed: found by the new words only.
    r.delete(a2).unwrap();
    assert!(hits(&mut r, "draft", None, None).is_empty());
    r.set(b, "text", Some("something else")).unwrap();
    assert!(hits(&mut r, "budgeting", None, None).is_empty());
    assert_eq!(hits(&mut r, "something", None, None), vec![b]);
    r.check_invariants().unwrap();
}

#[test]
fn the_first_duplicate_in_sibling_order_is_canonical_and_merging_keeps_every_child() {
    let dir = TempDir::new("dups");
    let mut r = Replica::open(&dir.0.join("r.db")).unwrap();
    let p = r.create(NodeId::ROOT, Position::Last).unwrap();
    let x = r
        .create_with(p, Position::Last, &[("text", "=archive")])
        .unwrap();
    let y = r
        .create_with(p, Position::First, &[("text", "=Archive")])
        .unwrap();
    let x1 = r.create(x, Position::Last).unwrap();
    let y1 = r.create(y, Position::Last).unwrap();
    let y2 = r.create(y, Position::Last).unwrap();
    assert_eq!(
        r.children_by_value(p, "text", "=archive").unwrap(),
        vec![y, x]
    );
    assert_eq!(r.child_by_value(p, "text", "=ARCHIVE").unwrap(), Some(y));
    // Reordering the siblings changes which one is first.
    r.move_node(x, p, Position::First).unwrap();
    assert_eq!(r.child_by_value(p, "text", "=archive").unwrap(), Some(x));

    let (canonical, merged) = r
        .merge_children_by_value(p, "text", "=archive")
        .unwrap()
        .unwrap();
    assert_eq!((canonical, merged), (x, 1));
    let kids: Vec<NodeId> = r
        .children(x, None, 10)
        .unwrap()
        .into_iter()
        .map(|v| v.id)
        .collect();
    assert_eq!(kids, vec![x1, y1, y2]);
    assert!(r.is_deleted(y).unwrap());
    assert_eq!(r.children_by_value(p, "text", "=archive").unwrap(), vec![x]);
    // One undo step brings the duplicate back with its children.
    r.undo().unwrap();
    assert_eq!(r.children_by_value(p, "text", "=archive").unwrap().len(), 2);
    assert_eq!(r.children(y, None, 10).unwrap().len(), 2);
    assert_eq!(
        r.merge_children_by_value(p, "text", "nothing").unwrap(),
        None
    );
    r.check_invariants().unwrap();
}

/// Values that collide once normalized, and some that do not.
const VALUES: &[&str] = &[
    "alpha",
    "Alpha",
    " ALPHA ",
    "beta",
    "be ta",
    "be\u{a0}\tta",
    "Caf\u{e9}",
    "cafe\u{301}",
    "=pin",
    "=Pin",
];

/// Holders by normalized value.
type HoldersByValue = BTreeMap<String, Vec<Holder>>;
/// Children by (parent, normalized value), in sibling order.
type ChildrenByValue = BTreeMap<(NodeId, String), Vec<NodeId>>;

/// The holders and children-by-value the replica's state implies,
/// computed without the index.
fn expected(r: &Replica) -> (HoldersByValue, ChildrenByValue) {
    let state = r.state().unwrap();
    let mut holders: BTreeMap<String, Vec<Holder>> = BTreeMap::new();
    let mut children: BTreeMap<(NodeId, String), Vec<(OrderKey, NodeId)>> = BTreeMap::new();
    for ((node, field), payload) in &state.payloads {
        let (Some(value), Some(place)) = (&payload.value, state.nodes.get(node)) else {
            continue;
        };
        if field != "text" {
            continue;
        }
        let norm = normalize(value);
        children
            .entry((place.parent, norm.clone()))
            .or_default()
            .push((place.key.clone(), *node));
        // Deleted: the walk up ends at TRASH.
        let mut up = place.parent;
        while let Some(p) = state.nodes.get(&up) {
            up = p.parent;
        }
        if up != NodeId::TRASH {
            holders.entry(norm).or_default().push(Holder {
                node: *node,
                parent: place.parent,
            });
        }
    }
    for list in holders.values_mut() {
        list.sort_by_key(|h| h.node);
    }
    let children = children
        .into_iter()
        .map(|(k, mut v)| {
            v.sort();
            (k, v.into_iter().map(|(_, n)| n).collect())
        })
        .collect();
    (holders, children)
}

/// Searches, and what each must find.
const QUERIES: &[&str] = &[
    "alpha", "AL", "be", "be ta", "ta", "caf", "café", "pin", "=p", "\"x", "",
];

/// The nodes whose text holds every word of `query` (the last as a
/// prefix), not deleted: a search computed from the state alone.
fn searched(r: &Replica, query: &str) -> std::collections::BTreeSet<NodeId> {
    let state = r.state().unwrap();
    let words = search_words(query);
    let mut out = std::collections::BTreeSet::new();
    if words.is_empty() {
        return out;
    }
    for ((node, field), payload) in &state.payloads {
        let (Some(value), Some(place)) = (&payload.value, state.nodes.get(node)) else {
            continue;
        };
        let mut up = place.parent;
        while let Some(p) = state.nodes.get(&up) {
            up = p.parent;
        }
        if field != "text" || up == NodeId::TRASH {
            continue;
        }
        let have = search_words(&normalize(value));
        let (last, rest) = words.split_last().unwrap();
        if rest.iter().all(|w| have.contains(w))
            && have.iter().any(|h| h.starts_with(last.as_str()))
        {
            out.insert(*node);
        }
    }
    out
}

fn check_lookups(r: &mut Replica) {
    for q in QUERIES {
        let got: std::collections::BTreeSet<NodeId> = r
            .search(q, Some("text"), None, 1_000)
            .unwrap()
            .into_iter()
            .map(|h| h.node)
            .collect();
        assert_eq!(got, searched(r, q), "search {q:?}");
    }
    let (holders, children) = expected(r);
    for v in VALUES {
        let want = holders.get(&normalize(v)).cloned().unwrap_or_default();
        // Read in pages of 2 to exercise the cursor.
        let mut got = Vec::new();
        loop {
            let page = r
                .holders("text", v, got.last().map(|h: &Holder| h.node), 2)
                .unwrap();
            if page.is_empty() {
                break;
            }
            got.extend(page);
        }
        assert_eq!(got, want, "holders of {v:?}");
    }
    for ((parent, norm), want) in children {
        assert_eq!(r.children_by_value(parent, "text", &norm).unwrap(), want);
        assert_eq!(
            r.child_by_value(parent, "text", &norm).unwrap(),
            want.first().copied()
        );
    }
}

#[test]
fn random_concurrent_edits_keep_the_index_exact() {
    let seed = seed("random_concurrent_edits_keep_the_index_exact");
    let mut rng = seed | 1;
    let mut next = move |n: usize| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        (rng % n as u64) as usize
    };
    let dir = TempDir::new("values-random");
    let mut replicas: Vec<Replica> = (0..3)
        .map(|i| Replica::open(&dir.0.join(format!("r{i}.db"))).unwrap())
        .collect();
    // The "server": every op in the order replicas handed it over, which
    // is not stamp order, so applying it undoes and redoes.
    let mut log: Vec<Op> = Vec::new();
    let mut logged: HashSet<arbor_shared::Stamp> = HashSet::new();
    let mut nodes = vec![NodeId::ROOT];
    for step in 0..600 {
        let i = next(replicas.len());
        let r = &mut replicas[i];
        let pick = nodes[next(nodes.len())];
        let target = nodes[next(nodes.len())];
        let value = VALUES[next(VALUES.len())];
        let result = match next(10) {
            0 | 1 => r
                .create_with(target, Position::Last, &[("text", value)])
                .map(|n| nodes.push(n)),
            2 => r.move_node(pick, target, Position::First),
            3 => r.delete(pick),
            4 => r.restore(pick),
            5 | 6 => r.set(pick, "text", Some(value)),
            7 => r.set(pick, "text", None),
            8 => {
                // Hand this replica's outbox over.
                for op in r.outbox(usize::MAX).unwrap() {
                    if logged.insert(op.stamp()) {
                        log.push(op);
                    }
                }
                Ok(())
            }
            _ => {
                // Apply what the server has, from this replica's cursor.
                let from = r.cursor().unwrap().unwrap_or(0) as usize;
                let ops: Vec<SeqOp> = log[from..]
                    .iter()
                    .enumerate()
                    .map(|(k, op)| SeqOp::new((from + k + 1) as u64, op.clone()))
                    .collect();
                r.apply_remote(&ops).map(|_| ())
            }
        };
        match result {
            Ok(())
            | Err(
                ReplicaError::Reserved(_)
                | ReplicaError::Cycle { .. }
                | ReplicaError::UnknownNode(_),
            ) => {}
            Err(e) => panic!("seed {seed} step {step}: {e}"),
        }
        r.check_invariants()
            .unwrap_or_else(|e| panic!("seed {seed} step {step}: {e}"));
        if step % 50 == 0 {
            check_lookups(r);
        }
    }
    // Quiescence: everything handed over and applied everywhere.
    for r in &replicas {
        for op in r.outbox(usize::MAX).unwrap() {
            if logged.insert(op.stamp()) {
                log.push(op);
            }
        }
    }
    for r in &mut replicas {
        let from = r.cursor().unwrap().unwrap_or(0) as usize;
        let ops: Vec<SeqOp> = log[from..]
            .iter()
            .enumerate()
            .map(|(k, op)| SeqOp::new((from + k + 1) as u64, op.clone()))
            .collect();
        r.apply_remote(&ops).unwrap();
        r.check_invariants().unwrap();
        check_lookups(r);
    }
    let state = replicas[0].state().unwrap();
    for r in &replicas[1..] {
        assert_eq!(r.state().unwrap(), state, "seed {seed}");
    }
}

#[test]
fn after_a_cold_start_the_index_is_built_in_steps_and_edits_meanwhile_keep_it_exact() {
    use arbor_client::snapshot::{load_snapshot, write_snapshot};
    let dir = TempDir::new("values-cold");
    let mut a = Replica::open(&dir.0.join("a.db")).unwrap();
    a.bind_space("s").unwrap();
    let mut made = Vec::new();
    for i in 0..3_000 {
        let text = VALUES[i % VALUES.len()];
        made.push(
            a.create_with(NodeId::ROOT, Position::Last, &[("text", text)])
                .unwrap(),
        );
    }
    let mut bytes = Vec::new();
    write_snapshot(&a, "s", |chunk| {
        bytes.extend(chunk);
        Ok(())
    })
    .unwrap();
    let mut b = Replica::open(&dir.0.join("b.db")).unwrap();
    load_snapshot(
        &mut b,
        bytes
            .chunks(4096)
            .map(|c| Ok::<_, String>(bytes::Bytes::copy_from_slice(c))),
        |_| {},
    )
    .unwrap();
    // Left to the client: not ready, and what it has is right.
    assert!(!b.value_index_ready().unwrap());
    b.check_invariants().unwrap();
    // A step, then edits on both sides of where it stopped, then the rest.
    assert!(!b.build_value_index_step(1_000).unwrap());
    b.check_invariants().unwrap();
    b.set(made[0], "text", Some("changed early")).unwrap();
    b.set(made[2_999], "text", Some("changed late")).unwrap();
    b.delete(made[1_500]).unwrap();
    b.set(made[1_501], "text", None).unwrap();
    b.check_invariants().unwrap();
    // A lookup completes it first.
    let mut want = a.holders("text", "alpha", None, 1_000).unwrap();
    want.retain(|h| ![made[0], made[1_500], made[1_501], made[2_999]].contains(&h.node));
    let got = b.holders("text", "alpha", None, 1_000).unwrap();
    assert!(b.value_index_ready().unwrap());
    assert_eq!(got, want);
    b.check_invariants().unwrap();
    assert_eq!(b.search("changed", None, None, 10).unwrap().len(), 2);
}
