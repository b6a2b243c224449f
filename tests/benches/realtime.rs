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

use arbor_e2e::stack;
use arbor_e2e::ws::{Ws, connect, hello};
use arbor_shared::auth::Role;
use arbor_shared::protocol::{ClientMsg, ServerMsg};
use arbor_shared::{KeyGen, MoveOp, NodeId, Op, ReplicaId, SetOp, Stamp};
use arbor_sync_server::Config;
use arbor_testkit::env::now_ms;
use arbor_testkit::fanout::{Writer, latencies};
use arbor_testkit::stats::{ms, percentile};
use futures_util::{SinkExt as _, StreamExt as _};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

const SECRET: &str = "bench-secret-bench-secret-bench-secret";
const READERS: u64 = 20;
const OPS: usize = 1_000;
/// Rounds of the workload per tier, alternating.
const ROUNDS: usize = 5;
const EVERY: Duration = Duration::from_millis(5);

/// A token of its own for each socket (a subject per replica, as real
/// clients have: one subject may hold only so many sockets). The writer is
/// a service, so no per-token rate applies to its 200 pushes a second in
/// either tier.
fn token(space: &str, role: Role, replica: u64) -> String {
    let sub = format!("bench-{replica}");
    arbor_testkit::tokens::token(SECRET.as_bytes(), &sub, space, role, 3600)
}

/// A socket on `space` at `base` with a token of `role`, welcomed as
/// `replica`.
async fn join(base: &str, space: &str, role: Role, replica: u64) -> Ws {
    let mut ws = connect(base, space, Some(&token(space, role, replica)))
        .await
        .unwrap();
    hello(&mut ws, replica, Some(0)).await;
    ws
}

/// Runs the workload against `base` (thoughtspace `space`); returns every
/// reader's latencies.
async fn run(base: &str, space: &str) -> Vec<Duration> {
    let start = Instant::now();
    let mut readers = Vec::new();
    for r in 0..READERS {
        let mut ws = join(base, space, Role::Read, 1_000 + r).await;
        readers.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(OPS);
            while lat.len() < OPS {
                let Some(Ok(Message::Text(t))) = ws.next().await else {
                    break;
                };
                lat.extend(latencies(&t, start));
            }
            lat
        }));
    }
    let mut writer = join(base, space, Role::Service, 7).await;
    let mut w = Writer::new(OPS, 7, NodeId(42), start, EVERY, 8);
    writer
        .send(Message::Text(w.create().encode().into()))
        .await
        .unwrap();
    let (mut sink, mut stream) = writer.split();
    let answers = w.answers();
    let drain = tokio::spawn(async move {
        while let Some(Ok(Message::Text(t))) = stream.next().await {
            answers.count(&t);
        }
    });
    while let Some(push) = w.next_push().await {
        sink.send(Message::Text(push.encode().into()))
            .await
            .unwrap();
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
    let mut ws = join(base, space, Role::Read, 900).await;
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
            root: None,
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
    let token = token(space, Role::Service, 0);
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
        format!("Bearer {}", token(space, Role::Service, 0))
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
    ms(percentile(v, p))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let cluster = arbor_testkit::PgCluster::start(arbor_testkit::PgOptions {
        throwaway: false,
        shared_buffers: "256MB",
    })
    .unwrap();
    let db = stack::database(&cluster, "bench", 2).await;

    db.create_space("probe").await.unwrap();
    let worker_port = workerd::free_port();
    let config = Config {
        db_pool: 8,
        socket_queue_frames: 4096,
        notify_url: Some(format!("http://127.0.0.1:{worker_port}")),
        ..stack::config(&cluster, "bench", SECRET.as_bytes())
    };
    // The native tier: a sync server of its own, as self-hosting runs it.
    let native_server = stack::serve(Config {
        notify_url: None,
        ..config.clone()
    })
    .await;
    // The edge tier's sync server forwards commit notices to the Worker.
    let server = stack::serve(config).await;
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
