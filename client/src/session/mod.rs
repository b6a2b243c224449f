//! The sync session: the client side of the protocol as a state machine with no I/O, the twin of `arbor_shared::room`.
//!
//! A [`Session`] owns every decision a client makes: whether to load a
//! snapshot first, the `hello` and its cursor, the push window and its
//! acks, what each error code means ([`arbor_shared::Disposition`]), stale
//! re-stamping, re-snapshots, backoff and keep-alive. It reads no clock and
//! no randomness (time comes in with every call, a seed at creation) and
//! touches no socket: a driver (the tokio one in `sync.rs`, the browser one
//! in `client-web`) opens sockets, downloads snapshots and arms timers when
//! the session says so, and feeds back what happened. Each `on_*` call
//! takes the replica (the session's state that outlives a connection: the
//! cursor, the outbox) and returns [`Action`]s to carry out in order.
//!
//! # Layout
//!
//! - `mod.rs`: [`Session`], its inputs and [`Action`]s.
//! - `window.rs`: the push window (batches in flight).
//! - `backoff.rs`: jittered exponential backoff.
//! - `status.rs`: [`SyncStatus`] and [`SyncState`].
//! - `subtree.rs`: a subtree change's frames gathered until it is whole.
//! - `presence.rs`: the session's own presence state and when it is sent.

mod backoff;
mod presence;
mod status;
mod subtree;
mod window;

use arbor_shared::protocol::{ClientMsg, PresenceState, ServerMsg, VERSION};
use arbor_shared::{Disposition, ErrorCode, NodeId, Stamp};

use crate::replica::{Replica, ReplicaError};
use crate::snapshot::Progress;
use backoff::Backoff;
use presence::OwnPresence;
use subtree::{Added, Gathered};
use window::PushWindow;

pub use presence::{PRESENCE_MIN_INTERVAL_MS, PRESENCE_REFRESH_MS, PresenceTooLarge};
pub use status::{SyncState, SyncStatus};

/// How a session behaves.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// The thoughtspace (a replica holds one: never mix another's ops in).
    pub space: String,
    /// Pushes waiting for their answer at most (the server allows 16).
    pub max_inflight: usize,
    /// Ops per push at most (the protocol allows 1,000).
    pub batch_ops: usize,
    /// JSON bytes per push at most (the frame limit is 1 MiB; a value
    /// reaches 64 KiB).
    pub push_bytes: usize,
    /// First reconnect delay, ms; doubles up to `max_backoff_ms`, jittered.
    pub min_backoff_ms: u64,
    /// Longest reconnect delay, ms.
    pub max_backoff_ms: u64,
    /// A connection up this long starts the backoff over, ms.
    pub healthy_ms: u64,
    /// Keep-alive period while connected, ms.
    pub ping_ms: u64,
    /// Silence after which the connection is presumed dead, ms.
    pub silence_ms: u64,
    /// Stop once caught up with the head seen at `hello` and the outbox is
    /// empty (`sync_once`, `arbor sync`).
    pub until_idle: bool,
    /// Give up after this many consecutive transient failures (`None`:
    /// never).
    pub max_failures: Option<u32>,
    /// The `root` claim of the token the driver connects with, read
    /// without checking it (`arbor_shared::auth::unverified_root`). Such a
    /// token gets that root's subtree feed whatever the replica is, so a
    /// replica that follows anything else stops `out_of_scope` before it
    /// asks the server for anything.
    pub token_root: Option<NodeId>,
    /// Try the replica image (`Action::LoadImage`) before the row snapshot
    /// on a cold start the image can serve ([`Replica::can_take_image`]).
    pub images: bool,
}

impl SessionConfig {
    /// Defaults for `space`.
    pub fn new(space: &str) -> SessionConfig {
        SessionConfig {
            space: space.to_string(),
            max_inflight: 8,
            batch_ops: 500,
            push_bytes: 768 * 1024,
            min_backoff_ms: 100,
            max_backoff_ms: 10_000,
            healthy_ms: 10_000,
            ping_ms: 20_000,
            silence_ms: 60_000,
            until_idle: false,
            max_failures: None,
            token_root: None,
            images: false,
        }
    }
}

