//! Saving held edits: the replica runs with write-behind (an edit is shown when applied, `Replica::set_write_behind`), and this timer commits them once writes pause, or at most [`SAVE_MAX_MS`] after the first, then lets the sync loop push them and resolves `saved()`.
//!
//! A commit costs the same OPFS writes whether it carries one edit or
//! fifty, so edits made in a burst (typing, a paste, a script) share one;
//! and the page never waits for it to see its edit. The window between
//! shown and saved is what a crash of the tab can lose (docs/BROWSER.md).

use std::cell::{Cell, RefCell};
use std::rc::Weak;

use arbor_shared::ErrorCode;
use futures_channel::oneshot;
use wasm_bindgen::JsValue;

use crate::Inner;
use crate::js::{err, sleep_ms};

/// Quiet time after the last edit before held edits are committed.
pub const SAVE_IDLE_MS: f64 = 2.0;

/// The longest an edit stays held while edits keep coming.
pub const SAVE_MAX_MS: f64 = 25.0;

/// The save timer's state (in `Inner`).
#[derive(Default)]
pub(crate) struct SaveTimer {
    /// `Date.now()` of the last edit.
    last_edit: Cell<f64>,
    /// `Date.now()` of the first edit held now.
    first_held: Cell<f64>,
    /// Invariant: true while a timer task is pending; at most one is.
    scheduled: Cell<bool>,
    /// `saved()` calls waiting for the next commit: each gets its outcome.
    waiters: RefCell<Vec<oneshot::Sender<Result<(), JsValue>>>>,
}

/// Notes an edit (held by the replica) and makes sure it is committed soon.
pub(crate) fn edited(inner: &Inner) {
    let s = &inner.save;
    let now = js_sys::Date::now();
    s.last_edit.set(now);
    if s.scheduled.replace(true) {
        return;
    }
    s.first_held.set(now);
    let weak: Weak<Inner> = inner.me.clone();
    wasm_bindgen_futures::spawn_local(async move {
        loop {
            sleep_ms(1).await;
            let Some(inner) = weak.upgrade() else { return };
            let s = &inner.save;
            let now = js_sys::Date::now();
            if now - s.last_edit.get() < SAVE_IDLE_MS && now - s.first_held.get() < SAVE_MAX_MS {
                continue;
            }
            s.scheduled.set(false);
            save_now(&inner);
            return;
        }
    });
}

/// Commits what the replica holds (unless a snapshot is loading: its
/// transaction committed the held edits when it began), then wakes the
/// sync loop and answers every waiting `saved()`.
pub(crate) fn save_now(inner: &Inner) {
    let outcome = match inner.replica.try_borrow_mut() {
        Ok(mut r) => r.commit_held().map(|_| ()).map_err(|e| {
            err(
                ErrorCode::Storage,
                &format!("the edits were not saved: {e}"),
            )
        }),
        Err(_) => Ok(()),
    };
    if outcome.is_err() {
        // A commit that failed rolled the held edits back: the page was
        // told to reload (a `reset` change) and every waiter hears why.
        inner.flush_changes();
    }
    for w in inner.save.waiters.borrow_mut().drain(..) {
        let _ = w.send(outcome.clone());
    }
    inner.wake_sync();
    inner.set_status(|_| {});
}

/// Resolves once every edit made so far is committed (at once when none is
/// held), or fails with the commit's error.
pub(crate) async fn saved(inner: &Inner) -> Result<(), JsValue> {
    let held = inner.replica.try_borrow().is_ok_and(|r| r.has_held());
    if !held {
        return Ok(());
    }
    let (tx, rx) = oneshot::channel();
    inner.save.waiters.borrow_mut().push(tx);
    rx.await
        .unwrap_or_else(|_| Err(err(ErrorCode::Storage, "the replica closed before saving")))
}
