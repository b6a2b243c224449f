//! The session transcripts of `client/tests/transcripts/` played against the sans-IO session and against the native driver over a real socket.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::Duration;

use arbor_client::session::{
    Action, ConnectFailure, Session, SessionConfig, SnapshotFailure, SyncStatus,
};
use arbor_client::{Position, Replica, SyncConfig, sync_forever};
use arbor_shared::protocol::{ClientMsg, SeqOp, ServerMsg};
use arbor_shared::snapshot::{Encoder, SnapshotHeader, copy};
use arbor_shared::{Disposition, ErrorCode, NodeId, Op};
use serde::Deserialize;
use serde_json::Value;

use crate::harness::TempDir;

/// The head seq of the scripted server's snapshot.
const FIXTURE_HEAD: u64 = 3;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/transcripts")
}

/// The snapshot every transcript's server serves: space `s`, no node, head 3.
fn fixture_bytes() -> Vec<u8> {
    let mut enc = Encoder::new();
    let mut out = enc.header(&SnapshotHeader {
        space: "s".into(),
        head_seq: FIXTURE_HEAD,
        horizon: None,
        nodes: 0,
        payloads: 0,
        log: 0,
        root: None,
        owners: Default::default(),
    });
    for tag in [b'N', b'P', b'L'] {
        out.extend(enc.section(tag));
        out.extend(enc.chunk(&copy::Writer::new().finish()));
        out.extend(enc.end_section());
    }
    out.extend(enc.trailer());
    out
}