/// Why a session stopped for good.
#[derive(Debug, thiserror::Error)]
pub enum Stop {
    /// The server refused and retrying cannot help (disposition `reauth`,
    /// or `refuse` with no push to blame). The outbox is kept.
    #[error("refused by the server: {code}: {message}")]
    Refused {
        /// The code.
        code: ErrorCode,
        /// The server's message.
        message: String,
    },
    /// A snapshot request was refused with this HTTP status and no typed
    /// body (a proxy's answer, say).
    #[error("refused by the server: HTTP {status}: {message}")]
    RefusedHttp {
        /// The status.
        status: u16,
        /// What came with it.
        message: String,
    },
    /// `max_failures` transient failures in a row.
    #[error("{0}")]
    GaveUp(String),
    /// The local replica failed.
    #[error(transparent)]
    Replica(#[from] ReplicaError),
}

/// Ops the server refused for good: dropped from the outbox, to be shown to
/// the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The code (its disposition is `refuse`).
    pub code: ErrorCode,
    /// The server's message.
    pub message: String,
    /// The ops' stamps.
    pub stamps: Vec<Stamp>,
}

/// What the driver must do, in order.
#[derive(Debug)]
pub enum Action {
    /// Download the snapshot at `path` (below `/v1/spaces/{space}`) and
    /// load it into the replica as it streams, reporting
    /// [`Session::on_snapshot_progress`], then [`Session::on_snapshot_loaded`]
    /// or [`Session::on_snapshot_failed`].
    LoadSnapshot {
        /// `/snapshot`, or `/subtree/{root}/snapshot` for a subtree replica.
        path: String,
    },
    /// Download the replica image at `path` (below `/v1/spaces/{space}`,
    /// with `?schema=` this build's [`crate::schema::VERSION`]), decode and
    /// check it ([`crate::image::ImageDecoder`]) and install it
    /// ([`Replica::install_image`]), then call
    /// [`Session::on_image_loaded`]. Any failure, whatever it is:
    /// [`Session::on_image_failed`], and the session asks for the row
    /// snapshot instead.
    LoadImage {
        /// `/image`, or `/subtree/{root}/image` for a subtree replica.
        path: String,
    },
    /// Open the realtime socket, then call [`Session::on_open`] (or
    /// [`Session::on_connect_failed`]).
    Connect,
    /// Send this frame on the open socket.
    Send(ClientMsg),
    /// Close the socket; the session has no more use for it.
    Disconnect,
    /// The status changed: tell the application.
    Status(SyncStatus),
    /// Ops were refused for good: tell the application.
    Rejected(Rejection),
    /// `until_idle`: caught up and nothing left to push. The session is over.
    Idle,
    /// The session is over (see [`Stop`]); nothing more will happen.
    Stopped(Stop),
}

/// The path of a cold start's download (`snapshot` or `image`), below
/// `/v1/spaces/{space}`: the whole space's, or the subtree's of `root`.
fn cold_start_path(root: Option<NodeId>, what: &str) -> String {
    match root {
        Some(root) => format!("/subtree/{root}/{what}"),
        None => format!("/{what}"),
    }
}

/// Why a snapshot download failed.
#[derive(Debug)]
pub enum SnapshotFailure {
    /// The server answered with an error status; `code` from its body when
    /// it carried one.
    Http {
        /// The status.
        status: u16,
        /// The body's code, if typed.
        code: Option<ErrorCode>,
        /// The body's message (or the body).
        message: String,
    },
    /// The download broke or the stream was cut or corrupt (nothing of it
    /// was kept): retry.
    Transport(String),
    /// The replica failed while loading.
    Replica(ReplicaError),
}

/// Why opening the socket failed.
#[derive(Debug)]
pub enum ConnectFailure {
    /// The upgrade was refused with an HTTP status (and a typed body when
    /// the server sent one).
    Http {
        /// The status.
        status: u16,
        /// The body's code, if typed.
        code: Option<ErrorCode>,
    },
    /// Network trouble: retry.
    Transport(String),
}

/// Counters of a session.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Remote ops applied.
    pub applied: u64,
    /// Local ops the server acknowledged (an `ack` of their push).
    pub pushed: u64,
    /// Cold starts done.
    pub cold_starts: u64,
    /// Of those, the ones done from a replica image.
    pub image_starts: u64,
}

#[derive(Debug)]
enum Phase {
    /// Not started.
    New,
    /// Waiting `until` (ms) before the next attempt.
    Waiting { until: u64 },
    /// A snapshot is downloading.
    LoadingSnapshot,
    /// The socket is opening.
    Connecting,
    /// `hello` sent, waiting for `welcome`.
    Greeting { cursor: Option<u64>, link: Link },
    /// Welcomed: catching up, pushing, live.
    Open {
        /// The head seq `welcome` named.
        head: u64,
        window: PushWindow,
        link: Link,
        /// The frames of a subtree change that is not whole yet (boxed:
        /// most connections never gather any).
        gathered: Box<Gathered>,
    },
    /// Over (idle, stopped or refused): every input is ignored.
    Over,
}

/// Timers of an open socket.
#[derive(Debug, Clone, Copy)]
struct Link {
    /// When the socket opened, ms.
    opened: u64,
    /// When the last frame arrived (or the socket opened), ms.
    last_frame: u64,
    /// When to ping next, ms.
    next_ping: u64,
}

