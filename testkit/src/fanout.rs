//! The realtime benchmarks' writer and readers, transport aside: sets stamped with their send time, paced like a sync client's outbox, and their latencies at receipt.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arbor_shared::protocol::{ClientMsg, ServerMsg};
use arbor_shared::{KeyGen, MoveOp, NodeId, Op, Stamp};
use tokio::sync::Semaphore;

use crate::env::now_ms;

/// A writer like a sync client with an outbox: every `every` it queues a
/// set of `node`'s field `t` to the microseconds since `start` (until it
/// made its count), and the queue goes out as one push whenever fewer than
/// `max_waiting` pushes wait for their answer.
#[derive(Debug)]
pub struct Writer {
    ops: usize,
    made: usize,
    batch: u64,
    hlc: u64,
    replica: u64,
    node: NodeId,
    start: Instant,
    queued: Vec<Op>,
    waiting: Arc<Semaphore>,
    every: Duration,
    ticks: Option<tokio::time::Interval>,
}

/// Counts the answers to a [`Writer`]'s pushes (from its socket's reader).
#[derive(Debug, Clone)]
pub struct Answers(Arc<Semaphore>);

impl Writer {
    /// A writer of `ops` sets on `node` as `replica`, timed from `start`.
    pub fn new(
        ops: usize,
        replica: u64,
        node: NodeId,
        start: Instant,
        every: Duration,
        max_waiting: usize,
    ) -> Writer {
        Writer {
            ops,
            made: 0,
            batch: 0,
            hlc: (now_ms() << 16) + 1,
            replica,
            node,
            start,
            queued: Vec::new(),
            waiting: Arc::new(Semaphore::new(max_waiting)),
            every,
            ticks: None,
        }
    }

    /// The first push (batch 0, not counted): the create of the node under
    /// ROOT.
    pub fn create(&self) -> ClientMsg {
        let create = Op::Move(MoveOp {
            stamp: Stamp::new(self.hlc, self.replica),
            known_seq: 0,
            node: self.node,
            parent: NodeId::ROOT,
            key: KeyGen::new(self.replica).append_after(None),
        });
        ClientMsg::Push {
            batch: 0,
            ops: vec![create],
        }
    }

    /// Where the answers to the pushes are counted.
    pub fn answers(&self) -> Answers {
        Answers(self.waiting.clone())
    }

    /// The next push, on the tick it is due (the ticks start at the first
    /// call); `None` once every set was made and pushed.
    pub async fn next_push(&mut self) -> Option<ClientMsg> {
        let every = self.every;
        while self.made < self.ops || !self.queued.is_empty() {
            let ticks = self
                .ticks
                .get_or_insert_with(|| tokio::time::interval(every));
            ticks.tick().await;
            if let Some(push) = self.tick() {
                return Some(push);
            }
        }
        None
    }

    /// One tick: queues the next set, if any is left; returns the push of
    /// the queue if fewer than the limit wait for their answer.
    fn tick(&mut self) -> Option<ClientMsg> {
        if self.made < self.ops {
            self.hlc = self.hlc.max(now_ms() << 16) + 1;
            let sent = self.start.elapsed().as_micros() as u64;
            self.queued.push(crate::ops::set(
                self.hlc,
                self.replica,
                self.node,
                "t",
                Some(&sent.to_string()),
                0,
            ));
            self.made += 1;
        }
        let permit = self.waiting.clone().try_acquire_owned().ok()?;
        permit.forget();
        self.batch += 1;
        Some(ClientMsg::Push {
            batch: self.batch,
            ops: std::mem::take(&mut self.queued),
        })
    }
}

impl Answers {
    /// Counts `frame` if it answers a push (an ack, or a refusal naming
    /// its batch) other than the create's.
    pub fn count(&self, frame: &str) {
        match ServerMsg::decode(frame) {
            Ok(ServerMsg::Ack { batch })
            | Ok(ServerMsg::Error {
                batch: Some(batch), ..
            }) if batch > 0 => self.0.add_permits(1),
            _ => {}
        }
    }
}

/// The latencies of the writer's sets in a reader's `frame` (its `ops`, or
/// the `t` registers of a `subtree` frame), from their send time to now
/// (both from `start`).
pub fn latencies(frame: &str, start: Instant) -> Vec<Duration> {
    let now = start.elapsed().as_micros() as u64;
    let since = |value: Option<String>| {
        let sent: u64 = value.unwrap_or_default().parse().unwrap_or(now);
        Duration::from_micros(now.saturating_sub(sent))
    };
    match ServerMsg::decode(frame) {
        Ok(ServerMsg::Ops { ops }) => ops
            .into_iter()
            .filter_map(|o| match o.op {
                Op::Set(s) => Some(since(s.value)),
                Op::Move(_) => None,
            })
            .collect(),
        Ok(ServerMsg::Subtree { registers, .. }) => registers
            .into_iter()
            .filter(|r| r.field == "t")
            .map(|r| since(r.value))
            .collect(),
        _ => Vec::new(),
    }
}
