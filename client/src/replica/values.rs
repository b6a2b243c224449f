//! Lookups by value through the value index: a value's holders (em's contexts), a child by value, and merging duplicate children.

use arbor_shared::NodeId;
use rusqlite::params;

use super::edit::Position;
use super::{Replica, Result};
use crate::normalize::normalize;
use crate::store::{id_blob, id_from_blob};

/// Most holders [`Replica::holders`] returns in one page.
pub const MAX_HOLDERS_PAGE: usize = 1_000;

/// A node whose field holds a value, with its parent (a context of the
/// value, in em's words).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Holder {
    /// The node.
    pub node: NodeId,
    /// Its parent.
    pub parent: NodeId,
}

impl Replica {
    /// A page of the nodes whose `field` holds `value` (compared
    /// normalized: [`crate::normalize::normalize`]), in node id order
    /// after `after`, at most `limit` (capped at [`MAX_HOLDERS_PAGE`]).
    /// Deleted nodes (under TRASH) and nodes not in the tree are left out.
    /// The server's `GET .../values/{field}` answers the same page for a
    /// replica that does not hold the whole space.
    pub fn holders(
        &self,
        field: &str,
        value: &str,
        after: Option<NodeId>,
        limit: usize,
    ) -> Result<Vec<Holder>> {
        let limit = limit.min(MAX_HOLDERS_PAGE);
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        let after = after.map_or_else(Vec::new, |a| id_blob(a).to_vec());
        let mut stmt = self.conn.prepare_cached(
            "SELECT node, parent FROM value_index
             WHERE field = ?1 AND norm = ?2 AND node > ?3 AND parent IS NOT NULL
             ORDER BY node",
        )?;
        let mut rows = stmt.query(params![field, normalize(value), after])?;
        let tree = self.tree();
        // Deleted holders are skipped one by one (a walk up each): the
        // index has no notion of the trash, and a page stops at `limit`.
        while let Some(r) = rows.next()? {
            let node = id_from_blob(&r.get::<_, Vec<u8>>(0)?)?;
            let parent = id_from_blob(&r.get::<_, Vec<u8>>(1)?)?;
            if tree.is_in_trash(node)? {
                continue;
            }
            out.push(Holder { node, parent });
            if out.len() == limit {
                break;
            }
        }
        Ok(out)
    }

    /// The child of `parent` whose `field` holds `value` (normalized), in
    /// one indexed lookup. When several children hold it (created
    /// concurrently on two replicas), the canonical one is the first in
    /// sibling order, (key, id): the same on every replica that holds the
    /// same children. [`Replica::children_by_value`] lists them all and
    /// [`Replica::merge_children_by_value`] merges them.
    pub fn child_by_value(
        &self,
        parent: NodeId,
        field: &str,
        value: &str,
    ) -> Result<Option<NodeId>> {
        Ok(self
            .children_by_value_limit(parent, field, value, 1)?
            .into_iter()
            .next())
    }

    /// Every child of `parent` whose `field` holds `value` (normalized), in
    /// sibling order: the canonical one first.
    pub fn children_by_value(
        &self,
        parent: NodeId,
        field: &str,
        value: &str,
    ) -> Result<Vec<NodeId>> {
        self.children_by_value_limit(parent, field, value, i64::MAX)
    }

    fn children_by_value_limit(
        &self,
        parent: NodeId,
        field: &str,
        value: &str,
        limit: i64,
    ) -> Result<Vec<NodeId>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT node FROM value_index
             WHERE parent = ?1 AND field = ?2 AND norm = ?3
             ORDER BY key, node LIMIT ?4",
        )?;
        let rows = stmt.query_map(
            params![id_blob(parent), field, normalize(value), limit],
            |r| r.get::<_, Vec<u8>>(0),
        )?;
        let mut out = Vec::new();
        for r in rows {
            out.push(id_from_blob(&r?)?);
        }
        Ok(out)
    }

    /// Merges the children of `parent` that hold `value` in `field` into
    /// the canonical one (the first in sibling order): each other one's
    /// children move, in their order, to the end of the canonical one's,
    /// and the other one is deleted (to TRASH: restorable, with its other
    /// fields). Ordinary ops in one undo step, so the merge syncs like any
    /// edit; two replicas merging the same duplicates make the same moves.
    /// Returns the canonical child and how many duplicates were merged.
    pub fn merge_children_by_value(
        &mut self,
        parent: NodeId,
        field: &str,
        value: &str,
    ) -> Result<Option<(NodeId, usize)>> {
        let all = self.children_by_value(parent, field, value)?;
        let Some((&canonical, others)) = all.split_first() else {
            return Ok(None);
        };
        self.begin_step();
        let merged = (|| -> Result<usize> {
            for &dup in others {
                // The first page again each time: the page before it moved.
                loop {
                    let page = self.children(dup, None, 500)?;
                    if page.is_empty() {
                        break;
                    }
                    for child in page {
                        self.move_node(child.id, canonical, Position::Last)?;
                    }
                }
                self.delete(dup)?;
            }
            Ok(others.len())
        })();
        self.end_step();
        Ok(Some((canonical, merged?)))
    }

    /// Checks the value index against a recomputation from `payloads` and
    /// `nodes` (part of [`Replica::check_invariants`]).
    pub(super) fn check_value_index(&self) -> std::result::Result<(), String> {
        let diff = |a: &str, b: &str| -> rusqlite::Result<i64> {
            self.conn
                .query_row(&format!("SELECT count(*) FROM ({a} EXCEPT {b})"), [], |r| {
                    r.get(0)
                })
        };
        let index = "SELECT node, field, norm, parent, key FROM value_index";
        let derived = "SELECT p.node, p.field, arbor_normalize(p.value), n.parent, n.key
                       FROM payloads p LEFT JOIN nodes n ON n.id = p.node
                       WHERE p.value IS NOT NULL";
        let extra = diff(index, derived).map_err(|e| e.to_string())?;
        let missing = diff(derived, index).map_err(|e| e.to_string())?;
        // The full-text index has one row per value index row.
        let (searchable, indexed): (i64, i64) = self
            .conn
            .query_row(
                "SELECT (SELECT count(*) FROM value_search), (SELECT count(*) FROM value_index)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(|e| e.to_string())?;
        if searchable != indexed {
            return Err(format!(
                "search index: {searchable} rows for {indexed} values"
            ));
        }
        if extra + missing > 0 {
            return Err(format!(
                "value index: {extra} rows not derived from the tree, {missing} rows missing"
            ));
        }
        Ok(())
    }
}
