//! The browser's sync loop: the same protocol and refusal rules as
//! `arbor_client::sync`, over a `web-sys` WebSocket and `fetch`.

use std::collections::{BTreeMap, HashSet};
use std::rc::Rc;

use arbor_client::ReplicaError;
use arbor_client::snapshot::SnapshotLoad;
use arbor_shared::protocol::{ClientMsg, ServerMsg};
use arbor_shared::{Op, Stamp};
use futures_channel::mpsc::{UnboundedReceiver, UnboundedSender, unbounded};
use futures_util::StreamExt as _;
use wasm_bindgen::JsCast as _;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use web_sys::{CloseEvent, MessageEvent, WebSocket};

use crate::{Inner, PeerJs, ProgressJs, js};

/// Ops per push and bytes per push (well under the 1 MiB frame limit; a
/// value reaches 64 KiB).
const BATCH_OPS: usize = 500;
const PUSH_BYTES: usize = 768 * 1024;
/// Pushes awaiting their ack at once.
const MAX_INFLIGHT: usize = 8;
/// Ping period, and the silence after which the socket is presumed dead.
const PING_MS: u32 = 20_000;
const SILENCE_MS: f64 = 60_000.0;

/// Where to sync.
#[derive(Debug, Clone)]
pub struct Config {
    /// HTTP base of the sync server (snapshots).
    pub server: String,
    /// WebSocket base if not the server's (the Durable Object tier).
    pub realtime: Option<String>,
    /// The thoughtspace.
    pub space: String,
    /// Bearer token.
    pub token: String,
}

/// What wakes a session.
#[derive(Debug)]
pub enum Event {
    /// The socket opened.
    Open,
    /// A text frame.
    Frame(String),
    /// The socket closed (why).
    Closed(String),
    /// Local ops were queued.
    Wake,
    /// `disconnect` (or a newer `connect`).
    Stop,
    /// Ping timer.
    Tick,
}

enum Outcome {
    /// Start a new session at once (snapshot needed, refused ops dropped).
    Again,
    /// The generation changed: stop.
    Stopped,
}

enum Failure {
    /// Retrying cannot help (bad token, read-only token, unknown space).
    Refused(String),
    /// Reconnect with backoff.
    Transient(String),
}

fn transient(e: impl std::fmt::Display) -> Failure {
    Failure::Transient(e.to_string())
}

fn from_replica(e: ReplicaError) -> Failure {
    Failure::Transient(format!("replica: {e}"))
}

/// The replica for reading; busy while another generation's cold start
/// holds it (then this session retries later instead of panicking).
fn ro(inner: &Inner) -> Result<std::cell::Ref<'_, arbor_client::Replica>, Failure> {
    inner
        .replica
        .try_borrow()
        .map_err(|_| transient("the replica is busy"))
}

/// The replica for writing (see [`ro`]).
fn rw(inner: &Inner) -> Result<std::cell::RefMut<'_, arbor_client::Replica>, Failure> {
    inner
        .replica
        .try_borrow_mut()
        .map_err(|_| transient("the replica is busy"))
}

/// Runs sessions until the generation changes or the server refuses.
pub(crate) async fn run(inner: Rc<Inner>, config: Config, generation: u64) {
    let mut backoff_ms = 250u32;
    loop {
        if inner.generation.get() != generation {
            return;
        }
        inner.set_status(|s| {
            s.state = "connecting";
        });
        match session(&inner, &config, generation, &mut backoff_ms).await {
            Ok(Outcome::Again) => continue,
            Ok(Outcome::Stopped) => return,
            Err(Failure::Refused(m)) => {
                if inner.generation.get() == generation {
                    inner.set_status(|s| {
                        s.state = "refused";
                        s.error = Some(m);
                        s.peers.clear();
                        s.progress = None;
                    });
                }
                return;
            }
            Err(Failure::Transient(m)) => {
                if inner.generation.get() != generation {
                    return;
                }
                inner.set_status(|s| {
                    s.state = "offline";
                    s.error = Some(m);
                    s.peers.clear();
                    s.progress = None;
                });
                // Jittered exponential backoff, so a restarted server is
                // not met by every client at once.
                let wait = f64::from(backoff_ms) * (0.5 + js::random());
                js::sleep_ms(wait as u32).await;
                backoff_ms = (backoff_ms * 2).min(10_000);
            }
        }
    }
}

