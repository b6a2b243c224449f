//! The commit pipeline of a room: pushes wait in arrival order and commit in groups, one group at a time.
//!
//! One group at a time keeps a space's pushes in arrival order (a client's
//! later push may depend on its earlier one, like a create and then a set
//! on the new node; Postgres serializes a space's ingest anyway), and the
//! pushes that arrive while a group commits go together in the next one
//! (group commit: one transaction, a savepoint per push).

use std::collections::VecDeque;

use crate::id::ReplicaId;
use crate::op::Op;

use super::ConnId;

/// A push waiting for its commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Push {
    /// From whom.
    pub conn: ConnId,
    /// The client's batch id.
    pub batch: u64,
    /// The replica every op must be by (`None`: service connections).
    pub author: Option<ReplicaId>,
    /// The token subject it is pushed for (`None`: service connections,
    /// whose pushes are not checked against replica owners).
    pub sub: Option<String>,
    /// The subtree its token is limited to (the `root` claim): the commit
    /// checks every op stays inside it.
    pub root: Option<crate::id::NodeId>,
    /// The ops.
    pub ops: Vec<Op>,
}

/// How large a group may grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupLimits {
    /// Pushes in one group at most.
    pub pushes: usize,
    /// Ops in one group at most (a single larger push still goes alone).
    pub ops: usize,
}

impl Default for GroupLimits {
    fn default() -> Self {
        GroupLimits {
            pushes: 64,
            ops: 10_000,
        }
    }
}

/// Waiting pushes and the group in flight.
#[derive(Debug, Clone, Default)]
pub(super) struct CommitQueue {
    waiting: VecDeque<Push>,
    /// The `(conn, batch)` of each push of the group being committed, in
    /// push order (invariant: empty exactly when no group is in flight).
    in_flight: Vec<(ConnId, u64)>,
    /// The highest head notice that came while a group was committing (most
    /// are for that very commit, whose answer brings the ops without a
    /// fetch).
    pub(super) noticed: u64,
}

impl CommitQueue {
    pub(super) fn push(&mut self, push: Push) {
        self.waiting.push_back(push);
    }

    /// True while a group is being committed.
    pub(super) fn committing(&self) -> bool {
        !self.in_flight.is_empty()
    }

    /// The next group, if none is in flight and pushes wait.
    pub(super) fn next_group(&mut self, limits: GroupLimits) -> Option<Vec<Push>> {
        if self.committing() || self.waiting.is_empty() {
            return None;
        }
        let mut group: Vec<Push> = Vec::new();
        let mut ops = 0;
        while let Some(next) = self.waiting.front() {
            if !group.is_empty()
                && (group.len() >= limits.pushes || ops + next.ops.len() > limits.ops)
            {
                break;
            }
            ops += next.ops.len();
            group.extend(self.waiting.pop_front());
        }
        self.in_flight = group.iter().map(|p| (p.conn, p.batch)).collect();
        Some(group)
    }

    /// The group in flight is answered: its pushes, in push order.
    pub(super) fn finish(&mut self) -> Vec<(ConnId, u64)> {
        std::mem::take(&mut self.in_flight)
    }

    /// Pushes waiting or committing.
    pub(super) fn len(&self) -> usize {
        self.waiting.len() + self.in_flight.len()
    }
}
