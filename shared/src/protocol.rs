//! The realtime wire protocol: JSON text frames tagged by `type`, version 1.
//! Exact shapes are in `docs/PROTOCOL.md`.
//!
//! Client to server: `hello`, `push`, `presence`, `ping`. Server to client:
//! `welcome`, `ops`, `subtree`, `ack`, `error`, `snapshot_required`,
//! `peers`, `presence`, `pong`. Decoding
//! checks the frame size first and never panics; every refusal is a typed
//! [`ProtocolError`].

use serde::{Deserialize, Serialize};

use crate::clock::Stamp;
use crate::error::ErrorCode;
use crate::id::{NodeId, ReplicaId};
use crate::key::OrderKey;
use crate::op::Op;

/// The protocol version `hello` must carry.
pub const VERSION: u32 = 1;
/// Largest frame accepted or sent, in bytes (the Workers platform limit).
pub const MAX_FRAME_BYTES: usize = 1 << 20;
/// Most ops in one `push`.
pub const MAX_PUSH_OPS: usize = 1_000;
/// Largest presence state, in bytes of its JSON as the server encodes it.
pub const MAX_PRESENCE_BYTES: usize = 2_048;

/// A frame from a client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientMsg {
    /// First frame: who is here and what it has.
    Hello {
        /// Protocol version ([`VERSION`]).
        v: u32,
        /// The client's replica.
        replica: ReplicaId,
        /// Highest seq it has applied (`None`: nothing yet).
        cursor: Option<u64>,
        /// A subtree replica's root: the connection gets `subtree` frames
        /// (its subtree's changes) instead of `ops`. A token with a `root`
        /// claim always does, with this root absent or equal to its claim.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        root: Option<NodeId>,
    },
    /// A batch of local ops to commit.
    Push {
        /// Client-chosen id, echoed by `ack` or `error`.
        batch: u64,
        /// The ops (at most [`MAX_PUSH_OPS`]).
        ops: Vec<Op>,
    },
    /// The connection's presence: relayed to the connections that see it,
    /// never stored; `null` clears it. At most [`MAX_PRESENCE_BYTES`].
    Presence {
        /// The state (`None`: none).
        state: Option<PresenceState>,
    },
    /// Keep-alive; answered by `pong`. A struct variant, not a unit one:
    /// serde's `deny_unknown_fields` does not reach a unit variant of an
    /// internally tagged enum, and `{"type": "ping"}` with other fields
    /// must be refused like any client frame.
    Ping {},
}

/// Why an op is in an answer or a feed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// Committed from a client's push (or, in an ingest answer: by this
    /// request).
    #[default]
    New,
    /// In an ingest answer only: stored before (its old seq), nothing
    /// changed. Never in a feed.
    Duplicate,
    /// Appended by the server's restore rule (replica 0).
    Restore,
}

/// A committed op with its seq and origin, as catch-up and the live feed
/// carry it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
// Server to client: unknown fields are ignored, so the server can add
// fields within a version (as it added `author`).
pub struct SeqOp {
    /// Its place in the thoughtspace's sequence.
    pub seq: u64,
    /// The op.
    pub op: Op,
    /// `new` or `restore` (absent: `new`).
    #[serde(default)]
    pub origin: Origin,
    /// The token subject that owns the op's replica id in this space (who
    /// made it); absent for the server's restores and for replica ids
    /// nobody claimed (ops from before owners were recorded, or pushed by
    /// the server's own callers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
}

impl SeqOp {
    /// The op at `seq`, its origin told by its author (replica 0, the
    /// server, authors only restores).
    pub fn new(seq: u64, op: Op) -> SeqOp {
        let origin = if op.stamp().replica == ReplicaId::SERVER {
            Origin::Restore
        } else {
            Origin::New
        };
        SeqOp {
            seq,
            op,
            origin,
            author: None,
        }
    }

    /// The same op, made by `author` (see [`SeqOp::author`]).
    #[must_use]
    pub fn by(mut self, author: Option<String>) -> SeqOp {
        self.author = author;
        self
    }
}

