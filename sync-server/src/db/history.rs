//! A node's history: its ops (moves, restores, sets) newest first, with seq, stamp, origin, author and whether each move took effect.

use arbor_shared::{NodeId, OrderKey, Stamp};

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

/// Most nodes a subtree at a seq may hold (a larger one is refused
/// `too_large`: its rows would sit in memory together).
pub const MAX_SUBTREE_AT: usize = 100_000;

/// A subtree as it was at a seq ([`Db::subtree_at`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubtreeAt {
    /// Whether the root was in the tree then.
    pub present: bool,
    /// The nodes below the root then, with their place then.
    pub nodes: Vec<(NodeId, NodeId, OrderKey)>,
    /// The registers then of the root and of `nodes`.
    pub registers: Vec<(NodeId, String, Option<String>, Stamp)>,
    /// The nodes below the root now that were not below it then, with
    /// their place then (`None`: not in the tree then).
    pub elsewhere: Vec<(NodeId, Option<(NodeId, OrderKey)>)>,
}

/// Why a subtree at a seq cannot be answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubtreeAtRefusal {
    /// The seq is outside the space's recorded history: below where its
    /// record of place changes (or its log) starts, or above its head.
    OutsideHistory {
        /// The lowest seq it can answer.
        from: u64,
        /// The highest (the head).
        head: u64,
    },
    /// More than [`MAX_SUBTREE_AT`] nodes, then or now.
    TooLarge,
}

fn key_of(b: Vec<u8>) -> Result<OrderKey, DbError> {
    OrderKey::new(&b).map_err(|e| DbError::BadRow(format!("key: {e}")))
}

