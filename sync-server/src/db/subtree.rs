//! The subtree feed's reads: what changed in given subtrees since a seq, as `subtree` frames, in one snapshot.

use std::collections::{BTreeMap, BTreeSet};

use arbor_shared::protocol::SubtreeRegister;
use arbor_shared::room::SubtreeAnswer;
use arbor_shared::subtree::{self, NodeChange, SubtreeRow};
use arbor_shared::{NodeId, OrderKey};

use super::*;

/// Largest subtree moved into a replica's subtree that the feed sends as
/// frames; a larger one makes the replica load its subtree snapshot,
/// which streams (its rows never sit in the server's memory together).
pub const MAX_ENTERED_NODES: usize = 10_000;

/// Most nodes whose place or registers changed that one read looks at; a
/// longer change (a long disconnection, a large import) makes every root
/// asked load its subtree snapshot instead. Each costs a walk up its
/// ancestors twice, so this bounds the read's time as well as its memory.
pub const MAX_CHANGED_NODES: usize = 20_000;

/// Most register bytes (field names and values) one root's frames carry;
/// above, that root loads its subtree snapshot.
pub const MAX_REGISTER_BYTES: u64 = 4 << 20;

/// Entered rows one read holds at once across all its roots (a root whose
/// entered subtrees do not fit in what is left loads its snapshot).
const MAX_ENTERED_ROWS_HELD: usize = 4 * MAX_ENTERED_NODES;

/// Register bytes one read holds at once across all its roots.
const MAX_REGISTER_BYTES_HELD: u64 = 4 * MAX_REGISTER_BYTES;

fn chain(v: Option<Vec<uuid::Uuid>>) -> Option<Vec<NodeId>> {
    v.map(|c| c.into_iter().map(node).collect())
}

