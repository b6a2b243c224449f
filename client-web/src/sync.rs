//! The browser driver of the sync session: moves frames between a `web-sys` WebSocket and `arbor_client::session::Session`, streams the snapshot from `fetch`, arms one timer.
//!
//! Every protocol decision is the session's (the same one the native
//! client drives); this file only does what its actions say.

use std::collections::VecDeque;
use std::rc::Rc;

use arbor_client::ReplicaError;
use arbor_client::image::{ImageDecoder, ImageInfo};
use arbor_client::session::{
    Action, ConnectFailure, Session, SessionConfig, SnapshotFailure, SyncState, SyncStatus,
};
use arbor_client::snapshot::SnapshotLoad;
use arbor_shared::error::ErrorBody;
use arbor_shared::protocol::ClientMsg;
use futures_channel::mpsc::{UnboundedReceiver, UnboundedSender, unbounded};
use futures_util::StreamExt as _;
use wasm_bindgen::JsCast as _;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use web_sys::{CloseEvent, MessageEvent, WebSocket};

use crate::{Inner, PeerJs, ProgressJs, js};

/// First reconnect delay and its ceiling, ms (a tab can wait longer than a
/// CLI).
const MIN_BACKOFF_MS: u64 = 250;
const MAX_BACKOFF_MS: u64 = 10_000;

/// Where to sync.
#[derive(Debug, Clone)]
pub struct Config {
    /// HTTP base of the sync server (snapshots).
    pub server: String,
    /// WebSocket base if not the server's (the Durable Object tier).
    pub realtime: Option<String>,
    /// The thoughtspace.
    pub space: String,
    /// A subtree replica's root (its `hello` names it; the session reads
    /// it from the replica).
    pub root: Option<arbor_shared::NodeId>,
    /// Bearer token.
    pub token: String,
    /// Keep-alive period, ms (`None`: the session's default).
    pub keepalive_ms: Option<u64>,
    /// A cold start tries the server's replica image first (a replica on
    /// OPFS only).
    pub images: bool,
}

/// What wakes the driver.
#[derive(Debug)]
pub enum Event {
    /// A socket event; the id tells it from events of a socket already
    /// dropped, which may still wait in the channel.
    Socket(u64, SocketEvent),
    /// Local ops were queued.
    Wake,
    /// The presence state in the status changed.
    Presence,
    /// `disconnect` (or a newer `connect`).
    Stop,
    /// The session's deadline passed.
    Timer,
}

/// What a socket reported.
#[derive(Debug)]
pub enum SocketEvent {
    /// It opened.
    Open,
    /// A text frame.
    Frame(String),
    /// It closed: its close code (none: it failed or never opened), and
    /// reason.
    Closed(Option<u16>, String),
}

/// Milliseconds for the session's clock.
fn now() -> u64 {
    js_sys::Date::now() as u64
}

/// Runs the session until the generation changes or the session is over.
pub(crate) async fn run(inner: Rc<Inner>, config: Config, generation: u64) {
    let defaults = SessionConfig::new(&config.space);
    let ping_ms = config.keepalive_ms.unwrap_or(defaults.ping_ms);
    let mut session = Session::new(
        SessionConfig {
            min_backoff_ms: MIN_BACKOFF_MS,
            max_backoff_ms: MAX_BACKOFF_MS,
            ping_ms,
            silence_ms: 3 * ping_ms,
            token_root: arbor_shared::auth::unverified_root(&config.token),
            // Images are imported into the OPFS pool beside the replica
            // file: a replica in memory loads rows.
            images: config.images && inner.pool.is_some(),
            ..defaults
        },
        (js::random() * 2f64.powi(53)) as u64,
    );
    // The state set before this session (or kept from the last one) goes
    // out once it is welcomed.
    let presence = inner.status.borrow().presence.clone();
    if let Err(e) = session.set_presence(presence, now()) {
        js::warn(&format!("arbor: presence not sent: {e}"));
    }
    let (tx, rx) = unbounded();
    *inner.wake.borrow_mut() = Some(tx.clone());
    let mut driver = Driver {
        inner,
        config,
        generation,
        session,
        tx,
        rx,
        socket: None,
        sockets_opened: 0,
        timer: None,
    };
    driver.run().await;
}