/// The client side of the protocol for one replica.
#[derive(Debug)]
pub struct Session {
    config: SessionConfig,
    phase: Phase,
    backoff: Backoff,
    /// When the current attempt began, ms.
    attempt_began: u64,
    /// Transient failures in a row.
    failures: u32,
    status: SyncStatus,
    report: SyncReport,
    /// Why the last attempt ended, while waiting to retry.
    offline_error: Option<String>,
    /// Ops refused for good by the frame being handled, to report.
    pending_rejection: Option<Rejection>,
    /// `status.rejected` as last published.
    reported_rejected: u64,
    /// An op was rejected: once the pushes in flight are answered, reload
    /// a snapshot so its local effects go (nothing new is pushed meanwhile).
    resync_pending: bool,
    /// The wait the last refusal asked for (`rate_limited`), at least.
    retry_after_ms: Option<u64>,
    /// The application's presence state and when it went out.
    presence: OwnPresence,
    /// This connection's id, from `welcome` (left out of `status.peers`).
    own_conn: Option<u64>,
}

/// What a handler wants after it ran.
enum Next {
    /// Stay in the phase it set.
    Stay,
    /// A transient failure: back off and retry.
    Retry(String),
    /// Start over at once (or after a backoff if the last start was
    /// recent): the replica was arranged for a snapshot load.
    Again,
    /// Over.
    Stop(Stop),
}

impl From<ReplicaError> for Next {
    fn from(e: ReplicaError) -> Next {
        Next::Stop(Stop::Replica(e))
    }
}

impl Session {
    /// A session; `seed` feeds the backoff's jitter.
    pub fn new(config: SessionConfig, seed: u64) -> Session {
        let backoff = Backoff::new(config.min_backoff_ms, config.max_backoff_ms, seed);
        Session {
            config,
            phase: Phase::New,
            backoff,
            attempt_began: 0,
            failures: 0,
            status: SyncStatus::default(),
            report: SyncReport::default(),
            offline_error: None,
            pending_rejection: None,
            reported_rejected: 0,
            resync_pending: false,
            retry_after_ms: None,
            presence: OwnPresence::default(),
            own_conn: None,
        }
    }

    /// `peers` without this connection.
    fn others(
        &self,
        mut peers: Vec<arbor_shared::protocol::Peer>,
    ) -> Vec<arbor_shared::protocol::Peer> {
        peers.retain(|p| Some(p.conn) != self.own_conn);
        peers
    }

    /// The application's presence state (`None`: none), shown to the
    /// others connected to the space while a connection is open (and sent
    /// again after each reconnect). A state that changes often goes out at
    /// most every [`PRESENCE_MIN_INTERVAL_MS`], the latest one winning.
    pub fn set_presence(
        &mut self,
        state: Option<PresenceState>,
        now: u64,
    ) -> Result<Vec<Action>, PresenceTooLarge> {
        self.presence.set(state)?;
        let mut out = Vec::new();
        self.send_presence(now, &mut out);
        Ok(out)
    }

    fn send_presence(&mut self, now: u64, out: &mut Vec<Action>) {
        if matches!(self.phase, Phase::Open { .. })
            && let Some(msg) = self.presence.take(now)
        {
            out.push(Action::Send(msg));
        }
    }

    /// The status as last reported.
    pub fn status(&self) -> &SyncStatus {
        &self.status
    }

    /// The counters so far.
    pub fn report(&self) -> &SyncReport {
        &self.report
    }

    /// True once the session is over.
    pub fn is_over(&self) -> bool {
        matches!(self.phase, Phase::Over)
    }

    /// When the driver must call [`Session::on_timer`] next (ms), if at all.
    pub fn deadline(&self) -> Option<u64> {
        match &self.phase {
            Phase::Waiting { until } => Some(*until),
            Phase::Greeting { link, .. } => {
                Some(link.next_ping.min(link.last_frame + self.config.silence_ms))
            }
            Phase::Open { link, .. } => {
                let link = link.next_ping.min(link.last_frame + self.config.silence_ms);
                Some(self.presence.due().map_or(link, |at| at.min(link)))
            }
            _ => None,
        }
    }

    /// Starts the first attempt.
    pub fn start(&mut self, r: &mut Replica, now: u64) -> Vec<Action> {
        let mut out = Vec::new();
        if matches!(self.phase, Phase::New) {
            let next = self.begin_attempt(r, now, &mut out);
            self.finish(r, now, next, &mut out);
        }
        out
    }

    /// The driver stops the session (shutdown).
    pub fn stop(&mut self, r: &mut Replica) -> Vec<Action> {
        let mut out = Vec::new();
        if self.socket_open() {
            out.push(Action::Disconnect);
        }
        self.phase = Phase::Over;
        self.set_state(r, SyncState::Stopped, &mut out);
        out
    }

