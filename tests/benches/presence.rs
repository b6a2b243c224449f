//! Presence fan-out: 100 sockets on one thoughtspace, each setting its
//! presence 10 times a second, through the native endpoint and through the
//! Durable Object (one workerd, Miniflare's API), side by side in one run.
//!
//! ```text
//! bash scripts/build-worker.sh && cargo bench -p arbor-e2e --bench presence
//! ```
//!
//! Every socket sends a presence state (a focus and its send time) every
//! 100 ms, the sockets' phases spread over the period, for `SECONDS` after
//! a one-second warm-up; every other socket receives each one. Reported:
//! send-to-receipt latency (p50, p99, max) over every delivery, and the
//! bytes and frames each socket received per second. `ARBOR_BENCH_SOCKETS`
//! and `ARBOR_BENCH_SECONDS` change the load. Postgres, both servers,
//! workerd and the 100 clients share the machine's 2 cores.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

#[path = "../it/workerd.rs"]
#[allow(dead_code, unreachable_pub)]
mod workerd;

use std::time::{Duration, Instant};

use arbor_e2e::stack;
use arbor_e2e::ws::{Ws, connect, hello};
use arbor_shared::NodeId;
use arbor_shared::auth::Role;
use arbor_shared::protocol::{ClientMsg, PresenceState, ServerMsg};
use arbor_sync_server::Config;
use arbor_testkit::stats::{ms, percentile};
use futures_util::{SinkExt as _, StreamExt as _};
use tokio_tungstenite::tungstenite::Message;

const SECRET: &str = "bench-secret-bench-secret-bench-secret";
const PERIOD: Duration = Duration::from_millis(100);
const WARM_UP: Duration = Duration::from_secs(1);

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// What one socket saw.
#[derive(Default)]
struct Seen {
    latencies: Vec<Duration>,
    bytes: u64,
    frames: u64,
}

/// One member: sends its presence every period, receives the others'.
async fn member(ws: Ws, me: u64, sockets: u64, start: Instant, measure: Duration) -> Seen {
    let (mut tx, mut rx) = ws.split();
    // Phases spread over the period, as independent users' would be.
    let phase = PERIOD.mul_f64(me as f64 / sockets as f64);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + phase, PERIOD);
    let from = WARM_UP;
    let until = WARM_UP + measure;
    let mut seen = Seen::default();
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let t = start.elapsed();
                if t >= until + Duration::from_secs(1) {
                    break;
                }
                if t < until {
                    let state = PresenceState {
                        focus: Some(NodeId(u128::from(me))),
                        data: Some(serde_json::json!({ "t": t.as_micros() as u64 })),
                        ..PresenceState::default()
                    };
                    let text = ClientMsg::Presence { state: Some(state) }.encode();
                    tx.send(Message::Text(text.into())).await.unwrap();
                }
            }
            msg = rx.next() => {
                let Some(Ok(Message::Text(text))) = msg else { continue };
                let now = start.elapsed();
                if now >= from && now < until {
                    seen.bytes += text.len() as u64;
                    seen.frames += 1;
                }
                if let Ok(ServerMsg::Presence { state: Some(s), .. }) = ServerMsg::decode(&text)
                    && let Some(sent) = s.data.as_ref().and_then(|d| d["t"].as_u64())
                {
                    let sent = Duration::from_micros(sent);
                    if sent >= from && sent < until {
                        seen.latencies.push(now.saturating_sub(sent));
                    }
                }
            }
        }
    }
    seen
}

/// The workload on `space` at `base`: every member's view.
async fn run(base: &str, space: &str, sockets: u64, measure: Duration) -> Vec<Seen> {
    let mut wss = Vec::new();
    for i in 0..sockets {
        let sub = format!("bench-{i}");
        let token = arbor_testkit::tokens::token(SECRET.as_bytes(), &sub, space, Role::Read, 3600);
        let mut ws = connect(base, space, Some(&token)).await.unwrap();
        hello(&mut ws, 1_000 + i, Some(0)).await;
        wss.push(ws);
    }
    let start = Instant::now();
    let tasks: Vec<_> = wss
        .into_iter()
        .enumerate()
        .map(|(i, ws)| tokio::spawn(member(ws, i as u64, sockets, start, measure)))
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

fn report(tier: &str, seen: Vec<Seen>, sockets: u64, measure: Duration) {
    let secs = measure.as_secs_f64();
    let bytes: u64 = seen.iter().map(|s| s.bytes).sum();
    let frames: u64 = seen.iter().map(|s| s.frames).sum();
    let mut lat: Vec<Duration> = seen.into_iter().flat_map(|s| s.latencies).collect();
    let expected =
        sockets * (sockets - 1) * (measure.as_millis() as u64 / PERIOD.as_millis() as u64);
    let max = lat.iter().max().copied().unwrap_or_default();
    println!(
        "| {tier} | {:.2} | {:.2} | {:.2} | {} of about {expected} | {:.0} | {:.0} |",
        ms(percentile(&mut lat, 0.5)),
        ms(percentile(&mut lat, 0.99)),
        ms(max),
        lat.len(),
        bytes as f64 / secs / sockets as f64,
        frames as f64 / secs / sockets as f64,
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let sockets = env_or("ARBOR_BENCH_SOCKETS", 100);
    let measure = Duration::from_secs(env_or("ARBOR_BENCH_SECONDS", 10));
    let cluster = arbor_testkit::PgCluster::start(arbor_testkit::PgOptions {
        throwaway: false,
        shared_buffers: "256MB",
    })
    .unwrap();
    let db = stack::database(&cluster, "bench", 2).await;
    db.create_space("native").await.unwrap();
    db.create_space("edge").await.unwrap();
    let worker_port = workerd::free_port();
    let config = Config {
        socket_queue_frames: 4096,
        notify_url: Some(format!("http://127.0.0.1:{worker_port}")),
        ..stack::config(&cluster, "bench", SECRET.as_bytes())
    };
    let server = stack::serve(config).await;
    let workerd =
        workerd::Workerd::start_with(workerd::Runner::Miniflare, &server, SECRET, worker_port)
            .await;
    println!(
        "presence fan-out: {sockets} sockets, each setting its presence every {} ms, {} s measured",
        PERIOD.as_millis(),
        measure.as_secs()
    );
    println!();
    println!(
        "| tier | p50 ms | p99 ms | max ms | deliveries | bytes/s per socket | frames/s per socket |"
    );
    println!("|---|---|---|---|---|---|---|");
    let native = run(&server, "native", sockets, measure).await;
    report("native endpoint", native, sockets, measure);
    let edge = run(&workerd.url(), "edge", sockets, measure).await;
    report("Durable Object (one workerd)", edge, sockets, measure);
}
