//! Server configuration: flags and environment variables (clap), secrets only
//! from the environment or files.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use arbor_shared::auth::Hs256Key;

/// Command-line flags and environment variables of `arbor-server serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Postgres connection string (libpq `key=value` form or a URL). TLS:
    /// `sslmode` (`disable` to `verify-full`), `sslrootcert` (a PEM file or
    /// `system`), `sslcert` and `sslkey`, as in libpq (docs/DEPLOY.md).
    #[arg(long, env = "ARBOR_DATABASE_URL")]
    pub database_url: String,
    /// A hot standby to serve reads from (snapshots, exports, children
    /// pages, catch-up); repeatable. Same URL syntax as `--database-url`.
    #[arg(
        long = "read-replica-url",
        env = "ARBOR_READ_REPLICA_URLS",
        value_delimiter = ','
    )]
    pub read_replica_urls: Vec<String>,
    /// A standby lagging the primary by more than this is skipped.
    #[arg(long, env = "ARBOR_READ_REPLICA_MAX_LAG_MS", default_value_t = 5000)]
    pub read_replica_max_lag_ms: u64,
    /// Address of the API listener.
    #[arg(long, env = "ARBOR_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Address of the admin listener (`/metrics`, `/livez`, `/readyz`).
    #[arg(long, env = "ARBOR_ADMIN_LISTEN", default_value = "127.0.0.1:9090")]
    pub admin_listen: SocketAddr,
    /// Frames queued per realtime socket; a socket whose queue is full is
    /// closed (4002) instead of growing it.
    #[arg(long, env = "ARBOR_SOCKET_QUEUE_FRAMES", default_value_t = 256)]
    pub socket_queue_frames: usize,
    /// Origins allowed by CORS (comma-separated; `*` for any; empty: none).
    #[arg(long, env = "ARBOR_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,
    /// Most Postgres connections the server opens.
    #[arg(long, env = "ARBOR_DB_POOL", default_value_t = 16)]
    pub db_pool: usize,
    /// File holding the HS256 token secret (else the `ARBOR_JWT_SECRET`
    /// environment variable; never a flag, so it stays out of `ps`).
    #[arg(long, env = "ARBOR_JWT_SECRET_FILE")]
    pub jwt_secret_file: Option<PathBuf>,
    /// File holding the previous HS256 secret, still accepted during a
    /// rotation (else `ARBOR_JWT_PREVIOUS_SECRET`, if set).
    #[arg(long, env = "ARBOR_JWT_PREVIOUS_SECRET_FILE")]
    pub jwt_previous_secret_file: Option<PathBuf>,
    /// A JWKS file whose Ed25519 keys verify EdDSA tokens (read again when
    /// it changes).
    #[arg(long, env = "ARBOR_JWKS_FILE", conflicts_with = "jwks_url")]
    pub jwks_file: Option<PathBuf>,
    /// A JWKS URL (an identity provider's): fetched at start, every
    /// `--jwks-refresh-s`, and when a token names an unknown `kid`.
    #[arg(long, env = "ARBOR_JWKS_URL")]
    pub jwks_url: Option<String>,
    /// How often the JWKS URL is fetched again, in seconds.
    #[arg(long, env = "ARBOR_JWKS_REFRESH_S", default_value_t = 300)]
    pub jwks_refresh_s: u64,
    /// `iss` every EdDSA token must carry (the identity provider's issuer).
    #[arg(long, env = "ARBOR_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// A value every EdDSA token's `aud` must carry.
    #[arg(long, env = "ARBOR_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// Read Arbor's claims (`space`, `role`, `rid`, `tenant`) under this
    /// prefix when an EdDSA token carries them there (namespaced custom
    /// claims).
    #[arg(long, env = "ARBOR_JWT_CLAIMS_PREFIX")]
    pub jwt_claims_prefix: Option<String>,
    /// A revocation list (JSON, docs/DEPLOY.md), read again when it
    /// changes: its tokens are refused and their sockets closed.
    #[arg(long, env = "ARBOR_REVOCATION_FILE")]
    pub revocation_file: Option<PathBuf>,
    /// Clock leeway for token `exp`/`nbf`/`iat`, in seconds.
    #[arg(long, env = "ARBOR_TOKEN_LEEWAY_S", default_value_t = 60)]
    pub token_leeway_s: u64,
    /// Largest request body, in bytes.
    #[arg(long, env = "ARBOR_MAX_BODY_BYTES", default_value_t = 4 << 20)]
    pub max_body_bytes: usize,
    /// Largest snapshot file accepted by `POST .../import`, in bytes (it
    /// streams into Postgres, so this bounds disk, not memory).
    #[arg(long, env = "ARBOR_MAX_IMPORT_BYTES", default_value_t = 4 << 30)]
    pub max_import_bytes: u64,
    /// How long in-flight requests may run after a shutdown signal, in
    /// seconds.
    #[arg(long, env = "ARBOR_DRAIN_S", default_value_t = 10)]
    pub drain_s: u64,
    /// Base URL of the realtime Worker (the Durable Object tier): every
    /// commit notice is forwarded to `POST {url}/v1/spaces/{space}/notify`
    /// with a service token, so its sockets see ops committed by any path.
    #[arg(long, env = "ARBOR_NOTIFY_URL")]
    pub notify_url: Option<String>,
    /// Host names the server answers to (comma-separated, the `Host`
    /// header without its port, e.g. `sync.example.com`); others get 421
    /// `bad_host`. Empty: any.
    #[arg(long, env = "ARBOR_ALLOWED_HOSTS", value_delimiter = ',')]
    pub allowed_hosts: Vec<String>,
    /// Long streams (snapshots, exports, imports) at once, server-wide;
    /// each holds a pooled connection (default: half the pool).
    #[arg(long, env = "ARBOR_MAX_STREAMS")]
    pub max_streams: Option<usize>,
    /// Long streams one token may run at once.
    #[arg(long, env = "ARBOR_MAX_STREAMS_PER_TOKEN", default_value_t = 2)]
    pub max_streams_per_token: usize,
    /// Seconds a stream may go without its reader taking (or its writer
    /// sending) anything before it is dropped.
    #[arg(long, env = "ARBOR_STALL_TIMEOUT_S", default_value_t = 30)]
    pub stall_timeout_s: u64,
    /// Seconds to receive a request's headers (also the idle time of a
    /// kept-alive connection between requests).
    #[arg(long, env = "ARBOR_HEADER_READ_TIMEOUT_S", default_value_t = 10)]
    pub header_read_timeout_s: u64,
    /// Seconds a new realtime socket has to say `hello`.
    #[arg(long, env = "ARBOR_HELLO_TIMEOUT_S", default_value_t = 10)]
    pub hello_timeout_s: u64,
    /// Keep replica images (cold start by file, `GET .../image`) in this
    /// folder; without it the server keeps none and clients load rows.
    #[arg(long, env = "ARBOR_IMAGE_DIR")]
    pub image_dir: Option<PathBuf>,
    /// Rebuild an image once it is this many ops behind the head.
    #[arg(long, env = "ARBOR_IMAGE_REBUILD_OPS", default_value_t = 10_000)]
    pub image_rebuild_ops: u64,
    /// zstd level of images (1 to 19).
    #[arg(long, env = "ARBOR_IMAGE_ZSTD_LEVEL", default_value_t = 3,
          value_parser = clap::value_parser!(i32).range(1..=19))]
    pub image_zstd_level: i32,
    /// Seconds a realtime socket may send nothing (clients ping every 20 s).
    #[arg(long, env = "ARBOR_IDLE_TIMEOUT_S", default_value_t = 75)]
    pub idle_timeout_s: u64,
    /// Realtime sockets one token may hold at once.
    #[arg(long, env = "ARBOR_MAX_SOCKETS_PER_TOKEN", default_value_t = 16)]
    pub max_sockets_per_token: usize,
    /// TCP connections one client address may hold at once.
    #[arg(long, env = "ARBOR_MAX_CONNECTIONS_PER_ADDR", default_value_t = 512)]
    pub max_connections_per_addr: usize,
    /// Frames (pushes) per second one token may send over its sockets.
    #[arg(long, env = "ARBOR_PUSHES_PER_S", default_value_t = 100.0)]
    pub pushes_per_s: f64,
    /// HTTP requests per second one token may make.
    #[arg(long, env = "ARBOR_REQUESTS_PER_S", default_value_t = 100.0)]
    pub requests_per_s: f64,
    /// Bursts above those rates, in seconds' worth of the rate.
    #[arg(long, env = "ARBOR_BURST_S", default_value_t = 5.0)]
    pub burst_s: f64,
    /// Nodes one space may hold (0: no limit).
    #[arg(long, env = "ARBOR_MAX_NODES_PER_SPACE", default_value_t = crate::db::Quotas::DEFAULT.max_nodes)]
    pub max_nodes_per_space: u64,
    /// Rows one space's op log may hold (0: no limit).
    #[arg(long, env = "ARBOR_MAX_LOG_ROWS_PER_SPACE", default_value_t = crate::db::Quotas::DEFAULT.max_log_rows)]
    pub max_log_rows_per_space: u64,
    /// Bytes of keys, field names and values one space may hold, log and
    /// registers (0: no limit).
    #[arg(long, env = "ARBOR_MAX_BYTES_PER_SPACE", default_value_t = crate::db::Quotas::DEFAULT.max_bytes)]
    pub max_bytes_per_space: u64,
    /// Spaces one tenant (a token's `tenant` claim, else its `sub`) may
    /// create by create, fork or import (0: no limit).
    #[arg(long, env = "ARBOR_MAX_SPACES_PER_TENANT", default_value_t = crate::db::Quotas::DEFAULT.max_spaces_per_tenant)]
    pub max_spaces_per_tenant: u64,
    /// How far back, in seconds, an op's stamp may be: the server raises
    /// every space's horizon to this age, and older ops are refused as
    /// `stale` (their clients re-stamp them). 0: never raise it.
    #[arg(long, env = "ARBOR_HORIZON_KEEP_S", default_value_t = 30 * 24 * 3600)]
    pub horizon_keep_s: u64,
    /// Back up changed spaces to `--backup-url` every this many seconds
    /// (the first run at start). 0: no schedule.
    #[arg(long, env = "ARBOR_BACKUP_INTERVAL_S", default_value_t = 0)]
    pub backup_interval_s: u64,
    /// The bucket of the backups (shared with `arbor-server backup`).
    #[command(flatten)]
    pub backup: crate::backup::BackupArgs,
}

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// No secret was given.
    #[error("no token secret: set ARBOR_JWT_SECRET or --jwt-secret-file")]
    NoSecret,
    /// The secret file cannot be read.
    #[error("reading the token secret file {path}: {source}")]
    SecretFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The secret is too short.
    #[error(transparent)]
    Secret(#[from] arbor_shared::auth::KeyTooShort),
    /// The database URL does not parse.
    #[error("database url: {0}")]
    Database(String),
    /// The backup settings cannot be used.
    #[error(transparent)]
    Backup(#[from] crate::backup::BackupError),
}

/// What [`crate::run`] needs.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where Postgres is.
    pub database: tokio_postgres::Config,
    /// How the connections to it use TLS (from the URL's `sslmode`,
    /// `sslrootcert`, `sslcert`, `sslkey`).
    pub database_tls: crate::db::PgTls,
    /// Hot standbys that serve reads, each with its TLS settings.
    pub read_replicas: Vec<(tokio_postgres::Config, crate::db::PgTls)>,
    /// A standby lagging more than this is skipped.
    pub read_replica_max_lag: Duration,
    /// Pool size (of the primary, and of each standby).
    pub db_pool: usize,
    /// The token secret (current: it mints the server's own tokens).
    pub key: Hs256Key,
    /// The other keys and rules tokens are checked with, and the
    /// revocation list.
    pub auth: crate::keys::AuthConfig,
    /// Token clock leeway, seconds.
    pub token_leeway_s: u64,
    /// Largest request body, bytes (imports excepted).
    pub max_body_bytes: usize,
    /// Largest import file, bytes.
    pub max_import_bytes: u64,
    /// Drain deadline after a shutdown signal.
    pub drain: Duration,
    /// Origins allowed by CORS (`*` for any).
    pub cors_origins: Vec<String>,
    /// Frames queued per realtime socket before it is closed as too slow.
    pub socket_queue_frames: usize,
    /// Where to forward commit notices (the realtime Worker), if anywhere.
    pub notify_url: Option<String>,
    /// Host names (the `Host` header without its port) the server answers
    /// to; any other gets 421 `bad_host`. Empty: any (a proxy in front
    /// decides). `dev` answers loopback names only.
    pub allowed_hosts: Vec<String>,
    /// What one client may take: stream budget, caps, timeouts, rates.
    pub limits: crate::limits::Limits,
    /// Per-space and per-tenant quotas.
    pub quotas: crate::db::Quotas,
    /// The horizon policy: every space's horizon is kept at least this far
    /// behind now (`None`: horizons are only raised by hand).
    pub horizon_keep: Option<Duration>,
    /// Scheduled backups to object storage (`None`: off).
    pub backup: Option<crate::backup::Schedule>,
    /// Replica images (`None`: off).
    pub images: Option<crate::image::ImageConfig>,
}

