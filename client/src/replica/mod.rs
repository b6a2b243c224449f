//! [`Replica`]: the local replica over SQLite. Every local op is applied and
//! queued in the outbox in one transaction; remote ops are applied in seq
//! order; change notifications say which nodes changed.
//!
//! # Layout
//!
//! - `mod.rs`: [`Replica`], opening a file, its identity, space, cursor and
//!   horizon, change subscriptions.
//! - `error.rs`: [`ReplicaError`].
//! - `meta.rs`: the `meta` table, the wall clock and randomness.
//! - `read.rs`: reads (places, fields, children pages, walks).
//! - `edit.rs`: the local API ([`Position`]: create, move, delete,
//!   restore, set).
//! - `outbox.rs`: the outbox (pending ops, acks, requeue, re-stamp) and
//!   the rejected list (ops refused for good, kept for the application).
//! - `remote.rs`: committed ops applied in seq order.
//! - `conflicts.rs`: the conflict list ([`Conflict`]): what committed ops
//!   took from this replica's edits, and the server's restores.
//! - `subtree.rs`: a subtree replica's `subtree` frames, applied under its
//!   pending moves.
//! - `export.rs`: the replica copied as a new replica file.
//! - `history.rs`: local history (every committed op seen, by seq) and a
//!   node's history read from it.
//! - `undo.rs`: undo and redo steps ([`UndoReport`], [`Kept`]).
//! - `revert.rs`: a subtree brought back to a past seq ([`RevertReport`]).
//! - `checkpoint.rs`: WAL checkpoints on a thread of their own, off the
//!   edit path (native builds).
//! - `calls.rs`: the calls record (application calls committed, by key:
//!   a call resent after a lost answer is found done, [`CallDone`]).
//! - `inspect.rs`: the inspector's reads, each indexed or bounded (the
//!   outbox with each op's effect [`OutboxEntry`], recent ops, restores,
//!   the move that placed a node [`LastMove`], [`ReplicaSize`]).
//! - `outline.rs`: outlines imported as new nodes (one undo step) and a
//!   subtree read back as outline items.
//! - `search.rs`: full-text search over field values ([`SearchHit`]),
//!   optionally within a subtree.
//! - `values.rs`: lookups through the value index ([`Holder`]: a value's
//!   holders, a child by value, merging duplicate children).
//! - `write_behind.rs`: local edits held in one open write transaction,
//!   shown at once and committed together later (browser replicas).

mod calls;
#[cfg(not(target_arch = "wasm32"))]
mod checkpoint;
mod conflicts;
mod edit;
mod error;
mod export;
pub(crate) mod history;
mod inspect;
pub(crate) mod meta;
mod outbox;
mod outline;
mod read;
mod remote;
mod revert;
mod search;
mod subtree;
mod undo;
mod values;
mod write_behind;

use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc;

use arbor_shared::snapshot::field::replica_from_stored;
use arbor_shared::{Clock, Hlc, KeyGen, NodeId, ReplicaId, Stamp};
use rusqlite::Connection;

use crate::schema;
use crate::store::{Changes, id_blob, id_from_blob};

pub use calls::{CallDone, MAX_CALLS};
pub use conflicts::{Conflict, ConflictKind, MAX_CONFLICTS};
pub use edit::Position;
pub use error::ReplicaError;
pub(crate) use error::Result;
pub use history::MAX_HISTORY_PAGE;
pub use inspect::{LastMove, OutboxEntry, RESTORE_SCAN, ReplicaSize, RowCount, SIZE_COUNT_CAP};
use meta::random_u64;
pub(crate) use meta::{key, meta_delete, meta_get, meta_i64, meta_set, meta_text, now_ms};
pub use outbox::RejectedOp;
pub use read::NodeView;
pub use revert::RevertReport;
pub use search::{MAX_SEARCH_HITS, SearchHit, search_words};
pub use subtree::SubtreeFrame;
pub use undo::{Kept, MAX_UNDO_STEPS, UndoReport};
pub use values::{Holder, MAX_HOLDERS_PAGE};

/// Open options.
#[derive(Debug, Clone, Copy, Default)]
pub struct OpenOptions {
    /// `synchronous=FULL`: every commit survives power loss (an fsync per
    /// local op). Default NORMAL: survives process crashes.
    pub synchronous_full: bool,
    /// Do not keep the local history record (`history.rs`): committed ops
    /// are applied without it, one insert less each. Default: kept.
    pub no_history: bool,
}

