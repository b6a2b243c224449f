//! The realtime room of one thoughtspace, as a pure state machine.
//!
//! The host (the sync server's native endpoint, or the Durable Object) owns
//! the sockets and the I/O; the room decides. Each `on_*` call returns
//! [`Action`]s for the host to carry out in order: send a frame, close a
//! socket, commit a group of pushes, fetch one page of committed ops. The
//! room guarantees that every connection receives committed ops in seq
//! order with no gap and no duplicate across catch-up and live delivery,
//! that nothing is sent before it is committed (pushes go out as
//! [`Action::Commit`] and come back through [`Room::on_commit`]), that
//! pushes commit in arrival order, grouped, one group at a time, and that
//! memory per connection is bounded (a connection that would buffer too
//! much is closed).
//!
//! # Layout
//!
//! - `mod.rs`: [`Room`]: connections, hello, catch-up and gap paging,
//!   delivery, the peers list, token expiry.
//! - `commit.rs`: the commit pipeline ([`Push`], group formation).
//! - `frames.rs`: committed ops cut into frames under the size limit.
//! - `presence.rs`: each connection's presence state, relayed, rate-limited
//!   and expired.
//!
//! Subtree connections (a hello with a `root`, or a token with a `root`
//! claim) get no `ops`: whenever the head passes their cursor the room
//! asks the host for the change of their subtree since it
//! ([`Action::Subtree`], answered with [`Room::on_subtree`]), one request
//! per connection at a time, and holds their acks until a change that
//! covers the push has been sent.

mod commit;
mod frames;
mod presence;

use std::collections::{BTreeMap, BTreeSet};

use crate::auth::{Claims, Role};
use crate::clock::Stamp;
use crate::error::ErrorCode;
use crate::id::{NodeId, ReplicaId};
use crate::protocol::{ClientMsg, Peer, ProtocolError, SeqOp, ServerMsg};

pub use crate::error::close;
use commit::CommitQueue;
pub use commit::{GroupLimits, Push};
use frames::ops_frames;
use presence::ConnPresence;
pub use presence::{PRESENCE_PER_S, PRESENCE_TTL_MS};

/// A connection's id, unique in the room while it is open.
pub type ConnId = u64;

/// Connections above which a presence change waits for the next tick: a
/// `peers` frame to every connection costs O(n) frames of O(n) peers, so
/// one per hello would make a room filling up cost O(n³) bytes.
pub const PRESENCE_BATCH_ABOVE: usize = 64;

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
    /// Send the same frame to each of these connections, in this order:
    /// encode it once (a subtree change goes to every connection that
    /// follows the same root from the same cursor).
    Broadcast {
        /// To whom.
        conns: Vec<ConnId>,
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
    /// Commit these pushes together (one transaction, each push on its own:
    /// a refused push changes nothing), then call [`Room::on_commit`] with
    /// one result per push, in this order. The room asks for the next
    /// group only after that.
    Commit {
        /// The pushes, in arrival order.
        pushes: Vec<Push>,
    },
    /// Fetch one page of committed ops, `after < seq <= upto`, at most
    /// `limit`, in seq order, and pass it to [`Room::on_catch_up`] (or
    /// [`Room::on_catch_up_failed`]). The room asks for the next page.
    CatchUp {
        /// For whom.
        conn: ConnId,
        /// Exclusive lower bound.
        after: u64,
        /// Inclusive upper bound.
        upto: u64,
        /// Page size.
        limit: u32,
    },
    /// Committed ops were reported with a gap before them (or a notice says
    /// the database is ahead): fetch one page `after < seq <= upto`, at most
    /// `limit`, and pass it to [`Room::on_gap`] (or [`Room::on_gap_failed`]).
    FetchGap {
        /// Exclusive lower bound.
        after: u64,
        /// Inclusive upper bound.
        upto: u64,
        /// Page size.
        limit: u32,
    },
    /// Work out what changed in the subtree of each of `roots` from seq
    /// `after` to the database's head now (at least the room's head), and
    /// pass the frames to [`Room::on_subtree`] (or
    /// [`Room::on_subtree_failed`]).
    Subtree {
        /// The seq the connections are at.
        after: u64,
        /// Their subtree roots.
        roots: BTreeSet<NodeId>,
    },
}

