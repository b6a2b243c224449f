//! Export: a consistent copy of the replica file as a new replica.

use std::path::Path;

use rusqlite::Connection;

use super::meta::{key, meta_delete, meta_set, random_u64};
use super::{Replica, ReplicaError, Result};

impl Replica {
    /// Writes a consistent copy of the replica file to `path` (`VACUUM
    /// INTO`: a compact SQLite file, openable with [`Replica::open`]).
    ///
    /// The copy is a new replica: a fresh replica id (two live files with
    /// one id would issue equal stamps), no cursor (its first sync loads a
    /// snapshot) and an empty outbox (the unacknowledged ops stay this
    /// file's to push; the copy shows their effects until it syncs, and a
    /// fork of it includes them). Held edits (write-behind) are committed
    /// first: `VACUUM INTO` runs outside a transaction.
    pub fn export(&mut self, path: &Path) -> Result<()> {
        self.commit_held()?;
        let text = path
            .to_str()
            .ok_or_else(|| ReplicaError::Snapshot("export path is not UTF-8".into()))?;
        self.conn.execute("VACUUM INTO ?1", [text])?;
        let copy = Connection::open(path)?;
        let mut id = random_u64();
        if id == 0 || id == self.replica.0 {
            id = id.wrapping_add(1).max(1);
        }
        meta_set(&copy, key::REPLICA, id as i64)?;
        meta_delete(&copy, key::CURSOR)?;
        copy.execute("DELETE FROM outbox", [])?;
        Ok(())
    }
}
