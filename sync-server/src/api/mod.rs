//! The HTTP API (`/v1/...`, `/livez`, `/readyz`): the route table and the state every handler shares.
//!
//! Error body: `{"error": {"code", "message"}}` with a code of
//! [`arbor_shared::ErrorCode`] and the HTTP status the code's table entry
//! names (`docs/PROTOCOL.md`).
//!
//! # Layout
//!
//! - `mod.rs`: [`AppState`], [`router`], [`admin_router`], CORS.
//! - `error.rs`: [`ApiError`] and what a database error becomes on the wire.
//! - `auth.rs`: the bearer token of a request, checked for a space and role.
//! - `health.rs`: `/livez`, `/readyz`.
//! - `spaces.rs`: create, fork.
//! - `ops.rs`: ingest, group ingest (the Durable Object's), catch-up.
//! - `children.rs`: the children endpoint.
//! - `search.rs`: full-text search.
//! - `values.rs`: lookups by value (a value's holders, children by value).
//! - `history.rs`: a node's history, a subtree at a seq.
//! - `websocket.rs`: the realtime upgrade.
//! - `upstream.rs`: the Durable Object's upstream socket (group commits).
//! - `snapshots.rs`: snapshot, subtree snapshot, export, import.
//! - `request_metrics.rs`: request counts and times by route template.
//! - `revocations.rs`: the revocation list for the Durable Objects.
//! - `subtree.rs`: subtree changes for the Durable Object's subtree sockets.

mod auth;
mod children;
mod error;
mod health;
mod history;
mod images;
mod ops;
mod request_metrics;
mod revocations;
mod search;
mod snapshots;
mod spaces;
mod subtree;
mod upstream;
mod values;
mod websocket;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::header;
use axum::routing::{get, post, put};

use crate::db::Db;

pub use arbor_shared::http::{
    ChildJson, ChildrenBody, HolderJson, HoldersBody, RegisterJson, SearchBody, SearchHitJson,
};
pub use arbor_shared::http::{CommittedJson, GroupIngestBody, IngestBody, OpsBody};
pub use auth::token_key;
pub use children::ChildrenQuery;
pub use error::{ApiError, db_refusal};
pub use ops::{CatchUpQuery, IngestQuery};

/// Shared by every request.
#[derive(Debug)]
pub struct AppState {
    /// The database (the primary: writes and everything realtime).
    pub db: Db,
    /// Where reads that may lag go: hot standbys within their bound, else
    /// the primary.
    pub readers: Arc<crate::db::Readers>,
    /// The keys tokens are checked with, and the revocation list.
    pub keys: Arc<crate::keys::KeyStore>,
    /// Token clock leeway, seconds.
    pub leeway_s: u64,
    /// Set once shutdown starts: `/readyz` answers 503 from then on.
    pub draining: AtomicBool,
    /// The realtime rooms.
    pub rooms: Arc<crate::realtime::Rooms>,
    /// Largest import file, bytes.
    pub max_import_bytes: u64,
    /// Spaces one tenant may create (0: no limit).
    pub max_spaces_per_tenant: u64,
    /// Forwards commit notices to the Worker (`--notify-url`), if set.
    pub forwarder: Option<crate::notify::Forwarder>,
    /// The budget of long streams (snapshots, exports, imports).
    pub streams: crate::limits::StreamBudget,
    /// HTTP requests per token.
    pub requests: crate::limits::RateLimiter,
    /// How long a stream may stall before it is dropped.
    pub stall_timeout: std::time::Duration,
    /// The replica image cache (`None`: no images; `--image-dir`).
    pub images: Option<Arc<crate::image::Images>>,
}

/// The admin routes: `/metrics` (Prometheus text), `/livez`, `/readyz`.
pub fn admin_router(
    state: Arc<AppState>,
    metrics: Option<&'static metrics_exporter_prometheus::PrometheusHandle>,
) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(move || async move {
                (
                    [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                    metrics.map(|h| h.render()).unwrap_or_default(),
                )
            }),
        )
        .route("/livez", get(health::livez))
        .route("/readyz", get(health::readyz))
        .with_state(state)
}

