//! [`Readers`]: reads (snapshots, exports, children, catch-up) served by hot standbys within a lag bound, else by the primary; the lag monitor.
//!
//! Lag is measured in time, from WAL positions: every [`SAMPLE_EVERY`] the
//! monitor records the primary's `pg_current_wal_lsn()` with the time, then
//! reads each standby's `pg_last_wal_replay_lsn()`. A standby that has
//! replayed up to a position the primary had at time `t` holds everything
//! committed before `t`, so its lag is at most `now - t` for the latest
//! such sample. An idle primary gives lag 0 (nothing to replay), unlike
//! `pg_last_xact_replay_timestamp()`, which grows while nothing happens.
//! A standby is used while its lag is within the bound; one that cannot be
//! reached, is not in recovery (promoted) or lags more is skipped until a
//! later sample says otherwise.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;

use super::{Db, DbError, RejectCode};

/// How often the monitor samples WAL positions.
const SAMPLE_EVERY: Duration = Duration::from_millis(250);
/// A sample query that takes longer counts as unreachable.
const SAMPLE_TIMEOUT: Duration = Duration::from_secs(2);
/// Lag of a standby that is not usable (unreachable, promoted, unmeasured).
const DOWN: u64 = u64::MAX;

use crate::metrics::{READS, STANDBY_LAG};

/// One hot standby.
struct Standby {
    db: Db,
    /// Its lag in milliseconds at the last sample; [`DOWN`] when unusable.
    lag_ms: AtomicU64,
}

/// Where reads go: the primary, and the standbys of `--read-replica-url`.
pub struct Readers {
    primary: Db,
    standbys: Vec<Standby>,
    /// A standby lagging more than this is skipped.
    max_lag: Duration,
    /// Round-robin position over the usable standbys.
    next: AtomicUsize,
}

impl std::fmt::Debug for Readers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readers")
            .field("standbys", &self.standbys.len())
            .field("max_lag", &self.max_lag)
            .finish_non_exhaustive()
    }
}

/// Whether an answer from a standby is one the primary might answer
/// differently because the standby is behind or gone: then the primary
/// is asked.
fn ask_primary_instead(e: &DbError) -> bool {
    match e {
        // Unreachable, or the read was cancelled by a recovery conflict
        // (SQLSTATE 40001 on a standby): not the request's fault.
        DbError::Pool(_) | DbError::Postgres(_) => true,
        // A space created since the standby's last replay.
        DbError::Rejected { code, .. } => *code == RejectCode::UnknownSpace,
        _ => false,
    }
}

impl Readers {
    /// `standbys` are unusable until [`Readers::sample`] has measured them.
    pub fn new(primary: Db, standbys: Vec<Db>, max_lag: Duration) -> Readers {
        Readers {
            primary,
            standbys: standbys
                .into_iter()
                .map(|db| Standby {
                    db,
                    lag_ms: AtomicU64::new(DOWN),
                })
                .collect(),
            max_lag,
            next: AtomicUsize::new(0),
        }
    }

