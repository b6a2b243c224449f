//! The sync client: connects to the realtime endpoint, says `hello` with
//! the replica's cursor, applies committed ops in seq order, pushes the
//! outbox, and reconnects with jittered exponential backoff. An op leaves
//! the outbox only when the server has committed it (it comes back in
//! `ops`, or its push is acked). No cursor (or `snapshot_required`, or a
//! stale refusal) means a cold start from the HTTP snapshot first.

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use arbor_shared::protocol::{ClientMsg, Peer, ServerMsg};
use arbor_shared::{Op, Stamp};
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

use crate::replica::{Replica, ReplicaError};
use crate::snapshot::{Loaded, Progress, load_snapshot};

/// Largest push frame the client builds (the protocol's limit is 1 MiB).
const PUSH_BYTES: usize = 768 * 1024;

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
}

impl SyncConfig {
    /// Defaults for `server`, `space`, `token`.
    pub fn new(server: &str, space: &str, token: &str) -> SyncConfig {
        SyncConfig {
            server: server.trim_end_matches('/').to_string(),
            realtime: None,
            space: space.to_string(),
            token: token.to_string(),
            max_inflight: 8,
            batch_ops: 500,
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
        }
    }
}

/// What the sync client is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncState {
    /// Not connected; retrying after a delay (with the last error).
    Offline {
        /// Why the last attempt ended.
        error: Option<String>,
    },
    /// Opening the connection.
    Connecting,
    /// Loading a snapshot.
    ColdStart(Progress),
    /// Connected, applying committed ops up to the head seen at `hello`.
    CatchingUp,
    /// Connected, caught up, local ops waiting for the server.
    Pushing,
    /// Connected, caught up, outbox empty.
    Live,
    /// Stopped (shutdown).
    Stopped,
}

/// The observable sync status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncStatus {
    /// The state.
    pub state: SyncState,
    /// The replica's cursor.
    pub cursor: Option<u64>,
    /// Local ops not yet committed.
    pub outbox: u64,
    /// Who else is connected.
    pub peers: Vec<Peer>,
    /// Local ops the server refused for good (dropped from the outbox).
    pub rejected: u64,
}

impl Default for SyncStatus {
    fn default() -> Self {
        SyncStatus {
            state: SyncState::Offline { error: None },
            cursor: None,
            outbox: 0,
            peers: Vec::new(),
            rejected: 0,
        }
    }
}

/// Errors that end syncing (as opposed to retried ones).
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The server refused the token or the space (401/403/404): retrying
    /// cannot help.
    #[error("refused by the server: {0}")]
    Refused(String),
    /// The local replica failed.
    #[error(transparent)]
    Replica(#[from] ReplicaError),
    /// A retryable failure (network, server restart, cut stream).
    #[error("{0}")]
    Transient(String),
}

/// How a session ended.
enum Outcome {
    /// `sync_once`: caught up and the outbox is empty.
    Done,
    /// Reconnect now (after a cold start is arranged).
    Again,
    /// Shut down.
    Stopped,
}

/// Counters of one `sync_once`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Remote ops applied.
    pub applied: u64,
    /// Local ops committed by the server.
    pub pushed: u64,
    /// Cold starts done.
    pub cold_starts: u64,
}

struct Ctx<'a> {
    replica: &'a SharedReplica,
    config: &'a SyncConfig,
    status: &'a watch::Sender<SyncStatus>,
    http: reqwest::Client,
    report: SyncReport,
    rejected: u64,
}

fn lock(r: &SharedReplica) -> MutexGuard<'_, Replica> {
    // A panic while holding the lock cannot leave SQLite half-written (its
    // transaction rolls back), so a poisoned lock is still usable.
    r.lock().unwrap_or_else(|p| p.into_inner())
}

fn transient(e: impl std::fmt::Display) -> SyncError {
    SyncError::Transient(e.to_string())
}

