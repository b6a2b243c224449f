//! A node's history: its ops (moves, restores, sets) newest first, with seq, stamp, origin, author and whether each move took effect.

use arbor_shared::NodeId;

use super::*;

/// One op of a node's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    /// The op as committed (seq, stamp, origin, author).
    pub committed: Committed,
    /// For a move: whether it is in effect in the tree's history (false:
    /// skipped, as a cycle); `None` for a set.
    pub applied: Option<bool>,
}

/// Most entries of one history page.
pub const MAX_HISTORY_PAGE: u32 = 1_000;

impl Db {
    /// Up to `limit` ops of `node` with seq below `before` (`None`: from
    /// the newest), newest first, and the space's head seq.
    pub async fn node_history(
        &self,
        space: &str,
        node_id: NodeId,
        before: Option<u64>,
        limit: u32,
    ) -> Result<(u64, Vec<HistoryEntry>), DbError> {
        let info = self.space_id(space).await?;
        let before = before.map_or(i64::MAX, |b| i64::try_from(b).unwrap_or(i64::MAX));
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT o.seq, o.hlc, o.replica, o.kind, o.node, o.parent, o.key, o.field, o.value,
                        o.known_seq, r.sub AS author, o.applied
                 FROM ops o LEFT JOIN replicas r ON r.space = o.space AND r.replica = o.replica
                 WHERE o.space = $1 AND o.node = $2 AND o.seq < $3
                 ORDER BY o.seq DESC LIMIT $4",
            )
            .await?;
        let rows = client
            .query(
                &stmt,
                &[
                    &info.id,
                    &uuid(node_id),
                    &before,
                    &i64::from(limit.min(MAX_HISTORY_PAGE)),
                ],
            )
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            out.push(HistoryEntry {
                committed: committed_from_row(row)?,
                applied: row.try_get(11)?,
            });
        }
        Ok((info.head_seq, out))
    }
}
