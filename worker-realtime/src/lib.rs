//! Arbor's realtime tier on Cloudflare: a Worker that checks tokens and
//! routes `/v1/spaces/{space}/ws` to the Durable Object named by the
//! thoughtspace, and the object, which drives the shared room state machine
//! ([`arbor_shared::room::Room`]) over hibernating WebSockets and persists
//! through the sync server's HTTP ingest.
//!
//! # Layout
//!
//! - [`fetch`] (the Worker): token check before any upgrade (header,
//!   `Sec-WebSocket-Protocol: bearer.<token>`, or `access_token` query),
//!   401/403 with typed JSON errors, then the object; `POST
//!   .../notify` (service token) forwards the sync server's commit notices.
//! - [`RoomObject`] (the Durable Object): accepts sockets with the
//!   hibernation API, keeps each socket's verified claims and cursor in its
//!   attachment, rebuilds the room from them after hibernation, commits
//!   pushes one at a time in arrival order through `POST .../ops`, catches
//!   sockets up from `GET .../ops`, and relays only committed ops.
//!
//! Configuration: `ARBOR_SERVER_URL` (var) and `ARBOR_JWT_SECRET` (secret:
//! `wrangler secret put`, or `.dev.vars` locally). The object mints its own
//! short-lived service tokens for the sync server with the same secret.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};

use arbor_shared::auth::{self, Claims, Hs256Key, Role};
use arbor_shared::protocol::{SeqOp, ServerMsg};
use arbor_shared::room::{Action, ConnId, IngestResult, Room, RoomLimits};
use arbor_shared::{Op, ReplicaId};
use serde::{Deserialize, Serialize};
use worker::{
    Date, DurableObject, Env, Fetch, Headers, Method, Request, RequestInit, Response, Result,
    State, WebSocket, WebSocketIncomingMessage, WebSocketPair, durable_object, event,
};

/// Token clock leeway, seconds.
const LEEWAY_S: u64 = 60;
/// The subprotocol selected when the token came in `Sec-WebSocket-Protocol`.
const WS_PROTOCOL: &str = "arbor.v1";
/// Catch-up page size from the sync server.
const PAGE: u64 = 1_000;
/// Header carrying the verified claims from the Worker to the object.
const CLAIMS_HEADER: &str = "x-arbor-claims";
/// Header carrying the thoughtspace name to the object.
const SPACE_HEADER: &str = "x-arbor-space";
/// How often the object checks token expiry while sockets are open.
const TICK_MS: i64 = 15_000;

fn now_ms() -> u64 {
    Date::now().as_millis()
}

fn json_error(status: u16, code: &str, message: &str) -> Result<Response> {
    let body = serde_json::json!({ "error": { "code": code, "message": message } });
    Ok(Response::from_json(&body)?.with_status(status))
}

fn key(env: &Env) -> std::result::Result<Hs256Key, String> {
    let secret = env
        .secret("ARBOR_JWT_SECRET")
        .map_err(|_| "ARBOR_JWT_SECRET is not set".to_string())?
        .to_string();
    Hs256Key::new(secret.trim().as_bytes()).map_err(|e| e.to_string())
}

/// The token of an upgrade request: `Authorization: Bearer`, a
/// `bearer.<token>` entry of `Sec-WebSocket-Protocol`, or `access_token`.
fn token_of(req: &Request) -> Result<(Option<String>, bool)> {
    let headers = req.headers();
    if let Some(h) = headers.get("authorization")?
        && let Some(t) = h.strip_prefix("Bearer ")
    {
        return Ok((Some(t.trim().to_string()), false));
    }
    if let Some(p) = headers.get("sec-websocket-protocol")? {
        for entry in p.split(',') {
            if let Some(t) = entry.trim().strip_prefix("bearer.") {
                return Ok((Some(t.to_string()), true));
            }
        }
    }
    let url = req.url()?;
    let from_query = url
        .query_pairs()
        .find(|(k, _)| k == "access_token")
        .map(|(_, v)| v.to_string());
    Ok((from_query, false))
}