    /// Time passed: reconnect after a backoff, ping, or give up on a silent
    /// socket.
    pub fn on_timer(&mut self, r: &mut Replica, now: u64) -> Vec<Action> {
        let mut out = Vec::new();
        if matches!(self.phase, Phase::Waiting { until } if now >= until) {
            let next = self.begin_attempt(r, now, &mut out);
            self.finish(r, now, next, &mut out);
            return out;
        }
        let next = match &mut self.phase {
            Phase::Greeting { link, .. } | Phase::Open { link, .. } => {
                if now >= link.last_frame + self.config.silence_ms {
                    Next::Retry(format!("no frame for {} s", self.config.silence_ms / 1000))
                } else {
                    if now >= link.next_ping {
                        link.next_ping = now + self.config.ping_ms;
                        out.push(Action::Send(ClientMsg::Ping {}));
                    }
                    Next::Stay
                }
            }
            _ => Next::Stay,
        };
        self.send_presence(now, &mut out);
        self.finish(r, now, next, &mut out);
        out
    }

    /// Snapshot download progress (the replica is busy loading: this call
    /// does not take it).
    pub fn on_snapshot_progress(&mut self, p: Progress) -> Vec<Action> {
        let mut out = Vec::new();
        if matches!(self.phase, Phase::LoadingSnapshot) {
            self.status.state = SyncState::ColdStart(p);
            self.status.cursor = None;
            out.push(Action::Status(self.status.clone()));
        }
        out
    }

    /// The snapshot is loaded (the replica has a cursor now).
    pub fn on_snapshot_loaded(&mut self, r: &mut Replica, now: u64) -> Vec<Action> {
        let mut out = Vec::new();
        if matches!(self.phase, Phase::LoadingSnapshot) {
            self.report.cold_starts += 1;
            self.phase = Phase::Connecting;
            out.push(Action::Connect);
            self.finish(r, now, Next::Stay, &mut out);
        }
        out
    }

    /// The image was installed: the cold start is done.
    pub fn on_image_loaded(&mut self, r: &mut Replica, now: u64) -> Vec<Action> {
        if matches!(self.phase, Phase::LoadingSnapshot) {
            self.report.image_starts += 1;
        }
        self.on_snapshot_loaded(r, now)
    }

    /// The image could not be used (absent, refused, cut, corrupt, of
    /// another schema or space: `why`); nothing of it was kept. The row
    /// snapshot is next, which reports what the server refuses.
    pub fn on_image_failed(&mut self, r: &mut Replica, now: u64, why: &str) -> Vec<Action> {
        let mut out = Vec::new();
        if !matches!(self.phase, Phase::LoadingSnapshot) {
            return out;
        }
        tracing::info!(why, "no replica image: loading rows");
        let next = match r.subtree_root() {
            Ok(root) => {
                out.push(Action::LoadSnapshot {
                    path: cold_start_path(root, "snapshot"),
                });
                Next::Stay
            }
            Err(e) => e.into(),
        };
        self.finish(r, now, next, &mut out);
        out
    }

    /// The snapshot download failed; nothing of it was kept.
    pub fn on_snapshot_failed(
        &mut self,
        r: &mut Replica,
        now: u64,
        failure: SnapshotFailure,
    ) -> Vec<Action> {
        let mut out = Vec::new();
        if !matches!(self.phase, Phase::LoadingSnapshot) {
            return out;
        }
        let next = match failure {
            SnapshotFailure::Transport(m) => Next::Retry(format!("snapshot: {m}")),
            SnapshotFailure::Replica(e) => Next::Stop(Stop::Replica(e)),
            SnapshotFailure::Http {
                status,
                code: Some(code),
                message,
            } => {
                let _ = status;
                self.refusal(r, code, message, None)
            }
            SnapshotFailure::Http {
                status,
                code: None,
                message,
            } if (400..500).contains(&status) && status != 408 && status != 429 => {
                Next::Stop(Stop::RefusedHttp { status, message })
            }
            SnapshotFailure::Http { status, .. } => Next::Retry(format!("snapshot: HTTP {status}")),
        };
        self.finish(r, now, next, &mut out);
        out
    }

