//! Load: 1,000 sockets over 100 thoughtspaces on one server while ops are
//! ingested into every space. Every reader gets every op of its space; one
//! reader that never reads is closed (4002) instead of growing memory, and
//! it slows nobody else; the process's memory stays bounded.

use std::time::{Duration, Instant};

use arbor_e2e::stack;
use arbor_e2e::ws::{Ws, connect, say_hello};
use arbor_shared::auth::Role;
use arbor_shared::protocol::ServerMsg;
use arbor_shared::{KeyGen, MoveOp, NodeId, Op, Stamp};
use arbor_sync_server::Config;
use arbor_testkit::PgCluster;
use arbor_testkit::env::now_ms;
use arbor_testkit::ops::set;
use futures_util::StreamExt as _;
use tokio_tungstenite::tungstenite::Message;

const SECRET: &str = "load-secret-load-secret-load-secret-load!";
const SPACES: usize = 100;
const PER_SPACE: usize = 10;
const ROUNDS: usize = 20;
const OPS_PER_PUSH: usize = 5;
/// Pushes per round into s0, the slow reader's space.
const SLOW_PUSHES: usize = 10;

fn token(space: &str, role: Role) -> String {
    arbor_testkit::tokens::token(SECRET.as_bytes(), "load", space, role, 3600)
}

/// Pushes `ops` to `space` over HTTP with an admin token.
async fn push(http: &reqwest::Client, base: &str, space: &str, ops: &[Op]) {
    let r = http
        .post(format!("{base}/v1/spaces/{space}/ops"))
        .bearer_auth(token(space, Role::Admin))
        .json(&serde_json::json!({ "ops": ops }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

fn rss_mib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0)
        / 1024
}

async fn open(base: &str, space: &str, replica: u64) -> Ws {
    let mut ws = connect(base, space, Some(&token(space, Role::Read)))
        .await
        .unwrap();
    say_hello(&mut ws, replica, Some(0)).await;
    ws
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_sockets_over_a_hundred_spaces_stay_bounded() {
    let cluster = PgCluster::shared();
    let db = stack::database(cluster, "e2e_load", 4).await;
    for s in 0..SPACES {
        db.create_space(&format!("s{s}")).await.unwrap();
    }
    let base = stack::serve(Config {
        db_pool: 8,
        socket_queue_frames: 16,
        // 1,001 sockets from one load generator: one address.
        limits: arbor_sync_server::limits::Limits {
            max_connections_per_addr: 4_096,
            ..arbor_sync_server::limits::Limits::for_pool(8)
        },
        ..stack::config(cluster, "e2e_load", SECRET.as_bytes())
    })
    .await;

    // The slow reader: space s0, never reads.
    let slow = open(&base, "s0", 9_999).await;
    let mut readers = Vec::new();
    for s in 0..SPACES {
        for r in 0..PER_SPACE {
            let mut ws = open(&base, &format!("s{s}"), (s * PER_SPACE + r) as u64 + 1).await;
            let want = if s == 0 {
                ROUNDS * SLOW_PUSHES * 2
            } else {
                ROUNDS * OPS_PER_PUSH
            };
            readers.push(tokio::spawn(async move {
                let started = Instant::now();
                let mut got = 0usize;
                while got < want {
                    match tokio::time::timeout(Duration::from_secs(60), ws.next()).await {
                        Ok(Some(Ok(Message::Text(t)))) => {
                            if let Ok(ServerMsg::Ops { ops }) = ServerMsg::decode(&t) {
                                got += ops.len();
                            }
                        }
                        Ok(Some(Ok(_))) => {}
                        _ => break,
                    }
                }
                (got, want, started.elapsed())
            }));
        }
    }
    let connected_rss = rss_mib();

    // Ingest into every space; s0 gets 4x the ops, with 16 KiB values, so
    // the slow reader's share far exceeds its socket buffers.
    let http = reqwest::Client::new();
    let t0 = now_ms() << 16;
    let mut keys = KeyGen::new(1);
    let big = "x".repeat(32 * 1024);
    for s in 0..SPACES {
        let space = format!("s{s}");
        let node = NodeId(1);
        let create = Op::Move(MoveOp {
            stamp: Stamp::new(t0, 1),
            known_seq: 0,
            node,
            parent: NodeId::ROOT,
            key: keys.append_after(None),
        });
        push(&http, &base, &space, &[create]).await;
    }
    let started = Instant::now();
    let mut peak_rss = connected_rss;
    let mut stamp = t0 + 1;
    for round in 0..ROUNDS {
        for s in 0..SPACES {
            let space = format!("s{s}");
            let (pushes, n) = if s == 0 {
                (SLOW_PUSHES, 2)
            } else {
                (1, OPS_PER_PUSH)
            };
            for _ in 0..pushes {
                let ops: Vec<Op> = (0..n)
                    .map(|i| {
                        stamp += 1;
                        let value = if s == 0 {
                            big.clone()
                        } else {
                            format!("{round}.{i}")
                        };
                        set(stamp, 1, NodeId(1), "t", Some(&value), 0)
                    })
                    .collect();
                push(&http, &base, &space, &ops).await;
            }
        }
        peak_rss = peak_rss.max(rss_mib());
    }
    let mut slowest = Duration::ZERO;
    for r in readers {
        let (got, want, took) = r.await.unwrap();
        // Every reader got the create too.
        assert!(got >= want, "a reader got {got} of {want} ops");
        slowest = slowest.max(took);
    }
    let ingest = started.elapsed();
    let peak_rss = peak_rss.max(rss_mib());
    // The slow reader was closed with 4002 once its queue filled.
    let mut slow = slow;
    let mut code = None;
    while let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_secs(10), slow.next()).await {
        if let Message::Close(f) = m {
            code = f.map(|f| u16::from(f.code));
            break;
        }
    }
    eprintln!(
        "load: {} sockets over {SPACES} spaces, {} ops ingested in {:.1} s, every reader done within {:.1} s; RSS {connected_rss} MiB connected, {peak_rss} MiB after",
        SPACES * PER_SPACE + 1,
        ROUNDS * (SPACES - 1) * OPS_PER_PUSH + ROUNDS * SLOW_PUSHES * 2,
        ingest.as_secs_f64(),
        slowest.as_secs_f64()
    );
    assert_eq!(
        code,
        Some(4002),
        "the slow reader should be closed as too slow"
    );
    // Bounded: the slow reader's 13 MB share is not held for it.
    assert!(
        peak_rss < connected_rss + 128,
        "RSS grew from {connected_rss} to {peak_rss} MiB"
    );
}
