//! The native realtime endpoint: one actor task per thoughtspace drives the
//! shared room state machine ([`arbor_shared::room::Room`]); sockets and
//! database work talk to it through bounded channels.
//!
//! Ordering: the actor is the only owner of a room, so the room sees every
//! event in one order. The room decides what to commit (one group of
//! waiting pushes at a time) and which page of ops to fetch; this driver
//! runs each as a spawned task and feeds its answer back as an event.
//! Commits from other paths can come back out of seq order, which the room
//! turns into in-order delivery (it holds commits above a gap and asks for
//! the gap). Memory: each socket has a bounded outbound queue; a socket
//! whose queue is full is closed (4002) instead of growing it.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arbor_shared::ErrorCode;
use arbor_shared::auth::Claims;
use arbor_shared::protocol::{SeqOp, ServerMsg};
use arbor_shared::room::{Action, ConnId, IngestResult, Push, Room, RoomLimits, close};
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::SinkExt as _;
use tokio::sync::{Mutex, mpsc};

use crate::db::{Committed, Db, Origin};
use crate::limits::{Counter, Held, Limits, RateLimiter};

/// Events queued for one room.
const ROOM_EVENTS: usize = 1024;
/// A group commit slower than this is logged.
const SLOW_COMMIT_S: f64 = 1.0;

enum Outbound {
    /// A frame, encoded once and shared by every socket it goes to.
    Text(Utf8Bytes),
    Close(u16, String),
}

enum Event {
    Connect {
        conn: ConnId,
        claims: Claims,
        out: mpsc::Sender<Outbound>,
    },
    Message {
        conn: ConnId,
        text: String,
    },
    Closed {
        conn: ConnId,
    },
    Committed(Vec<SeqOp>),
    /// The database's head is at least this seq (a commit notice).
    Head(u64),
    GapPage(Vec<SeqOp>),
    GapFailed,
    CatchUpPage {
        conn: ConnId,
        ops: Vec<SeqOp>,
    },
    CatchUpFailed {
        conn: ConnId,
    },
    /// A group commit ended (at this instant): each push's result, in push
    /// order.
    GroupCommitted(Vec<IngestResult>, std::time::Instant),
    /// The frames of a subtree change (`Action::Subtree`).
    Subtree {
        after: u64,
        answers:
            std::collections::BTreeMap<arbor_shared::NodeId, arbor_shared::room::SubtreeAnswer>,
    },
    SubtreeFailed {
        after: u64,
        roots: std::collections::BTreeSet<arbor_shared::NodeId>,
    },
    /// The revocation list changed.
    Revoked(Arc<arbor_shared::keys::Revocations>),
    CloseAll,
}

/// Every open room of this server.
#[derive(Debug)]
pub struct Rooms {
    db: Db,
    leeway_s: u64,
    /// Frames queued per socket before it counts as too slow.
    socket_queue: usize,
    next_conn: AtomicU64,
    rooms: Mutex<HashMap<String, mpsc::Sender<Event>>>,
    /// Sockets per token.
    sockets: Counter,
    /// Frames per token (pushes, pings); a push's database time is charged
    /// here too.
    frames: Arc<RateLimiter>,
    hello_timeout: Duration,
    idle_timeout: Duration,
    /// Sockets being served (upgraded and not yet ended): shutdown waits
    /// for it to reach 0, so their close frames go out before the process
    /// exits (the HTTP drain does not track upgraded connections).
    live: tokio::sync::watch::Sender<usize>,
}

fn seq_op(c: Committed) -> SeqOp {
    SeqOp::new(c.seq, c.op).by(c.author)
}

/// The ops of an answer to relay: new ones and restores (duplicates were
/// relayed when they committed).
fn seq_ops(committed: Vec<Committed>) -> Vec<SeqOp> {
    committed
        .into_iter()
        .filter(|c| c.origin != Origin::Duplicate)
        .map(seq_op)
        .collect()
}