    /// The socket opened: say hello.
    pub fn on_open(&mut self, r: &mut Replica, now: u64) -> Vec<Action> {
        let mut out = Vec::new();
        if !matches!(self.phase, Phase::Connecting) {
            return out;
        }
        let next = match r.cursor().and_then(|c| Ok((c, r.subtree_root()?))) {
            Ok((cursor, root)) => {
                out.push(Action::Send(ClientMsg::Hello {
                    v: VERSION,
                    replica: r.replica_id(),
                    cursor,
                    root,
                }));
                self.phase = Phase::Greeting {
                    cursor,
                    link: Link {
                        opened: now,
                        last_frame: now,
                        next_ping: now + self.config.ping_ms,
                    },
                };
                Next::Stay
            }
            Err(e) => e.into(),
        };
        self.finish(r, now, next, &mut out);
        out
    }

    /// The socket could not be opened.
    pub fn on_connect_failed(
        &mut self,
        r: &mut Replica,
        now: u64,
        failure: ConnectFailure,
    ) -> Vec<Action> {
        let mut out = Vec::new();
        if !matches!(self.phase, Phase::Connecting) {
            return out;
        }
        let next = match failure {
            ConnectFailure::Transport(m) => Next::Retry(m),
            ConnectFailure::Http {
                code: Some(code), ..
            } => self.refusal(r, code, "the upgrade was refused".into(), None),
            ConnectFailure::Http { status, code: None } => match status {
                // What the server's own refusals of an upgrade mean.
                401 => self.refusal(r, ErrorCode::BadToken, "HTTP 401".into(), None),
                403 => self.refusal(r, ErrorCode::Forbidden, "HTTP 403".into(), None),
                404 => self.refusal(r, ErrorCode::UnknownSpace, "HTTP 404".into(), None),
                _ => Next::Retry(format!("websocket: HTTP {status}")),
            },
        };
        // No socket was opened: nothing to close.
        self.phase = Phase::Waiting { until: now };
        self.finish(r, now, next, &mut out);
        out
    }

    /// The socket closed (by the server or the network), with the close
    /// code if one came.
    pub fn on_closed(
        &mut self,
        r: &mut Replica,
        now: u64,
        code: Option<u16>,
        reason: &str,
    ) -> Vec<Action> {
        let mut out = Vec::new();
        if !self.socket_open() {
            return out;
        }
        let why = match code {
            Some(c) => format!("closed by the server: {c} {reason}"),
            None => format!("connection closed {reason}").trim_end().to_string(),
        };
        let next = match code.and_then(ErrorCode::from_close) {
            Some(c) => self.refusal(r, c, why, None),
            None => Next::Retry(why),
        };
        // The socket is gone: nothing to close.
        self.leave_socket(now);
        self.finish(r, now, next, &mut out);
        out
    }

    /// Local ops were queued: push them if the window has room.
    pub fn on_outbox(&mut self, r: &mut Replica, now: u64) -> Vec<Action> {
        let mut out = Vec::new();
        self.finish(r, now, Next::Stay, &mut out);
        out
    }

    /// A text frame arrived.
    pub fn on_frame(&mut self, r: &mut Replica, now: u64, text: &str) -> Vec<Action> {
        let mut out = Vec::new();
        let next = match ServerMsg::decode(text) {
            Ok(msg) => self.handle(r, now, msg, &mut out),
            Err(e) if self.socket_open() => Next::Retry(format!("bad frame: {e}")),
            Err(_) => Next::Stay,
        };
        self.finish(r, now, next, &mut out);
        out
    }

