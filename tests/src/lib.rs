//! End-to-end tests across processes (no library code): Postgres, the sync
//! server, the realtime Worker in workerd (`wrangler dev`), and native
//! clients from the `client` crate.
//!
//! # Layout
//!
//! - `it/`: the tests (`cargo test -p arbor-e2e`); they need the Worker
//!   built and its tools installed: `bash scripts/build-worker.sh`.
//! - `benches/realtime.rs`: push-to-receive latency through workerd next to
//!   the native endpoint.