/// Checks a token for `space`; the error is the HTTP refusal.
fn check(
    env: &Env,
    token: Option<&str>,
    space: &str,
    need_service: bool,
) -> std::result::Result<Claims, (u16, &'static str, String)> {
    let key = key(env).map_err(|e| (500, "internal", e))?;
    let token = token.ok_or((401, "missing_token", "send a bearer token".to_string()))?;
    let claims = auth::verify(token, &key, now_ms() / 1000, LEEWAY_S).map_err(|e| {
        let code = match e {
            auth::AuthError::Expired { .. } => "token_expired",
            auth::AuthError::NotYetValid { .. } => "token_not_yet_valid",
            _ => "bad_token",
        };
        (401, code, e.to_string())
    })?;
    let scoped = claims.space == space || (claims.role == Role::Service && claims.space == "*");
    if !scoped {
        return Err((
            403,
            "wrong_space",
            format!("the token is for {}", claims.space),
        ));
    }
    if need_service && claims.role != Role::Service {
        return Err((403, "forbidden", "a service token is required".into()));
    }
    Ok(claims)
}

fn valid_space(space: &str) -> bool {
    (1..=64).contains(&space.len())
        && space
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// The Worker: routes and token checks; nothing is upgraded or forwarded
/// before the token is verified.
#[event(fetch)]
pub async fn fetch(req: Request, env: Env, _ctx: worker::Context) -> Result<Response> {
    let url = req.url()?;
    let segments: Vec<String> = url
        .path()
        .trim_start_matches('/')
        .split('/')
        .map(str::to_string)
        .collect();
    let segs: Vec<&str> = segments.iter().map(String::as_str).collect();
    match segs.as_slice() {
        ["livez"] => Response::ok("ok"),
        ["v1", "spaces", space, route @ ("ws" | "notify")] => {
            if !valid_space(space) {
                return json_error(404, "unknown_space", "bad thoughtspace name");
            }
            let notify = *route == "notify";
            if notify && req.method() != Method::Post {
                return json_error(405, "bad_request", "POST only");
            }
            if !notify
                && req
                    .headers()
                    .get("upgrade")?
                    .is_none_or(|u| !u.eq_ignore_ascii_case("websocket"))
            {
                return json_error(426, "bad_request", "a WebSocket upgrade is required");
            }
            let (token, via_protocol) = token_of(&req)?;
            let claims = match check(&env, token.as_deref(), space, notify) {
                Ok(c) => c,
                Err((status, code, message)) => return json_error(status, code, &message),
            };
            let headers = Headers::new();
            for (k, v) in req.headers().entries() {
                headers.set(&k, &v)?;
            }
            headers.set(
                CLAIMS_HEADER,
                &serde_json::to_string(&claims)
                    .map_err(|e| worker::Error::RustError(e.to_string()))?,
            )?;
            headers.set(SPACE_HEADER, space)?;
            if via_protocol {
                headers.set("x-arbor-protocol", WS_PROTOCOL)?;
            }
            let mut init = RequestInit::new();
            init.with_method(req.method()).with_headers(headers);
            if notify {
                let body = req.clone()?.text().await?;
                init.with_body(Some(body.into()));
            }
            let forwarded = Request::new_with_init(url.as_str(), &init)?;
            let stub = env
                .durable_object("ROOMS")?
                .id_from_name(space)?
                .get_stub()?;
            stub.fetch_with_request(forwarded).await
        }
        _ => json_error(404, "not_found", "no such route"),
    }
}

/// What a socket keeps across hibernation (its attachment).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Attachment {
    conn: ConnId,
    space: String,
    claims: Claims,
    /// After hello: its replica and the highest seq sent to it.
    hello: Option<(ReplicaId, u64)>,
}

struct Push {
    conn: ConnId,
    batch: u64,
    author: Option<ReplicaId>,
    ops: Vec<Op>,
}

struct Live {
    room: Room,
    space: String,
    sockets: BTreeMap<ConnId, WebSocket>,
    next_conn: ConnId,
}

