//! Write-behind: local edits applied in a held write transaction and shown at once, committed together later ([`Replica::commit_held`]).
//!
//! A browser replica pays for each commit in its storage layer (the WAL
//! frames go through OPFS calls), and an edit on screen should not wait for
//! that. With write-behind on, a local edit runs in a savepoint inside one
//! open write transaction: its change notification goes out when the
//! savepoint is released, and the transaction is committed by the driver
//! (after a short idle, or before anything else writes). Until then the
//! edit is shown (reads on this connection see it) but not saved: a crash
//! loses it. Pushes never carry held ops ([`Replica::outbox_to_push`]), so
//! the server never has an op the replica could lose.

use super::{Replica, Result};
use crate::store::Changes;

/// The write transaction kept open by write-behind.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Held {
    /// The outbox's highest `ord` when the transaction began: rows above it
    /// are held ops (`ord` is AUTOINCREMENT, so never reused).
    pub(crate) outbox_committed: i64,
}

impl Replica {
    /// Turns write-behind on or off (off commits what is held). Off by
    /// default: every edit commits before its call returns.
    pub fn set_write_behind(&mut self, on: bool) -> Result<()> {
        if !on {
            self.commit_held()?;
        }
        self.write_behind = on;
        Ok(())
    }

    /// Whether local edits are held uncommitted (shown, not saved).
    pub fn has_held(&self) -> bool {
        self.held.is_some()
    }

    /// Commits the held edits, if any; returns whether there were. If the
    /// commit fails they are rolled back, the undo history is cleared (it
    /// named them), subscribers get a `reset` (what they were shown is
    /// gone), and the error is returned.
    pub fn commit_held(&mut self) -> Result<bool> {
        if self.held.take().is_none() {
            return Ok(false);
        }
        match self.conn.execute_batch("COMMIT") {
            Ok(()) => {
                // Its ops may be pushed now.
                self.outbox_grew.notify_one();
                Ok(true)
            }
            Err(e) => {
                if !self.conn.is_autocommit() {
                    let _ = self.conn.execute_batch("ROLLBACK");
                }
                self.undo_steps = super::undo::UndoStacks::default();
                self.notify(Changes {
                    reset: true,
                    ..Changes::default()
                });
                Err(e.into())
            }
        }
    }

    /// With write-behind on: opens the held transaction if it is not open
    /// yet, and says so (the caller then writes in a savepoint).
    pub(crate) fn hold(&mut self) -> Result<bool> {
        if !self.write_behind {
            return Ok(false);
        }
        if self.held.is_none() {
            self.conn.execute_batch("BEGIN IMMEDIATE")?;
            let outbox_committed =
                match self
                    .conn
                    .query_row("SELECT coalesce(max(ord), 0) FROM outbox", [], |r| r.get(0))
                {
                    Ok(v) => v,
                    Err(e) => {
                        let _ = self.conn.execute_batch("ROLLBACK");
                        return Err(e.into());
                    }
                };
            self.held = Some(Held { outbox_committed });
        }
        Ok(true)
    }
}