impl Rooms {
    /// No rooms yet; each socket may queue `socket_queue` frames.
    pub fn new(db: Db, leeway_s: u64, socket_queue: usize, limits: &Limits) -> Rooms {
        Rooms {
            db,
            leeway_s,
            socket_queue: socket_queue.max(1),
            next_conn: AtomicU64::new(1),
            rooms: Mutex::new(HashMap::new()),
            sockets: Counter::new(limits.max_sockets_per_token),
            frames: Arc::new(RateLimiter::new(limits.pushes_per_s, limits.burst_s)),
            hello_timeout: limits.hello_timeout,
            idle_timeout: limits.idle_timeout,
            live: tokio::sync::watch::channel(0).0,
        }
    }

    /// Resolves once no socket is being served (after [`Rooms::close_all`]:
    /// every close frame has been written).
    pub async fn all_closed(&self) {
        let mut live = self.live.subscribe();
        let _ = live.wait_for(|n| *n == 0).await;
    }

    /// A socket's share of its token's cap (taken before the upgrade, so an
    /// over-cap socket is refused with 429 instead of opened and closed).
    pub fn hold_socket(&self, claims: &Claims) -> Option<Held> {
        self.sockets.try_hold(&crate::api::token_key(claims))
    }

    /// The room of `space`, started if needed (the space must exist).
    async fn room(&self, space: &str) -> Result<mpsc::Sender<Event>, crate::db::DbError> {
        let mut rooms = self.rooms.lock().await;
        if let Some(tx) = rooms.get(space) {
            if !tx.is_closed() {
                return Ok(tx.clone());
            }
        }
        let info = self
            .db
            .space(space)
            .await?
            .ok_or_else(|| crate::db::DbError::Rejected {
                code: crate::db::RejectCode::UnknownSpace,
                message: format!("unknown_space: {space}"),
            })?;
        let (tx, rx) = mpsc::channel(ROOM_EVENTS);
        let mut room = Room::new(space, info.head_seq, info.horizon, RoomLimits::default());
        room.set_subtree_feeds(true);
        room.set_min_cursor(info.min_cursor);
        tokio::spawn(run_room(
            space.to_string(),
            room,
            self.db.clone(),
            self.leeway_s,
            self.frames.clone(),
            tx.clone(),
            rx,
        ));
        rooms.insert(space.to_string(), tx.clone());
        Ok(tx)
    }

    /// Ops committed by another path (HTTP ingest) reach the space's
    /// sockets.
    pub async fn committed(&self, space: &str, committed: &[Committed]) {
        let tx = self.rooms.lock().await.get(space).cloned();
        if let Some(tx) = tx {
            let _ = tx.send(Event::Committed(seq_ops(committed.to_vec()))).await;
        }
    }

    /// The revocation list changed: every open room closes the sockets
    /// whose token it now refuses.
    pub async fn revoked(&self, list: Arc<arbor_shared::keys::Revocations>) {
        let rooms: Vec<_> = self.rooms.lock().await.values().cloned().collect();
        for tx in rooms {
            let _ = tx.send(Event::Revoked(list.clone())).await;
        }
    }

    /// The database's head of `space` is at least `seq` (a commit notice
    /// from any server process): its room, if open, fetches what it missed.
    pub async fn head(&self, space: &str, seq: u64) {
        let tx = self.rooms.lock().await.get(space).cloned();
        if let Some(tx) = tx {
            let _ = tx.send(Event::Head(seq)).await;
        }
    }