/// One thoughtspace's realtime room.
#[durable_object]
pub struct RoomObject {
    state: State,
    env: Env,
    /// The room; `None` until built (and again after hibernation wipes
    /// memory: it is rebuilt from the sockets' attachments).
    live: RefCell<Option<Live>>,
    /// Pushes waiting for their commit, in arrival order.
    pushes: RefCell<VecDeque<Push>>,
    /// A commit is in flight (outbound I/O opens the input gate, so other
    /// events run meanwhile: they only queue).
    busy: Cell<bool>,
    /// The highest commit notice that came while a commit was in flight.
    noticed: Cell<u64>,
}

#[derive(Deserialize)]
struct OpsAnswer {
    ops: Vec<CommittedOp>,
    #[serde(default)]
    head_seq: Option<u64>,
}

#[derive(Deserialize)]
struct CommittedOp {
    seq: u64,
    op: Op,
    #[serde(default)]
    origin: Option<String>,
}

#[derive(Deserialize)]
struct ErrorAnswer {
    error: ErrorBody,
}

#[derive(Deserialize)]
struct ErrorBody {
    code: String,
    message: String,
}

impl RoomObject {
    fn server(&self) -> Result<String> {
        Ok(self
            .env
            .var("ARBOR_SERVER_URL")?
            .to_string()
            .trim_end_matches('/')
            .to_string())
    }

    fn service_token(&self, space: &str) -> Result<String> {
        let key = key(&self.env).map_err(worker::Error::RustError)?;
        let now = now_ms() / 1000;
        Ok(auth::mint(
            &Claims {
                sub: "arbor-realtime".into(),
                space: space.to_string(),
                role: Role::Service,
                rid: None,
                exp: now + 120,
                nbf: None,
                iat: Some(now),
            },
            &key,
        ))
    }

    async fn server_fetch(
        &self,
        space: &str,
        method: Method,
        path_query: &str,
        body: Option<String>,
    ) -> Result<Response> {
        let headers = Headers::new();
        headers.set(
            "authorization",
            &format!("Bearer {}", self.service_token(space)?),
        )?;
        headers.set("content-type", "application/json")?;
        let mut init = RequestInit::new();
        init.with_method(method).with_headers(headers);
        if let Some(b) = body {
            init.with_body(Some(b.into()));
        }
        let url = format!("{}/v1/spaces/{space}{path_query}", self.server()?);
        Fetch::Request(Request::new_with_init(&url, &init)?)
            .send()
            .await
    }

    /// Committed ops with `after < seq <= upto` (one page), and the head.
    async fn ops_page(
        &self,
        space: &str,
        after: u64,
        upto: u64,
    ) -> Result<(Vec<SeqOp>, Option<u64>)> {
        let limit = upto.saturating_sub(after).clamp(1, PAGE);
        let mut r = self
            .server_fetch(
                space,
                Method::Get,
                &format!("/ops?after={after}&limit={limit}"),
                None,
            )
            .await?;
        if r.status_code() != 200 {
            return Err(worker::Error::RustError(format!(
                "catch-up answered {}",
                r.status_code()
            )));
        }
        let answer: OpsAnswer = r.json().await?;
        let ops = answer
            .ops
            .into_iter()
            .filter(|o| o.seq <= upto)
            .map(|o| SeqOp {
                seq: o.seq,
                op: o.op,
            })
            .collect();
        Ok((ops, answer.head_seq))
    }

    /// Commits one push through the sync server.
    async fn ingest(&self, space: &str, push: &Push) -> IngestResult {
        let failed = |code: &str, message: String| IngestResult::Failed {
            code: code.to_string(),
            message,
        };
        let query = match push.author {
            Some(a) => format!("/ops?author={a}"),
            None => "/ops".to_string(),
        };
        let body = match serde_json::to_string(&serde_json::json!({ "ops": push.ops })) {
            Ok(b) => b,
            Err(e) => return failed("internal", e.to_string()),
        };
        let mut r = match self
            .server_fetch(space, Method::Post, &query, Some(body))
            .await
        {
            Ok(r) => r,
            Err(e) => return failed("unavailable", e.to_string()),
        };
        if r.status_code() == 200 {
            match r.json::<OpsAnswer>().await {
                Ok(a) => IngestResult::Committed(
                    a.ops
                        .into_iter()
                        .filter(|o| o.origin.as_deref() != Some("duplicate"))
                        .map(|o| SeqOp {
                            seq: o.seq,
                            op: o.op,
                        })
                        .collect(),
                ),
                Err(e) => failed("unavailable", e.to_string()),
            }
        } else {
            match r.json::<ErrorAnswer>().await {
                Ok(a) => failed(&a.error.code, a.error.message),
                Err(_) => failed(
                    "unavailable",
                    format!("ingest answered {}", r.status_code()),
                ),
            }
        }
    }

