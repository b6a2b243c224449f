//! Subtree replicas in a 1M-node thoughtspace (issue 19), native endpoint.
//!
//! ```text
//! cargo bench -p arbor-e2e --bench subtree
//! ```
//!
//! The space is seeded straight into Postgres: 100 sections under ROOT,
//! each with 100 children of 100 children (10,101 nodes a section), and
//! one big section of 1,000 children of 100 children (101,001 nodes):
//! 1,111,101 nodes, each with a `text` register. Then, in one run:
//!
//! 1. Cold start of one section's subtree replica (10,101 nodes) with the
//!    native client, end to end (`sync_once`: the subtree snapshot, the
//!    hello, idle), five times.
//! 2. The cost of filtering the feed: 1,000 sockets, each its own token,
//!    and a service writer setting a register of a node inside the subtree
//!    of socket 0's root every 20 ms (50 ops/s, 300 ops; pushes batched
//!    like a sync client's outbox). Latency from queueing to receipt at
//!    socket 0. Rounds alternate the unfiltered feed (every socket gets
//!    every op) and the subtree feed (each socket a subtree of 101 nodes,
//!    roots the sections' children), three each; the ratio reported is of
//!    the two feeds' p99 over all rounds.
//! 3. The big section moved into a live subtree replica's subtree: time
//!    until the replica holds all of it (it is too large for frames, so the
//!    replica loads its subtree snapshot again); then moved back out, time
//!    until the replica no longer holds it.
//!
//! Postgres (durable settings, `shared_buffers` 2GB), the server and every
//! client share the machine's 2 cores.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arbor_client::{Replica, SyncConfig, SyncStatus, sync_forever, sync_once};
use arbor_e2e::stack;
use arbor_e2e::ws::{Ws, connect, send};
use arbor_shared::auth::{Claims, Role, mint};
use arbor_shared::protocol::{ClientMsg, ServerMsg};
use arbor_shared::{NodeId, ReplicaId};
use arbor_sync_server::Config;
use arbor_testkit::PgCluster;
use arbor_testkit::fanout::{Writer, latencies};
use arbor_testkit::stats::{median, ms, percentile};
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

const SECRET: &str = "subtree-bench-secret-subtree-bench!!";
const SPACE: &str = "tree";
/// The big section's id; its children are `BIG + 1 ..= BIG + 1_000`.
const BIG: u128 = 10_000_000;
/// Reader sockets in the feed rounds (`ARBOR_BENCH_SOCKETS`, default 1,000).
fn sockets() -> u64 {
    arbor_testkit::env::parsed("ARBOR_BENCH_SOCKETS").unwrap_or(1_000)
}

/// True if part `name` runs (`ARBOR_BENCH_ONLY=cold,feed,move`; default all).
fn runs(name: &str) -> bool {
    std::env::var("ARBOR_BENCH_ONLY").map_or(true, |v| v.split(',').any(|p| p == name))
}
const OPS: usize = 300;
/// The writer's pace: 50 ops a second.
const EVERY: Duration = Duration::from_millis(20);
const ROUNDS: usize = 3;

fn token(sub: &str, role: Role, root: Option<NodeId>) -> String {
    let claims = Claims {
        root,
        ..arbor_testkit::tokens::claims(sub, SPACE, role, 3600)
    };
    mint(&claims, &arbor_testkit::tokens::key(SECRET.as_bytes()))
}

/// The `k`-th child (1-based) of section `s` (1-based).
fn child(s: u128, k: u128) -> NodeId {
    NodeId(1_000 + (s - 1) * 100 + k)
}

