//! The Durable Object: the hibernation API's events turned into calls of the shared room, which is rebuilt from the sockets' attachments after memory loss.

use std::cell::RefCell;
use std::collections::BTreeMap;

use arbor_shared::ErrorCode;
use arbor_shared::ReplicaId;
use arbor_shared::auth::{Claims, Role};
use arbor_shared::http::NotifyBody;
use arbor_shared::keys::Revocations;
use arbor_shared::protocol::ServerMsg;
use arbor_shared::rate::{Rate, RateMap};
use arbor_shared::room::{Action, ConnId, Room, RoomLimits};
use serde::{Deserialize, Serialize};
use worker::{
    DurableObject, Env, Headers, Request, Response, Result, State, WebSocket,
    WebSocketIncomingMessage, WebSocketPair, durable_object,
};

use crate::upstream::Upstream;
use crate::{CLAIMS_HEADER, LEEWAY_S, PROTOCOL_HEADER, SPACE_HEADER, json_error, now_ms};

/// How often the object checks token expiry and the revocation list while
/// sockets are open.
const TICK_MS: i64 = 15_000;

/// What a socket keeps across hibernation (its attachment).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Attachment {
    pub(crate) conn: ConnId,
    pub(crate) space: String,
    pub(crate) claims: Claims,
    /// After hello: its replica and the highest seq sent to it.
    pub(crate) hello: Option<(ReplicaId, u64)>,
    /// A subtree connection's root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) root: Option<arbor_shared::NodeId>,
}

impl Attachment {
    /// Writes it to `ws` as one JSON string. This runs for every socket sent
    /// ops, after every commit: a string crosses from wasm to JS in one call
    /// and is stored as bytes, where an object is built field by field
    /// (`serde_wasm_bindgen`) and then walked again by the runtime's
    /// serializer.
    pub(crate) fn store(&self, ws: &WebSocket) -> Result<()> {
        let text =
            serde_json::to_string(self).map_err(|e| worker::Error::RustError(e.to_string()))?;
        ws.serialize_attachment(text)
    }

    /// What `ws` keeps, if anything: the JSON string of [`Attachment::store`],
    /// or an object as earlier versions wrote it.
    pub(crate) fn load(ws: &WebSocket) -> Option<Attachment> {
        match ws.deserialize_attachment::<String>() {
            Ok(Some(text)) => serde_json::from_str(&text).ok(),
            _ => ws.deserialize_attachment::<Attachment>().ok().flatten(),
        }
    }
}

/// A socket and what its attachment holds (kept here too, so a cursor
/// write needs no read of the attachment).
pub(crate) struct Socket {
    pub(crate) ws: WebSocket,
    /// Invariant: equal to the socket's stored attachment.
    pub(crate) attachment: Attachment,
}

/// The room and its sockets, while the object has memory.
pub(crate) struct Live {
    pub(crate) room: Room,
    pub(crate) upstream: Upstream,
    pub(crate) sockets: BTreeMap<ConnId, Socket>,
    next_conn: ConnId,
    /// Frames per token (lost with memory on hibernation, which only an
    /// idle object reaches).
    frames: RateMap,
    /// The sync server's revocation list, and its tag (`None`: not fetched
    /// since the room was built).
    revoked: Revocations,
    revoked_tag: Option<String>,
}

/// Tokens whose frame buckets are kept before full ones are swept.
const MAX_BUCKETS: usize = 4_096;

/// Frames (pushes, pings) per token at the sync server's defaults
/// (`--pushes-per-s 100`, `--burst-s 5`): over it a socket gets
/// `rate_limited` and is closed, as on the native endpoint.
fn frames() -> RateMap {
    RateMap::new(Rate::new(100.0, 5.0), MAX_BUCKETS)
}

/// One thoughtspace's realtime room.
#[durable_object]
pub struct RoomObject {
    state: State,
    env: Env,
    /// The room; `None` until built (and again after hibernation wipes
    /// memory: it is rebuilt from the sockets' attachments). Never borrowed
    /// across an await: other events run while this one waits for I/O.
    pub(crate) live: RefCell<Option<Live>>,
}

