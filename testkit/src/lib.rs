//! Postgres clusters started from the Debian binaries: throwaway ones for
//! tests and benchmarks, and the kept one behind `arbor-server dev`.
//!
//! A [`PgCluster`] is a fresh `initdb` in a temp dir, started with `pg_ctl`,
//! listening only on a unix socket in that dir (no port clashes between test
//! binaries). [`PgCluster::shared`] gives one cluster per test binary; tests
//! take a fresh database each with [`PgCluster::fresh_db`].
//!
//! Stopping: Rust's test harness has no global teardown, so each cluster is
//! watched by a small shell process that blocks reading a pipe held open by
//! this process. When the process exits (normally, by panic or by SIGKILL)
//! the pipe closes, and the watcher stops the cluster (`-m immediate`) and
//! removes its dir. [`PgCluster::stop`] does the same on demand.
//!
//! Root: `initdb` and `postgres` refuse to run as root, so when this process
//! is root every server command runs through `runuser -u postgres` (the user
//! the Debian package creates) and the dir is handed to that user.
//!
//! # Layout
//!
//! - [`PgCluster`]: start (throwaway), start with TLS on TCP, start a hot
//!   standby of a running one, open (kept dir, dev mode), shared instance,
//!   fresh databases, restart, stop.
//! - [`PgOptions`]: throwaway (fsync off) or durable settings.
//! - [`archive`]: WAL archiving, base backups, point-in-time recovery.
//! - [`env`]: the wall clock, replayable seeds, settings from variables.
//! - [`fanout`]: the realtime benchmarks' writer and readers, transport
//!   aside.
//! - [`ops`]: ids, keys, moves and sets, the reference tree, the
//!   benchmarks' outline.
//! - [`sql`]: databases by name, test data written straight into the
//!   tables.
//! - [`stall`]: requests that send their head and then nothing.
//! - [`stats`]: median and percentiles of latencies.
//! - [`tokens`]: test tokens issued now.
//! - [`wait`]: bounded waits on a watched status.

pub mod archive;
pub mod env;
pub mod fanout;
pub mod ops;
pub mod sql;
pub mod stall;
pub mod stats;
pub mod tokens;
pub mod wait;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

/// An error starting or driving a cluster (messages carry the command output).
#[derive(Debug)]
pub struct PgError(pub String);

impl std::fmt::Display for PgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PgError {}

type Result<T> = std::result::Result<T, PgError>;

fn err(m: impl Into<String>) -> PgError {
    PgError(m.into())
}

/// Settings of a cluster.
#[derive(Debug, Clone, Copy)]
pub struct PgOptions {
    /// `fsync=off`, `synchronous_commit=off`, `full_page_writes=off`: much
    /// faster, and fine for data nobody keeps. False gives Postgres' durable
    /// defaults (benchmarks use them).
    pub throwaway: bool,
    /// `shared_buffers` (Postgres syntax, e.g. `"256MB"`).
    pub shared_buffers: &'static str,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            throwaway: true,
            shared_buffers: "256MB",
        }
    }
}

