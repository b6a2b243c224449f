//! Lookups through the value index (migration 0018): a value's holders and a child by value.

use arbor_shared::NodeId;

use super::reads::{PAGE, child_rows, require_in_scope};
use super::*;

/// Most holders or children a value lookup returns.
pub const MAX_VALUE_PAGE: u32 = 1_000;

/// A node holding a value, with its registers and its parent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HolderRow {
    /// The node, its key and registers.
    pub node: ChildRow,
    /// Its parent.
    pub parent: NodeId,
}

/// A page of holders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldersPage {
    /// The space's head seq read before the page.
    pub head_seq: u64,
    /// In node id order.
    pub holders: Vec<HolderRow>,
    /// Where the next page starts (`after`), or `None`: no more. A page
    /// examines at most four times its limit of candidates (deleted or
    /// out-of-scope ones are skipped), so it may hold fewer than asked
    /// and still have a next.
    pub next: Option<NodeId>,
}

impl Db {
    /// The nodes whose `field` holds `value` (normalized by
    /// `arbor_normalize`), after `after` in node id order, that are in the
    /// tree and not deleted (below ROOT), or, with `within` (a token's
    /// `root` claim), that are that node or below it.
    pub async fn holders(
        &self,
        space: &str,
        field: &str,
        value: &str,
        after: Option<NodeId>,
        limit: u32,
        within: Option<NodeId>,
    ) -> Result<HoldersPage, DbError> {
        let info = self.space_id(space).await?;
        let limit = limit.clamp(1, MAX_VALUE_PAGE);
        let scan = i64::from(limit) * 4;
        let mut client = self.client().await?;
        let tx = read_snapshot(&mut client).await?;
        // Candidates in node order, each with whether it is in scope (a
        // walk up from it); at most `scan` of them.
        let stmt = tx
            .prepare_cached(
                "SELECT c.node, c.parent,
                        EXISTS (SELECT 1 FROM arbor_scope_members($1, $5, ARRAY[c.node]))
                 FROM (SELECT v.node, v.parent FROM value_index v
                       WHERE v.space = $1 AND v.field = $2
                         AND left(v.norm, 200) = left(arbor_normalize($3), 200)
                         AND v.norm = arbor_normalize($3)
                         AND v.parent IS NOT NULL AND v.node > $4
                       ORDER BY v.node LIMIT $6) c
                 ORDER BY c.node",
            )
            .await?;
        let after = uuid(after.unwrap_or(NodeId::ROOT));
        let root = uuid(within.unwrap_or(NodeId::ROOT));
        let rows = tx
            .query(&stmt, &[&info.id, &field, &value, &after, &root, &scan])
            .await?;
        let exhausted = (rows.len() as i64) < scan;
        let mut picked: Vec<(NodeId, NodeId)> = Vec::new();
        let mut next = None;
        for (i, row) in rows.iter().enumerate() {
            let id = node(row.try_get(0)?);
            if row.try_get::<_, bool>(2)? {
                picked.push((id, node(row.try_get(1)?)));
            }
            let last = i + 1 == rows.len();
            if picked.len() == limit as usize {
                if !(last && exhausted) {
                    next = Some(id);
                }
                break;
            }
            if last && !exhausted {
                next = Some(id);
            }
        }
        let ids: Vec<uuid::Uuid> = picked.iter().map(|(n, _)| uuid(*n)).collect();
        let nodes = self.node_rows(&tx, info.id, &ids).await?;
        tx.commit().await?;
        let mut holders: Vec<HolderRow> = nodes
            .into_iter()
            .filter_map(|n| {
                let parent = picked.iter().find(|(id, _)| *id == n.id)?.1;
                Some(HolderRow { node: n, parent })
            })
            .collect();
        holders.sort_by_key(|h| h.node.id);
        Ok(HoldersPage {
            head_seq: info.head_seq,
            holders,
            next,
        })
    }

    /// The children of `parent` whose `field` holds `value` (normalized),
    /// in sibling order, at most `limit`: the first is the canonical one
    /// (docs/PROTOCOL.md, "Lookups by value"). With `within`, `parent`
    /// must be that node or below it, else `out_of_scope`.
    pub async fn children_by_value(
        &self,
        space: &str,
        parent: NodeId,
        field: &str,
        value: &str,
        limit: u32,
        within: Option<NodeId>,
    ) -> Result<(u64, Vec<ChildRow>), DbError> {
        let info = self.space_id(space).await?;
        let limit = i64::from(limit.clamp(1, MAX_VALUE_PAGE));
        let mut client = self.client().await?;
        let tx = read_snapshot(&mut client).await?;
        if let Some(root) = within {
            require_in_scope(&tx, info.id, root, parent).await?;
        }
        let stmt = tx
            .prepare_cached(&format!(
                "WITH page AS (
                     SELECT v.node AS id, v.key FROM value_index v
                     WHERE v.space = $1 AND v.parent = $2 AND v.field = $3
                       AND left(v.norm, 200) = left(arbor_normalize($4), 200)
                       AND v.norm = arbor_normalize($4)
                     ORDER BY v.key, v.node LIMIT $5) {PAGE}"
            ))
            .await?;
        let rows = tx
            .query(&stmt, &[&info.id, &uuid(parent), &field, &value, &limit])
            .await?;
        tx.commit().await?;
        Ok((info.head_seq, child_rows(&rows)?))
    }

    /// The rows of `ids` (stored nodes) with their registers, in key order.
    async fn node_rows(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        space_id: i64,
        ids: &[uuid::Uuid],
    ) -> Result<Vec<ChildRow>, DbError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let stmt = tx
            .prepare_cached(&format!(
                "WITH page AS (SELECT id, key FROM nodes WHERE space = $1 AND id = ANY ($2)) {PAGE}"
            ))
            .await?;
        let rows = tx.query(&stmt, &[&space_id, &ids]).await?;
        child_rows(&rows)
    }
}
