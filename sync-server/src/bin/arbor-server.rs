//! `arbor-server`: the sync server binary (thin: flags, logs, signals).
//!
//! ```text
//! ARBOR_JWT_SECRET=... arbor-server serve --database-url 'host=/run/postgresql dbname=arbor'
//! ARBOR_JWT_SECRET=... arbor-server token --sub alice --space demo --role write --ttl-s 3600
//! ```

use anyhow::Context as _;
use arbor_shared::ReplicaId;
use arbor_shared::auth::{Claims, Hs256Key, Role, mint};
use arbor_sync_server::ServeArgs;
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(name = "arbor-server", about = "Arbor's sync server", version)]
struct Cli {
    /// Log format: `pretty` in a terminal, `json` for collectors.
    #[arg(
        long,
        env = "ARBOR_LOG_FORMAT",
        value_enum,
        default_value = "auto",
        global = true
    )]
    log_format: LogFormat,
    /// Log level (error, warn, info, debug, trace).
    #[arg(long, env = "ARBOR_LOG_LEVEL", default_value = "info", global = true)]
    log_level: tracing::Level,
    /// Export spans to this OTLP collector (base URL; OTLP over HTTP with
    /// JSON bodies to `<url>/v1/traces`). Unset: no trace export.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT", global = true)]
    otlp_endpoint: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    /// Pretty if stderr is a terminal, JSON otherwise.
    Auto,
    Pretty,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API.
    // Boxed: its many flags would make every other variant as large.
    Serve(Box<ServeArgs>),
    /// Back up every changed space to an S3-compatible bucket, now
    /// (docs/DEPLOY.md, "Backups"). Exit 0: done; 3: a --space does not
    /// exist (the others are done); 1: failed.
    Backup(arbor_sync_server::backup::BackupCommand),
    /// Restore spaces from the bucket by import (new names only). Exit 0:
    /// all restored; 3: some exist already and were left alone (the others
    /// are restored); 1: failed.
    Restore(arbor_sync_server::backup::RestoreCommand),
    /// Development: start a local Postgres kept in --data-dir (initialized
    /// on first use), create a thoughtspace, print an admin token, serve.
    Dev {
        /// Where the dev database and secret live.
        #[arg(long, env = "ARBOR_DEV_DIR", default_value = ".arbor-dev")]
        data_dir: std::path::PathBuf,
        /// API listener.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// Admin listener (/metrics).
        #[arg(long, default_value = "127.0.0.1:9090")]
        admin_listen: std::net::SocketAddr,
        /// The thoughtspace to create.
        #[arg(long, default_value = "demo")]
        space: String,
        /// Use this Postgres instead of starting one in --data-dir (the
        /// token secret still lives in --data-dir).
        #[arg(long, env = "DATABASE_URL")]
        database_url: Option<String>,
        /// Forward commit notices to this realtime Worker (base URL).
        #[arg(long, env = "ARBOR_NOTIFY_URL")]
        notify_url: Option<String>,
        /// The built browser demo (scripts/build-web.sh), served at /demo/
        /// when the folder exists.
        #[arg(long, env = "ARBOR_WEB_DIR", default_value = "web/dist")]
        web_dir: std::path::PathBuf,
    },
    /// Mint a development token (HS256, secret from ARBOR_JWT_SECRET or
    /// --jwt-secret-file).
    Token {
        #[arg(long)]
        sub: String,
        #[arg(long)]
        space: String,
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// Bind the token to this replica (16 hex digits).
        #[arg(long)]
        rid: Option<ReplicaId>,
        /// The tenant whose space quota the spaces it creates count against
        /// (default: the subject).
        #[arg(long)]
        tenant: Option<String>,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl_s: u64,
        /// The token's id (`jti`), to revoke it alone later.
        #[arg(long)]
        jti: Option<String>,
        #[arg(long, env = "ARBOR_JWT_SECRET_FILE")]
        jwt_secret_file: Option<std::path::PathBuf>,
    },
}

fn parse_role(s: &str) -> Result<Role, String> {
    serde_json::from_value(serde_json::Value::String(s.to_string()))
        .map_err(|_| "role is read, write, admin or service".to_string())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

fn env_secret() -> Option<String> {
    env_value("ARBOR_JWT_SECRET")
}

/// A secret-valued variable, if set and not empty (secrets are never flags).
fn env_value(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|s| !s.is_empty())
}

