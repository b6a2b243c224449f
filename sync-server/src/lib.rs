//! Arbor's sync server: Postgres as the source of truth, behind an HTTP API.
//!
//! [`run`] serves on a listener until a shutdown future resolves, so tests
//! bind port 0 and stop it cleanly; `src/bin/arbor-server.rs` is the thin
//! binary (flags, logs, signals, token minting).
//!
//! # Layout
//!
//! - [`db`]: the connection pool, the embedded migration runner, the typed
//!   call of the `apply_ops` PL/pgSQL function (the CRDT apply), catch-up by
//!   seq and ordered children pages. The SQL lives in `migrations/` at the
//!   repository root; its contract is `migrations/README.md`.
//! - [`api`]: the HTTP routes (`/v1/...`, `/livez`, `/readyz`), authorization
//!   by token role, typed JSON errors.
//! - [`realtime`]: the native WebSocket endpoint: one actor per
//!   thoughtspace driving the shared room state machine.
//! - [`snapshot`]: whole-space snapshots streamed from `COPY ... (FORMAT
//!   binary)` with backpressure.
//! - [`image`]: replica images, the cache of each space's finished client
//!   replica file (built in the background, sent as a file).
//! - [`notify`]: commit notices (`LISTEN arbor_head`) so several server
//!   processes relay each other's ops.
//! - [`import`]: a snapshot file streamed into a new thoughtspace.
//! - [`keys`]: the token keys (HS256 secrets, a JWKS file or URL) and the
//!   revocation list, reloaded while the server runs.
//! - [`telemetry`]: the log subscriber and the optional OTLP trace export.
//! - [`horizon`]: the horizon policy (stamps older than a configured age
//!   are refused as stale).
//! - [`backup`]: backups of changed spaces to an S3-compatible bucket
//!   (the `backup` command and `serve`'s schedule), and restore from it.
//! - [`limits`]: what one client may take: the stream budget, caps per
//!   token and address, rate limits, the stall guard.
//! - [`listener`]: the HTTP accept loop (header deadline, per-address cap,
//!   graceful drain).
//! - [`metrics`]: Prometheus metrics for the admin listener.
//! - [`config`]: flags, environment variables and secrets.

#![forbid(unsafe_code)]

pub mod api;
pub mod backup;
pub mod config;
pub mod db;
pub mod horizon;
pub mod image;
pub mod import;
pub mod keys;
pub mod limits;
pub mod listener;
pub mod metrics;
pub mod notify;
pub mod realtime;
pub mod snapshot;
pub mod telemetry;

use std::future::Future;
use std::sync::Arc;

use std::sync::atomic::Ordering;

pub use config::{Config, ConfigError, ServeArgs};

