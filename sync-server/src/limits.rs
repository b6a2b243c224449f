//! What one client may take of the server: the budget of long streams (snapshots, exports, imports), caps per token and per address, rate limits, and the guard that drops a stalled stream.
//!
//! Every long stream holds a pooled Postgres connection for as long as it
//! runs. The pool also serves every short request (ingest, catch-up,
//! children, readiness), so long streams draw from a budget smaller than
//! the pool, a token has a cap of its own, and a stream whose reader (or
//! writer) stops making progress is dropped: no request holds a connection
//! without making progress, and short requests always find one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arbor_shared::ErrorCode;
use arbor_shared::rate::{Rate, RateMap};
use bytes::Bytes;
use futures_util::{Stream, StreamExt as _};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

/// The limits, as configured (`crate::Config::limits`).
#[derive(Debug, Clone)]
pub struct Limits {
    /// Long streams (snapshot, subtree snapshot, export, import) running at
    /// once, server-wide; each holds a pooled connection.
    pub max_streams: usize,
    /// Long streams one token (`sub` and space) may run at once.
    pub max_streams_per_token: usize,
    /// A stream whose reader takes nothing (or whose writer sends nothing)
    /// for this long is dropped, and its connection released.
    pub stall_timeout: Duration,
    /// Time to read a request's headers (and the idle time of a kept-alive
    /// HTTP connection between requests).
    pub header_read_timeout: Duration,
    /// Time a new realtime socket has to say `hello`.
    pub hello_timeout: Duration,
    /// A realtime socket that sends nothing (clients ping every 20 s) for
    /// this long is closed.
    pub idle_timeout: Duration,
    /// Realtime sockets one token (`sub` and space) may hold at once.
    pub max_sockets_per_token: usize,
    /// TCP connections one client address may hold at once.
    pub max_connections_per_addr: usize,
    /// Pushes per second a token may send over its sockets (sustained).
    pub pushes_per_s: f64,
    /// HTTP requests per second a token may make (sustained).
    pub requests_per_s: f64,
    /// How far above the sustained rate a burst may go, in seconds' worth.
    pub burst_s: f64,
}

impl Limits {
    /// Defaults for a pool of `db_pool` connections: long streams may take
    /// half of it.
    pub fn for_pool(db_pool: usize) -> Limits {
        Limits {
            max_streams: (db_pool / 2).max(1),
            max_streams_per_token: 2,
            stall_timeout: Duration::from_secs(30),
            header_read_timeout: Duration::from_secs(10),
            hello_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(75),
            max_sockets_per_token: 16,
            max_connections_per_addr: 512,
            pushes_per_s: 100.0,
            requests_per_s: 100.0,
            burst_s: 5.0,
        }
    }
}

/// A refusal by a limit: its code and, when waiting helps, how long to wait.
#[derive(Debug, Clone, PartialEq)]
pub struct Refused {
    /// `rate_limited` (this client) or `overloaded` (the server's budget).
    pub code: ErrorCode,
    /// Why, for people.
    pub message: String,
    /// The wait after which a retry can succeed.
    pub retry_after: Duration,
}

/// The budget of long streams: server-wide and per token.
#[derive(Debug)]
pub struct StreamBudget {
    global: Arc<Semaphore>,
    per_token: usize,
    /// Streams running per token key (invariant: no zero entries).
    running: Arc<Mutex<HashMap<String, usize>>>,
}

/// A running long stream's share of the budget; dropping it gives it back.
#[derive(Debug)]
pub struct StreamPermit {
    _global: OwnedSemaphorePermit,
    key: String,
    running: Arc<Mutex<HashMap<String, usize>>>,
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = running.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                running.remove(&self.key);
            }
        }
    }
}

impl StreamBudget {
    /// A budget of `total` streams, `per_token` of them per token.
    pub fn new(total: usize, per_token: usize) -> StreamBudget {
        StreamBudget {
            global: Arc::new(Semaphore::new(total.max(1))),
            per_token: per_token.max(1),
            running: Arc::default(),
        }
    }

    /// A share for a stream of `token_key`, or why not. Never waits: a
    /// request that cannot start now is answered at once (429 or 503 with
    /// `Retry-After`) instead of holding its socket.
    pub fn try_start(&self, token_key: &str) -> Result<StreamPermit, Refused> {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        let mine = running.get(token_key).copied().unwrap_or(0);
        if mine >= self.per_token {
            return Err(Refused {
                code: ErrorCode::RateLimited,
                message: format!("at most {} streams at once per token", self.per_token),
                retry_after: Duration::from_secs(5),
            });
        }
        let permit = self
            .global
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refused {
                code: ErrorCode::Overloaded,
                message: "every stream slot is in use; retry".into(),
                retry_after: Duration::from_secs(5),
            })?;
        *running.entry(token_key.to_string()).or_insert(0) += 1;
        Ok(StreamPermit {
            _global: permit,
            key: token_key.to_string(),
            running: self.running.clone(),
        })
    }
}

/// Token buckets, one per key ([`RateMap`]): `rate` a second, up to
/// `burst` at once, on the process's monotonic clock.
#[derive(Debug)]
pub struct RateLimiter {
    /// Where the buckets' seconds count from.
    epoch: Instant,
    buckets: Mutex<RateMap>,
}

