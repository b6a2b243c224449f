//! Reads: the catch-up feed, children pages, a space's whole state.

use std::collections::BTreeMap;

use arbor_shared::tree::TreeState;
use arbor_shared::{NodeId, OrderKey, Payload, Place};

use super::*;

impl Db {
    /// Catch-up: up to `limit` ops with seq above `after`, in seq order.
    pub async fn ops_after(&self, space: &str, after: u64, limit: u32) -> Result<OpsPage, DbError> {
        let info = self.space_id(space).await?;
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT o.seq, o.hlc, o.replica, o.kind, o.node, o.parent, o.key, o.field, o.value,
                        o.known_seq, r.sub AS author
                 FROM ops o LEFT JOIN replicas r ON r.space = o.space AND r.replica = o.replica
                 WHERE o.space = $1 AND o.seq > $2 ORDER BY o.seq LIMIT $3",
            )
            .await?;
        let rows = client
            .query(&stmt, &[&info.id, &after, &i64::from(limit)])
            .await?;
        let ops = rows
            .iter()
            .map(committed_from_row)
            .collect::<Result<_, _>>()?;
        Ok(OpsPage {
            ops,
            head_seq: info.head_seq,
            min_cursor: info.min_cursor,
        })
    }

    /// A page of `parent`'s children in `(key, id)` order after the cursor,
    /// each with its registers.
    pub async fn children(
        &self,
        space: &str,
        parent: NodeId,
        after: Option<(&OrderKey, NodeId)>,
        limit: u32,
    ) -> Result<Vec<ChildRow>, DbError> {
        Ok(self.children_at(space, parent, after, limit, None).await?.1)
    }

    /// [`Db::children`], with the space's head seq read before the page:
    /// the page holds at least every op up to it. With `within` (a token's
    /// `root` claim), `parent` must be that node or below it, checked in
    /// the page's own transaction, else `out_of_scope` (also for a parent
    /// the space has not stored: the two are not told apart).
    pub async fn children_at(
        &self,
        space: &str,
        parent: NodeId,
        after: Option<(&OrderKey, NodeId)>,
        limit: u32,
        within: Option<NodeId>,
    ) -> Result<(u64, Vec<ChildRow>), DbError> {
        let info = self.space_id(space).await?;
        let mut client = self.client().await?;
        let rows = match within {
            Some(root) if root != parent => {
                let tx = read_snapshot(&mut client).await?;
                require_in_scope(&tx, info.id, root, parent).await?;
                let rows = children_page(&tx, info.id, parent, after, limit).await?;
                tx.commit().await?;
                rows
            }
            _ => children_page(&client, info.id, parent, after, limit).await?,
        };
        Ok((info.head_seq, rows))
    }

    /// Every node place and register of the space (tests, export).
    pub async fn state(&self, space: &str) -> Result<TreeState, DbError> {
        let info = self.space_id(space).await?;
        let client = self.client().await?;
        let mut nodes = BTreeMap::new();
        for row in client
            .query(
                "SELECT id, parent, key FROM nodes WHERE space = $1",
                &[&info.id],
            )
            .await?
        {
            let id = node(row.try_get(0)?);
            let key: Vec<u8> = row.try_get(2)?;
            let key =
                OrderKey::new(&key).map_err(|e| DbError::BadRow(format!("node {id}: key: {e}")))?;
            nodes.insert(
                id,
                Place {
                    parent: node(row.try_get(1)?),
                    key,
                },
            );
        }
        let mut payloads = BTreeMap::new();
        for row in client
            .query(
                "SELECT node, field, value, hlc, replica FROM payloads WHERE space = $1",
                &[&info.id],
            )
            .await?
        {
            payloads.insert(
                (node(row.try_get(0)?), row.try_get(1)?),
                Payload {
                    stamp: stamp_from(row.try_get(3)?, row.try_get(4)?)?,
                    value: row.try_get(2)?,
                },
            );
        }
        Ok(TreeState { nodes, payloads })
    }
}

