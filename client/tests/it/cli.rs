//! The `arbor` CLI as a real process: two replicas edit offline and
//! converge, the README's walkthrough.

use std::path::Path;
use std::process::Command;

use arbor_shared::auth::Role;

use crate::harness::*;

fn arbor(db: &Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_arbor"))
        .arg("--db")
        .arg(db)
        .args(args)
        .env_remove("ARBOR_TOKEN")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "arbor {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_cli_replicas_edit_offline_and_converge() {
    let server = TestServer::start("demo").await;
    let dir = TempDir::new("cli");
    let (a, b) = (dir.0.join("a.db"), dir.0.join("b.db"));
    let url = server.url();
    let tok = token("demo", Role::Write);
    let a2 = a.clone();
    let b2 = b.clone();
    // The CLI blocks: run it off the async workers.
    let out = tokio::task::spawn_blocking(move || {
        let (a, b) = (a2, b2);
        for db in [&a, &b] {
            arbor(
                db,
                &["init", "--server", &url, "--space", "demo", "--token", &tok],
            );
        }
        let groceries = arbor(&a, &["add", "groceries"]).trim().to_string();
        arbor(&a, &["add", "--parent", &groceries, "milk"]);
        arbor(&a, &["sync"]);
        arbor(&b, &["sync"]);
        // Offline: both edit.
        arbor(&a, &["add", "--parent", &groceries, "bread"]);
        let todo = arbor(&b, &["add", "--first", "todo"]).trim().to_string();
        arbor(&b, &["set", &groceries[..8], "color", "green"]);
        arbor(&b, &["mv", &groceries[..8], &todo[..8]]);
        let status = arbor(&b, &["status"]);
        assert!(status.contains("outbox    4 ops"), "{status}");
        // Back online, in any order.
        arbor(&a, &["sync"]);
        arbor(&b, &["sync"]);
        arbor(&a, &["sync"]);
        let (ta, tb) = (arbor(&a, &["tree"]), arbor(&b, &["tree"]));
        let ls = arbor(&a, &["ls", &todo[..8]]);
        let export = a.with_extension("copy.db");
        arbor(&a, &["export", export.to_str().unwrap()]);
        let exported = arbor(&export, &["tree"]);
        // The server's history of groceries: made by a, colored and moved
        // by b, newest first.
        let history = arbor(&a, &["history", &groceries[..8]]);
        // The tree as it was at the head is the tree now; as it was when
        // groceries was made (a's push, before b colored it), it differs.
        let status = arbor(&a, &["status"]);
        let head: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("cursor"))
            .and_then(|c| c.trim().parse().ok())
            .unwrap_or_else(|| panic!("no cursor in\n{status}"));
        assert_eq!(
            arbor(&a, &["tree", "--at", &head.to_string()]),
            arbor(&a, &["tree"])
        );
        let made: u64 = history
            .lines()
            .last()
            .and_then(|l| l.split_whitespace().next())
            .and_then(|s| s.parse().ok())
            .unwrap();
        let then = arbor(&a, &["tree", "--at", &made.to_string()]);
        // (Places are per push, registers per seq: docs/PROTOCOL.md.)
        assert!(then.contains(&groceries[..8]), "{then}");
        assert!(!then.contains("color=green"), "{then}");
        // The same from each replica's own record, offline, for the seqs
        // it holds: the newest lines (a replica whose first sync was a
        // cold start records from that snapshot on).
        for r in [&a, &b] {
            let local = arbor(r, &["history", "--local", &groceries[..8]]);
            assert!(!local.is_empty());
            assert!(
                history.starts_with(&local),
                "{local}\nis not the start of\n{history}"
            );
        }
        // Found by value, from the replica and from the server alike.
        let found = arbor(&a, &["find", "  MILK "]);
        assert!(
            found.contains("milk") && found.contains(&format!("in {}", &groceries[..8])),
            "{found}"
        );
        assert_eq!(found, arbor(&a, &["find", "--server", "milk"]));
        let child = arbor(&b, &["find", "--parent", &groceries[..8], "Bread"]);
        assert!(child.contains("bread"), "{child}");
        assert_eq!(
            child,
            arbor(
                &b,
                &["find", "--server", "--parent", &groceries[..8], "bread"]
            )
        );
        assert_eq!(arbor(&b, &["find", "nothing"]), "");
        // Full-text search, locally and on the server.
        let hits = arbor(&a, &["search", "BRE"]);
        assert!(hits.contains("[text] bread"), "{hits}");
        assert_eq!(hits, arbor(&a, &["search", "--server", "bre"]));
        let within = arbor(&a, &["search", "--root", &todo[..8], "milk"]);
        assert!(within.contains("[text] milk"), "{within}");
        assert_eq!(
            within,
            arbor(&a, &["search", "--server", "--root", &todo[..8], "milk"])
        );
        assert_eq!(arbor(&a, &["search", "--field", "color", "milk"]), "");
        (ta, tb, ls, exported, history)
    })
    .await
    .unwrap();
    let (ta, tb, ls, exported, history) = out;
    let lines: Vec<&str> = history.lines().collect();
    assert_eq!(lines.len(), 4, "{history}");
    assert!(lines[0].contains("moved under"), "{history}");
    assert!(lines[1].contains("set color = \"green\""), "{history}");
    assert!(lines[2].contains("set text = \"groceries\""), "{history}");
    assert!(lines[3].contains("moved under"), "{history}");
    assert!(lines.iter().all(|l| l.contains("client-test")), "{history}");
    assert_eq!(ta, tb);
    assert_eq!(ta, exported);
    for text in ["todo", "groceries", "milk", "bread"] {
        assert!(ta.contains(text), "{text} missing from\n{ta}");
    }
    // groceries sits under todo, with both items and its color.
    assert!(ls.contains("groceries [color=green]"), "{ls}");
    let lines: Vec<&str> = ta.lines().collect();
    assert!(lines[0].ends_with("todo"), "{ta}");
    assert!(lines[1].starts_with("  ") && lines[1].contains("groceries"));
    assert!(lines[2].starts_with("    ") && lines[3].starts_with("    "));
    let pg = server.db.state("demo").await.unwrap();
    assert_eq!(pg.nodes.len(), 4);
}