/// Why the server stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The database could not be opened or migrated.
    #[error(transparent)]
    Db(#[from] db::DbError),
    /// The listener failed.
    #[error("serving: {0}")]
    Io(#[from] std::io::Error),
    /// A JWKS or revocation file is missing or bad.
    #[error("keys: {0}")]
    Keys(String),
    /// The image folder cannot be created.
    #[error("images: {0}")]
    Images(String),
}

/// Serves the API on `listener` until `shutdown` resolves (no admin
/// listener). See [`serve`].
pub async fn run(
    listener: tokio::net::TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    serve(listener, None, config, shutdown).await
}

/// Serves the API on `listener`, and `/metrics`, `/livez`, `/readyz` on the
/// `admin` listener if given, until `shutdown` resolves. Then readiness
/// flips to 503 at once, sockets close with 1001, the listeners stop
/// accepting, and in-flight requests get `config.drain` to finish before the
/// server returns anyway. Opens the pool and applies migrations first.
pub async fn serve(
    listener: tokio::net::TcpListener,
    admin: Option<tokio::net::TcpListener>,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    serve_with(listener, admin, config, axum::Router::new(), shutdown).await
}

/// [`serve`] with `extra` routes merged into the API (the dev server adds
/// the demo's static files and its token endpoint).
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    admin: Option<tokio::net::TcpListener>,
    config: Config,
    extra: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let metrics = metrics::handle();
    let mut database = config.database.clone();
    config.quotas.apply_to(&mut database);
    let db = db::Db::open(database, &config.database_tls, config.db_pool).await?;
    let mut standbys = Vec::with_capacity(config.read_replicas.len());
    for (i, (standby, tls)) in config.read_replicas.iter().enumerate() {
        let mut standby = standby.clone();
        config.quotas.apply_to(&mut standby);
        standbys
            .push(db::Db::with_tls(standby, tls, config.db_pool)?.named(&format!("standby{i}")));
    }
    let readers = Arc::new(db::Readers::new(
        db.clone(),
        standbys,
        config.read_replica_max_lag,
    ));
    // One sample before serving, so that standbys already in step serve
    // the first reads.
    let mut lag_history = std::collections::VecDeque::new();
    readers.sample(&mut lag_history).await;
    let limits = config.limits.clone();
    let rooms = Arc::new(realtime::Rooms::new(
        db.clone(),
        config.token_leeway_s,
        config.socket_queue_frames,
        &limits,
    ));
    let forward = config
        .notify_url
        .clone()
        .map(|url| notify::Forwarder::start(url, config.key.clone()));
    let keys = Arc::new(
        keys::KeyStore::load(config.key.clone(), config.auth.clone())
            .await
            .map_err(|e| ServerError::Keys(e.to_string()))?,
    );
    let state = Arc::new(api::AppState {
        db,
        readers: readers.clone(),
        keys: keys.clone(),
        leeway_s: config.token_leeway_s,
        draining: false.into(),
        rooms: rooms.clone(),
        max_import_bytes: config.max_import_bytes,
        max_spaces_per_tenant: config.quotas.max_spaces_per_tenant,
        forwarder: forward.clone(),
        // At least one pooled connection is always left to short requests.
        streams: limits::StreamBudget::new(
            limits
                .max_streams
                .min(config.db_pool.saturating_sub(1).max(1)),
            limits.max_streams_per_token,
        ),
        requests: limits::RateLimiter::new(limits.requests_per_s, limits.burst_s),
        stall_timeout: limits.stall_timeout,
        images: match &config.images {
            Some(c) => Some(Arc::new(
                image::Images::new(c.clone(), readers.clone())
                    .map_err(|e| ServerError::Images(e.to_string()))?,
            )),
            None => None,
        },
    });
    let app = api::only_hosts(
        api::router(state.clone(), config.max_body_bytes, &config.cors_origins).merge(extra),
        &config.allowed_hosts,
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(notify::listen(
        config.database.clone(),
        config
            .database_tls
            .connector()
            .map_err(|e| db::DbError::Tls(e.to_string()))?,
        rooms.clone(),
        forward,
        stop_rx.clone(),
    ));
    tokio::spawn(readers.monitor(lag_history, stop_rx.clone()));
    let revoking = rooms.clone();
    tokio::spawn(keys.run(
        move |list| {
            let rooms = revoking.clone();
            async move { rooms.revoked(list).await }
        },
        stop_rx.clone(),
    ));
    if let Some(keep) = config.horizon_keep {
        tokio::spawn(horizon::run(state.db.clone(), keep, stop_rx.clone()));
    }
    if let Some(schedule) = config.backup.clone() {
        // A pool of its own (lazy, two connections: the run lock and the
        // export), so backups never take the serving pool's connections.
        let backup_db = db::Db::with_tls(config.database.clone(), &config.database_tls, 2)?;
        tokio::spawn(backup::schedule(backup_db, schedule, stop_rx.clone()));
    }
    if let Some(admin) = admin {
        let admin_app = api::only_hosts(
            api::admin_router(state.clone(), metrics),
            &config.allowed_hosts,
        );
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let served = axum::serve(admin, admin_app)
                .with_graceful_shutdown(async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await;
            if let Err(e) = served {
                tracing::warn!(error = %e, "admin listener failed");
            }
        });
    }
    let drain_state = state.clone();
    let closing = rooms.clone();
    tokio::spawn(async move {
        shutdown.await;
        drain_state.draining.store(true, Ordering::Relaxed);
        tracing::info!("shutting down: draining");
        // Sockets close with 1001 (upgraded connections are not tracked by
        // the HTTP drain).
        rooms.close_all().await;
        let _ = stop_tx.send(true);
    });
    listener::serve_http(
        listener,
        app,
        limits.header_read_timeout,
        limits.max_connections_per_addr,
        stop_rx.clone(),
        config.drain,
    )
    .await?;
    // The sockets were told 1001 when the drain began; wait (bounded) until
    // each has written its close frame, so none is merely cut at exit.
    if tokio::time::timeout(config.drain, closing.all_closed())
        .await
        .is_err()
    {
        tracing::warn!("sockets still open at the drain deadline");
    }
    drop(stop_rx);
    tracing::info!("stopped");
    Ok(())
}
