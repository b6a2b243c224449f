//! Short requests while 32 snapshot readers and 32 import writers stall (issue 17, "safe to expose").
//!
//! ```text
//! cargo bench -p arbor-sync-server --bench stalled
//! ```
//!
//! A server with the default limits of `arbor-server serve` (a pool of 16,
//! long streams capped at 8), a 100,000-node space `big`, and a space
//! `other`. Rounds: pushes (HTTP ingest of one op) and catch-ups (`GET
//! .../ops`) on `other`, one every 5 ms, first with nothing else running,
//! then with 32 clients that started a snapshot of `big` and never read
//! and 32 that sent an import's headers and then nothing (16 users, within
//! every per-token cap). Latency per request, p50 and p99, side by side.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::time::{Duration, Instant};

use arbor_shared::auth::{Claims, Hs256Key, Role, mint};
use arbor_shared::{MoveOp, NodeId, Op, OrderKey, Stamp};
use arbor_sync_server::db::migrate;
use arbor_sync_server::{Config, serve};
use arbor_testkit::{PgCluster, PgOptions};
use tokio::io::AsyncWriteExt as _;

const SECRET: &[u8] = b"bench-secret-bench-secret-bench-secret";
const REQUESTS: usize = 400;

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn token(sub: &str, space: &str, role: Role) -> String {
    let claims = Claims::new(sub, space, role, now_ms() / 1000, 3600);
    mint(&claims, &Hs256Key::new(SECRET).unwrap())
}

fn pct(v: &mut [Duration], p: f64) -> f64 {
    v.sort();
    v[((v.len() as f64 * p) as usize).min(v.len() - 1)].as_secs_f64() * 1e3
}

/// Pushes and catch-ups on `other`, one request every 5 ms.
async fn short_requests(base: &str, round: u64) -> (Vec<Duration>, Vec<Duration>) {
    let http = reqwest::Client::new();
    let write = token("writer", "other", Role::Write);
    let read = token("reader", "other", Role::Read);
    let (mut pushes, mut reads) = (Vec::new(), Vec::new());
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    let t0 = (now_ms() << 16) + round * 100_000;
    for i in 0..REQUESTS as u64 {
        tick.tick().await;
        let op = Op::Move(MoveOp {
            stamp: Stamp::new(t0 + i, 7),
            known_seq: 0,
            node: NodeId(1 + u128::from(round)),
            parent: NodeId::ROOT,
            key: OrderKey::new(&[0x80, 1 + (i % 200) as u8]).unwrap(),
        });
        let started = Instant::now();
        let r = http
            .post(format!("{base}/v1/spaces/other/ops"))
            .bearer_auth(&write)
            .json(&serde_json::json!({ "ops": [op] }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
        pushes.push(started.elapsed());
        let started = Instant::now();
        let r = http
            .get(format!(
                "{base}/v1/spaces/other/ops?after={}&limit=100",
                i.saturating_sub(5)
            ))
            .bearer_auth(&read)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
        reads.push(started.elapsed());
    }
    (pushes, reads)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let cluster = PgCluster::start(PgOptions {
        throwaway: false,
        shared_buffers: "256MB",
    })
    .unwrap();
    let admin = cluster.connect("postgres").await.unwrap();
    admin.batch_execute("CREATE DATABASE bench").await.unwrap();
    let mut c = cluster.connect("bench").await.unwrap();
    migrate(&mut c).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host = listener.local_addr().unwrap().to_string();
    let base = format!("http://{host}");
    let config = Config::new(cluster.config("bench"), Hs256Key::new(SECRET).unwrap());
    tokio::spawn(serve(listener, None, config, std::future::pending()));
    let http = reqwest::Client::new();
    for space in ["big", "other"] {
        let r = http
            .put(format!("{base}/v1/spaces/{space}"))
            .bearer_auth(token("admin", space, Role::Admin))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    c.batch_execute(
        "INSERT INTO nodes (space, id, parent, key)
           SELECT s.id, md5(i::text)::uuid, '00000000-0000-0000-0000-000000000000',
                  '\\x80'::bytea || int4send(i) || '\\x01'::bytea
           FROM spaces s, generate_series(1, 100000) i WHERE s.name = 'big';",
    )
    .await
    .unwrap();

    let (mut quiet_push, mut quiet_read) = short_requests(&base, 0).await;

    let mut stalled = Vec::new();
    for i in 0..32 {
        let t = token(&format!("user{}", i / 2), "big", Role::Read);
        let mut tcp = tokio::net::TcpStream::connect(&host).await.unwrap();
        tcp.write_all(
            format!("GET /v1/spaces/big/snapshot HTTP/1.1\r\nhost: {host}\r\nauthorization: Bearer {t}\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
        stalled.push(tcp);
    }
    for i in 0..32 {
        let space = format!("imp{i}");
        let t = token(&format!("importer{}", i / 2), &space, Role::Admin);
        let mut tcp = tokio::net::TcpStream::connect(&host).await.unwrap();
        tcp.write_all(
            format!("POST /v1/spaces/{space}/import HTTP/1.1\r\nhost: {host}\r\nauthorization: Bearer {t}\r\ncontent-length: 1000000\r\n\r\nARBORSNP")
                .as_bytes(),
        )
        .await
        .unwrap();
        stalled.push(tcp);
    }
    let (mut busy_push, mut busy_read) = short_requests(&base, 1).await;
    drop(stalled);

    println!();
    println!("| {REQUESTS} requests each on another space, one every 5 ms | p50 ms | p99 ms |");
    println!("|---|---|---|");
    for (what, v) in [
        (
            "push (HTTP ingest, 1 op), nothing else running",
            &mut quiet_push,
        ),
        (
            "push, with 32 stalled snapshot readers and 32 stalled imports",
            &mut busy_push,
        ),
        (
            "catch-up (`GET .../ops`), nothing else running",
            &mut quiet_read,
        ),
        ("catch-up, with the 64 stalled streams", &mut busy_read),
    ] {
        println!("| {what} | {:.2} | {:.2} |", pct(v, 0.5), pct(v, 0.99));
    }
    cluster.stop();
}
