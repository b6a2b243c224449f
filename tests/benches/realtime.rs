//! Realtime push-to-receive latency through the Durable Object in workerd,
//! side by side with the sync server's native endpoint, in one run.
//!
//! ```text
//! bash scripts/build-worker.sh && cargo bench -p arbor-e2e --bench realtime
//! ```
//!
//! Five rounds per tier, alternating, each on a fresh thoughtspace with 20
//! reader sockets and one writer. The
//! writer behaves like a sync client: an op is queued every 5 ms (200
//! ops/s), and queued ops go out as one push whenever fewer than 8 pushes
//! wait for their ack. Latency runs from queueing to receipt at each reader
//! (p50, p99). Each tier runs as it is deployed: the native endpoint on a
//! sync server of its own, the Durable Object with a sync server that
//! forwards commit notices to it (`--notify-url`), in one workerd process
//! (Miniflare's API, as Cloudflare runs it) and then behind `wrangler dev`
//! (which puts a second, proxying workerd in front). Postgres (durable
//! settings), both servers, workerd and all clients share the machine's 2
//! cores.
//!
//! Then where the time goes: a ping round trip through each endpoint (the
//! transport alone), and the object's commit call made from here, over the
//! upstream socket it keeps open and over HTTP (its fallback).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

#[path = "../it/workerd.rs"]
#[allow(dead_code, unreachable_pub)]
mod workerd;

use std::time::{Duration, Instant};

use arbor_shared::auth::{Claims, Hs256Key, Role, mint};
use arbor_shared::protocol::{ClientMsg, ServerMsg};
use arbor_shared::{KeyGen, MoveOp, NodeId, Op, ReplicaId, SetOp, Stamp};
use arbor_sync_server::Config;
use arbor_sync_server::db::{Db, migrate};
use arbor_testkit::{PgCluster, PgOptions};
use futures_util::{SinkExt as _, StreamExt as _};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

const SECRET: &str = "bench-secret-bench-secret-bench-secret";
const READERS: u64 = 20;
const OPS: usize = 1_000;
/// Rounds of the workload per tier, alternating.
const ROUNDS: usize = 5;
const EVERY: Duration = Duration::from_millis(5);

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn token(space: &str, role: Role) -> String {
    let claims = Claims::new("bench", space, role, now_ms() / 1000, 3600);
    mint(&claims, &Hs256Key::new(SECRET.as_bytes()).unwrap())
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(base: &str, space: &str, role: Role) -> Ws {
    let url = format!("{}/v1/spaces/{space}/ws", base.replace("http://", "ws://"));
    let mut req = url.into_client_request().unwrap();
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {}", token(space, role)).parse().unwrap(),
    );
    tokio_tungstenite::connect_async_with_config(req, None, true)
        .await
        .unwrap()
        .0
}

async fn hello(ws: &mut Ws, replica: u64) {
    let msg = ClientMsg::Hello {
        v: 1,
        replica: ReplicaId(replica),
        cursor: Some(0),
    };
    ws.send(Message::Text(msg.encode().into())).await.unwrap();
    while let Some(Ok(m)) = ws.next().await {
        if let Message::Text(t) = m {
            if let Ok(ServerMsg::Welcome { .. }) = ServerMsg::decode(&t) {
                return;
            }
        }
    }
    panic!("no welcome");
}

