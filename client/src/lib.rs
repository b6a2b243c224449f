//! Arbor's client: a full local replica of a thoughtspace in SQLite that
//! works offline, and the sync client that keeps it converged with the
//! server. The CRDT is the shared core's ([`arbor_shared::Tree`]) running
//! against SQLite through [`arbor_shared::TreeStore`], so nothing loads the
//! whole tree into memory.
//!
//! # Layout
//!
//! - [`replica`]: [`Replica`], the local API (create, move, delete, restore,
//!   set, children pages, ancestors, subtree walks), the outbox, remote
//!   apply, change notifications, export.
//! - [`store`]: [`store::SqliteStore`], the storage trait over the replica's
//!   tables, and [`Changes`].
//! - [`schema`]: the SQLite schema and its migrations.
//! - [`snapshot`]: cold start from a snapshot stream (one transaction,
//!   indexes built after, outbox rebased) and the replica encoded as a
//!   snapshot file (fork).
//! - [`sync`]: the realtime sync client (tokio): `hello`, catch-up, pushes,
//!   acks, reconnect with backoff, observable [`sync::SyncStatus`].
//! - `src/bin/arbor.rs`: the `arbor` CLI over this library.

pub mod replica;
pub mod schema;
pub mod snapshot;
pub mod store;
#[cfg(feature = "native")]
pub mod sync;

pub use replica::{NodeView, OpenOptions, Position, Replica, ReplicaError};
pub use store::Changes;
#[cfg(feature = "native")]
pub use sync::{
    SharedReplica, SyncConfig, SyncError, SyncState, SyncStatus, fork, sync_forever, sync_once,
};