struct Driver {
    inner: Rc<Inner>,
    config: Config,
    generation: u64,
    session: Session,
    tx: UnboundedSender<Event>,
    rx: UnboundedReceiver<Event>,
    socket: Option<Socket>,
    /// Sockets opened so far (the next one's id).
    sockets_opened: u64,
    /// The session's deadline, armed (dropping it clears it).
    timer: Option<Timer>,
}

impl Driver {
    fn current(&self) -> bool {
        self.inner.generation.get() == self.generation
    }

    /// Calls the session with the replica. The replica is busy only while
    /// an older generation's cold start unwinds: wait for it.
    async fn call(
        &mut self,
        f: impl Fn(&mut Session, &mut arbor_client::Replica) -> Vec<Action>,
    ) -> Vec<Action> {
        loop {
            if let Ok(mut r) = self.inner.replica.try_borrow_mut() {
                let actions = f(&mut self.session, &mut r);
                drop(r);
                self.inner.flush_changes();
                return actions;
            }
            js::sleep_ms(50).await;
        }
    }

    async fn run(&mut self) {
        let mut todo: VecDeque<Action> = self.call(|s, r| s.start(r, now())).await.into();
        loop {
            while let Some(action) = todo.pop_front() {
                if !self.current() {
                    return;
                }
                let more = match action {
                    Action::LoadSnapshot { path } => match self.cold_start(&path).await {
                        Ok(true) => self.call(|s, r| s.on_snapshot_loaded(r, now())).await,
                        // A newer generation took over.
                        Ok(false) => return,
                        Err(f) => {
                            let failure = std::cell::Cell::new(Some(f));
                            self.call(|s, r| match failure.take() {
                                Some(f) => s.on_snapshot_failed(r, now(), f),
                                None => Vec::new(),
                            })
                            .await
                        }
                    },
                    Action::LoadImage { path } => match self.load_image(&path).await {
                        Ok(true) => self.call(|s, r| s.on_image_loaded(r, now())).await,
                        Ok(false) => return,
                        Err(why) => {
                            // Rows come next; say why in the console (the
                            // session's own log is native only).
                            js::warn(&format!("arbor: no replica image ({why}): loading rows"));
                            self.call(|s, r| s.on_image_failed(r, now(), &why)).await
                        }
                    },
                    Action::Connect => self.connect().await,
                    Action::Send(msg) => {
                        let sent = match self.socket.as_ref() {
                            Some(socket) => socket.send(&msg),
                            None => Err("not connected".into()),
                        };
                        match sent {
                            Ok(()) => Vec::new(),
                            Err(e) => {
                                self.socket = None;
                                self.call(|s, r| s.on_closed(r, now(), None, &e)).await
                            }
                        }
                    }
                    Action::Disconnect => {
                        self.socket = None;
                        Vec::new()
                    }
                    Action::Status(s) => {
                        publish(&self.inner, &s);
                        Vec::new()
                    }
                    Action::Rejected(r) => {
                        js::warn(&format!(
                            "arbor: {} ops refused for good: {}: {}",
                            r.stamps.len(),
                            r.code,
                            r.message
                        ));
                        Vec::new()
                    }
                    Action::Idle | Action::Stopped(_) => return,
                };
                todo.extend(more);
            }
            self.timer = self
                .session
                .deadline()
                .map(|at| Timer::start(at.saturating_sub(now()), self.tx.clone()));
            let event = self.rx.next().await.unwrap_or(Event::Stop);
            if !self.current() {
                return;
            }
            let event = match event {
                Event::Socket(id, e) if self.socket.as_ref().is_some_and(|s| s.id == id) => Some(e),
                // A dropped socket's late event.
                Event::Socket(..) => continue,
                Event::Wake => {
                    let more = self.call(|s, r| s.on_outbox(r, now())).await;
                    todo.extend(more);
                    continue;
                }
                Event::Presence => {
                    let state = self.inner.status.borrow().presence.clone();
                    match self.session.set_presence(state, now()) {
                        Ok(more) => todo.extend(more),
                        // `setPresence` checked the size already.
                        Err(e) => js::warn(&format!("arbor: presence not sent: {e}")),
                    }
                    continue;
                }
                Event::Timer => {
                    let more = self.call(|s, r| s.on_timer(r, now())).await;
                    todo.extend(more);
                    continue;
                }
                Event::Stop => {
                    self.socket = None;
                    return;
                }
            };
            let more = match event {
                None => Vec::new(),
                Some(SocketEvent::Open) => self.call(|s, r| s.on_open(r, now())).await,
                Some(SocketEvent::Frame(text)) => {
                    self.call(|s, r| s.on_frame(r, now(), &text)).await
                }
                Some(SocketEvent::Closed(code, reason)) => {
                    let opened = self.socket.as_ref().is_some_and(|s| s.opened.get());
                    self.socket = None;
                    if opened {
                        self.call(|s, r| s.on_closed(r, now(), code, &reason)).await
                    } else {
                        // A browser hides why an upgrade failed: ask the
                        // server over HTTP, with the same token.
                        let failure = std::cell::Cell::new(Some(self.why_refused().await));
                        self.call(|s, r| match failure.take() {
                            Some(f) => s.on_connect_failed(r, now(), f),
                            None => Vec::new(),
                        })
                        .await
                    }
                }
            };
            todo.extend(more);
        }
    }