    /// The names of the open rooms (to re-check their heads after the
    /// notice connection was lost).
    pub async fn open_rooms(&self) -> Vec<String> {
        self.rooms
            .lock()
            .await
            .iter()
            .filter(|(_, tx)| !tx.is_closed())
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Closes every socket with 1001 (shutdown).
    pub async fn close_all(&self) {
        let rooms: Vec<_> = self.rooms.lock().await.values().cloned().collect();
        for tx in rooms {
            let _ = tx.send(Event::CloseAll).await;
        }
    }

    /// Serves an upgraded socket whose token was verified for `space`.
    /// `holds` are the socket's shares of the caps (its token's, its
    /// address's), released when it closes.
    pub async fn serve(
        self: Arc<Self>,
        space: String,
        claims: Claims,
        mut socket: WebSocket,
        holds: impl Send + 'static,
    ) {
        let _holds = holds;
        self.live.send_modify(|n| *n += 1);
        // Counted down however this ends (a panic included).
        struct Live<'a>(&'a tokio::sync::watch::Sender<usize>);
        impl Drop for Live<'_> {
            fn drop(&mut self) {
                self.0.send_modify(|n| *n = n.saturating_sub(1));
            }
        }
        let _live = Live(&self.live);
        let room = match self.room(&space).await {
            Ok(r) => r,
            Err(e) => {
                let (code, _) = crate::api::db_refusal(&e);
                let _ = socket
                    .send(Message::Close(Some(CloseFrame {
                        code: code.close_code().unwrap_or(close::INTERNAL),
                        reason: code.as_str().into(),
                    })))
                    .await;
                return;
            }
        };
        let conn = self.next_conn.fetch_add(1, Ordering::Relaxed);
        metrics::gauge!(crate::metrics::SOCKETS_ACTIVE, "tier" => "native").increment(1.0);
        self.serve_conn(conn, room, claims, socket).await;
        metrics::gauge!(crate::metrics::SOCKETS_ACTIVE, "tier" => "native").decrement(1.0);
    }

    async fn serve_conn(
        &self,
        conn: ConnId,
        room: mpsc::Sender<Event>,
        claims: Claims,
        mut socket: WebSocket,
    ) {
        let (out_tx, mut out_rx) = mpsc::channel(self.socket_queue);
        // Service tokens carry many clients' traffic: no per-token rate.
        let rate_key = (claims.role != arbor_shared::auth::Role::Service)
            .then(|| crate::api::token_key(&claims));
        if room
            .send(Event::Connect {
                conn,
                claims,
                out: out_tx,
            })
            .await
            .is_err()
        {
            return;
        }
        // A socket that says nothing: no hello in time, or idle too long.
        let mut deadline = tokio::time::Instant::now() + self.hello_timeout;
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => {
                    let _ = socket.send(refusal_frame(ErrorCode::Timeout, "nothing was said for too long", None)).await;
                    let _ = socket.send(close_frame(ErrorCode::Timeout, "timeout")).await;
                    break;
                }
                incoming = socket.recv() => match incoming {
                    Some(Ok(Message::Text(text))) => {
                        deadline = tokio::time::Instant::now() + self.idle_timeout;
                        if let Some(key) = &rate_key
                            && let Err(wait) = self.frames.take(key, std::time::Instant::now())
                        {
                            let ms = wait.as_millis() as u64 + 1;
                            metrics::counter!(crate::metrics::LIMITED, "code" => "rate_limited").increment(1);
                            let _ = socket.send(refusal_frame(ErrorCode::RateLimited, "too many frames for this token", Some(ms))).await;
                            let _ = socket.send(close_frame(ErrorCode::RateLimited, &format!("retry after {ms} ms"))).await;
                            break;
                        }
                        let event = Event::Message { conn, text: text.as_str().to_string() };
                        if room.send(event).await.is_err() { break; }
                    }
                    Some(Ok(Message::Binary(_))) => {
                        // Not a JSON text frame: the room refuses it.
                        let event = Event::Message { conn, text: String::from("binary frame") };
                        if room.send(event).await.is_err() { break; }
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {
                        deadline = tokio::time::Instant::now() + self.idle_timeout;
                    }
                    Some(Err(e)) => {
                        // tungstenite's capacity error ("Space limit
                        // exceeded: Message too long"): the frame was over
                        // the transport limit. Other errors: the socket is
                        // broken and the close below goes nowhere.
                        let text = e.to_string();
                        let (code, reason) = if text.contains("too long") || text.contains("Space limit") {
                            (close::TOO_BIG, "frame too large")
                        } else {
                            (close::PROTOCOL, "websocket protocol error")
                        };
                        let _ = socket.send(Message::Close(Some(CloseFrame { code, reason: reason.into() }))).await;
                        break;
                    }
                    Some(Ok(Message::Close(_))) | None => break,
                },
                outgoing = out_rx.recv() => match outgoing {
                    Some(Outbound::Text(text)) => {
                        // Frames already queued go out with one flush.
                        let mut sent = socket.feed(Message::Text(text)).await;
                        while sent.is_ok() {
                            match out_rx.try_recv() {
                                Ok(Outbound::Text(text)) => sent = socket.feed(Message::Text(text)).await,
                                Ok(Outbound::Close(code, reason)) => {
                                    let _ = socket.flush().await;
                                    let _ = socket.send(Message::Close(Some(CloseFrame { code, reason: reason.into() }))).await;
                                    sent = Err(axum::Error::new(std::io::Error::other("closed")));
                                }
                                Err(_) => break,
                            }
                        }
                        if sent.is_err() || socket.flush().await.is_err() { break; }
                    }
                    Some(Outbound::Close(code, reason)) => {
                        let _ = socket.send(Message::Close(Some(CloseFrame { code, reason: reason.into() }))).await;
                        break;
                    }
                    None => {
                        // The room dropped us with a full queue: too slow.
                        let frame = CloseFrame { code: close::TOO_SLOW, reason: "too far behind".into() };
                        let _ = socket.send(Message::Close(Some(frame))).await;
                        break;
                    }
                },
            }
        }
        let _ = room.send(Event::Closed { conn }).await;
    }
}

