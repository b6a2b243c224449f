//! Bounded waits on a watched value (a sync status): a wait that does not end fails the test.

// A wait that never ends is the test's failure.
#![allow(clippy::panic)]

use std::fmt::Debug;
use std::time::Duration;

use tokio::sync::watch;

/// Waits until the value satisfies `done`; panics naming `what` and the
/// last value after 60 s.
pub async fn wait_for<T: Debug>(
    rx: &mut watch::Receiver<T>,
    what: &str,
    done: impl Fn(&T) -> bool,
) {
    let ok = matches!(
        tokio::time::timeout(Duration::from_secs(60), rx.wait_for(|s| done(s))).await,
        Ok(Ok(_))
    );
    if !ok {
        panic!("timed out waiting for {what}; status {:?}", *rx.borrow());
    }
}
