//! WAL checkpoints off the edit path: a thread with its own connection copies the log into the database file once it has grown, so a local edit never waits for that copy and its fsync.
//!
//! SQLite's automatic checkpoint runs inside the commit that takes the log
//! past 1,000 pages. On a replica of a million nodes that commit paid for
//! the copy of every page the last thousand edits touched: a local move's
//! p99 was 10 to 14 ms against a p50 of 0.2 ms (`cargo bench -p
//! arbor-client --bench client`, docs/BENCHMARKS.md). Here the commit only
//! wakes the thread; a passive checkpoint on another connection never
//! blocks the writer. The committing connection still checkpoints itself
//! past [`INLINE_PAGES`], so the log stays bounded if the thread falls
//! behind. Written here because SQLite offers the pieces (`wal_hook`,
//! `wal_checkpoint_v2`) and no crate puts them together.

use std::ffi::c_int;
use std::sync::mpsc::{SyncSender, sync_channel};
use std::thread::JoinHandle;

use rusqlite::hooks::Wal;
use rusqlite::wal::CheckpointMode;
use rusqlite::{Connection, OpenFlags};

/// Log pages (4 KiB each) past which a commit wakes the thread: SQLite's
/// own automatic threshold.
pub(super) const WAKE_PAGES: c_int = 1_000;

/// Log pages past which the committing connection checkpoints itself, as
/// SQLite would by default: the bound on the log (64 MiB).
pub(super) const INLINE_PAGES: c_int = 16_000;

/// The checkpoint thread of one replica file.
pub(super) struct Checkpointer {
    /// Wakes the thread (capacity 1: wakes while it works coalesce).
    /// Invariant: the connection's WAL hook holds the only other sender, so
    /// the thread ends once both are gone (see `Replica`'s `Drop`).
    wake: Option<SyncSender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Starts the thread for `conn`'s file and installs the WAL hook that
    /// wakes it; `None` (SQLite's automatic checkpoints stay) for a
    /// database in memory or not in WAL mode.
    pub(super) fn start(conn: &mut Connection) -> rusqlite::Result<Option<Checkpointer>> {
        let path = match conn.path() {
            Some(p) if !p.is_empty() => p.to_owned(),
            _ => return Ok(None),
        };
        let mode: String = conn.pragma_query_value(None, "journal_mode", |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Ok(None);
        }
        let worker = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        let (wake, woken) = sync_channel::<()>(1);
        let spawned = std::thread::Builder::new()
            .name("arbor-checkpoint".into())
            .spawn(move || {
                while woken.recv().is_ok() {
                    if let Err(e) = worker.wal_checkpoint_v2(None::<&str>, CheckpointMode::PASSIVE)
                    {
                        tracing::warn!(error = %e, "background checkpoint failed");
                    }
                }
            });
        let thread = match spawned {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "no checkpoint thread: SQLite checkpoints in the commit");
                return Ok(None);
            }
        };
        let hook_wake = wake.clone();
        conn.wal_hook(Some(move |wal: &mut Wal, pages: c_int| {
            if pages >= INLINE_PAGES {
                wal.checkpoint()?;
            } else if pages >= WAKE_PAGES {
                // Full: the thread is already due to run.
                let _ = hook_wake.try_send(());
            }
            Ok(())
        }))?;
        Ok(Some(Checkpointer {
            wake: Some(wake),
            thread: Some(thread),
        }))
    }

    /// Removes `conn`'s hook, then ends the thread after the checkpoint it
    /// may be running.
    pub(super) fn stop(mut self, conn: &mut Connection) {
        let _ = conn.wal_hook(None::<fn(&mut Wal, c_int) -> rusqlite::Result<()>>);
        self.wake.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