/// Syncs until `shutdown` resolves, reconnecting with jittered exponential
/// backoff after every failure. Returns early only on a refusal the server
/// will repeat (bad token, unknown space) or a local replica error.
pub async fn sync_forever(
    replica: SharedReplica,
    config: SyncConfig,
    status: watch::Sender<SyncStatus>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), SyncError> {
    let mut shutdown = std::pin::pin!(shutdown);
    let mut ctx = Ctx::new(&replica, &config, &status);
    let mut backoff = config.min_backoff;
    loop {
        let started = Instant::now();
        let result = tokio::select! {
            r = ctx.session(false) => r,
            () = &mut shutdown => Ok(Outcome::Stopped),
        };
        match result {
            Ok(Outcome::Stopped) => {
                ctx.set_state(SyncState::Stopped);
                return Ok(());
            }
            Ok(Outcome::Done) => {
                backoff = config.min_backoff;
            }
            Ok(Outcome::Again) => {
                // A resync (snapshot, re-stamp) is due; should the server
                // keep asking for one, this still backs off.
                if started.elapsed() > Duration::from_secs(10) {
                    backoff = config.min_backoff;
                } else {
                    tokio::time::sleep(jitter(backoff)).await;
                    backoff = (backoff * 2).min(config.max_backoff);
                }
            }
            Err(e @ (SyncError::Refused(_) | SyncError::Replica(_))) => {
                ctx.set_state(SyncState::Offline {
                    error: Some(e.to_string()),
                });
                return Err(e);
            }
            Err(SyncError::Transient(e)) => {
                tracing::warn!(error = %e, "sync session ended; reconnecting");
                ctx.set_state(SyncState::Offline { error: Some(e) });
                // A session that stayed up a while starts the backoff over.
                if started.elapsed() > Duration::from_secs(10) {
                    backoff = config.min_backoff;
                }
                let delay = jitter(backoff);
                backoff = (backoff * 2).min(config.max_backoff);
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = &mut shutdown => {
                        ctx.set_state(SyncState::Stopped);
                        return Ok(());
                    }
                }
            }
        }
    }
}

/// Syncs until caught up with the server's head and the outbox is empty,
/// retrying transient failures up to `attempts` times.
pub async fn sync_once(
    replica: SharedReplica,
    config: SyncConfig,
    status: watch::Sender<SyncStatus>,
    attempts: u32,
) -> Result<SyncReport, SyncError> {
    let mut ctx = Ctx::new(&replica, &config, &status);
    let mut backoff = config.min_backoff;
    let mut failures = 0;
    loop {
        match ctx.session(true).await {
            Ok(Outcome::Done | Outcome::Stopped) => return Ok(ctx.report),
            Ok(Outcome::Again) => {}
            Err(SyncError::Transient(e)) if failures + 1 < attempts => {
                failures += 1;
                ctx.set_state(SyncState::Offline { error: Some(e) });
                tokio::time::sleep(jitter(backoff)).await;
                backoff = (backoff * 2).min(config.max_backoff);
            }
            Err(e) => return Err(e),
        }
    }
}

/// A delay between half and all of `d` (so clients that lost the server
/// together do not come back together).
fn jitter(d: Duration) -> Duration {
    let mut b = [0u8; 2];
    let r = if getrandom::fill(&mut b).is_ok() {
        u16::from_le_bytes(b)
    } else {
        u16::MAX
    };
    d / 2 + d.mul_f64(f64::from(r) / f64::from(u16::MAX) / 2.0)
}

