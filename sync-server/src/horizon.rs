//! The horizon policy: keeps every space's horizon a fixed age behind now.
//!
//! Ops stamped at or below a space's horizon are refused as `stale`, and
//! their clients re-stamp them. Raising it bounds how far in the past a push
//! can reach, and so the undo and redo an old-stamped move can cost.

use std::time::Duration;

use arbor_shared::Stamp;

use crate::db::Db;

/// How often the policy runs for a given keep: often enough that the
/// horizon never lags the age by more than an eighth of it, at most hourly.
pub fn interval(keep: Duration) -> Duration {
    (keep / 8).clamp(Duration::from_secs(1), Duration::from_secs(3600))
}

/// The horizon for `keep` at `now_ms` (milliseconds since the epoch): the
/// lowest stamp of that millisecond, so every op from it on is kept.
pub fn cutoff(now_ms: u64, keep: Duration) -> Stamp {
    let ms = now_ms.saturating_sub(u64::try_from(keep.as_millis()).unwrap_or(u64::MAX));
    Stamp::new(ms << 16, 0)
}

/// Raises horizons every [`interval`] until `stop` turns true.
pub async fn run(db: Db, keep: Duration, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(interval(keep));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        match db.raise_horizons(cutoff(now_ms, keep)).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(spaces = n, "horizons raised"),
            Err(e) => tracing::warn!(error = %e, "raising horizons failed; retrying next tick"),
        }
    }
}