/// The open socket, its handlers and its ping timer; dropping it detaches
/// the handlers and closes the socket.
struct Socket {
    ws: WebSocket,
    _on_open: Closure<dyn FnMut()>,
    _on_message: Closure<dyn FnMut(MessageEvent)>,
    _on_close: Closure<dyn FnMut(CloseEvent)>,
    _on_error: Closure<dyn FnMut()>,
    _on_tick: Closure<dyn FnMut()>,
    interval: JsValue,
}

impl Drop for Socket {
    fn drop(&mut self) {
        self.ws.set_onopen(None);
        self.ws.set_onmessage(None);
        self.ws.set_onclose(None);
        self.ws.set_onerror(None);
        let _ = self.ws.close();
        let global = js_sys::global();
        if let Ok(f) = js_sys::Reflect::get(&global, &"clearInterval".into()) {
            if let Ok(f) = f.dyn_into::<js_sys::Function>() {
                let _ = f.call1(&global, &self.interval);
            }
        }
    }
}

impl Socket {
    fn open(url: &str, token: &str, tx: UnboundedSender<Event>) -> Result<Socket, Failure> {
        // Browsers cannot set headers on a WebSocket: the token rides in a
        // subprotocol, and the server answers with `arbor.v1`.
        let protocols = js_sys::Array::of2(
            &JsValue::from_str("arbor.v1"),
            &JsValue::from_str(&format!("bearer.{token}")),
        );
        let ws = WebSocket::new_with_str_sequence(url, &protocols)
            .map_err(|e| transient(js::message(&e)))?;
        let t = tx.clone();
        let on_open = Closure::<dyn FnMut()>::new(move || {
            let _ = t.unbounded_send(Event::Open);
        });
        let t = tx.clone();
        let on_message = Closure::<dyn FnMut(MessageEvent)>::new(move |e: MessageEvent| {
            if let Some(text) = e.data().as_string() {
                let _ = t.unbounded_send(Event::Frame(text));
            }
        });
        let t = tx.clone();
        let on_close = Closure::<dyn FnMut(CloseEvent)>::new(move |e: CloseEvent| {
            let _ = t.unbounded_send(Event::Closed(format!(
                "closed: {} {}",
                e.code(),
                e.reason()
            )));
        });
        let t = tx.clone();
        let on_error = Closure::<dyn FnMut()>::new(move || {
            let _ = t.unbounded_send(Event::Closed("websocket error".into()));
        });
        let t = tx;
        let on_tick = Closure::<dyn FnMut()>::new(move || {
            let _ = t.unbounded_send(Event::Tick);
        });
        ws.set_onopen(Some(on_open.as_ref().unchecked_ref()));
        ws.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        ws.set_onclose(Some(on_close.as_ref().unchecked_ref()));
        ws.set_onerror(Some(on_error.as_ref().unchecked_ref()));
        let global = js_sys::global();
        let interval = js_sys::Reflect::get(&global, &"setInterval".into())
            .ok()
            .and_then(|f| f.dyn_into::<js_sys::Function>().ok())
            .and_then(|f| {
                f.call2(&global, on_tick.as_ref(), &JsValue::from(PING_MS))
                    .ok()
            })
            .unwrap_or(JsValue::NULL);
        Ok(Socket {
            ws,
            _on_open: on_open,
            _on_message: on_message,
            _on_close: on_close,
            _on_error: on_error,
            _on_tick: on_tick,
            interval,
        })
    }

    fn send(&self, msg: &ClientMsg) -> Result<(), Failure> {
        self.ws
            .send_with_str(&msg.encode())
            .map_err(|e| transient(js::message(&e)))
    }
}

/// The next event; the channel cannot end while the session holds a sender.
async fn next(rx: &mut UnboundedReceiver<Event>) -> Event {
    rx.next().await.unwrap_or(Event::Stop)
}

