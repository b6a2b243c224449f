//! Arbor's pure core: identifiers, the hybrid logical clock, ops, sibling
//! order keys and the tree CRDT (Kleppmann et al., "A highly-available move
//! operation for replicated trees", 2021). No I/O, no async runtime, no
//! wall-clock reads: time and randomness are passed in. Compiles for native
//! targets and `wasm32-unknown-unknown`.
//!
//! # Layout
//!
//! - [`id`]: [`NodeId`] (UUID, with `ROOT` and `TRASH`) and [`ReplicaId`].
//! - [`clock`]: [`Hlc`], [`Clock`] (tick / observe / drift check) and
//!   [`Stamp`], the op id and total order.
//! - [`op`]: [`Op`] (`Move`, `Set`) with its stable JSON shape and limits.
//! - [`error`]: [`ErrorCode`], the one table of error codes (HTTP status,
//!   close code, what a client does about each).
//! - [`http`]: the JSON bodies of the HTTP API that several components
//!   share (ingest, catch-up, group ingest, notices).
//! - [`protocol`]: the realtime wire protocol (JSON frames, limits).
//! - [`room`]: the realtime room of one thoughtspace as a pure state machine
//!   (used by the native endpoint and the Durable Object).
//! - [`key`]: [`OrderKey`] and [`KeyGen`], fractional sibling keys with
//!   per-replica jitter.
//! - [`tree`]: the CRDT ([`Tree`]) over the [`TreeStore`] trait, and the
//!   in-memory [`MemoryStore`].
//! - [`snapshot`]: the snapshot file format (framing decoder and encoder,
//!   binary `COPY` rows), for cold starts, exports and replica uploads.
//! - [`subtree`]: the subtree feed's projection (which nodes a change
//!   brings into, moves within, or takes out of a subtree) and its frames.
//! - [`rate`]: token buckets with time passed in (per-token rate limits
//!   of the sync server and the Durable Object).
//! - [`auth`]: token verification and HS256 minting (RFC 7519), shared by
//!   the sync server and the Durable Object.
//! - [`keys`]: the key set tokens are checked with (HS256 secrets, Ed25519
//!   keys of a JWKS), issuer and audience, and the revocation list.
//! - [`sim`]: the [`sim::Action`] enum and a network of replicas that drives
//!   property tests, regression tests and the differential tests.
//! - `fuzz` (feature `fuzz`): fuzz targets over bytes, run by the stable
//!   tests with a fixed budget and by the cargo-fuzz targets in `fuzz/`.

#![forbid(unsafe_code)]

pub mod auth;
pub mod clock;
pub mod error;
#[cfg(feature = "fuzz")]
pub mod fuzz;
pub mod http;
pub mod id;
pub mod key;
pub mod keys;
pub mod op;
pub mod protocol;
pub mod rate;
pub mod room;
pub mod sim;
pub mod snapshot;
pub mod subtree;
pub mod tree;

pub use clock::{Clock, ClockError, Hlc, Stamp};
pub use error::{Disposition, ErrorCode};
pub use id::{NodeId, ReplicaId};
pub use key::{KeyGen, OrderKey};
pub use op::{MoveOp, Op, OpError, SetOp};
pub use tree::{
    Applied, Child, Effect, LogEntry, MemoryStore, Payload, Place, Tree, TreeError, TreeStore,
    WalkBudget, walk_is_ancestor,
};
