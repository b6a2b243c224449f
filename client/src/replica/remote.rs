//! Committed ops from the server applied in seq order, continuing the cursor.

use arbor_shared::protocol::SeqOp;
use arbor_shared::{Op, Tree};
use rusqlite::TransactionBehavior;

use super::meta::{key, meta_set};
use super::outbox::outbox_delete;
use super::{Replica, ReplicaError, Result};
use crate::store::{Changes, SqliteStore, hlc_to_sql};

impl Replica {
    /// Applies committed ops from the server (in seq order, continuing the
    /// cursor), removes this replica's own ops among them from the outbox,
    /// and advances the cursor; one transaction.
    pub fn apply_remote(&mut self, ops: &[SeqOp]) -> Result<Changes> {
        let Some(first) = ops.first() else {
            return Ok(Changes::default());
        };
        let cursor = self.cursor()?.unwrap_or(0);
        if first.seq != cursor + 1 || !ops.windows(2).all(|w| w[1].seq == w[0].seq + 1) {
            return Err(ReplicaError::Gap {
                expected: cursor + 1,
                got: first.seq,
            });
        }
        for o in ops {
            self.clock.observe(o.op.stamp().hlc);
        }
        let plain: Vec<Op> = ops.iter().map(|o| o.op.clone()).collect();
        self.commit_held()?;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let pending = super::conflicts::before_apply(&tx, self.replica, ops)?;
        let mut changes = {
            let mut tree = Tree::new(SqliteStore::new(&tx));
            tree.apply(&plain)?;
            tree.into_store().changes
        };
        changes.conflicts = super::conflicts::after_apply(&tx, pending)?;
        super::conflicts::record_own_writes(&tx, self.replica, ops)?;
        if self.record_history {
            super::history::record(&tx, ops)?;
        }
        outbox_delete(
            &tx,
            plain
                .iter()
                .map(Op::stamp)
                .filter(|s| s.replica == self.replica),
        )?;
        let last = ops.last().map_or(cursor, |o| o.seq);
        meta_set(&tx, key::CURSOR, i64::try_from(last).unwrap_or(i64::MAX))?;
        meta_set(&tx, key::CLOCK, hlc_to_sql(self.clock.last().0)?)?;
        tx.commit()?;
        self.notify(changes.clone());
        Ok(changes)
    }
}