/// The host's answer for one root of an [`Action::Subtree`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubtreeAnswer {
    /// The `subtree` frames of the change, the last one carrying the seq
    /// it reaches.
    Frames(Vec<ServerMsg>),
    /// The change cannot be sent as frames (the cursor is older than the
    /// change record, or too much moved in): the connection is told to load
    /// a snapshot.
    SnapshotRequired {
        /// The head seq now.
        head_seq: u64,
    },
}

/// How one push of a group commit ended (see [`Room::on_commit`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IngestResult {
    /// Committed: the database's answer to relay (new ops and restores
    /// with seqs; duplicates left out, they were relayed when they
    /// committed).
    Committed(Vec<SeqOp>),
    /// Refused or failed; nothing of it committed.
    Failed {
        /// The code.
        code: ErrorCode,
        /// Detail for the client (never database or internal text).
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
    /// Ops per catch-up or gap page.
    pub page: u32,
    /// Group commit sizes.
    pub group: GroupLimits,
}

impl Default for RoomLimits {
    fn default() -> Self {
        RoomLimits {
            max_buffered_ops: 10_000,
            max_inflight_pushes: 16,
            max_pending_ops: 100_000,
            page: 1_000,
            group: GroupLimits::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    /// Connected, no hello yet.
    AwaitingHello,
    /// Catch-up of `(cursor, upto]` is running, one page asked at a time;
    /// live ops above `upto` wait in `buffered` (invariant: sorted, all
    /// above `upto`).
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
    /// The subtree of a subtree connection (`None`: the whole space).
    root: Option<NodeId>,
    /// A subtree connection's change request is out (invariant: at most
    /// one per connection).
    subtree_in_flight: bool,
    /// A subtree connection's committed pushes, acked once its cursor
    /// reaches the seq (batch, highest seq of the push).
    acks_waiting: Vec<(u64, u64)>,
    /// Its presence state and relay budget.
    presence: ConnPresence,
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
    /// Highest seq known committed (from commits or head notices); the
    /// room fetches up to it when it is above `head_seq`.
    known_head: u64,
    /// The upper end of the gap page asked for and not answered yet
    /// (invariant: at most one gap fetch in flight).
    gap_in_flight: Option<u64>,
    /// Hellos with a cursor above `head_seq`, waiting for the gap fetch
    /// (invariant: their connections are still awaiting hello).
    parked: BTreeMap<ConnId, (ReplicaId, u64)>,
    /// Pushes waiting for their commit and the group in flight.
    commits: CommitQueue,
    /// The lowest cursor catch-up can serve (`None`: any, even none); a
    /// hello below it, or with no cursor, gets `snapshot_required`.
    min_cursor: Option<u64>,
    /// The host answers [`Action::Subtree`] (a room without it refuses a
    /// hello with a root).
    subtree_feeds: bool,
    /// A presence change is waiting for the next tick (set only while the
    /// room holds more than [`PRESENCE_BATCH_ABOVE`] connections).
    presence_due: bool,
    /// The host's clock, ms ([`Room::set_clock`], ticks): never goes back.
    now_ms: u64,
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
            known_head: head_seq,
            gap_in_flight: None,
            parked: BTreeMap::new(),
            commits: CommitQueue::default(),
            min_cursor: None,
            subtree_feeds: false,
            presence_due: false,
            now_ms: 0,
        }
    }

    /// Whether the host answers [`Action::Subtree`]: without it a hello
    /// with a root (or by a token with a `root` claim) is refused
    /// `out_of_scope`.
    pub fn set_subtree_feeds(&mut self, on: bool) {
        self.subtree_feeds = on;
    }