    /// Builds the room if memory was wiped: the head from the sync server,
    /// then every open socket restored from its attachment.
    async fn ensure_live(&self, space_hint: Option<&str>) -> Result<()> {
        if self.live.borrow().is_some() {
            return Ok(());
        }
        let sockets = self.state.get_websockets();
        let mut restored = Vec::new();
        for ws in &sockets {
            if let Ok(Some(a)) = ws.deserialize_attachment::<Attachment>() {
                restored.push((a, ws.clone()));
            }
        }
        let space = match (space_hint, restored.first()) {
            (Some(s), _) => s.to_string(),
            (None, Some((a, _))) => a.space.clone(),
            (None, None) => return Err(worker::Error::RustError("no thoughtspace yet".into())),
        };
        let (_, head) = self
            .ops_page(&space, u64::MAX / 2, u64::MAX / 2 + 1)
            .await?;
        let head = head.unwrap_or(0);
        if self.live.borrow().is_some() {
            // Another event built it while we fetched.
            return Ok(());
        }
        let mut room = Room::new(&space, head, None, RoomLimits::default());
        let mut actions = Vec::new();
        let mut next_conn = 1;
        let mut map = BTreeMap::new();
        for (a, ws) in restored {
            next_conn = next_conn.max(a.conn + 1);
            actions.extend(room.restore(a.conn, a.claims, a.hello));
            map.insert(a.conn, ws);
        }
        *self.live.borrow_mut() = Some(Live {
            room,
            space,
            sockets: map,
            next_conn,
        });
        self.run(actions).await;
        Ok(())
    }

    fn with_room<T>(&self, f: impl FnOnce(&mut Live) -> T) -> Option<T> {
        self.live.borrow_mut().as_mut().map(f)
    }

    fn space(&self) -> Option<String> {
        self.live.borrow().as_ref().map(|l| l.space.clone())
    }

    /// Keeps a socket's cursor in its attachment (so a rebuilt room
    /// resumes it without gap or duplicate).
    fn save_cursor(&self, conn: ConnId) {
        let _ = self.with_room(|l| {
            let hello = l.room.conn_cursor(conn);
            if let Some(ws) = l.sockets.get(&conn)
                && let Ok(Some(mut a)) = ws.deserialize_attachment::<Attachment>()
                && a.hello != hello
            {
                a.hello = hello;
                let _ = ws.serialize_attachment(&a);
            }
        });
    }