/// A full local replica of one thoughtspace (or one subtree of it).
pub struct Replica {
    pub(crate) conn: Connection,
    /// Invariant: the id stored in `meta` (never changes for a file).
    pub(crate) replica: ReplicaId,
    /// Invariant: `clock.last()` is persisted in `meta` by every
    /// transaction that ticks or observes it.
    pub(crate) clock: Clock,
    keys: KeyGen,
    subscribers: Vec<mpsc::Sender<Arc<Changes>>>,
    /// Woken whenever the outbox grows (the sync client waits on it).
    outbox_grew: Arc<tokio::sync::Notify>,
    /// Whether applied committed ops go into the history record
    /// ([`OpenOptions::no_history`]).
    pub(crate) record_history: bool,
    /// The undo and redo stacks (in memory, with the open replica).
    pub(crate) undo_steps: undo::UndoStacks,
    /// The key of the application call the next local write belongs to
    /// ([`Replica::set_call_key`]). Invariant: taken by the next write
    /// transaction, which records it in `calls` with the edit.
    pub(crate) call_key: Option<String>,
    /// The checkpoint thread of a file replica (native builds).
    #[cfg(not(target_arch = "wasm32"))]
    checkpointer: Option<checkpoint::Checkpointer>,
    /// `OpenOptions::synchronous_full`, for a connection opened again
    /// (`replace_file`).
    pub(crate) synchronous_full: bool,
    /// Whether local edits are held in an open transaction
    /// ([`Replica::set_write_behind`]).
    write_behind: bool,
    /// The held write transaction. Invariant: `Some` exactly while the
    /// connection is inside the transaction `hold` began; every other
    /// write transaction calls [`Replica::commit_held`] before it begins.
    held: Option<write_behind::Held>,
}

impl Drop for Replica {
    fn drop(&mut self) {
        // A replica closed in order saves what it holds.
        let _ = self.commit_held();
        #[cfg(not(target_arch = "wasm32"))]
        if let Some(c) = self.checkpointer.take() {
            c.stop(&mut self.conn);
        }
    }
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica")
            .field("replica", &self.replica)
            .finish_non_exhaustive()
    }
}

impl Replica {
    /// Opens (or creates) the replica file at `path`.
    pub fn open(path: &Path) -> Result<Replica> {
        Replica::open_with(path, OpenOptions::default())
    }

    /// Opens (or creates) the replica file at `path` with `options`.
    pub fn open_with(path: &Path, options: OpenOptions) -> Result<Replica> {
        Replica::from_connection(Connection::open(path)?, options)
    }

    /// A replica in memory (tests; browsers without durable storage).
    pub fn open_in_memory() -> Result<Replica> {
        Replica::from_connection(Connection::open_in_memory()?, OpenOptions::default())
    }

    fn from_connection(mut conn: Connection, options: OpenOptions) -> Result<Replica> {
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        schema::migrate(&mut conn, options.synchronous_full)?;
        let replica = match meta_i64(&conn, key::REPLICA)? {
            Some(r) => ReplicaId(r as u64),
            None => {
                // Never 0 (the server's) and never with the top bit clear
                // ambiguity: any nonzero value works.
                let mut r = random_u64();
                if r == 0 {
                    r = 1;
                }
                meta_set(&conn, key::REPLICA, r as i64)?;
                ReplicaId(r)
            }
        };
        let last = meta_i64(&conn, key::CLOCK)?.unwrap_or(0).max(0) as u64;
        #[cfg(not(target_arch = "wasm32"))]
        let checkpointer = checkpoint::Checkpointer::start(&mut conn)?;
        Ok(Replica {
            conn,
            replica,
            clock: Clock::new(replica, Hlc(last)),
            keys: KeyGen::new(replica.0 ^ random_u64()),
            subscribers: Vec::new(),
            outbox_grew: Arc::new(tokio::sync::Notify::new()),
            record_history: !options.no_history,
            undo_steps: undo::UndoStacks::default(),
            call_key: None,
            #[cfg(not(target_arch = "wasm32"))]
            checkpointer,
            synchronous_full: options.synchronous_full,
            write_behind: false,
            held: None,
        })
    }

    /// The replica's file, unless it lives in memory.
    #[cfg(not(target_arch = "wasm32"))]
    pub(crate) fn file_path(&self) -> Option<std::path::PathBuf> {
        self.conn
            .path()
            .filter(|p| !p.is_empty())
            .map(std::path::PathBuf::from)
    }

