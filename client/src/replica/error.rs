//! [`ReplicaError`]: every way a replica call can fail.

use arbor_shared::{ClockError, NodeId, OpError, TreeError};

use crate::schema::SchemaError;

/// Errors of the replica.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    /// SQLite failed.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The file's schema cannot be used.
    #[error(transparent)]
    Schema(#[from] SchemaError),
    /// The node is not in the tree.
    #[error("unknown node {0}")]
    UnknownNode(NodeId),
    /// ROOT and TRASH never move and have no fields.
    #[error("{0} is reserved")]
    Reserved(NodeId),
    /// The sibling named by a position has another parent.
    #[error("{sibling} is not a child of {parent}")]
    NotASibling {
        /// The sibling.
        sibling: NodeId,
        /// The parent asked for.
        parent: NodeId,
    },
    /// The move would put a node under itself.
    #[error("moving {node} under {parent} would make a cycle")]
    Cycle {
        /// The node.
        node: NodeId,
        /// Its requested parent (a descendant of it).
        parent: NodeId,
    },
    /// No order key fits between two siblings with equal keys.
    #[error("no room for a key: {0}")]
    Key(#[from] arbor_shared::key::KeyError),
    /// An op is malformed (limits).
    #[error(transparent)]
    Op(#[from] OpError),
    /// The local clock cannot issue a stamp.
    #[error(transparent)]
    Clock(#[from] ClockError),
    /// The CRDT refused ops (stale stamps) or the store failed.
    #[error("tree: {0}")]
    Tree(String),
    /// Remote ops did not continue the cursor.
    #[error("ops start at seq {got}, expected {expected}")]
    Gap {
        /// The cursor + 1.
        expected: u64,
        /// The first seq received.
        got: u64,
    },
    /// The replica belongs to another thoughtspace.
    #[error("the replica belongs to thoughtspace {have}, not {want}")]
    WrongSpace {
        /// The replica's.
        have: String,
        /// The one asked for.
        want: String,
    },
    /// A replica image could not be used (nothing changed): the row
    /// snapshot is the way instead.
    #[error("image: {0}")]
    Image(String),
    /// An outline to import is not one (nothing was made).
    #[error("outline: {0}")]
    Outline(String),
    /// A snapshot could not be loaded (nothing changed).
    #[error("snapshot: {0}")]
    Snapshot(String),
    /// The file's parent links loop through this node: the replica file is
    /// damaged (hand-edited, or written by something else). Nothing was
    /// changed; a fresh replica (delete the file, sync again) repairs it.
    #[error("the replica file is damaged: the parent links through {0} form a cycle")]
    Corrupt(NodeId),
}

impl From<TreeError<rusqlite::Error>> for ReplicaError {
    fn from(e: TreeError<rusqlite::Error>) -> Self {
        match e {
            TreeError::Store(e) => ReplicaError::Sqlite(e),
            TreeError::Op(e) => ReplicaError::Op(e),
            e @ TreeError::Stale { .. } => ReplicaError::Tree(e.to_string()),
            TreeError::Corrupt { node } => ReplicaError::Corrupt(node),
        }
    }
}

pub(crate) type Result<T> = std::result::Result<T, ReplicaError>;