    async fn connect(&mut self) -> Vec<Action> {
        let base = self
            .config
            .realtime
            .as_deref()
            .unwrap_or(&self.config.server);
        let url = format!(
            "{}/v1/spaces/{}/ws",
            base.trim_end_matches('/'),
            self.config.space
        )
        .replacen("http", "ws", 1);
        self.sockets_opened += 1;
        let id = self.sockets_opened;
        match Socket::open(id, &url, &self.config.token, self.tx.clone()) {
            Ok(s) => {
                self.socket = Some(s);
                Vec::new()
            }
            Err(e) => {
                let failure = std::cell::Cell::new(Some(ConnectFailure::Transport(e)));
                self.call(|s, r| match failure.take() {
                    Some(f) => s.on_connect_failed(r, now(), f),
                    None => Vec::new(),
                })
                .await
            }
        }
    }

    /// Why the socket did not open: the cheapest authorized read of the
    /// space with the same token answers the same refusal an upgrade gets
    /// (401, 403, 404 with a typed body); anything else is transient. A
    /// subtree replica reads its root's first child instead of the ops (a
    /// token limited to the subtree may not read the whole space's).
    async fn why_refused(&self) -> ConnectFailure {
        let base = self.config.server.trim_end_matches('/');
        let space = &self.config.space;
        let url = match self.config.root {
            Some(root) => format!("{base}/v1/spaces/{space}/nodes/{root}/children?limit=1"),
            None => format!("{base}/v1/spaces/{space}/ops?after=18446744073709551615&limit=1"),
        };
        match fetch(&url, &self.config.token).await {
            Ok(response) if !response.ok() => {
                let status = response.status();
                let code = read_error(&response).await.map(|b| b.error.code);
                ConnectFailure::Http { status, code }
            }
            Ok(_) => ConnectFailure::Transport("the socket closed before it opened".into()),
            Err(e) => ConnectFailure::Transport(e),
        }
    }

