//! Lookups by value through the value index: a value's holders (em's contexts), a child by value, and merging duplicate children.

use arbor_shared::NodeId;
use rusqlite::{OptionalExtension as _, params};

use super::edit::Position;
use super::{Replica, Result};

/// The `meta` key present while the value index is being built.
const PENDING: &str = "value_index_pending";
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
        &mut self,
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
        self.build_value_index()?;
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
        &mut self,
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
        &mut self,
        parent: NodeId,
        field: &str,
        value: &str,
    ) -> Result<Vec<NodeId>> {
        self.children_by_value_limit(parent, field, value, i64::MAX)
    }

    fn children_by_value_limit(
        &mut self,
        parent: NodeId,
        field: &str,
        value: &str,
        limit: i64,
    ) -> Result<Vec<NodeId>> {
        self.build_value_index()?;
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

    /// Whether the value index holds every register (false after a cold
    /// start until [`Replica::build_value_index`] has run: lookups run it
    /// first).
    pub fn value_index_ready(&self) -> Result<bool> {
        Ok(crate::replica::meta::meta_i64(&self.conn, PENDING)?.is_none())
    }

    /// Fills the value index after a cold start, at most `rows` registers
    /// in one transaction, in `(node, field)` order from where the last
    /// step stopped; returns true once it is complete. Writes made since
    /// the cold start have kept their own rows (the triggers run), and a
    /// step takes the registers as they are now, so steps may interleave
    /// with any edit or sync.
    pub fn build_value_index_step(&mut self, rows: usize) -> Result<bool> {
        if self.value_index_ready()? {
            return Ok(true);
        }
        self.commit_held()?;
        let tx = self.conn.transaction()?;
        let after_node: Vec<u8> = tx
            .query_row(
                "SELECT value FROM meta WHERE key = 'value_index_after_node'",
                [],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or_default();
        let after_field: String = tx
            .query_row(
                "SELECT value FROM meta WHERE key = 'value_index_after_field'",
                [],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or_default();
        let rows = i64::try_from(rows.max(1)).unwrap_or(i64::MAX);
        // The last register of this step's chunk.
        let last: Option<(Vec<u8>, String)> = tx
            .query_row(
                "SELECT node, field FROM (
                     SELECT node, field FROM payloads WHERE (node, field) > (?1, ?2)
                     ORDER BY node, field LIMIT ?3)
                 ORDER BY node DESC, field DESC LIMIT 1",
                params![after_node, after_field, rows],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let done = match last {
            None => {
                tx.execute(
                    "DELETE FROM meta WHERE key IN
                     ('value_index_pending', 'value_index_after_node', 'value_index_after_field')",
                    [],
                )?;
                true
            }
            Some((node, field)) => {
                // A register a write indexed since the cold start keeps its
                // row (the trigger's is as new as this).
                tx.execute(
                    "INSERT INTO value_index (node, field, norm, parent, key)
                     SELECT p.node, p.field, arbor_normalize(p.value), n.parent, n.key
                     FROM payloads p LEFT JOIN nodes n ON n.id = p.node
                     WHERE p.value IS NOT NULL
                       AND (p.node, p.field) > (?1, ?2) AND (p.node, p.field) <= (?3, ?4)
                     ON CONFLICT (node, field) DO NOTHING",
                    params![after_node, after_field, node, field],
                )?;
                tx.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES
                     ('value_index_after_node', ?1), ('value_index_after_field', ?2)",
                    params![node, field],
                )?;
                false
            }
        };
        tx.commit()?;
        Ok(done)
    }

    /// Completes the value index ([`Replica::build_value_index_step`] until
    /// done). Lookups by value and search call it first, so the first one
    /// after a cold start of a large space waits for it (about 10 s per
    /// million registers natively); call it (or its steps, when idle)
    /// earlier to spare them.
    pub fn build_value_index(&mut self) -> Result<()> {
        while !self.build_value_index_step(50_000)? {}
        Ok(())
    }

    /// Checks the value index against a recomputation from `payloads` and
    /// `nodes` (part of [`Replica::check_invariants`]). While it is still
    /// being built, only the rows it has are checked.
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
        let missing = if self.value_index_ready().map_err(|e| e.to_string())? {
            missing
        } else {
            0
        };
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