async fn session(
    inner: &Rc<Inner>,
    config: &Config,
    generation: u64,
    backoff_ms: &mut u32,
) -> Result<Outcome, Failure> {
    let no_cursor = ro(inner)?.cursor().map_err(from_replica)?.is_none();
    if no_cursor {
        if let Outcome::Stopped = cold_start(inner, config, generation).await? {
            return Ok(Outcome::Stopped);
        }
    }
    let base = config.realtime.as_deref().unwrap_or(&config.server);
    let url = format!(
        "{}/v1/spaces/{}/ws",
        base.trim_end_matches('/'),
        config.space
    )
    .replacen("http", "ws", 1);
    let (tx, mut rx) = unbounded();
    let socket = Socket::open(&url, &config.token, tx.clone())?;
    *inner.wake.borrow_mut() = Some(tx);
    loop {
        match next(&mut rx).await {
            Event::Open => break,
            Event::Closed(m) => return Err(Failure::Transient(m)),
            Event::Stop => return Ok(Outcome::Stopped),
            _ => {}
        }
    }
    let (replica_id, cursor) = {
        let r = ro(inner)?;
        (r.replica_id(), r.cursor().map_err(from_replica)?)
    };
    socket.send(&ClientMsg::Hello {
        v: arbor_shared::protocol::VERSION,
        replica: replica_id,
        cursor,
    })?;
    let head = loop {
        match next(&mut rx).await {
            Event::Frame(text) => match ServerMsg::decode(&text).map_err(transient)? {
                ServerMsg::Welcome {
                    head_seq, peers, ..
                } => {
                    set_peers(inner, peers);
                    break head_seq;
                }
                ServerMsg::SnapshotRequired { head_seq } => {
                    let mut r = rw(inner)?;
                    if cursor.is_some_and(|c| c > head_seq) {
                        // The server was restored from a backup: push again
                        // what we still hold.
                        r.requeue_own_ops().map_err(from_replica)?;
                    }
                    r.reset_cursor().map_err(from_replica)?;
                    return Ok(Outcome::Again);
                }
                ServerMsg::Error { code, message, .. } => {
                    return Err(Failure::Refused(format!("{code}: {message}")));
                }
                _ => {}
            },
            Event::Closed(m) => return Err(Failure::Transient(m)),
            Event::Stop => return Ok(Outcome::Stopped),
            _ => {}
        }
    };
    *backoff_ms = 250;
    inner.set_status(|s| {
        s.state = "catching_up";
        s.error = None;
        s.progress = None;
    });
    let mut inflight: BTreeMap<u64, Vec<Stamp>> = BTreeMap::new();
    let mut sent: HashSet<Stamp> = HashSet::new();
    let mut next_batch = 1u64;
    let mut last_frame = js_sys::Date::now();
    loop {
        if inner.generation.get() != generation {
            return Ok(Outcome::Stopped);
        }
        // Push what waits, up to the in-flight limit.
        while inflight.len() < MAX_INFLIGHT {
            let ops: Vec<Op> = {
                let r = ro(inner)?;
                let mut bytes = 0usize;
                r.outbox(sent.len() + BATCH_OPS)
                    .map_err(from_replica)?
                    .into_iter()
                    .filter(|o| !sent.contains(&o.stamp()))
                    .take(BATCH_OPS)
                    .take_while(|o| {
                        let n = serde_json::to_string(o).map_or(0, |t| t.len());
                        let fits = bytes == 0 || bytes + n <= PUSH_BYTES;
                        bytes += n;
                        fits
                    })
                    .collect()
            };
            if ops.is_empty() {
                break;
            }
            let stamps: Vec<Stamp> = ops.iter().map(Op::stamp).collect();
            sent.extend(stamps.iter().copied());
            inflight.insert(next_batch, stamps);
            socket.send(&ClientMsg::Push {
                batch: next_batch,
                ops,
            })?;
            next_batch += 1;
        }
        let (cursor, outbox) = {
            let r = ro(inner)?;
            (
                r.cursor().map_err(from_replica)?.unwrap_or(0),
                r.outbox_len().map_err(from_replica)?,
            )
        };
        let state = match (cursor >= head, outbox) {
            (false, _) => "catching_up",
            (true, 0) => "live",
            (true, _) => "pushing",
        };
        let changed = {
            let s = inner.status.borrow();
            s.state != state || s.cursor != Some(cursor) || s.outbox != outbox
        };
        if changed {
            inner.set_status(|s| s.state = state);
        }
        match next(&mut rx).await {
            Event::Frame(text) => {
                last_frame = js_sys::Date::now();
                match ServerMsg::decode(&text).map_err(|e| transient(format!("bad frame: {e}")))? {
                    ServerMsg::Ops { ops } => {
                        let applied = rw(inner)?.apply_remote(&ops);
                        match applied {
                            Ok(_) => inner.flush_changes(),
                            // Frames lost in between: reconnect from the cursor.
                            Err(ReplicaError::Gap { .. }) => return Err(transient("seq gap")),
                            Err(e) => return Err(from_replica(e)),
                        }
                    }
                    ServerMsg::Ack { batch } => {
                        if let Some(stamps) = inflight.remove(&batch) {
                            rw(inner)?.acknowledge(&stamps).map_err(from_replica)?;
                            for s in &stamps {
                                sent.remove(s);
                            }
                        }
                    }
                    ServerMsg::Error {
                        code,
                        message,
                        batch: Some(batch),
                    } => {
                        let stamps = inflight.remove(&batch).unwrap_or_default();
                        for s in &stamps {
                            sent.remove(s);
                        }
                        return refused_push(inner, &code, &message, &stamps);
                    }
                    ServerMsg::Error {
                        code,
                        message,
                        batch: None,
                    } => return Err(Failure::Transient(format!("{code}: {message}"))),
                    ServerMsg::Peers { peers } => set_peers(inner, peers),
                    ServerMsg::SnapshotRequired { .. } => {
                        rw(inner)?.reset_cursor().map_err(from_replica)?;
                        return Ok(Outcome::Again);
                    }
                    ServerMsg::Welcome { .. } | ServerMsg::Pong => {}
                }
            }
            Event::Closed(m) => return Err(Failure::Transient(m)),
            Event::Stop => return Ok(Outcome::Stopped),
            Event::Wake | Event::Open => {}
            Event::Tick => {
                if js_sys::Date::now() - last_frame > SILENCE_MS {
                    return Err(transient("no frame for 60 s"));
                }
                socket.send(&ClientMsg::Ping)?;
            }
        }
    }
}

