//! Outlines in and out of the replica: parsed items created under a parent as one undo step, and a subtree read back as items.

use std::collections::BTreeMap;

use arbor_shared::NodeId;

use super::edit::Position;
use super::{Replica, ReplicaError, Result};
use crate::outline::Item;

impl Replica {
    /// Creates `items` (pre-order, depths from 0: [`crate::outline::parse`])
    /// under `parent`, each last among its siblings, its text in
    /// `text_field` (an empty text sets no field) and its fields, as local
    /// ops in one undo step. Returns the nodes made, in item order.
    /// An item deeper than one below the one before it is refused
    /// (`bad_op`) before anything is made.
    pub fn import_outline(
        &mut self,
        parent: NodeId,
        items: &[Item],
        text_field: &str,
    ) -> Result<Vec<NodeId>> {
        let mut prev: Option<usize> = None;
        for (n, item) in items.iter().enumerate() {
            if item.depth > prev.map_or(0, |d| d + 1) {
                return Err(ReplicaError::Outline(format!(
                    "item {}: depth {} after depth {}",
                    n + 1,
                    item.depth,
                    prev.map_or(0, |d| d)
                )));
            }
            prev = Some(item.depth);
        }
        self.begin_step();
        let made = (|| -> Result<Vec<NodeId>> {
            let mut made = Vec::with_capacity(items.len());
            // parents[d]: the parent of an item at depth d.
            let mut parents = vec![parent];
            for item in items {
                parents.truncate(item.depth + 1);
                let mut fields: Vec<(&str, &str)> = item
                    .fields
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                if !item.text.is_empty() {
                    fields.push((text_field, item.text.as_str()));
                }
                let id = self.create_with(parents[item.depth], Position::Last, &fields)?;
                parents.push(id);
                made.push(id);
            }
            Ok(made)
        })();
        self.end_step();
        made
    }

    /// `root` and its subtree as items (root at depth 0), in order, each
    /// with `text_field` as its text and its other fields.
    pub fn outline_items(&self, root: NodeId, text_field: &str) -> Result<Vec<Item>> {
        let item = |r: &Replica, id: NodeId, depth: usize| -> Result<Item> {
            let mut fields: BTreeMap<String, String> = r.fields(id)?;
            let text = fields.remove(text_field).unwrap_or_default();
            Ok(Item {
                depth,
                text,
                fields,
            })
        };
        let mut out = vec![item(self, root, 0)?];
        let mut failed = None;
        self.walk(root, |id, depth| match item(self, id, depth) {
            Ok(i) => {
                out.push(i);
                true
            }
            Err(e) => {
                failed = Some(e);
                false
            }
        })?;
        match failed {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }
}
