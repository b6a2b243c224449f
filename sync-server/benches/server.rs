//! Sync server benchmarks: snapshot streaming against `psql COPY`, and
//! realtime fan-out latency.
//!
//! ```text
//! cargo bench -p arbor-sync-server --bench server
//! ```
//!
//! - Snapshot: a thoughtspace of `ARBOR_BENCH_NODES` nodes (default
//!   1,000,000, each with a text field) streamed over HTTP to a client that
//!   discards it, against `psql -c "COPY (...) TO STDOUT (FORMAT binary)"`
//!   into `/dev/null` for the same three section queries, in the same run
//!   (medians of 3).
//! - Fan-out: 100 sockets in one thoughtspace, one writer pushing one op
//!   per millisecond over its socket for 3 s; latency from push to receipt
//!   at every socket (p50, p99). Everything (Postgres, server, 101 clients)
//!   shares this machine's 2 cores.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::time::{Duration, Instant};

use arbor_shared::auth::{Claims, Hs256Key, Role, mint};
use arbor_shared::protocol::{ClientMsg, ServerMsg};
use arbor_shared::{KeyGen, MoveOp, NodeId, Op, ReplicaId, SetOp, Stamp};
use arbor_sync_server::db::{Db, migrate};
use arbor_sync_server::{Config, serve};
use arbor_testkit::{PgCluster, PgOptions, pg_bin_dir};
use futures_util::{SinkExt as _, StreamExt as _};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

