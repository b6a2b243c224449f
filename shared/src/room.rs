//! The realtime room of one thoughtspace, as a pure state machine.
//!
//! The host (the sync server's native endpoint, or the Durable Object) owns
//! the sockets and the I/O; the room decides. Each `on_*` call returns
//! [`Action`]s for the host to carry out in order: send a frame, close a
//! socket, persist a push, fetch a catch-up range. The room guarantees that
//! every connection receives committed ops in seq order with no gap and no
//! duplicate across catch-up and live delivery, that nothing is sent before
//! it is committed (pushes go out as [`Action::Ingest`] and come back
//! through [`Room::on_ingested`]), and that memory per connection is
//! bounded (a connection that would buffer too much is closed).

use std::collections::{BTreeMap, BTreeSet};

use crate::auth::{Claims, Role};
use crate::clock::Stamp;
use crate::id::ReplicaId;
use crate::op::Op;
use crate::protocol::{ClientMsg, MAX_FRAME_BYTES, Peer, ProtocolError, SeqOp, ServerMsg};

/// A connection's id, unique in the room while it is open.
pub type ConnId = u64;

/// WebSocket close codes the room uses.
pub mod close {
    /// The server is going away (shutdown).
    pub const GOING_AWAY: u16 = 1001;
    /// A frame larger than the limit.
    pub const TOO_BIG: u16 = 1009;
    /// The token expired.
    pub const TOKEN_EXPIRED: u16 = 4001;
    /// The connection fell too far behind.
    pub const TOO_SLOW: u16 = 4002;
    /// A malformed frame or a protocol violation.
    pub const PROTOCOL: u16 = 4003;
    /// The token does not allow what the connection asked.
    pub const FORBIDDEN: u16 = 4004;
}

/// What the host must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send a frame to a connection.
    Send {
        /// To whom.
        conn: ConnId,
        /// The frame.
        msg: ServerMsg,
    },
    /// Close a connection with a code and reason.
    Close {
        /// Which.
        conn: ConnId,
        /// WebSocket close code ([`close`]).
        code: u16,
        /// Reason text.
        reason: String,
    },
    /// Commit a push, then call [`Room::on_ingested`] (or
    /// [`Room::on_ingest_failed`]).
    Ingest {
        /// From whom.
        conn: ConnId,
        /// The client's batch id.
        batch: u64,
        /// The replica every op must be by (`None`: service connections).
        author: Option<ReplicaId>,
        /// The ops.
        ops: Vec<Op>,
    },
    /// Fetch committed ops with `after < seq <= upto` and hand them to
    /// [`Room::on_catch_up`] (in pages; `done` on the last).
    CatchUp {
        /// For whom.
        conn: ConnId,
        /// Exclusive lower bound.
        after: u64,
        /// Inclusive upper bound.
        upto: u64,
    },
    /// Committed ops were reported with a gap before them: fetch
    /// `after < seq <= upto` and pass them to [`Room::on_committed`].
    FetchGap {
        /// Exclusive lower bound.
        after: u64,
        /// Inclusive upper bound.
        upto: u64,
    },
}

/// Budget for one `ops` frame's ops, well under [`MAX_FRAME_BYTES`] (the
/// platform limit of the Durable Object tier is also 1 MiB).
const FRAME_BUDGET: usize = MAX_FRAME_BYTES * 3 / 4;

/// An upper bound of an op's JSON size: fixed fields plus the text ones,
/// counted 6 times (the worst JSON escape, `\u0000`).
fn op_size_bound(op: &SeqOp) -> usize {
    let text = match &op.op {
        Op::Move(m) => m.key.as_bytes().len() * 2,
        Op::Set(s) => 6 * (s.field.len() + s.value.as_ref().map_or(0, String::len)),
    };
    256 + text
}

/// `ops` as `ops` frames for `conn`, each within [`FRAME_BUDGET`] (an op
/// larger than the budget alone still fits the frame limit).
fn ops_frames(conn: ConnId, ops: Vec<SeqOp>) -> Vec<Action> {
    let mut frames = Vec::new();
    let mut frame = Vec::new();
    let mut size = 0;
    for op in ops {
        let n = op_size_bound(&op);
        if !frame.is_empty() && size + n > FRAME_BUDGET {
            frames.push(Action::Send {
                conn,
                msg: ServerMsg::Ops {
                    ops: std::mem::take(&mut frame),
                },
            });
            size = 0;
        }
        size += n;
        frame.push(op);
    }
    if !frame.is_empty() {
        frames.push(Action::Send {
            conn,
            msg: ServerMsg::Ops { ops: frame },
        });
    }
    frames
}