/// An `error` frame without a push.
fn refusal_frame(code: ErrorCode, message: &str, retry_after_ms: Option<u64>) -> Message {
    Message::Text(
        ServerMsg::Error {
            code,
            message: message.into(),
            batch: None,
            retry_after_ms,
        }
        .encode()
        .into(),
    )
}

/// The close that goes with `code` (its close code from the table).
fn close_frame(code: ErrorCode, reason: &str) -> Message {
    Message::Close(Some(CloseFrame {
        code: code.close_code().unwrap_or(close::PROTOCOL),
        reason: reason.into(),
    }))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

async fn run_room(
    space: String,
    mut room: Room,
    db: Db,
    leeway_s: u64,
    frames: Arc<RateLimiter>,
    tx: mpsc::Sender<Event>,
    mut rx: mpsc::Receiver<Event>,
) {
    let mut outs: HashMap<ConnId, mpsc::Sender<Outbound>> = HashMap::new();
    // The rate key of each connection whose pushes are charged (not
    // service tokens').
    let mut rate_keys: HashMap<ConnId, String> = HashMap::new();
    // Token expiry is checked once a second.
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    // When the commit whose answer is being handled ended (fan-out lag).
    let mut committed_at: Option<std::time::Instant> = None;
    loop {
        let actions = tokio::select! {
            event = rx.recv() => {
                let Some(event) = event else { break };
                room.set_clock(now_ms());
                match event {
                    Event::Connect { conn, claims, out } => {
                        outs.insert(conn, out);
                        if claims.role != arbor_shared::auth::Role::Service {
                            rate_keys.insert(conn, crate::api::token_key(&claims));
                        }
                        room.on_connect(conn, claims)
                    }
                    Event::Message { conn, text } => room.on_message(conn, &text),
                    Event::Closed { conn } => {
                        outs.remove(&conn);
                        rate_keys.remove(&conn);
                        room.on_close(conn)
                    }
                    Event::Committed(ops) => room.on_committed(ops),
                    Event::Head(seq) => room.on_head(seq),
                    Event::GapPage(ops) => room.on_gap(ops),
                    Event::GapFailed => room.on_gap_failed(),
                    Event::CatchUpPage { conn, ops } => room.on_catch_up(conn, ops),
                    Event::CatchUpFailed { conn } => room.on_catch_up_failed(conn),
                    Event::GroupCommitted(results, at) => {
                        committed_at = Some(at);
                        room.on_commit(results)
                    }
                    Event::Subtree { after, answers } => room.on_subtree(after, answers),
                    Event::SubtreeFailed { after, roots } => room.on_subtree_failed(after, &roots),
                    Event::Revoked(list) => room.on_revoked(&list),
                    Event::CloseAll => room.close_all(),
                }
            }
            _ = tick.tick() => room.on_tick(now_s(), leeway_s),
        };
        let charge = Charge {
            frames: &frames,
            keys: &rate_keys,
        };
        execute(&space, &mut room, &db, &tx, &mut outs, &charge, actions);
        if let Some(at) = committed_at.take() {
            metrics::histogram!(crate::metrics::FANOUT_SECONDS, "tier" => "native")
                .record(at.elapsed().as_secs_f64());
        }
    }
}

/// Commits a group of pushes (one transaction, a savepoint each), charges
/// each push's database time to its token (`keys`, one per push: `None` is
/// not charged), and sends the results back to the room's actor.
fn commit_group(
    space: &str,
    db: &Db,
    tx: &mpsc::Sender<Event>,
    pushes: Vec<Push>,
    (frames, keys): (Arc<RateLimiter>, Vec<Option<String>>),
) {
    let (db, tx, space) = (db.clone(), tx.clone(), space.to_string());
    let span = tracing::info_span!(
        "group_commit",
        pushes = pushes.len(),
        ops = pushes.iter().map(|p| p.ops.len()).sum::<usize>()
    );
    let commit = async move {
        let started = std::time::Instant::now();
        let pushes: Vec<_> = pushes
            .into_iter()
            .map(|p| arbor_shared::http::GroupPush {
                author: p.author,
                sub: p.sub,
                root: p.root,
                ops: p.ops,
            })
            .collect();
        let answers = db.apply_group_timed(&space, &pushes).await;
        let elapsed = started.elapsed().as_secs_f64();
        let now = std::time::Instant::now();
        for ((_, held), key) in answers.iter().zip(&keys) {
            metrics::histogram!(crate::metrics::PUSH_DB_SECONDS).record(held.as_secs_f64());
            if let Some(key) = key {
                frames.charge(key, crate::limits::db_time_units(*held), now);
            }
        }
        if elapsed > SLOW_COMMIT_S {
            // Commits this slow hold up every push of the room: worth a
            // line in the log (the histogram has the distribution).
            let ops: usize = pushes.iter().map(|p| p.ops.len()).sum();
            tracing::warn!(space = %space, pushes = pushes.len(), ops, elapsed_s = elapsed, "slow group commit");
        }
        let results = answers
            .into_iter()
            .map(|(answer, _)| match answer {
                Ok(committed) => {
                    let ops = seq_ops(committed);
                    crate::metrics::ingest(Ok(ops.len() as u64), elapsed);
                    IngestResult::Committed(ops)
                }
                Err(e) => {
                    let (code, message) = crate::api::db_refusal(&e);
                    crate::metrics::ingest(Err(code), 0.0);
                    IngestResult::Failed { code, message }
                }
            })
            .collect();
        let _ = tx
            .send(Event::GroupCommitted(results, std::time::Instant::now()))
            .await;
    };
    tokio::spawn(tracing::Instrument::instrument(commit, span));
}

/// Fetches one page of committed ops, `after < seq <= upto`, and sends it
/// back as the event `page` makes of it (`None`: the fetch failed).
fn fetch_page(
    space: &str,
    db: &Db,
    tx: &mpsc::Sender<Event>,
    (after, upto, limit): (u64, u64, u32),
    page: impl FnOnce(Option<Vec<SeqOp>>) -> Event + Send + 'static,
) {
    let (db, tx, space) = (db.clone(), tx.clone(), space.to_string());
    tokio::spawn(async move {
        let ops = match db.ops_after(&space, after, limit).await {
            Ok(p) => Some(
                p.ops
                    .into_iter()
                    .filter(|c| c.seq <= upto)
                    .map(seq_op)
                    .collect(),
            ),
            Err(e) => {
                tracing::warn!(error = %e, space = %space, "fetching committed ops failed");
                None
            }
        };
        let _ = tx.send(page(ops)).await;
    });
}

/// Where a committed push's database time is charged: its connection's
/// token's frame budget.
struct Charge<'a> {
    frames: &'a Arc<RateLimiter>,
    keys: &'a HashMap<ConnId, String>,
}