impl RoomObject {
    /// Builds the room if memory was wiped: the head from the sync server,
    /// then every open socket restored from its attachment.
    async fn ensure_live(&self, space_hint: Option<&str>) -> Result<()> {
        if self.live.borrow().is_some() {
            return Ok(());
        }
        let sockets = self.state.get_websockets();
        let mut restored = Vec::new();
        for ws in &sockets {
            if let Some(a) = Attachment::load(ws) {
                restored.push((a, ws.clone()));
            }
        }
        let space = match (space_hint, restored.first()) {
            (Some(s), _) => s.to_string(),
            (None, Some((a, _))) => a.space.clone(),
            (None, None) => return Err(worker::Error::RustError("no thoughtspace yet".into())),
        };
        let upstream = Upstream::new(&self.env, &space)?;
        let (head, min_cursor) = upstream.head().await?;
        if self.live.borrow().is_some() {
            // Another event built it while we fetched.
            return Ok(());
        }
        let mut room = Room::new(&space, head, None, RoomLimits::default());
        room.set_min_cursor(min_cursor);
        room.set_subtree_feeds(true);
        let mut actions = Vec::new();
        let mut next_conn = 1;
        let mut map = BTreeMap::new();
        // The highest cursor first: the room's head follows it.
        restored.sort_by_key(|(a, _)| std::cmp::Reverse(a.hello.map_or(0, |(_, c)| c)));
        for (a, ws) in restored {
            next_conn = next_conn.max(a.conn + 1);
            actions.extend(room.restore(a.conn, a.claims.clone(), a.hello, a.root));
            map.insert(a.conn, Socket { ws, attachment: a });
        }
        *self.live.borrow_mut() = Some(Live {
            room,
            upstream,
            sockets: map,
            next_conn,
            frames: frames(),
            revoked: Revocations::default(),
            revoked_tag: None,
        });
        self.run(actions).await;
        Ok(())
    }

    /// Calls `f` on the room, if built.
    pub(crate) fn with_room<T>(&self, f: impl FnOnce(&mut Live) -> T) -> Option<T> {
        self.live.borrow_mut().as_mut().map(f)
    }

    /// Calls `f` on the room and carries out the actions it returns.
    async fn drive(&self, f: impl FnOnce(&mut Live) -> Vec<Action>) {
        let actions = self
            .with_room(|l| {
                l.room.set_clock(now_ms());
                f(l)
            })
            .unwrap_or_default();
        self.run(actions).await;
    }

    /// Keeps a socket's hello and cursor in its attachment (so a rebuilt
    /// room resumes it without gap or duplicate); writes only a change.
    pub(crate) fn save_cursor(&self, conn: ConnId) {
        let _ = self.with_room(|l| {
            let hello = l.room.conn_cursor(conn);
            let root = l.room.conn_root(conn);
            if let Some(s) = l.sockets.get_mut(&conn)
                && (s.attachment.hello != hello || s.attachment.root != root)
            {
                s.attachment.hello = hello;
                s.attachment.root = root;
                let _ = s.attachment.store(&s.ws);
            }
        });
    }