/// Seeds the space with SQL (ids are small integers as uuids).
async fn seed(cluster: &PgCluster, space_id: i64) {
    let c = cluster.connect("subtree_bench").await.unwrap();
    let id = |e: &str| format!("lpad(to_hex({e}), 32, '0')::uuid");
    let key = |e: &str| format!("int4send(({e})::int) || '\\x01'::bytea");
    let root = "'00000000-0000-0000-0000-000000000000'::uuid".to_string();
    let levels = [
        // Sections 1..=100 and the big one.
        format!(
            "SELECT {}, {root}, {} FROM generate_series(1, 100) s",
            id("s"),
            key("s")
        ),
        format!("SELECT {}, {root}, {}", id(&BIG.to_string()), key("101")),
        // Their children.
        format!(
            "SELECT {}, {}, {} FROM generate_series(1, 100) s, generate_series(1, 100) k",
            id("1000 + (s - 1) * 100 + k"),
            id("s"),
            key("k")
        ),
        format!(
            "SELECT {}, {}, {} FROM generate_series(1, 1000) k",
            id(&format!("{BIG} + k")),
            id(&BIG.to_string()),
            key("k")
        ),
        // Grandchildren.
        format!(
            "SELECT {}, {}, {} FROM generate_series(1001, 11000) p, generate_series(1, 100) g",
            id("1000000 + (p - 1001) * 100 + g"),
            id("p"),
            key("g")
        ),
        format!(
            "SELECT {}, {}, {} FROM generate_series(1, 1000) p, generate_series(1, 100) g",
            id(&format!("{} + (p - 1) * 100 + g", BIG * 2)),
            id(&format!("{BIG} + p")),
            key("g")
        ),
    ];
    for level in levels {
        c.execute(
            &format!("INSERT INTO nodes (space, id, parent, key) SELECT {space_id}, * FROM ({level}) AS l"),
            &[],
        )
        .await
        .unwrap();
    }
    c.execute(
        "INSERT INTO payloads (space, node, field, value, hlc, replica)
         SELECT space, id, 'text', 'node ' || id::text, 65536, -9223372036854775807
         FROM nodes WHERE space = $1",
        &[&space_id],
    )
    .await
    .unwrap();
    c.execute(
        "UPDATE spaces SET clock_hlc = greatest(clock_hlc, 65536) WHERE id = $1",
        &[&space_id],
    )
    .await
    .unwrap();
    c.batch_execute("VACUUM ANALYZE").await.unwrap();
}

async fn head(http: &reqwest::Client, base: &str) -> u64 {
    let body: arbor_shared::http::OpsBody = http
        .get(format!("{base}/v1/spaces/{SPACE}/ops?after=0&limit=1"))
        .bearer_auth(token("owner", Role::Admin, None))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body.head_seq.unwrap()
}

/// A socket for reader `i`, welcomed at `cursor`, following `root` (or
/// the whole space).
async fn join(base: &str, i: u64, cursor: u64, root: Option<NodeId>) -> Ws {
    let mut ws = connect(
        base,
        SPACE,
        Some(&token(&format!("r{i}"), Role::Read, None)),
    )
    .await
    .unwrap();
    send(
        &mut ws,
        &ClientMsg::Hello {
            v: 1,
            replica: ReplicaId(10_000 + i),
            cursor: Some(cursor),
            root,
        },
    )
    .await;
    loop {
        let Some(Ok(Message::Text(t))) = ws.next().await else {
            panic!("no welcome");
        };
        if let Ok(ServerMsg::Welcome { .. }) = ServerMsg::decode(&t) {
            return ws;
        }
    }
}

/// One round: `SOCKETS` readers (subtree ones when `subtree`), the writer
/// setting a register of a node under socket 0's root; socket 0's
/// latencies.
async fn feed_round(base: &str, http: &reqwest::Client, subtree: bool) -> Vec<Duration> {
    let cursor = head(http, base).await;
    let mut readers = Vec::new();
    for i in 0..sockets() {
        // Socket i follows child i+1 of section i/100+1... spread over the
        // sections' children.
        let s = u128::from(i / 100) + 1;
        let k = u128::from(i % 100) + 1;
        let root = subtree.then(|| child(s, k));
        readers.push(join(base, i, cursor, root).await);
    }
    // Socket 0's root is child 1 of section 1: its first grandchild.
    let target = NodeId(1_000_000 + 1);
    let start = Instant::now();
    let mut sockets = readers.into_iter();
    let mut first = sockets.next().unwrap();
    let measured = tokio::spawn(async move {
        let mut lat = Vec::new();
        while let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_secs(2), first.next()).await
        {
            if let Message::Text(t) = m {
                lat.extend(latencies(&t, start));
            }
        }
        lat
    });
    // The others read and drop what they get (so no queue fills).
    let others: Vec<_> = sockets
        .map(|mut ws| {
            tokio::spawn(async move {
                while let Ok(Some(Ok(_))) =
                    tokio::time::timeout(Duration::from_secs(2), ws.next()).await
                {}
            })
        })
        .collect();
    let writer_sock = connect(base, SPACE, Some(&token("writer", Role::Service, None)))
        .await
        .unwrap();
    let (mut sink, mut stream) = writer_sock.split();
    sink.send(Message::Text(
        ClientMsg::Hello {
            v: 1,
            replica: ReplicaId(7),
            cursor: Some(cursor),
            root: None,
        }
        .encode()
        .into(),
    ))
    .await
    .unwrap();
    let mut w = Writer::new(OPS, 7, target, start, EVERY, 8);
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
    let lat = measured.await.unwrap();
    for o in others {
        o.abort();
    }
    drain.abort();
    lat
}