impl Db {
    /// The subtree of `root` as it was at seq `at`, read in one snapshot
    /// from the record of place changes (migration 0013) and the log:
    /// refused when `at` is outside the recorded history (below
    /// `changes_from` or the lowest cursor catch-up serves, or above the
    /// head) or above [`MAX_SUBTREE_AT`] nodes.
    pub async fn subtree_at(
        &self,
        space: &str,
        root: NodeId,
        at: u64,
    ) -> Result<Result<SubtreeAt, SubtreeAtRefusal>, DbError> {
        let mut client = self.client().await?;
        let tx = read_snapshot(&mut client).await?;
        let row = tx
            .query_opt(
                "SELECT s.id, s.head_seq, s.changes_from, s.horizon_hlc, s.horizon_replica,
                        (SELECT min(o.seq) FROM ops o WHERE o.space = s.id)
                 FROM spaces s WHERE s.name = $1",
                &[&space],
            )
            .await?
            .ok_or_else(|| {
                DbError::rejected(RejectCode::UnknownSpace, format!("unknown_space: {space}"))
            })?;
        let id: i64 = row.try_get(0)?;
        let head = u64_of(row.try_get(1)?, "head_seq")?;
        let from = u64_of(row.try_get(2)?, "changes_from")?;
        // A horizon: the log does not start from an empty space (imported,
        // or truncated below the horizon); it starts after its first seq
        // less one (catch-up's lowest cursor, `Db::space`).
        let horizon: (Option<i64>, Option<i64>) = (row.try_get(3)?, row.try_get(4)?);
        let first: Option<i64> = row.try_get(5)?;
        let from = match (horizon.0, first) {
            (None, _) => from,
            (Some(_), Some(first)) => from.max(first.max(1) as u64 - 1),
            (Some(_), None) => from.max(head),
        };
        if at < from || at > head {
            return Ok(Err(SubtreeAtRefusal::OutsideHistory { from, head }));
        }
        let at_sql = i64::try_from(at).unwrap_or(i64::MAX);
        let root_uuid = uuid(root);
        let present = root == NodeId::ROOT
            || !tx
                .query(
                    "SELECT id FROM arbor_places_at($1, ARRAY[$2::uuid], $3)",
                    &[&id, &root_uuid, &at_sql],
                )
                .await?
                .is_empty();
        let limit = i64::try_from(MAX_SUBTREE_AT + 1).unwrap_or(i64::MAX);
        let mut nodes = Vec::new();
        if present {
            for r in tx
                .query(
                    "SELECT id, parent, key FROM arbor_subtree_at($1, $2, $3, $4)",
                    &[&id, &root_uuid, &at_sql, &limit],
                )
                .await?
            {
                nodes.push((
                    node(r.try_get(0)?),
                    node(r.try_get(1)?),
                    key_of(r.try_get(2)?)?,
                ));
            }
        }
        // Below the root now (the same walk over `nodes`).
        let now: Vec<uuid::Uuid> = tx
            .query(
                "WITH RECURSIVE sub (id) AS (
                     SELECT n.id FROM nodes n WHERE n.space = $1 AND n.parent = $2
                     UNION
                     SELECT n.id FROM sub JOIN nodes n ON n.space = $1 AND n.parent = sub.id)
                 SELECT id FROM sub LIMIT $3",
                &[&id, &root_uuid, &limit],
            )
            .await?
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()?;
        if nodes.len() > MAX_SUBTREE_AT || now.len() > MAX_SUBTREE_AT {
            return Ok(Err(SubtreeAtRefusal::TooLarge));
        }
        let then: std::collections::BTreeSet<NodeId> = nodes.iter().map(|n| n.0).collect();
        let moved_in: Vec<uuid::Uuid> = now
            .into_iter()
            .filter(|u| !then.contains(&node(*u)))
            .collect();
        let mut places: std::collections::BTreeMap<NodeId, (NodeId, OrderKey)> =
            std::collections::BTreeMap::new();
        if !moved_in.is_empty() {
            for r in tx
                .query(
                    "SELECT id, parent, key FROM arbor_places_at($1, $2, $3)",
                    &[&id, &moved_in, &at_sql],
                )
                .await?
            {
                places.insert(
                    node(r.try_get(0)?),
                    (node(r.try_get(1)?), key_of(r.try_get(2)?)?),
                );
            }
        }
        let elsewhere = moved_in
            .into_iter()
            .map(|u| (node(u), places.remove(&node(u))))
            .collect();
        // Registers then: per field, the greatest stamp among the sets
        // committed at or before `at`, and the registers that predate the
        // log (stamped at or below the horizon: an import's, or those of
        // ops truncated away, all committed before `at`).
        let mut ids: Vec<uuid::Uuid> = nodes.iter().map(|n| uuid(n.0)).collect();
        if present && root != NodeId::ROOT {
            ids.push(root_uuid);
        }
        let mut registers = Vec::new();
        if !ids.is_empty() {
            for r in tx
                .query(
                    "SELECT DISTINCT ON (w.node, w.field) w.node, w.field, w.value, w.hlc, w.replica
                     FROM (
                         SELECT o.node, o.field, o.value, o.hlc, o.replica
                         FROM ops o
                         WHERE o.space = $1 AND o.node = ANY ($2) AND o.kind = 's' AND o.seq <= $3
                         UNION ALL
                         SELECT p.node, p.field, p.value, p.hlc, p.replica
                         FROM payloads p
                         WHERE p.space = $1 AND p.node = ANY ($2)
                           AND (p.hlc, p.replica) <= ($4, $5)) w
                     ORDER BY w.node, w.field, w.hlc DESC, w.replica DESC",
                    &[&id, &ids, &at_sql, &horizon.0, &horizon.1],
                )
                .await?
            {
                registers.push((
                    node(r.try_get(0)?),
                    r.try_get(1)?,
                    r.try_get(2)?,
                    stamp_from(r.try_get(3)?, r.try_get(4)?)?,
                ));
            }
        }
        tx.commit().await?;
        Ok(Ok(SubtreeAt {
            present,
            nodes,
            registers,
            elsewhere,
        }))
    }
}
