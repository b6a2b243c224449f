//! The realtime Worker in the real Workers runtime: `wrangler dev` (workerd)
//! on 127.0.0.1, configured for a given sync server and secret, killable
//! and restartable on the same port.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The tools folder of `scripts/build-worker.sh` (`ARBOR_WORKER_TOOLS`, or
/// asked from the script, which installs them if missing).
fn tools_dir() -> PathBuf {
    if let Ok(t) = std::env::var("ARBOR_WORKER_TOOLS") {
        return PathBuf::from(t);
    }
    let out = Command::new("bash")
        .arg(repo_root().join("scripts/build-worker.sh"))
        .arg("--tools")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "scripts/build-worker.sh --tools failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(
        String::from_utf8(out.stdout)
            .unwrap()
            .trim()
            .lines()
            .last()
            .unwrap(),
    )
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// How the Worker is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runner {
    /// `wrangler dev`: the developer's command; a second, proxying workerd
    /// sits in front of the Worker's.
    Wrangler,
    /// Miniflare's API (`tests/workerd/miniflare.mjs`): one workerd process,
    /// requests straight to the Worker, as in production.
    #[allow(
        dead_code,
        reason = "the realtime bench runs it; the tests use wrangler dev"
    )]
    Miniflare,
}

pub struct Workerd {
    child: Option<Child>,
    pub port: u16,
    dir: PathBuf,
    tools: PathBuf,
    runner: Runner,
    server_url: String,
    secret: String,
}

impl Workerd {
    /// Starts the Worker under `wrangler dev` on `port` for the sync server
    /// at `server_url`, verifying tokens with `secret` and with `vars` added
    /// to `.dev.vars` (values single-quoted: JSON documents such as
    /// `ARBOR_JWKS`); returns once it answers.
    #[allow(dead_code, reason = "the tests run it; the realtime bench does not")]
    pub async fn start_with_vars(
        server_url: &str,
        secret: &str,
        port: u16,
        vars: &[(&str, String)],
    ) -> Workerd {
        Workerd::start_full(Runner::Wrangler, server_url, secret, port, vars).await
    }

    /// The Worker run by `runner`, with no variables beyond the secret.
    #[allow(
        dead_code,
        reason = "the realtime bench runs it; the tests pass variables"
    )]
    pub async fn start_with(runner: Runner, server_url: &str, secret: &str, port: u16) -> Workerd {
        Workerd::start_full(runner, server_url, secret, port, &[]).await
    }

    async fn start_full(
        runner: Runner,
        server_url: &str,
        secret: &str,
        port: u16,
        vars: &[(&str, String)],
    ) -> Workerd {
        let build = repo_root().join("worker-realtime/build/index.js");
        assert!(
            build.exists(),
            "{} is missing: run `bash scripts/build-worker.sh` first",
            build.display()
        );
        let dir = std::env::temp_dir().join(format!("arbor-workerd-{}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("wrangler.toml"),
            format!(
                "name = \"arbor-realtime-test\"\n\
                 main = \"{}\"\n\
                 compatibility_date = \"2025-09-01\"\n\
                 [vars]\n\
                 ARBOR_SERVER_URL = \"{server_url}\"\n\
                 [[durable_objects.bindings]]\n\
                 name = \"ROOMS\"\n\
                 class_name = \"RoomObject\"\n\
                 [[migrations]]\n\
                 tag = \"v1\"\n\
                 new_sqlite_classes = [\"RoomObject\"]\n",
                build.display()
            ),
        )
        .unwrap();
        let mut dev_vars = format!("ARBOR_JWT_SECRET={secret}\n");
        for (name, value) in vars {
            assert!(
                !value.contains('\''),
                "{name}: no single quotes in .dev.vars values"
            );
            dev_vars.push_str(&format!("{name}='{value}'\n"));
        }
        std::fs::write(dir.join(".dev.vars"), dev_vars).unwrap();
        let mut w = Workerd {
            child: None,
            port,
            dir,
            tools: tools_dir(),
            runner,
            server_url: server_url.to_string(),
            secret: secret.to_string(),
        };
        w.spawn().await;
        w
    }

    async fn spawn(&mut self) {
        use std::os::unix::process::CommandExt as _;
        let log = std::fs::File::create(self.dir.join("wrangler.log")).unwrap();
        let mut command = match self.runner {
            Runner::Wrangler => {
                let mut c = Command::new(self.tools.join("node_modules/.bin/wrangler"));
                c.args(["dev", "--config", "wrangler.toml", "--ip", "127.0.0.1"])
                    .args(["--port", &self.port.to_string()])
                    .args(["--persist-to", "state", "--log-level", "warn"]);
                c
            }
            Runner::Miniflare => {
                let mut c = Command::new("node");
                c.arg(repo_root().join("tests/workerd/miniflare.mjs"))
                    .arg(self.port.to_string())
                    .arg(&self.server_url)
                    .arg(&self.secret)
                    .arg(repo_root().join("worker-realtime/build"))
                    .env("ARBOR_WORKER_TOOLS", &self.tools);
                c
            }
        };
        let child = command
            .current_dir(&self.dir)
            .env("WRANGLER_SEND_METRICS", "false")
            .env("WRANGLER_SEND_ERROR_REPORTS", "false")
            .env("CLOUDFLARE_CF_FETCH_ENABLED", "false")
            .env("CI", "true")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            // Its own process group: killing it takes workerd along.
            .process_group(0)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let http = reqwest::Client::new();
        let started = Instant::now();
        loop {
            if let Ok(r) = http.get(format!("{}/livez", self.url())).send().await {
                if r.status() == 200 {
                    return;
                }
            }
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    panic!("wrangler dev exited ({status}): {}", self.log());
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(90),
                "wrangler dev did not answer in 90 s: {}",
                self.log()
            );
            // Polling a process we do not control for readiness.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("wrangler.log")).unwrap_or_default()
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Stops workerd: every object's memory and every socket is gone.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let group = format!("-{}", c.id());
            let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
            let _ = c.wait();
        }
    }

    /// Kills and starts it again on the same port.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }
}

impl Drop for Workerd {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