/// What a connection shows the others of itself: ephemeral (relayed by the
/// room, never written to the database), gone when the connection closes
/// or when it is not set again within the room's time to live. Every
/// field is optional; keys the server does not know are dropped.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceState {
    /// A display name the application chose (the token's subject is on
    /// the peer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The node the user's cursor is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub focus: Option<NodeId>,
    /// The nodes the user has selected.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub selection: Vec<NodeId>,
    /// Whether the user is editing `focus`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub editing: bool,
    /// Anything else, as JSON (the whole state stays within
    /// [`MAX_PRESENCE_BYTES`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
}

impl PresenceState {
    /// Its size on the wire, in bytes.
    pub fn encoded_len(&self) -> usize {
        serde_json::to_string(self).map_or(usize::MAX, |s| s.len())
    }
}

/// Someone connected to the thoughtspace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
// Server to client: unknown fields are ignored (see `SeqOp`).
pub struct Peer {
    /// The connection (unique in the room while it is open).
    pub conn: u64,
    /// The token's subject.
    pub sub: String,
    /// Always `None` on the wire now (kept for compatibility): a replica id
    /// belongs to the first user who pushes with it, so showing it before
    /// its first push would let another user claim it (replica owners,
    /// docs/PROTOCOL.md).
    pub replica: Option<ReplicaId>,
    /// Its presence, if it set one (see [`ServerMsg::Presence`] for changes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<PresenceState>,
}

/// A frame from the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
// Unknown fields are ignored (see `SeqOp`); an unknown `type` is an error.
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMsg {
    /// Answer to `hello`; catch-up `ops` frames follow.
    Welcome {
        /// The thoughtspace.
        space: String,
        /// Its head seq when the hello was handled.
        head_seq: u64,
        /// Its log horizon.
        horizon: Option<Stamp>,
        /// Who is connected (this connection included).
        peers: Vec<Peer>,
        /// This connection's id (as in [`Peer::conn`]), so a client can
        /// tell itself apart in `peers`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        conn: Option<u64>,
    },
    /// Committed ops in seq order, catch-up and live alike, no gap and no
    /// duplicate across frames.
    Ops {
        /// The ops.
        ops: Vec<SeqOp>,
    },
    /// Every op of the batch is committed (and was sent in `ops`).
    Ack {
        /// The client's batch id.
        batch: u64,
    },
    /// A refusal; with `batch`, of that push (nothing of it was committed).
    Error {
        /// The code ([`ErrorCode`]; its disposition says what to do).
        code: ErrorCode,
        /// Human-readable detail.
        message: String,
        /// The push it refers to.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        batch: Option<u64>,
        /// For `rate_limited`: wait this long before trying again.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
    },
    /// The cursor is below the horizon (or ahead of the head): load a
    /// snapshot, then say hello again from its head seq.
    SnapshotRequired {
        /// The head seq now.
        head_seq: u64,
    },
    /// A subtree replica's feed (connections whose hello named a `root`):
    /// what changed in its subtree since its cursor, as state. Apply the
    /// frames of one change in order: `nodes` and `registers` as they
    /// come, `removed` (only in the last frame) after them; the replica is
    /// at `head_seq` once the frame that carries it is applied.
    Subtree {
        /// Nodes to put at a place: the nodes of subtrees that moved in
        /// (their registers are in `registers`) and nodes that moved within.
        nodes: Vec<SubtreeNode>,
        /// Registers to merge (last writer wins by stamp).
        registers: Vec<SubtreeRegister>,
        /// Nodes that left the subtree (moved out, or the root itself gone
        /// from the tree): remove each with everything under it.
        #[serde(default)]
        removed: Vec<NodeId>,
        /// Whether the subtree's root is now in the trash, when its place
        /// changed (absent: it did not).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        root_in_trash: Option<bool>,
        /// The seq the replica is at once this frame is applied (absent:
        /// more frames of the same change follow).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        head_seq: Option<u64>,
    },
    /// Presence changed.
    Peers {
        /// Who is connected.
        peers: Vec<Peer>,
    },
    /// A connection this one sees set its presence (or cleared it, or it
    /// expired: `state` null).
    Presence {
        /// The connection (as in [`Peer::conn`]).
        conn: u64,
        /// The token's subject of that connection.
        sub: String,
        /// Its state now.
        state: Option<PresenceState>,
    },
    /// Answer to `ping`.
    Pong,
}

