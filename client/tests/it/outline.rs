//! Outlines from other outliners: each format read into the expected
//! items (with its report of what was not taken), imported into a real
//! replica file, and a subtree exported as Markdown and OPML and imported
//! again giving the same tree (seeded random trees).

use arbor_client::outline::{Format, Item, parse, write_markdown, write_opml};
use arbor_client::{Position, Replica};
use arbor_shared::NodeId;

use crate::harness::*;

/// `(depth, text)` of each item.
fn shape(items: &[Item]) -> Vec<(usize, &str)> {
    items.iter().map(|i| (i.depth, i.text.as_str())).collect()
}

#[test]
fn opml_from_workflowy_and_dynalist_reads_with_notes_and_attributes() {
    let opml = r#"<?xml version="1.0"?>
<opml version="2.0">
  <head><title>Export</title></head>
  <body>
    <outline text="Projects" _note="all of them">
      <outline text="Arbor &amp; friends" _complete="true">
        <outline text="ship &lt;it&gt;"/>
      </outline>
      <outline text="Second"/>
    </outline>
    <outline text="Inbox"/>
    <bogus/>
  </body>
</opml>"#;
    let p = parse(Format::Opml, opml);
    assert_eq!(
        shape(&p.items),
        [
            (0, "Projects"),
            (1, "Arbor & friends"),
            (2, "ship <it>"),
            (1, "Second"),
            (0, "Inbox")
        ]
    );
    assert_eq!(p.items[0].fields["note"], "all of them");
    assert_eq!(p.items[1].fields["_complete"], "true");
    assert_eq!(p.skipped.len(), 1, "{:?}", p.skipped);
    assert!(p.skipped[0].reason.contains("<bogus>"));

    // Broken XML: what came before is kept, the rest reported.
    let p = parse(
        Format::Opml,
        "<opml><body><outline text=\"a\"/><outline text=\"b\"></opml>",
    );
    assert_eq!(shape(&p.items)[0], (0, "a"));
    assert!(!p.skipped.is_empty());
}

#[test]
fn markdown_indented_text_logseq_and_em_read_as_outlines() {
    let md = "# Title\n\nIntro line\n- one\n  - one.a\n    continued\n  - one.b\n- two\n1. three\n## Section\n* four\n";
    let p = parse(Format::Markdown, md);
    assert_eq!(
        shape(&p.items),
        [
            (0, "Title"),
            (1, "Intro line"),
            (1, "one"),
            (2, "one.a\ncontinued"),
            (2, "one.b"),
            (1, "two"),
            (1, "three"),
            (1, "Section"),
            (2, "four"),
        ]
    );
    // Plain indentation with tabs; a jump of two levels is one.
    let p = parse(Format::Markdown, "a\n\tb\n\t\t\tc\n\td\ne\n");
    assert_eq!(
        shape(&p.items),
        [(0, "a"), (1, "b"), (2, "c"), (1, "d"), (0, "e")]
    );
    // Logseq: properties are fields.
    let p = parse(
        Format::Markdown,
        "- Book\n  author:: Le Guin\n  rating:: 5\n  - chapter one\n",
    );
    assert_eq!(shape(&p.items), [(0, "Book"), (1, "chapter one")]);
    assert_eq!(p.items[0].fields["author"], "Le Guin");
    assert_eq!(p.items[0].fields["rating"], "5");
    // em's export: `- ` lists with two spaces per level.
    let p = parse(Format::Markdown, "- a\n  - b\n    - c\n  - =pin\n");
    assert_eq!(shape(&p.items), [(0, "a"), (1, "b"), (2, "c"), (1, "=pin")]);
    assert!(p.skipped.is_empty());
}

