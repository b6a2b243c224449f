//! Fault scenarios: 5 replicas make random ops at a steady rate while the
//! harness partitions them (0-10 s), kills the sync server, restarts
//! Postgres (`pg_ctl restart -m immediate`) and restarts replicas; then it
//! heals, quiesces and checks safety and liveness:
//!
//! - every op a replica made is in Postgres exactly once (counted per
//!   replica, by stamp), and no op was refused;
//! - every replica equals Postgres (tree and registers), with no cycle;
//! - every outbox drains within a bounded time after healing.
//!
//! Seeded (`ARBOR_SEED`, printed). The short tier runs in CI;
//! `ARBOR_SOAK_SECS=1800 cargo test --release -p arbor-e2e --test it
//! scenario -- --nocapture` is the long soak.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arbor_client::{Position, Replica, SyncConfig, SyncState, SyncStatus, sync_forever};
use arbor_e2e::proxy::FaultProxy;
use arbor_e2e::server::KillableServer;
use arbor_e2e::stack;
use arbor_shared::NodeId;
use arbor_shared::auth::Role;
use arbor_sync_server::Config;
use arbor_testkit::env;
use arbor_testkit::{PgCluster, PgOptions};
use tokio::sync::watch;

const SECRET: &str = "scenario-secret-scenario-secret-scenario!";
const REPLICAS: usize = 5;
/// Time from healing to every outbox drained and every replica at the head.
const LIVENESS_BOUND: Duration = Duration::from_secs(120);

use arbor_testkit::env::Rng;

fn token() -> String {
    arbor_testkit::tokens::token(SECRET.as_bytes(), "scenario", "s", Role::Write, 24 * 3600)
}

struct Client {
    path: std::path::PathBuf,
    proxy: FaultProxy,
    replica: Arc<Mutex<Replica>>,
    status: watch::Receiver<SyncStatus>,
    task: tokio::task::JoinHandle<()>,
    /// Ops this replica made (each is in Postgres exactly once at the end).
    made: u64,
    rejected: u64,
}

fn start_client(
    path: &std::path::Path,
    proxy: &FaultProxy,
) -> (
    Arc<Mutex<Replica>>,
    watch::Receiver<SyncStatus>,
    tokio::task::JoinHandle<()>,
) {
    let replica = Arc::new(Mutex::new(Replica::open(path).unwrap()));
    let mut config = SyncConfig::new(&proxy.url(), "s", &token());
    config.min_backoff = Duration::from_millis(50);
    config.max_backoff = Duration::from_secs(1);
    let (tx, rx) = watch::channel(SyncStatus::default());
    let r = replica.clone();
    let task = tokio::spawn(async move {
        if let Err(e) = sync_forever(r, config, tx, std::future::pending()).await {
            panic!("sync stopped: {e}");
        }
    });
    (replica, rx, task)
}

/// One random local op; returns how many ops it made.
fn random_op(r: &mut Replica, rng: &mut Rng, step: u64) -> u64 {
    let pick = |r: &Replica, rng: &mut Rng| -> Option<NodeId> {
        let n = r.node_count().ok()?;
        if n == 0 {
            return None;
        }
        let offset = rng.below(n) as i64;
        r.connection()
            .query_row("SELECT id FROM nodes LIMIT 1 OFFSET ?1", [offset], |row| {
                row.get::<_, Vec<u8>>(0)
            })
            .ok()
            .and_then(|b| <[u8; 16]>::try_from(b.as_slice()).ok())
            .map(NodeId::from_bytes)
    };
    let node = pick(r, rng);
    let target = if rng.below(4) == 0 {
        Some(NodeId::ROOT)
    } else {
        pick(r, rng)
    };
    let choice = if node.is_none() { 0 } else { rng.below(10) };
    match (choice, node, target) {
        (0..=3, _, _) => {
            let parent = target.unwrap_or(NodeId::ROOT);
            let parent = if r.is_deleted(parent).unwrap_or(true) {
                NodeId::ROOT
            } else {
                parent
            };
            match r.create_with(parent, Position::Last, &[("text", &format!("n{step}"))]) {
                Ok(_) => 2,
                Err(_) => 0,
            }
        }
        (4..=5, Some(node), Some(parent)) => {
            let pos = if rng.below(2) == 0 {
                Position::First
            } else {
                Position::Last
            };
            match r.move_node(node, parent, pos) {
                Ok(()) => 1,
                Err(_) => 0,
            }
        }
        (6, Some(node), _) => match r.delete(node) {
            Ok(()) => 1,
            Err(_) => 0,
        },
        (7, Some(node), _) if r.parent(node).ok().flatten() == Some(NodeId::TRASH) => {
            match r.restore(node) {
                Ok(()) => 1,
                Err(_) => 0,
            }
        }
        (7, _, _) => 0,
        (_, Some(node), _) => match r.set(node, "text", Some(&format!("s{step}"))) {
            Ok(()) => 1,
            Err(_) => 0,
        },
        _ => 0,
    }
}

