//! The Worker: routes, and the token check before anything is upgraded or forwarded to a Durable Object.

use arbor_shared::ErrorCode;
use arbor_shared::auth::{self, Need, TokenSource, WS_PROTOCOL};
use arbor_shared::keys::Revocations;
use worker::{Env, Headers, Method, Request, RequestInit, Response, Result, event};

use crate::{CLAIMS_HEADER, LEEWAY_S, PROTOCOL_HEADER, SPACE_HEADER, json_error, keys, now_ms};

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
            if !arbor_shared::id::valid_space_name(space) {
                return json_error(ErrorCode::BadRequest, "bad thoughtspace name");
            }
            let notify = *route == "notify";
            if notify && req.method() != Method::Post {
                return json_error(ErrorCode::MethodNotAllowed, "POST only");
            }
            if !notify
                && req
                    .headers()
                    .get("upgrade")?
                    .is_none_or(|u| !u.eq_ignore_ascii_case("websocket"))
            {
                return json_error(
                    ErrorCode::UpgradeRequired,
                    "a WebSocket upgrade is required",
                );
            }
            let keys = match keys(&env) {
                Ok(k) => k,
                Err(e) => {
                    worker::console_error!("{e}");
                    return json_error(ErrorCode::Internal, "the Worker is not configured");
                }
            };
            let headers = req.headers();
            let access_token = url
                .query_pairs()
                .find(|(k, _)| k == "access_token")
                .map(|(_, v)| v.to_string());
            let authorization = headers.get("authorization")?;
            let protocol = headers.get("sec-websocket-protocol")?;
            let found = auth::request_token(
                authorization.as_deref(),
                protocol.as_deref(),
                access_token.as_deref(),
            );
            let need = if notify { Need::Service } else { Need::Read };
            let claims = match auth::authorize(
                found.map(|(t, _)| t),
                &keys,
                // Revocation is checked by the object, with the sync
                // server's list.
                &Revocations::default(),
                now_ms() / 1000,
                LEEWAY_S,
                space,
                need,
            ) {
                Ok(c) => c,
                Err(refusal) => return json_error(refusal.code, &refusal.message),
            };
            let forwarded = Headers::new();
            for (k, v) in headers.entries() {
                forwarded.set(&k, &v)?;
            }
            forwarded.set(
                CLAIMS_HEADER,
                &serde_json::to_string(&claims)
                    .map_err(|e| worker::Error::RustError(e.to_string()))?,
            )?;
            forwarded.set(SPACE_HEADER, space)?;
            if found.is_some_and(|(_, source)| source == TokenSource::Subprotocol) {
                forwarded.set(PROTOCOL_HEADER, WS_PROTOCOL)?;
            }
            let mut init = RequestInit::new();
            init.with_method(req.method()).with_headers(forwarded);
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
        _ => json_error(ErrorCode::NotFound, "no such route"),
    }
}