    fn handle(&mut self, r: &mut Replica, now: u64, msg: ServerMsg, out: &mut Vec<Action>) -> Next {
        match &mut self.phase {
            Phase::Greeting { link, .. } | Phase::Open { link, .. } => link.last_frame = now,
            _ => return Next::Stay,
        }
        if let Phase::Greeting { cursor, link } = &self.phase {
            let (cursor, link) = (*cursor, *link);
            return match msg {
                ServerMsg::Welcome {
                    head_seq,
                    peers,
                    conn,
                    ..
                } => {
                    self.own_conn = conn;
                    self.status.peers = self.others(peers);
                    self.phase = Phase::Open {
                        head: head_seq,
                        window: PushWindow::new(),
                        link,
                        gathered: Box::default(),
                    };
                    self.presence.welcomed();
                    self.send_presence(now, out);
                    Next::Stay
                }
                ServerMsg::SnapshotRequired { head_seq } => {
                    if cursor.is_some_and(|c| c > head_seq) {
                        // The server has less than we saw: it was restored
                        // from a backup. Push again what we still hold.
                        match r.requeue_own_ops() {
                            Ok(n) => tracing::warn!(
                                head_seq,
                                ?cursor,
                                requeued = n,
                                "the server went back in time"
                            ),
                            Err(e) => return e.into(),
                        }
                    }
                    match r.reset_cursor() {
                        Ok(()) => Next::Again,
                        Err(e) => e.into(),
                    }
                }
                ServerMsg::Error {
                    code,
                    message,
                    batch,
                    retry_after_ms,
                } => {
                    self.retry_after_ms = retry_after_ms;
                    self.refusal(r, code, message, batch)
                }
                _ => Next::Stay,
            };
        }
        match msg {
            ServerMsg::Ops { ops } => {
                match r.apply_remote(&ops) {
                    Ok(_) => {
                        self.report.applied += ops.len() as u64;
                        Next::Stay
                    }
                    // Frames lost in between: the reconnect's catch-up
                    // starts from the cursor.
                    Err(ReplicaError::Gap { .. }) => Next::Retry("seq gap".into()),
                    Err(e) => e.into(),
                }
            }
            ServerMsg::Subtree {
                nodes,
                registers,
                removed,
                root_in_trash,
                head_seq,
            } => {
                let Phase::Open { gathered, .. } = &mut self.phase else {
                    return Next::Stay;
                };
                let (change, head) =
                    match gathered.add(nodes, registers, removed, root_in_trash, head_seq) {
                        Added::Waiting => return Next::Stay,
                        Added::Whole(change, head) => (change, head),
                        // More than the server ever cuts one change into:
                        // start over from the subtree snapshot.
                        Added::TooLarge => {
                            return match r.reset_cursor() {
                                Ok(()) => Next::Again,
                                Err(e) => e.into(),
                            };
                        }
                    };
                let frame = crate::replica::SubtreeFrame {
                    nodes: &change.nodes,
                    registers: &change.registers,
                    removed: &change.removed,
                    root_in_trash: change.root_in_trash,
                    head_seq: Some(head),
                };
                match r.apply_subtree(frame) {
                    Ok(_) => {
                        self.report.applied +=
                            (change.nodes.len() + change.registers.len() + change.removed.len())
                                as u64;
                        Next::Stay
                    }
                    Err(e) => e.into(),
                }
            }
            ServerMsg::Ack { batch } => {
                let stamps = self.window().map(|w| w.answered(batch)).unwrap_or_default();
                // Only an ack says the server committed them.
                self.report.pushed += stamps.len() as u64;
                match r.acknowledge(&stamps) {
                    Ok(()) => Next::Stay,
                    Err(e) => e.into(),
                }
            }
            ServerMsg::Error {
                code,
                message,
                batch,
                retry_after_ms,
            } => {
                self.retry_after_ms = retry_after_ms;
                self.refusal(r, code, message, batch)
            }
            ServerMsg::Peers { peers } => {
                self.status.peers = self.others(peers);
                out.push(Action::Status(self.status.clone()));
                Next::Stay
            }
            ServerMsg::Presence { conn, sub, state } => {
                if Some(conn) != self.own_conn {
                    presence::apply_peer_presence(&mut self.status.peers, conn, sub, state);
                }
                out.push(Action::Status(self.status.clone()));
                Next::Stay
            }
            ServerMsg::SnapshotRequired { .. } => match r.reset_cursor() {
                Ok(()) => Next::Again,
                Err(e) => e.into(),
            },
            ServerMsg::Welcome { .. } | ServerMsg::Pong => Next::Stay,
        }
    }

    fn window(&mut self) -> Option<&mut PushWindow> {
        match &mut self.phase {
            Phase::Open { window, .. } => Some(window),
            _ => None,
        }
    }

    /// What a refusal means, by its code's disposition. `batch` names the
    /// push it refused, if any.
    fn refusal(
        &mut self,
        r: &mut Replica,
        code: ErrorCode,
        message: String,
        batch: Option<u64>,
    ) -> Next {
        let stamps = match batch {
            Some(b) => self.window().map(|w| w.answered(b)),
            None => None,
        };
        let arranged = |result: Result<(), ReplicaError>| match result {
            Ok(()) => Next::Again,
            Err(e) => e.into(),
        };
        match (code.disposition(), stamps) {
            (Disposition::Retry, _) => Next::Retry(format!("{code}: {message}")),
            (Disposition::Reauth, _) | (Disposition::Refuse, None) => {
                Next::Stop(Stop::Refused { code, message })
            }
            // The horizon passed our ops: load the snapshot, which
            // re-stamps them.
            (Disposition::Restamp, stamps) => {
                let from = stamps.and_then(|s| s.into_iter().min());
                arranged(r.request_restamp(from).and_then(|()| r.reset_cursor()))
            }
            (Disposition::Resnapshot, _) => arranged(r.reset_cursor()),
            // A push of several ops: push them one at a time, so only the
            // op refused is dropped (the refusal of a push is all or
            // nothing, and it names no op).
            (Disposition::Refuse, Some(stamps)) if stamps.len() > 1 => {
                tracing::info!(%code, ops = stamps.len(), "push refused; pushing its ops one at a time");
                if let Some(w) = self.window() {
                    w.split(&stamps);
                }
                Next::Stay
            }
            // The op itself is refused, for good: move it to the rejected
            // list, and resync so its local effects go.
            (Disposition::Refuse, Some(stamps)) => {
                tracing::warn!(%code, message, ops = stamps.len(), "push refused; dropping its ops");
                let result = r.reject(&stamps, code, &message);
                self.pending_rejection = Some(Rejection {
                    code,
                    message,
                    stamps,
                });
                match result {
                    // The resync waits for the pushes still in flight: their
                    // answers (acks of ops that did commit) come first.
                    Ok(()) => {
                        self.resync_pending = true;
                        Next::Stay
                    }
                    Err(e) => e.into(),
                }
            }
        }
    }

