//! The tokio driver of the sync session: moves frames between a WebSocket and [`crate::session::Session`], streams snapshots over HTTP, arms its timers.
//!
//! Every protocol decision (cold start, hello, pushes and acks, what each
//! error code means, backoff) is the session's; this file only does what
//! its [`Action`]s say and reports what happened. An op leaves the outbox
//! only when the server has committed it (it comes back in `ops`, or its
//! push is acked).

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use arbor_shared::ErrorCode;
use arbor_shared::error::ErrorBody;
use arbor_shared::protocol::{MAX_PRESENCE_BYTES, PresenceState};
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

use crate::image::{ImageDecoder, ImageInfo};
use crate::replica::{Replica, ReplicaError};
use crate::session::{
    Action, ConnectFailure, PresenceTooLarge, Session, SessionConfig, SnapshotFailure, Stop,
    SyncReport, SyncState, SyncStatus,
};
use crate::snapshot::load_snapshot;

/// A replica shared between the app and its sync client.
pub type SharedReplica = Arc<Mutex<Replica>>;

/// Where and as whom to sync.
#[derive(Debug, Clone)]
pub struct SyncConfig {
    /// The sync server's base URL (`http://host:port`): snapshots, fork.
    pub server: String,
    /// The realtime endpoint's base URL if it is elsewhere (the Worker of
    /// the Durable Object tier); `None`: the sync server's native one.
    pub realtime: Option<String>,
    /// The thoughtspace.
    pub space: String,
    /// A bearer token for it (role write to push, read to follow).
    pub token: String,
    /// Pushes waiting for their answer at most (the server allows 16).
    pub max_inflight: usize,
    /// Ops per push at most (the protocol allows 1,000).
    pub batch_ops: usize,
    /// First reconnect delay; doubles up to `max_backoff`, with jitter.
    pub min_backoff: Duration,
    /// Longest reconnect delay.
    pub max_backoff: Duration,
    /// Keep-alive period; a connection silent for three periods is
    /// presumed dead.
    pub keepalive: Duration,
    /// The application's presence state, from [`presence_channel`]
    /// (`None`: this client shows none). The others' states are in
    /// [`SyncStatus::peers`].
    pub presence: Option<watch::Receiver<Option<PresenceState>>>,
    /// A cold start tries the server's replica image first (default), and
    /// loads rows when there is none or it does not check out.
    pub images: bool,
}

/// The application's side of a presence channel ([`SyncConfig::presence`]).
#[derive(Debug, Clone)]
pub struct PresenceSender(Arc<watch::Sender<Option<PresenceState>>>);

impl PresenceSender {
    /// Shows `state` to the others connected to the space (`None`: shows
    /// nothing), from now on and after every reconnect; refused if it is
    /// larger than the protocol allows.
    pub fn set(&self, state: Option<PresenceState>) -> Result<(), PresenceTooLarge> {
        if let Some(s) = &state {
            let len = s.encoded_len();
            if len > MAX_PRESENCE_BYTES {
                return Err(PresenceTooLarge(len));
            }
        }
        self.0.send_replace(state);
        Ok(())
    }
}

/// A presence channel: keep the sender, put the receiver in
/// [`SyncConfig::presence`].
pub fn presence_channel() -> (PresenceSender, watch::Receiver<Option<PresenceState>>) {
    let (tx, rx) = watch::channel(None);
    (PresenceSender(Arc::new(tx)), rx)
}

impl SyncConfig {
    /// Defaults for `server`, `space`, `token`.
    pub fn new(server: &str, space: &str, token: &str) -> SyncConfig {
        let session = SessionConfig::new(space);
        SyncConfig {
            server: server.trim_end_matches('/').to_string(),
            realtime: None,
            space: space.to_string(),
            token: token.to_string(),
            max_inflight: session.max_inflight,
            batch_ops: session.batch_ops,
            min_backoff: Duration::from_millis(session.min_backoff_ms),
            max_backoff: Duration::from_millis(session.max_backoff_ms),
            keepalive: Duration::from_millis(session.ping_ms),
            presence: None,
            images: true,
        }
    }

