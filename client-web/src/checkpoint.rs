//! WAL checkpoints when the worker is idle: the browser has no thread for them, so a commit never copies the log; once writes stop for a moment, one checkpoint runs between calls.
//!
//! The replica runs in WAL mode in the browser too (exclusive locking: the
//! OPFS VFS has no shared memory), so a commit appends to the log without
//! an OPFS flush. SQLite's automatic checkpoint would run inside the commit
//! that takes the log past 1,000 pages, copying and flushing in the middle
//! of an edit (the native client moves it to a thread,
//! `client/src/replica/checkpoint.rs`). Here it is raised to
//! [`BOUND_PAGES`] (the log's bound if writes never pause) and a timer runs
//! a checkpoint [`IDLE_MS`] after the last write.

use std::cell::Cell;
use std::rc::Weak;

use crate::Inner;
use crate::js::sleep_ms;

/// Quiet time after the last write before the checkpoint runs.
pub const IDLE_MS: u32 = 500;

/// Log pages past which a commit checkpoints itself (64 MiB of 4 KiB
/// pages): the bound on the log while writes never pause.
pub const BOUND_PAGES: i64 = 16_000;

/// The idle checkpoint's state (in `Inner`).
#[derive(Default)]
pub(crate) struct IdleCheckpoint {
    /// `Date.now()` of the last write.
    last_write: Cell<f64>,
    /// Invariant: true while a timer task is pending; at most one is.
    scheduled: Cell<bool>,
}

/// Sets the bound on a file replica's connection.
pub(crate) fn configure(conn: &rusqlite::Connection) -> rusqlite::Result<()> {
    conn.pragma_update(None, "wal_autocheckpoint", BOUND_PAGES)
}

/// Notes a write and makes sure a checkpoint runs once writes pause.
pub(crate) fn wrote(inner: &Inner) {
    let c = &inner.checkpoint;
    c.last_write.set(js_sys::Date::now());
    if c.scheduled.replace(true) {
        return;
    }
    let weak: Weak<Inner> = inner.me.clone();
    wasm_bindgen_futures::spawn_local(async move {
        loop {
            sleep_ms(IDLE_MS).await;
            let Some(inner) = weak.upgrade() else { return };
            let quiet = js_sys::Date::now() - inner.checkpoint.last_write.get();
            if quiet < f64::from(IDLE_MS) {
                continue;
            }
            // Busy (a snapshot loading, a call running), or edits not saved
            // yet (`save.rs` commits them first): try again later.
            let Ok(r) = inner.replica.try_borrow() else {
                continue;
            };
            if r.has_held() {
                continue;
            }
            if let Err(e) = r
                .connection()
                .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
            {
                crate::js::warn(&format!("arbor: idle checkpoint failed: {e}"));
            }
            inner.checkpoint.scheduled.set(false);
            return;
        }
    });
}