/// How a cluster's data dir comes to be.
#[derive(Clone, Copy)]
enum Origin<'a> {
    /// `initdb`, socket only.
    Initdb,
    /// `initdb`, and TLS on TCP with this certificate, key and client CA.
    Tls(&'a Path, &'a Path, &'a Path),
    /// `pg_basebackup` of this running cluster, started as its standby.
    Standby(&'a PgCluster),
}

/// A running throwaway cluster.
#[derive(Debug)]
pub struct PgCluster {
    /// Temp dir holding `data/` and the unix socket; removed at stop.
    root: PathBuf,
    bin: PathBuf,
    as_postgres: bool,
    options: PgOptions,
    /// Keep the dir when stopping (dev clusters).
    keep: bool,
    /// The port: names the socket file (`.s.PGSQL.<port>`), and is the TCP
    /// port when `tcp` is set.
    port: u16,
    /// Also listening on 127.0.0.1 (TCP) with TLS on ([`PgCluster::start_tls`]).
    tcp: bool,
    /// A hot standby streaming from another cluster ([`PgCluster::start_standby`]).
    standby: bool,
    /// Write end of the watcher's pipe: dropping it (process exit) stops
    /// the cluster.
    watcher: Mutex<Option<(Child, ChildStdin)>>,
}

/// The port number only names the socket file (`.s.PGSQL.<port>`); nothing
/// listens on TCP (except a [`PgCluster::start_tls`] cluster, on a port of its own).
pub const PORT: u16 = 5432;
/// Superuser created by `initdb`.
pub const USER: &str = "arbor";

static SHARED: OnceLock<PgCluster> = OnceLock::new();
static NEXT_DB: AtomicU64 = AtomicU64::new(0);
static NEXT_DIR: AtomicU64 = AtomicU64::new(0);

/// Finds the Postgres server binaries: `ARBOR_PG_BIN`, then the newest
/// `/usr/lib/postgresql/*/bin`, then `pg_config --bindir`.
pub fn pg_bin_dir() -> Result<PathBuf> {
    if let Ok(dir) = std::env::var("ARBOR_PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let mut best: Option<(u32, PathBuf)> = None;
    if let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") {
        for e in entries.flatten() {
            let v = e.file_name().to_string_lossy().parse::<u32>().ok();
            let bin = e.path().join("bin");
            if let Some(v) = v {
                if bin.join("initdb").exists() && best.as_ref().is_none_or(|(b, _)| v > *b) {
                    best = Some((v, bin));
                }
            }
        }
    }
    if let Some((_, bin)) = best {
        return Ok(bin);
    }
    let out = Command::new("pg_config").arg("--bindir").output();
    match out {
        Ok(o) if o.status.success() => Ok(PathBuf::from(
            String::from_utf8_lossy(&o.stdout).trim().to_string(),
        )),
        _ => Err(err(
            "no Postgres binaries: install the Debian `postgresql` package or set ARBOR_PG_BIN",
        )),
    }
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt as _;
    // /proc/self is owned by the process's effective uid.
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

fn id_of(flag: &str, user: &str) -> Result<u32> {
    let out = Command::new("id")
        .args([flag, user])
        .output()
        .map_err(|e| err(format!("id {flag} {user}: {e}")))?;
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .map_err(|_| {
            err(format!(
                "no system user `{user}` (install the postgresql package)"
            ))
        })
}

/// Runs `command` (named `program` in errors) with `args` to its end; its
/// output goes into the error when it fails.
pub(crate) fn run_command(
    program: &str,
    mut command: Command,
    args: &[&std::ffi::OsStr],
) -> Result<()> {
    let out = command
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| err(format!("{program}: {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(err(format!(
            "{program} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )))
    }
}

impl PgCluster {
    /// The cluster shared by every test of this binary (started on first use).
    pub fn shared() -> &'static PgCluster {
        SHARED.get_or_init(|| match PgCluster::start(PgOptions::default()) {
            Ok(c) => c,
            Err(e) => {
                // Tests cannot run without it; say why loudly.
                eprintln!("arbor-testkit: cannot start Postgres: {e}");
                std::process::exit(2)
            }
        })
    }

    /// Creates and starts a new cluster in a fresh temp dir (removed at
    /// stop).
    pub fn start(options: PgOptions) -> Result<PgCluster> {
        let root = std::env::temp_dir().join(format!(
            "arbor-pg-{}-{}",
            std::process::id(),
            NEXT_DIR.fetch_add(1, Ordering::Relaxed)
        ));
        PgCluster::start_in(root, options, false, Origin::Initdb)
    }

    /// A hot standby of this cluster: `pg_basebackup -R` over its socket,
    /// then started streaming from it (`hot_standby_feedback` on, so long
    /// reads on the standby are not cancelled by replayed vacuums). Its
    /// own socket dir; [`PgCluster::stop`] on it is the standby going away.
    pub fn start_standby(&self) -> Result<PgCluster> {
        let root = std::env::temp_dir().join(format!(
            "arbor-pg-{}-{}",
            std::process::id(),
            NEXT_DIR.fetch_add(1, Ordering::Relaxed)
        ));
        PgCluster::start_in(root, self.options, false, Origin::Standby(self))
    }

    /// [`PgCluster::start`], also listening on 127.0.0.1 at a free TCP
    /// port ([`PgCluster::tcp_port`]) with `ssl=on`, serving the PEM
    /// certificate chain `cert` and its key `key` (copied into the cluster),
    /// asking clients for a certificate signed by `client_ca` (optional:
    /// trust authentication, as on the socket; tests of TLS itself).
    pub fn start_tls(
        options: PgOptions,
        cert: &Path,
        key: &Path,
        client_ca: &Path,
    ) -> Result<PgCluster> {
        let root = std::env::temp_dir().join(format!(
            "arbor-pg-{}-{}",
            std::process::id(),
            NEXT_DIR.fetch_add(1, Ordering::Relaxed)
        ));
        PgCluster::start_in(root, options, false, Origin::Tls(cert, key, client_ca))
    }

    /// The TCP port on 127.0.0.1, for a cluster from [`PgCluster::start_tls`].
    pub fn tcp_port(&self) -> Option<u16> {
        self.tcp.then_some(self.port)
    }

    /// Starts the cluster kept in `root` (created with `initdb` the first
    /// time), stopped but kept when this process exits: the dev server's
    /// database.
    pub fn open(root: &Path, options: PgOptions) -> Result<PgCluster> {
        PgCluster::start_in(root.to_path_buf(), options, true, Origin::Initdb)
    }

    fn start_in(
        root: PathBuf,
        options: PgOptions,
        keep: bool,
        origin: Origin<'_>,
    ) -> Result<PgCluster> {
        let bin = pg_bin_dir()?;
        let as_postgres = is_root();
        std::fs::create_dir_all(&root).map_err(|e| err(format!("mkdir {root:?}: {e}")))?;
        let root = root
            .canonicalize()
            .map_err(|e| err(format!("canonicalize {root:?}: {e}")))?;
        if as_postgres {
            let (uid, gid) = (id_of("-u", "postgres")?, id_of("-g", "postgres")?);
            std::os::unix::fs::chown(&root, Some(uid), Some(gid))
                .map_err(|e| err(format!("chown {root:?}: {e}")))?;
        }
        // The socket (trust authentication) lives here: private to the
        // cluster's user, so no other local user can connect.
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| err(format!("chmod {root:?}: {e}")))?;
        }
        let port = match origin {
            // Free now; a clash with another process before Postgres binds
            // it fails the start loudly rather than silently.
            Origin::Tls(..) => std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map_err(|e| err(format!("finding a free port: {e}")))?
                .port(),
            Origin::Initdb | Origin::Standby(_) => PORT,
        };
        let cluster = PgCluster {
            root,
            bin,
            as_postgres,
            options,
            keep,
            port,
            tcp: matches!(origin, Origin::Tls(..)),
            standby: matches!(origin, Origin::Standby(_)),
            watcher: Mutex::new(None),
        };
        cluster.spawn_watcher()?;
        let data = cluster.data_dir();
        if keep && data.join("PG_VERSION").exists() {
            // A stale pid file from a crash does not stop pg_ctl; a running
            // server does (and then this is a second dev server: refuse).
            cluster.pg_ctl_start()?;
            return Ok(cluster);
        }
        if let Origin::Standby(primary) = origin {
            let port = primary.port.to_string();
            cluster.run(
                "pg_basebackup",
                &[
                    "-D".as_ref(),
                    data.as_os_str(),
                    "-h".as_ref(),
                    primary.root.as_os_str(),
                    "-p".as_ref(),
                    port.as_ref(),
                    "-U".as_ref(),
                    USER.as_ref(),
                    "-X".as_ref(),
                    "stream".as_ref(),
                    "-R".as_ref(),
                    // Not a spread checkpoint first (minutes on an idle cluster).
                    "--checkpoint=fast".as_ref(),
                    "--no-sync".as_ref(),
                ],
            )?;
            cluster.pg_ctl_start()?;
            return Ok(cluster);
        }
        cluster.run(
            "initdb",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-U".as_ref(),
                USER.as_ref(),
                "-A".as_ref(),
                "trust".as_ref(),
                "-E".as_ref(),
                "UTF8".as_ref(),
                "--locale=C".as_ref(),
                "--no-sync".as_ref(),
            ],
        )?;
        if let Origin::Tls(cert, key, client_ca) = origin {
            cluster.install_tls_files(cert, key, client_ca)?;
        }
        cluster.pg_ctl_start()?;
        Ok(cluster)
    }

    fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    /// Copies the certificate, key and client CA into the data dir as
    /// `server.crt`, `server.key` and `client-ca.crt`, owned by the
    /// server's user, the key private (Postgres refuses a key others can
    /// read).
    fn install_tls_files(&self, cert: &Path, key: &Path, client_ca: &Path) -> Result<()> {
        use std::os::unix::fs::PermissionsExt as _;
        let data = self.data_dir();
        for (from, name, mode) in [
            (cert, "server.crt", 0o644),
            (key, "server.key", 0o600),
            (client_ca, "client-ca.crt", 0o644),
        ] {
            let to = data.join(name);
            std::fs::copy(from, &to).map_err(|e| err(format!("copy {from:?}: {e}")))?;
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(mode))
                .map_err(|e| err(format!("chmod {to:?}: {e}")))?;
            if self.as_postgres {
                let (uid, gid) = (id_of("-u", "postgres")?, id_of("-g", "postgres")?);
                std::os::unix::fs::chown(&to, Some(uid), Some(gid))
                    .map_err(|e| err(format!("chown {to:?}: {e}")))?;
            }
        }
        Ok(())
    }

    /// The directory of the unix socket (a `host` for libpq and
    /// tokio-postgres).
    pub fn socket_dir(&self) -> &Path {
        &self.root
    }

    /// A libpq-style connection string for `db`.
    pub fn conn_string(&self, db: &str) -> String {
        format!(
            "host={} port={} user={USER} dbname={db}",
            self.root.display(),
            self.port
        )
    }

    /// A tokio-postgres config for `db`.
    pub fn config(&self, db: &str) -> tokio_postgres::Config {
        let mut c = tokio_postgres::Config::new();
        c.host_path(&self.root)
            .port(self.port)
            .user(USER)
            .dbname(db);
        c
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    fn run(&self, program: &str, args: &[&std::ffi::OsStr]) -> Result<()> {
        run_command(program, self.command(program), args)
    }

    fn pg_ctl_start(&self) -> Result<()> {
        let mut opts = format!(
            "-c listen_addresses='{}' -c unix_socket_directories='{}' -c port={} \
             -c unix_socket_permissions=0700 -c max_connections=200 -c shared_buffers={}",
            if self.tcp { "127.0.0.1" } else { "" },
            self.root.display(),
            self.port,
            self.options.shared_buffers
        );
        if self.tcp {
            opts.push_str(
                " -c ssl=on -c ssl_cert_file=server.crt -c ssl_key_file=server.key \
                 -c ssl_ca_file=client-ca.crt",
            );
        }
        if self.standby {
            opts.push_str(" -c hot_standby=on -c hot_standby_feedback=on");
        }
        if self.options.throwaway {
            opts.push_str(" -c fsync=off -c synchronous_commit=off -c full_page_writes=off");
        }
        let data = self.data_dir();
        let log = self.root.join("postgres.log");
        self.run(
            "pg_ctl",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-l".as_ref(),
                log.as_os_str(),
                "-o".as_ref(),
                opts.as_ref(),
                "-w".as_ref(),
                "start".as_ref(),
            ],
        )
    }

    /// `pg_ctl restart -m immediate`: a crash and recovery (fault tests).
    pub fn restart_immediate(&self) -> Result<()> {
        let data = self.data_dir();
        self.run(
            "pg_ctl",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-m".as_ref(),
                "immediate".as_ref(),
                "-w".as_ref(),
                "stop".as_ref(),
            ],
        )?;
        self.pg_ctl_start()
    }

    /// Spawns the watcher that stops the cluster and removes its dir when
    /// this process lets go of the pipe (see the crate docs).
    fn spawn_watcher(&self) -> Result<()> {
        let pg_ctl = self.bin.join("pg_ctl");
        let runuser = if self.as_postgres {
            "runuser -u postgres --"
        } else {
            ""
        };
        // Throwaway clusters stop immediately and lose their dir; kept ones
        // stop fast (a clean checkpoint) and stay. The watcher ignores
        // INT/TERM/HUP: a Ctrl-C reaches the whole process group, and the
        // watcher must outlive its parent to clean up.
        let script = if self.keep {
            format!(
                "trap '' INT TERM HUP; cat >/dev/null; {runuser} \"$0\" -D \"$1/data\" -m fast -w stop >/dev/null 2>&1"
            )
        } else {
            format!(
                "trap '' INT TERM HUP; cat >/dev/null; {runuser} \"$0\" -D \"$1/data\" -m immediate -w stop >/dev/null 2>&1; rm -rf \"$1\""
            )
        };
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg(pg_ctl)
            .arg(&self.root)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| err(format!("spawn watcher: {e}")))?;
        let stdin = child
            .stdin
            .take()
            .ok_or_else(|| err("watcher has no stdin"))?;
        if let Ok(mut w) = self.watcher.lock() {
            *w = Some((child, stdin));
        }
        Ok(())
    }

    /// Stops the cluster now and removes its dir (waits for the watcher).
    pub fn stop(&self) {
        let taken = self.watcher.lock().ok().and_then(|mut w| w.take());
        if let Some((mut child, mut stdin)) = taken {
            let _ = stdin.flush();
            drop(stdin);
            let _ = child.wait();
        }
    }

    /// Creates a fresh, empty database (optionally from a template) and
    /// returns its name.
    pub async fn fresh_db(&self, template: Option<&str>) -> Result<String> {
        let name = format!("t{}", NEXT_DB.fetch_add(1, Ordering::Relaxed));
        let client = self.connect("postgres").await?;
        let sql = match template {
            // Identifiers cannot be parameters; both names are ours
            // (`t<number>` and a caller constant), never user input.
            Some(t) => format!("CREATE DATABASE {name} TEMPLATE {t}"),
            None => format!("CREATE DATABASE {name}"),
        };
        client
            .batch_execute(&sql)
            .await
            .map_err(|e| err(format!("{sql}: {e}")))?;
        Ok(name)
    }

    /// Connects to `db`, driving the connection on a spawned task.
    pub async fn connect(&self, db: &str) -> Result<tokio_postgres::Client> {
        let (client, conn) = self
            .config(db)
            .connect(tokio_postgres::NoTls)
            .await
            .map_err(|e| err(format!("connect {db}: {e}")))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(client)
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        self.stop();
    }
}
