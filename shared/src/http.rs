//! JSON bodies of the sync server's HTTP API that other components read or write (the Worker, clients, tests).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::clock::Stamp;
use crate::error::ErrorDetail;
use crate::id::{NodeId, ReplicaId};
use crate::key::OrderKey;
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

/// One op of a node's history (`GET .../nodes/{id}/history`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntryJson {
    /// Its seq in the space.
    pub seq: u64,
    /// The op.
    pub op: Op,
    /// `new`, or `restore` (appended by the server's restore rule).
    pub origin: Origin,
    /// Who made it (absent for restores and unclaimed replica ids).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// For a move: whether it is in effect in the tree's history (false:
    /// skipped as a cycle, or undone by a later restore pass); absent for a
    /// set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied: Option<bool>,
}

/// Answer of `GET /v1/spaces/{space}/nodes/{id}/history`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeHistoryBody {
    /// The node's ops, newest first.
    pub entries: Vec<HistoryEntryJson>,
    /// The next page: ask again with `before` = this (absent: no more).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_before: Option<u64>,
    /// The space's head seq when the page was read.
    pub head_seq: u64,
}

/// A node's place at a seq, or `None` if it was not in the tree then.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlaceAtJson {
    /// The node.
    pub id: NodeId,
    /// Its parent and key then (absent: not in the tree then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub place: Option<(NodeId, crate::key::OrderKey)>,
}

/// Answer of `GET /v1/spaces/{space}/subtree/{id}/at?seq=N`: the subtree
/// of `root` as it was at seq `seq`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubtreeAtBody {
    /// The seq.
    pub seq: u64,
    /// The subtree's root.
    pub root: NodeId,
    /// Whether the root was in the tree at `seq` (false: `nodes` is empty).
    pub present: bool,
    /// Every node below the root then, with its place then.
    pub nodes: Vec<crate::protocol::SubtreeNode>,
    /// The registers then of the root and of `nodes` (the winner among the
    /// writes committed at or before `seq`).
    pub registers: Vec<crate::protocol::SubtreeRegister>,
    /// The nodes below the root now that were not below it then, with
    /// their place then.
    pub elsewhere: Vec<PlaceAtJson>,
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

/// Body of `POST /v1/spaces/{space}/subtree/changes` (service tokens: the
/// Durable Object asks for its subtree connections' changes).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubtreeChangesBody {
    /// The seq the connections are at.
    pub after: u64,
    /// Their subtree roots (at most [`MAX_SUBTREE_ROOTS`]).
    pub roots: Vec<crate::id::NodeId>,
}

/// Most roots in one subtree changes request.
pub const MAX_SUBTREE_ROOTS: usize = 10_000;

/// One root's answer in a subtree changes answer: `frames`, or
/// `snapshot_required` (the head seq now).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubtreeRootAnswer {
    /// The root.
    pub root: crate::id::NodeId,
    /// Its `subtree` frames, the last one carrying the head.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frames: Option<Vec<crate::protocol::ServerMsg>>,
    /// Load a snapshot instead: the head seq now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_required: Option<u64>,
}

/// Answer of `POST .../subtree/changes`: one entry per root asked.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SubtreeChangesAnswer {
    /// The answers.
    pub answers: Vec<SubtreeRootAnswer>,
}

impl SubtreeChangesAnswer {
    /// From the room's form.
    pub fn from_room(
        answers: std::collections::BTreeMap<crate::id::NodeId, crate::room::SubtreeAnswer>,
    ) -> SubtreeChangesAnswer {
        use crate::room::SubtreeAnswer;
        SubtreeChangesAnswer {
            answers: answers
                .into_iter()
                .map(|(root, a)| match a {
                    SubtreeAnswer::Frames(frames) => SubtreeRootAnswer {
                        root,
                        frames: Some(frames),
                        snapshot_required: None,
                    },
                    SubtreeAnswer::SnapshotRequired { head_seq } => SubtreeRootAnswer {
                        root,
                        frames: None,
                        snapshot_required: Some(head_seq),
                    },
                })
                .collect(),
        }
    }

    /// Into the room's form (an entry with neither field is left out: the
    /// room then reports nothing for that root, and the host fails it).
    pub fn into_room(
        self,
    ) -> std::collections::BTreeMap<crate::id::NodeId, crate::room::SubtreeAnswer> {
        use crate::room::SubtreeAnswer;
        self.answers
            .into_iter()
            .filter_map(|a| match (a.frames, a.snapshot_required) {
                (Some(frames), _) => Some((a.root, SubtreeAnswer::Frames(frames))),
                (None, Some(head_seq)) => {
                    Some((a.root, SubtreeAnswer::SnapshotRequired { head_seq }))
                }
                (None, None) => None,
            })
            .collect()
    }
}

/// One register on the wire.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RegisterJson {
    /// The value (`null`: cleared).
    pub value: Option<String>,
    /// The winning write's stamp.
    pub stamp: Stamp,
}

/// One child on the wire.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ChildJson {
    /// The child.
    pub id: NodeId,
    /// Its order key (hex).
    pub key: OrderKey,
    /// Its registers by field.
    pub payloads: BTreeMap<String, RegisterJson>,
    /// Whether it has children of its own (absent from older servers).
    #[serde(default)]
    pub has_children: bool,
}

/// A page of children.
#[derive(Debug, Serialize, Deserialize)]
pub struct ChildrenBody {
    /// In sibling order.
    pub children: Vec<ChildJson>,
    /// The page holds every op of the space up to this seq (it may come
    /// from a standby a little behind the primary).
    pub head_seq: u64,
}

/// A node holding a value (`GET .../values`).
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct HolderJson {
    /// Its parent.
    pub parent: NodeId,
    /// The node, its key and registers.
    #[serde(flatten)]
    pub node: ChildJson,
}

/// A page of a value's holders (`GET .../values`).
#[derive(Debug, Serialize, Deserialize)]
pub struct HoldersBody {
    /// In node id order.
    pub holders: Vec<HolderJson>,
    /// The `after` of the next page, or `null`: no more. A page may hold
    /// fewer holders than its limit and still have a next.
    pub next: Option<NodeId>,
    /// The page holds every op of the space up to this seq.
    pub head_seq: u64,
}

/// A register whose value matched a search (`GET .../search`).
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct SearchHitJson {
    /// The node.
    pub id: NodeId,
    /// Its parent.
    pub parent: NodeId,
    /// The field that matched.
    pub field: String,
    /// Its value.
    pub value: String,
}

/// The answer of a search (`GET .../search`).
#[derive(Debug, Serialize, Deserialize)]
pub struct SearchBody {
    /// Best first.
    pub hits: Vec<SearchHitJson>,
    /// The answer holds every op of the space up to this seq.
    pub head_seq: u64,
}