    fn socket_open(&self) -> bool {
        matches!(
            self.phase,
            Phase::Connecting | Phase::Greeting { .. } | Phase::Open { .. }
        )
    }

    /// Begins an attempt: a snapshot first when the replica has no cursor,
    /// else the socket.
    fn begin_attempt(&mut self, r: &mut Replica, now: u64, out: &mut Vec<Action>) -> Next {
        self.attempt_began = now;
        if std::mem::take(&mut self.resync_pending) {
            // The connection ended before the resync: reload now.
            if let Err(e) = r.reset_cursor() {
                return e.into();
            }
        }
        if let Err(e) = r.bind_space(&self.config.space) {
            return e.into();
        }
        if let (Some(claim), Ok(root)) = (self.config.token_root, r.subtree_root())
            && root != Some(claim)
        {
            let follows = match root {
                Some(root) => format!("the subtree of {root}"),
                None => "the whole space".to_string(),
            };
            return Next::Stop(Stop::Refused {
                code: ErrorCode::OutOfScope,
                message: format!(
                    "the token is limited to the subtree of {claim} and this replica \
                     follows {follows}: open a replica of {claim}"
                ),
            });
        }
        match (r.cursor(), r.subtree_root()) {
            (Ok(None), Ok(root)) => {
                self.phase = Phase::LoadingSnapshot;
                match r.can_take_image() {
                    Ok(true) if self.config.images => {
                        out.push(Action::LoadImage {
                            path: cold_start_path(root, "image"),
                        });
                        return Next::Stay;
                    }
                    Ok(_) => {}
                    Err(e) => return e.into(),
                }
                out.push(Action::LoadSnapshot {
                    path: cold_start_path(root, "snapshot"),
                });
                Next::Stay
            }
            (Ok(Some(_)), Ok(_)) => {
                self.phase = Phase::Connecting;
                out.push(Action::Connect);
                Next::Stay
            }
            (Err(e), _) | (_, Err(e)) => e.into(),
        }
    }

    /// Applies a handler's verdict, pushes what the window allows, checks
    /// for idle, and reports the status if it changed.
    fn finish(&mut self, r: &mut Replica, now: u64, next: Next, out: &mut Vec<Action>) {
        if let Some(rejection) = self.pending_rejection.take() {
            out.push(Action::Rejected(rejection));
        }
        let next = match next {
            Next::Stay => self.pump(r, now, out),
            other => other,
        };
        match next {
            Next::Stay => {}
            Next::Retry(why) => self.retry(r, now, why, out),
            Next::Again => {
                if self.socket_open() {
                    out.push(Action::Disconnect);
                }
                self.leave_socket(now);
                self.offline_error = None;
                // A resync that comes back at once (a server that keeps
                // asking for one) still backs off.
                if now.saturating_sub(self.attempt_began) >= self.config.healthy_ms {
                    self.backoff.reset();
                    let next = self.begin_attempt(r, now, out);
                    return self.finish(r, now, next, out);
                }
                let until = now + self.backoff.next_delay();
                self.phase = Phase::Waiting { until };
            }
            Next::Stop(stop) => {
                if self.socket_open() {
                    out.push(Action::Disconnect);
                }
                self.phase = Phase::Over;
                let state = match &stop {
                    Stop::Refused { .. } | Stop::RefusedHttp { .. } => SyncState::Refused {
                        error: stop.to_string(),
                    },
                    _ => SyncState::Offline {
                        error: Some(stop.to_string()),
                    },
                };
                self.set_state(r, state, out);
                out.push(Action::Stopped(stop));
                return;
            }
        }
        let state = match &self.phase {
            Phase::Open { .. } => return self.report_open(r, out),
            Phase::LoadingSnapshot => match &self.status.state {
                s @ SyncState::ColdStart(_) => s.clone(),
                _ => SyncState::ColdStart(Progress::default()),
            },
            Phase::Connecting | Phase::Greeting { .. } => SyncState::Connecting,
            Phase::Waiting { .. } => SyncState::Offline {
                error: self.offline_error.clone(),
            },
            Phase::New | Phase::Over => return,
        };
        self.set_state(r, state, out);
    }

