//! `arbor-server serve` as a child process: the real binary on free ports (its addresses read from its JSON log), stopped by SIGTERM (a drain) or SIGKILL (a crash).

use std::io::BufRead as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long a process has to log where it listens.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running `arbor-server serve`; killed when dropped.
#[derive(Debug)]
pub struct ServerProcess {
    /// The API listener.
    pub api: SocketAddr,
    /// The admin listener (`/metrics`, `/livez`, `/readyz`).
    pub admin: SocketAddr,
    child: Child,
    /// The `message` of every log line so far.
    messages: Arc<Mutex<Vec<String>>>,
    /// The thread reading its log (until the process exits).
    reader: Option<std::thread::JoinHandle<()>>,
}

/// Why a process could not be started.
#[derive(Debug)]
pub struct StartError(pub String);

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StartError {}

/// The `arbor-server` binary: `ARBOR_SERVER_BIN` if set; else, under cargo,
/// `cargo build -p arbor-sync-server --bin arbor-server` in this test
/// binary's profile (once per process; a no-op when it is fresh), and the
/// binary next to this one's `deps/` folder.
pub fn binary() -> Result<PathBuf, StartError> {
    static BINARY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BINARY.get_or_init(find_binary).clone().map_err(StartError)
}

fn find_binary() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("ARBOR_SERVER_BIN") {
        return Ok(PathBuf::from(path));
    }
    // <target>/<profile>/deps/<test binary>
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| format!("no profile folder above {}", exe.display()))?;
    let binary = profile_dir.join("arbor-server");
    if let (Some(cargo), Some(target)) = (std::env::var_os("CARGO"), profile_dir.parent()) {
        let mut build = Command::new(cargo);
        build
            .args(["build", "--quiet", "-p", "arbor-sync-server"])
            .args(["--bin", "arbor-server"])
            .env("CARGO_TARGET_DIR", target)
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            build.arg("--release");
        }
        let status = build
            .status()
            .map_err(|e| format!("running cargo build for arbor-server: {e}"))?;
        if !status.success() {
            return Err(format!("cargo build of arbor-server failed: {status}"));
        }
    }
    if binary.is_file() {
        Ok(binary)
    } else {
        Err(format!(
            "{} is missing: run `cargo build -p arbor-sync-server --bin arbor-server` \
             or set ARBOR_SERVER_BIN",
            binary.display()
        ))
    }
}

impl ServerProcess {
    /// Starts `arbor-server --log-format json serve --listen 127.0.0.1:0
    /// --admin-listen 127.0.0.1:0 --database-url <database_url>` plus
    /// `args`, with `ARBOR_JWT_SECRET=<secret>`, and waits until it logs
    /// where it listens (before it opens its pool: see
    /// [`ServerProcess::wait_ready`]). Its warnings and errors go to this
    /// process's stderr.
    pub fn start(database_url: &str, secret: &str, args: &[&str]) -> Result<Self, StartError> {
        let mut child = Command::new(binary()?)
            .args(["--log-format", "json", "serve"])
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .args(["--database-url", database_url])
            .args(args)
            .env("ARBOR_JWT_SECRET", secret)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| StartError(format!("spawning arbor-server: {e}")))?;
        let pid = child.id();
        let stderr = child
            .stderr
            .take()
            .ok_or_else(|| StartError("no stderr".into()))?;
        let messages = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let log = messages.clone();
        // Reads the log to its end, so the server never blocks on a full pipe.
        let reader = std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { return };
                let Some(entry) = LogLine::parse(&line) else {
                    eprintln!("[arbor-server {pid}] {line}");
                    continue;
                };
                if entry.level == "WARN" || entry.level == "ERROR" {
                    eprintln!("[arbor-server {pid}] {line}");
                }
                if entry.message == "listening" {
                    let _ = tx.send((entry.field("api"), entry.field("admin")));
                }
                log.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(entry.message);
            }
        });
        let addrs = rx.recv_timeout(START_TIMEOUT);
        let mut process = ServerProcess {
            api: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin: SocketAddr::from(([127, 0, 0, 1], 0)),
            child,
            messages,
            reader: Some(reader),
        };
        let parse = |a: Option<String>| a.and_then(|a| a.parse::<SocketAddr>().ok());
        match addrs {
            Ok((api, admin)) => match (parse(api), parse(admin)) {
                (Some(api), Some(admin)) => {
                    process.api = api;
                    process.admin = admin;
                    Ok(process)
                }
                _ => Err(StartError("the listening line has no addresses".into())),
            },
            Err(_) => {
                let exited = process.child.try_wait().ok().flatten();
                Err(StartError(format!(
                    "arbor-server did not log `listening` (exit: {exited:?}); its log: {:?}",
                    process.messages()
                )))
            }
        }
    }

    /// The API's base URL (`http://addr`).
    pub fn url(&self) -> String {
        format!("http://{}", self.api)
    }

    /// The admin listener's base URL.
    pub fn admin_url(&self) -> String {
        format!("http://{}", self.admin)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The `message` of every log line so far (all of them once
    /// [`ServerProcess::wait_exit`] or [`ServerProcess::kill`] returned).
    pub fn messages(&self) -> Vec<String> {
        self.messages
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Waits (up to `within`) until `GET /readyz` on the admin listener
    /// answers 200: the pool is open and migrations have run.
    pub async fn wait_ready(&self, within: Duration) -> Result<(), StartError> {
        let deadline = Instant::now() + within;
        loop {
            if crate::balancer::http_status(self.admin, "/readyz").await == Some(200) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(StartError(format!(
                    "arbor-server {} not ready within {within:?}; its log: {:?}",
                    self.pid(),
                    self.messages()
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends SIGTERM: the server drains (`/readyz` 503, sockets closed
    /// with 1001, in-flight requests finish) and exits.
    pub fn terminate(&self) -> std::io::Result<()> {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()?;
        if status.success() {
            Ok(())
        } else {
            Err(std::io::Error::other(format!("kill -TERM: {status}")))
        }
    }

    /// Sends SIGKILL (a crash: every connection and transaction cut) and
    /// reaps the process.
    pub fn kill(&mut self) -> std::io::Result<ExitStatus> {
        self.child.kill()?;
        let status = self.child.wait()?;
        self.read_to_end();
        Ok(status)
    }

    /// Waits (up to `within`) for the process to exit; `None` if it is
    /// still running.
    pub async fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.read_to_end();
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl ServerProcess {
    /// Waits for the log reader (after the process exited: its pipe is
    /// closed, so the reader is at its end or about to be).
    fn read_to_end(&mut self) {
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One line of the JSON log (`tracing_subscriber`'s JSON format).
struct LogLine {
    level: String,
    message: String,
    fields: serde_json::Map<String, serde_json::Value>,
}

impl LogLine {
    fn parse(line: &str) -> Option<LogLine> {
        let mut v: serde_json::Value = serde_json::from_str(line).ok()?;
        let level = v.get("level")?.as_str()?.to_string();
        let serde_json::Value::Object(fields) = v.get_mut("fields")?.take() else {
            return None;
        };
        let message = fields.get("message")?.as_str()?.to_string();
        Some(LogLine {
            level,
            message,
            fields,
        })
    }

    fn field(&self, name: &str) -> Option<String> {
        self.fields.get(name)?.as_str().map(str::to_string)
    }
}