    /// Downloads the replica image with `fetch` and decodes it as it
    /// streams straight into the replica's own file in the OPFS pool: the
    /// replica (which holds nothing of its own) closes its file, the pool's
    /// streaming import writes the image under its name, and the replica
    /// opens it once it checks out (`Replica::close_for_image`,
    /// `open_image`). The pool has no rename, and copying the pages in would
    /// write the whole file twice more through the WAL. Any failure: the
    /// file goes and the replica is opened empty again with its own id and
    /// settings, as it was (`reopen_empty`). A crash meanwhile leaves no
    /// file (an import is named only when it finishes): the next open makes
    /// a fresh replica. The replica stays borrowed throughout (other callers
    /// get `busy`, as during a row cold start). `Ok(false)`: a newer
    /// generation took over. `Err`: why rows are loaded instead.
    #[allow(clippy::await_holding_refcell_ref)]
    async fn load_image(&mut self, path: &str) -> Result<bool, String> {
        use rsqlite_vfs::VfsFilesManager as _;
        use rsqlite_vfs::transfer::DbTransfer as _;
        let inner = self.inner.clone();
        let Some(pool) = inner.pool.as_ref() else {
            return Err("a replica in memory loads rows".into());
        };
        let url = format!(
            "{}/v1/spaces/{}{path}?schema={}",
            self.config.server.trim_end_matches('/'),
            self.config.space,
            arbor_client::schema::VERSION
        );
        let response = fetch(&url, &self.config.token).await?;
        if !response.ok() {
            return Err(format!("HTTP {}", response.status()));
        }
        let headers = response.headers();
        let info = ImageInfo::from_headers(|name| headers.get(name).ok().flatten())
            .map_err(|e| e.to_string())?;
        let reader: web_sys::ReadableStreamDefaultReader = response
            .body()
            .ok_or("no body")?
            .get_reader()
            .dyn_into()
            .map_err(|_| "no reader")?;
        let mut guard = inner
            .replica
            .try_borrow_mut()
            .map_err(|_| "the replica is busy")?;
        let swap = guard.close_for_image().map_err(|e| e.to_string())?;
        let name = swap.path.to_string_lossy().into_owned();
        let image_err = |e: &dyn std::fmt::Display| ReplicaError::Image(e.to_string());
        let imported = async {
            // The closed replica's file (and any sidecar) makes way.
            for suffix in ["", "-journal", "-wal"] {
                pool.remove(&format!("{name}{suffix}"))
                    .map_err(|e| image_err(&e))?;
            }
            let mut import = pool
                .begin_import(&name, info.size)
                .map_err(|e| image_err(&e))?;
            let mut decoder = ImageDecoder::new(&info)?;
            let mut sink = |bytes: &[u8]| import.write(bytes).map_err(|e| image_err(&e));
            loop {
                if !self.current() {
                    return Ok(false);
                }
                let Some(bytes) = next_chunk(&reader).await.map_err(ReplicaError::Image)? else {
                    break;
                };
                decoder.push(&bytes, &mut sink)?;
                let progress = arbor_client::snapshot::Progress {
                    bytes: decoder.decoded(),
                    total_bytes: info.size,
                    ..Default::default()
                };
                for action in self.session.on_snapshot_progress(progress) {
                    if let Action::Status(s) = action {
                        publish(&self.inner, &s);
                    }
                }
            }
            decoder.finish(&mut sink)?;
            import.finish().map_err(|e| image_err(&e))?;
            Ok(true)
        }
        .await;
        let outcome = match imported {
            Ok(true) => guard.open_image(&swap, &info).map(|_| true),
            other => other,
        };
        if !matches!(outcome, Ok(true)) {
            // Not this replica's file: the replica as it was, empty.
            for suffix in ["", "-journal", "-wal"] {
                let _ = pool.remove(&format!("{name}{suffix}"));
            }
            guard
                .reopen_empty(&swap)
                .map_err(|e| format!("reopening the replica: {e}"))?;
        }
        crate::checkpoint::configure(guard.connection())
            .map_err(|e| format!("the replica file: {e}"))?;
        drop(guard);
        self.inner.flush_changes();
        outcome.map_err(|e: ReplicaError| e.to_string())
    }

