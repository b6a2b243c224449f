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

use arbor_shared::NodeId;
use arbor_shared::auth::Role;
use arbor_sync_server::{Config, serve};
use arbor_testkit::env::now_ms;
use arbor_testkit::ops::mv;
use arbor_testkit::sql::insert_nodes;
use arbor_testkit::stall;
use arbor_testkit::stats::{ms, percentile};
use arbor_testkit::tokens;
use common::{SECRET, token};

mod common;

const REQUESTS: usize = 400;

fn pct(v: &mut [Duration], p: f64) -> f64 {
    ms(percentile(v, p))
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
        let node = NodeId(1 + u128::from(round));
        let op = mv(
            t0 + i,
            7,
            node,
            NodeId::ROOT,
            &[0x80, 1 + (i % 200) as u8],
            0,
        );
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
    let cluster = common::cluster(false, "256MB");
    let c = common::database(&cluster, "bench").await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host = listener.local_addr().unwrap().to_string();
    let base = format!("http://{host}");
    let config = Config::new(cluster.config("bench"), tokens::key(SECRET));
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
    c.batch_execute(&insert_nodes("big", 100_000))
        .await
        .unwrap();

    let (mut quiet_push, mut quiet_read) = short_requests(&base, 0).await;

    // 16 users, two streams each: within every per-token cap.
    let stalled = stall::downloads_and_imports(
        &host,
        "big",
        32,
        |i| token(&format!("user{}", i / 2), "big", Role::Read),
        |i, space| token(&format!("importer{}", i / 2), space, Role::Admin),
    )
    .await
    .unwrap();
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
