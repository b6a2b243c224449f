//! The sync server as the Durable Object sees it: group commits over a kept-open upstream socket (HTTP group ingest as the fallback), pages of committed ops, and the object's short-lived service token.

use arbor_shared::ErrorCode;
use arbor_shared::auth::{self, Claims, Hs256Key, Role};
use arbor_shared::error::ErrorBody;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use arbor_shared::http::{
    GroupIngestAnswer, GroupIngestBody, GroupPush, OpsBody, Origin, PushResult, UpstreamMsg,
};
use arbor_shared::protocol::SeqOp;
use arbor_shared::room::{IngestResult, Push};
use futures_util::StreamExt as _;
use worker::{
    Delay, Env, Fetch, Headers, Method, Request, RequestInit, Response, Result, WebSocket,
    WebsocketEvent,
};

use arbor_shared::keys::Revocations;

use crate::{key, now_ms};

/// How long a group commit may wait for its answer on the upstream socket
/// before the link counts as dead (the group then fails `unavailable`:
/// nothing is reported committed that was not acknowledged).
const COMMIT_TIMEOUT: Duration = Duration::from_secs(30);

/// The sync server of one thoughtspace. Clones share the upstream socket.
#[derive(Clone)]
pub(crate) struct Upstream {
    base: String,
    key: Hs256Key,
    space: String,
    /// The kept-open upstream socket, once opened (`None`: closed, or
    /// never opened).
    link: Rc<RefCell<Option<WebSocket>>>,
    /// The server has no upstream socket (an older server): HTTP only.
    no_link: Rc<Cell<bool>>,
    /// Ids of upstream commits.
    next_id: Rc<Cell<u64>>,
    /// A commit went over the link since [`Upstream::close_if_idle`] last
    /// looked.
    used: Rc<Cell<bool>>,
}

impl Upstream {
    /// From the object's configuration (`ARBOR_SERVER_URL`, the secret).
    pub(crate) fn new(env: &Env, space: &str) -> Result<Upstream> {
        Ok(Upstream {
            base: env
                .var("ARBOR_SERVER_URL")?
                .to_string()
                .trim_end_matches('/')
                .to_string(),
            key: key(env).map_err(worker::Error::RustError)?,
            space: space.to_string(),
            link: Rc::default(),
            no_link: Rc::default(),
            next_id: Rc::new(Cell::new(1)),
            used: Rc::default(),
        })
    }

    /// Closes the upstream socket if no commit used it since the last call
    /// (the object's alarm calls this: an open outgoing socket keeps the
    /// object from hibernating, so a quiet room lets it go).
    pub(crate) fn close_if_idle(&self) {
        if !self.used.replace(false)
            && let Some(ws) = self.link.borrow_mut().take()
        {
            let _ = ws.close(Some(1000), Some("idle"));
        }
    }

    /// The upstream socket, opened if needed; `None` if the server has none.
    async fn link(&self) -> Result<Option<WebSocket>> {
        if let Some(ws) = self.link.borrow().as_ref() {
            return Ok(Some(ws.clone()));
        }
        if self.no_link.get() {
            return Ok(None);
        }
        let headers = Headers::new();
        headers.set("authorization", &format!("Bearer {}", self.service_token()))?;
        headers.set("upgrade", "websocket")?;
        let mut init = RequestInit::new();
        init.with_method(Method::Get).with_headers(headers);
        let url = format!("{}/v1/spaces/{}/upstream", self.base, self.space);
        let mut response = Fetch::Request(Request::new_with_init(&url, &init)?)
            .send()
            .await?;
        let status = response.status_code();
        if status != 101 {
            let code = response
                .json::<arbor_shared::error::ErrorBody>()
                .await
                .map(|b| b.error.code);
            if matches!(code, Ok(ErrorCode::NotFound)) {
                // An older sync server: every group goes over HTTP.
                self.no_link.set(true);
                return Ok(None);
            }
            return Err(worker::Error::RustError(format!(
                "the upstream socket was refused: {status}"
            )));
        }
        let ws = response
            .websocket()
            .ok_or_else(|| worker::Error::RustError("101 without a socket".into()))?;
        ws.accept()?;
        *self.link.borrow_mut() = Some(ws.clone());
        Ok(Some(ws))
    }