    /// Downloads the snapshot with `fetch` and loads it as it streams, in
    /// one transaction (a cut rolls back; the next attempt starts over).
    /// `Ok(false)`: a newer generation took over (the load was dropped).
    /// The replica stays borrowed across the awaits on purpose: it is mid-
    /// transaction, and every other caller uses `try_borrow` and gets `busy`.
    #[allow(clippy::await_holding_refcell_ref)]
    async fn cold_start(&mut self, path: &str) -> Result<bool, SnapshotFailure> {
        let url = format!(
            "{}/v1/spaces/{}{path}",
            self.config.server.trim_end_matches('/'),
            self.config.space
        );
        let response = fetch(&url, &self.config.token)
            .await
            .map_err(SnapshotFailure::Transport)?;
        if !response.ok() {
            let status = response.status();
            let body = read_error(&response).await;
            return Err(SnapshotFailure::Http {
                status,
                code: body.as_ref().map(|b| b.error.code),
                message: body.map_or_else(|| format!("HTTP {status}"), |b| b.error.message),
            });
        }
        let body = response
            .body()
            .ok_or_else(|| SnapshotFailure::Transport("no body".into()))?;
        let reader: web_sys::ReadableStreamDefaultReader = body
            .get_reader()
            .dyn_into()
            .map_err(|_| SnapshotFailure::Transport("no reader".into()))?;
        let inner = self.inner.clone();
        let mut guard = inner
            .replica
            .try_borrow_mut()
            .map_err(|_| SnapshotFailure::Transport("the replica is busy".into()))?;
        let mut load = SnapshotLoad::begin(&mut guard).map_err(SnapshotFailure::Replica)?;
        let loaded = |e: ReplicaError| match e {
            ReplicaError::Snapshot(m) => SnapshotFailure::Transport(m),
            e => SnapshotFailure::Replica(e),
        };
        loop {
            if !self.current() {
                // Dropping the load rolls it back.
                return Ok(false);
            }
            let Some(bytes) = next_chunk(&reader)
                .await
                .map_err(SnapshotFailure::Transport)?
            else {
                break;
            };
            let p = load.push(&bytes).map_err(loaded)?;
            for action in self.session.on_snapshot_progress(p) {
                if let Action::Status(s) = action {
                    publish(&self.inner, &s);
                }
            }
        }
        load.finish().map_err(loaded)?;
        drop(guard);
        self.inner.flush_changes();
        Ok(true)
    }
}

/// The next chunk of a `fetch` body (`None`: it ended).
async fn next_chunk(
    reader: &web_sys::ReadableStreamDefaultReader,
) -> Result<Option<Vec<u8>>, String> {
    let chunk = JsFuture::from(reader.read())
        .await
        .map_err(|e| js::message(&e))?;
    let done = js_sys::Reflect::get(&chunk, &"done".into())
        .ok()
        .and_then(|d| d.as_bool())
        .unwrap_or(true);
    if done {
        return Ok(None);
    }
    let value = js_sys::Reflect::get(&chunk, &"value".into()).map_err(|e| js::message(&e))?;
    Ok(Some(js_sys::Uint8Array::new(&value).to_vec()))
}

/// The session's status, as `web/src/types.ts` `Status` has it.
fn publish(inner: &Inner, s: &SyncStatus) {
    inner.set_status(|st| {
        st.state = match &s.state {
            // `disconnect` and a finished session look the same to a page.
            SyncState::Stopped => "offline",
            other => other.name(),
        };
        st.error = s.state.error().map(str::to_string);
        st.rejected = s.rejected;
        st.progress = match &s.state {
            SyncState::ColdStart(p) => Some(ProgressJs {
                rows: p.rows,
                total: p.total_rows,
                bytes: p.bytes,
                total_bytes: p.total_bytes,
            }),
            _ => None,
        };
        st.peers = match &s.state {
            SyncState::Offline { .. } | SyncState::Refused { .. } | SyncState::Stopped => {
                Vec::new()
            }
            _ => s
                .peers
                .iter()
                .map(|p| PeerJs {
                    conn: p.conn,
                    sub: p.sub.clone(),
                    replica: p.replica.map(|r| r.0.to_string()),
                    state: p.state.clone(),
                })
                .collect(),
        };
    });
}

/// A GET with the bearer token, from the worker's global scope.
pub(crate) async fn fetch(url: &str, token: &str) -> Result<web_sys::Response, String> {
    let headers = web_sys::Headers::new().map_err(|e| js::message(&e))?;
    headers
        .set("authorization", &format!("Bearer {token}"))
        .map_err(|e| js::message(&e))?;
    let init = web_sys::RequestInit::new();
    init.set_method("GET");
    init.set_headers(&headers);
    let request =
        web_sys::Request::new_with_str_and_init(url, &init).map_err(|e| js::message(&e))?;
    let scope: web_sys::WorkerGlobalScope = js_sys::global().unchecked_into();
    Ok(JsFuture::from(scope.fetch_with_request(&request))
        .await
        .map_err(|e| js::message(&e))?
        .unchecked_into())
}

/// The typed error body of a refusal, if it has one.
pub(crate) async fn read_error(response: &web_sys::Response) -> Option<ErrorBody> {
    let text = JsFuture::from(response.text().ok()?)
        .await
        .ok()?
        .as_string()?;
    serde_json::from_str(&text).ok()
}