    /// Puts the file at `image` in place of this replica's file at
    /// `target` (a rename, after closing every connection to it), and opens
    /// it as this replica's database. The file is whole either way; if
    /// opening it fails, this handle is unusable and must be opened again.
    #[cfg(not(target_arch = "wasm32"))]
    pub(crate) fn replace_file(&mut self, image: &Path, target: &Path) -> Result<()> {
        if let Some(c) = self.checkpointer.take() {
            c.stop(&mut self.conn);
        }
        let old = std::mem::replace(&mut self.conn, Connection::open_in_memory()?);
        old.close().map_err(|(_, e)| e)?;
        // Closed cleanly, SQLite has folded the WAL in and removed it; a
        // leftover would be replayed onto the new file.
        for suffix in ["-wal", "-shm"] {
            let side = format!("{}{suffix}", target.display());
            match std::fs::remove_file(&side) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(ReplicaError::Image(format!("{side}: {e}")));
                }
                _ => {}
            }
        }
        std::fs::rename(image, target)
            .map_err(|e| ReplicaError::Image(format!("putting the image in place: {e}")))?;
        let mut conn = Connection::open(target)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        schema::migrate(&mut conn, self.synchronous_full)?;
        self.checkpointer = checkpoint::Checkpointer::start(&mut conn)?;
        self.conn = conn;
        Ok(())
    }

    /// This replica's id (random, fixed for the file).
    pub fn replica_id(&self) -> ReplicaId {
        self.replica
    }

    /// The connection (read-only use: queries of the app's own).
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// The thoughtspace this replica belongs to, once bound.
    pub fn space(&self) -> Result<Option<String>> {
        Ok(meta_text(&self.conn, key::SPACE)?)
    }

    /// Binds the replica to `space` (a replica holds one thoughtspace).
    pub fn bind_space(&mut self, space: &str) -> Result<()> {
        match self.space()? {
            Some(have) if have != space => Err(ReplicaError::WrongSpace {
                have,
                want: space.to_string(),
            }),
            Some(_) => Ok(()),
            None => Ok(meta_set(&self.conn, key::SPACE, space)?),
        }
    }

    /// For a subtree replica: the subtree's root (set by its cold start).
    pub fn subtree_root(&self) -> Result<Option<NodeId>> {
        Ok(match meta_get(&self.conn, key::ROOT)? {
            Some(rusqlite::types::Value::Blob(b)) => Some(id_from_blob(&b)?),
            _ => None,
        })
    }

    /// Makes this a subtree replica of `root` (before its first sync).
    pub fn bind_subtree(&mut self, root: NodeId) -> Result<()> {
        Ok(meta_set(&self.conn, key::ROOT, id_blob(root).to_vec())?)
    }

    /// A free-form setting kept in the file (the CLI's server URL, token).
    pub fn setting(&self, name: &str) -> Result<Option<String>> {
        Ok(meta_text(&self.conn, &format!("setting.{name}"))?)
    }

    /// Stores a free-form setting.
    pub fn set_setting(&mut self, name: &str, value: &str) -> Result<()> {
        Ok(meta_set(&self.conn, &format!("setting.{name}"), value)?)
    }

    /// The highest server seq applied (`None`: never synced, or reset for a
    /// cold start).
    pub fn cursor(&self) -> Result<Option<u64>> {
        Ok(meta_i64(&self.conn, key::CURSOR)?.map(|c| c.max(0) as u64))
    }

    /// Forgets the cursor, so the next sync cold-starts from a snapshot.
    pub fn reset_cursor(&mut self) -> Result<()> {
        Ok(meta_delete(&self.conn, key::CURSOR)?)
    }

    /// The log horizon (from the last snapshot).
    pub fn horizon(&self) -> Result<Option<Stamp>> {
        let h = meta_i64(&self.conn, key::HORIZON_HLC)?;
        let r = meta_i64(&self.conn, key::HORIZON_REPLICA)?;
        Ok(h.zip(r)
            .map(|(h, r)| Stamp::new(h as u64, replica_from_stored(r))))
    }

    /// Receives the changes of every later commit (local or remote).
    pub fn subscribe(&mut self) -> mpsc::Receiver<Arc<Changes>> {
        let (tx, rx) = mpsc::channel();
        self.subscribers.push(tx);
        rx
    }

    /// Notified whenever local ops are queued.
    pub fn outbox_notify(&self) -> Arc<tokio::sync::Notify> {
        self.outbox_grew.clone()
    }

    fn notify(&mut self, changes: Changes) {
        if changes.is_empty() {
            return;
        }
        let changes = Arc::new(changes);
        self.subscribers.retain(|s| s.send(changes.clone()).is_ok());
    }

    pub(crate) fn notify_changes(&mut self, changes: Changes) {
        self.notify(changes);
    }

    pub(crate) fn wake_outbox(&self) {
        self.outbox_grew.notify_one();
    }
}