    fn session(&self) -> SessionConfig {
        SessionConfig {
            max_inflight: self.max_inflight,
            batch_ops: self.batch_ops,
            min_backoff_ms: self.min_backoff.as_millis() as u64,
            max_backoff_ms: self.max_backoff.as_millis() as u64,
            ping_ms: self.keepalive.as_millis() as u64,
            silence_ms: 3 * self.keepalive.as_millis() as u64,
            token_root: arbor_shared::auth::unverified_root(&self.token),
            images: self.images,
            ..SessionConfig::new(&self.space)
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/v1/spaces/{}{path}", self.server, self.space)
    }

    fn ws_url(&self) -> String {
        let base = self.realtime.as_deref().unwrap_or(&self.server);
        format!("{}/v1/spaces/{}/ws", base.trim_end_matches('/'), self.space)
            .replacen("http", "ws", 1)
    }
}

/// Errors that end syncing.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The server refused and retrying cannot help (a bad token, an
    /// unknown space, a read-only token pushing): the outbox is kept.
    #[error("refused by the server: {0}")]
    Refused(String),
    /// The local replica failed.
    #[error(transparent)]
    Replica(#[from] ReplicaError),
    /// Transient failures, more than allowed in a row (`sync_once`).
    #[error("{0}")]
    Transient(String),
}

impl From<Stop> for SyncError {
    fn from(stop: Stop) -> SyncError {
        match stop {
            Stop::Refused { .. } | Stop::RefusedHttp { .. } => SyncError::Refused(stop.to_string()),
            Stop::GaveUp(m) => SyncError::Transient(m),
            Stop::Replica(e) => SyncError::Replica(e),
        }
    }
}

fn lock(r: &SharedReplica) -> MutexGuard<'_, Replica> {
    // A panic while holding the lock cannot leave SQLite half-written (its
    // transaction rolls back), so a poisoned lock is still usable.
    r.lock().unwrap_or_else(|p| p.into_inner())
}

/// Syncs until `shutdown` resolves, reconnecting with jittered exponential
/// backoff after every transient failure. Returns early only when the
/// server refuses for good (bad token, unknown space) or the local replica
/// fails.
pub async fn sync_forever(
    replica: SharedReplica,
    config: SyncConfig,
    status: watch::Sender<SyncStatus>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), SyncError> {
    let session = Session::new(config.session(), seed());
    Driver::new(replica, config, status)
        .run(session, shutdown)
        .await
        .map(|_| ())
}

/// Syncs until caught up with the server's head and the outbox is empty,
/// giving up after `attempts` transient failures in a row.
pub async fn sync_once(
    replica: SharedReplica,
    config: SyncConfig,
    status: watch::Sender<SyncStatus>,
    attempts: u32,
) -> Result<SyncReport, SyncError> {
    let session = Session::new(
        SessionConfig {
            until_idle: true,
            max_failures: Some(attempts.max(1)),
            ..config.session()
        },
        seed(),
    );
    Driver::new(replica, config, status)
        .run(session, std::future::pending())
        .await
}

/// Hands the application's presence state to the session (the sender
/// checked its size already).
fn set_presence(session: &mut Session, state: Option<PresenceState>, now: u64) -> Vec<Action> {
    session.set_presence(state, now).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "presence state not sent");
        Vec::new()
    })
}

/// Resolves when the presence state changes (true) or its sender is gone
/// (false); never without a channel.
async fn presence_changed(rx: &mut Option<watch::Receiver<Option<PresenceState>>>) -> bool {
    match rx {
        Some(rx) => rx.changed().await.is_ok(),
        None => std::future::pending().await,
    }
}