    /// The lowest cursor catch-up can serve: an imported space's state is
    /// not in its log, and a truncated log lacks its first ops. A hello
    /// below it, or with no cursor, is told to load a snapshot.
    pub fn set_min_cursor(&mut self, min_cursor: Option<u64>) {
        self.min_cursor = min_cursor;
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

    /// Pushes waiting for their commit or committing.
    pub fn pushes_waiting(&self) -> usize {
        self.commits.len()
    }

    /// Who is connected (said hello).
    pub fn peers(&self) -> Vec<Peer> {
        self.peers_seen_by(None)
    }

    /// Who a connection whose token is limited to the subtree of `scope`
    /// sees connected: only the connections that follow that same subtree
    /// (who else works in the space is outside it); `None`: everyone.
    fn peers_seen_by(&self, scope: Option<NodeId>) -> Vec<Peer> {
        self.conns
            .iter()
            .filter(|(_, c)| c.phase != Phase::AwaitingHello)
            .filter(|(_, c)| scope.is_none() || c.root == scope)
            .map(|(id, c)| Peer {
                conn: *id,
                sub: c.claims.sub.clone(),
                // Not shown: another user could claim it before its first
                // push (replica owners).
                replica: None,
                state: c.presence.state.clone(),
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
                root: None,
                subtree_in_flight: false,
                acks_waiting: Vec::new(),
                presence: ConnPresence::new(self.now_ms),
            },
        );
        Vec::new()
    }

    /// The host lost its memory (a Durable Object woke from hibernation)
    /// and re-adds a connection from what it kept with the socket: its
    /// claims, and, if it had said hello, its replica and the highest seq
    /// sent to it, and its subtree root if it is a subtree connection. A
    /// connection behind the room's head catches up (the returned
    /// `CatchUp`, or `Subtree`); restore the connection with the highest
    /// cursor first, or create the room with that head.
    pub fn restore(
        &mut self,
        conn: ConnId,
        claims: Claims,
        hello: Option<(ReplicaId, u64)>,
        root: Option<NodeId>,
    ) -> Vec<Action> {
        let Some((replica, cursor)) = hello else {
            return self.on_connect(conn, claims);
        };
        if cursor > self.head_seq {
            // It was sent these ops, so they are committed.
            self.head_seq = cursor;
            self.known_head = self.known_head.max(cursor);
            self.pending.retain(|&seq, _| seq > cursor + 1);
        }
        let head = self.head_seq;
        let root = root.or(claims.root);
        self.conns.insert(
            conn,
            Conn {
                claims,
                phase: Phase::Live,
                cursor,
                replica: Some(replica),
                inflight: BTreeSet::new(),
                root,
                subtree_in_flight: false,
                acks_waiting: Vec::new(),
                presence: ConnPresence::new(self.now_ms),
            },
        );
        self.start_catch_up(conn, head)
    }

    /// The subtree root of a subtree connection (what a host that can lose
    /// its memory keeps with the socket, with [`Room::conn_cursor`]).
    pub fn conn_root(&self, conn: ConnId) -> Option<NodeId> {
        self.conns.get(&conn)?.root
    }

    /// The highest seq sent to `conn` and its replica, if it said hello
    /// (what a host that can lose its memory keeps with the socket).
    pub fn conn_cursor(&self, conn: ConnId) -> Option<(ReplicaId, u64)> {
        let c = self.conns.get(&conn)?;
        Some((c.replica?, c.cursor))
    }

    fn error(
        conn: ConnId,
        code: ErrorCode,
        message: impl Into<String>,
        batch: Option<u64>,
    ) -> Action {
        Action::Send {
            conn,
            msg: ServerMsg::Error {
                code,
                message: message.into(),
                batch,
                retry_after_ms: None,
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

    /// An `error` frame for `code`, then the close its table entry names.
    fn refuse_and_close(conn: ConnId, code: ErrorCode, message: impl Into<String>) -> Vec<Action> {
        let mut out = vec![Self::error(conn, code, message, None)];
        if let Some(close) = code.close_code() {
            out.push(Self::close(conn, close, code.as_str()));
        }
        out
    }

    /// `peers` to every welcomed connection but `except`; in a room of more
    /// than [`PRESENCE_BATCH_ABOVE`] connections, at the next tick instead
    /// (to everyone).
    fn presence(&mut self, except: Option<ConnId>) -> Vec<Action> {
        if self.conns.len() > PRESENCE_BATCH_ABOVE {
            self.presence_due = true;
            return Vec::new();
        }
        self.presence_now(except)
    }

    fn presence_now(&self, except: Option<ConnId>) -> Vec<Action> {
        let everyone = self.peers();
        self.conns
            .iter()
            .filter(|(id, c)| Some(**id) != except && c.phase != Phase::AwaitingHello)
            .map(|(id, c)| Action::Send {
                conn: *id,
                msg: ServerMsg::Peers {
                    peers: match c.claims.root {
                        None => everyone.clone(),
                        scope => self.peers_seen_by(scope),
                    },
                },
            })
            .collect()
    }

    /// Puts `conn` (now live at its cursor) into catch-up of `(cursor,
    /// upto]` when it is behind, asking for the first page.
    fn start_catch_up(&mut self, conn: ConnId, upto: u64) -> Vec<Action> {
        let page = self.limits.page;
        let Some(c) = self.conns.get_mut(&conn) else {
            return Vec::new();
        };
        if c.cursor >= upto {
            return Vec::new();
        }
        if c.root.is_some() {
            return self.ask_subtree(&[conn]);
        }
        c.phase = Phase::CatchingUp {
            upto,
            buffered: Vec::new(),
        };
        vec![Action::CatchUp {
            conn,
            after: c.cursor,
            upto,
            limit: page_limit(c.cursor, upto, page),
        }]
    }

    /// Welcomes `conn` (its hello named `cursor`, at most the head) and
    /// starts its catch-up.
    fn finish_hello(&mut self, conn: ConnId, replica: ReplicaId, cursor: u64) -> Vec<Action> {
        let head = self.head_seq;
        if let Some(c) = self.conns.get_mut(&conn) {
            c.replica = Some(replica);
            c.cursor = cursor;
            c.phase = Phase::Live;
        }
        let mut out = vec![Action::Send {
            conn,
            msg: ServerMsg::Welcome {
                space: self.space.clone(),
                head_seq: head,
                horizon: self.horizon,
                peers: self.peers_seen_by(self.conns.get(&conn).and_then(|c| c.claims.root)),
                conn: Some(conn),
            },
        }];
        out.extend(self.start_catch_up(conn, head));
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
            Err(e @ ProtocolError::BadOps { batch, .. }) => {
                return vec![Self::error(conn, e.code(), e.to_string(), Some(batch))];
            }
            Err(e) => return Self::refuse_and_close(conn, e.code(), e.to_string()),
        };
        match msg {
            ClientMsg::Ping {} => vec![Action::Send {
                conn,
                msg: ServerMsg::Pong,
            }],
            ClientMsg::Presence { state } => self.on_presence(conn, state),
            ClientMsg::Hello {
                replica,
                cursor,
                root,
                ..
            } => {
                if c.phase != Phase::AwaitingHello || self.parked.contains_key(&conn) {
                    return Self::refuse_and_close(
                        conn,
                        ErrorCode::Protocol,
                        "hello was already said",
                    );
                }
                let root = match (c.claims.root, root) {
                    (Some(claim), Some(asked)) if claim != asked => {
                        return Self::refuse_and_close(
                            conn,
                            ErrorCode::OutOfScope,
                            "a token with a root claim follows that root: hello with it or none",
                        );
                    }
                    (claim, asked) => claim.or(asked),
                };
                if root.is_some() && !self.subtree_feeds {
                    return Self::refuse_and_close(
                        conn,
                        ErrorCode::OutOfScope,
                        "this endpoint has no subtree feed",
                    );
                }
                if c.claims.rid.is_some_and(|rid| rid != replica) {
                    return Self::refuse_and_close(
                        conn,
                        ErrorCode::WrongReplica,
                        "the token is bound to another replica",
                    );
                }
                if let Some(min) = self.min_cursor
                    && cursor.is_none_or(|c| c < min)
                {
                    return vec![Action::Send {
                        conn,
                        msg: ServerMsg::SnapshotRequired {
                            head_seq: self.head_seq,
                        },
                    }];
                }
                if root.is_some() && cursor.is_none() {
                    // A subtree replica starts from its subtree snapshot.
                    return vec![Action::Send {
                        conn,
                        msg: ServerMsg::SnapshotRequired {
                            head_seq: self.head_seq,
                        },
                    }];
                }
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.root = root;
                }
                let cursor = cursor.unwrap_or(0);
                if cursor > self.head_seq {
                    // Ahead of what this room has seen: another process may
                    // have committed it. Fetch up to it; the hello finishes
                    // when the room gets there, or the client is told to
                    // load a snapshot when the database has less.
                    self.parked.insert(conn, (replica, cursor));
                    return self.ask_gap().into_iter().collect();
                }
                self.finish_hello(conn, replica, cursor)
            }
            ClientMsg::Push { batch, ops } => {
                if c.phase == Phase::AwaitingHello {
                    return vec![Self::error(
                        conn,
                        ErrorCode::Protocol,
                        "say hello first",
                        Some(batch),
                    )];
                }
                if !c.claims.role.can_write() {
                    return vec![Self::error(
                        conn,
                        ErrorCode::Forbidden,
                        "this token may not push",
                        Some(batch),
                    )];
                }
                if c.inflight.len() >= self.limits.max_inflight_pushes {
                    return vec![Self::error(
                        conn,
                        ErrorCode::TooManyPushes,
                        "wait for acks before pushing more",
                        Some(batch),
                    )];
                }
                if c.inflight.contains(&batch) {
                    return vec![Self::error(
                        conn,
                        ErrorCode::DuplicateBatch,
                        format!("batch {batch} is in flight: wait for its answer"),
                        Some(batch),
                    )];
                }
                // Limits are checked here, so a bad op never reaches the
                // database (Postgres refuses some, a NUL for one, with an
                // error that is not the client's to read).
                if let Some((i, e)) = ops
                    .iter()
                    .enumerate()
                    .find_map(|(i, o)| o.validate().err().map(|e| (i, e)))
                {
                    return vec![Self::error(
                        conn,
                        e.code(),
                        format!("op {i}: {e}"),
                        Some(batch),
                    )];
                }
                let (author, sub) = match c.claims.role {
                    Role::Service => (None, None),
                    _ => (c.claims.rid.or(c.replica), Some(c.claims.sub.clone())),
                };
                let root = c.claims.root;
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.inflight.insert(batch);
                }
                self.commits.push(Push {
                    conn,
                    batch,
                    author,
                    sub,
                    root,
                    ops,
                });
                self.next_commit().into_iter().collect()
            }
        }
    }

    /// The next group to commit, if none is in flight.
    fn next_commit(&mut self) -> Option<Action> {
        self.commits
            .next_group(self.limits.group)
            .map(|pushes| Action::Commit { pushes })
    }

    /// A page of catch-up for `conn` (ops in seq order, `after < seq <=
    /// upto` of the [`Action::CatchUp`]). The room asks for the next page,
    /// or turns the connection live when it reached `upto`.
    pub fn on_catch_up(&mut self, conn: ConnId, ops: Vec<SeqOp>) -> Vec<Action> {
        let page = self.limits.page;
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
        let progressed = !fresh.is_empty();
        if let Some(last) = fresh.last() {
            c.cursor = last.seq;
            out.extend(ops_frames(conn, fresh));
        }
        if c.cursor < upto {
            if !progressed {
                // The database has less than it committed: it cannot serve
                // this connection now. The client reconnects.
                out.extend(self.on_catch_up_failed(conn));
                return out;
            }
            out.push(Action::CatchUp {
                conn,
                after: c.cursor,
                upto,
                limit: page_limit(c.cursor, upto, page),
            });
            return out;
        }
        let buffered = match std::mem::replace(&mut c.phase, Phase::Live) {
            Phase::CatchingUp { buffered, .. } => buffered,
            Phase::AwaitingHello | Phase::Live => Vec::new(),
        };
        let rest: Vec<SeqOp> = buffered.into_iter().filter(|o| o.seq > c.cursor).collect();
        if let Some(last) = rest.last() {
            c.cursor = last.seq;
            out.extend(ops_frames(conn, rest));
        }
        out
    }

    /// The host could not fetch `conn`'s catch-up page: the connection is
    /// told `unavailable` and closed (its client reconnects from its cursor).
    pub fn on_catch_up_failed(&mut self, conn: ConnId) -> Vec<Action> {
        if !self.conns.contains_key(&conn) {
            return Vec::new();
        }
        Self::refuse_and_close(conn, ErrorCode::Unavailable, "catch-up failed; reconnect")
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
        let mut behind = Vec::new();
        for (id, c) in self.conns.iter_mut() {
            if c.root.is_some() {
                if c.phase == Phase::Live && c.cursor < self.head_seq {
                    behind.push(*id);
                }
                continue;
            }
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
                        out.push(Self::close(
                            *id,
                            close::TOO_SLOW,
                            ErrorCode::TooSlow.as_str(),
                        ));
                    }
                }
            }
        }
        out.extend(self.ask_subtree(&behind));
        out.extend(self.unpark());
        out
    }

    /// One [`Action::Subtree`] per distinct cursor for those of `conns`
    /// that are live subtree connections with no request out.
    fn ask_subtree(&mut self, conns: &[ConnId]) -> Vec<Action> {
        let mut by_cursor: BTreeMap<u64, BTreeSet<NodeId>> = BTreeMap::new();
        for id in conns {
            let Some(c) = self.conns.get_mut(id) else {
                continue;
            };
            let Some(root) = c.root else { continue };
            if c.subtree_in_flight || c.phase != Phase::Live {
                continue;
            }
            c.subtree_in_flight = true;
            by_cursor.entry(c.cursor).or_default().insert(root);
        }
        by_cursor
            .into_iter()
            .map(|(after, roots)| Action::Subtree { after, roots })
            .collect()
    }

    /// The host's answer to [`Action::Subtree`] `after`: for each root,
    /// the frames to send to the subtree connections at that cursor (whose
    /// cursor then moves to the frames' head), or `snapshot_required`.
    /// Acks waiting for the new cursor go out after the frames.
    pub fn on_subtree(
        &mut self,
        after: u64,
        answers: BTreeMap<NodeId, SubtreeAnswer>,
    ) -> Vec<Action> {
        let mut out = Vec::new();
        let mut again = Vec::new();
        for (root, answer) in answers {
            let conns: Vec<ConnId> = self
                .conns
                .iter()
                .filter(|(_, c)| c.root == Some(root) && c.subtree_in_flight && c.cursor == after)
                .map(|(id, _)| *id)
                .collect();
            if conns.is_empty() {
                continue;
            }
            match answer {
                SubtreeAnswer::Frames(frames) => {
                    let head = frames.iter().find_map(|f| match f {
                        ServerMsg::Subtree { head_seq, .. } => *head_seq,
                        _ => None,
                    });
                    out.extend(frames.into_iter().map(|msg| Action::Broadcast {
                        conns: conns.clone(),
                        msg,
                    }));
                    for id in conns {
                        let Some(c) = self.conns.get_mut(&id) else {
                            continue;
                        };
                        c.subtree_in_flight = false;
                        if let Some(head) = head {
                            c.cursor = c.cursor.max(head);
                        }
                        let cursor = c.cursor;
                        c.acks_waiting.retain(|&(batch, seq)| {
                            if seq <= cursor {
                                out.push(Action::Send {
                                    conn: id,
                                    msg: ServerMsg::Ack { batch },
                                });
                                false
                            } else {
                                true
                            }
                        });
                        if cursor < self.head_seq {
                            again.push(id);
                        }
                    }
                }
                SubtreeAnswer::SnapshotRequired { head_seq } => {
                    for id in conns {
                        if let Some(c) = self.conns.get_mut(&id) {
                            c.subtree_in_flight = false;
                        }
                        out.push(Action::Send {
                            conn: id,
                            msg: ServerMsg::SnapshotRequired { head_seq },
                        });
                        out.push(Self::close(id, 1000, "load a snapshot"));
                    }
                }
            }
        }
        out.extend(self.ask_subtree(&again));
        out
    }

    /// The host could not work out a subtree change for `after`: those
    /// connections are told `unavailable` and closed (their clients
    /// reconnect from their cursors).
    pub fn on_subtree_failed(&mut self, after: u64, roots: &BTreeSet<NodeId>) -> Vec<Action> {
        let failed: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| {
                c.subtree_in_flight
                    && c.cursor == after
                    && c.root.is_some_and(|r| roots.contains(&r))
            })
            .map(|(id, _)| *id)
            .collect();
        failed
            .into_iter()
            .flat_map(|id| {
                if let Some(c) = self.conns.get_mut(&id) {
                    c.subtree_in_flight = false;
                }
                Self::refuse_and_close(
                    id,
                    ErrorCode::Unavailable,
                    "the subtree feed failed; reconnect",
                )
            })
            .collect()
    }

    /// The database's head is at least `seq` (a commit notice from another
    /// server process, or from any path): fetch what the room has not seen.
    pub fn on_head(&mut self, seq: u64) -> Vec<Action> {
        if self.commits.committing() {
            // Most notices are for the group in flight: its answer brings
            // the ops without a fetch. Looked at when it is answered.
            self.commits.noticed = self.commits.noticed.max(seq);
            return Vec::new();
        }
        self.known_head = self.known_head.max(seq);
        self.ask_gap().into_iter().collect()
    }

    /// A page of the gap fetch ([`Action::FetchGap`]): committed ops in seq
    /// order. An empty page means the database has less than was asked:
    /// hellos parked above it are told to load a snapshot.
    pub fn on_gap(&mut self, ops: Vec<SeqOp>) -> Vec<Action> {
        self.gap_in_flight = None;
        if ops.is_empty() {
            let head = self.head_seq;
            // What the room believed beyond the database was wrong too.
            self.known_head = head.max(self.pending.keys().next_back().copied().unwrap_or(0));
            let ahead: Vec<ConnId> = self
                .parked
                .iter()
                .filter(|(_, (_, cursor))| *cursor > head)
                .map(|(&c, _)| c)
                .collect();
            return ahead
                .into_iter()
                .map(|conn| {
                    self.parked.remove(&conn);
                    Action::Send {
                        conn,
                        msg: ServerMsg::SnapshotRequired { head_seq: head },
                    }
                })
                .collect();
        }
        self.on_committed(ops)
    }

    /// The host's gap fetch failed (the database did not answer): the next
    /// event or [`Room::on_tick`] asks again.
    pub fn on_gap_failed(&mut self) -> Vec<Action> {
        self.gap_in_flight = None;
        Vec::new()
    }

    /// The highest seq the room wants to have: what it knows committed, and
    /// the cursors of parked hellos.
    fn gap_target(&self) -> u64 {
        let parked = self.parked.values().map(|&(_, c)| c).max().unwrap_or(0);
        self.known_head.max(parked)
    }

    /// A page of `(head_seq, target]` unless a gap page is in flight.
    fn ask_gap(&mut self) -> Option<Action> {
        let target = self.gap_target();
        if self.gap_in_flight.is_some() || target <= self.head_seq {
            return None;
        }
        self.gap_in_flight = Some(target);
        Some(Action::FetchGap {
            after: self.head_seq,
            upto: target,
            limit: page_limit(self.head_seq, target, self.limits.page),
        })
    }

    /// The host committed the group of the last [`Action::Commit`]:
    /// `results` has one entry per push, in push order. The next group, if
    /// pushes wait, is asked for first (a host that starts its actions in
    /// order then has the database commit it while it writes this group's
    /// frames); then every socket gets the group's new ops in one frame,
    /// then each author its acks and errors.
    pub fn on_commit(&mut self, results: Vec<IngestResult>) -> Vec<Action> {
        let pushes = self.commits.finish();
        let mut committed = Vec::new();
        let mut answers = Vec::with_capacity(pushes.len());
        let mut results = results.into_iter();
        for (conn, batch) in pushes {
            // A host that answered fewer pushes than it was given: the rest
            // is reported as failed, never as committed.
            let result = results.next().unwrap_or(IngestResult::Failed {
                code: ErrorCode::Internal,
                message: "the push was not answered".into(),
            });
            match result {
                IngestResult::Committed(ops) => {
                    let last = ops.iter().map(|o| o.seq).max();
                    committed.extend(ops);
                    answers.push((conn, batch, None, last));
                }
                IngestResult::Failed { code, message } => {
                    answers.push((conn, batch, Some((code, message)), None));
                }
            }
        }
        committed.sort_by_key(|o| o.seq);
        committed.dedup_by_key(|o| o.seq);
        let mut out = self.on_committed(committed);
        // A push of duplicates only committed nothing now: its ops were
        // committed before, at most at the head known now.
        let known = self.known_head.max(self.head_seq);
        let mut behind = Vec::new();
        for (conn, batch, failure, last) in answers {
            let Some(c) = self.conns.get_mut(&conn) else {
                continue;
            };
            c.inflight.remove(&batch);
            if let (Some(_), None) = (c.root, &failure) {
                let seq = last.unwrap_or(known);
                if seq > c.cursor {
                    // Acked once the subtree change covering it has been
                    // sent.
                    c.acks_waiting.push((batch, seq));
                    behind.push(conn);
                    continue;
                }
            }
            out.push(match failure {
                None => Action::Send {
                    conn,
                    msg: ServerMsg::Ack { batch },
                },
                Some((code, message)) => Self::error(conn, code, message, Some(batch)),
            });
        }
        out.extend(self.ask_subtree(&behind));
        let noticed = std::mem::take(&mut self.commits.noticed);
        out.extend(self.on_head(noticed));
        // After the notice: one that came during this commit is looked at
        // now, not held for the next.
        if let Some(next) = self.next_commit() {
            out.insert(0, next);
        }
        out
    }

    /// The socket closed (or the host closed it).
    pub fn on_close(&mut self, conn: ConnId) -> Vec<Action> {
        self.parked.remove(&conn);
        // Its presence goes at once, even where the peers list waits for
        // the tick.
        let mut out = match self.conns.get_mut(&conn) {
            Some(c) if c.presence.state.is_some() => {
                c.presence.state = None;
                self.relay_presence(conn)
            }
            _ => Vec::new(),
        };
        match self.conns.remove(&conn) {
            Some(c) if c.phase != Phase::AwaitingHello => out.extend(self.presence(None)),
            _ => {}
        }
        out
    }

    /// Time passed (`now_s` also moves the room's clock): a peers list
    /// and presence states that waited go out, presence states past their
    /// time to live are cleared, connections whose token expired are
    /// closed, a failed gap fetch is asked again.
    pub fn on_tick(&mut self, now_s: u64, leeway_s: u64) -> Vec<Action> {
        self.set_clock(now_s.saturating_mul(1000));
        let mut out = if std::mem::take(&mut self.presence_due) {
            self.presence_now(None)
        } else {
            Vec::new()
        };
        out.extend(self.presence_tick());
        out.extend(
            self.conns
                .iter()
                .filter(|(_, c)| now_s > c.claims.exp.saturating_add(leeway_s))
                .flat_map(|(id, _)| {
                    Self::refuse_and_close(*id, ErrorCode::TokenExpired, "the token expired")
                }),
        );
        out.extend(self.ask_gap());
        out
    }

    /// The revocation list changed: connections whose token it now refuses
    /// are told `token_revoked` and closed 4005.
    pub fn on_revoked(&mut self, revoked: &crate::keys::Revocations) -> Vec<Action> {
        self.conns
            .iter()
            .filter(|(_, c)| revoked.revokes(&c.claims))
            .flat_map(|(id, _)| {
                Self::refuse_and_close(*id, ErrorCode::TokenRevoked, "the token has been revoked")
            })
            .collect()
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
            // A subtree connection's cursor is the database's head when
            // its last change was read, which may be ahead of the room.
            if c.root.is_none() && c.cursor > self.head_seq {
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

/// The page size for `(after, upto]`: at most `page`.
fn page_limit(after: u64, upto: u64, page: u32) -> u32 {
    u32::try_from(upto.saturating_sub(after))
        .unwrap_or(u32::MAX)
        .clamp(1, page.max(1))
}
