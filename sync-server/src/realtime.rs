//! The native realtime endpoint: one actor task per thoughtspace drives the
//! shared room state machine ([`arbor_shared::room::Room`]); sockets and
//! database work talk to it through bounded channels.
//!
//! Ordering: the actor is the only owner of a room, so the room sees every
//! event in one order. Pushes are committed by spawned tasks (Postgres
//! serializes them per space); their answers can come back out of seq
//! order, which the room turns into in-order delivery (it holds commits
//! above a gap and asks for the gap). Memory: each socket has a bounded
//! outbound queue; a socket whose queue is full is closed (4002) instead of
//! growing it.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arbor_shared::auth::Claims;
use arbor_shared::protocol::SeqOp;
use arbor_shared::room::{Action, ConnId, Room, RoomLimits, close};
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use tokio::sync::{Mutex, mpsc};

use crate::db::{Committed, Db, Origin};

/// Events queued for one room.
const ROOM_EVENTS: usize = 1024;
/// Catch-up page size.
const CATCH_UP_PAGE: u32 = 1_000;

enum Outbound {
    Text(String),
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
    CatchUpPage {
        conn: ConnId,
        ops: Vec<SeqOp>,
        done: bool,
    },
    Ingested {
        conn: ConnId,
        batch: u64,
        ops: Vec<SeqOp>,
    },
    IngestFailed {
        conn: ConnId,
        batch: u64,
        code: String,
        message: String,
    },
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
}

