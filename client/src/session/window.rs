//! The push window: which outbox ops are in flight in which batch, and the next pushes to send.

use std::collections::{BTreeMap, HashSet};

use arbor_shared::{Op, Stamp};

use crate::replica::{Replica, ReplicaError};

/// Pushes sent and not yet answered.
#[derive(Debug, Default)]
pub(super) struct PushWindow {
    /// Batch id to the stamps it carried.
    inflight: BTreeMap<u64, Vec<Stamp>>,
    /// Every stamp in flight (invariant: the union of `inflight`).
    sent: HashSet<Stamp>,
    next_batch: u64,
    /// Ops of a refused push of several ops: each goes alone from now on, so
    /// a refusal names exactly the op refused (and the others commit).
    singles: HashSet<Stamp>,
}

impl PushWindow {
    pub(super) fn new() -> PushWindow {
        PushWindow {
            next_batch: 1,
            ..PushWindow::default()
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.inflight.is_empty()
    }

    /// The next push, if there is room in the window and the outbox holds
    /// ops not in flight: at most `batch_ops` ops and `max_bytes` of JSON
    /// (a single larger op still goes alone).
    pub(super) fn next_push(
        &mut self,
        r: &Replica,
        max_inflight: usize,
        batch_ops: usize,
        max_bytes: usize,
    ) -> Result<Option<(u64, Vec<Op>)>, ReplicaError> {
        if self.inflight.len() >= max_inflight {
            return Ok(None);
        }
        let mut bytes = 0usize;
        let mut count = 0usize;
        let ops: Vec<Op> = r
            .outbox_to_push(self.sent.len() + batch_ops)?
            .into_iter()
            .filter(|o| !self.sent.contains(&o.stamp()))
            .take(batch_ops)
            .take_while(|o| {
                // A single goes alone: first in its push, and last.
                let single = self.singles.contains(&o.stamp());
                let n = serde_json::to_string(o).map_or(0, |t| t.len());
                let fits = count == 0 || (!single && bytes + n <= max_bytes);
                bytes += n;
                count += 1;
                fits && (count == 1 || !single)
            })
            .collect();
        let ops: Vec<Op> = match ops.first() {
            Some(first) if self.singles.contains(&first.stamp()) => {
                ops.into_iter().take(1).collect()
            }
            _ => ops,
        };
        if ops.is_empty() {
            return Ok(None);
        }
        let batch = self.next_batch;
        self.next_batch += 1;
        let stamps: Vec<Stamp> = ops.iter().map(Op::stamp).collect();
        self.sent.extend(stamps.iter().copied());
        self.inflight.insert(batch, stamps);
        Ok(Some((batch, ops)))
    }

    /// The batch was answered (acked or refused): its stamps, if it was ours.
    pub(super) fn answered(&mut self, batch: u64) -> Vec<Stamp> {
        let stamps = self.inflight.remove(&batch).unwrap_or_default();
        for s in &stamps {
            self.sent.remove(s);
            self.singles.remove(s);
        }
        stamps
    }

    /// A push of these ops was refused for good: push each alone from now
    /// on, to learn which of them is refused.
    pub(super) fn split(&mut self, stamps: &[Stamp]) {
        self.singles.extend(stamps.iter().copied());
    }
}