/// A chain far deeper than a screen is printed in bounded width: past the
/// indentation limit the depth is a number.
#[test]
fn tree_prints_a_deep_chain_in_bounded_width() {
    let dir = TempDir::new("cli-deep");
    let db = dir.0.join("deep.db");
    {
        let mut r = arbor_client::Replica::open(&db).unwrap();
        let mut parent = arbor_shared::NodeId::ROOT;
        for _ in 0..2_000 {
            parent = r.create(parent, arbor_client::Position::Last).unwrap();
        }
    }
    let out = arbor(&db, &["tree"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2_000);
    let widest = lines.iter().map(|l| l.len()).max().unwrap();
    assert!(widest < 120, "a line of {widest} bytes");
    assert!(lines[1_999].contains("[2000]"), "{}", lines[1_999]);
    // Shallow lines keep their plain indentation.
    assert!(lines[1].starts_with("  ") && !lines[1].contains('['));
    let narrow = arbor(&db, &["tree", "--max-indent", "2"]);
    assert!(narrow.lines().nth(3).unwrap().starts_with("    [4] "));
}

/// An outline file imported with `arbor import` prints back the same with
/// `arbor outline`, and what could not be taken is listed.
#[test]
fn import_and_outline_round_trip_through_the_cli() {
    let dir = TempDir::new("cli-outline");
    let db = dir.0.join("o.db");
    let md = dir.0.join("notes.md");
    let text = "- Book\n  author:: Le Guin\n  - chapter one\n    - a & b\n  - chapter two\n";
    std::fs::write(&md, text).unwrap();
    let out = arbor(&db, &["import", md.to_str().unwrap()]);
    assert!(out.starts_with("imported 4 nodes under "), "{out}");
    assert_eq!(out.lines().count(), 1, "nothing left out: {out}");
    let book = arbor(&db, &["ls"]);
    let id = book.split_whitespace().next().unwrap().to_string();
    let back = arbor(&db, &["outline", &id]);
    assert_eq!(back, text);
    let opml = arbor(&db, &["outline", &id, "--format", "opml"]);
    assert!(opml.contains("<outline text=\"a &amp; b\"/>"), "{opml}");
    let file = dir.0.join("back.opml");
    std::fs::write(&file, &opml).unwrap();
    let out = arbor(&db, &["import", file.to_str().unwrap(), "--parent", &id]);
    assert!(out.starts_with("imported 4 nodes"), "{out}");
    let roam = dir.0.join("r.json");
    std::fs::write(
        &roam,
        r#"[{"title": "P", "edit-time": 1, "children": "x"}]"#,
    )
    .unwrap();
    let out = arbor(&db, &["import", roam.to_str().unwrap()]);
    assert!(out.contains("imported 1 nodes"), "{out}");
    assert!(
        out.contains("not imported: item 1: its children are not a JSON array"),
        "{out}"
    );
    assert!(out.contains("ignored: edit-time (1 times)"), "{out}");
}
