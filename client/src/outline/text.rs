//! Markdown, indented text, Logseq and em outlines: one reader (list items, headings, indentation, `key:: value` properties, continuation lines) and the Markdown writer.
//!
//! Reading, line by line (blank lines are skipped):
//! - `#`..`######` then a space at the start of a line: a heading, at the
//!   depth of its level; the lines after it nest under it;
//! - a list item (`- `, `* `, `+ `, `1. `, `1) `, or the marker alone):
//!   a node, nested by indentation (deeper than the item above: its
//!   child; as deep as an open item: that item's sibling);
//! - under a list item and indented deeper than it, a `key:: value` line
//!   (Logseq's properties) is a field of that item, and any other line
//!   continues its text (joined with a newline; one leading `\` is
//!   removed, the writer's escape);
//! - any other line is a node of its own, nested by indentation (plain
//!   indented text, with tabs or spaces).
//!
//! Leading and trailing whitespace of a line is not part of a text.

use std::collections::BTreeMap;

use super::{Item, Parsed, Skipped};

/// Columns of a tab in indentation.
const TAB: usize = 4;

/// `content` without its list marker, if it has one.
fn strip_bullet(content: &str) -> Option<&str> {
    for m in ["- ", "* ", "+ "] {
        if let Some(rest) = content.strip_prefix(m) {
            return Some(rest);
        }
    }
    if matches!(content, "-" | "*" | "+") {
        return Some("");
    }
    let digits = content.bytes().take_while(u8::is_ascii_digit).count();
    if digits > 0 && digits <= 9 {
        let rest = &content[digits..];
        for m in [". ", ") "] {
            if let Some(text) = rest.strip_prefix(m) {
                return Some(text);
            }
        }
        if rest == "." || rest == ")" {
            return Some("");
        }
    }
    None
}

/// A heading's level and text.
fn heading(content: &str) -> Option<(usize, &str)> {
    let level = content.bytes().take_while(|b| *b == b'#').count();
    if (1..=6).contains(&level) {
        if let Some(text) = content[level..].strip_prefix(' ') {
            return Some((level, text));
        }
    }
    None
}

/// A Logseq property line: `key:: value`, the key letters, digits, `-`
/// and `_`.
fn property(content: &str) -> Option<(&str, &str)> {
    let (key, value) = content.split_once(":: ")?;
    let ok = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_alphanumeric() || c == '-' || c == '_');
    ok.then_some((key, value))
}

/// Whether a continuation line must be escaped to read back as one.
fn needs_escape(line: &str) -> bool {
    let t = line.trim_start();
    t.starts_with('\\')
        || strip_bullet(t).is_some()
        || heading(t).is_some()
        || property(t).is_some()
        || t.len() != line.len()
        || line.trim_end().len() != line.len()
}

pub(super) fn read_markdown(input: &str) -> Parsed {
    let mut out = Parsed::default();
    // Open items by indentation: (indent, depth, is a list item).
    let mut open: Vec<(usize, usize, bool)> = Vec::new();
    // Depth below the last heading (0 without one).
    let mut base = 0usize;
    for raw in input.lines() {
        let content = raw.trim();
        if content.is_empty() {
            continue;
        }
        let indent: usize = raw
            .chars()
            .take_while(|c| c.is_whitespace())
            .map(|c| if c == '\t' { TAB } else { 1 })
            .sum();
        if indent == 0 {
            if let Some((level, text)) = heading(content) {
                out.push(level - 1, text.trim().to_string(), BTreeMap::new());
                open.clear();
                base = out.items.last().map_or(0, |i| i.depth + 1);
                continue;
            }
        }
        let bullet = strip_bullet(content);
        if bullet.is_none() {
            // Under a list item and deeper: a property or more text.
            if let (Some(&(top, _, true)), Some(last)) = (open.last(), out.items.last_mut()) {
                if indent > top {
                    if let Some((k, v)) = property(content) {
                        last.fields.insert(k.to_string(), v.trim().to_string());
                    } else {
                        let line = content.strip_prefix('\\').unwrap_or(content);
                        last.text.push('\n');
                        last.text.push_str(line);
                    }
                    continue;
                }
            }
        }
        while open.last().is_some_and(|&(i, _, _)| i >= indent) {
            open.pop();
        }
        let depth = open.last().map_or(base, |&(_, d, _)| d + 1);
        let text = bullet.unwrap_or(content).trim().to_string();
        out.push(depth, text, BTreeMap::new());
        let depth = out.items.last().map_or(0, |i| i.depth);
        open.push((indent, depth, bullet.is_some()));
    }
    out
}

/// `items` as a Markdown list: `- text` with two spaces per level, the
/// text's further lines and then its fields (`key:: value`, newlines in
/// a value written as spaces) indented under it. [`read_markdown`] reads
/// it back as the same items, for texts and fields without leading or
/// trailing whitespace on a line. Fields whose names are not property
/// keys (letters, digits, `-`, `_`) cannot be written: they are listed in
/// the second part of the answer.
pub fn write_markdown(items: &[Item]) -> (String, Vec<Skipped>) {
    let mut out = String::new();
    let mut skipped = Vec::new();
    for (n, item) in items.iter().enumerate() {
        let pad = "  ".repeat(item.depth);
        let mut lines = item.text.split('\n');
        out.push_str(&pad);
        out.push_str("- ");
        out.push_str(lines.next().unwrap_or(""));
        out.push('\n');
        for line in lines {
            out.push_str(&pad);
            out.push_str("  ");
            if needs_escape(line) || line.is_empty() {
                out.push('\\');
            }
            out.push_str(line);
            out.push('\n');
        }
        for (k, v) in &item.fields {
            if property(&format!("{k}:: ")).is_none() {
                skipped.push(Skipped {
                    at: format!("item {}", n + 1),
                    reason: format!("field {k:?}: not a property name in Markdown"),
                });
                continue;
            }
            out.push_str(&pad);
            out.push_str("  ");
            out.push_str(k);
            out.push_str(":: ");
            out.push_str(&v.replace(['\n', '\r'], " "));
            out.push('\n');
        }
    }
    (out, skipped)
}