#[tokio::main]
async fn main() {
    // Durable settings, shared_buffers sized like a database host's (as
    // the server and apply benchmarks).
    let cluster = &PgCluster::start(arbor_testkit::PgOptions {
        throwaway: false,
        shared_buffers: "2GB",
    })
    .unwrap();
    let db = stack::database(cluster, "subtree_bench", 4).await;
    let info = db.create_space(SPACE).await.unwrap();
    let t = Instant::now();
    seed(cluster, info.id).await;
    let c = cluster.connect("subtree_bench").await.unwrap();
    let nodes: i64 = c
        .query_one("SELECT count(*) FROM nodes", &[])
        .await
        .unwrap()
        .get(0);
    println!(
        "# subtree benchmark: {nodes} nodes seeded in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    if std::env::var("ARBOR_BENCH_EXPLAIN").is_ok() {
        // A profiling aid: the subtree snapshot's queries, explained.
        c.batch_execute(&format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;
             SELECT set_config('arbor.space', '{}', true);
             SELECT set_config('arbor.root', '00000000-0000-0000-0000-000000000001', true);
             SELECT set_config('arbor.scoped', 't', true);",
            info.id
        ))
        .await
        .unwrap();
        let sub = "WITH RECURSIVE sub (id) AS (
             SELECT current_setting('arbor.root')::uuid
             UNION
             SELECT n.id FROM sub JOIN nodes n
               ON n.space = current_setting('arbor.space')::bigint AND n.parent = sub.id)";
        for q in [
            format!("{sub} SELECT count(*) FROM sub"),
            format!(
                "{sub} SELECT n.id, n.parent, n.key FROM sub JOIN nodes n ON n.space = current_setting('arbor.space')::bigint AND n.id = sub.id"
            ),
            format!(
                "{sub} SELECT p.node, p.field FROM sub JOIN payloads p ON p.space = current_setting('arbor.space')::bigint AND p.node = sub.id"
            ),
            format!(
                "SELECT EXISTS (SELECT 1 FROM arbor_scope_members({}, '00000000-0000-0000-0000-000000000001'::uuid, ARRAY['00000000-0000-0000-0000-000000000001'::uuid]))",
                info.id
            ),
        ] {
            for row in c
                .query(&format!("EXPLAIN (ANALYZE, BUFFERS) {q}"), &[])
                .await
                .unwrap()
            {
                let line: String = row.get(0);
                println!("{line}");
            }
        }
        c.batch_execute("COMMIT").await.unwrap();
    }
    let base = stack::serve(Config {
        db_pool: 8,
        limits: arbor_sync_server::limits::Limits {
            max_connections_per_addr: 100_000,
            ..arbor_sync_server::limits::Limits::for_pool(8)
        },
        ..stack::config(cluster, "subtree_bench", SECRET.as_bytes())
    })
    .await;
    let http = reqwest::Client::new();
    let dir = std::env::temp_dir().join(format!("arbor-subtree-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();

    // 1. Cold start of a 10,101-node subtree.
    let mut cold = Vec::new();
    for i in 0..if runs("cold") { 5 } else { 0 } {
        let replica = Arc::new(Mutex::new(
            Replica::open(&dir.join(format!("cold{i}.db"))).unwrap(),
        ));
        replica.lock().unwrap().bind_subtree(NodeId(1)).unwrap();
        let (tx, _rx) = watch::channel(SyncStatus::default());
        let started = Instant::now();
        sync_once(
            replica.clone(),
            SyncConfig::new(&base, SPACE, &token("cold", Role::Read, Some(NodeId(1)))),
            tx,
            1,
        )
        .await
        .unwrap();
        cold.push(started.elapsed());
        assert_eq!(replica.lock().unwrap().node_count().unwrap(), 10_101);
    }
    // Where it goes: the subtree snapshot's download alone.
    let mut download = Vec::new();
    for _ in 0..if runs("cold") { 5 } else { 0 } {
        let started = Instant::now();
        let body = http
            .get(format!(
                "{base}/v1/spaces/{SPACE}/subtree/{}/snapshot",
                NodeId(1)
            ))
            .bearer_auth(token("cold", Role::Read, Some(NodeId(1))))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        download.push(started.elapsed());
        assert!(body.len() > 100_000);
    }
    if !cold.is_empty() {
        println!(
            "| the subtree snapshot's download alone (HTTP, read whole) | median {:.1} ms |",
            ms(median(download))
        );
        println!(
            "| cold start of a 10,101-node subtree in {nodes} nodes (native, sync_once) | median {:.1} ms (min {:.1}, max {:.1}) | target under 200 ms |",
            ms(median(cold.clone())),
            ms(*cold.iter().min().unwrap()),
            ms(*cold.iter().max().unwrap())
        );
    }

    // 2. The feed's filtering.
    let (mut full, mut filtered) = (Vec::new(), Vec::new());
    let mut rounds = Vec::new();
    for round in 0..if runs("feed") { ROUNDS } else { 0 } {
        let mut f = feed_round(&base, &http, false).await;
        let mut s = feed_round(&base, &http, true).await;
        let (pf, ps) = (percentile(&mut f, 0.99), percentile(&mut s, 0.99));
        println!(
            "round {round}: unfiltered p99 {:.2} ms ({} receipts), subtree p99 {:.2} ms ({} receipts)",
            ms(pf),
            f.len(),
            ms(ps),
            s.len()
        );
        rounds.push(ms(ps) / ms(pf));
        full.extend(f);
        filtered.extend(s);
    }
    if !full.is_empty() {
        println!(
            "| push to receipt at the subtree's socket, {n} sockets, 50 ops/s | unfiltered p50 {:.2} / p99 {:.2} ms | subtree feed p50 {:.2} / p99 {:.2} ms | p99 ratio {:.2}x (rounds {rounds:.2?}) |",
            ms(percentile(&mut full, 0.5)),
            ms(percentile(&mut full, 0.99)),
            ms(percentile(&mut filtered, 0.5)),
            ms(percentile(&mut filtered, 0.99)),
            ms(percentile(&mut filtered, 0.99)) / ms(percentile(&mut full, 0.99)),
            n = sockets(),
        );
    }

    // 3. The big section moved in and out of a live subtree replica.
    if !runs("move") {
        return;
    }
    let replica = Arc::new(Mutex::new(Replica::open(&dir.join("live.db")).unwrap()));
    replica.lock().unwrap().bind_subtree(NodeId(2)).unwrap();
    let (tx, mut rx) = watch::channel(SyncStatus::default());
    let live = tokio::spawn(sync_forever(
        replica.clone(),
        SyncConfig::new(&base, SPACE, &token("live", Role::Write, Some(NodeId(2)))),
        tx,
        std::future::pending(),
    ));
    while replica.lock().unwrap().node_count().unwrap() != 10_101 {
        rx.changed().await.unwrap();
    }
    let moves = |parent: NodeId, hlc: u64| {
        vec![arbor_testkit::ops::mv(
            hlc,
            0xb16,
            NodeId(BIG),
            parent,
            &[0x90],
            0,
        )]
    };
    let hlc = arbor_testkit::env::now_ms() << 16;
    let push = |ops: Vec<arbor_shared::Op>| {
        let (http, base) = (http.clone(), base.clone());
        async move {
            let r = http
                .post(format!("{base}/v1/spaces/{SPACE}/ops"))
                .bearer_auth(token("owner", Role::Admin, None))
                .json(&serde_json::json!({ "ops": ops }))
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success(), "{}", r.status());
        }
    };
    let started = Instant::now();
    push(moves(NodeId(2), hlc)).await;
    // Polled every 10 ms (the resolution of these two figures).
    while replica.lock().unwrap().node_count().unwrap() != 10_101 + 101_001 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let moved_in = started.elapsed();
    let started = Instant::now();
    push(moves(NodeId::ROOT, hlc + 1)).await;
    while replica.lock().unwrap().node_count().unwrap() != 10_101 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let moved_out = started.elapsed();
    println!(
        "| a 101,001-node section moved into a live subtree replica's subtree (10,101 nodes) | held in {:.0} ms | moved back out: gone in {:.0} ms |",
        ms(moved_in),
        ms(moved_out)
    );
    live.abort();
    let _ = std::fs::remove_dir_all(&dir);
}