impl Config {
    /// The defaults of `arbor-server serve` for `database` and `key`
    /// (tests and embedders override what they need with `..`).
    pub fn new(database: tokio_postgres::Config, key: Hs256Key) -> Config {
        Config {
            database,
            database_tls: crate::db::PgTls::default(),
            read_replicas: Vec::new(),
            read_replica_max_lag: Duration::from_secs(5),
            db_pool: 16,
            key,
            auth: crate::keys::AuthConfig {
                jwks_refresh: Duration::from_secs(300),
                ..crate::keys::AuthConfig::default()
            },
            token_leeway_s: 60,
            max_body_bytes: 4 << 20,
            max_import_bytes: 4 << 30,
            drain: Duration::from_secs(10),
            cors_origins: Vec::new(),
            socket_queue_frames: 256,
            notify_url: None,
            allowed_hosts: Vec::new(),
            limits: crate::limits::Limits::for_pool(16),
            quotas: crate::db::Quotas::DEFAULT,
            horizon_keep: Some(Duration::from_secs(30 * 24 * 3600)),
            backup: None,
            images: None,
        }
    }
}

impl ServeArgs {
    /// Resolves the flags into a [`Config`]; `env_secret` and
    /// `env_previous` are the values of `ARBOR_JWT_SECRET` and
    /// `ARBOR_JWT_PREVIOUS_SECRET`, if set.
    pub fn into_config(
        self,
        env_secret: Option<String>,
        env_previous: Option<String>,
    ) -> Result<Config, ConfigError> {
        let read_secret = |path: &PathBuf| {
            std::fs::read(path)
                .map(|mut b| {
                    while b.last().is_some_and(|c| c.is_ascii_whitespace()) {
                        b.pop();
                    }
                    b
                })
                .map_err(|source| ConfigError::SecretFile {
                    path: path.clone(),
                    source,
                })
        };
        let secret = match (&self.jwt_secret_file, env_secret) {
            (Some(path), _) => read_secret(path)?,
            (None, Some(s)) => s.into_bytes(),
            (None, None) => return Err(ConfigError::NoSecret),
        };
        let previous = match (&self.jwt_previous_secret_file, env_previous) {
            (Some(path), _) => Some(read_secret(path)?),
            (None, s) => s.map(String::into_bytes),
        };
        let previous = previous.map(|p| Hs256Key::new(&p)).transpose()?;
        let jwks = match (self.jwks_file, self.jwks_url) {
            (Some(path), _) => Some(crate::keys::JwksSource::File(path)),
            (None, Some(url)) => Some(crate::keys::JwksSource::Url(url)),
            (None, None) => None,
        };
        let auth = crate::keys::AuthConfig {
            previous,
            jwks,
            jwks_refresh: Duration::from_secs(self.jwks_refresh_s),
            issuer: self.jwt_issuer,
            audience: self.jwt_audience,
            claims_prefix: self.jwt_claims_prefix,
            revocation_file: self.revocation_file,
        };
        let (database, database_tls) = crate::db::parse_database_url(&self.database_url)
            .map_err(|e| ConfigError::Database(e.to_string()))?;
        // The certificate files are read now, so a bad path fails at start.
        database_tls
            .client_config()
            .map_err(|e| ConfigError::Database(e.to_string()))?;
        let read_replicas = self
            .read_replica_urls
            .iter()
            .map(|url| {
                let (config, tls) = crate::db::parse_database_url(url)
                    .map_err(|e| ConfigError::Database(format!("read replica: {e}")))?;
                tls.client_config()
                    .map_err(|e| ConfigError::Database(format!("read replica: {e}")))?;
                Ok((config, tls))
            })
            .collect::<Result<Vec<_>, ConfigError>>()?;
        Ok(Config {
            database,
            database_tls,
            read_replicas,
            read_replica_max_lag: Duration::from_millis(self.read_replica_max_lag_ms),
            db_pool: self.db_pool,
            key: Hs256Key::new(&secret)?,
            auth,
            token_leeway_s: self.token_leeway_s,
            max_body_bytes: self.max_body_bytes,
            max_import_bytes: self.max_import_bytes,
            drain: Duration::from_secs(self.drain_s),
            cors_origins: self.cors_origins,
            socket_queue_frames: self.socket_queue_frames,
            notify_url: self.notify_url,
            allowed_hosts: self.allowed_hosts,
            limits: crate::limits::Limits {
                max_streams: self
                    .max_streams
                    .unwrap_or_else(|| crate::limits::Limits::for_pool(self.db_pool).max_streams),
                max_streams_per_token: self.max_streams_per_token,
                stall_timeout: Duration::from_secs(self.stall_timeout_s),
                header_read_timeout: Duration::from_secs(self.header_read_timeout_s),
                hello_timeout: Duration::from_secs(self.hello_timeout_s),
                idle_timeout: Duration::from_secs(self.idle_timeout_s),
                max_sockets_per_token: self.max_sockets_per_token,
                max_connections_per_addr: self.max_connections_per_addr,
                pushes_per_s: self.pushes_per_s,
                requests_per_s: self.requests_per_s,
                burst_s: self.burst_s,
            },
            quotas: crate::db::Quotas {
                max_nodes: self.max_nodes_per_space,
                max_log_rows: self.max_log_rows_per_space,
                max_bytes: self.max_bytes_per_space,
                max_spaces_per_tenant: self.max_spaces_per_tenant,
            },
            horizon_keep: (self.horizon_keep_s > 0)
                .then(|| Duration::from_secs(self.horizon_keep_s)),
            backup: self.backup.schedule(self.backup_interval_s)?,
            images: self.image_dir.map(|dir| crate::image::ImageConfig {
                dir,
                rebuild_ops: self.image_rebuild_ops,
                level: self.image_zstd_level,
            }),
        })
    }
}
