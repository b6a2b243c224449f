//! End-to-end harness and tests across processes: Postgres, the sync
//! server, the realtime Worker in workerd (`wrangler dev`), and native
//! clients from the `client` crate, with faults injected.
//!
//! # Layout
//!
//! - [`proxy`]: a TCP proxy that partitions, cuts, delays and drops.
//! - [`server`]: a sync server that can be killed like a crash and
//!   restarted on the same address.
//! - `it/`: the tests (`cargo test -p arbor-e2e`): the Worker in workerd
//!   (needs `bash scripts/build-worker.sh`), the fault scenarios (short
//!   tier in CI; `ARBOR_SOAK_SECS` for the long one), fuzzing with a fixed
//!   budget, load, backup and restore.
//! - `benches/realtime.rs`: push-to-receive latency through workerd next to
//!   the native endpoint.

pub mod proxy;
pub mod server;

/// Seconds since the epoch (token times).
pub fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