fn execute(
    space: &str,
    room: &mut Room,
    db: &Db,
    tx: &mpsc::Sender<Event>,
    outs: &mut HashMap<ConnId, mpsc::Sender<Outbound>>,
    charge: &Charge<'_>,
    actions: Vec<Action>,
) {
    let mut queue: std::collections::VecDeque<Action> = actions.into();
    // The same ops go to every live socket: encode each `ops` frame once.
    let mut last_ops: Option<((u64, u64, usize), Utf8Bytes)> = None;
    // And one `peers` list to every socket: encode it once too.
    let mut last_peers: Option<(Vec<arbor_shared::protocol::Peer>, Utf8Bytes)> = None;
    while let Some(action) = queue.pop_front() {
        match action {
            Action::Send { conn, msg } => {
                let Some(out) = outs.get(&conn) else { continue };
                let frame = match &msg {
                    ServerMsg::Ops { ops } => {
                        // Seqs name ops: equal (first, last, len) means the
                        // same frame.
                        let id = (
                            ops.first().map_or(0, |o| o.seq),
                            ops.last().map_or(0, |o| o.seq),
                            ops.len(),
                        );
                        match &last_ops {
                            Some((seen, frame)) if *seen == id => frame.clone(),
                            _ => {
                                let frame = Utf8Bytes::from(msg.encode());
                                last_ops = Some((id, frame.clone()));
                                frame
                            }
                        }
                    }
                    ServerMsg::Peers { peers } => match &last_peers {
                        Some((seen, frame)) if seen == peers => frame.clone(),
                        _ => {
                            let frame = Utf8Bytes::from(msg.encode());
                            last_peers = Some((peers.clone(), frame.clone()));
                            frame
                        }
                    },
                    _ => Utf8Bytes::from(msg.encode()),
                };
                if out.try_send(Outbound::Text(frame)).is_err() {
                    // Full or gone: drop the sender (the socket closes 4002).
                    outs.remove(&conn);
                    queue.extend(room.on_close(conn));
                }
            }
            Action::Broadcast { conns, msg } => {
                let frame = Utf8Bytes::from(msg.encode());
                for conn in conns {
                    let Some(out) = outs.get(&conn) else { continue };
                    if out.try_send(Outbound::Text(frame.clone())).is_err() {
                        outs.remove(&conn);
                        queue.extend(room.on_close(conn));
                    }
                }
            }
            Action::Close { conn, code, reason } => {
                if let Some(out) = outs.remove(&conn) {
                    let _ = out.try_send(Outbound::Close(code, reason));
                }
                queue.extend(room.on_close(conn));
            }
            Action::Commit { pushes } => {
                let keys = pushes
                    .iter()
                    .map(|p| charge.keys.get(&p.conn).cloned())
                    .collect();
                commit_group(space, db, tx, pushes, (charge.frames.clone(), keys));
            }
            Action::CatchUp {
                conn,
                after,
                upto,
                limit,
            } => fetch_page(space, db, tx, (after, upto, limit), move |ops| match ops {
                Some(ops) => Event::CatchUpPage { conn, ops },
                None => Event::CatchUpFailed { conn },
            }),
            Action::FetchGap { after, upto, limit } => {
                fetch_page(space, db, tx, (after, upto, limit), |ops| match ops {
                    Some(ops) => Event::GapPage(ops),
                    None => Event::GapFailed,
                })
            }
            Action::Subtree { after, roots } => {
                let (db, tx, space) = (db.clone(), tx.clone(), space.to_string());
                tokio::spawn(async move {
                    let event = match db.subtree_changes(&space, after, &roots).await {
                        Ok(answers) => Event::Subtree { after, answers },
                        Err(e) => {
                            tracing::warn!(error = %e, space = %space, "reading a subtree change failed");
                            Event::SubtreeFailed { after, roots }
                        }
                    };
                    let _ = tx.send(event).await;
                });
            }
        }
    }
}
