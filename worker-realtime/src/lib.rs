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
//! Configuration (the root `wrangler.toml`, docs/DEPLOY.md "The edge tier"):
//! `ARBOR_SERVER_URL` (var) and `ARBOR_JWT_SECRET` (secret: `wrangler
//! secret put`, or `.dev.vars` locally), and the optional key settings of
//! [`keys`]. The object mints its own short-lived service tokens for the
//! sync server with the same secret.

mod driver;
mod object;
mod routes;
mod upstream;

pub use object::RoomObject;

use arbor_shared::auth::Hs256Key;
use arbor_shared::keys::{Jwks, Keys};
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
    let secret = env_text(env, "ARBOR_JWT_SECRET").ok_or("ARBOR_JWT_SECRET is not set")?;
    Hs256Key::new(secret.trim().as_bytes()).map_err(|e| e.to_string())
}

/// A secret, else a plain variable, of this name (not empty).
fn env_text(env: &Env, name: &str) -> Option<String> {
    env.secret(name)
        .map(|s| s.to_string())
        .or_else(|_| env.var(name).map(|v| v.to_string()))
        .ok()
        .filter(|s| !s.trim().is_empty())
}

/// The keys tokens are checked with, as the sync server's flags give them:
/// `ARBOR_JWT_SECRET` (and `ARBOR_JWT_PREVIOUS_SECRET` during a rotation),
/// `ARBOR_JWKS` (a JWKS document), `ARBOR_JWT_ISSUER`,
/// `ARBOR_JWT_AUDIENCE`, `ARBOR_JWT_CLAIMS_PREFIX`. (The revocation list
/// is the sync server's: each object fetches it, `object.rs`.)
fn keys(env: &Env) -> std::result::Result<Keys, String> {
    let mut keys = Keys::hs256(key(env)?);
    if let Some(previous) = env_text(env, "ARBOR_JWT_PREVIOUS_SECRET") {
        let previous = Hs256Key::new(previous.trim().as_bytes()).map_err(|e| e.to_string())?;
        keys = keys.with_previous(previous);
    }
    if let Some(jwks) = env_text(env, "ARBOR_JWKS") {
        let jwks = Jwks::parse(jwks.as_bytes()).map_err(|e| format!("ARBOR_JWKS: {e}"))?;
        keys = keys.with_jwks(&jwks);
    }
    keys.issuer = env_text(env, "ARBOR_JWT_ISSUER");
    keys.audience = env_text(env, "ARBOR_JWT_AUDIENCE");
    keys.claims_prefix = env_text(env, "ARBOR_JWT_CLAIMS_PREFIX");
    Ok(keys)
}