/// Runs the workload against `base` (thoughtspace `space`); returns every
/// reader's latencies.
async fn run(base: &str, space: &str) -> Vec<Duration> {
    let start = Instant::now();
    let mut readers = Vec::new();
    for r in 0..READERS {
        let mut ws = connect(base, space, Role::Read).await;
        hello(&mut ws, 1_000 + r).await;
        readers.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(OPS);
            while lat.len() < OPS {
                let Some(Ok(Message::Text(t))) = ws.next().await else {
                    break;
                };
                if let Ok(ServerMsg::Ops { ops }) = ServerMsg::decode(&t) {
                    let now = start.elapsed().as_micros() as u64;
                    for o in ops {
                        if let Op::Set(s) = o.op {
                            let sent: u64 = s.value.unwrap_or_default().parse().unwrap_or(now);
                            lat.push(Duration::from_micros(now.saturating_sub(sent)));
                        }
                    }
                }
            }
            lat
        }));
    }
    let mut writer = connect(base, space, Role::Write).await;
    hello(&mut writer, 7).await;
    let node = NodeId(42);
    let mut hlc = (now_ms() << 16) + 1;
    let create = Op::Move(MoveOp {
        stamp: Stamp::new(hlc, 7),
        known_seq: 0,
        node,
        parent: NodeId::ROOT,
        key: KeyGen::new(7).append_after(None),
    });
    let first = ClientMsg::Push {
        batch: 0,
        ops: vec![create],
    };
    writer
        .send(Message::Text(first.encode().into()))
        .await
        .unwrap();
    let (mut sink, mut stream) = writer.split();
    let inflight = std::sync::Arc::new(tokio::sync::Semaphore::new(8));
    let acks = inflight.clone();
    let drain = tokio::spawn(async move {
        while let Some(Ok(Message::Text(t))) = stream.next().await {
            match ServerMsg::decode(&t) {
                Ok(ServerMsg::Ack { batch })
                | Ok(ServerMsg::Error {
                    batch: Some(batch), ..
                }) if batch > 0 => acks.add_permits(1),
                _ => {}
            }
        }
    });
    let mut tick = tokio::time::interval(EVERY);
    let (mut queued, mut batch, mut made) = (Vec::new(), 0u64, 0usize);
    while made < OPS || !queued.is_empty() {
        tick.tick().await;
        if made < OPS {
            hlc = hlc.max(now_ms() << 16) + 1;
            queued.push(Op::Set(SetOp {
                stamp: Stamp::new(hlc, 7),
                known_seq: 0,
                node,
                field: "t".into(),
                value: Some((start.elapsed().as_micros() as u64).to_string()),
            }));
            made += 1;
        }
        if let Ok(permit) = inflight.clone().try_acquire_owned() {
            permit.forget();
            batch += 1;
            let ops = std::mem::take(&mut queued);
            let push = ClientMsg::Push { batch, ops };
            sink.send(Message::Text(push.encode().into()))
                .await
                .unwrap();
        }
    }
    let mut all = Vec::new();
    for r in readers {
        all.extend(r.await.unwrap());
    }
    drain.abort();
    all
}

/// A ping to pong round trip on one socket of `base`, every 5 ms.
async fn ping_round_trips(base: &str, space: &str) -> Vec<Duration> {
    let mut ws = connect(base, space, Role::Read).await;
    hello(&mut ws, 900).await;
    let mut out = Vec::with_capacity(200);
    let mut tick = tokio::time::interval(EVERY);
    while out.len() < 200 {
        tick.tick().await;
        let sent = Instant::now();
        ws.send(Message::Text(ClientMsg::Ping {}.encode().into()))
            .await
            .unwrap();
        while let Some(Ok(m)) = ws.next().await {
            if let Message::Text(t) = m
                && let Ok(ServerMsg::Pong) = ServerMsg::decode(&t)
            {
                out.push(sent.elapsed());
                break;
            }
        }
    }
    out
}

