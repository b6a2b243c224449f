//! Reads of the replica: places, ancestors, fields, pages of children, subtree walks, counts and the invariant check.

use std::collections::BTreeMap;

use arbor_shared::tree::TreeState;
use arbor_shared::{NodeId, OrderKey, Place, Tree};
use rusqlite::params;

use super::{Replica, ReplicaError, Result};
use crate::store::{SqliteStore, id_blob, id_from_blob, key_from_blob};

/// A node with its order key and fields (cleared fields omitted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeView {
    /// The node.
    pub id: NodeId,
    /// Its order key among its siblings.
    pub key: OrderKey,
    /// Its fields.
    pub fields: BTreeMap<String, String>,
}

impl Replica {
    pub(super) fn tree(&self) -> Tree<SqliteStore<'_>> {
        Tree::new(SqliteStore::new(&self.conn))
    }

    /// True if the node is in the tree (ROOT and TRASH always are).
    pub fn contains(&self, node: NodeId) -> Result<bool> {
        Ok(self.tree().contains(node)?)
    }

    /// The node's parent (`None` for ROOT, TRASH and unknown nodes).
    pub fn parent(&self, node: NodeId) -> Result<Option<NodeId>> {
        Ok(self.tree().parent(node)?)
    }

    /// The node's place (parent and key).
    pub fn place(&self, node: NodeId) -> Result<Option<Place>> {
        Ok(self.tree().place(node)?)
    }

    /// Ancestors, parent first, ending at ROOT or TRASH.
    pub fn ancestors(&self, node: NodeId) -> Result<Vec<NodeId>> {
        Ok(self.tree().ancestors(node)?)
    }

    /// True if the node is deleted (under TRASH).
    pub fn is_deleted(&self, node: NodeId) -> Result<bool> {
        Ok(self.tree().is_in_trash(node)?)
    }

    /// One field's value.
    pub fn field(&self, node: NodeId, field: &str) -> Result<Option<String>> {
        Ok(self.tree().payload(node, field)?.and_then(|p| p.value))
    }

    /// Every set field of the node.
    pub fn fields(&self, node: NodeId) -> Result<BTreeMap<String, String>> {
        use arbor_shared::TreeStore as _;
        let store = SqliteStore::new(&self.conn);
        Ok(store
            .payloads(node)?
            .into_iter()
            .filter_map(|(f, p)| p.value.map(|v| (f, v)))
            .collect())
    }

    /// A page of `parent`'s children in order, after the child `after`
    /// (`None`: from the first), with their fields.
    pub fn children(
        &self,
        parent: NodeId,
        after: Option<NodeId>,
        limit: usize,
    ) -> Result<Vec<NodeView>> {
        let tree = self.tree();
        let cursor = match after {
            Some(a) => {
                let place = tree.place(a)?.ok_or(ReplicaError::UnknownNode(a))?;
                Some(arbor_shared::Child {
                    id: a,
                    key: place.key,
                })
            }
            None => None,
        };
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        // One query for the page and its fields (not one per child).
        let (after_key, after_id) = match &cursor {
            Some(c) => (c.key.as_bytes().to_vec(), id_blob(c.id).to_vec()),
            None => (Vec::new(), Vec::new()),
        };
        let mut stmt = self.conn.prepare_cached(
            "SELECT n.id, n.key, p.field, p.value
             FROM (SELECT id, key FROM nodes
                   WHERE parent = ?1 AND (?2 = 0 OR (key, id) > (?3, ?4))
                   ORDER BY key, id LIMIT ?5) n
             LEFT JOIN payloads p ON p.node = n.id
             ORDER BY n.key, n.id, p.field",
        )?;
        let mut rows = stmt.query(params![
            id_blob(parent),
            i64::from(cursor.is_some()),
            after_key,
            after_id,
            limit
        ])?;
        let mut out: Vec<NodeView> = Vec::new();
        while let Some(r) = rows.next()? {
            let id = id_from_blob(&r.get::<_, Vec<u8>>(0)?)?;
            if out.last().is_none_or(|v| v.id != id) {
                out.push(NodeView {
                    id,
                    key: key_from_blob(&r.get::<_, Vec<u8>>(1)?)?,
                    fields: BTreeMap::new(),
                });
            }
            if let (Some(field), Some(value)) = (
                r.get::<_, Option<String>>(2)?,
                r.get::<_, Option<String>>(3)?,
            ) {
                if let Some(v) = out.last_mut() {
                    v.fields.insert(field, value);
                }
            }
        }
        Ok(out)
    }

    /// Calls `f(node, depth)` for `root`'s subtree in pre-order (root
    /// excluded, depth 1 for its children), reading children page by page.
    /// `f` returns false to stop.
    pub fn walk(&self, root: NodeId, mut f: impl FnMut(NodeId, usize) -> bool) -> Result<()> {
        let tree = self.tree();
        for item in tree.subtree(root) {
            let (node, depth) = item?;
            if !f(node, depth) {
                break;
            }
        }
        Ok(())
    }

    /// Number of nodes (ROOT and TRASH excluded).
    pub fn node_count(&self) -> Result<u64> {
        Ok(self.tree().node_count()?)
    }

    /// Every place and register (tests and checks).
    pub fn state(&self) -> Result<TreeState> {
        Ok(self.tree().state()?)
    }

    /// Checks the CRDT's invariants over the whole replica (O(n)).
    pub fn check_invariants(&self) -> std::result::Result<(), String> {
        self.tree().check_invariants().map_err(|e| e.to_string())?;
        self.check_value_index()
    }
}