/// The tail of a query over a CTE `page (id, key)` in order: each node
/// with its registers, one row per register (none: one row of NULLs), and
/// whether it has children of its own (one probe of the children index
/// per node: a page shows an expand mark without a second read). Read by
/// [`child_rows`].
pub(super) const PAGE: &str = "SELECT page.id, page.key, p.field, p.value, p.hlc, p.replica,
                    EXISTS (SELECT 1 FROM nodes c WHERE c.space = $1 AND c.parent = page.id)
             FROM page LEFT JOIN payloads p ON p.space = $1 AND p.node = page.id
             ORDER BY page.key, page.id, p.field";

/// One page of `parent`'s children with their registers, on `client`.
async fn children_page<C: deadpool_postgres::GenericClient>(
    client: &C,
    space_id: i64,
    parent: NodeId,
    after: Option<(&OrderKey, NodeId)>,
    limit: u32,
) -> Result<Vec<ChildRow>, DbError> {
    // Two statements rather than `$3 IS NULL OR ...`, which would keep
    // the planner from seeking the (space, parent, key, id) index.
    let limit = i64::from(limit);
    let rows = match after {
        None => {
            let stmt = client
                .prepare_cached(&format!(
                    "WITH page AS (SELECT id, key FROM nodes WHERE space = $1 AND parent = $2
                                       ORDER BY key, id LIMIT $3) {PAGE}"
                ))
                .await?;
            client
                .query(&stmt, &[&space_id, &uuid(parent), &limit])
                .await?
        }
        Some((key, id)) => {
            let stmt = client
                .prepare_cached(&format!(
                    "WITH page AS (SELECT id, key FROM nodes WHERE space = $1 AND parent = $2
                                         AND (key, id) > ($4, $5)
                                       ORDER BY key, id LIMIT $3) {PAGE}"
                ))
                .await?;
            client
                .query(
                    &stmt,
                    &[&space_id, &uuid(parent), &limit, &key.as_bytes(), &uuid(id)],
                )
                .await?
        }
    };
    child_rows(&rows)
}

/// The nodes of a [`PAGE`] query's rows, in their order.
pub(super) fn child_rows(rows: &[tokio_postgres::Row]) -> Result<Vec<ChildRow>, DbError> {
    let mut out: Vec<ChildRow> = Vec::new();
    for row in rows {
        let id = node(row.try_get(0)?);
        if out.last().is_none_or(|c| c.id != id) {
            let key: Vec<u8> = row.try_get(1)?;
            let key =
                OrderKey::new(&key).map_err(|e| DbError::BadRow(format!("node {id}: key: {e}")))?;
            out.push(ChildRow {
                id,
                key,
                payloads: Vec::new(),
                has_children: row.try_get(6)?,
            });
        }
        if let Some(field) = row.try_get::<_, Option<String>>(2)? {
            let stamp = stamp_from(row.try_get(4)?, row.try_get(5)?)?;
            let value = row.try_get(3)?;
            if let Some(c) = out.last_mut() {
                c.payloads.push((field, Payload { stamp, value }));
            }
        }
    }
    Ok(out)
}

/// `out_of_scope` unless `node` is `root` or below it (a node the space has
/// not stored counts as outside: the two are not told apart).
pub(super) async fn require_in_scope<C: deadpool_postgres::GenericClient>(
    client: &C,
    space_id: i64,
    root: NodeId,
    node: NodeId,
) -> Result<(), DbError> {
    if root == node {
        return Ok(());
    }
    let inside: bool = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM arbor_scope_members($1, $2, ARRAY[$3::uuid]))",
            &[&space_id, &uuid(root), &uuid(node)],
        )
        .await?
        .try_get(0)?;
    if inside {
        Ok(())
    } else {
        Err(DbError::rejected(
            RejectCode::OutOfScope,
            format!("out_of_scope: node {node} is not in the token's subtree"),
        ))
    }
}