#[test]
fn roam_json_reads_pages_and_blocks_and_counts_what_it_ignores() {
    let roam = r#"[
      {"title": "Page", "create-time": 1, "edit-time": 2, "children": [
        {"string": "block", "uid": "abc", "edit-time": 3, "children": [
          {"string": "nested", "heading": 2}
        ]},
        {"string": "second"}
      ]},
      {"title": "Other"}
    ]"#;
    let p = parse(Format::Roam, roam);
    assert_eq!(
        shape(&p.items),
        [
            (0, "Page"),
            (1, "block"),
            (2, "nested"),
            (1, "second"),
            (0, "Other")
        ]
    );
    assert_eq!(p.items[1].fields["uid"], "abc");
    assert_eq!(p.items[2].fields["heading"], "2");
    assert_eq!(p.ignored["edit-time"], 2);
    assert_eq!(p.ignored["create-time"], 1);
    assert_eq!(parse(Format::Roam, "{").skipped.len(), 1);
    assert_eq!(parse(Format::Roam, "{}").skipped.len(), 1);
}

#[test]
fn what_a_field_cannot_hold_is_reported_not_dropped_silently() {
    let long = "x".repeat(70_000);
    let opml = format!(
        "<opml><body><outline text=\"{long}\" ok=\"1\"/><outline text=\"fine\" note=\"{long}\"/></body></opml>"
    );
    let p = parse(Format::Opml, &opml);
    assert_eq!(p.items.len(), 2);
    assert!(p.items[0].text.is_empty());
    assert_eq!(p.items[0].fields["ok"], "1");
    assert!(!p.items[1].fields.contains_key("note"));
    assert_eq!(p.skipped.len(), 2, "{:?}", p.skipped);
}

/// A random tree under a new node of `r`, with texts that need care
/// (markup characters, several lines, list markers) and a field or two.
fn random_tree(r: &mut Replica, seed: u64) -> NodeId {
    let mut s = seed | 1;
    let mut next = move |n: u64| {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s % n
    };
    let texts = [
        "plain",
        "a & b < c > d \"q\"",
        "two\nlines",
        "- not a child",
        "line\n- looks like a bullet\n\\ backslash",
        "key:: not a field",
        "# not a heading",
        "ünïcödé 🌳",
        "",
    ];
    let root = r
        .create_with(NodeId::ROOT, Position::Last, &[("text", "export me")])
        .unwrap();
    let mut nodes = vec![root];
    for i in 0..60 {
        let parent = nodes[next(nodes.len() as u64) as usize];
        let text = texts[next(texts.len() as u64) as usize];
        let mut fields = vec![("text", text)];
        if i % 5 == 0 {
            fields.push(("note", "a note"));
        }
        if i % 7 == 0 {
            fields.push(("status", "done"));
        }
        fields.retain(|(_, v)| !v.is_empty());
        let id = r.create_with(parent, Position::Last, &fields).unwrap();
        nodes.push(id);
    }
    root
}

#[test]
fn a_subtree_exported_as_markdown_or_opml_imports_as_the_same_tree() {
    let seed = seed("a_subtree_exported_as_markdown_or_opml_imports_as_the_same_tree");
    let dir = TempDir::new("outline");
    let mut r = Replica::open(&dir.0.join("r.db")).unwrap();
    let root = random_tree(&mut r, seed);
    let items = r.outline_items(root, "text").unwrap();
    assert_eq!(items.len(), 61);
    for format in ["markdown", "opml"] {
        let (text, skipped) = match format {
            "markdown" => write_markdown(&items),
            _ => write_opml(&items, "export me"),
        };
        assert!(skipped.is_empty(), "{skipped:?}");
        let parsed = parse(
            if format == "opml" {
                Format::Opml
            } else {
                Format::Markdown
            },
            &text,
        );
        assert!(parsed.skipped.is_empty(), "{:?}", parsed.skipped);
        let target = r.create(NodeId::ROOT, Position::Last).unwrap();
        let made = r.import_outline(target, &parsed.items, "text").unwrap();
        assert_eq!(made.len(), items.len());
        let again = r.outline_items(made[0], "text").unwrap();
        assert_eq!(again, items, "ARBOR_SEED={seed}: {format}:\n{text}");
        r.check_invariants().unwrap();
    }
    // The last import is one undo step: its outline leaves the target.
    let target = r
        .children(NodeId::ROOT, None, 10)
        .unwrap()
        .last()
        .unwrap()
        .id;
    assert_eq!(r.children(target, None, 10).unwrap().len(), 1);
    r.undo().unwrap();
    assert!(r.children(target, None, 10).unwrap().is_empty());
    r.check_invariants().unwrap();
}
