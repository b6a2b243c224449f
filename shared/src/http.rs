//! JSON bodies of the sync server's HTTP API that other components read or write (the Worker, clients, tests).

use serde::{Deserialize, Serialize};

use crate::error::ErrorDetail;
use crate::id::ReplicaId;
use crate::op::Op;
pub use crate::protocol::Origin;

/// A committed op with its seq and origin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommittedJson {
    /// Its seq in the space.
    pub seq: u64,
    /// The op.
    pub op: Op,
    /// Why it is in the answer.
    pub origin: Origin,
    /// Who made it ([`crate::protocol::SeqOp::author`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
}

/// Body of `POST /v1/spaces/{space}/ops`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestBody {
    /// The batch.
    pub ops: Vec<Op>,
}

/// Answer of ingest and catch-up.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OpsBody {
    /// Committed ops in seq order.
    pub ops: Vec<CommittedJson>,
    /// The space's head seq (catch-up only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_seq: Option<u64>,
    /// Catch-up only: the lowest cursor catch-up can serve, when there is
    /// one (an imported space, or a log truncated below its horizon); a
    /// replica below it, or with no cursor, must load a snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_cursor: Option<u64>,
}

/// One push of a group ingest.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupPush {
    /// The replica every op must be by (`null`: any; service tokens only).
    #[serde(default)]
    pub author: Option<ReplicaId>,
    /// The token subject the push is made for (the Durable Object passes
    /// its client's): its replica ids are claimed for that subject, and a
    /// replica id another subject owns is refused (`wrong_replica`).
    /// Absent: no owner check (the service's own pushes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// The subtree the push's token is limited to (its `root` claim): every
    /// op must stay inside it, as for ingest with a scoped token. Absent:
    /// the whole space.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<crate::id::NodeId>,
    /// The ops.
    pub ops: Vec<Op>,
}

/// Body of `POST /v1/spaces/{space}/ops/group` (service tokens: the Durable
/// Object commits its waiting pushes in one call).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupIngestBody {
    /// The pushes, in the order they are to be applied.
    pub pushes: Vec<GroupPush>,
}

/// How one push of a group ingest ended: `ops` when committed, `error` when
/// refused (nothing of it committed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushResult {
    /// The committed ops, as ingest answers them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ops: Option<Vec<CommittedJson>>,
    /// The refusal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorDetail>,
}

/// Answer of a group ingest: one result per push, in push order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupIngestAnswer {
    /// The results.
    pub results: Vec<PushResult>,
}

/// Body of `POST /v1/spaces/{space}/notify` (the Worker's commit notices).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NotifyBody {
    /// The space's head is at least this seq.
    pub head_seq: u64,
}

/// A frame of the upstream socket (`GET /v1/spaces/{space}/upstream`,
/// service tokens): the Durable Object's persistent link to the sync
/// server for group commits (an HTTP request per group costs the object a
/// few milliseconds more than a frame on a socket it keeps open).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum UpstreamMsg {
    /// Object to server: commit these pushes as one group, in order.
    Commit {
        /// Echoed by the answer.
        id: u64,
        /// The pushes, as a group ingest takes them.
        pushes: Vec<GroupPush>,
    },
    /// Server to object: the group's results, one per push in push order
    /// (as a group ingest answers).
    Committed {
        /// The commit's id.
        id: u64,
        /// The results.
        results: Vec<PushResult>,
    },
    /// Server to object: the whole group was refused (too large, or a
    /// frame that is not a commit); nothing of it committed.
    Refused {
        /// The commit's id (0 when the frame could not be read).
        id: u64,
        /// Why.
        error: ErrorDetail,
    },
}