/// The server refused a push: the same three kinds as the native client.
fn refused_push(
    inner: &Rc<Inner>,
    code: &str,
    message: &str,
    stamps: &[Stamp],
) -> Result<Outcome, Failure> {
    match code {
        // The horizon passed our ops: load the snapshot, then re-stamp them.
        "stale" => {
            let mut r = rw(inner)?;
            r.request_restamp().map_err(from_replica)?;
            r.reset_cursor().map_err(from_replica)?;
            Ok(Outcome::Again)
        }
        // The ops themselves are refused for good: drop them and resync so
        // their local effects go.
        "bad_op" | "reserved_node" | "bad_key" | "bad_field" | "value_too_long"
        | "stamp_conflict" | "unknown_node" | "bad_batch" | "wrong_replica" => {
            {
                let mut r = rw(inner)?;
                r.drop_from_outbox(stamps).map_err(from_replica)?;
                r.reset_cursor().map_err(from_replica)?;
            }
            inner.set_status(|s| s.rejected += stamps.len() as u64);
            Ok(Outcome::Again)
        }
        "forbidden" | "unknown_space" | "wrong_space" => {
            Err(Failure::Refused(format!("push refused: {code}: {message}")))
        }
        _ => Err(Failure::Transient(format!(
            "push refused: {code}: {message}"
        ))),
    }
}

fn set_peers(inner: &Inner, peers: Vec<arbor_shared::protocol::Peer>) {
    inner.set_status(|s| {
        s.peers = peers
            .into_iter()
            .map(|p| PeerJs {
                conn: p.conn,
                sub: p.sub,
                replica: p.replica.map(|r| r.0.to_string()),
            })
            .collect();
    });
}

