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

fn chain(v: Option<Vec<uuid::Uuid>>) -> Option<Vec<NodeId>> {
    v.map(|c| c.into_iter().map(node).collect())
}

impl Db {
    /// What changed in the subtree of each of `roots` from seq `after` to
    /// the space's head now, read in one `REPEATABLE READ` snapshot: the
    /// `subtree` frames for each root (the last one carrying that head), or
    /// `snapshot_required` when `after` is below the space's record of
    /// place changes (`changes_from`) or more than [`MAX_ENTERED_NODES`]
    /// moved into the subtree.
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
        if after < changes_from || after > head {
            return Ok(roots
                .iter()
                .map(|r| (*r, SubtreeAnswer::SnapshotRequired { head_seq: head }))
                .collect());
        }
        let after_sql = i64::try_from(after).unwrap_or(i64::MAX);
        let mut changes = Vec::new();
        for r in tx
            .query(
                "SELECT node, moved, before, after, parent, key
                 FROM arbor_subtree_changes($1, $2)",
                &[&id, &after_sql],
            )
            .await?
        {
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
        // The entered subtrees, each read once whatever roots it entered.
        let entered: BTreeSet<NodeId> = projections
            .values()
            .flat_map(|p| p.entered.iter().copied())
            .collect();
        let mut rows_of: BTreeMap<NodeId, Option<Vec<SubtreeRow>>> = BTreeMap::new();
        for x in entered {
            let limit = i64::try_from(MAX_ENTERED_NODES + 1).unwrap_or(i64::MAX);
            let rows = tx
                .query(
                    "WITH RECURSIVE sub (id, parent, key) AS (
                         SELECT n.id, n.parent, n.key FROM nodes n WHERE n.space = $1 AND n.id = $2
                         UNION
                         SELECT n.id, n.parent, n.key FROM sub JOIN nodes n
                           ON n.space = $1 AND n.parent = sub.id)
                     SELECT id, parent, key FROM sub LIMIT $3",
                    &[&id, &uuid(x), &limit],
                )
                .await?;
            if rows.len() > MAX_ENTERED_NODES {
                rows_of.insert(x, None);
                continue;
            }
            let mut out = Vec::with_capacity(rows.len());
            for r in rows {
                let key: Vec<u8> = r.try_get(2)?;
                out.push(SubtreeRow {
                    id: node(r.try_get(0)?),
                    parent: node(r.try_get(1)?),
                    key: OrderKey::new(&key).map_err(|e| DbError::BadRow(format!("key: {e}")))?,
                });
            }
            rows_of.insert(x, Some(out));
        }
        // Registers: of every node that is sent whole or was written.
        let mut wanted: BTreeSet<NodeId> = BTreeSet::new();
        for p in projections.values() {
            wanted.extend(p.written.iter().copied());
        }
        for rows in rows_of.values().flatten() {
            wanted.extend(rows.iter().map(|r| r.id));
        }
        let mut registers: BTreeMap<NodeId, Vec<SubtreeRegister>> = BTreeMap::new();
        if !wanted.is_empty() {
            let ids: Vec<uuid::Uuid> = wanted.iter().map(|n| uuid(*n)).collect();
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
            let mut rows = Vec::new();
            let mut too_large = false;
            for x in &p.entered {
                match rows_of.get(x) {
                    Some(Some(r)) => rows.extend(r.iter().cloned()),
                    _ => too_large = true,
                }
            }
            if too_large || rows.len() > MAX_ENTERED_NODES {
                answers.insert(root, SubtreeAnswer::SnapshotRequired { head_seq: head });
                continue;
            }
            let mut sent: BTreeSet<NodeId> = rows.iter().map(|r| r.id).collect();
            sent.extend(p.written.iter().copied());
            let regs: Vec<SubtreeRegister> = sent
                .iter()
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
}
