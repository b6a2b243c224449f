//! End-to-end harness and tests across processes: Postgres, the sync
//! server, the realtime Worker in workerd (`wrangler dev`), and native
//! clients from the `client` crate, with faults injected.
//!
//! # Layout
//!
//! - [`balancer`]: a round-robin TCP load balancer in front of several
//!   servers: skips a backend that refuses, backends marked down or up.
//! - [`process`]: the `arbor-server serve` binary as a child process,
//!   stopped by SIGTERM (a drain) or SIGKILL (a crash).
//! - [`proxy`]: a TCP proxy that partitions, cuts, delays and drops.
//! - [`server`]: a sync server that can be killed like a crash and
//!   restarted on the same address.
//! - [`stack`]: a migrated database, the sync server's settings for
//!   tests, a server serving them.
//! - [`ws`]: a raw realtime client: sockets, hello, frames.
//! - `it/`: the tests (`cargo test -p arbor-e2e`): the Worker in workerd
//!   (needs `bash scripts/build-worker.sh`), the fault scenarios (short
//!   tier in CI; `ARBOR_SOAK_SECS` for the long one), fuzzing with a fixed
//!   budget, load, backup and restore.
//! - `benches/realtime.rs`: push-to-receive latency through workerd next to
//!   the native endpoint.

pub mod balancer;
pub mod process;
pub mod proxy;
pub mod server;
pub mod stack;
pub mod ws;

pub use arbor_testkit::env::now_s;