fn main() -> anyhow::Result<()> {
    use std::io::IsTerminal as _;
    let cli = Cli::parse();
    let json = match cli.log_format {
        LogFormat::Json => true,
        LogFormat::Pretty => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    // Before the runtime: the trace exporter's client is a blocking one.
    let telemetry =
        arbor_sync_server::telemetry::init(json, cli.log_level, cli.otlp_endpoint.as_deref())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let result = runtime.block_on(run(cli.command));
    drop(runtime);
    telemetry.shutdown();
    result
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Backup(args) => backup(args).await?,
        Command::Restore(args) => restore(args).await?,
        Command::Dev {
            data_dir,
            listen,
            admin_listen,
            space,
            database_url,
            notify_url,
            web_dir,
        } => {
            dev(
                data_dir,
                listen,
                admin_listen,
                space,
                database_url,
                notify_url,
                web_dir,
            )
            .await?
        }
        Command::Serve(args) => {
            let (listen, admin_listen) = (args.listen, args.admin_listen);
            let config = args.into_config(env_secret(), env_value("ARBOR_JWT_PREVIOUS_SECRET"))?;
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("binding {listen}"))?;
            let admin = tokio::net::TcpListener::bind(admin_listen)
                .await
                .with_context(|| format!("binding {admin_listen}"))?;
            tracing::info!(api = %listener.local_addr()?, admin = %admin.local_addr()?, "listening");
            arbor_sync_server::serve(listener, Some(admin), config, shutdown_signal()).await?;
        }
        Command::Token {
            sub,
            space,
            role,
            rid,
            tenant,
            ttl_s,
            jti,
            jwt_secret_file,
        } => {
            let secret = match jwt_secret_file {
                Some(path) => std::fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))?
                    .trim_end()
                    .to_string(),
                None => env_secret().context("set ARBOR_JWT_SECRET or --jwt-secret-file")?,
            };
            let key = Hs256Key::new(secret.as_bytes())?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_secs();
            let claims = Claims {
                rid,
                tenant,
                jti,
                ..Claims::new(&sub, &space, role, now, ttl_s)
            };
            println!("{}", mint(&claims, &key));
        }
    }
    Ok(())
}

/// The dev secret: `ARBOR_JWT_SECRET`, else one generated once into
/// `<data-dir>/secret` from the OS's random source.
fn dev_secret(dir: &std::path::Path) -> anyhow::Result<String> {
    if let Some(s) = env_secret() {
        return Ok(s);
    }
    let path = dir.join("secret");
    if let Ok(s) = std::fs::read_to_string(&path) {
        // A file an older version wrote world-readable becomes private.
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("making {} private", path.display()))?;
        return Ok(s.trim().to_string());
    }
    use std::io::Read as _;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("reading /dev/urandom")?;
    let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    // Readable by its owner only: the secret signs every token.
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .and_then(|mut f| f.write_all(secret.as_bytes()))
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(secret)
}

async fn dev(
    data_dir: std::path::PathBuf,
    listen: std::net::SocketAddr,
    admin_listen: std::net::SocketAddr,
    space: String,
    database_url: Option<String>,
    notify_url: Option<String>,
    web_dir: std::path::PathBuf,
) -> anyhow::Result<()> {
    use arbor_testkit::{PgCluster, PgOptions};
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    // An embedded cluster in the data folder, unless DATABASE_URL names one.
    let (cluster, database, database_tls, shown) = match database_url {
        Some(url) => {
            let (database, tls) =
                arbor_sync_server::db::parse_database_url(&url).context("parsing DATABASE_URL")?;
            (None, database, tls, String::from("DATABASE_URL"))
        }
        None => {
            let cluster = PgCluster::open(
                &data_dir.join("postgres"),
                PgOptions {
                    throwaway: false,
                    shared_buffers: "128MB",
                },
            )
            .map_err(|e| anyhow::anyhow!("starting the dev Postgres: {e}"))?;
            let admin_db = cluster
                .connect("postgres")
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            if admin_db
                .query_opt("SELECT 1 FROM pg_database WHERE datname = 'arbor'", &[])
                .await?
                .is_none()
            {
                admin_db.batch_execute("CREATE DATABASE arbor").await?;
            }
            drop(admin_db);
            let database = cluster.config("arbor");
            let shown = cluster.conn_string("arbor");
            (Some(cluster), database, Default::default(), shown)
        }
    };
    let secret = dev_secret(&data_dir)?;
    let key = Hs256Key::new(secret.as_bytes())?;
    let db = arbor_sync_server::db::Db::open(database.clone(), &database_tls, 2).await?;
    db.create_space(&space).await?;
    drop(db);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let admin = tokio::net::TcpListener::bind(admin_listen)
        .await
        .with_context(|| format!("binding {admin_listen}"))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let token = mint(
        &Claims::new("dev", &space, Role::Admin, now, 24 * 3600),
        &key,
    );
    println!("arbor dev server");
    println!("  api:      http://{}", listener.local_addr()?);
    println!("  admin:    http://{}/metrics", admin.local_addr()?);
    println!("  postgres: {shown}");
    println!("  space:    {space}");
    let extra = demo_routes(&web_dir, key.clone());
    if extra.is_some() {
        println!("  demo:     http://{}/demo/", listener.local_addr()?);
    } else {
        println!(
            "  demo:     not built ({} missing: bash scripts/build-web.sh)",
            web_dir.display()
        );
    }
    println!("  token:    {token}");
    use std::io::Write as _;
    std::io::stdout().flush()?;
    let config = arbor_sync_server::Config {
        db_pool: 8,
        max_import_bytes: 4 << 30,
        drain: std::time::Duration::from_secs(5),
        cors_origins: vec!["*".into()],
        notify_url,
        // `dev` mints tokens for anyone who asks (`/dev/token`): a web page
        // must not reach it through DNS rebinding, so only loopback names.
        allowed_hosts: ["localhost", "127.0.0.1", "[::1]"]
            .map(String::from)
            .to_vec(),
        database_tls,
        // Replica images in the data folder: a fresh client (another
        // browser, `arbor init`) cold-starts from the space's file.
        images: Some(arbor_sync_server::image::ImageConfig {
            dir: data_dir.join("images"),
            rebuild_ops: 10_000,
            level: 3,
        }),
        ..arbor_sync_server::Config::new(database, key)
    };
    let served = arbor_sync_server::serve_with(
        listener,
        Some(admin),
        config,
        extra.unwrap_or_default(),
        shutdown_signal(),
    )
    .await;
    if let Some(cluster) = cluster {
        cluster.stop();
    }
    served?;
    Ok(())
}