fn seed() -> u64 {
    let mut b = [0u8; 8];
    // Jitter only: a fixed seed when the OS has no randomness is harmless.
    let _ = getrandom::fill(&mut b);
    u64::from_le_bytes(b)
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// What woke the driver.
enum Wake {
    Socket(Incoming),
    Outbox,
    /// The application's presence state changed (false: its sender is
    /// gone).
    Presence(bool),
    Timer,
    Shutdown,
}

/// What the socket delivered.
enum Incoming {
    Frame(String),
    Closed(Option<u16>, String),
}

struct Driver {
    replica: SharedReplica,
    config: SyncConfig,
    status: watch::Sender<SyncStatus>,
    http: reqwest::Client,
    socket: Option<Ws>,
    /// The session's clock: ms since the driver started.
    epoch: Instant,
}

impl Driver {
    fn new(
        replica: SharedReplica,
        config: SyncConfig,
        status: watch::Sender<SyncStatus>,
    ) -> Driver {
        Driver {
            replica,
            config,
            status,
            http: reqwest::Client::new(),
            socket: None,
            epoch: Instant::now(),
        }
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Runs `session` until it is over or `shutdown` resolves.
    async fn run(
        mut self,
        mut session: Session,
        shutdown: impl Future<Output = ()>,
    ) -> Result<SyncReport, SyncError> {
        let mut shutdown = std::pin::pin!(shutdown);
        let notify = lock(&self.replica).outbox_notify();
        let mut todo: VecDeque<Action> = session.start(&mut lock(&self.replica), self.now()).into();
        let mut presence = self.config.presence.take();
        if let Some(rx) = presence.as_mut() {
            let state = rx.borrow_and_update().clone();
            todo.extend(set_presence(&mut session, state, self.now()));
        }
        loop {
            while let Some(action) = todo.pop_front() {
                let more = match action {
                    Action::LoadSnapshot { path } => {
                        let failure = self.load_snapshot(&path).await.err();
                        let now = self.now();
                        let mut r = lock(&self.replica);
                        match failure {
                            None => session.on_snapshot_loaded(&mut r, now),
                            Some(f) => session.on_snapshot_failed(&mut r, now, f),
                        }
                    }
                    Action::LoadImage { path } => {
                        let loaded = self.load_image(&path).await;
                        let now = self.now();
                        let mut r = lock(&self.replica);
                        match loaded {
                            Ok(()) => session.on_image_loaded(&mut r, now),
                            Err(why) => session.on_image_failed(&mut r, now, &why),
                        }
                    }
                    Action::Connect => {
                        let opened = self.connect().await;
                        let now = self.now();
                        let mut r = lock(&self.replica);
                        match opened {
                            Ok(()) => session.on_open(&mut r, now),
                            Err(f) => session.on_connect_failed(&mut r, now, f),
                        }
                    }
                    Action::Send(msg) => match self.send(msg.encode()).await {
                        Ok(()) => Vec::new(),
                        Err(e) => {
                            self.socket = None;
                            let now = self.now();
                            session.on_closed(&mut lock(&self.replica), now, None, &e)
                        }
                    },
                    Action::Disconnect => {
                        if let Some(mut ws) = self.socket.take() {
                            let _ = ws.close(None).await;
                        }
                        Vec::new()
                    }
                    Action::Status(s) => {
                        self.status.send_replace(s);
                        Vec::new()
                    }
                    Action::Rejected(r) => {
                        tracing::warn!(code = %r.code, message = r.message, ops = r.stamps.len(), "ops refused for good");
                        Vec::new()
                    }
                    Action::Idle => return Ok(session.report().clone()),
                    Action::Stopped(stop) => return Err(stop.into()),
                };
                todo.extend(more);
            }
            let deadline = session
                .deadline()
                .map(|ms| tokio::time::Instant::from_std(self.epoch + Duration::from_millis(ms)));
            let socket = &mut self.socket;
            let event = tokio::select! {
                incoming = next_incoming(socket) => Wake::Socket(incoming),
                () = notify.notified() => Wake::Outbox,
                live = presence_changed(&mut presence) => Wake::Presence(live),
                () = sleep_until(deadline) => Wake::Timer,
                () = &mut shutdown => Wake::Shutdown,
            };
            let now = self.now();
            let more = match event {
                Wake::Socket(Incoming::Frame(text)) => {
                    session.on_frame(&mut lock(&self.replica), now, &text)
                }
                Wake::Socket(Incoming::Closed(code, reason)) => {
                    self.socket = None;
                    session.on_closed(&mut lock(&self.replica), now, code, &reason)
                }
                Wake::Outbox => session.on_outbox(&mut lock(&self.replica), now),
                Wake::Presence(true) => match presence.as_mut() {
                    Some(rx) => {
                        let state = rx.borrow_and_update().clone();
                        set_presence(&mut session, state, now)
                    }
                    None => Vec::new(),
                },
                Wake::Presence(false) => {
                    presence = None;
                    Vec::new()
                }
                Wake::Timer => session.on_timer(&mut lock(&self.replica), now),
                Wake::Shutdown => {
                    let status = session.stop(&mut lock(&self.replica));
                    if let Some(mut ws) = self.socket.take() {
                        let _ = ws.close(None).await;
                    }
                    for action in status {
                        if let Action::Status(s) = action {
                            self.status.send_replace(s);
                        }
                    }
                    return Ok(session.report().clone());
                }
            };
            todo.extend(more);
        }
    }

    async fn send(&mut self, text: String) -> Result<(), String> {
        match self.socket.as_mut() {
            Some(ws) => ws
                .send(Message::Text(text.into()))
                .await
                .map_err(|e| e.to_string()),
            None => Err("not connected".into()),
        }
    }

    /// Opens the realtime socket (Nagle off: small, latency-bound frames).
    async fn connect(&mut self) -> Result<(), ConnectFailure> {
        let mut request = self
            .config
            .ws_url()
            .into_client_request()
            .map_err(|e| ConnectFailure::Transport(e.to_string()))?;
        let auth = format!("Bearer {}", self.config.token)
            .parse()
            .map_err(|_| ConnectFailure::Http {
                status: 401,
                code: Some(ErrorCode::BadToken),
            })?;
        request.headers_mut().insert("authorization", auth);
        match tokio_tungstenite::connect_async_with_config(request, None, true).await {
            Ok((ws, _)) => {
                self.socket = Some(ws);
                Ok(())
            }
            Err(tokio_tungstenite::tungstenite::Error::Http(r)) => Err(ConnectFailure::Http {
                status: r.status().as_u16(),
                code: r
                    .body()
                    .as_deref()
                    .and_then(|b| serde_json::from_slice::<ErrorBody>(b).ok())
                    .map(|b| b.error.code),
            }),
            Err(e) => Err(ConnectFailure::Transport(e.to_string())),
        }
    }

    /// Downloads the snapshot at `path` and loads it as it streams: decoded
    /// and inserted on a blocking thread, in one transaction (a cut rolls
    /// back).
    /// Downloads the replica image at `path`, decoding it into a file
    /// beside the replica's as it streams (on a blocking thread, through a
    /// bounded channel), and installs it once it checks out. The file goes
    /// whatever happens. Any failure is the reason to load rows instead.
    async fn load_image(&mut self, path: &str) -> Result<(), String> {
        let url = format!(
            "{}?schema={}",
            self.config.url(path),
            crate::schema::VERSION
        );
        let response = self
            .http
            .get(url)
            .bearer_auth(&self.config.token)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("HTTP {}", response.status()));
        }
        let info = ImageInfo::from_headers(|name| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        })
        .map_err(|e| e.to_string())?;
        let temp = image_file(&lock(&self.replica));
        let (tx, mut rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(8);
        let replica = self.replica.clone();
        let progress_to = self.status.clone();
        let size = info.size;
        let installer = tokio::task::spawn_blocking(move || {
            let decoded = decode_image_file(
                &temp,
                &info,
                || rx.blocking_recv(),
                |bytes| {
                    progress_to.send_modify(|s| {
                        s.state = SyncState::ColdStart(crate::snapshot::Progress {
                            bytes,
                            total_bytes: info.size,
                            ..Default::default()
                        })
                    });
                },
            );
            let installed = decoded.and_then(|()| lock(&replica).install_image(&temp, &info));
            let _ = std::fs::remove_file(&temp);
            installed
        });
        let mut body = response.bytes_stream();
        let mut cut = None;
        while let Some(chunk) = body.next().await {
            match chunk {
                // The installer hung up: it failed; its error is the one.
                Ok(chunk) => {
                    if tx.send(chunk).await.is_err() {
                        break;
                    }
                }
                Err(e) => {
                    cut = Some(e.to_string());
                    break;
                }
            }
        }
        drop(tx);
        let installed = installer.await.map_err(|e| e.to_string())?;
        if let Some(cut) = cut {
            // The installer saw the end of a cut stream and refused it.
            return Err(format!("the image download failed: {cut}"));
        }
        let seq = installed.map_err(|e| e.to_string())?;
        tracing::info!(seq, bytes = size, "cold start from the replica image done");
        Ok(())
    }

    async fn load_snapshot(&mut self, path: &str) -> Result<(), SnapshotFailure> {
        let response = self
            .http
            .get(self.config.url(path))
            .bearer_auth(&self.config.token)
            .send()
            .await
            .map_err(|e| SnapshotFailure::Transport(e.to_string()))?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            let typed = serde_json::from_str::<ErrorBody>(&body).ok();
            return Err(SnapshotFailure::Http {
                status: status.as_u16(),
                code: typed.as_ref().map(|b| b.error.code),
                message: typed.map_or(body, |b| b.error.message),
            });
        }
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, String>>(8);
        let replica = self.replica.clone();
        let progress_to = self.status.clone();
        let loader = tokio::task::spawn_blocking(move || {
            let mut r = lock(&replica);
            let chunks = std::iter::from_fn(|| rx.blocking_recv());
            load_snapshot(&mut r, chunks, |p| {
                // The session does not see progress from here: the replica
                // is locked by the load.
                progress_to.send_modify(|s| s.state = SyncState::ColdStart(p));
            })
        });
        let mut body = response.bytes_stream();
        while let Some(chunk) = body.next().await {
            let failed = chunk.is_err();
            // The loader hung up: it failed; its error is the one to report.
            if tx.send(chunk.map_err(|e| e.to_string())).await.is_err() || failed {
                break;
            }
        }
        drop(tx);
        let loaded = loader
            .await
            .map_err(|e| SnapshotFailure::Transport(e.to_string()))?
            .map_err(|e| match e {
                // A cut or corrupted stream: retry.
                ReplicaError::Snapshot(m) => SnapshotFailure::Transport(m),
                e => SnapshotFailure::Replica(e),
            })?;
        tracing::info!(
            nodes = loaded.header.nodes,
            head_seq = loaded.header.head_seq,
            restamped = loaded.restamped,
            "cold start done"
        );
        Ok(())
    }
}