impl<'a> Ctx<'a> {
    fn new(
        replica: &'a SharedReplica,
        config: &'a SyncConfig,
        status: &'a watch::Sender<SyncStatus>,
    ) -> Ctx<'a> {
        Ctx {
            replica,
            config,
            status,
            http: reqwest::Client::new(),
            report: SyncReport::default(),
            rejected: 0,
        }
    }

    fn set_state(&self, state: SyncState) {
        let (cursor, outbox) = {
            let r = lock(self.replica);
            (r.cursor().ok().flatten(), r.outbox_len().unwrap_or(0))
        };
        let rejected = self.rejected;
        self.status.send_modify(|s| {
            s.state = state;
            s.cursor = cursor;
            s.outbox = outbox;
            s.rejected = rejected;
        });
    }

    fn url(&self, path: &str) -> String {
        format!(
            "{}/v1/spaces/{}{path}",
            self.config.server, self.config.space
        )
    }

    /// Loads the snapshot (of the subtree, for a subtree replica) over
    /// HTTP: decoded and inserted as it streams, on a blocking thread.
    async fn cold_start(&mut self) -> Result<Loaded, SyncError> {
        let root = lock(self.replica).subtree_root()?;
        let path = match root {
            Some(root) => format!("/subtree/{root}/snapshot"),
            None => "/snapshot".to_string(),
        };
        self.set_state(SyncState::ColdStart(Progress::default()));
        let response = self
            .http
            .get(self.url(&path))
            .bearer_auth(&self.config.token)
            .send()
            .await
            .map_err(transient)?;
        let status = response.status();
        if status.is_client_error() {
            let body = response.text().await.unwrap_or_default();
            return Err(SyncError::Refused(format!("snapshot: {status} {body}")));
        }
        if !status.is_success() {
            return Err(transient(format!("snapshot: {status}")));
        }
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, String>>(8);
        let replica = self.replica.clone();
        let progress_to = self.status.clone();
        let loader = tokio::task::spawn_blocking(move || {
            let mut r = lock(&replica);
            let chunks = std::iter::from_fn(|| rx.blocking_recv());
            load_snapshot(&mut r, chunks, |p| {
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
        let loaded = loader.await.map_err(transient)?.map_err(|e| match e {
            // A cut or corrupted stream: retry.
            ReplicaError::Snapshot(m) => transient(format!("snapshot: {m}")),
            e => SyncError::Replica(e),
        })?;
        self.report.cold_starts += 1;
        tracing::info!(
            nodes = loaded.header.nodes,
            head_seq = loaded.header.head_seq,
            restamped = loaded.restamped,
            "cold start done"
        );
        Ok(loaded)
    }

    async fn session(&mut self, once: bool) -> Result<Outcome, SyncError> {
        self.set_state(SyncState::Connecting);
        // A replica holds one thoughtspace: never mix another's ops in.
        lock(self.replica).bind_space(&self.config.space)?;
        if lock(self.replica).cursor()?.is_none() {
            self.cold_start().await?;
        }
        let base = self
            .config
            .realtime
            .as_deref()
            .unwrap_or(&self.config.server);
        let ws_url = format!(
            "{}/v1/spaces/{}/ws",
            base.trim_end_matches('/'),
            self.config.space
        )
        .replacen("http", "ws", 1);
        let mut request = ws_url.into_client_request().map_err(transient)?;
        let auth = format!("Bearer {}", self.config.token)
            .parse()
            .map_err(|_| SyncError::Refused("the token is not a valid header value".into()))?;
        request.headers_mut().insert("authorization", auth);
        // Nagle off: small frames, latency-bound.
        let (mut ws, _) = match tokio_tungstenite::connect_async_with_config(request, None, true)
            .await
        {
            Ok(ok) => ok,
            Err(tokio_tungstenite::tungstenite::Error::Http(r)) if r.status().is_client_error() => {
                return Err(SyncError::Refused(format!("websocket: {}", r.status())));
            }
            Err(e) => return Err(transient(e)),
        };
        let (replica_id, cursor, notify) = {
            let r = lock(self.replica);
            (r.replica_id(), r.cursor()?, r.outbox_notify())
        };
        let hello = ClientMsg::Hello {
            v: arbor_shared::protocol::VERSION,
            replica: replica_id,
            cursor,
        };
        ws.send(Message::Text(hello.encode().into()))
            .await
            .map_err(transient)?;
        let head = loop {
            match next_msg(&mut ws).await? {
                ServerMsg::Welcome {
                    head_seq, peers, ..
                } => {
                    self.status.send_modify(|s| s.peers = peers);
                    break head_seq;
                }
                ServerMsg::SnapshotRequired { head_seq } => {
                    let mut r = lock(self.replica);
                    if cursor.is_some_and(|c| c > head_seq) {
                        // The server has less than we saw: it was restored
                        // from a backup. Push again what we still hold.
                        let n = r.requeue_own_ops()?;
                        tracing::warn!(
                            head_seq,
                            ?cursor,
                            requeued = n,
                            "the server went back in time"
                        );
                    }
                    r.reset_cursor()?;
                    return Ok(Outcome::Again);
                }
                ServerMsg::Error { code, message, .. } => {
                    return Err(SyncError::Refused(format!("{code}: {message}")));
                }
                _ => {}
            }
        };
        self.set_state(SyncState::CatchingUp);
        let mut inflight: BTreeMap<u64, Vec<Stamp>> = BTreeMap::new();
        let mut sent: HashSet<Stamp> = HashSet::new();
        let mut next_batch = 1u64;
        let mut ping = tokio::time::interval(Duration::from_secs(20));
        ping.tick().await;
        let mut last_frame = Instant::now();
        loop {
            // Push what waits, up to the in-flight limit.
            while inflight.len() < self.config.max_inflight {
                let ops: Vec<Op> = {
                    let r = lock(self.replica);
                    // At most `batch_ops` ops and well under the 1 MiB
                    // frame limit (values reach 64 KiB each).
                    let mut bytes = 0usize;
                    r.outbox(sent.len() + self.config.batch_ops)?
                        .into_iter()
                        .filter(|o| !sent.contains(&o.stamp()))
                        .take(self.config.batch_ops)
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
                let push = ClientMsg::Push {
                    batch: next_batch,
                    ops,
                };
                next_batch += 1;
                ws.send(Message::Text(push.encode().into()))
                    .await
                    .map_err(transient)?;
            }
            let (cursor, outbox) = {
                let r = lock(self.replica);
                (r.cursor()?.unwrap_or(0), r.outbox_len()?)
            };
            let caught_up = cursor >= head;
            let state = match (caught_up, outbox) {
                (false, _) => SyncState::CatchingUp,
                (true, 0) => SyncState::Live,
                (true, _) => SyncState::Pushing,
            };
            if self.status.borrow().state != state || self.status.borrow().cursor != Some(cursor) {
                self.set_state(state);
            }
            if once && caught_up && outbox == 0 && inflight.is_empty() {
                let _ = ws.close(None).await;
                return Ok(Outcome::Done);
            }
            tokio::select! {
                msg = next_msg(&mut ws) => {
                    last_frame = Instant::now();
                    match msg? {
                        ServerMsg::Ops { ops } => {
                            let n = ops.len() as u64;
                            let mine = ops.iter().filter(|o| o.op.stamp().replica == replica_id).count();
                            match lock(self.replica).apply_remote(&ops) {
                                Ok(_) => {}
                                // Frames lost in between: the reconnect's
                                // catch-up starts from the cursor.
                                Err(ReplicaError::Gap { .. }) => return Err(transient("seq gap")),
                                Err(e) => return Err(e.into()),
                            }
                            self.report.applied += n;
                            self.report.pushed += mine as u64;
                        }
                        ServerMsg::Ack { batch } => {
                            if let Some(stamps) = inflight.remove(&batch) {
                                lock(self.replica).acknowledge(&stamps)?;
                                for s in &stamps {
                                    sent.remove(s);
                                }
                            }
                        }
                        ServerMsg::Error { code, message, batch: Some(batch) } => {
                            let stamps = inflight.remove(&batch).unwrap_or_default();
                            for s in &stamps {
                                sent.remove(s);
                            }
                            match code.as_str() {
                                // The horizon passed our ops: load the
                                // snapshot, then re-stamp them.
                                "stale" => {
                                    let mut r = lock(self.replica);
                                    r.request_restamp()?;
                                    r.reset_cursor()?;
                                    return Ok(Outcome::Again);
                                }
                                // The ops themselves are refused, for good:
                                // drop them, and resync so their local
                                // effects go.
                                "bad_op" | "reserved_node" | "bad_key" | "bad_field"
                                | "value_too_long" | "stamp_conflict" | "unknown_node"
                                | "bad_batch" | "wrong_replica" => {
                                    tracing::warn!(code, message, ops = stamps.len(), "push refused; dropping its ops");
                                    self.rejected += stamps.len() as u64;
                                    let mut r = lock(self.replica);
                                    r.drop_from_outbox(&stamps)?;
                                    r.reset_cursor()?;
                                    return Ok(Outcome::Again);
                                }
                                // A read token, an unknown space: retrying
                                // cannot help, and the ops stay queued.
                                "forbidden" | "unknown_space" | "wrong_space" => {
                                    return Err(SyncError::Refused(format!("push refused: {code}: {message}")));
                                }
                                _ => {
                                    return Err(transient(format!("push refused: {code}: {message}")));
                                }
                            }
                        }
                        ServerMsg::Error { code, message, batch: None } => {
                            return Err(transient(format!("{code}: {message}")));
                        }
                        ServerMsg::Peers { peers } => self.status.send_modify(|s| s.peers = peers),
                        ServerMsg::SnapshotRequired { .. } => {
                            lock(self.replica).reset_cursor()?;
                            return Ok(Outcome::Again);
                        }
                        ServerMsg::Welcome { .. } | ServerMsg::Pong => {}
                    }
                }
                () = notify.notified() => {}
                _ = ping.tick() => {
                    if last_frame.elapsed() > Duration::from_secs(60) {
                        return Err(transient("no frame for 60 s"));
                    }
                    ws.send(Message::Text(ClientMsg::Ping.encode().into())).await.map_err(transient)?;
                }
            }
        }
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The next server message; a close or a broken socket is transient.
async fn next_msg(ws: &mut Ws) -> Result<ServerMsg, SyncError> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => {
                return ServerMsg::decode(&t).map_err(|e| transient(format!("bad frame: {e}")));
            }
            Some(Ok(Message::Close(frame))) => {
                let why = frame.map_or_else(String::new, |f| format!("{} {}", f.code, f.reason));
                return Err(transient(format!("closed by the server: {why}")));
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(transient(e)),
            None => return Err(transient("connection closed")),
        }
    }
}

/// Creates the thoughtspace `new_space` on the server from the replica's
/// state (`POST /v1/spaces/{new_space}/import`, an admin token for the new
/// name). The replica is encoded on a blocking thread while the upload
/// streams it through a bounded channel, so memory stays flat.
pub async fn fork(
    replica: SharedReplica,
    server: &str,
    new_space: &str,
    token: &str,
) -> Result<(), SyncError> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<std::io::Result<Vec<u8>>>(16);
    let name = new_space.to_string();
    let writer = tokio::task::spawn_blocking(move || {
        let r = lock(&replica);
        crate::snapshot::write_snapshot(&r, &name, |chunk| {
            tx.blocking_send(Ok(chunk))
                .map_err(|_| std::io::Error::other("the upload ended"))
        })
    });
    let body = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let response = reqwest::Client::new()
        .post(format!(
            "{}/v1/spaces/{new_space}/import",
            server.trim_end_matches('/')
        ))
        .bearer_auth(token)
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await;
    let written = writer.await.map_err(transient)?;
    let response = response.map_err(transient)?;
    let status = response.status();
    if !status.is_success() {
        let text = response.text().await.unwrap_or_default();
        return Err(if status.is_client_error() {
            SyncError::Refused(format!("fork: {status} {text}"))
        } else {
            transient(format!("fork: {status} {text}"))
        });
    }
    written?;
    Ok(())
}