/// The dev server's extra routes: the demo's static files at `/demo/` (and
/// `/` redirecting there) and `GET /dev/token?space=S&user=U`, which mints
/// a one-day write token for anyone who asks. That is what makes the demo
/// open with no login, and why `dev` must never face a network.
fn demo_routes(web_dir: &std::path::Path, key: Hs256Key) -> Option<axum::Router> {
    use axum::extract::Query;
    use axum::response::{IntoResponse, Redirect};
    use axum::routing::get;
    if !web_dir.join("index.html").is_file() {
        return None;
    }
    #[derive(serde::Deserialize)]
    struct TokenQuery {
        space: String,
        user: String,
    }
    let mint_token = move |Query(q): Query<TokenQuery>| {
        let key = key.clone();
        async move {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            let token = mint(
                &Claims::new(&q.user, &q.space, Role::Write, now, 24 * 3600),
                &key,
            );
            axum::Json(serde_json::json!({ "token": token })).into_response()
        }
    };
    Some(
        axum::Router::new()
            .route("/", get(|| async { Redirect::temporary("/demo/") }))
            .route("/dev/token", get(mint_token))
            .nest_service("/demo", tower_http::services::ServeDir::new(web_dir)),
    )
}

/// `backup`: one run; exit 3 when a --space does not exist.
async fn backup(args: arbor_sync_server::backup::BackupCommand) -> anyhow::Result<()> {
    use arbor_sync_server::backup;
    let target = args
        .bucket
        .target()?
        .context("set --backup-url or ARBOR_BACKUP_URL (s3://bucket/prefix)")?;
    let (database, tls) = arbor_sync_server::db::parse_database_url(&args.database_url)
        .context("parsing --database-url")?;
    let db = arbor_sync_server::db::Db::with_tls(database, &tls, 2)?;
    let options = backup::RunOptions {
        spaces: args.spaces.clone(),
        ..args.bucket.options()
    };
    let report = backup::run(&db, &target, &options, &mut backup::Known::default()).await?;
    for up in &report.uploaded {
        println!(
            "backed up {} at seq {}: {} bytes in {} part(s) to {}",
            up.space,
            up.entry.head_seq,
            up.entry.bytes,
            up.parts,
            target.object_url(&up.space, &up.entry.object)
        );
    }
    for name in &report.missing {
        println!("no such space: {name}");
    }
    println!(
        "{} uploaded, {} unchanged, {} missing",
        report.uploaded.len(),
        report.unchanged,
        report.missing.len()
    );
    if !report.missing.is_empty() && !args.spaces.is_empty() {
        std::process::exit(3);
    }
    Ok(())
}

/// `restore`: spaces by import, or `--list`; exit 3 when some exist.
async fn restore(args: arbor_sync_server::backup::RestoreCommand) -> anyhow::Result<()> {
    use arbor_sync_server::backup;
    let target = backup::Target::from_env(&args.backup_url)?;
    if args.list {
        for manifest in backup::list(&target, &args.spaces).await? {
            for e in &manifest.backups {
                println!(
                    "{}\tseq {}\ttaken_at_ms {}\t{} bytes\t{}",
                    manifest.space,
                    e.head_seq,
                    e.taken_at_ms,
                    e.bytes,
                    target.object_url(&manifest.space, &e.object)
                );
            }
        }
        return Ok(());
    }
    let url = args
        .database_url
        .as_deref()
        .context("set --database-url or ARBOR_DATABASE_URL")?;
    let (database, tls) =
        arbor_sync_server::db::parse_database_url(url).context("parsing --database-url")?;
    // A new database gets the schema first.
    let db = arbor_sync_server::db::Db::open(database, &tls, 2).await?;
    let report = backup::restore(&db, &target, &args.options()).await?;
    for r in &report.restored {
        println!(
            "restored {} as {} from seq {} ({})",
            r.space,
            r.created,
            r.entry.head_seq,
            target.object_url(&r.space, &r.entry.object)
        );
    }
    for name in &report.exists {
        println!("exists, not restored: {name}");
    }
    for name in &report.no_manifest {
        println!("no manifest, skipped: {name}");
    }
    println!(
        "{} restored, {} exist already",
        report.restored.len(),
        report.exists.len()
    );
    if !report.exists.is_empty() {
        std::process::exit(3);
    }
    Ok(())
}
