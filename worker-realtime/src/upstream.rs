//! The sync server as the Durable Object sees it: group ingest, pages of committed ops, and the object's short-lived service token.

use arbor_shared::ErrorCode;
use arbor_shared::auth::{self, Claims, Hs256Key, Role};
use arbor_shared::error::ErrorBody;
use arbor_shared::http::{GroupIngestAnswer, GroupIngestBody, GroupPush, OpsBody, Origin};
use arbor_shared::protocol::SeqOp;
use arbor_shared::room::{IngestResult, Push};
use worker::{Env, Fetch, Headers, Method, Request, RequestInit, Response, Result};

use crate::{key, now_ms};

/// The sync server of one thoughtspace.
#[derive(Clone)]
pub(crate) struct Upstream {
    base: String,
    key: Hs256Key,
    space: String,
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
        })
    }

    /// A service token for this space, valid two minutes.
    fn service_token(&self) -> String {
        let now = now_ms() / 1000;
        auth::mint(
            &Claims {
                sub: "arbor-realtime".into(),
                space: self.space.clone(),
                role: Role::Service,
                rid: None,
                exp: now + 120,
                nbf: None,
                iat: Some(now),
            },
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
            .map(|o| SeqOp {
                seq: o.seq,
                op: o.op,
            })
            .collect();
        Ok((ops, answer.head_seq.unwrap_or(0)))
    }

    /// The space's head seq.
    pub(crate) async fn head_seq(&self) -> Result<u64> {
        // A page above any seq: no ops, just the head.
        Ok(self.ops_page(u64::MAX / 2, u64::MAX / 2, 1).await?.1)
    }

    /// Commits a group of pushes in one call (`POST .../ops/group`): one
    /// result per push, in push order. A failed call fails every push
    /// (nothing of it committed: the group is one transaction).
    pub(crate) async fn commit_group(&self, pushes: Vec<Push>) -> Vec<IngestResult> {
        let n = pushes.len();
        let failed_all = |code: ErrorCode, message: String| {
            (0..n)
                .map(|_| IngestResult::Failed {
                    code,
                    message: message.clone(),
                })
                .collect::<Vec<_>>()
        };
        let body = GroupIngestBody {
            pushes: pushes
                .into_iter()
                .map(|p| GroupPush {
                    author: p.author,
                    ops: p.ops,
                })
                .collect(),
        };
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
        let mut results: Vec<IngestResult> = answer
            .results
            .into_iter()
            .map(|r| match (r.ops, r.error) {
                (_, Some(e)) => IngestResult::Failed {
                    code: e.code,
                    message: e.message,
                },
                (Some(ops), None) => IngestResult::Committed(
                    ops.into_iter()
                        .filter(|o| o.origin != Origin::Duplicate)
                        .map(|o| SeqOp {
                            seq: o.seq,
                            op: o.op,
                        })
                        .collect(),
                ),
                (None, None) => IngestResult::Failed {
                    code: ErrorCode::Internal,
                    message: "empty result".into(),
                },
            })
            .collect();
        results.truncate(n);
        results
    }
}