    /// Fetches the sync server's revocation list when it changed (or was
    /// never fetched since the room was built) and closes the sockets whose
    /// token it now refuses (`token_revoked`, 4005). A failed fetch keeps
    /// the list the room has.
    async fn refresh_revocations(&self) {
        let Some((upstream, tag)) = self.with_room(|l| (l.upstream.clone(), l.revoked_tag.clone()))
        else {
            return;
        };
        match upstream.revocations(tag.as_deref()).await {
            Ok(Some((list, tag))) => {
                self.drive(|l| {
                    l.revoked = list.clone();
                    l.revoked_tag = tag;
                    l.room.on_revoked(&list)
                })
                .await;
            }
            Ok(None) => {}
            Err(e) => worker::console_error!("revocation list: {e}"),
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
        let protocol = headers.get(PROTOCOL_HEADER)?;
        if let Err(e) = self.ensure_live(Some(&space)).await {
            worker::console_error!("room unavailable: {e}");
            return json_error(ErrorCode::Unavailable, "the sync server is unavailable");
        }
        // The first socket of a rebuilt room fetches the list; later ones
        // use the room's copy (refreshed every tick).
        if self.with_room(|l| l.revoked_tag.is_none()).unwrap_or(false) {
            self.refresh_revocations().await;
        }
        if self
            .with_room(|l| l.revoked.revokes(&claims))
            .unwrap_or(false)
        {
            return json_error(ErrorCode::TokenRevoked, "the token has been revoked");
        }
        let pair = WebSocketPair::new()?;
        let server = pair.server;
        self.state.accept_web_socket(&server);
        let conn = self
            .with_room(|l| {
                let c = l.next_conn;
                l.next_conn += 1;
                c
            })
            .unwrap_or(0);
        let attachment = Attachment {
            conn,
            space,
            claims: claims.clone(),
            hello: None,
            root: None,
        };
        attachment.store(&server)?;
        let _ = self.with_room(|l| {
            l.sockets.insert(
                conn,
                Socket {
                    ws: server.clone(),
                    attachment,
                },
            )
        });
        self.drive(|l| l.room.on_connect(conn, claims)).await;
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

    async fn notice(&self, mut req: Request) -> Result<Response> {
        let space = req.headers().get(SPACE_HEADER)?.unwrap_or_default();
        let notice: NotifyBody = match req.json().await {
            Ok(n) => n,
            Err(e) => return json_error(ErrorCode::BadRequest, &e.to_string()),
        };
        // Only a room with sockets cares; an idle object stays idle.
        if self.state.get_websockets().is_empty() {
            return Response::ok("idle");
        }
        if let Err(e) = self.ensure_live(Some(&space)).await {
            worker::console_error!("room unavailable: {e}");
            return json_error(ErrorCode::Unavailable, "the sync server is unavailable");
        }
        self.drive(|l| l.room.on_head(notice.head_seq)).await;
        Response::ok("ok")
    }

    async fn socket_gone(&self, ws: &WebSocket) -> Result<()> {
        if let Some(att) = Self::conn_of(ws) {
            self.ensure_live(Some(&att.space)).await?;
            self.drive(|l| {
                l.sockets.remove(&att.conn);
                l.room.on_close(att.conn)
            })
            .await;
        }
        Ok(())
    }

    fn conn_of(ws: &WebSocket) -> Option<Attachment> {
        Attachment::load(ws)
    }
}

impl DurableObject for RoomObject {
    fn new(state: State, env: Env) -> Self {
        RoomObject {
            state,
            env,
            live: RefCell::new(None),
        }
    }

    async fn fetch(&self, req: Request) -> Result<Response> {
        if req.url()?.path().ends_with("/notify") {
            return self.notice(req).await;
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
        if att.claims.role != Role::Service {
            let now_s = now_ms() as f64 / 1000.0;
            let key = att.claims.rate_key();
            if let Some(Err(wait)) = self.with_room(|l| l.frames.take(&key, now_s)) {
                let ms = (wait * 1000.0) as u64 + 1;
                let refusal = ServerMsg::Error {
                    code: ErrorCode::RateLimited,
                    message: "too many frames for this token".into(),
                    batch: None,
                    retry_after_ms: Some(ms),
                };
                let _ = ws.send_with_str(refusal.encode());
                let _ = ws.close(
                    ErrorCode::RateLimited.close_code(),
                    Some(format!("retry after {ms} ms")),
                );
                return self.socket_gone(&ws).await;
            }
        }
        let text = match message {
            WebSocketIncomingMessage::String(t) => t,
            // Not a JSON text frame: the room refuses it.
            WebSocketIncomingMessage::Binary(_) => "binary frame".to_string(),
        };
        self.drive(|l| {
            l.sockets.entry(att.conn).or_insert_with(|| Socket {
                ws: ws.clone(),
                attachment: att.clone(),
            });
            l.room.on_message(att.conn, &text)
        })
        .await;
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
        let sockets = self.state.get_websockets();
        if sockets.is_empty() {
            return Response::ok("idle");
        }
        let space = sockets.iter().find_map(Self::conn_of).map(|a| a.space);
        self.ensure_live(space.as_deref()).await?;
        self.drive(|l| l.room.on_tick(now_ms() / 1000, LEEWAY_S))
            .await;
        self.refresh_revocations().await;
        let _ = self.with_room(|l| l.upstream.close_if_idle());
        let _ = self.state.storage().set_alarm(TICK_MS).await;
        Response::ok("tick")
    }
}
