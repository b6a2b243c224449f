//! A subtree replica's feed: the server's `subtree` frames applied underneath the replica's own pending moves.
//!
//! A subtree replica does not replay the space's ops (most of them are
//! outside its subtree and never sent); it takes the server's state of its
//! subtree as `subtree` frames. Its move log holds only its own moves the
//! server has not acknowledged: each frame undoes them, writes the
//! server's state, and redoes them on top (with the cycle check), so the
//! replica shows the server's state plus its pending edits, and exactly
//! the server's state once nothing is pending.

use arbor_shared::protocol::{SubtreeNode, SubtreeRegister};
use arbor_shared::{NodeId, Payload, Place, Stamp, Tree, TreeStore as _};
use rusqlite::TransactionBehavior;

use super::meta::{key, meta_set};
use super::{Replica, Result};
use crate::store::{Changes, SqliteStore, hlc_to_sql, id_blob, id_from_blob};

/// One `subtree` frame (`docs/PROTOCOL.md`).
#[derive(Debug, Clone, Copy)]
pub struct SubtreeFrame<'a> {
    /// Nodes to put at a place.
    pub nodes: &'a [SubtreeNode],
    /// Registers to merge.
    pub registers: &'a [SubtreeRegister],
    /// Nodes to remove with everything under them.
    pub removed: &'a [NodeId],
    /// Whether the root is now in the trash (absent: unchanged).
    pub root_in_trash: Option<bool>,
    /// The seq the replica is at after this frame (absent: more follow).
    pub head_seq: Option<u64>,
}

impl Replica {
    /// Applies one `subtree` frame in one transaction: the pending moves
    /// are undone, the frame's places, registers (last writer wins) and
    /// removals written, the pending moves redone; the cursor moves to the
    /// frame's `head_seq` when it has one.
    pub fn apply_subtree(&mut self, frame: SubtreeFrame<'_>) -> Result<Changes> {
        for r in frame.registers {
            self.clock.observe(r.stamp.hlc);
        }
        self.commit_held()?;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let changes = {
            let mut tree = Tree::new(SqliteStore::new(&tx));
            tree.rebase(
                |_| true,
                |st| {
                    for n in frame.nodes {
                        st.set_place(
                            n.id,
                            Place {
                                parent: n.parent,
                                key: n.key.clone(),
                            },
                        )?;
                    }
                    for r in frame.registers {
                        let newer = st
                            .payload(r.node, &r.field)?
                            .is_none_or(|p| r.stamp > p.stamp);
                        if newer {
                            st.set_payload(
                                r.node,
                                &r.field,
                                Payload {
                                    stamp: r.stamp,
                                    value: r.value.clone(),
                                },
                            )?;
                        }
                    }
                    for x in frame.removed {
                        let ids: Vec<NodeId> = tx
                            .prepare_cached(
                                "WITH RECURSIVE sub (id) AS (
                                     SELECT ?1 UNION SELECT n.id FROM nodes n JOIN sub ON n.parent = sub.id)
                                 SELECT id FROM sub",
                            )?
                            .query_map([id_blob(*x)], |r| {
                                id_from_blob(&r.get::<_, Vec<u8>>(0)?)
                            })?
                            .collect::<rusqlite::Result<_>>()?;
                        for id in ids {
                            if st.contains(id)? {
                                st.remove(id)?;
                            }
                            tx.prepare_cached("DELETE FROM payloads WHERE node = ?1")?
                                .execute([id_blob(id)])?;
                        }
                    }
                    Ok(())
                },
            )?;
            tree.into_store().changes
        };
        if let Some(in_trash) = frame.root_in_trash {
            meta_set(&tx, key::ROOT_IN_TRASH, i64::from(in_trash))?;
        }
        if let Some(head) = frame.head_seq {
            meta_set(&tx, key::CURSOR, i64::try_from(head).unwrap_or(i64::MAX))?;
        }
        meta_set(&tx, key::CLOCK, hlc_to_sql(self.clock.last().0)?)?;
        tx.commit()?;
        self.notify(changes.clone());
        Ok(changes)
    }

    /// A subtree replica's pushed ops the server acknowledged: out of the
    /// outbox, and their moves out of the log, whose state they were redone
    /// on top of (the frames sent before the ack hold their effect, or what
    /// beat them).
    pub(crate) fn acknowledge_in_subtree(&mut self, stamps: &[Stamp]) -> Result<()> {
        self.commit_held()?;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        super::outbox::outbox_delete(&tx, stamps.iter().copied())?;
        let changes = {
            let mut tree = Tree::new(SqliteStore::new(&tx));
            let dropped = tree.rebase(|s| !stamps.contains(&s), |_| Ok(()))?;
            // A create the server put outside the subtree leaves with its
            // log entry: its registers go too (nothing else names them).
            for node in dropped {
                if !tree.contains(node)? {
                    tx.prepare_cached("DELETE FROM payloads WHERE node = ?1")?
                        .execute([id_blob(node)])?;
                }
            }
            tree.into_store().changes
        };
        tx.commit()?;
        self.notify(changes);
        Ok(())
    }

    /// For a subtree replica: whether its root is in the trash (the last
    /// `subtree` frame that said; `None`: never said, it was not).
    pub fn subtree_root_in_trash(&self) -> Result<Option<bool>> {
        Ok(super::meta::meta_i64(&self.conn, key::ROOT_IN_TRASH)?.map(|v| v != 0))
    }
}