/// A one-shot `setTimeout` that wakes the driver; dropping it clears it.
struct Timer {
    handle: JsValue,
    _callback: Closure<dyn FnMut()>,
}

impl Timer {
    fn start(ms: u64, tx: UnboundedSender<Event>) -> Timer {
        let callback = Closure::<dyn FnMut()>::new(move || {
            let _ = tx.unbounded_send(Event::Timer);
        });
        let global = js_sys::global();
        let handle = js_sys::Reflect::get(&global, &"setTimeout".into())
            .ok()
            .and_then(|f| f.dyn_into::<js_sys::Function>().ok())
            .and_then(|f| {
                f.call2(&global, callback.as_ref(), &JsValue::from(ms as f64))
                    .ok()
            })
            .unwrap_or(JsValue::NULL);
        Timer {
            handle,
            _callback: callback,
        }
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        let global = js_sys::global();
        if let Ok(f) = js_sys::Reflect::get(&global, &"clearTimeout".into())
            && let Ok(f) = f.dyn_into::<js_sys::Function>()
        {
            let _ = f.call1(&global, &self.handle);
        }
    }
}

/// The open socket and its handlers; dropping it detaches the handlers and
/// closes the socket.
struct Socket {
    /// Which socket of this driver it is.
    id: u64,
    ws: WebSocket,
    /// The `open` event came (a close before it is a failed upgrade).
    opened: Rc<std::cell::Cell<bool>>,
    _on_open: Closure<dyn FnMut()>,
    _on_message: Closure<dyn FnMut(MessageEvent)>,
    _on_close: Closure<dyn FnMut(CloseEvent)>,
}

impl Drop for Socket {
    fn drop(&mut self) {
        self.ws.set_onopen(None);
        self.ws.set_onmessage(None);
        self.ws.set_onclose(None);
        let _ = self.ws.close();
    }
}

impl Socket {
    /// Opens a socket whose events (an `error` is always followed by a
    /// `close`, so only `close` is listened to) reach `tx` tagged with `id`.
    fn open(id: u64, url: &str, token: &str, tx: UnboundedSender<Event>) -> Result<Socket, String> {
        // Browsers cannot set headers on a WebSocket: the token rides in a
        // subprotocol, and the server answers with `arbor.v1`.
        let protocols = js_sys::Array::of2(
            &JsValue::from_str(arbor_shared::auth::WS_PROTOCOL),
            &JsValue::from_str(&format!("bearer.{token}")),
        );
        let ws = WebSocket::new_with_str_sequence(url, &protocols).map_err(|e| js::message(&e))?;
        let opened = Rc::new(std::cell::Cell::new(false));
        let (t, o) = (tx.clone(), opened.clone());
        let on_open = Closure::<dyn FnMut()>::new(move || {
            o.set(true);
            let _ = t.unbounded_send(Event::Socket(id, SocketEvent::Open));
        });
        let t = tx.clone();
        let on_message = Closure::<dyn FnMut(MessageEvent)>::new(move |e: MessageEvent| {
            if let Some(text) = e.data().as_string() {
                let _ = t.unbounded_send(Event::Socket(id, SocketEvent::Frame(text)));
            }
        });
        let t = tx;
        let on_close = Closure::<dyn FnMut(CloseEvent)>::new(move |e: CloseEvent| {
            // 1005 (no code) and 1006 (abnormal) are the browser's, not the
            // server's.
            let code = Some(e.code()).filter(|c| !matches!(c, 1005 | 1006));
            let _ = t.unbounded_send(Event::Socket(id, SocketEvent::Closed(code, e.reason())));
        });
        ws.set_onopen(Some(on_open.as_ref().unchecked_ref()));
        ws.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        ws.set_onclose(Some(on_close.as_ref().unchecked_ref()));
        Ok(Socket {
            id,
            ws,
            opened,
            _on_open: on_open,
            _on_message: on_message,
            _on_close: on_close,
        })
    }

    fn send(&self, msg: &ClientMsg) -> Result<(), String> {
        self.ws
            .send_with_str(&msg.encode())
            .map_err(|e| js::message(&e))
    }
}