/// How one push of a group commit ended (see [`Room::on_ingested_group`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IngestResult {
    /// Committed: the database's answer (new ops and restores with seqs).
    Committed(Vec<SeqOp>),
    /// Refused or failed; nothing of it committed.
    Failed {
        /// Stable error code.
        code: String,
        /// Human-readable detail.
        message: String,
    },
}

/// Limits that keep a room's memory bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoomLimits {
    /// Live ops a connection may buffer while its catch-up runs.
    pub max_buffered_ops: usize,
    /// Pushes a connection may have in flight.
    pub max_inflight_pushes: usize,
    /// Out-of-order commits the room holds while a gap is fetched.
    pub max_pending_ops: usize,
}

impl Default for RoomLimits {
    fn default() -> Self {
        RoomLimits {
            max_buffered_ops: 10_000,
            max_inflight_pushes: 16,
            max_pending_ops: 100_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    /// Connected, no hello yet.
    AwaitingHello,
    /// Catch-up of `(cursor, upto]` is running; live ops above `upto` wait
    /// in `buffered` (invariant: sorted, all above `upto`).
    CatchingUp { upto: u64, buffered: Vec<SeqOp> },
    /// Receives every committed op above its cursor as it commits.
    Live,
}

#[derive(Debug, Clone)]
struct Conn {
    claims: Claims,
    phase: Phase,
    /// Highest seq sent to (or known by) the connection.
    cursor: u64,
    replica: Option<ReplicaId>,
    /// Batch ids pushed and not yet answered.
    inflight: BTreeSet<u64>,
}

/// One thoughtspace's realtime state.
#[derive(Debug, Clone)]
pub struct Room {
    space: String,
    /// Highest seq the room has seen committed (contiguously).
    head_seq: u64,
    horizon: Option<Stamp>,
    limits: RoomLimits,
    conns: BTreeMap<ConnId, Conn>,
    /// Commits reported above a gap, waiting for it (invariant: all keys
    /// above `head_seq + 1`).
    pending: BTreeMap<u64, SeqOp>,
    /// The upper end of the gap fetch already asked for.
    gap_asked: u64,
    /// Highest seq known committed (from commits or head notices); the
    /// room fetches up to it when it is above `head_seq`.
    known_head: u64,
    /// Hellos with a cursor above `head_seq`, waiting for the gap fetch
    /// (invariant: their connections are still awaiting hello).
    parked: BTreeMap<ConnId, (ReplicaId, u64)>,
}

impl Room {
    /// A room for `space` whose committed head is `head_seq`.
    pub fn new(space: &str, head_seq: u64, horizon: Option<Stamp>, limits: RoomLimits) -> Room {
        Room {
            space: space.to_string(),
            head_seq,
            horizon,
            limits,
            conns: BTreeMap::new(),
            pending: BTreeMap::new(),
            gap_asked: head_seq,
            known_head: head_seq,
            parked: BTreeMap::new(),
        }
    }

    /// The highest contiguous committed seq the room knows.
    pub fn head_seq(&self) -> u64 {
        self.head_seq
    }

    /// Number of open connections.
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    /// True if no connection is open.
    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    /// Who is connected (said hello).
    pub fn peers(&self) -> Vec<Peer> {
        self.conns
            .iter()
            .filter(|(_, c)| c.phase != Phase::AwaitingHello)
            .map(|(id, c)| Peer {
                conn: *id,
                sub: c.claims.sub.clone(),
                replica: c.replica,
            })
            .collect()
    }

    /// A socket was accepted with verified `claims` (checked by the host
    /// before the upgrade).
    pub fn on_connect(&mut self, conn: ConnId, claims: Claims) -> Vec<Action> {
        self.conns.insert(
            conn,
            Conn {
                claims,
                phase: Phase::AwaitingHello,
                cursor: 0,
                replica: None,
                inflight: BTreeSet::new(),
            },
        );
        Vec::new()
    }

    /// The host lost its memory (a Durable Object woke from hibernation)
    /// and re-adds a connection from what it kept with the socket: its
    /// claims, and, if it had said hello, its replica and the highest seq
    /// sent to it. A connection behind the room's head catches up (the
    /// returned `CatchUp`); restore the connection with the highest cursor
    /// first, or create the room with that head.
    pub fn restore(
        &mut self,
        conn: ConnId,
        claims: Claims,
        hello: Option<(ReplicaId, u64)>,
    ) -> Vec<Action> {
        let Some((replica, cursor)) = hello else {
            return self.on_connect(conn, claims);
        };
        if cursor > self.head_seq {
            // It was sent these ops, so they are committed.
            self.head_seq = cursor;
            self.known_head = self.known_head.max(cursor);
            self.gap_asked = self.gap_asked.max(cursor);
            self.pending.retain(|&seq, _| seq > cursor + 1);
        }
        let head = self.head_seq;
        let phase = if cursor < head {
            Phase::CatchingUp {
                upto: head,
                buffered: Vec::new(),
            }
        } else {
            Phase::Live
        };
        self.conns.insert(
            conn,
            Conn {
                claims,
                phase,
                cursor,
                replica: Some(replica),
                inflight: BTreeSet::new(),
            },
        );
        if cursor < head {
            vec![Action::CatchUp {
                conn,
                after: cursor,
                upto: head,
            }]
        } else {
            Vec::new()
        }
    }

    /// The highest seq sent to `conn` and its replica, if it said hello
    /// (what a host that can lose its memory keeps with the socket).
    pub fn conn_cursor(&self, conn: ConnId) -> Option<(ReplicaId, u64)> {
        let c = self.conns.get(&conn)?;
        Some((c.replica?, c.cursor))
    }

    fn error(conn: ConnId, code: &str, message: impl Into<String>, batch: Option<u64>) -> Action {
        Action::Send {
            conn,
            msg: ServerMsg::Error {
                code: code.to_string(),
                message: message.into(),
                batch,
            },
        }
    }

    fn close(conn: ConnId, code: u16, reason: &str) -> Action {
        Action::Close {
            conn,
            code,
            reason: reason.to_string(),
        }
    }

    fn presence(&self, except: Option<ConnId>) -> Vec<Action> {
        let peers = self.peers();
        self.conns
            .iter()
            .filter(|(id, c)| Some(**id) != except && c.phase != Phase::AwaitingHello)
            .map(|(id, _)| Action::Send {
                conn: *id,
                msg: ServerMsg::Peers {
                    peers: peers.clone(),
                },
            })
            .collect()
    }

    /// Welcomes `conn` (its hello named `cursor`, at most the head) and
    /// starts its catch-up.
    fn finish_hello(&mut self, conn: ConnId, replica: ReplicaId, cursor: u64) -> Vec<Action> {
        let head = self.head_seq;
        if let Some(c) = self.conns.get_mut(&conn) {
            c.replica = Some(replica);
            c.cursor = cursor;
            c.phase = if cursor < head {
                Phase::CatchingUp {
                    upto: head,
                    buffered: Vec::new(),
                }
            } else {
                Phase::Live
            };
        }
        let mut out = vec![Action::Send {
            conn,
            msg: ServerMsg::Welcome {
                space: self.space.clone(),
                head_seq: head,
                horizon: self.horizon,
                peers: self.peers(),
            },
        }];
        if cursor < head {
            out.push(Action::CatchUp {
                conn,
                after: cursor,
                upto: head,
            });
        }
        out.extend(self.presence(Some(conn)));
        out
    }

    /// Parked hellos the head has reached.
    fn unpark(&mut self) -> Vec<Action> {
        let ready: Vec<(ConnId, ReplicaId, u64)> = self
            .parked
            .iter()
            .filter(|(_, (_, cursor))| *cursor <= self.head_seq)
            .map(|(&conn, &(replica, cursor))| (conn, replica, cursor))
            .collect();
        let mut out = Vec::new();
        for (conn, replica, cursor) in ready {
            self.parked.remove(&conn);
            out.extend(self.finish_hello(conn, replica, cursor));
        }
        out
    }

    /// A text frame arrived from `conn`.
    pub fn on_message(&mut self, conn: ConnId, text: &str) -> Vec<Action> {
        let Some(c) = self.conns.get(&conn) else {
            return Vec::new();
        };
        let msg = match ClientMsg::decode(text) {
            Ok(m) => m,
            Err(e) => {
                let code = match e {
                    ProtocolError::TooLarge(_) => close::TOO_BIG,
                    _ => close::PROTOCOL,
                };
                return vec![
                    Self::error(conn, e.code(), e.to_string(), None),
                    Self::close(conn, code, e.code()),
                ];
            }
        };
        match msg {
            ClientMsg::Ping => vec![Action::Send {
                conn,
                msg: ServerMsg::Pong,
            }],
            ClientMsg::Hello {
                replica, cursor, ..
            } => {
                if c.phase != Phase::AwaitingHello {
                    return vec![
                        Self::error(conn, "protocol", "hello was already said", None),
                        Self::close(conn, close::PROTOCOL, "hello twice"),
                    ];
                }
                if c.claims.rid.is_some_and(|rid| rid != replica) {
                    return vec![
                        Self::error(
                            conn,
                            "wrong_replica",
                            "the token is bound to another replica",
                            None,
                        ),
                        Self::close(conn, close::FORBIDDEN, "wrong replica"),
                    ];
                }
                let cursor = cursor.unwrap_or(0);
                if cursor > self.head_seq {
                    // Ahead of what this room has seen: another process may
                    // have committed it. Fetch up to it; the hello finishes
                    // when the room gets there, or the client is told to
                    // load a snapshot when the database has less.
                    self.parked.insert(conn, (replica, cursor));
                    self.gap_asked = self.gap_asked.max(cursor);
                    return vec![Action::FetchGap {
                        after: self.head_seq,
                        upto: cursor,
                    }];
                }
                self.finish_hello(conn, replica, cursor)
            }
            ClientMsg::Push { batch, ops } => {
                if c.phase == Phase::AwaitingHello {
                    return vec![Self::error(
                        conn,
                        "protocol",
                        "say hello first",
                        Some(batch),
                    )];
                }
                if !c.claims.role.can_write() {
                    return vec![Self::error(
                        conn,
                        "forbidden",
                        "this token may not push",
                        Some(batch),
                    )];
                }
                if c.inflight.len() >= self.limits.max_inflight_pushes {
                    return vec![Self::error(
                        conn,
                        "too_many_pushes",
                        "wait for acks before pushing more",
                        Some(batch),
                    )];
                }
                if c.inflight.contains(&batch) {
                    return vec![Self::error(
                        conn,
                        "duplicate_batch",
                        "batch id in flight",
                        Some(batch),
                    )];
                }
                let author = match c.claims.role {
                    Role::Service => None,
                    _ => c.claims.rid.or(c.replica),
                };
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.inflight.insert(batch);
                }
                vec![Action::Ingest {
                    conn,
                    batch,
                    author,
                    ops,
                }]
            }
        }
    }

    /// A page of catch-up for `conn` (ops in seq order); `done` on the last.
    pub fn on_catch_up(&mut self, conn: ConnId, ops: Vec<SeqOp>, done: bool) -> Vec<Action> {
        let Some(c) = self.conns.get_mut(&conn) else {
            return Vec::new();
        };
        let Phase::CatchingUp { upto, .. } = c.phase else {
            return Vec::new();
        };
        let fresh: Vec<SeqOp> = ops
            .into_iter()
            .filter(|o| o.seq > c.cursor && o.seq <= upto)
            .collect();
        let mut out = Vec::new();
        if let Some(last) = fresh.last() {
            c.cursor = last.seq;
            out.extend(ops_frames(conn, fresh));
        }
        if done || c.cursor >= upto {
            let buffered = match std::mem::replace(&mut c.phase, Phase::Live) {
                Phase::CatchingUp { buffered, .. } => buffered,
                other => {
                    c.phase = other;
                    Vec::new()
                }
            };
            if c.cursor < upto {
                // The source had less than asked: resume from where it is.
                let after = c.cursor;
                c.phase = Phase::CatchingUp { upto, buffered };
                out.push(Action::CatchUp { conn, after, upto });
                return out;
            }
            let rest: Vec<SeqOp> = buffered.into_iter().filter(|o| o.seq > c.cursor).collect();
            if let Some(last) = rest.last() {
                c.cursor = last.seq;
                out.extend(ops_frames(conn, rest));
            }
        }
        out
    }

    /// Ops committed by any path (this room's pushes, HTTP ingest, another
    /// server), in seq order. Ops the room has seen are ignored; ops above
    /// a gap wait for it (and the gap is asked for once).
    pub fn on_committed(&mut self, ops: Vec<SeqOp>) -> Vec<Action> {
        let mut out = Vec::new();
        for op in ops {
            if op.seq > self.head_seq {
                self.pending.insert(op.seq, op);
            }
        }
        let mut ready = Vec::new();
        while let Some(op) = self.pending.remove(&(self.head_seq + 1)) {
            self.head_seq = op.seq;
            ready.push(op);
        }
        if let Some((&last, _)) = self.pending.iter().next_back() {
            self.known_head = self.known_head.max(last);
        }
        self.known_head = self.known_head.max(self.head_seq);
        if self.pending.len() > self.limits.max_pending_ops {
            // The gap never filled: drop what waits (the gap fetch, or a
            // connection's catch-up from the database, still delivers it).
            self.pending.clear();
        }
        out.extend(self.ask_gap());
        if ready.is_empty() {
            return out;
        }
        let limit = self.limits.max_buffered_ops;
        for (id, c) in self.conns.iter_mut() {
            match &mut c.phase {
                Phase::AwaitingHello => {}
                Phase::Live => {
                    let send: Vec<SeqOp> =
                        ready.iter().filter(|o| o.seq > c.cursor).cloned().collect();
                    if let Some(last) = send.last() {
                        c.cursor = last.seq;
                        out.extend(ops_frames(*id, send));
                    }
                }
                Phase::CatchingUp { upto, buffered } => {
                    buffered.extend(ready.iter().filter(|o| o.seq > *upto).cloned());
                    if buffered.len() > limit {
                        out.push(Self::close(*id, close::TOO_SLOW, "too far behind"));
                    }
                }
            }
        }
        out.extend(self.unpark());
        out
    }

    /// The database's head is at least `seq` (a commit notice from another
    /// server process, or from any path): fetch what the room has not seen.
    pub fn on_head(&mut self, seq: u64) -> Vec<Action> {
        self.known_head = self.known_head.max(seq);
        self.ask_gap().into_iter().collect()
    }

    /// The host's gap fetch failed: the next [`Room::on_tick`] asks again.
    ///
    /// Parked hellos whose cursor is still ahead are told to load a
    /// snapshot (the returned actions): the database has less than they do.
    pub fn on_gap_failed(&mut self) -> Vec<Action> {
        self.gap_asked = self.head_seq;
        let head = self.head_seq;
        let ahead: Vec<ConnId> = self
            .parked
            .iter()
            .filter(|(_, (_, cursor))| *cursor > head)
            .map(|(&c, _)| c)
            .collect();
        ahead
            .into_iter()
            .map(|conn| {
                self.parked.remove(&conn);
                Action::Send {
                    conn,
                    msg: ServerMsg::SnapshotRequired { head_seq: head },
                }
            })
            .collect()
    }

    /// A fetch of `(head_seq, known_head]` unless one covering it was asked.
    fn ask_gap(&mut self) -> Option<Action> {
        if self.known_head > self.gap_asked.max(self.head_seq) {
            self.gap_asked = self.known_head;
            Some(Action::FetchGap {
                after: self.head_seq,
                upto: self.known_head,
            })
        } else {
            None
        }
    }

    /// The host committed `conn`'s push: `committed` is the database's
    /// answer (new ops, duplicates with their old seqs, restores). New ops
    /// and restores go to everyone, author included, then `ack`.
    pub fn on_ingested(&mut self, conn: ConnId, batch: u64, committed: Vec<SeqOp>) -> Vec<Action> {
        let mut out = self.on_committed(committed);
        if let Some(c) = self.conns.get_mut(&conn) {
            c.inflight.remove(&batch);
            out.push(Action::Send {
                conn,
                msg: ServerMsg::Ack { batch },
            });
        }
        out
    }

    /// The host committed several pushes together (a group commit):
    /// `results` in push order, each the database's answer or the refusal
    /// (code, message). Every socket gets the group's new ops in one frame,
    /// then each author its acks and errors.
    pub fn on_ingested_group(&mut self, results: Vec<(ConnId, u64, IngestResult)>) -> Vec<Action> {
        let mut committed = Vec::new();
        let mut answers = Vec::with_capacity(results.len());
        for (conn, batch, result) in results {
            match result {
                IngestResult::Committed(ops) => {
                    committed.extend(ops);
                    answers.push((conn, batch, None));
                }
                IngestResult::Failed { code, message } => {
                    answers.push((conn, batch, Some((code, message))));
                }
            }
        }
        committed.sort_by_key(|o| o.seq);
        let mut out = self.on_committed(committed);
        for (conn, batch, failure) in answers {
            let Some(c) = self.conns.get_mut(&conn) else {
                continue;
            };
            c.inflight.remove(&batch);
            out.push(match failure {
                None => Action::Send {
                    conn,
                    msg: ServerMsg::Ack { batch },
                },
                Some((code, message)) => Self::error(conn, &code, message, Some(batch)),
            });
        }
        out
    }

    /// The host could not commit `conn`'s push (nothing of it committed).
    pub fn on_ingest_failed(
        &mut self,
        conn: ConnId,
        batch: u64,
        code: &str,
        message: &str,
    ) -> Vec<Action> {
        match self.conns.get_mut(&conn) {
            Some(c) => {
                c.inflight.remove(&batch);
                vec![Self::error(conn, code, message, Some(batch))]
            }
            None => Vec::new(),
        }
    }

    /// The socket closed (or the host closed it).
    pub fn on_close(&mut self, conn: ConnId) -> Vec<Action> {
        self.parked.remove(&conn);
        match self.conns.remove(&conn) {
            Some(c) if c.phase != Phase::AwaitingHello => self.presence(None),
            _ => Vec::new(),
        }
    }

    /// Time passed: connections whose token expired are closed.
    /// A failed gap fetch is asked again.
    pub fn on_tick(&mut self, now_s: u64, leeway_s: u64) -> Vec<Action> {
        let mut out: Vec<Action> = self
            .conns
            .iter()
            .filter(|(_, c)| now_s > c.claims.exp.saturating_add(leeway_s))
            .map(|(id, _)| Self::close(*id, close::TOKEN_EXPIRED, "token expired"))
            .collect();
        out.extend(self.ask_gap());
        out
    }

    /// Closes everyone (shutdown).
    pub fn close_all(&mut self) -> Vec<Action> {
        self.conns
            .keys()
            .map(|id| Self::close(*id, close::GOING_AWAY, "server shutting down"))
            .collect()
    }

    /// The room's own invariants (tests run it after every step).
    pub fn check_invariants(&self) -> Result<(), String> {
        if self
            .pending
            .keys()
            .next()
            .is_some_and(|&k| k <= self.head_seq + 1)
        {
            return Err("a pending commit is not above a gap".into());
        }
        if self.known_head < self.head_seq
            || self
                .pending
                .keys()
                .next_back()
                .is_some_and(|&k| k > self.known_head)
        {
            return Err("known_head below a seen commit".into());
        }
        for (id, (_, cursor)) in &self.parked {
            if *cursor <= self.head_seq {
                return Err(format!(
                    "conn {id} parked at {cursor}, the head has passed it"
                ));
            }
            if self
                .conns
                .get(id)
                .is_none_or(|c| c.phase != Phase::AwaitingHello)
            {
                return Err(format!("parked conn {id} is not awaiting hello"));
            }
        }
        for (id, c) in &self.conns {
            if c.cursor > self.head_seq {
                return Err(format!("conn {id} is ahead of the head"));
            }
            if let Phase::CatchingUp { upto, buffered } = &c.phase {
                if !buffered.windows(2).all(|w| w[0].seq < w[1].seq) {
                    return Err(format!("conn {id} buffer not sorted"));
                }
                if buffered.iter().any(|o| o.seq <= *upto) {
                    return Err(format!("conn {id} buffers an op its catch-up covers"));
                }
            }
        }
        Ok(())
    }
}