/// The object's commit of one push of one op, every 5 ms: `commit(group)`
/// sends it and waits for the answer.
async fn commit_round_trips<F, Fut>(mut commit: F) -> Vec<Duration>
where
    F: FnMut(Vec<arbor_shared::http::GroupPush>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let node = NodeId(43);
    let mut hlc = (now_ms() << 16) + 1;
    let mut out = Vec::with_capacity(200);
    let mut tick = tokio::time::interval(EVERY);
    for i in 0..=200u64 {
        tick.tick().await;
        hlc = hlc.max(now_ms() << 16) + 1;
        let op = if i == 0 {
            Op::Move(MoveOp {
                stamp: Stamp::new(hlc, 9),
                known_seq: 0,
                node,
                parent: NodeId::ROOT,
                key: KeyGen::new(9).append_after(None),
            })
        } else {
            Op::Set(SetOp {
                stamp: Stamp::new(hlc, 9),
                known_seq: 0,
                node,
                field: "t".into(),
                value: Some(i.to_string()),
            })
        };
        let group = vec![arbor_shared::http::GroupPush {
            author: Some(ReplicaId(9)),
            sub: None,
            ops: vec![op],
        }];
        let sent = Instant::now();
        commit(group).await;
        if i > 0 {
            out.push(sent.elapsed());
        }
    }
    out
}

/// The commit call over HTTP: `POST .../ops/group`.
async fn http_commits(server: &str, space: &str) -> Vec<Duration> {
    let http = reqwest::Client::new();
    let url = format!("{server}/v1/spaces/{space}/ops/group");
    let token = token(space, Role::Service);
    commit_round_trips(|pushes| {
        let r = http
            .post(&url)
            .bearer_auth(&token)
            .json(&arbor_shared::http::GroupIngestBody { pushes })
            .send();
        async move {
            let r = r.await.unwrap();
            assert!(r.status().is_success(), "{}", r.status());
            r.bytes().await.unwrap();
        }
    })
    .await
}

/// The commit call over the upstream socket the object keeps open.
async fn socket_commits(server: &str, space: &str) -> Vec<Duration> {
    use arbor_shared::http::UpstreamMsg;
    let url = format!(
        "{}/v1/spaces/{space}/upstream",
        server.replace("http://", "ws://")
    );
    let mut req = url.into_client_request().unwrap();
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {}", token(space, Role::Service))
            .parse()
            .unwrap(),
    );
    let ws = tokio_tungstenite::connect_async_with_config(req, None, true)
        .await
        .unwrap()
        .0;
    let ws = std::sync::Arc::new(tokio::sync::Mutex::new(ws));
    let mut id = 0u64;
    commit_round_trips(|pushes| {
        id += 1;
        let (ws, id) = (ws.clone(), id);
        async move {
            let mut ws = ws.lock().await;
            let frame = serde_json::to_string(&UpstreamMsg::Commit { id, pushes }).unwrap();
            ws.send(Message::Text(frame.into())).await.unwrap();
            while let Some(Ok(m)) = ws.next().await {
                if let Message::Text(t) = m {
                    match serde_json::from_str::<UpstreamMsg>(&t).unwrap() {
                        UpstreamMsg::Committed { id: got, .. } if got == id => return,
                        other => {
                            assert!(!matches!(other, UpstreamMsg::Refused { .. }), "{other:?}")
                        }
                    }
                }
            }
            panic!("the upstream socket closed");
        }
    })
    .await
}