/// `router` answering only requests whose `Host` (port stripped) is one of
/// `hosts`; others get 421 `bad_host`. Empty `hosts`: every request.
pub fn only_hosts(router: Router, hosts: &[String]) -> Router {
    if hosts.is_empty() {
        return router;
    }
    let hosts: Arc<Vec<String>> = Arc::new(hosts.iter().map(|h| h.to_ascii_lowercase()).collect());
    router.layer(axum::middleware::from_fn(
        move |req: axum::extract::Request, next: axum::middleware::Next| {
            let allowed = req
                .headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(host_name)
                .is_some_and(|h| hosts.contains(&h));
            async move {
                if allowed {
                    next.run(req).await
                } else {
                    axum::response::IntoResponse::into_response(ApiError::new(
                        arbor_shared::ErrorCode::BadHost,
                        "this server does not answer to that host name",
                    ))
                }
            }
        },
    ))
}

/// A `Host` header's name, lowercase, without its port (`[::1]:8080` ->
/// `[::1]`, `localhost:8080` -> `localhost`).
fn host_name(host: &str) -> String {
    let host = host.trim().to_ascii_lowercase();
    if host.starts_with('[') {
        return host
            .split_once(']')
            .map_or(host.clone(), |(h, _)| format!("{h}]"));
    }
    host.rsplit_once(':').map_or(host.clone(), |(h, port)| {
        if port.bytes().all(|b| b.is_ascii_digit()) {
            h.to_string()
        } else {
            host.clone()
        }
    })
}

fn cors(origins: &[String]) -> Option<tower_http::cors::CorsLayer> {
    use tower_http::cors::{AllowOrigin, CorsLayer};
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| o.parse().ok()))
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([
                axum::http::Method::GET,
                axum::http::Method::POST,
                axum::http::Method::PUT,
            ])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE]),
    )
}

/// The routes, with `state`, a body limit and CORS for `cors_origins`.
pub fn router(state: Arc<AppState>, max_body_bytes: usize, cors_origins: &[String]) -> Router {
    let router = api_routes(state, max_body_bytes);
    match cors(cors_origins) {
        Some(layer) => router.layer(layer),
        None => router,
    }
}

fn api_routes(state: Arc<AppState>, max_body_bytes: usize) -> Router {
    Router::new()
        .route("/livez", get(health::livez))
        .route("/readyz", get(health::readyz))
        .route("/v1/spaces/{space}", put(spaces::create_space))
        .route(
            "/v1/spaces/{space}/ops",
            post(ops::ingest).get(ops::catch_up),
        )
        .route("/v1/spaces/{space}/ops/group", post(ops::group_ingest))
        .route(
            "/v1/spaces/{space}/nodes/{node}/children",
            get(children::children),
        )
        .route(
            "/v1/spaces/{space}/nodes/{node}/children/by-value",
            get(values::children_by_value),
        )
        .route("/v1/spaces/{space}/values", get(values::holders))
        .route("/v1/spaces/{space}/search", get(search::search))
        .route(
            "/v1/spaces/{space}/nodes/{node}/history",
            get(history::node_history),
        )
        .route("/v1/spaces/{space}/ws", get(websocket::websocket))
        .route("/v1/spaces/{space}/upstream", get(upstream::upstream))
        .route(
            "/v1/spaces/{space}/revocations",
            get(revocations::revocations),
        )
        .route("/v1/spaces/{space}/snapshot", get(snapshots::snapshot))
        .route("/v1/spaces/{space}/image", get(images::image))
        .route(
            "/v1/spaces/{space}/subtree/{node}/image",
            get(images::subtree_image),
        )
        .route(
            "/v1/spaces/{space}/subtree/{node}/snapshot",
            get(snapshots::subtree_snapshot),
        )
        .route(
            "/v1/spaces/{space}/subtree/changes",
            post(subtree::subtree_changes),
        )
        .route(
            "/v1/spaces/{space}/subtree/{node}/at",
            get(history::subtree_at),
        )
        .route("/v1/spaces/{space}/fork", post(spaces::fork))
        .route("/v1/spaces/{space}/export", get(snapshots::export))
        // Imports stream into Postgres under their own limit.
        .route(
            "/v1/spaces/{space}/import",
            post(snapshots::import).layer(DefaultBodyLimit::disable()),
        )
        // Matched routes only: the fallbacks count themselves.
        .route_layer(axum::middleware::from_fn(request_metrics::record))
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(state)
}