/// Keys kept before full buckets are swept.
const MAX_BUCKETS: usize = 65_536;

impl RateLimiter {
    /// `rate` events a second per key, bursts of `rate * burst_s`.
    pub fn new(rate: f64, burst_s: f64) -> RateLimiter {
        RateLimiter {
            epoch: Instant::now(),
            buckets: Mutex::new(RateMap::new(Rate::new(rate, burst_s), MAX_BUCKETS)),
        }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, RateMap> {
        self.buckets.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn secs(&self, now: Instant) -> f64 {
        now.saturating_duration_since(self.epoch).as_secs_f64()
    }

    /// Charges `units` more to `key` at `now` (work found out after it was
    /// admitted, see [`db_time_units`]). The bucket may go into debt, at
    /// most a minute of the rate: until it is paid back every
    /// [`RateLimiter::take`] of the key waits.
    pub fn charge(&self, key: &str, units: f64, now: Instant) {
        self.map().charge(key, units, self.secs(now));
    }

    /// Takes one event for `key` at `now`, or says how long to wait.
    pub fn take(&self, key: &str, now: Instant) -> Result<(), Duration> {
        self.map()
            .take(key, self.secs(now))
            .map_err(Duration::from_secs_f64)
    }
}

/// Database time a push may take before it costs its token more than the
/// one request or frame that carried it.
pub const FREE_DB_TIME: Duration = Duration::from_millis(10);

/// What a push that held the database for `elapsed` costs on top of the
/// request or frame that carried it: one unit per millisecond past
/// [`FREE_DB_TIME`]. With the default 100 a second, a token can hold the
/// database about a tenth of the time, sustained: an old-stamped move that
/// makes its space undo and redo for a second costs that token ten
/// seconds of pushes.
pub fn db_time_units(elapsed: Duration) -> f64 {
    (elapsed.saturating_sub(FREE_DB_TIME).as_secs_f64() * 1e3).floor()
}

/// Counts per key with a cap (sockets per token, connections per address).
#[derive(Debug)]
pub struct Counter {
    max: usize,
    held: Arc<Mutex<HashMap<String, usize>>>,
}

/// One held unit of a [`Counter`]; dropping it gives it back.
#[derive(Debug)]
pub struct Held {
    key: String,
    held: Arc<Mutex<HashMap<String, usize>>>,
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = held.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.key);
            }
        }
    }
}

impl Counter {
    /// At most `max` a key.
    pub fn new(max: usize) -> Counter {
        Counter {
            max: max.max(1),
            held: Arc::default(),
        }
    }

    /// One more for `key`, unless it holds `max` already.
    pub fn try_hold(&self, key: &str) -> Option<Held> {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let n = held.entry(key.to_string()).or_insert(0);
        if *n >= self.max {
            if *n == 0 {
                held.remove(key);
            }
            return None;
        }
        *n += 1;
        Some(Held {
            key: key.to_string(),
            held: self.held.clone(),
        })
    }
}

/// A TCP connection's share of its address's cap, shared with the
/// WebSocket it may become (released when both are gone).
#[derive(Debug, Clone)]
pub struct ConnHold(pub Arc<Held>);

/// `stream`, dropped if its reader stops taking chunks for `stall`: the
/// chunks pass through a channel of two, and a send that waits longer than
/// `stall` ends the pump, which drops `stream` (and the connection it
/// holds) and `guard`; the reader then sees the body end early (a cut
/// snapshot, which its trailer check catches).
pub fn stall_guarded<S, G>(
    stream: S,
    stall: Duration,
    guard: G,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static
where
    S: Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
    G: Send + 'static,
{
    let (tx, mut rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(2);
    tokio::spawn(async move {
        let _guard = guard;
        let mut stream = std::pin::pin!(stream);
        while let Some(chunk) = stream.next().await {
            match tokio::time::timeout(stall, tx.send(chunk)).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return, // the reader went away
                Err(_) => {
                    tracing::info!(stall_s = stall.as_secs(), "dropping a stalled stream");
                    metrics::counter!(crate::metrics::STREAMS_STALLED).increment(1);
                    return;
                }
            }
        }
    });
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// The error text of a body that stalled (see [`stall_limited`]).
pub const STALLED: &str = "stalled";

/// `body` as a stream that ends with an error if no chunk arrives for
/// `stall` (a writer that sends its headers, then nothing).
pub fn stall_limited<S, E>(
    body: S,
    stall: Duration,
) -> impl Stream<Item = Result<Bytes, String>> + Send + 'static
where
    S: Stream<Item = Result<Bytes, E>> + Send + 'static,
    E: std::fmt::Display,
{
    futures_util::stream::unfold(Some(Box::pin(body)), move |state| async move {
        let mut body = state?;
        match tokio::time::timeout(stall, body.next()).await {
            Ok(Some(chunk)) => Some((chunk.map_err(|e| e.to_string()), Some(body))),
            Ok(None) => None,
            Err(_) => {
                metrics::counter!(crate::metrics::STREAMS_STALLED).increment(1);
                Some((Err(STALLED.to_string()), None))
            }
        }
    })
}