const SECRET: &[u8] = b"bench-secret-bench-secret-bench-secret";

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn token(space: &str, role: Role, rid: Option<u64>) -> String {
    let claims = Claims {
        rid: rid.map(ReplicaId),
        ..Claims::new("bench", space, role, now_ms() / 1000, 3600)
    };
    mint(&claims, &Hs256Key::new(SECRET).unwrap())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

async fn build(db: &Db, space: &str, nodes: usize) {
    let mut keys = KeyGen::new(1);
    let mut hlc = (now_ms() - 3_600_000) << 16;
    let mut last = None;
    let mut made = 0usize;
    while made < nodes {
        let mut ops = Vec::new();
        for _ in 0..5_000.min(nodes - made) {
            made += 1;
            let node = NodeId(made as u128 + (1 << 100));
            let parent = if made <= 1_000 {
                NodeId::ROOT
            } else {
                NodeId((made % 1_000) as u128 + 1 + (1 << 100))
            };
            let key = keys.append_after(last.as_ref());
            last = Some(key.clone());
            hlc += 1;
            ops.push(Op::Move(MoveOp {
                stamp: Stamp::new(hlc, 1),
                known_seq: 0,
                node,
                parent,
                key,
            }));
            hlc += 1;
            ops.push(Op::Set(SetOp {
                stamp: Stamp::new(hlc, 1),
                known_seq: 0,
                node,
                field: "text".into(),
                value: Some(format!("node number {made} of the benchmark outline")),
            }));
        }
        db.apply(space, None, &ops).await.unwrap();
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let nodes: usize = std::env::var("ARBOR_BENCH_NODES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let cluster = PgCluster::start(PgOptions {
        throwaway: false,
        shared_buffers: "2GB",
    })
    .unwrap();
    let admin = cluster.connect("postgres").await.unwrap();
    admin.batch_execute("CREATE DATABASE bench").await.unwrap();
    let mut c = cluster.connect("bench").await.unwrap();
    migrate(&mut c).await.unwrap();
    let db = Db::new(cluster.config("bench"), 4).unwrap();
    let info = db.create_space("big").await.unwrap();
    db.create_space("fan").await.unwrap();
    let t = Instant::now();
    build(&db, "big", nodes).await;
    println!(
        "# sync server benchmark: {nodes} nodes built in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    c.batch_execute("VACUUM ANALYZE").await.unwrap();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let config = Config {
        db_pool: 8,
        token_leeway_s: 60,
        max_body_bytes: 4 << 20,
        max_import_bytes: 4 << 30,
        drain: Duration::from_secs(5),
        cors_origins: Vec::new(),
        socket_queue_frames: 1024,
        notify_url: None,
        ..Config::new(cluster.config("bench"), Hs256Key::new(SECRET).unwrap())
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, None, config, async move {
        let _ = stop_rx.await;
    }));
    let http = reqwest::Client::new();

    // Snapshot against psql COPY of the same three queries.
    let mut ours = Vec::new();
    let mut bytes = 0usize;
    for _ in 0..3 {
        let t = Instant::now();
        let r = http
            .get(format!("{base}/v1/spaces/big/snapshot"))
            .bearer_auth(token("big", Role::Read, None))
            .send()
            .await
            .unwrap();
        let mut stream = r.bytes_stream();
        bytes = 0;
        while let Some(chunk) = stream.next().await {
            bytes += chunk.unwrap().len();
        }
        ours.push(t.elapsed());
    }
    let id = info.id;
    let queries = [
        format!(
            "COPY (SELECT id, parent, key FROM nodes WHERE space = {id}) TO STDOUT (FORMAT binary)"
        ),
        format!(
            "COPY (SELECT node, field, value, hlc, replica FROM payloads WHERE space = {id}) TO STDOUT (FORMAT binary)"
        ),
        format!(
            "COPY (SELECT seq, hlc, replica, kind, node, parent, key, field, value, known_seq, applied, prev_parent, prev_key FROM ops WHERE space = {id} ORDER BY seq) TO STDOUT (FORMAT binary)"
        ),
    ];
    let psql = pg_bin_dir().unwrap().join("psql");
    let mut theirs = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        for q in &queries {
            let status = std::process::Command::new(&psql)
                .arg(cluster.conn_string("bench"))
                .args(["-X", "-q", "-c", q])
                .stdout(std::process::Stdio::null())
                .status()
                .unwrap();
            assert!(status.success());
        }
        theirs.push(t.elapsed());
    }
    let (o, p) = (median(ours), median(theirs));
    println!();
    println!("| snapshot of {nodes} nodes | median s | MB |");
    println!("|---|---|---|");
    println!(
        "| arbor-server over HTTP, discarded | {:.2} | {:.0} |",
        o.as_secs_f64(),
        bytes as f64 / 1e6
    );
    println!(
        "| psql COPY (FORMAT binary) of the same 3 queries > /dev/null | {:.2} | |",
        p.as_secs_f64()
    );
    println!("| ratio | {:.2}x | |", o.as_secs_f64() / p.as_secs_f64());

    // Fan-out: 100 readers, one writer at 1,000 ops/s.
    let ws_base = base.replace("http://", "ws://");
    let connect = |rid: u64, role: Role| {
        let mut req = format!("{ws_base}/v1/spaces/fan/ws")
            .into_client_request()
            .unwrap();
        req.headers_mut().insert(
            "authorization",
            format!("Bearer {}", token("fan", role, Some(rid)))
                .parse()
                .unwrap(),
        );
        // Nagle off, like the server: realtime frames are latency-bound.
        async move {
            tokio_tungstenite::connect_async_with_config(req, None, true)
                .await
                .unwrap()
                .0
        }
    };
    let start = Instant::now();
    const OPS: usize = 3_000;
    let mut readers = Vec::new();
    for r in 0..100u64 {
        let mut ws = connect(1_000 + r, Role::Read).await;
        ws.send(Message::Text(
            ClientMsg::Hello {
                v: 1,
                replica: ReplicaId(1_000 + r),
                cursor: None,
            }
            .encode()
            .into(),
        ))
        .await
        .unwrap();
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
    let mut writer = connect(7, Role::Write).await;
    writer
        .send(Message::Text(
            ClientMsg::Hello {
                v: 1,
                replica: ReplicaId(7),
                cursor: None,
            }
            .encode()
            .into(),
        ))
        .await
        .unwrap();
    // The writer creates its node, then sets its text once a millisecond.
    let node = NodeId(42);
    let mut hlc = now_ms() << 16;
    hlc += 1;
    let create = Op::Move(MoveOp {
        stamp: Stamp::new(hlc, 7),
        known_seq: 0,
        node,
        parent: NodeId::ROOT,
        key: KeyGen::new(7).append_after(None),
    });
    writer
        .send(Message::Text(
            ClientMsg::Push {
                batch: 0,
                ops: vec![create],
            }
            .encode()
            .into(),
        ))
        .await
        .unwrap();
    let (mut wsink, mut wstream) = writer.split();
    // Like a sync client with an outbox: ops queue up every millisecond and
    // go out as one push whenever fewer than 8 pushes wait for their ack.
    let inflight = std::sync::Arc::new(tokio::sync::Semaphore::new(8));
    let acks = inflight.clone();
    let drain = tokio::spawn(async move {
        while let Some(Ok(Message::Text(t))) = wstream.next().await {
            match ServerMsg::decode(&t) {
                Ok(ServerMsg::Ack { batch })
                | Ok(ServerMsg::Error {
                    batch: Some(batch), ..
                }) if batch > 0 => {
                    acks.add_permits(1);
                }
                _ => {}
            }
        }
    });
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    let mut queued = Vec::new();
    let mut batch = 0u64;
    let mut made = 0usize;
    while made < OPS || !queued.is_empty() {
        tick.tick().await;
        if made < OPS {
            hlc = hlc.max(now_ms() << 16) + 1;
            let sent = start.elapsed().as_micros() as u64;
            queued.push(Op::Set(SetOp {
                stamp: Stamp::new(hlc, 7),
                known_seq: 0,
                node,
                field: "t".into(),
                value: Some(sent.to_string()),
            }));
            made += 1;
        }
        if let Ok(permit) = inflight.clone().try_acquire_owned() {
            permit.forget();
            batch += 1;
            let ops = std::mem::take(&mut queued);
            wsink
                .send(Message::Text(
                    ClientMsg::Push { batch, ops }.encode().into(),
                ))
                .await
                .unwrap();
        }
    }
    let mut all = Vec::new();
    for r in readers {
        all.extend(r.await.unwrap());
    }
    drain.abort();
    all.sort();
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
    println!();
    println!(
        "| fan-out: 100 sockets, 1 writer at 1,000 ops/s, {OPS} ops | p50 ms | p99 ms | samples |"
    );
    println!("|---|---|---|---|");
    println!(
        "| push to receipt | {:.2} | {:.2} | {} |",
        pct(0.5).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        all.len()
    );
    let _ = stop_tx.send(());
    server.await.unwrap().unwrap();
    cluster.stop();
}