#[derive(Debug, Default)]
struct Figures {
    ops: u64,
    partitions: u64,
    server_kills: u64,
    postgres_restarts: u64,
    client_restarts: u64,
    quiesce: Duration,
}

async fn run_scenario(seed: u64, duration: Duration) -> Figures {
    // Durable settings: the scenario restarts Postgres with `-m immediate`
    // (a crash), and a cluster with synchronous_commit=off loses commits
    // it already acknowledged (the first soak found exactly that).
    let cluster = PgCluster::start(PgOptions {
        throwaway: false,
        shared_buffers: "128MB",
    })
    .unwrap();
    // The setup's connections are closed once the database is made.
    let db = stack::database(&cluster, "scenario", 2).await;
    db.create_space("s").await.unwrap();
    let mut server = KillableServer::start(Config {
        drain: Duration::from_secs(1),
        socket_queue_frames: 4096,
        ..stack::config(&cluster, "scenario", SECRET.as_bytes())
    })
    .unwrap();
    let dir = std::env::temp_dir().join(format!("arbor-scenario-{}-{seed}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut clients = Vec::new();
    for i in 0..REPLICAS {
        let proxy = FaultProxy::start(server.addr).await.unwrap();
        let path = dir.join(format!("r{i}.db"));
        let (replica, status, task) = start_client(&path, &proxy);
        clients.push(Client {
            path,
            proxy,
            replica,
            status,
            task,
            made: 0,
            rejected: 0,
        });
    }
    let mut rng = Rng(seed | 1);
    let mut figures = Figures::default();
    let started = Instant::now();
    let mut next_fault = Instant::now() + Duration::from_millis(500 + rng.below(2_000));
    let mut heal_at: BTreeMap<usize, Instant> = BTreeMap::new();
    let mut server_back: Option<Instant> = None;
    let mut step = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let mut next_report = Instant::now() + Duration::from_secs(30);
    while started.elapsed() < duration {
        tick.tick().await;
        step += 1;
        if Instant::now() >= next_report {
            // Long soaks show their progress, so a stall is seen when it starts.
            next_report += Duration::from_secs(30);
            let statuses: Vec<_> = clients
                .iter()
                .map(|c| {
                    let s = c.status.borrow().clone();
                    let outbox = c.replica.lock().unwrap().outbox_len().unwrap_or(u64::MAX);
                    (s.state, s.cursor, outbox)
                })
                .collect();
            eprintln!(
                "scenario t={:?} {:?} {statuses:?}",
                started.elapsed().as_secs(),
                figures
            );
        }
        // Each replica makes an op about every 100 ms.
        let i = rng.below(REPLICAS as u64) as usize;
        {
            let c = &mut clients[i];
            let mut r = c.replica.lock().unwrap();
            c.made += random_op(&mut r, &mut rng, step);
        }
        let now = Instant::now();
        heal_at.retain(|&i, at| {
            if now >= *at {
                clients[i].proxy.partition(false);
                false
            } else {
                true
            }
        });
        if server_back.is_some_and(|at| now >= at) {
            server.restart().unwrap();
            server_back = None;
        }
        if now >= next_fault {
            next_fault = now + Duration::from_millis(1_000 + rng.below(3_000));
            match rng.below(4) {
                0 => {
                    let i = rng.below(REPLICAS as u64) as usize;
                    clients[i].proxy.partition(true);
                    heal_at.insert(i, now + Duration::from_millis(rng.below(10_000)));
                    figures.partitions += 1;
                }
                1 if server_back.is_none() => {
                    server.kill();
                    server_back = Some(now + Duration::from_millis(rng.below(3_000)));
                    figures.server_kills += 1;
                }
                2 => {
                    cluster.restart_immediate().unwrap();
                    figures.postgres_restarts += 1;
                }
                _ => {
                    let i = rng.below(REPLICAS as u64) as usize;
                    let c = &mut clients[i];
                    c.task.abort();
                    let _ = (&mut c.task).await;
                    c.rejected += c.status.borrow().rejected;
                    let (replica, status, task) = start_client(&c.path, &c.proxy);
                    c.replica = replica;
                    c.status = status;
                    c.task = task;
                    figures.client_restarts += 1;
                }
            }
        }
    }
    // Heal everything and quiesce.
    for c in &clients {
        c.proxy.partition(false);
    }
    if !server.is_up() {
        server.restart().unwrap();
    }
    let healed = Instant::now();
    let head = loop {
        let head = db.space("s").await.unwrap().unwrap().head_seq;
        let all = clients.iter().all(|c| {
            let s = c.status.borrow();
            s.state == SyncState::Live && s.outbox == 0 && s.cursor == Some(head)
        });
        if all {
            // Settled only if the head did not move meanwhile.
            if db.space("s").await.unwrap().unwrap().head_seq == head {
                break head;
            }
        }
        assert!(
            healed.elapsed() < LIVENESS_BOUND,
            "not quiescent {LIVENESS_BOUND:?} after healing (seed {seed}): {:?}",
            clients
                .iter()
                .map(|c| c.status.borrow().clone())
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    figures.quiesce = healed.elapsed();
    let pg = db.state("s").await.unwrap();
    let sql = cluster.connect("scenario").await.unwrap();
    for (i, c) in clients.iter().enumerate() {
        let id = {
            let r = c.replica.lock().unwrap();
            let state = r.state().unwrap();
            assert_eq!(state, pg, "replica {i} differs from Postgres (seed {seed})");
            r.check_invariants().unwrap();
            r.replica_id().0
        };
        assert_eq!(
            c.rejected + c.status.borrow().rejected,
            0,
            "replica {i} had ops refused"
        );
        let stored = (id as i64) ^ i64::MIN;
        let n: i64 = sql
            .query_one(
                "SELECT count(*) FROM ops o JOIN spaces s ON s.id = o.space
                 WHERE s.name = 's' AND o.replica = $1",
                &[&stored],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(
            n as u64, c.made,
            "replica {i}: {} ops made, {n} in Postgres (seed {seed})",
            c.made
        );
        figures.ops += c.made;
    }
    eprintln!(
        "scenario seed {seed}: {:?} of ops and faults; head {head}; {} nodes",
        figures,
        pg.nodes.len()
    );
    for c in &clients {
        c.task.abort();
    }
    drop(clients);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
    cluster.stop();
    figures
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_under_partitions_kills_and_restarts_converge_without_loss() {
    let seed = env::seed_from_env();
    let secs: u64 = env::parsed("ARBOR_SOAK_SECS").unwrap_or(20);
    eprintln!("scenario: ARBOR_SEED={seed} ARBOR_SOAK_SECS={secs}");
    // Warnings (refused pushes, lost connections) go to the test output.
    let _ = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_test_writer()
        .try_init();
    let f = run_scenario(seed, Duration::from_secs(secs)).await;
    assert!(f.ops > 0);
}
