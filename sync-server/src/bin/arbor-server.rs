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
    Serve(ServeArgs),
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
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl_s: u64,
        #[arg(long, env = "ARBOR_JWT_SECRET_FILE")]
        jwt_secret_file: Option<std::path::PathBuf>,
    },
}

fn parse_role(s: &str) -> Result<Role, String> {
    serde_json::from_value(serde_json::Value::String(s.to_string()))
        .map_err(|_| "role is read, write, admin or service".to_string())
}

fn init_logs(format: LogFormat, level: tracing::Level) {
    use std::io::IsTerminal as _;
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Pretty => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let builder = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
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
    std::env::var("ARBOR_JWT_SECRET")
        .ok()
        .filter(|s| !s.is_empty())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logs(cli.log_format, cli.log_level);
    match cli.command {
        Command::Serve(args) => {
            let (listen, admin_listen) = (args.listen, args.admin_listen);
            let config = args.into_config(env_secret())?;
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
            ttl_s,
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
                sub,
                space,
                role,
                rid,
                exp: now + ttl_s,
                nbf: None,
                iat: Some(now),
            };
            println!("{}", mint(&claims, &key));
        }
    }
    Ok(())
}