    /// Sends what the push window allows; in `until_idle` mode, ends the
    /// session once caught up with nothing to push.
    fn pump(&mut self, r: &mut Replica, now: u64, out: &mut Vec<Action>) -> Next {
        let (max, ops, bytes) = (
            self.config.max_inflight,
            self.config.batch_ops,
            self.config.push_bytes,
        );
        let Phase::Open {
            head, window, link, ..
        } = &mut self.phase
        else {
            return Next::Stay;
        };
        if self.resync_pending {
            if !window.is_empty() {
                return Next::Stay;
            }
            self.resync_pending = false;
            return match r.reset_cursor() {
                Ok(()) => Next::Again,
                Err(e) => e.into(),
            };
        }
        loop {
            match window.next_push(r, max, ops, bytes) {
                Ok(Some((batch, ops))) => out.push(Action::Send(ClientMsg::Push { batch, ops })),
                Ok(None) => break,
                Err(e) => return e.into(),
            }
        }
        let (head, idle, healthy) = (
            *head,
            window.is_empty(),
            now.saturating_sub(link.opened) >= self.config.healthy_ms,
        );
        if healthy {
            self.failures = 0;
            self.backoff.reset();
        }
        if self.config.until_idle && idle {
            match (r.cursor(), r.outbox_len()) {
                (Ok(cursor), Ok(0)) if cursor.unwrap_or(0) >= head => {
                    out.push(Action::Disconnect);
                    self.phase = Phase::Over;
                    self.set_state(r, SyncState::Stopped, out);
                    out.push(Action::Idle);
                }
                (Err(e), _) | (_, Err(e)) => return e.into(),
                _ => {}
            }
        }
        Next::Stay
    }

    /// A transient failure: back off, or give up after too many in a row.
    fn retry(&mut self, r: &mut Replica, now: u64, why: String, out: &mut Vec<Action>) {
        if self.socket_open() {
            out.push(Action::Disconnect);
        }
        self.leave_socket(now);
        self.failures += 1;
        if self
            .config
            .max_failures
            .is_some_and(|max| self.failures >= max)
        {
            self.phase = Phase::Over;
            self.set_state(
                r,
                SyncState::Offline {
                    error: Some(why.clone()),
                },
                out,
            );
            out.push(Action::Stopped(Stop::GaveUp(why)));
            return;
        }
        tracing::warn!(error = %why, "sync session ended; reconnecting");
        let asked = self.retry_after_ms.take().unwrap_or(0);
        let until = now + self.backoff.next_delay().max(asked);
        self.phase = Phase::Waiting { until };
        self.offline_error = Some(why);
    }

    /// The socket is closed (or being closed): a connection that stayed up
    /// a while starts the backoff over.
    fn leave_socket(&mut self, now: u64) {
        if let Phase::Greeting { link, .. } | Phase::Open { link, .. } = &self.phase
            && now.saturating_sub(link.opened) >= self.config.healthy_ms
        {
            self.backoff.reset();
            self.failures = 0;
        }
        if self.socket_open() {
            self.phase = Phase::Waiting { until: now };
        }
    }

    /// The status of an open session: catching up, pushing or live.
    fn report_open(&mut self, r: &mut Replica, out: &mut Vec<Action>) {
        let Phase::Open { head, .. } = &self.phase else {
            return;
        };
        let head = *head;
        let cursor = r.cursor().ok().flatten();
        let outbox = r.outbox_len().unwrap_or(self.status.outbox);
        self.status.rejected = r.rejected_len().unwrap_or(self.status.rejected);
        let state = match (cursor.unwrap_or(0) >= head, outbox) {
            (false, _) => SyncState::CatchingUp,
            (true, 0) => SyncState::Live,
            (true, _) => SyncState::Pushing,
        };
        self.publish(state, cursor, outbox, out);
    }

    fn set_state(&mut self, r: &mut Replica, state: SyncState, out: &mut Vec<Action>) {
        let cursor = r.cursor().ok().flatten();
        let outbox = r.outbox_len().unwrap_or(self.status.outbox);
        self.publish(state, cursor, outbox, out);
    }

    fn publish(
        &mut self,
        state: SyncState,
        cursor: Option<u64>,
        outbox: u64,
        out: &mut Vec<Action>,
    ) {
        if self.status.state != state
            || self.status.cursor != cursor
            || self.status.outbox != outbox
            || self.status.rejected != self.reported_rejected
        {
            self.reported_rejected = self.status.rejected;
            self.status.state = state;
            self.status.cursor = cursor;
            self.status.outbox = outbox;
            out.push(Action::Status(self.status.clone()));
        }
    }
}