    /// Carries out the room's actions in order; I/O actions feed their
    /// results back. Pushes commit one at a time, in arrival order: the
    /// event that finds none in flight drives the queue.
    async fn run(&self, actions: Vec<Action>) {
        let mut todo: VecDeque<Action> = actions.into();
        loop {
            while let Some(action) = todo.pop_front() {
                match action {
                    Action::Send { conn, msg } => {
                        let is_ops = matches!(msg, ServerMsg::Ops { .. });
                        let sent = self.with_room(|l| {
                            l.sockets
                                .get(&conn)
                                .map(|ws| ws.send_with_str(msg.encode()).is_ok())
                        });
                        match sent.flatten() {
                            Some(true) => {
                                if is_ops {
                                    self.save_cursor(conn);
                                }
                            }
                            _ => {
                                let more = self.with_room(|l| {
                                    l.sockets.remove(&conn);
                                    l.room.on_close(conn)
                                });
                                todo.extend(more.unwrap_or_default());
                            }
                        }
                    }
                    Action::Close { conn, code, reason } => {
                        let more = self.with_room(|l| {
                            if let Some(ws) = l.sockets.remove(&conn) {
                                let _ = ws.close(Some(code), Some(reason));
                            }
                            l.room.on_close(conn)
                        });
                        todo.extend(more.unwrap_or_default());
                    }
                    Action::Ingest {
                        conn,
                        batch,
                        author,
                        ops,
                    } => self.pushes.borrow_mut().push_back(Push {
                        conn,
                        batch,
                        author,
                        ops,
                    }),
                    Action::CatchUp { conn, after, upto } => {
                        let Some(space) = self.space() else { continue };
                        let mut cursor = after;
                        loop {
                            match self.ops_page(&space, cursor, upto).await {
                                Ok((ops, _)) => {
                                    cursor = ops.last().map_or(upto, |o| o.seq);
                                    let done = cursor >= upto || ops.is_empty();
                                    let more =
                                        self.with_room(|l| l.room.on_catch_up(conn, ops, done));
                                    todo.extend(more.unwrap_or_default());
                                    if done {
                                        break;
                                    }
                                }
                                Err(e) => {
                                    worker::console_error!("catch-up failed: {e}");
                                    let more = self.with_room(|l| {
                                        if let Some(ws) = l.sockets.remove(&conn) {
                                            let _ = ws.close(Some(1011), Some("catch-up failed"));
                                        }
                                        l.room.on_close(conn)
                                    });
                                    todo.extend(more.unwrap_or_default());
                                    break;
                                }
                            }
                        }
                        self.save_cursor(conn);
                    }
                    Action::FetchGap { after, upto } => {
                        let Some(space) = self.space() else { continue };
                        let mut cursor = after;
                        while cursor < upto {
                            match self.ops_page(&space, cursor, upto).await {
                                Ok((ops, _)) if !ops.is_empty() => {
                                    cursor = ops.last().map_or(upto, |o| o.seq);
                                    let more = self.with_room(|l| l.room.on_committed(ops));
                                    todo.extend(more.unwrap_or_default());
                                }
                                _ => {
                                    let more = self.with_room(|l| l.room.on_gap_failed());
                                    todo.extend(more.unwrap_or_default());
                                    break;
                                }
                            }
                        }
                    }
                }
            }
            if self.busy.get() {
                return;
            }
            let Some(push) = self.pushes.borrow_mut().pop_front() else {
                return;
            };
            let Some(space) = self.space() else { return };
            self.busy.set(true);
            let result = self.ingest(&space, &push).await;
            self.busy.set(false);
            let noticed = self.noticed.replace(0);
            let more = self.with_room(|l| {
                let mut a = l
                    .room
                    .on_ingested_group(vec![(push.conn, push.batch, result)]);
                if noticed > 0 {
                    a.extend(l.room.on_head(noticed));
                }
                a
            });
            todo.extend(more.unwrap_or_default());
        }
    }

    async fn ensure_alarm(&self) {
        let storage = self.state.storage();
        if let Ok(None) = storage.get_alarm().await {
            let _ = storage.set_alarm(TICK_MS).await;
        }
    }

    async fn accept(&self, req: Request) -> Result<Response> {
        let headers = req.headers();
        let space = headers
            .get(SPACE_HEADER)?
            .ok_or_else(|| worker::Error::RustError("no space header".into()))?;
        let claims: Claims = serde_json::from_str(
            &headers
                .get(CLAIMS_HEADER)?
                .ok_or_else(|| worker::Error::RustError("no claims header".into()))?,
        )
        .map_err(|e| worker::Error::RustError(e.to_string()))?;
        let protocol = headers.get("x-arbor-protocol")?;
        if let Err(e) = self.ensure_live(Some(&space)).await {
            return json_error(503, "unavailable", &e.to_string());
        }
        let pair = WebSocketPair::new()?;
        let server = pair.server;
        self.state.accept_web_socket(&server);
        let conn = self
            .with_room(|l| {
                let c = l.next_conn;
                l.next_conn += 1;
                l.sockets.insert(c, server.clone());
                c
            })
            .unwrap_or(0);
        server.serialize_attachment(&Attachment {
            conn,
            space,
            claims: claims.clone(),
            hello: None,
        })?;
        let actions = self
            .with_room(|l| l.room.on_connect(conn, claims))
            .unwrap_or_default();
        self.run(actions).await;
        self.ensure_alarm().await;
        let response = Response::from_websocket(pair.client)?;
        match protocol {
            Some(p) => {
                let h = Headers::new();
                h.set("sec-websocket-protocol", &p)?;
                Ok(response.with_headers(h))
            }
            None => Ok(response),
        }
    }