    /// One group over the upstream socket: its results, or an error when the
    /// link failed (the group's outcome is then unknown).
    async fn commit_over(
        &self,
        ws: &WebSocket,
        pushes: Vec<GroupPush>,
    ) -> Result<Vec<IngestResult>> {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        self.used.set(true);
        let frame = serde_json::to_string(&UpstreamMsg::Commit { id, pushes })?;
        // Listen before sending: the answer cannot come before it.
        let mut events = ws.events()?;
        ws.send_with_str(frame)?;
        let answer = async {
            while let Some(event) = events.next().await {
                match event? {
                    WebsocketEvent::Message(m) => {
                        let Some(text) = m.text() else { continue };
                        match serde_json::from_str::<UpstreamMsg>(&text)? {
                            UpstreamMsg::Committed { id: got, results } if got == id => {
                                return Ok(results.into_iter().map(ingest_result).collect());
                            }
                            UpstreamMsg::Refused { id: got, error } if got == id || got == 0 => {
                                return Ok(vec![IngestResult::Failed {
                                    code: error.code,
                                    message: error.message,
                                }]);
                            }
                            _ => {}
                        }
                    }
                    WebsocketEvent::Close(_) => break,
                }
            }
            Err(worker::Error::RustError(
                "the upstream socket closed".into(),
            ))
        };
        let timeout = Delay::from(COMMIT_TIMEOUT);
        futures_util::pin_mut!(answer);
        match futures_util::future::select(answer, timeout).await {
            futures_util::future::Either::Left((result, _)) => result,
            futures_util::future::Either::Right(((), _)) => Err(worker::Error::RustError(
                "no answer on the upstream socket".into(),
            )),
        }
    }

    /// A service token for this space, valid two minutes.
    fn service_token(&self) -> String {
        let now = now_ms() / 1000;
        auth::mint(
            &Claims::new("arbor-realtime", &self.space, Role::Service, now, 120),
            &self.key,
        )
    }

    async fn send(
        &self,
        method: Method,
        path_query: &str,
        body: Option<String>,
    ) -> Result<Response> {
        let headers = Headers::new();
        headers.set("authorization", &format!("Bearer {}", self.service_token()))?;
        headers.set("content-type", "application/json")?;
        let mut init = RequestInit::new();
        init.with_method(method).with_headers(headers);
        if let Some(b) = body {
            init.with_body(Some(b.into()));
        }
        let url = format!("{}/v1/spaces/{}{path_query}", self.base, self.space);
        Fetch::Request(Request::new_with_init(&url, &init)?)
            .send()
            .await
    }

    /// The sync server's revocation list, unless it is still the one
    /// tagged `etag` (`Ok(None)`): the list and its new tag.
    pub(crate) async fn revocations(
        &self,
        etag: Option<&str>,
    ) -> Result<Option<(Revocations, Option<String>)>> {
        let headers = Headers::new();
        headers.set("authorization", &format!("Bearer {}", self.service_token()))?;
        if let Some(tag) = etag {
            headers.set("if-none-match", tag)?;
        }
        let mut init = RequestInit::new();
        init.with_method(Method::Get).with_headers(headers);
        let url = format!("{}/v1/spaces/{}/revocations", self.base, self.space);
        let mut r = Fetch::Request(Request::new_with_init(&url, &init)?)
            .send()
            .await?;
        match r.status_code() {
            304 => Ok(None),
            200 => {
                let tag = r.headers().get("etag")?;
                let text = r.text().await?;
                let list = Revocations::parse(text.as_bytes())
                    .map_err(|e| worker::Error::RustError(e.to_string()))?;
                Ok(Some((list, tag)))
            }
            status => Err(worker::Error::RustError(format!(
                "the revocation list answered {status}"
            ))),
        }
    }

