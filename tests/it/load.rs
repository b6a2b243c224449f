//! Load: 1,000 sockets over 100 thoughtspaces on one server while ops are
//! ingested into every space. Every reader gets every op of its space; one
//! reader that never reads is closed (4002) instead of growing memory, and
//! it slows nobody else; the process's memory stays bounded.

use std::time::{Duration, Instant};

use arbor_shared::auth::{Claims, Hs256Key, Role, mint};
use arbor_shared::protocol::{ClientMsg, ServerMsg};
use arbor_shared::{KeyGen, MoveOp, NodeId, Op, ReplicaId, SetOp, Stamp};
use arbor_sync_server::Config;
use arbor_sync_server::db::Db;
use arbor_testkit::PgCluster;
use futures_util::{SinkExt as _, StreamExt as _};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

const SECRET: &str = "load-secret-load-secret-load-secret-load!";
const SPACES: usize = 100;
const PER_SPACE: usize = 10;
const ROUNDS: usize = 20;
const OPS_PER_PUSH: usize = 5;
/// Pushes per round into s0, the slow reader's space.
const SLOW_PUSHES: usize = 10;

fn token(space: &str, role: Role) -> String {
    let claims = Claims::new("load", space, role, arbor_e2e::now_s(), 3600);
    mint(&claims, &Hs256Key::new(SECRET.as_bytes()).unwrap())
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

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn open(base: &str, space: &str, replica: u64) -> Ws {
    let url = format!("{}/v1/spaces/{space}/ws", base.replace("http://", "ws://"));
    let mut req = url.into_client_request().unwrap();
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {}", token(space, Role::Read))
            .parse()
            .unwrap(),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    let hello = ClientMsg::Hello {
        v: 1,
        replica: ReplicaId(replica),
        cursor: Some(0),
    };
    ws.send(Message::Text(hello.encode().into())).await.unwrap();
    ws
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_sockets_over_a_hundred_spaces_stay_bounded() {
    let cluster = PgCluster::shared();
    let admin = cluster.connect("postgres").await.unwrap();
    admin
        .batch_execute("CREATE DATABASE e2e_load")
        .await
        .unwrap();
    let mut c = cluster.connect("e2e_load").await.unwrap();
    arbor_sync_server::db::migrate(&mut c).await.unwrap();
    let db = Db::new(cluster.config("e2e_load"), 4).unwrap();
    for s in 0..SPACES {
        db.create_space(&format!("s{s}")).await.unwrap();
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let config = Config {
        db_pool: 8,
        token_leeway_s: 60,
        max_body_bytes: 4 << 20,
        max_import_bytes: 1 << 30,
        drain: Duration::from_secs(2),
        cors_origins: Vec::new(),
        socket_queue_frames: 16,
        notify_url: None,
        // 1,001 sockets from one load generator: one address.
        limits: arbor_sync_server::limits::Limits {
            max_connections_per_addr: 4_096,
            ..arbor_sync_server::limits::Limits::for_pool(8)
        },
        ..Config::new(
            cluster.config("e2e_load"),
            Hs256Key::new(SECRET.as_bytes()).unwrap(),
        )
    };
    tokio::spawn(arbor_sync_server::serve(
        listener,
        None,
        config,
        std::future::pending(),
    ));

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
    let t0 = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64)
        << 16;
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
        let r = http
            .post(format!("{base}/v1/spaces/{space}/ops"))
            .bearer_auth(token(&space, Role::Admin))
            .json(&serde_json::json!({ "ops": [create] }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
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
                        Op::Set(SetOp {
                            stamp: Stamp::new(stamp, 1),
                            known_seq: 0,
                            node: NodeId(1),
                            field: "t".into(),
                            value: Some(if s == 0 {
                                big.clone()
                            } else {
                                format!("{round}.{i}")
                            }),
                        })
                    })
                    .collect();
                let r = http
                    .post(format!("{base}/v1/spaces/{space}/ops"))
                    .bearer_auth(token(&space, Role::Admin))
                    .json(&serde_json::json!({ "ops": ops }))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
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