    async fn socket_gone(&self, ws: &WebSocket) -> Result<()> {
        if let Some(att) = Self::conn_of(ws) {
            self.ensure_live(Some(&att.space)).await?;
            let actions = self
                .with_room(|l| {
                    l.sockets.remove(&att.conn);
                    l.room.on_close(att.conn)
                })
                .unwrap_or_default();
            self.run(actions).await;
        }
        Ok(())
    }

    fn conn_of(ws: &WebSocket) -> Option<Attachment> {
        ws.deserialize_attachment::<Attachment>().ok().flatten()
    }
}

impl DurableObject for RoomObject {
    fn new(state: State, env: Env) -> Self {
        RoomObject {
            state,
            env,
            live: RefCell::new(None),
            pushes: RefCell::new(VecDeque::new()),
            busy: Cell::new(false),
            noticed: Cell::new(0),
        }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        let url = req.url()?;
        if url.path().ends_with("/notify") {
            #[derive(Deserialize)]
            struct Notice {
                head_seq: u64,
            }
            let space = req.headers().get(SPACE_HEADER)?.unwrap_or_default();
            let notice: Notice = match req.json().await {
                Ok(n) => n,
                Err(e) => return json_error(400, "bad_request", &e.to_string()),
            };
            // Only a room with sockets cares; an idle object stays idle.
            if self.state.get_websockets().is_empty() {
                return Response::ok("idle");
            }
            if let Err(e) = self.ensure_live(Some(&space)).await {
                return json_error(503, "unavailable", &e.to_string());
            }
            if self.busy.get() {
                self.noticed.set(self.noticed.get().max(notice.head_seq));
            } else {
                let actions = self
                    .with_room(|l| l.room.on_head(notice.head_seq))
                    .unwrap_or_default();
                self.run(actions).await;
            }
            return Response::ok("ok");
        }
        self.accept(req).await
    }

    async fn websocket_message(
        &self,
        ws: WebSocket,
        message: WebSocketIncomingMessage,
    ) -> Result<()> {
        let Some(att) = Self::conn_of(&ws) else {
            let _ = ws.close(Some(1011), Some("no attachment"));
            return Ok(());
        };
        self.ensure_live(Some(&att.space)).await?;
        let text = match message {
            WebSocketIncomingMessage::String(t) => t,
            // Not a JSON text frame: the room refuses it.
            WebSocketIncomingMessage::Binary(_) => "binary frame".to_string(),
        };
        let actions = self
            .with_room(|l| {
                l.sockets.entry(att.conn).or_insert_with(|| ws.clone());
                l.room.on_message(att.conn, &text)
            })
            .unwrap_or_default();
        self.run(actions).await;
        self.save_cursor(att.conn);
        Ok(())
    }

    async fn websocket_close(
        &self,
        ws: WebSocket,
        _code: usize,
        _reason: String,
        _clean: bool,
    ) -> Result<()> {
        self.socket_gone(&ws).await
    }

    async fn websocket_error(&self, ws: WebSocket, _error: worker::Error) -> Result<()> {
        self.socket_gone(&ws).await
    }

    async fn alarm(&self) -> Result<Response> {
        if self.state.get_websockets().is_empty() {
            return Response::ok("idle");
        }
        let space = self
            .state
            .get_websockets()
            .iter()
            .find_map(Self::conn_of)
            .map(|a| a.space);
        self.ensure_live(space.as_deref()).await?;
        let actions = self
            .with_room(|l| l.room.on_tick(now_ms() / 1000, LEEWAY_S))
            .unwrap_or_default();
        self.run(actions).await;
        let _ = self.state.storage().set_alarm(TICK_MS).await;
        Response::ok("tick")
    }
}
