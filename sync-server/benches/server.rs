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

use arbor_shared::auth::{Claims, Role};
use arbor_shared::protocol::ClientMsg;
use arbor_shared::{NodeId, ReplicaId};
use arbor_sync_server::db::Db;
use arbor_sync_server::{Config, serve};
use arbor_testkit::env;
use arbor_testkit::fanout::{Writer, latencies};
use arbor_testkit::ops::Outline;
use arbor_testkit::sql::{psql_discard, snapshot_copies};
use arbor_testkit::stats::{median, ms, percentile};
use arbor_testkit::tokens;
use common::SECRET;

mod common;
use futures_util::{SinkExt as _, StreamExt as _};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

/// A hello as `replica`, with no cursor.
fn hello(replica: u64) -> Message {
    let hello = ClientMsg::Hello {
        v: 1,
        replica: ReplicaId(replica),
        cursor: None,
        root: None,
    };
    Message::Text(hello.encode().into())
}

/// A bench token for `space`, bound to replica `rid` if given.
fn token(space: &str, role: Role, rid: Option<u64>) -> String {
    let claims = Claims {
        rid: rid.map(ReplicaId),
        ..tokens::claims("bench", space, role, 3600)
    };
    tokens::mint_with(SECRET, &claims)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let nodes: usize = env::parsed("ARBOR_BENCH_NODES").unwrap_or(1_000_000);
    let cluster = common::cluster(false, "2GB");
    let c = common::database(&cluster, "bench").await;
    let db = Db::new(cluster.config("bench"), 4).unwrap();
    let info = db.create_space("big").await.unwrap();
    db.create_space("fan").await.unwrap();
    let t = Instant::now();
    for ops in Outline::new(nodes) {
        db.apply("big", None, &ops).await.unwrap();
    }
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
        ..Config::new(cluster.config("bench"), tokens::key(SECRET))
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
    let queries = snapshot_copies(info.id);
    let mut theirs = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        psql_discard(&cluster, "bench", &queries).unwrap();
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
        ws.send(hello(1_000 + r)).await.unwrap();
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
    let mut writer = connect(7, Role::Write).await;
    writer.send(hello(7)).await.unwrap();
    // The writer creates its node, then sets its text once a millisecond,
    // like a sync client with an outbox: ops queue up every millisecond and
    // go out as one push whenever fewer than 8 pushes wait for their ack.
    let mut w = Writer::new(OPS, 7, NodeId(42), start, Duration::from_millis(1), 8);
    writer
        .send(Message::Text(w.create().encode().into()))
        .await
        .unwrap();
    let (mut wsink, mut wstream) = writer.split();
    let answers = w.answers();
    let drain = tokio::spawn(async move {
        while let Some(Ok(Message::Text(t))) = wstream.next().await {
            answers.count(&t);
        }
    });
    while let Some(push) = w.next_push().await {
        wsink
            .send(Message::Text(push.encode().into()))
            .await
            .unwrap();
    }
    let mut all = Vec::new();
    for r in readers {
        all.extend(r.await.unwrap());
    }
    drain.abort();
    let (p50, p99) = (percentile(&mut all, 0.5), percentile(&mut all, 0.99));
    println!();
    println!(
        "| fan-out: 100 sockets, 1 writer at 1,000 ops/s, {OPS} ops | p50 ms | p99 ms | samples |"
    );
    println!("|---|---|---|---|");
    println!(
        "| push to receipt | {:.2} | {:.2} | {} |",
        ms(p50),
        ms(p99),
        all.len()
    );
    let _ = stop_tx.send(());
    server.await.unwrap().unwrap();
    cluster.stop();
}