    /// A usable standby, round robin, if any.
    fn pick(&self) -> Option<usize> {
        let n = self.standbys.len();
        let bound = u64::try_from(self.max_lag.as_millis()).unwrap_or(u64::MAX - 1);
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|i| (start + i) % n)
            .find(|&i| self.standbys[i].lag_ms.load(Ordering::Relaxed) <= bound)
    }

    /// Runs `read` on a usable standby, and on the primary when there is
    /// none, when the standby fails in a way the primary might not (see
    /// `ask_primary_instead`; the standby is then skipped until the
    /// monitor sees it again), or when `fresh` says the standby's answer is
    /// behind what the caller already has.
    ///
    /// `read` returns a boxed future tied to `self`'s borrow: an async
    /// closure over `&Db` would be higher-ranked, and its future's `Send`
    /// cannot be proven for axum's handlers (rust-lang/rust#110338).
    pub async fn read<'r, T>(
        &'r self,
        read: impl Fn(&'r Db) -> BoxFuture<'r, Result<T, DbError>>,
        fresh: impl Fn(&T) -> bool,
    ) -> Result<T, DbError> {
        if let Some(i) = self.pick() {
            match read(&self.standbys[i].db).await {
                Ok(answer) if fresh(&answer) => {
                    metrics::counter!(READS, "source" => "standby").increment(1);
                    return Ok(answer);
                }
                Ok(_) => {}
                Err(e) if ask_primary_instead(&e) => {
                    if !matches!(e, DbError::Rejected { .. }) {
                        tracing::warn!(standby = i, error = %e, "standby read failed; skipping it");
                        self.standbys[i].lag_ms.store(DOWN, Ordering::Relaxed);
                    }
                }
                Err(e) => return Err(e),
            }
        }
        metrics::counter!(READS, "source" => "primary").increment(1);
        read(&self.primary).await
    }

    /// One sample: the primary's WAL position, then each standby's replay
    /// position; updates each standby's lag. `history` holds earlier
    /// samples (time, primary position), oldest first.
    pub async fn sample(&self, history: &mut VecDeque<(Instant, u64)>) {
        if self.standbys.is_empty() {
            return;
        }
        let now = Instant::now();
        match tokio::time::timeout(SAMPLE_TIMEOUT, position(&self.primary, false)).await {
            Ok(Ok(Some(lsn))) => history.push_back((now, lsn)),
            // Without the primary's position no lag can be told; the last
            // one measured stands (the primary is needed for writes anyway).
            _ => tracing::warn!("cannot read the primary's WAL position"),
        }
        // Enough history to tell any lag up to twice the bound.
        let keep = (self.max_lag * 2).max(Duration::from_secs(2));
        while history.len() > 1 && history.front().is_some_and(|(t, _)| now - *t > keep) {
            history.pop_front();
        }
        for (i, standby) in self.standbys.iter().enumerate() {
            let replayed =
                match tokio::time::timeout(SAMPLE_TIMEOUT, position(&standby.db, true)).await {
                    Ok(Ok(Some(lsn))) => Some(lsn),
                    Ok(Ok(None)) => {
                        tracing::warn!(standby = i, "not in recovery (promoted?): not used");
                        None
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(standby = i, error = %e, "standby unreachable");
                        None
                    }
                    Err(_) => None,
                };
            let lag = replayed.and_then(|lsn| {
                history
                    .iter()
                    .rev()
                    .find(|(_, primary)| *primary <= lsn)
                    .map(|(t, _)| now.saturating_duration_since(*t))
            });
            let ms = lag.map_or(DOWN, |l| u64::try_from(l.as_millis()).unwrap_or(DOWN - 1));
            standby.lag_ms.store(ms, Ordering::Relaxed);
            metrics::gauge!(STANDBY_LAG, "standby" => i.to_string())
                .set(lag.map_or(-1.0, |l| l.as_secs_f64()));
        }
    }

    /// Samples every [`SAMPLE_EVERY`] until `stop` turns true, going on
    /// from `history` (that of earlier [`Readers::sample`] calls).
    pub async fn monitor(
        self: Arc<Self>,
        mut history: VecDeque<(Instant, u64)>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        if self.standbys.is_empty() {
            return;
        }
        let mut tick = tokio::time::interval(SAMPLE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            self.sample(&mut history).await;
        }
    }
}

/// The primary's current WAL position, or a standby's replay position
/// (`None` if it is not in recovery), as a byte offset.
async fn position(db: &Db, standby: bool) -> Result<Option<u64>, DbError> {
    let client = db.client().await?;
    let sql = if standby {
        "SELECT CASE WHEN pg_is_in_recovery()
                THEN (pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::bigint END"
    } else {
        "SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint"
    };
    let row = client.query_one(sql, &[]).await?;
    Ok(row
        .get::<_, Option<i64>>(0)
        .and_then(|v| u64::try_from(v).ok()))
}
