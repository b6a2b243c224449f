//! Memory under a slow reader: the server, as a real process, streams a
//! 1M-node snapshot to a client that reads one byte per millisecond; its
//! RSS stays flat because the socket's backpressure reaches the `COPY`.

use std::io::BufRead as _;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use arbor_shared::auth::Role;
use arbor_testkit::PgCluster;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::harness::*;
use crate::http::token;

const NODES: u32 = 1_000_000;
/// The bound on the server's RSS growth.
const MAX_GROWTH: u64 = 64 << 20;

struct ServerProcess {
    child: Child,
    api: String,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `arbor-server serve` on port 0; the address comes from its JSON log.
fn spawn_server(database_url: &str) -> ServerProcess {
    let mut child = Command::new(env!("CARGO_BIN_EXE_arbor-server"))
        .args(["--log-format", "json", "serve"])
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .args(["--database-url", database_url])
        .env("ARBOR_JWT_SECRET", "test-secret-test-secret-test-secret!")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = std::io::BufReader::new(stderr).lines();
    let api = loop {
        let line = lines
            .next()
            .expect("server exited before listening")
            .unwrap();
        let log: serde_json::Value = serde_json::from_str(&line).unwrap();
        if log["fields"]["message"] == "listening" {
            break log["fields"]["api"].as_str().unwrap().to_string();
        }
    };
    // Keep draining its log so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    ServerProcess { child, api }
}

fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

#[tokio::test]
async fn a_slow_snapshot_reader_keeps_server_memory_flat() {
    let name = test_db_name().await;
    let cluster = PgCluster::shared();
    let sql = cluster.connect(&name).await.unwrap();
    // A 1M-node space written straight into the tables (the snapshot reads
    // tables; how they were filled does not matter here).
    sql.batch_execute(&format!(
        "INSERT INTO spaces (name) VALUES ('big');
         INSERT INTO nodes (space, id, parent, key)
           SELECT s.id, md5(i::text)::uuid, '00000000-0000-0000-0000-000000000000',
                  '\\x80'::bytea || int4send(i)
           FROM spaces s, generate_series(1, {NODES}) i WHERE s.name = 'big';
         INSERT INTO payloads (space, node, field, value, hlc, replica)
           SELECT s.id, md5(i::text)::uuid, 'text', 'node number ' || i, i, 1
           FROM spaces s, generate_series(1, {NODES}) i WHERE s.name = 'big';"
    ))
    .await
    .unwrap();

    let server = spawn_server(&cluster.conn_string(&name));
    let pid = server.child.id();
    let http = reqwest::Client::new();
    let ready = http
        .get(format!("http://{}/readyz", server.api))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let baseline = rss_bytes(pid);

    let mut socket = tokio::net::TcpStream::connect(&server.api).await.unwrap();
    let request = format!(
        "GET /v1/spaces/big/snapshot HTTP/1.1\r\nhost: {}\r\nauthorization: Bearer {}\r\n\r\n",
        server.api,
        token("big", Role::Read, None, 600)
    );
    socket.write_all(request.as_bytes()).await.unwrap();
    // One byte per millisecond for 5 s, sampling the server's RSS.
    let (mut read, mut peak) = (Vec::new(), baseline);
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    let started = Instant::now();
    let mut byte = [0u8; 1];
    while started.elapsed() < Duration::from_secs(5) {
        tick.tick().await;
        socket.read_exact(&mut byte).await.unwrap();
        read.push(byte[0]);
        if read.len() % 100 == 0 {
            peak = peak.max(rss_bytes(pid));
        }
    }
    // Backpressure reached Postgres: its COPY is still running, held by the
    // socket, not drained into the server's heap.
    let copying: i64 = sql
        .query_one(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND query LIKE 'COPY%' AND state = 'active'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    peak = peak.max(rss_bytes(pid));
    let head = String::from_utf8_lossy(&read);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(read.len() > 1_000, "read only {} bytes", read.len());
    assert_eq!(copying, 1, "the snapshot's COPY should still be running");
    let growth = peak.saturating_sub(baseline);
    eprintln!(
        "server RSS: baseline {} MiB, peak {} MiB, growth {} MiB over {} slow bytes",
        baseline >> 20,
        peak >> 20,
        growth >> 20,
        read.len()
    );
    assert!(growth < MAX_GROWTH, "RSS grew by {} MiB", growth >> 20);
}