impl Db {
    /// What changed in the subtree of each of `roots` from seq `after` to
    /// the space's head now, read in one `REPEATABLE READ` snapshot: the
    /// `subtree` frames for each root (the last one carrying that head), or
    /// `snapshot_required` when `after` is below the space's record of
    /// place changes (`changes_from`), more than [`MAX_CHANGED_NODES`]
    /// changed, more than [`MAX_ENTERED_NODES`] moved into the subtree, or
    /// its registers to send pass [`MAX_REGISTER_BYTES`] (or what one read
    /// may hold for all roots).
    pub async fn subtree_changes(
        &self,
        space: &str,
        after: u64,
        roots: &BTreeSet<NodeId>,
    ) -> Result<BTreeMap<NodeId, SubtreeAnswer>, DbError> {
        let mut client = self.client().await?;
        let tx = read_snapshot(&mut client).await?;
        let row = tx
            .query_opt(
                "SELECT id, head_seq, changes_from FROM spaces WHERE name = $1",
                &[&space],
            )
            .await?
            .ok_or_else(|| {
                DbError::rejected(RejectCode::UnknownSpace, format!("unknown_space: {space}"))
            })?;
        let id: i64 = row.try_get(0)?;
        let head = u64_of(row.try_get(1)?, "head_seq")?;
        let changes_from = u64_of(row.try_get(2)?, "changes_from")?;
        let all_snapshot = || {
            roots
                .iter()
                .map(|r| (*r, SubtreeAnswer::SnapshotRequired { head_seq: head }))
                .collect()
        };
        if after < changes_from || after > head {
            return Ok(all_snapshot());
        }
        let after_sql = i64::try_from(after).unwrap_or(i64::MAX);
        let changed_limit = i64::try_from(MAX_CHANGED_NODES + 1).unwrap_or(i64::MAX);
        let rows = tx
            .query(
                "SELECT node, moved, before, after, parent, key
                 FROM arbor_subtree_changes($1, $2) LIMIT $3",
                &[&id, &after_sql, &changed_limit],
            )
            .await?;
        if rows.len() > MAX_CHANGED_NODES {
            return Ok(all_snapshot());
        }
        let mut changes = Vec::with_capacity(rows.len());
        for r in rows {
            let parent: Option<uuid::Uuid> = r.try_get(4)?;
            let key: Option<Vec<u8>> = r.try_get(5)?;
            let place = match (parent, key) {
                (Some(p), Some(k)) => Some((
                    node(p),
                    OrderKey::new(&k).map_err(|e| DbError::BadRow(format!("key: {e}")))?,
                )),
                _ => None,
            };
            changes.push(NodeChange {
                node: node(r.try_get(0)?),
                moved: r.try_get(1)?,
                before: chain(r.try_get(2)?),
                after: chain(r.try_get(3)?),
                place,
            });
        }
        let projections: BTreeMap<NodeId, subtree::Projection> = roots
            .iter()
            .map(|r| (*r, subtree::project(&changes, *r)))
            .collect();
        // The entered subtrees, each read once whatever roots it entered,
        // within each root's budget and what the read may hold.
        let mut too_large: BTreeSet<NodeId> = BTreeSet::new();
        let mut rows_of: BTreeMap<NodeId, Vec<SubtreeRow>> = BTreeMap::new();
        // Entered subtrees known to have more rows than this.
        let mut larger_than: BTreeMap<NodeId, usize> = BTreeMap::new();
        let mut held = 0usize;
        for (root, p) in &projections {
            let mut total = 0usize;
            for x in &p.entered {
                if let Some(rows) = rows_of.get(x) {
                    total += rows.len();
                    if total > MAX_ENTERED_NODES {
                        too_large.insert(*root);
                        break;
                    }
                    continue;
                }
                let budget = (MAX_ENTERED_NODES - total).min(MAX_ENTERED_ROWS_HELD - held);
                if larger_than.get(x).is_some_and(|&n| n >= budget) {
                    too_large.insert(*root);
                    break;
                }
                let rows = self.entered_rows(&tx, id, *x, budget + 1).await?;
                if rows.len() > budget {
                    larger_than.insert(*x, budget);
                    too_large.insert(*root);
                    break;
                }
                total += rows.len();
                held += rows.len();
                rows_of.insert(*x, rows);
            }
        }
        // Registers: of every node sent whole or written, per root within
        // its budget and what the read may hold; sizes first, so values
        // over the budget are never read.
        let sent_of = |root: &NodeId, p: &subtree::Projection| -> BTreeSet<NodeId> {
            let mut sent: BTreeSet<NodeId> = p.written.clone();
            if !too_large.contains(root) {
                for x in &p.entered {
                    sent.extend(rows_of.get(x).into_iter().flatten().map(|r| r.id));
                }
            }
            sent
        };
        let mut sent: BTreeMap<NodeId, BTreeSet<NodeId>> = BTreeMap::new();
        for (root, p) in &projections {
            if !too_large.contains(root) {
                sent.insert(*root, sent_of(root, p));
            }
        }
        let wanted: BTreeSet<NodeId> = sent.values().flatten().copied().collect();
        let mut size_of: BTreeMap<NodeId, u64> = BTreeMap::new();
        if !wanted.is_empty() {
            let ids: Vec<uuid::Uuid> = wanted.iter().map(|n| uuid(*n)).collect();
            for r in tx
                .query(
                    "SELECT node, sum(octet_length(field) + coalesce(octet_length(value), 0))::bigint
                     FROM payloads WHERE space = $1 AND node = ANY ($2) GROUP BY node",
                    &[&id, &ids],
                )
                .await?
            {
                let bytes: i64 = r.try_get(1)?;
                size_of.insert(node(r.try_get(0)?), u64::try_from(bytes).unwrap_or(0));
            }
        }
        let mut to_read: BTreeSet<NodeId> = BTreeSet::new();
        let mut held_bytes = 0u64;
        for (root, nodes) in &sent {
            let bytes: u64 = nodes.iter().filter_map(|n| size_of.get(n)).sum();
            let new: u64 = nodes
                .iter()
                .filter(|n| !to_read.contains(n))
                .filter_map(|n| size_of.get(n))
                .sum();
            if bytes > MAX_REGISTER_BYTES || held_bytes + new > MAX_REGISTER_BYTES_HELD {
                too_large.insert(*root);
                continue;
            }
            held_bytes += new;
            to_read.extend(nodes.iter().filter(|n| size_of.contains_key(n)));
        }
        let mut registers: BTreeMap<NodeId, Vec<SubtreeRegister>> = BTreeMap::new();
        if !to_read.is_empty() {
            let ids: Vec<uuid::Uuid> = to_read.iter().map(|n| uuid(*n)).collect();
            for r in tx
                .query(
                    "SELECT node, field, value, hlc, replica FROM payloads
                     WHERE space = $1 AND node = ANY ($2)",
                    &[&id, &ids],
                )
                .await?
            {
                let n = node(r.try_get(0)?);
                registers.entry(n).or_default().push(SubtreeRegister {
                    node: n,
                    field: r.try_get(1)?,
                    value: r.try_get(2)?,
                    stamp: stamp_from(r.try_get(3)?, r.try_get(4)?)?,
                });
            }
        }
        tx.commit().await?;
        let mut answers = BTreeMap::new();
        for (root, p) in projections {
            if too_large.contains(&root) {
                answers.insert(root, SubtreeAnswer::SnapshotRequired { head_seq: head });
                continue;
            }
            let rows: Vec<SubtreeRow> = p
                .entered
                .iter()
                .flat_map(|x| rows_of.get(x).into_iter().flatten().cloned())
                .collect();
            let regs: Vec<SubtreeRegister> = sent
                .get(&root)
                .into_iter()
                .flatten()
                .filter_map(|n| registers.get(n))
                .flatten()
                .cloned()
                .collect();
            answers.insert(
                root,
                SubtreeAnswer::Frames(subtree::frames(&p, &rows, regs, head)),
            );
        }
        Ok(answers)
    }
    /// The subtree of `x` at the snapshot of `tx`, at most `limit` rows.
    async fn entered_rows(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        space: i64,
        x: NodeId,
        limit: usize,
    ) -> Result<Vec<SubtreeRow>, DbError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = tx
            .query(
                "WITH RECURSIVE sub (id, parent, key) AS (
                     SELECT n.id, n.parent, n.key FROM nodes n WHERE n.space = $1 AND n.id = $2
                     UNION
                     SELECT n.id, n.parent, n.key FROM sub JOIN nodes n
                       ON n.space = $1 AND n.parent = sub.id)
                 SELECT id, parent, key FROM sub LIMIT $3",
                &[&space, &uuid(x), &limit],
            )
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let key: Vec<u8> = r.try_get(2)?;
            out.push(SubtreeRow {
                id: node(r.try_get(0)?),
                parent: node(r.try_get(1)?),
                key: OrderKey::new(&key).map_err(|e| DbError::BadRow(format!("key: {e}")))?,
            });
        }
        Ok(out)
    }
}