    /// One page of committed ops, `after < seq <= upto` (at most `limit`),
    /// and the space's head.
    pub(crate) async fn ops_page(
        &self,
        after: u64,
        upto: u64,
        limit: u32,
    ) -> Result<(Vec<SeqOp>, u64)> {
        let mut r = self
            .send(
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
        let answer: OpsBody = r.json().await?;
        let ops = answer
            .ops
            .into_iter()
            .filter(|o| o.seq <= upto)
            .map(|o| SeqOp::new(o.seq, o.op).by(o.author))
            .collect();
        Ok((ops, answer.head_seq.unwrap_or(0)))
    }

    /// What changed in the subtrees of `roots` since seq `after` (`POST
    /// .../subtree/changes`), in the room's form.
    pub(crate) async fn subtree_changes(
        &self,
        after: u64,
        roots: &std::collections::BTreeSet<arbor_shared::NodeId>,
    ) -> Result<std::collections::BTreeMap<arbor_shared::NodeId, arbor_shared::room::SubtreeAnswer>>
    {
        let body = serde_json::to_string(&arbor_shared::http::SubtreeChangesBody {
            after,
            roots: roots.iter().copied().collect(),
        })
        .map_err(|e| worker::Error::RustError(e.to_string()))?;
        let mut r = self
            .send(Method::Post, "/subtree/changes", Some(body))
            .await?;
        if r.status_code() != 200 {
            return Err(worker::Error::RustError(format!(
                "subtree changes answered {}",
                r.status_code()
            )));
        }
        let answer: arbor_shared::http::SubtreeChangesAnswer = r.json().await?;
        Ok(answer.into_room())
    }

    /// The space's head seq and the lowest cursor catch-up can serve.
    pub(crate) async fn head(&self) -> Result<(u64, Option<u64>)> {
        // A page above any seq: no ops, just the head.
        let mut r = self
            .send(
                Method::Get,
                &format!("/ops?after={}&limit=1", u64::MAX / 2),
                None,
            )
            .await?;
        if r.status_code() != 200 {
            return Err(worker::Error::RustError(format!(
                "catch-up answered {}",
                r.status_code()
            )));
        }
        let answer: OpsBody = r.json().await?;
        Ok((answer.head_seq.unwrap_or(0), answer.min_cursor))
    }

    /// Commits a group of pushes: one frame on the upstream socket, or one
    /// `POST .../ops/group` when there is no socket. One result per push, in
    /// push order. A failed commit fails every push with `unavailable`
    /// (nothing is reported committed that the server did not answer; a
    /// push that did commit is a duplicate when its client pushes it again).
    pub(crate) async fn commit_group(&self, pushes: Vec<Push>) -> Vec<IngestResult> {
        let n = pushes.len();
        let pushes: Vec<GroupPush> = pushes
            .into_iter()
            .map(|p| GroupPush {
                author: p.author,
                sub: p.sub,
                root: p.root,
                ops: p.ops,
            })
            .collect();
        match self.link().await {
            Ok(Some(ws)) => match self.commit_over(&ws, pushes).await {
                Ok(results) if results.len() == 1 && n > 1 => {
                    // The whole group was refused: the same for each push.
                    (0..n).map(|_| results[0].clone()).collect()
                }
                Ok(results) => results,
                Err(e) => {
                    worker::console_error!("upstream commit failed: {e}");
                    if let Some(ws) = self.link.borrow_mut().take() {
                        let _ = ws.close(Some(1011), Some("failed"));
                    }
                    (0..n)
                        .map(|_| IngestResult::Failed {
                            code: ErrorCode::Unavailable,
                            message: "the sync server is unavailable".into(),
                        })
                        .collect()
                }
            },
            Ok(None) => self.commit_over_http(n, pushes).await,
            Err(e) => {
                worker::console_error!("upstream socket: {e}");
                self.commit_over_http(n, pushes).await
            }
        }
    }

    /// A group as one `POST .../ops/group`.
    async fn commit_over_http(&self, n: usize, pushes: Vec<GroupPush>) -> Vec<IngestResult> {
        let failed_all = |code: ErrorCode, message: String| {
            (0..n)
                .map(|_| IngestResult::Failed {
                    code,
                    message: message.clone(),
                })
                .collect::<Vec<_>>()
        };
        let body = GroupIngestBody { pushes };
        let body = match serde_json::to_string(&body) {
            Ok(b) => b,
            Err(e) => return failed_all(ErrorCode::Internal, e.to_string()),
        };
        let mut r = match self.send(Method::Post, "/ops/group", Some(body)).await {
            Ok(r) => r,
            Err(e) => {
                worker::console_error!("group ingest failed: {e}");
                return failed_all(
                    ErrorCode::Unavailable,
                    "the sync server is unavailable".into(),
                );
            }
        };
        if r.status_code() != 200 {
            return match r.json::<ErrorBody>().await {
                Ok(b) => failed_all(b.error.code, b.error.message),
                Err(_) => failed_all(
                    ErrorCode::Unavailable,
                    format!("the sync server answered {}", r.status_code()),
                ),
            };
        }
        let answer: GroupIngestAnswer = match r.json().await {
            Ok(a) => a,
            Err(e) => {
                worker::console_error!("group ingest answer: {e}");
                return failed_all(ErrorCode::Unavailable, "unreadable answer".into());
            }
        };
        let mut results: Vec<IngestResult> =
            answer.results.into_iter().map(ingest_result).collect();
        results.truncate(n);
        results
    }
}

/// A push's result as the room takes it (duplicates left out: they were
/// relayed when they committed).
fn ingest_result(r: PushResult) -> IngestResult {
    match (r.ops, r.error) {
        (_, Some(e)) => IngestResult::Failed {
            code: e.code,
            message: e.message,
        },
        (Some(ops), None) => IngestResult::Committed(
            ops.into_iter()
                .filter(|o| o.origin != Origin::Duplicate)
                .map(|o| SeqOp::new(o.seq, o.op).by(o.author))
                .collect(),
        ),
        (None, None) => IngestResult::Failed {
            code: ErrorCode::Internal,
            message: "empty result".into(),
        },
    }
}