/// A node's place in a `subtree` frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubtreeNode {
    /// The node.
    pub id: NodeId,
    /// Its parent (inside the subtree).
    pub parent: NodeId,
    /// Its order key among its siblings.
    pub key: OrderKey,
}

/// A register in a `subtree` frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubtreeRegister {
    /// The node.
    pub node: NodeId,
    /// The field.
    pub field: String,
    /// Its value (`null`: cleared).
    pub value: Option<String>,
    /// The winning write's stamp.
    pub stamp: Stamp,
}

/// Why a frame was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// Larger than [`MAX_FRAME_BYTES`].
    #[error("frame of {0} bytes exceeds {MAX_FRAME_BYTES}")]
    TooLarge(usize),
    /// Not a known message.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// `hello` with another version.
    #[error("protocol version {0} is not supported (expected {VERSION})")]
    Version(u32),
    /// A push with too many ops.
    #[error("push of {0} ops exceeds {MAX_PUSH_OPS}")]
    TooManyOps(usize),
    /// A well-formed push whose ops do not decode (a bad id, key or stamp,
    /// an unknown field): refused with its batch, the socket stays open.
    #[error("push {batch}: {message}")]
    BadOps {
        /// The push's batch id.
        batch: u64,
        /// What is wrong.
        message: String,
    },
}

impl ProtocolError {
    /// The code sent in `error` frames.
    pub fn code(&self) -> ErrorCode {
        match self {
            ProtocolError::TooLarge(_) => ErrorCode::FrameTooLarge,
            ProtocolError::Malformed(_) => ErrorCode::Malformed,
            ProtocolError::Version(_) => ErrorCode::UnsupportedVersion,
            ProtocolError::TooManyOps(_) => ErrorCode::BatchTooLarge,
            ProtocolError::BadOps { .. } => ErrorCode::BadOp,
        }
    }
}

impl ClientMsg {
    /// Decodes a text frame: size first, then JSON, then limits and
    /// version. Op contents are validated by the apply path.
    pub fn decode(text: &str) -> Result<ClientMsg, ProtocolError> {
        if text.len() > MAX_FRAME_BYTES {
            return Err(ProtocolError::TooLarge(text.len()));
        }
        let msg: ClientMsg = serde_json::from_str(text).map_err(|e| {
            // A push envelope whose ops are the problem is refused as that
            // push's bad input, not as a broken connection.
            #[derive(Deserialize)]
            struct Envelope {
                #[serde(rename = "type")]
                kind: String,
                batch: u64,
                ops: Vec<serde_json::Value>,
            }
            match serde_json::from_str::<Envelope>(text) {
                Ok(env) if env.kind == "push" && env.ops.len() <= MAX_PUSH_OPS => {
                    ProtocolError::BadOps {
                        batch: env.batch,
                        message: e.to_string(),
                    }
                }
                _ => ProtocolError::Malformed(e.to_string()),
            }
        })?;
        match &msg {
            ClientMsg::Hello { v, .. } if *v != VERSION => Err(ProtocolError::Version(*v)),
            ClientMsg::Push { ops, .. } if ops.len() > MAX_PUSH_OPS => {
                Err(ProtocolError::TooManyOps(ops.len()))
            }
            _ => Ok(msg),
        }
    }

    /// Encodes a frame.
    pub fn encode(&self) -> String {
        // Plain data: serialization cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

impl ServerMsg {
    /// Decodes a server frame (clients), with the same size limit.
    pub fn decode(text: &str) -> Result<ServerMsg, ProtocolError> {
        if text.len() > MAX_FRAME_BYTES {
            return Err(ProtocolError::TooLarge(text.len()));
        }
        serde_json::from_str(text).map_err(|e| ProtocolError::Malformed(e.to_string()))
    }

    /// Encodes a frame.
    pub fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}
