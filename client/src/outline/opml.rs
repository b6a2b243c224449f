//! OPML: the reader (`<outline>` elements nested in `<body>`; `text` is the text, `_note` the `note` field, any other attribute a field of its name) and the writer.

use std::collections::BTreeMap;

use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};

use super::{Item, Parsed, Skipped};

/// The fields of one `<outline>`: `text`, `_note` as `note`, the rest by
/// name; undecodable attributes are reported.
fn outline_item(
    e: &BytesStart<'_>,
    n: usize,
    skipped: &mut Vec<Skipped>,
) -> (String, BTreeMap<String, String>) {
    let mut text = String::new();
    let mut fields = BTreeMap::new();
    for attr in e.attributes() {
        let attr = match attr {
            Ok(a) => a,
            Err(err) => {
                skipped.push(Skipped {
                    at: format!("outline {n}"),
                    reason: format!("an attribute that does not parse: {err}"),
                });
                continue;
            }
        };
        let name = String::from_utf8_lossy(attr.key.as_ref()).into_owned();
        let value = match attr.unescape_value() {
            Ok(v) => v.into_owned(),
            Err(err) => {
                skipped.push(Skipped {
                    at: format!("outline {n}"),
                    reason: format!("attribute {name:?}: {err}"),
                });
                continue;
            }
        };
        match name.as_str() {
            "text" => text = value,
            "_note" => {
                fields.insert("note".to_string(), value);
            }
            _ => {
                fields.insert(name, value);
            }
        }
    }
    (text, fields)
}

pub(super) fn read_opml(input: &str) -> Parsed {
    let mut out = Parsed::default();
    let mut reader = Reader::from_str(input);
    let mut depth = 0usize;
    let mut in_body = false;
    let mut outlines = 0usize;
    loop {
        let event = match reader.read_event() {
            Ok(e) => e,
            Err(err) => {
                out.skipped.push(Skipped {
                    at: format!("byte {}", reader.error_position()),
                    reason: format!(
                        "the OPML stops parsing here ({err}): the rest is not imported"
                    ),
                });
                break;
            }
        };
        match event {
            Event::Start(e) if e.name().as_ref() == b"body" => in_body = true,
            Event::End(e) if e.name().as_ref() == b"body" => in_body = false,
            Event::Start(e) if in_body && e.name().as_ref() == b"outline" => {
                outlines += 1;
                let (text, fields) = outline_item(&e, outlines, &mut out.skipped);
                out.push(depth, text, fields);
                depth += 1;
            }
            Event::Empty(e) if in_body && e.name().as_ref() == b"outline" => {
                outlines += 1;
                let (text, fields) = outline_item(&e, outlines, &mut out.skipped);
                out.push(depth, text, fields);
            }
            Event::End(e) if in_body && e.name().as_ref() == b"outline" => {
                depth = depth.saturating_sub(1);
            }
            Event::Start(e) | Event::Empty(e) if in_body => {
                out.skipped.push(Skipped {
                    at: format!("byte {}", reader.buffer_position()),
                    reason: format!(
                        "<{}> is not an outline: left out",
                        String::from_utf8_lossy(e.name().as_ref())
                    ),
                });
            }
            Event::Eof => break,
            _ => {}
        }
    }
    out
}

/// Whether `name` can be an XML attribute name as written here (ASCII
/// letters, digits, `_`, `-`, `.`, not starting with a digit, `-` or `.`).
fn attribute_name(name: &str) -> bool {
    name.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && name != "text"
        && name != "_note"
}

/// XML attribute text: `&`, `<`, `>`, `"` and the whitespace that
/// attribute normalization would fold are escaped.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            '\t' => out.push_str("&#9;"),
            c => out.push(c),
        }
    }
    out
}

/// `items` as an OPML 2.0 document titled `title`: one `<outline>` per
/// item, nested by depth, its text as `text`, the `note` field as `_note`
/// and other fields as attributes of their name. Fields whose names cannot
/// be attribute names are listed in the second part of the answer.
pub fn write_opml(items: &[Item], title: &str) -> (String, Vec<Skipped>) {
    let mut out =
        String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<opml version=\"2.0\">\n");
    out.push_str(&format!(
        "  <head><title>{}</title></head>\n  <body>\n",
        escape(title)
    ));
    let mut skipped = Vec::new();
    for (n, item) in items.iter().enumerate() {
        let pad = "  ".repeat(item.depth + 2);
        out.push_str(&pad);
        out.push_str("<outline text=\"");
        out.push_str(&escape(&item.text));
        out.push('"');
        for (k, v) in &item.fields {
            let name = if k == "note" { "_note" } else { k.as_str() };
            if name != "_note" && !attribute_name(name) {
                skipped.push(Skipped {
                    at: format!("item {}", n + 1),
                    reason: format!("field {k:?}: not an XML attribute name"),
                });
                continue;
            }
            out.push_str(&format!(" {name}=\"{}\"", escape(v)));
        }
        let next_depth = items.get(n + 1).map_or(0, |i| i.depth);
        if next_depth > item.depth {
            out.push_str(">\n");
        } else {
            out.push_str("/>\n");
            // Close the items this one ends.
            for d in (next_depth..item.depth).rev() {
                out.push_str(&"  ".repeat(d + 2));
                out.push_str("</outline>\n");
            }
        }
    }
    out.push_str("  </body>\n</opml>\n");
    (out, skipped)
}