#[test]
fn the_fixture_snapshot_is_what_the_encoder_writes() {
    let path = dir().join("empty-at-3.snapshot");
    let want = fixture_bytes();
    if std::env::var_os("ARBOR_WRITE_FIXTURES").is_some() {
        std::fs::write(&path, &want).unwrap();
    }
    let have = std::fs::read(&path).unwrap();
    assert!(
        have == want,
        "{} is stale: rerun with ARBOR_WRITE_FIXTURES=1",
        path.display()
    );
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Transcript {
    name: String,
    #[serde(default)]
    silent: bool,
    #[serde(default)]
    each_code: Option<Disposition>,
    steps: Vec<Step>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Answer {
    status: Option<u16>,
    code: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
struct StatusCheck {
    state: Option<String>,
    #[serde(default, deserialize_with = "some")]
    cursor: Option<Option<u64>>,
    outbox: Option<u64>,
    rejected: Option<u64>,
}

/// `"cursor": null` means "no cursor", not "not checked".
fn some<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<u64>>, D::Error> {
    Option::<u64>::deserialize(d).map(Some)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum Step {
    ExpectSnapshot(Answer),
    ExpectConnect(Answer),
    ExpectHello { cursor: Option<u64> },
    ExpectPush { ops: usize },
    ExpectPing {},
    ExpectDisconnect {},
    ExpectStop {},
    Send(Value),
    Commit {},
    Close { code: u16 },
    Local { ops: usize },
    Status(StatusCheck),
}

/// Every transcript, those with `each_code` once per wire code of that
/// disposition (`$code` replaced).
fn transcripts() -> Vec<Transcript> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let t: Transcript = serde_json::from_str(&std::fs::read_to_string(&f).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        match t.each_code {
            None => out.push(t),
            Some(d) => {
                let codes: Vec<ErrorCode> = ErrorCode::ALL
                    .iter()
                    .copied()
                    .filter(|c| {
                        c.scope() == arbor_shared::error::Scope::Wire && c.disposition() == d
                    })
                    .collect();
                assert!(!codes.is_empty(), "{}: no code is {d:?}", f.display());
                for code in codes {
                    let mut t = t.clone();
                    t.name = format!("{} [{code}]", t.name);
                    for step in &mut t.steps {
                        if let Step::Send(v) = step {
                            replace(v, "$code", &Value::from(code.as_str()));
                        }
                    }
                    out.push(t);
                }
            }
        }
    }
    out
}

fn replace(v: &mut Value, from: &str, to: &Value) {
    match v {
        Value::String(s) if s == from => *v = to.clone(),
        Value::Array(a) => a.iter_mut().for_each(|x| replace(x, from, to)),
        Value::Object(o) => o.values_mut().for_each(|x| replace(x, from, to)),
        _ => {}
    }
}

/// The scripted server's side of a conversation that every runner shares:
/// the seqs it hands out and the client's last push.
struct Script {
    head: u64,
    last_push: Option<(u64, Vec<Op>)>,
}

impl Script {
    fn new() -> Script {
        Script {
            head: FIXTURE_HEAD,
            last_push: None,
        }
    }

    /// A `send` step's frame, `$batch` replaced.
    fn frame(&self, v: &Value) -> String {
        let mut v = v.clone();
        if let Some((batch, _)) = &self.last_push {
            replace(&mut v, "$batch", &Value::from(*batch));
        }
        let msg: ServerMsg = serde_json::from_value(v).unwrap();
        msg.encode()
    }

    /// The frames that commit the last push: its ops with the next seqs,
    /// then its ack.
    fn commit(&mut self) -> Vec<String> {
        let (batch, ops) = self.last_push.clone().expect("nothing was pushed");
        let ops: Vec<SeqOp> = ops
            .into_iter()
            .map(|op| {
                self.head += 1;
                SeqOp::new(self.head, op)
            })
            .collect();
        vec![
            ServerMsg::Ops { ops }.encode(),
            ServerMsg::Ack { batch }.encode(),
        ]
    }

    /// Checks a frame the client sent against an expectation.
    fn client_frame(&mut self, step: &Step, msg: &ClientMsg, name: &str) {
        match (step, msg) {
            (Step::ExpectHello { cursor }, ClientMsg::Hello { cursor: c, .. }) => {
                assert_eq!(c, cursor, "{name}: hello cursor")
            }
            (Step::ExpectPush { ops }, ClientMsg::Push { batch, ops: o }) => {
                assert_eq!(o.len(), *ops, "{name}: ops pushed");
                self.last_push = Some((*batch, o.clone()));
            }
            (Step::ExpectPing {}, ClientMsg::Ping {}) => {}
            _ => panic!("{name}: expected {step:?}, the client sent {msg:?}"),
        }
    }
}

fn matches(check: &StatusCheck, s: &SyncStatus) -> bool {
    check.state.as_ref().is_none_or(|st| st == s.state.name())
        && check.cursor.is_none_or(|c| c == s.cursor)
        && check.outbox.is_none_or(|o| o == s.outbox)
        && check.rejected.is_none_or(|r| r == s.rejected)
}

fn create(r: &mut Replica, n: usize) {
    for _ in 0..n {
        r.create(NodeId::ROOT, Position::Last).unwrap();
    }
}

fn refusal(a: &Answer) -> Option<(u16, Option<ErrorCode>, String)> {
    a.status.map(|s| {
        (
            s,
            a.code.as_deref().map(ErrorCode::parse),
            a.code.clone().unwrap_or_default(),
        )
    })
}

// ------------------------------------------------------------ the session

/// The session on a real replica, with a simulated clock.
struct SessionRun {
    name: String,
    silent: bool,
    session: Session,
    replica: Replica,
    now: u64,
    pending: VecDeque<Action>,
    status: SyncStatus,
    script: Script,
}

impl SessionRun {
    fn take(&mut self, actions: Vec<Action>) {
        self.pending.extend(actions);
    }

    /// The next action that is not a status report (those are recorded)
    /// nor an unexpected ping (answered, unless silent). When the session
    /// has nothing to do, time jumps to its deadline (a few times at most).
    fn next_action(&mut self, want_ping: bool) -> Action {
        let mut jumps = 0;
        loop {
            match self.pending.pop_front() {
                Some(Action::Status(s)) => self.status = s,
                Some(Action::Rejected(_)) => {}
                Some(Action::Send(ClientMsg::Ping {})) if !want_ping => {
                    if !self.silent {
                        let a = self.session.on_frame(
                            &mut self.replica,
                            self.now,
                            &ServerMsg::Pong.encode(),
                        );
                        self.take(a);
                    }
                }
                Some(a) => return a,
                None => {
                    jumps += 1;
                    let deadline = self
                        .session
                        .deadline()
                        .unwrap_or_else(|| panic!("{}: the session waits for nothing", self.name));
                    assert!(jumps <= 4, "{}: nothing happened by {deadline}", self.name);
                    self.now = self.now.max(deadline);
                    let a = self.session.on_timer(&mut self.replica, self.now);
                    self.take(a);
                }
            }
        }
    }

    fn settle_status(&mut self) {
        let mut rest = VecDeque::new();
        while let Some(a) = self.pending.pop_front() {
            match a {
                Action::Status(s) => self.status = s,
                other => rest.push_back(other),
            }
        }
        self.pending = rest;
    }

    fn step(&mut self, step: &Step) {
        let name = self.name.clone();
        match step {
            Step::ExpectSnapshot(answer) => {
                let Action::LoadSnapshot { path } = self.next_action(false) else {
                    panic!("{name}: expected a snapshot load")
                };
                assert_eq!(path, "/snapshot");
                let a = match refusal(answer) {
                    None => {
                        let bytes = fixture_bytes();
                        arbor_client::snapshot::load_snapshot(
                            &mut self.replica,
                            [Ok::<_, String>(bytes::Bytes::from(bytes))],
                            |_| {},
                        )
                        .unwrap();
                        self.script.head = FIXTURE_HEAD;
                        self.session.on_snapshot_loaded(&mut self.replica, self.now)
                    }
                    Some((status, code, message)) => self.session.on_snapshot_failed(
                        &mut self.replica,
                        self.now,
                        SnapshotFailure::Http {
                            status,
                            code,
                            message,
                        },
                    ),
                };
                self.take(a);
            }
            Step::ExpectConnect(answer) => {
                let action = self.next_action(false);
                assert!(
                    matches!(action, Action::Connect),
                    "{name}: expected connect, got {action:?}"
                );
                let a = match refusal(answer) {
                    None => self.session.on_open(&mut self.replica, self.now),
                    Some((status, code, _)) => self.session.on_connect_failed(
                        &mut self.replica,
                        self.now,
                        ConnectFailure::Http { status, code },
                    ),
                };
                self.take(a);
            }
            Step::ExpectHello { .. } | Step::ExpectPush { .. } | Step::ExpectPing {} => {
                let action = self.next_action(matches!(step, Step::ExpectPing {}));
                let Action::Send(msg) = action else {
                    panic!("{name}: expected {step:?}, got {action:?}")
                };
                self.script.client_frame(step, &msg, &name);
            }
            Step::ExpectDisconnect {} => {
                let action = self.next_action(false);
                assert!(
                    matches!(action, Action::Disconnect),
                    "{name}: expected disconnect, got {action:?}"
                );
            }
            Step::ExpectStop {} => {
                let action = self.next_action(false);
                assert!(
                    matches!(action, Action::Stopped(_)),
                    "{name}: expected stop, got {action:?}"
                );
                assert!(self.session.is_over());
            }
            Step::Send(v) => {
                let frame = self.script.frame(v);
                let a = self.session.on_frame(&mut self.replica, self.now, &frame);
                self.take(a);
            }
            Step::Commit {} => {
                for frame in self.script.commit() {
                    let a = self.session.on_frame(&mut self.replica, self.now, &frame);
                    self.take(a);
                }
            }
            Step::Close { code } => {
                let a =
                    self.session
                        .on_closed(&mut self.replica, self.now, Some(*code), "scripted");
                self.take(a);
            }
            Step::Local { ops } => {
                create(&mut self.replica, *ops);
                let a = self.session.on_outbox(&mut self.replica, self.now);
                self.take(a);
            }
            Step::Status(check) => {
                self.settle_status();
                assert!(
                    matches(check, &self.status),
                    "{name}: status {:?}, expected {check:?}",
                    self.status
                );
            }
        }
        self.replica.check_invariants().unwrap();
    }
}

#[test]
fn the_session_follows_every_transcript() {
    let all = transcripts();
    assert!(all.len() > 40, "{} transcripts", all.len());
    for t in all {
        let dir = TempDir::new("transcript");
        let mut replica = Replica::open(&dir.0.join("r.db")).unwrap();
        let mut session = Session::new(SessionConfig::new("s"), 7);
        let first = session.start(&mut replica, 0);
        let mut run = SessionRun {
            name: t.name.clone(),
            silent: t.silent,
            session,
            replica,
            now: 0,
            pending: first.into(),
            status: SyncStatus::default(),
            script: Script::new(),
        };
        for step in &t.steps {
            run.step(step);
        }
        // Nothing unexpected is left to do, bar status reports and pings.
        run.settle_status();
        assert!(
            run.pending
                .iter()
                .all(|a| matches!(a, Action::Send(ClientMsg::Ping {}) | Action::Rejected(_))),
            "{}: left over: {:?}",
            t.name,
            run.pending
        );
    }
}

#[test]
fn every_wire_code_has_a_transcript() {
    let covered: std::collections::BTreeSet<Disposition> =
        transcripts().iter().filter_map(|t| t.each_code).collect();
    for code in ErrorCode::ALL {
        if code.scope() == arbor_shared::error::Scope::Wire
            && code.disposition() != Disposition::Resnapshot
        {
            assert!(
                covered.contains(&code.disposition()),
                "{code}: no transcript plays its disposition"
            );
        }
    }
}

// ------------------------------------------------------- the native driver

mod native {
    //! A scripted server on a real socket: HTTP snapshot, WebSocket upgrade,
    //! each answered as the transcript says.

    use std::sync::{Arc, Mutex};

    use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
    use axum::extract::{FromRequestParts, Request};
    use axum::response::{IntoResponse, Response};
    use tokio::sync::{mpsc, oneshot};

    use super::*;

    /// What the scripted server saw.
    pub enum Seen {
        Snapshot(oneshot::Sender<Option<(u16, Option<ErrorCode>)>>),
        Upgrade(oneshot::Sender<Option<(u16, Option<ErrorCode>)>>),
        Frame(String),
        Closed,
    }

    /// The open socket's outgoing side.
    pub enum Out {
        Text(String),
        Close(u16),
    }

    pub struct Server {
        pub url: String,
        pub seen: mpsc::UnboundedReceiver<Seen>,
        pub out: Arc<Mutex<Option<mpsc::UnboundedSender<Out>>>>,
    }

    fn refusal(status: u16, code: Option<ErrorCode>) -> Response {
        let status = axum::http::StatusCode::from_u16(status).unwrap();
        match code {
            Some(c) => (
                status,
                axum::Json(arbor_shared::error::ErrorBody::new(c, "scripted")),
            )
                .into_response(),
            None => (status, "scripted").into_response(),
        }
    }

    /// A scripted server; unless `silent`, it answers pings itself.
    pub async fn start(silent: bool) -> Server {
        let (seen_tx, seen) = mpsc::unbounded_channel();
        let out: Arc<Mutex<Option<mpsc::UnboundedSender<Out>>>> = Arc::default();
        let (tx, slot) = (seen_tx.clone(), out.clone());
        let app = axum::Router::new()
            .route(
                "/v1/spaces/s/snapshot",
                axum::routing::get(move || {
                    let tx = tx.clone();
                    async move {
                        let (answer, rx) = oneshot::channel();
                        let _ = tx.send(Seen::Snapshot(answer));
                        match rx.await.ok().flatten() {
                            None => fixture_bytes().into_response(),
                            Some((status, code)) => refusal(status, code),
                        }
                    }
                }),
            )
            .route(
                "/v1/spaces/s/ws",
                axum::routing::get(move |req: Request| {
                    let (tx, slot) = (seen_tx.clone(), slot.clone());
                    async move {
                        let (mut parts, _) = req.into_parts();
                        let (answer, rx) = oneshot::channel();
                        let _ = tx.send(Seen::Upgrade(answer));
                        if let Some((status, code)) = rx.await.ok().flatten() {
                            return refusal(status, code);
                        }
                        let ws = WebSocketUpgrade::from_request_parts(&mut parts, &())
                            .await
                            .unwrap();
                        ws.on_upgrade(move |socket| serve(socket, tx, slot, silent))
                    }
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Server { url, seen, out }
    }

    async fn serve(
        mut socket: WebSocket,
        seen: mpsc::UnboundedSender<Seen>,
        slot: Arc<Mutex<Option<mpsc::UnboundedSender<Out>>>>,
        silent: bool,
    ) {
        let (tx, mut rx) = mpsc::unbounded_channel();
        *slot.lock().unwrap() = Some(tx);
        loop {
            tokio::select! {
                m = socket.recv() => match m {
                    Some(Ok(Message::Text(t))) => {
                        if !silent && matches!(ClientMsg::decode(&t), Ok(ClientMsg::Ping {})) {
                            let _ = socket.send(Message::Text(ServerMsg::Pong.encode().into())).await;
                        } else {
                            let _ = seen.send(Seen::Frame(t.to_string()));
                        }
                    }
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                    Some(Ok(_)) => {}
                },
                o = rx.recv() => match o {
                    Some(Out::Text(t)) => { let _ = socket.send(Message::Text(t.into())).await; }
                    Some(Out::Close(code)) => {
                        // The server's own close: not the client's to report.
                        let _ = socket.send(Message::Close(Some(CloseFrame { code, reason: "scripted".into() }))).await;
                        return;
                    }
                    None => break,
                },
            }
        }
        let _ = seen.send(Seen::Closed);
    }
}

async fn play_native(t: &Transcript) {
    let mut server = native::start(t.silent).await;
    let dir = TempDir::new("transcript-native");
    let replica = dir.replica("r");
    let mut config = SyncConfig::new(&server.url, "s", "scripted-token");
    // Long enough that a status between two attempts can be seen.
    config.min_backoff = Duration::from_millis(300);
    config.max_backoff = Duration::from_millis(600);
    config.keepalive = Duration::from_millis(300);
    let (tx, mut status) = tokio::sync::watch::channel(SyncStatus::default());
    let mut task = tokio::spawn(sync_forever(
        replica.clone(),
        config,
        tx,
        std::future::pending(),
    ));
    let mut script = Script::new();
    let name = &t.name;
    let limit = Duration::from_secs(10);
    let out = server.out.clone();
    let send = |m: native::Out| {
        out.lock()
            .unwrap()
            .as_ref()
            .expect("no socket")
            .send(m)
            .unwrap();
    };
    for step in &t.steps {
        match step {
            Step::ExpectSnapshot(answer) | Step::ExpectConnect(answer) => {
                let seen = next_seen(&mut server.seen, false, limit)
                    .await
                    .unwrap_or_else(|| panic!("{name}: waited for {step:?}"));
                let reply = refusal(answer).map(|(s, c, _)| (s, c));
                match (step, seen) {
                    (Step::ExpectSnapshot(_), native::Seen::Snapshot(a)) => {
                        if reply.is_none() {
                            script.head = FIXTURE_HEAD;
                        }
                        let _ = a.send(reply);
                    }
                    (Step::ExpectConnect(_), native::Seen::Upgrade(a)) => {
                        let _ = a.send(reply);
                    }
                    (_, other) => panic!("{name}: expected {step:?}, saw {}", kind(&other)),
                }
            }
            Step::ExpectHello { .. } | Step::ExpectPush { .. } | Step::ExpectPing {} => {
                let want_ping = matches!(step, Step::ExpectPing {});
                match next_seen(&mut server.seen, !want_ping, limit)
                    .await
                    .unwrap_or_else(|| panic!("{name}: waited for {step:?}"))
                {
                    native::Seen::Frame(text) => {
                        let msg = ClientMsg::decode(&text).unwrap();
                        script.client_frame(step, &msg, name);
                    }
                    other => panic!("{name}: expected {step:?}, saw {}", kind(&other)),
                }
            }
            Step::ExpectDisconnect {} => {
                match next_seen(&mut server.seen, true, limit)
                    .await
                    .unwrap_or_else(|| panic!("{name}: waited for a disconnect"))
                {
                    native::Seen::Closed => {}
                    other => panic!("{name}: expected a disconnect, saw {}", kind(&other)),
                }
            }
            Step::ExpectStop {} => {
                let ended = tokio::time::timeout(limit, &mut task)
                    .await
                    .unwrap_or_else(|_| panic!("{name}: the driver did not stop"));
                assert!(ended.unwrap().is_err(), "{name}: stopped without an error");
            }
            Step::Send(v) => send(native::Out::Text(script.frame(v))),
            Step::Commit {} => {
                for f in script.commit() {
                    send(native::Out::Text(f));
                }
            }
            Step::Close { code } => send(native::Out::Close(*code)),
            Step::Local { ops } => create(&mut replica.lock().unwrap(), *ops),
            Step::Status(check) => {
                let waited = tokio::time::timeout(limit, status.wait_for(|s| matches(check, s)));
                if waited.await.is_err() {
                    panic!(
                        "{name}: status {:?}, expected {check:?}",
                        status.borrow().clone()
                    );
                }
            }
        }
    }
    task.abort();
}

/// The next thing the server saw within `limit` (pings skipped when
/// `skip_pings`: in a silent transcript the server leaves them unanswered).
async fn next_seen(
    seen: &mut tokio::sync::mpsc::UnboundedReceiver<native::Seen>,
    skip_pings: bool,
    limit: Duration,
) -> Option<native::Seen> {
    let wait = async {
        loop {
            let s = seen.recv().await?;
            if let native::Seen::Frame(text) = &s
                && skip_pings
                && matches!(ClientMsg::decode(text), Ok(ClientMsg::Ping {}))
            {
                continue;
            }
            return Some(s);
        }
    };
    tokio::time::timeout(limit, wait).await.ok().flatten()
}

fn kind(s: &native::Seen) -> String {
    match s {
        native::Seen::Snapshot(_) => "a snapshot request".into(),
        native::Seen::Upgrade(_) => "an upgrade".into(),
        native::Seen::Frame(t) => format!("the frame {t}"),
        native::Seen::Closed => "the socket close".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_native_driver_follows_every_transcript() {
    for t in transcripts() {
        play_native(&t).await;
    }
}

/// A token with a `root` claim gets that root's subtree feed whatever the
/// replica asks for, so the session refuses to start with it on a replica
/// of the whole space or of another root, before it asks for anything.
#[test]
fn a_token_limited_to_another_subtree_stops_the_session_before_it_connects() {
    let claim = NodeId::from_random_bits(0x1234_5678_9abc_def0_1122_3344_5566_7788);
    let other = NodeId::from_random_bits(0x0fed_cba9_8765_4321_8899_aabb_ccdd_eeff);
    for follows in [None, Some(other), Some(claim)] {
        let mut replica = Replica::open_in_memory().unwrap();
        if let Some(root) = follows {
            replica.bind_subtree(root).unwrap();
        }
        let mut session = Session::new(
            SessionConfig {
                token_root: Some(claim),
                ..SessionConfig::new("s")
            },
            7,
        );
        let actions = session.start(&mut replica, 0);
        let stopped = actions.iter().find_map(|a| match a {
            Action::Stopped(arbor_client::session::Stop::Refused { code, message }) => {
                Some((*code, message.clone()))
            }
            _ => None,
        });
        let asked = actions
            .iter()
            .any(|a| matches!(a, Action::LoadSnapshot { .. } | Action::Connect));
        if follows == Some(claim) {
            assert!(stopped.is_none() && asked, "{actions:?}");
        } else {
            let (code, message) = stopped.unwrap_or_else(|| panic!("{follows:?}: {actions:?}"));
            assert_eq!(code, ErrorCode::OutOfScope);
            assert!(message.contains(&claim.to_string()), "{message}");
            assert!(!asked && session.is_over(), "{actions:?}");
        }
    }
}
