//! Outlines from and to other outliners: the formats people leave (OPML from Workflowy and Dynalist, Markdown and indented text, Logseq, em, Roam JSON) read into one item list, and a subtree written back as Markdown or OPML.
//!
//! # Layout
//!
//! - `mod.rs`: [`Item`] (one outline node in pre-order, with its depth),
//!   [`Parsed`] and its report of what could not be taken, [`Format`],
//!   [`parse`].
//! - `text.rs`: Markdown, indented text, Logseq and em (one reader: lists,
//!   headings, indentation, `key:: value` properties), and the Markdown
//!   writer.
//! - `opml.rs`: the OPML reader and writer.
//! - `roam.rs`: the Roam JSON reader.
//!
//! Everything here is pure (text in, items out): the replica turns items
//! into ops (`Replica::import_outline`), and the same parsers serve any
//! other writer.

mod opml;
mod roam;
mod text;

use std::collections::BTreeMap;

use arbor_shared::op::{MAX_FIELD_LEN, MAX_VALUE_LEN};

pub use opml::write_opml;
pub use text::write_markdown;

/// One node of an outline, in pre-order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// 0 for a top-level node; a node's children follow it at depth + 1.
    pub depth: usize,
    /// Its text (the main field's value).
    pub text: String,
    /// Its other fields (a note, properties, attributes), by name.
    pub fields: BTreeMap<String, String>,
}

/// Something of the input that was not imported, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// Where: `line N` or `item N` (1-based).
    pub at: String,
    /// What was left out and why.
    pub reason: String,
}

/// The items read from an input, and what was not taken.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Parsed {
    /// The outline, in pre-order; depths start at 0 and grow by at most 1
    /// from one item to the next.
    pub items: Vec<Item>,
    /// What could not be taken (a field too long or badly named, a broken
    /// element), item by item: nothing is dropped without a line here.
    pub skipped: Vec<Skipped>,
    /// Attributes the format carries that have no place in a tree of
    /// fields and were left out on purpose (Roam's edit times), counted by
    /// name.
    pub ignored: BTreeMap<String, usize>,
}

/// The formats [`parse`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// OPML 1.0/2.0 (`<outline text=...>`): Workflowy, Dynalist and most
    /// outliners export it; `_note` becomes the `note` field, other
    /// attributes fields of their own name.
    Opml,
    /// Markdown lists and headings, or plainly indented text (spaces or
    /// tabs), one node per line; also em's and Logseq's exports (their
    /// `key:: value` lines are fields).
    Markdown,
    /// Roam Research's JSON export (pages with their blocks).
    Roam,
}

impl std::str::FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Format, String> {
        match s.to_ascii_lowercase().as_str() {
            "opml" | "workflowy" | "dynalist" => Ok(Format::Opml),
            "md" | "markdown" | "text" | "txt" | "logseq" | "em" => Ok(Format::Markdown),
            "roam" | "json" => Ok(Format::Roam),
            other => Err(format!(
                "unknown outline format {other:?} (opml, markdown, text, logseq, em, roam)"
            )),
        }
    }
}

/// Reads `input` in `format`.
pub fn parse(format: Format, input: &str) -> Parsed {
    let mut parsed = match format {
        Format::Opml => opml::read_opml(input),
        Format::Markdown => text::read_markdown(input),
        Format::Roam => roam::read_roam(input),
    };
    parsed.check_limits();
    parsed
}

impl Parsed {
    /// Adds an item at `depth`, no deeper than one below the item before
    /// it (a jump in indentation makes a child, not a gap).
    fn push(&mut self, depth: usize, text: String, fields: BTreeMap<String, String>) {
        let max = self.items.last().map_or(0, |i| i.depth + 1);
        self.items.push(Item {
            depth: depth.min(max),
            text,
            fields,
        });
    }

    /// Takes out what an op could not carry (a value over 64 KiB, a field
    /// name over 64 bytes or empty, a NUL), with a line for each.
    fn check_limits(&mut self) {
        for (n, item) in self.items.iter_mut().enumerate() {
            let at = format!("item {}", n + 1);
            if item.text.len() > MAX_VALUE_LEN || item.text.contains('\0') {
                self.skipped.push(Skipped {
                    at: at.clone(),
                    reason: format!(
                        "its text ({} bytes) is over {MAX_VALUE_LEN} bytes or holds NUL: imported empty",
                        item.text.len()
                    ),
                });
                item.text.clear();
            }
            let bad: Vec<String> = item
                .fields
                .iter()
                .filter(|(k, v)| {
                    k.is_empty()
                        || k.len() > MAX_FIELD_LEN
                        || k.contains('\0')
                        || v.len() > MAX_VALUE_LEN
                        || v.contains('\0')
                })
                .map(|(k, _)| k.clone())
                .collect();
            for k in bad {
                item.fields.remove(&k);
                self.skipped.push(Skipped {
                    at: at.clone(),
                    reason: format!(
                        "field {k:?}: a name of 1 to {MAX_FIELD_LEN} bytes and a value of at most {MAX_VALUE_LEN} bytes, without NUL, is what a field can hold"
                    ),
                });
            }
        }
    }
}