/// Downloads the snapshot with `fetch` and loads it as it streams, in one
/// transaction (a cut rolls back; the next session starts over). The
/// replica stays borrowed across the awaits on purpose: it is mid-
/// transaction, and every other caller uses `try_borrow` and gets `busy`.
#[allow(clippy::await_holding_refcell_ref)]
async fn cold_start(
    inner: &Rc<Inner>,
    config: &Config,
    generation: u64,
) -> Result<Outcome, Failure> {
    let root = ro(inner)?.subtree_root().map_err(from_replica)?;
    let path = match root {
        Some(root) => format!("/subtree/{root}/snapshot"),
        None => "/snapshot".to_string(),
    };
    let url = format!(
        "{}/v1/spaces/{}{path}",
        config.server.trim_end_matches('/'),
        config.space
    );
    inner.set_status(|s| {
        s.state = "cold_start";
        s.progress = Some(ProgressJs {
            rows: 0,
            total: 0,
            bytes: 0,
        });
    });
    let headers = web_sys::Headers::new().map_err(|e| transient(js::message(&e)))?;
    headers
        .set("authorization", &format!("Bearer {}", config.token))
        .map_err(|e| transient(js::message(&e)))?;
    let init = web_sys::RequestInit::new();
    init.set_method("GET");
    init.set_headers(&headers);
    let request = web_sys::Request::new_with_str_and_init(&url, &init)
        .map_err(|e| transient(js::message(&e)))?;
    let scope: web_sys::WorkerGlobalScope = js_sys::global().unchecked_into();
    let response: web_sys::Response = JsFuture::from(scope.fetch_with_request(&request))
        .await
        .map_err(|e| transient(format!("snapshot: {}", js::message(&e))))?
        .unchecked_into();
    let status = response.status();
    if (400..500).contains(&status) {
        let body = match response.text() {
            Ok(p) => JsFuture::from(p)
                .await
                .ok()
                .and_then(|t| t.as_string())
                .unwrap_or_default(),
            Err(_) => String::new(),
        };
        return Err(Failure::Refused(format!("snapshot: {status} {body}")));
    }
    if !response.ok() {
        return Err(transient(format!("snapshot: {status}")));
    }
    let body = response
        .body()
        .ok_or_else(|| transient("snapshot: no body"))?;
    let reader: web_sys::ReadableStreamDefaultReader = body
        .get_reader()
        .dyn_into()
        .map_err(|_| transient("snapshot: no reader"))?;
    let mut guard = inner
        .replica
        .try_borrow_mut()
        .map_err(|_| transient("replica busy"))?;
    let mut load = SnapshotLoad::begin(&mut guard).map_err(from_replica)?;
    loop {
        if inner.generation.get() != generation {
            // Dropping the load rolls it back.
            return Ok(Outcome::Stopped);
        }
        let chunk = JsFuture::from(reader.read())
            .await
            .map_err(|e| transient(format!("snapshot: {}", js::message(&e))))?;
        let done = js_sys::Reflect::get(&chunk, &"done".into())
            .ok()
            .and_then(|d| d.as_bool())
            .unwrap_or(true);
        if done {
            break;
        }
        let value = js_sys::Reflect::get(&chunk, &"value".into())
            .map_err(|e| transient(js::message(&e)))?;
        let bytes = js_sys::Uint8Array::new(&value).to_vec();
        let p = load.push(&bytes).map_err(|e| match e {
            ReplicaError::Snapshot(m) => Failure::Transient(format!("snapshot: {m}")),
            e => from_replica(e),
        })?;
        inner.set_status(|s| {
            s.progress = Some(ProgressJs {
                rows: p.rows,
                total: p.total_rows,
                bytes: p.bytes,
            });
        });
    }
    load.finish().map_err(|e| match e {
        ReplicaError::Snapshot(m) => Failure::Transient(format!("snapshot: {m}")),
        e => from_replica(e),
    })?;
    drop(guard);
    inner.flush_changes();
    Ok(Outcome::Again)
}
