//! The snapshot file format (`ARBORSNP`, byte for byte in `docs/PROTOCOL.md`):
//! a sans-I/O framing decoder and encoder, and a codec for the rows of its
//! Postgres binary `COPY` sections.
//!
//! The same bytes are a cold-start snapshot, an export, and the upload that
//! creates a thoughtspace from a replica, so the server, the native client
//! and the browser share this one implementation. It is written here rather
//! than taken from `postgres-protocol` because that crate decodes only a
//! live `COPY` from a connection, and the decoder must also run in wasm.//!
//! # Layout
//!
//! - `mod.rs`: constants, [`SnapshotHeader`], [`Trailer`], [`SnapshotError`],
//!   [`Event`].
//! - `decoder.rs`: [`Decoder`].
//! - `encoder.rs`: [`Encoder`].
//! - `copy.rs`: rows of the binary `COPY` sections.
//! - `field.rs`: field encodings.

pub mod copy;
mod decoder;
mod encoder;
pub mod field;

pub use decoder::Decoder;
pub use encoder::Encoder;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{NodeId, ReplicaId, Stamp};

/// The file's first 8 bytes.
pub const MAGIC: &[u8; 8] = b"ARBORSNP";
/// The format version this code reads and writes.
pub const VERSION: u32 = 1;
/// Largest header JSON accepted (room for the replica owners of a space
/// with tens of thousands of replica ids).
pub const MAX_HEADER_BYTES: u32 = 4 << 20;
/// Largest section chunk accepted (writers use about 64 KiB).
pub const MAX_CHUNK_BYTES: u32 = 16 << 20;
/// Section tags, in file order.
pub const SECTIONS: [u8; 3] = [b'N', b'P', b'L'];
/// Size of the trailer: tag, four u64, u32.
pub const TRAILER_BYTES: usize = 1 + 4 * 8 + 4;

/// The JSON header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotHeader {
    /// The thoughtspace.
    pub space: String,
    /// Every op with seq at or below it is in the snapshot's state.
    pub head_seq: u64,
    /// The log horizon, if any: ops at or below it are not in the log.
    pub horizon: Option<Stamp>,
    /// Rows in the nodes section.
    pub nodes: u64,
    /// Rows in the payloads section.
    pub payloads: u64,
    /// Rows in the log section.
    pub log: u64,
    /// For a subtree snapshot: its root (whose own row is in the nodes
    /// section, with its place).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<NodeId>,
    /// Replica owners: each replica id of the space that a token subject
    /// owns, and that subject (who made the log's ops; an import keeps
    /// them). Absent when none.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub owners: BTreeMap<ReplicaId, String>,
}

/// The trailer's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trailer {
    /// Rows per section (nodes, payloads, log).
    pub counts: [u64; 3],
    /// Bytes before the trailer.
    pub total: u64,
    /// CRC-32 (IEEE) of those bytes.
    pub crc: u32,
}

/// Why a snapshot stream is refused. A reader that gets any of these must
/// discard everything it took from the stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    /// Not an `ARBORSNP` stream.
    #[error("bad magic")]
    BadMagic,
    /// A version this code does not read.
    #[error("unsupported version {0}")]
    Version(u32),
    /// The header is too large or not the expected JSON.
    #[error("bad header: {0}")]
    BadHeader(String),
    /// A section tag other than the next expected one.
    #[error("unexpected tag {0:#04x}")]
    BadTag(u8),
    /// A chunk longer than [`MAX_CHUNK_BYTES`].
    #[error("chunk of {0} bytes is too large")]
    ChunkTooLarge(u32),
    /// The stream ended before its trailer.
    #[error("stream cut after {0} bytes")]
    Cut(u64),
    /// Byte count or CRC in the trailer disagree with the stream.
    #[error("checksum mismatch")]
    Checksum,
    /// Row counts disagree (trailer vs header, or vs the rows decoded).
    #[error("row counts disagree: {0}")]
    Counts(String),
    /// Bytes after the trailer.
    #[error("trailing bytes after the trailer")]
    Trailing,
    /// A section's `COPY` data is malformed.
    #[error("bad COPY data: {0}")]
    BadCopy(String),
}

/// What the decoder found, in stream order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The header (always first).
    Header(SnapshotHeader),
    /// A section starts (`N`, `P`, then `L`).
    SectionStart(u8),
    /// Bytes of the current section's `COPY` stream (any split).
    Data(Vec<u8>),
    /// The current section ended.
    SectionEnd(u8),
    /// The trailer, verified against the bytes and the header's counts.
    End(Trailer),
}