fn pct(v: &mut [Duration], p: f64) -> f64 {
    v.sort();
    v[((v.len() as f64 * p) as usize).min(v.len() - 1)].as_secs_f64() * 1e3
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
    let db = Db::new(cluster.config("bench"), 2).unwrap();

    db.create_space("probe").await.unwrap();
    let worker_port = workerd::free_port();
    // The native tier: a sync server of its own, as self-hosting runs it.
    let native_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let native_server = format!("http://{}", native_listener.local_addr().unwrap());
    // The edge tier's sync server forwards commit notices to the Worker.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = format!("http://{}", listener.local_addr().unwrap());
    let config = Config {
        db_pool: 8,
        token_leeway_s: 60,
        max_body_bytes: 4 << 20,
        max_import_bytes: 1 << 30,
        drain: Duration::from_secs(2),
        cors_origins: Vec::new(),
        socket_queue_frames: 4096,
        notify_url: Some(format!("http://127.0.0.1:{worker_port}")),
        ..Config::new(
            cluster.config("bench"),
            Hs256Key::new(SECRET.as_bytes()).unwrap(),
        )
    };
    tokio::spawn(arbor_sync_server::serve(
        native_listener,
        None,
        Config {
            notify_url: None,
            ..config.clone()
        },
        std::future::pending(),
    ));
    tokio::spawn(arbor_sync_server::serve(
        listener,
        None,
        config,
        std::future::pending(),
    ));
    let mut workerd =
        workerd::Workerd::start_with(workerd::Runner::Miniflare, &server, SECRET, worker_port)
            .await;
    // Rounds alternate the two tiers, each on fresh spaces, so that what
    // the machine does meanwhile falls on both alike.
    let (mut native, mut edge, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let (n, e) = (format!("native-{round}"), format!("edge-{round}"));
        db.create_space(&n).await.unwrap();
        db.create_space(&e).await.unwrap();
        let mut a = run(&native_server, &n).await;
        let mut b = run(&workerd.url(), &e).await;
        ratios.push(pct(&mut b, 0.99) / pct(&mut a, 0.99));
        native.extend(a);
        edge.extend(b);
    }
    ratios.sort_by(f64::total_cmp);
    let mut ping_edge = ping_round_trips(&workerd.url(), "edge-0").await;
    drop(workerd);
    workerd =
        workerd::Workerd::start_with(workerd::Runner::Wrangler, &server, SECRET, worker_port).await;
    db.create_space("edge2").await.unwrap();
    let mut edge_wrangler = run(&workerd.url(), "edge2").await;
    let mut ping_wrangler = ping_round_trips(&workerd.url(), "edge2").await;
    let mut ping_native = ping_round_trips(&native_server, "native-0").await;
    let mut over_socket = socket_commits(&native_server, "probe").await;
    let mut over_http = http_commits(&native_server, "probe").await;
    println!();
    println!(
        "| push to receipt, {READERS} sockets, 1 writer at 200 ops/s, {ROUNDS} rounds of {OPS} ops | p50 ms | p99 ms | samples |"
    );
    println!("|---|---|---|---|");
    println!(
        "| native endpoint (arbor-server) | {:.2} | {:.2} | {} |",
        pct(&mut native, 0.5),
        pct(&mut native, 0.99),
        native.len()
    );
    println!(
        "| Durable Object in one workerd (Miniflare), commits over its upstream socket | {:.2} | {:.2} | {} |",
        pct(&mut edge, 0.5),
        pct(&mut edge, 0.99),
        edge.len()
    );
    println!(
        "| ratio of p99, Durable Object / native: median of the {ROUNDS} rounds' (all rounds') | | {:.2}x ({}) | |",
        ratios[ROUNDS / 2],
        ratios
            .iter()
            .map(|r| format!("{r:.2}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "| the same Durable Object behind `wrangler dev` (a second, proxying workerd in front) | {:.2} | {:.2} | {} |",
        pct(&mut edge_wrangler, 0.5),
        pct(&mut edge_wrangler, 0.99),
        edge_wrangler.len()
    );
    println!();
    println!("| where the time goes | p50 ms | p99 ms | samples |");
    println!("|---|---|---|---|");
    for (what, v) in [
        ("ping round trip, native endpoint", &mut ping_native),
        (
            "ping round trip, Durable Object in one workerd",
            &mut ping_edge,
        ),
        (
            "ping round trip, Durable Object behind `wrangler dev`",
            &mut ping_wrangler,
        ),
        (
            "the object's commit call (1 push, 1 op) over the upstream socket",
            &mut over_socket,
        ),
        (
            "the same over HTTP (`POST .../ops/group`, the fallback)",
            &mut over_http,
        ),
    ] {
        println!(
            "| {what} | {:.2} | {:.2} | {} |",
            pct(v, 0.5),
            pct(v, 0.99),
            v.len()
        );
    }
    drop(workerd);
    cluster.stop();
}
