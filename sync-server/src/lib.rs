//! Arbor's sync server. Today: the database layer over Postgres, the source
//! of truth (the HTTP and realtime server arrives with its own issue).
//!
//! # Layout
//!
//! - [`db`]: the connection pool, the embedded migration runner, the typed
//!   call of the `apply_ops` PL/pgSQL function (the CRDT apply), catch-up by
//!   seq and ordered children pages. The SQL lives in `migrations/` at the
//!   repository root; its contract is `migrations/README.md`.

#![forbid(unsafe_code)]

pub mod db;
