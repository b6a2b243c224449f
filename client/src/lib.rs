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
//! - [`schema`]: the SQLite schema and its migrations (the value index's
//!   triggers among them).
//! - [`normalize`]: the value index's normalization of field values.
//! - [`outline`]: outlines from other outliners (OPML, Markdown, Logseq,
//!   em, Roam JSON) read into items, and subtrees written as Markdown or
//!   OPML.
//! - [`snapshot`]: cold start from a snapshot stream (one transaction,
//!   indexes built after, outbox rebased) and the replica encoded as a
//!   snapshot file (fork).
//! - [`image`]: cold start from a replica image (the server's finished
//!   SQLite file of the space): its headers, the streaming zstd decoder
//!   and its checks, building one (the server), installing one.
//! - [`session`]: the sync session, the client side of the protocol with no
//!   I/O (cold-start decision, hello, push window, acks, what each error
//!   code means, backoff), shared by the native and the browser driver.
//! - [`sync`]: the tokio driver of the session (WebSocket, HTTP snapshot,
//!   timers) and its entry points [`sync_forever`] and [`sync_once`].
//! - [`fork`]: the replica uploaded as a new thoughtspace.
//! - `src/bin/arbor.rs`: the `arbor` CLI over this library.

#[cfg(feature = "native")]
pub mod fork;
pub mod image;
pub mod normalize;
pub mod outline;
pub mod replica;
pub mod schema;
pub mod session;
pub mod snapshot;
pub mod store;
#[cfg(feature = "native")]
pub mod sync;

pub use replica::{
    CallDone, Conflict, ConflictKind, Holder, Kept, LastMove, MAX_CALLS, MAX_HOLDERS_PAGE,
    MAX_UNDO_STEPS, NodeView, OpenOptions, OutboxEntry, Position, RejectedOp, Replica,
    ReplicaError, ReplicaSize, RevertReport, RowCount, SearchHit, SubtreeFrame, UndoReport,
};
pub use session::{SyncReport, SyncState, SyncStatus};
pub use store::Changes;
#[cfg(feature = "native")]
pub use {
    fork::fork,
    sync::{
        PresenceSender, SharedReplica, SyncConfig, SyncError, presence_channel, sync_forever,
        sync_once,
    },
};
