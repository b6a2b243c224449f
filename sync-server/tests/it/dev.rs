//! `arbor-server dev` as a real process: it starts its own Postgres, prints
//! where it serves and an admin token, stops on SIGTERM, and keeps its data
//! for the next start.

use std::io::BufRead as _;
use std::process::{Child, Command, Stdio};

use serde_json::json;

use crate::harness::*;

struct Dev {
    child: Child,
    api: String,
    token: String,
}

fn start(dir: &std::path::Path) -> Dev {
    start_with(dir, None)
}

/// `arbor-server dev`, with `DATABASE_URL` set to `database_url` if given.
fn start_with(dir: &std::path::Path, database_url: Option<&str>) -> Dev {
    start_env(dir, database_url, &[])
}

/// [`start_with`], with these environment variables besides.
fn start_env(dir: &std::path::Path, database_url: Option<&str>, env: &[(&str, &str)]) -> Dev {
    let mut command = Command::new(env!("CARGO_BIN_EXE_arbor-server"));
    command.envs(env.iter().copied());
    match database_url {
        Some(url) => command.env("DATABASE_URL", url),
        None => command.env_remove("DATABASE_URL"),
    };
    let mut child = command
        .args([
            "--log-format",
            "json",
            "dev",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(dir)
        .env_remove("ARBOR_JWT_SECRET")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (mut api, mut token) = (None, None);
    // The banner is printed once the server listens; EOF means it failed.
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if let Some(a) = line.trim().strip_prefix("api:") {
            api = Some(a.trim().to_string());
        }
        if let Some(t) = line.trim().strip_prefix("token:") {
            token = Some(t.trim().to_string());
            break;
        }
    }
    Dev {
        child,
        api: api.expect("no api line"),
        token: token.expect("no token line"),
    }
}

/// An absent dir named `name` and this process's id in the temp dir.
fn fresh_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn stop(mut dev: Dev) {
    let pid = dev.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    assert!(dev.child.wait().unwrap().success());
}

#[tokio::test]
async fn dev_mode_serves_with_its_own_postgres_and_keeps_data() {
    let dir = fresh_dir("arbor-dev-test");
    let http = reqwest::Client::new();

    let dev = start(&dir);
    assert_eq!(
        http.get(format!("{}/readyz", dev.api))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let op = mv(
        now_ms() << 16,
        7,
        n(1),
        arbor_shared::NodeId::ROOT,
        &[0x80],
        0,
    );
    let r = http
        .post(format!("{}/v1/spaces/demo/ops", dev.api))
        .bearer_auth(&dev.token)
        .json(&json!({ "ops": [op] }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let first_token = dev.token.clone();
    stop(dev);

    // Restarted on the same dir: same secret (the old token works), same
    // data.
    let dev = start(&dir);
    let body: serde_json::Value = http
        .get(format!("{}/v1/spaces/demo/ops", dev.api))
        .bearer_auth(&first_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["head_seq"], 1);
    stop(dev);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn dev_mode_uses_database_url_when_given() {
    let dir = fresh_dir("arbor-dev-url-test");
    let name = test_db_name().await;
    let cluster = arbor_testkit::PgCluster::shared();
    let dev = start_with(&dir, Some(&cluster.conn_string(&name)));
    let r = reqwest::Client::new()
        .get(format!("{}/v1/spaces/demo/ops", dev.api))
        .bearer_auth(&dev.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // The space lives in the given database; no cluster was started.
    let sql = cluster.connect(&name).await.unwrap();
    let spaces: i64 = sql
        .query_one("SELECT count(*) FROM spaces WHERE name = 'demo'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(spaces, 1);
    assert!(!dir.join("postgres").exists());
    stop(dev);
    let _ = std::fs::remove_dir_all(&dir);
}

/// With `OTEL_EXPORTER_OTLP_ENDPOINT` set, the server's spans reach an OTLP
/// collector (here a plain HTTP endpoint that keeps what it is sent): the
/// request's span with its route template, and the service's name; no
/// space name or token in it.
#[tokio::test]
async fn spans_are_exported_to_an_otlp_collector() {
    use std::sync::{Arc, Mutex};
    let received: Arc<Mutex<Vec<String>>> = Arc::default();
    let arrived = Arc::new(tokio::sync::Notify::new());
    let collector = {
        let (received, arrived) = (received.clone(), arrived.clone());
        axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |body: String| {
                received.lock().unwrap().push(body);
                arrived.notify_one();
                async { "{}" }
            }),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, collector).await });

    let dir = fresh_dir("arbor-dev-otlp");
    let name = test_db_name().await;
    let cluster = arbor_testkit::PgCluster::shared();
    let dev = start_env(
        &dir,
        Some(&cluster.conn_string(&name)),
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            // Export every 100 ms rather than every 5 s.
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    );
    let r = reqwest::Client::new()
        .get(format!("{}/v1/spaces/demo/ops", dev.api))
        .bearer_auth(&dev.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let route = "/v1/spaces/{space}/ops";
    let has_span = |bodies: &[String]| {
        bodies
            .iter()
            .any(|b| b.contains("\"http_request\"") && b.contains(route))
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !has_span(&received.lock().unwrap()) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        assert!(
            tokio::time::timeout(left, arrived.notified()).await.is_ok(),
            "no http_request span within 20 s: {:?}",
            received.lock().unwrap()
        );
    }
    stop(dev);
    let bodies = received.lock().unwrap().join("\n");
    assert!(bodies.contains("arbor-server"), "no service name: {bodies}");
    assert!(
        !bodies.contains("/v1/spaces/demo/"),
        "a path with a space name: {bodies}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The dev stack is private to its user and answers loopback names only:
/// a page that reaches it through DNS rebinding (a foreign `Host`) gets
/// nothing, no token included.
#[tokio::test]
async fn dev_mode_answers_loopback_hosts_only_and_keeps_its_files_private() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = fresh_dir("arbor-dev-hosts");
    let dev = start(&dir);
    let http = reqwest::Client::new();
    let port = dev.api.rsplit(':').next().unwrap().to_string();
    for (host, want) in [
        (format!("127.0.0.1:{port}"), 200),
        (format!("localhost:{port}"), 200),
        ("localhost".to_string(), 200),
        (format!("evil.example:{port}"), 421),
        ("attacker.example".to_string(), 421),
        (format!("127.0.0.1.evil.example:{port}"), 421),
    ] {
        let r = http
            .get(format!("{}/v1/spaces/demo/ops", dev.api))
            .header("host", &host)
            .bearer_auth(&dev.token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), want, "Host: {host}");
        if want == 421 {
            let body: serde_json::Value = r.json().await.unwrap();
            assert_eq!(body["error"]["code"], "bad_host");
        }
    }
    let minted = http
        .get(format!("{}/dev/token?space=demo&user=x", dev.api))
        .header("host", "rebound.example")
        .send()
        .await
        .unwrap();
    assert_eq!(minted.status(), 421);
    // The secret and the Postgres socket's folder: owner only.
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir.join("secret")), 0o600);
    assert_eq!(mode(&dir.join("postgres")), 0o700);
    stop(dev);
    let _ = std::fs::remove_dir_all(&dir);
}
