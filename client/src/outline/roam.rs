//! Roam Research's JSON export: an array of pages (`title`, `children`), each block a node (`string`, `children`); `uid` and `heading` become fields, edit metadata is counted as ignored.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{Parsed, Skipped};

/// Keys Roam writes that are metadata of an edit, not content: counted in
/// [`Parsed::ignored`].
const METADATA: &[&str] = &[
    "create-time",
    "edit-time",
    "create-email",
    "edit-email",
    ":create/user",
    ":edit/user",
    ":create/time",
    ":edit/time",
    ":block/uid",
];

pub(super) fn read_roam(input: &str) -> Parsed {
    let mut out = Parsed::default();
    let pages = match serde_json::from_str::<Value>(input) {
        Ok(Value::Array(pages)) => pages,
        Ok(_) => {
            out.skipped.push(Skipped {
                at: "the file".into(),
                reason: "a Roam export is a JSON array of pages".into(),
            });
            return out;
        }
        Err(e) => {
            out.skipped.push(Skipped {
                at: format!("line {}", e.line()),
                reason: format!("not JSON: {e}"),
            });
            return out;
        }
    };
    // An explicit stack (depth, node): block trees can be deep.
    let mut stack: Vec<(usize, Value)> = pages.into_iter().rev().map(|p| (0, p)).collect();
    let mut n = 0usize;
    while let Some((depth, node)) = stack.pop() {
        n += 1;
        let Value::Object(mut map) = node else {
            out.skipped.push(Skipped {
                at: format!("item {n}"),
                reason: "a page or block that is not a JSON object".into(),
            });
            continue;
        };
        let text = match map.remove("string").or_else(|| map.remove("title")) {
            Some(Value::String(s)) => s,
            Some(other) => other.to_string(),
            None => String::new(),
        };
        let children = map.remove("children");
        let mut fields = BTreeMap::new();
        for (k, v) in map {
            if METADATA.contains(&k.as_str()) {
                *out.ignored.entry(k).or_default() += 1;
                continue;
            }
            let v = match v {
                Value::String(s) => s,
                other => other.to_string(),
            };
            fields.insert(k, v);
        }
        out.push(depth, text, fields);
        match children {
            Some(Value::Array(kids)) => {
                for kid in kids.into_iter().rev() {
                    stack.push((depth + 1, kid));
                }
            }
            Some(Value::Null) | None => {}
            Some(_) => out.skipped.push(Skipped {
                at: format!("item {n}"),
                reason: "its children are not a JSON array: left out".into(),
            }),
        }
    }
    out
}
