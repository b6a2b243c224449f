//! Arbor's realtime tier on Cloudflare: a Worker that checks tokens and
//! routes `/v1/spaces/{space}/ws` to the Durable Object named by the
//! thoughtspace, and the object, which drives the shared room state machine
//! ([`arbor_shared::room::Room`]) over hibernating WebSockets and persists
//! through the sync server's HTTP API.
//!
//! # Layout
//!
//! - `routes.rs` (`fetch`, the Worker): token check before any upgrade
//!   (the shared `auth::request_token` and `auth::authorize`), typed JSON
//!   refusals, then the object; `POST .../notify` (service token) forwards
//!   the sync server's commit notices.
//! - `object.rs` ([`RoomObject`], the Durable Object): the hibernation API's
//!   events (accept, message, close, alarm, notice) turned into room calls;
//!   each socket's claims and cursor live in its attachment, and the room
//!   is rebuilt from them after hibernation.
//! - `driver.rs`: carries out the room's actions: frames to sockets, one
//!   group commit at a time, one page of ops at a time.
//! - `upstream.rs`: the sync server as the object sees it: group ingest,
//!   pages of committed ops, its short-lived service token.
//!
//! Configuration: `ARBOR_SERVER_URL` (var) and `ARBOR_JWT_SECRET` (secret:
//! `wrangler secret put`, or `.dev.vars` locally). The object mints its own
//! short-lived service tokens for the sync server with the same secret.

mod driver;
mod object;
mod routes;
mod upstream;

pub use object::RoomObject;

use arbor_shared::auth::Hs256Key;
use worker::{Date, Env, Response, Result};

/// Token clock leeway, seconds.
const LEEWAY_S: u64 = 60;
/// Header carrying the verified claims from the Worker to the object.
const CLAIMS_HEADER: &str = "x-arbor-claims";
/// Header carrying the thoughtspace name to the object.
const SPACE_HEADER: &str = "x-arbor-space";
/// Header telling the object to select the token subprotocol.
const PROTOCOL_HEADER: &str = "x-arbor-protocol";

fn now_ms() -> u64 {
    Date::now().as_millis()
}

/// A typed JSON refusal, with the status of its code's table entry.
fn json_error(code: arbor_shared::ErrorCode, message: &str) -> Result<Response> {
    let body = arbor_shared::error::ErrorBody::new(code, message);
    Ok(Response::from_json(&body)?.with_status(code.http_status()))
}

fn key(env: &Env) -> std::result::Result<Hs256Key, String> {
    let secret = env
        .secret("ARBOR_JWT_SECRET")
        .map_err(|_| "ARBOR_JWT_SECRET is not set".to_string())?
        .to_string();
    Hs256Key::new(secret.trim().as_bytes()).map_err(|e| e.to_string())
}