/// Where an image is decoded: beside the replica's file (the same disk,
/// so the copy into it is local), or in the temp folder for a replica in
/// memory. A leftover of a crash is overwritten by the next download.
fn image_file(replica: &Replica) -> std::path::PathBuf {
    match replica.connection().path() {
        Some(path) if !path.is_empty() => std::path::PathBuf::from(format!("{path}.image")),
        _ => std::env::temp_dir().join(format!("arbor-{}.image", replica.replica_id())),
    }
}

/// Decodes the compressed chunks `next` gives into a new file at `path`,
/// reporting the decoded bytes; the file is complete and checked when this
/// returns `Ok`.
fn decode_image_file(
    path: &std::path::Path,
    info: &ImageInfo,
    mut next: impl FnMut() -> Option<bytes::Bytes>,
    mut progress: impl FnMut(u64),
) -> Result<(), ReplicaError> {
    use std::io::Write as _;
    let io = |e: std::io::Error| ReplicaError::Image(format!("the image file: {e}"));
    let _ = std::fs::remove_file(path);
    let mut file =
        std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create_new(path).map_err(io)?);
    let mut decoder = ImageDecoder::new(info)?;
    let mut sink = |bytes: &[u8]| file.write_all(bytes).map_err(io);
    while let Some(chunk) = next() {
        decoder.push(&chunk, &mut sink)?;
        progress(decoder.decoded());
    }
    decoder.finish(&mut sink)?;
    file.flush().map_err(io)?;
    Ok(())
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// The next frame or close from the socket.
async fn next_incoming(socket: &mut Option<Ws>) -> Incoming {
    let Some(ws) = socket.as_mut() else {
        return std::future::pending().await;
    };
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => return Incoming::Frame(t.to_string()),
            Some(Ok(Message::Close(frame))) => {
                return match frame {
                    Some(f) => Incoming::Closed(Some(f.code.into()), f.reason.to_string()),
                    None => Incoming::Closed(None, String::new()),
                };
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Incoming::Closed(None, e.to_string()),
            None => return Incoming::Closed(None, String::new()),
        }
    }
}