fn seq_op(c: Committed) -> SeqOp {
    SeqOp {
        seq: c.seq,
        op: c.op,
    }
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
    pub fn new(db: Db, leeway_s: u64, socket_queue: usize) -> Rooms {
        Rooms {
            db,
            leeway_s,
            socket_queue: socket_queue.max(1),
            next_conn: AtomicU64::new(1),
            rooms: Mutex::new(HashMap::new()),
        }
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
        let room = Room::new(space, info.head_seq, info.horizon, RoomLimits::default());
        tokio::spawn(run_room(
            space.to_string(),
            room,
            self.db.clone(),
            self.leeway_s,
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

    /// Closes every socket with 1001 (shutdown).
    pub async fn close_all(&self) {
        let rooms: Vec<_> = self.rooms.lock().await.values().cloned().collect();
        for tx in rooms {
            let _ = tx.send(Event::CloseAll).await;
        }
    }

    /// Serves an upgraded socket whose token was verified for `space`.
    pub async fn serve(self: Arc<Self>, space: String, claims: Claims, mut socket: WebSocket) {
        let room = match self.room(&space).await {
            Ok(r) => r,
            Err(e) => {
                let _ = socket
                    .send(Message::Close(Some(CloseFrame {
                        code: close::GOING_AWAY,
                        reason: e.to_string().chars().take(100).collect::<String>().into(),
                    })))
                    .await;
                return;
            }
        };
        let conn = self.next_conn.fetch_add(1, Ordering::Relaxed);
        metrics::gauge!(crate::metrics::SOCKETS_ACTIVE).increment(1.0);
        self.serve_conn(conn, room, claims, socket).await;
        metrics::gauge!(crate::metrics::SOCKETS_ACTIVE).decrement(1.0);
    }

    async fn serve_conn(
        &self,
        conn: ConnId,
        room: mpsc::Sender<Event>,
        claims: Claims,
        mut socket: WebSocket,
    ) {
        let (out_tx, mut out_rx) = mpsc::channel(self.socket_queue);
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
        loop {
            tokio::select! {
                incoming = socket.recv() => match incoming {
                    Some(Ok(Message::Text(text))) => {
                        let event = Event::Message { conn, text: text.as_str().to_string() };
                        if room.send(event).await.is_err() { break; }
                    }
                    Some(Ok(Message::Binary(_))) => {
                        // Not a JSON text frame: the room refuses it.
                        let event = Event::Message { conn, text: String::from("binary frame") };
                        if room.send(event).await.is_err() { break; }
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                    Some(Ok(Message::Close(_)) | Err(_)) | None => break,
                },
                outgoing = out_rx.recv() => match outgoing {
                    Some(Outbound::Text(text)) => {
                        if socket.send(Message::Text(text.into())).await.is_err() { break; }
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
    tx: mpsc::Sender<Event>,
    mut rx: mpsc::Receiver<Event>,
) {
    let mut outs: HashMap<ConnId, mpsc::Sender<Outbound>> = HashMap::new();
    // Pushes are committed one at a time in arrival order (a client's
    // later push may depend on its earlier one; Postgres serializes a
    // space's ingest anyway).
    let mut ingests = Ingests::default();
    // Token expiry is checked once a second.
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        let actions = tokio::select! {
            event = rx.recv() => {
                let Some(event) = event else { break };
                match event {
                    Event::Connect { conn, claims, out } => {
                        outs.insert(conn, out);
                        room.on_connect(conn, claims)
                    }
                    Event::Message { conn, text } => room.on_message(conn, &text),
                    Event::Closed { conn } => {
                        outs.remove(&conn);
                        room.on_close(conn)
                    }
                    Event::Committed(ops) => room.on_committed(ops),
                    Event::CatchUpPage { conn, ops, done } => room.on_catch_up(conn, ops, done),
                    Event::Ingested { conn, batch, ops } => {
                        ingests.busy = false;
                        room.on_ingested(conn, batch, ops)
                    }
                    Event::IngestFailed { conn, batch, code, message } => {
                        ingests.busy = false;
                        room.on_ingest_failed(conn, batch, &code, &message)
                    }
                    Event::CloseAll => room.close_all(),
                }
            }
            _ = tick.tick() => room.on_tick(now_s(), leeway_s),
        };
        execute(
            &space,
            &mut room,
            &db,
            &tx,
            &mut outs,
            &mut ingests,
            actions,
        );
        ingests.start_next(&space, &db, &tx);
    }
}

/// The push queue of a room: at most one commit in flight.
#[derive(Default)]
struct Ingests {
    queue: std::collections::VecDeque<(
        ConnId,
        u64,
        Option<arbor_shared::ReplicaId>,
        Vec<arbor_shared::Op>,
    )>,
    /// A commit is running; its answer comes back as an event.
    busy: bool,
}

impl Ingests {
    fn start_next(&mut self, space: &str, db: &Db, tx: &mpsc::Sender<Event>) {
        if self.busy {
            return;
        }
        let Some((conn, batch, author, ops)) = self.queue.pop_front() else {
            return;
        };
        self.busy = true;
        let (db, tx, space) = (db.clone(), tx.clone(), space.to_string());
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let event = match db.apply(&space, author, &ops).await {
                Ok(committed) => {
                    let ops = seq_ops(committed);
                    crate::metrics::ingest(Ok(ops.len() as u64), started.elapsed().as_secs_f64());
                    Event::Ingested { conn, batch, ops }
                }
                Err(e) => {
                    let code = e.reject_code().map_or("unavailable", |c| c.as_str());
                    crate::metrics::ingest(Err(code), 0.0);
                    Event::IngestFailed {
                        conn,
                        batch,
                        code: code.to_string(),
                        message: e.to_string(),
                    }
                }
            };
            let _ = tx.send(event).await;
        });
    }
}

fn execute(
    space: &str,
    room: &mut Room,
    db: &Db,
    tx: &mpsc::Sender<Event>,
    outs: &mut HashMap<ConnId, mpsc::Sender<Outbound>>,
    ingests: &mut Ingests,
    actions: Vec<Action>,
) {
    let mut queue: std::collections::VecDeque<Action> = actions.into();
    while let Some(action) = queue.pop_front() {
        match action {
            Action::Send { conn, msg } => {
                let Some(out) = outs.get(&conn) else { continue };
                if out.try_send(Outbound::Text(msg.encode())).is_err() {
                    // Full or gone: drop the sender (the socket closes 4002).
                    outs.remove(&conn);
                    queue.extend(room.on_close(conn));
                }
            }
            Action::Close { conn, code, reason } => {
                if let Some(out) = outs.remove(&conn) {
                    let _ = out.try_send(Outbound::Close(code, reason));
                }
                queue.extend(room.on_close(conn));
            }
            Action::Ingest {
                conn,
                batch,
                author,
                ops,
            } => ingests.queue.push_back((conn, batch, author, ops)),
            Action::CatchUp { conn, after, upto } => {
                let (db, tx, space) = (db.clone(), tx.clone(), space.to_string());
                tokio::spawn(async move {
                    let mut cursor = after;
                    loop {
                        let page = match db.ops_after(&space, cursor, CATCH_UP_PAGE).await {
                            Ok(p) => p,
                            Err(e) => {
                                tracing::warn!(error = %e, "catch-up failed");
                                let _ = tx.send(Event::Closed { conn }).await;
                                return;
                            }
                        };
                        let ops: Vec<SeqOp> = page
                            .ops
                            .into_iter()
                            .filter(|c| c.seq <= upto)
                            .map(seq_op)
                            .collect();
                        cursor = ops.last().map_or(upto, |o| o.seq);
                        let done = cursor >= upto || ops.is_empty();
                        if tx
                            .send(Event::CatchUpPage { conn, ops, done })
                            .await
                            .is_err()
                            || done
                        {
                            return;
                        }
                    }
                });
            }
            Action::FetchGap { after, upto } => {
                let (db, tx, space) = (db.clone(), tx.clone(), space.to_string());
                tokio::spawn(async move {
                    let limit = u32::try_from(upto.saturating_sub(after)).unwrap_or(u32::MAX);
                    if let Ok(page) = db.ops_after(&space, after, limit).await {
                        let ops = page.ops.into_iter().map(seq_op).collect();
                        let _ = tx.send(Event::Committed(ops)).await;
                    }
                });
            }
        }
    }
}
