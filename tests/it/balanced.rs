//! Several server processes behind a load balancer (issue 18): three
//! `arbor-server serve` processes on one database behind a round-robin
//! balancer that skips a backend that refuses connections and one whose
//! `/readyz` (admin listener) fails. Replicas sync through it, each
//! connection to whichever process the balancer picks (snapshots over
//! HTTP, realtime sockets), while they edit. Mid-run one process is killed
//! (SIGKILL); then a rolling deploy: a new process joins and another is
//! drained (SIGTERM: its sockets close with 1001, or are cut when it exits
//! first, and it exits 0); then a new replica cold-starts. At the end every
//! replica equals Postgres and every op each one made is stored exactly
//! once.
//!
//! Seeded (`ARBOR_SEED`, printed). Needs the `arbor-server` binary: built
//! on first use (see `arbor_e2e::process::binary`).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arbor_client::{Position, Replica, SyncConfig, SyncState, SyncStatus, sync_forever};
use arbor_e2e::balancer::Balancer;
use arbor_e2e::process::ServerProcess;
use arbor_e2e::{stack, ws};
use arbor_shared::NodeId;
use arbor_shared::auth::Role;
use arbor_testkit::{PgCluster, env};
use tokio::io::AsyncReadExt as _;
use tokio::net::TcpListener;
use tokio::sync::watch;

const SECRET: &str = "balanced-secret-balanced-secret-balanced!";
/// Replicas editing from the start (one more cold-starts at the end).
const REPLICAS: usize = 6;
/// Ops committed between one fault and the next.
const OPS_BETWEEN: u64 = 60;
/// Every wait on a condition gives up (failing the test) after this.
const BOUND: Duration = Duration::from_secs(45);
/// How often the balancer probes each process's `/readyz`.
const HEALTH_EVERY: Duration = Duration::from_millis(100);
/// The server's flags besides its addresses and database. Pushes per
/// token are raised from 100 a second: each push is also charged its
/// database time past 10 ms, and on a loaded 2-core machine ordinary pushes
/// take that long, so the default limit refuses them (4029) and stretches
/// every recovery by seconds.
const SERVER_ARGS: [&str; 8] = [
    "--drain-s",
    "2",
    "--db-pool",
    "4",
    "--socket-queue-frames",
    "4096",
    "--pushes-per-s",
    "1000",
];

use arbor_testkit::env::Rng;

fn token(sub: &str, role: Role) -> String {
    arbor_testkit::tokens::token(SECRET.as_bytes(), sub, "s", role, 3600)
}

/// A replica syncing for ever through `server`.
struct Client {
    replica: Arc<Mutex<Replica>>,
    status: watch::Receiver<SyncStatus>,
    task: tokio::task::JoinHandle<()>,
}

impl Client {
    fn start(path: &std::path::Path, server: &str, name: &str) -> Client {
        let replica = Arc::new(Mutex::new(Replica::open(path).unwrap()));
        let mut config = SyncConfig::new(server, "s", &token(name, Role::Write));
        config.min_backoff = Duration::from_millis(50);
        config.max_backoff = Duration::from_secs(1);
        let (tx, status) = watch::channel(SyncStatus::default());
        let r = replica.clone();
        let task = tokio::spawn(async move {
            if let Err(e) = sync_forever(r, config, tx, std::future::pending()).await {
                panic!("sync stopped: {e}");
            }
        });
        Client {
            replica,
            status,
            task,
        }
    }

    /// Connected and caught up: `Live`, or `Pushing` while the editor keeps
    /// its outbox from ever emptying (under load a push's ack can trail the
    /// next edit every time; quiescence checks that every outbox drains).
    fn live(&self) -> bool {
        matches!(
            self.status.borrow().state,
            SyncState::Live | SyncState::Pushing
        )
    }
}

/// A random node of `r` (ROOT when it has none).
fn pick(r: &Replica, rng: &mut Rng) -> NodeId {
    let n = r.node_count().unwrap_or(0);
    if n == 0 {
        return NodeId::ROOT;
    }
    r.connection()
        .query_row(
            "SELECT id FROM nodes LIMIT 1 OFFSET ?1",
            [rng.below(n) as i64],
            |row| row.get::<_, Vec<u8>>(0),
        )
        .ok()
        .and_then(|b| <[u8; 16]>::try_from(b.as_slice()).ok())
        .map_or(NodeId::ROOT, NodeId::from_bytes)
}

/// One random create (2 ops: the node and its text), move or set; returns
/// the ops it made (0 when the replica refused it, e.g. a move into its
/// own subtree).
fn random_op(r: &mut Replica, rng: &mut Rng, step: u64) -> u64 {
    let node = pick(r, rng);
    let target = if rng.below(4) == 0 {
        NodeId::ROOT
    } else {
        pick(r, rng)
    };
    let usable = |r: &Replica, n: NodeId| n != NodeId::ROOT && !r.is_deleted(n).unwrap_or(true);
    match rng.below(10) {
        0..=3 => {
            let parent = if usable(r, target) {
                target
            } else {
                NodeId::ROOT
            };
            let text = format!("n{step}");
            r.create_with(parent, Position::Last, &[("text", &text)])
                .map_or(0, |_| 2)
        }
        4..=6 if usable(r, node) => {
            let pos = if rng.below(2) == 0 {
                Position::First
            } else {
                Position::Last
            };
            r.move_node(node, target, pos).map_or(0, |()| 1)
        }
        _ if usable(r, node) => r
            .set(node, "text", Some(&format!("s{step}")))
            .map_or(0, |()| 1),
        _ => 0,
    }
}

/// Edits a random replica of `replicas` every 10 ms until `stop`, counting
/// the ops each made into `made`.
async fn edit(
    replicas: Vec<Arc<Mutex<Replica>>>,
    made: Arc<Vec<AtomicU64>>,
    mut rng: Rng,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for step in 0.. {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let i = rng.below(replicas.len() as u64) as usize;
        let n = random_op(&mut replicas[i].lock().unwrap(), &mut rng, step);
        made[i].fetch_add(n, Ordering::Relaxed);
    }
}

/// Open realtime sockets of the process whose admin listener is `admin`
/// (the sum over `arbor_sockets_active`'s series); `None` if it does not
/// answer.
async fn sockets(admin: SocketAddr) -> Option<u64> {
    let text = reqwest::Client::new()
        .get(format!("http://{admin}/metrics"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let sum: f64 = text
        .lines()
        .filter_map(|l| l.strip_prefix("arbor_sockets_active"))
        .filter(|rest| rest.starts_with([' ', '{']))
        .filter_map(|rest| rest.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    Some(sum as u64)
}

/// Waits until `check` says `Ok`, polling; panics with `what` and its last
/// `Err` after [`BOUND`].
async fn until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let deadline = Instant::now() + BOUND;
    loop {
        let last = match check().await {
            Ok(()) => return,
            Err(last) => last,
        };
        assert!(
            Instant::now() < deadline,
            "{what}: not within {BOUND:?}; last: {last}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn statuses(clients: &[Client]) -> String {
    let s: Vec<_> = clients
        .iter()
        .map(|c| {
            let s = c.status.borrow();
            (s.state.name(), s.cursor, s.outbox)
        })
        .collect();
    format!("{s:?}")
}

/// Every replica is live, the processes in `up` hold exactly one socket
/// per replica between them (so none is left on a dead process), and the
/// head reached `head`.
async fn recovered(
    db: &arbor_sync_server::db::Db,
    clients: &[Client],
    up: &[SocketAddr],
    head: u64,
) -> Result<(), String> {
    let mut held = Vec::new();
    for &admin in up {
        held.push(sockets(admin).await);
    }
    let now = db
        .space("s")
        .await
        .map_err(|e| e.to_string())?
        .map_or(0, |s| s.head_seq);
    let total: u64 = held.iter().flatten().sum();
    if clients.iter().all(Client::live) && total == clients.len() as u64 && now >= head {
        Ok(())
    } else {
        Err(format!(
            "head {now} (want {head}), sockets per process {held:?}, replicas {}",
            statuses(clients)
        ))
    }
}

/// Index of the process in `among` holding the most sockets, and how many.
async fn busiest(servers: &[Option<ServerProcess>], among: &[usize]) -> (usize, u64) {
    let mut best = (among[0], 0);
    for &i in among {
        let n = match &servers[i] {
            Some(s) => sockets(s.admin).await.unwrap_or(0),
            None => 0,
        };
        if n > best.1 {
            best = (i, n);
        }
    }
    best
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_behind_a_balancer_survive_a_killed_and_a_drained_process() {
    let seed = env::seed("balanced");
    let _ = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_test_writer()
        .try_init();
    // Under cargo, a build of the binary first (a no-op when it is fresh).
    let built = Instant::now();
    let binary = tokio::task::spawn_blocking(arbor_e2e::process::binary)
        .await
        .unwrap()
        .unwrap();
    eprintln!("balanced: {} in {:?}", binary.display(), built.elapsed());
    let started = Instant::now();
    let cluster = PgCluster::shared();
    let db = stack::database(cluster, "e2e_balanced", 2).await;
    db.create_space("s").await.unwrap();
    let database_url = cluster.conn_string("e2e_balanced");
    let spawn = || ServerProcess::start(&database_url, SECRET, &SERVER_ARGS).unwrap();

    // Three processes on one database, behind the balancer, each with an
    // active health check on its admin listener's /readyz.
    let mut servers: Vec<Option<ServerProcess>> = (0..3).map(|_| Some(spawn())).collect();
    for s in servers.iter().flatten() {
        s.wait_ready(BOUND).await.unwrap();
    }
    let apis: Vec<_> = servers.iter().flatten().map(|s| s.api).collect();
    let balancer = Balancer::start(&apis).await.unwrap();
    for (i, s) in servers.iter().flatten().enumerate() {
        balancer.check(i, s.admin, "/readyz", HEALTH_EVERY);
    }
    let admin_of = |servers: &[Option<ServerProcess>], up: &[usize]| -> Vec<SocketAddr> {
        up.iter()
            .filter_map(|&i| servers[i].as_ref().map(|s| s.admin))
            .collect()
    };
    eprintln!(
        "balanced: processes {:?} behind {} ({:?} to start)",
        servers
            .iter()
            .flatten()
            .map(|s| s.pid())
            .collect::<Vec<_>>(),
        balancer.url(),
        started.elapsed()
    );

    let dir = std::env::temp_dir().join(format!("arbor-balanced-{}-{seed}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut clients: Vec<Client> = (0..REPLICAS)
        .map(|i| {
            Client::start(
                &dir.join(format!("r{i}.db")),
                &balancer.url(),
                &format!("r{i}"),
            )
        })
        .collect();
    let mut up = vec![0, 1, 2];
    until("every replica live", || {
        let up = admin_of(&servers, &up);
        let (db, clients) = (&db, &clients);
        async move { recovered(db, clients, &up, 0).await }
    })
    .await;
    let report = balancer.report();
    assert!(
        report.iter().all(|b| b.forwarded > 0),
        "round robin reaches every process: {report:?}"
    );

    let made: Arc<Vec<AtomicU64>> = Arc::new((0..REPLICAS).map(|_| AtomicU64::new(0)).collect());
    let (stop_editing, stop_rx) = watch::channel(false);
    let editor = tokio::spawn(edit(
        clients.iter().map(|c| c.replica.clone()).collect(),
        made.clone(),
        Rng(seed | 1),
        stop_rx,
    ));
    let head = || async { db.space("s").await.unwrap().unwrap().head_seq };
    until("ops committed before the kill", || async {
        let h = head().await;
        (h >= OPS_BETWEEN)
            .then_some(())
            .ok_or(format!("head {h}; {}", statuses(&clients)))
    })
    .await;

    // A crash: SIGKILL the process holding the most sockets. Its clients
    // reconnect through the balancer (the connects it refuses are skipped,
    // and its health check marks it down) to the other two.
    let (victim, held) = busiest(&servers, &up).await;
    assert!(held > 0, "some process holds sockets");
    let mut killed = servers[victim].take().unwrap();
    let status = killed.kill().unwrap();
    let killed_at = Instant::now();
    up.retain(|&i| i != victim);
    let target = head().await + OPS_BETWEEN;
    until("every replica live on the two others", || {
        let up = admin_of(&servers, &up);
        let (db, clients) = (&db, &clients);
        async move { recovered(db, clients, &up, target).await }
    })
    .await;
    eprintln!(
        "balanced: killed process {} ({status}) holding {held} of {REPLICAS} sockets; \
         every replica live on the others after {:?}",
        killed.pid(),
        killed_at.elapsed()
    );

    // A rolling deploy: a new process joins, then one of the old ones is
    // drained. A socket held straight on it (not through the balancer)
    // sees the close code.
    servers.push(Some(spawn()));
    let joined = servers.len() - 1;
    let new = servers[joined].as_ref().unwrap();
    new.wait_ready(BOUND).await.unwrap();
    assert_eq!(balancer.add(new.api), joined);
    balancer.check(joined, new.admin, "/readyz", HEALTH_EVERY);
    up.push(joined);
    let (drained, held) = busiest(&servers, &up[..up.len() - 1]).await;
    let old = servers[drained].as_ref().unwrap();
    let mut witness = ws::connect(&old.url(), "s", Some(&token("witness", Role::Read)))
        .await
        .unwrap();
    ws::hello(&mut witness, 0x0b5e_47e4, Some(head().await)).await;
    let witness = tokio::spawn(async move { ws::ending(&mut witness).await });
    old.terminate().unwrap();
    let drain_at = Instant::now();
    let (errors, code) = tokio::time::timeout(BOUND, witness).await.unwrap().unwrap();
    assert_eq!(
        code,
        Some(1001),
        "a drained socket closes 1001 ({errors:?})"
    );
    let old = servers[drained].as_mut().unwrap();
    let exit = old.wait_exit(BOUND).await;
    assert!(
        exit.is_some_and(|s| s.success()),
        "a drained process exits 0: {exit:?}"
    );
    let log = old.messages();
    assert!(
        ["shutting down: draining", "stopped"]
            .iter()
            .all(|m| log.iter().any(|l| l == m)),
        "the drain's log lines: {log:?}"
    );
    let drain_took = drain_at.elapsed();
    servers[drained] = None;
    up.retain(|&i| i != drained);
    let target = head().await + OPS_BETWEEN;
    until("every replica live after the drain", || {
        let up = admin_of(&servers, &up);
        let (db, clients) = (&db, &clients);
        async move { recovered(db, clients, &up, target).await }
    })
    .await;
    eprintln!(
        "balanced: drained process {} holding {held} sockets in {drain_took:?}; \
         the witness socket ended {code:?}; every replica live after {:?}",
        drained,
        drain_at.elapsed()
    );

    // A replica joining now cold-starts (snapshot over HTTP) through the
    // balancer, while the others keep editing.
    clients.push(Client::start(&dir.join("late.db"), &balancer.url(), "late"));
    until("the late replica live", || async {
        clients[REPLICAS]
            .live()
            .then_some(())
            .ok_or(statuses(&clients))
    })
    .await;

    // Quiesce: the editor stops; every replica drains its outbox and
    // reaches the head.
    stop_editing.send_replace(true);
    editor.await.unwrap();
    let quiet = Instant::now();
    until("quiescence", || {
        let (db, clients) = (&db, &clients);
        async move {
            let head = db.space("s").await.unwrap().unwrap().head_seq;
            let all = clients.iter().all(|c| {
                let s = c.status.borrow();
                s.state == SyncState::Live && s.outbox == 0 && s.cursor == Some(head)
            });
            // Settled only if the head did not move meanwhile.
            if all && db.space("s").await.unwrap().unwrap().head_seq == head {
                Ok(())
            } else {
                Err(format!("head {head}; {}", statuses(clients)))
            }
        }
    })
    .await;
    let quiesce = quiet.elapsed();
    let settled = head().await;

    // Safety: every replica equals Postgres; every op made is stored once.
    let pg = db.state("s").await.unwrap();
    let sql = cluster.connect("e2e_balanced").await.unwrap();
    let mut total = 0;
    for (i, c) in clients.iter().enumerate() {
        let id = {
            let r = c.replica.lock().unwrap();
            assert_eq!(
                r.state().unwrap(),
                pg,
                "replica {i} differs from Postgres (seed {seed})"
            );
            r.check_invariants().unwrap();
            r.replica_id().0
        };
        assert_eq!(c.status.borrow().rejected, 0, "replica {i} had ops refused");
        let stored: i64 = sql
            .query_one(
                "SELECT count(*) FROM ops o JOIN spaces s ON s.id = o.space
                 WHERE s.name = 's' AND o.replica = $1",
                &[&((id as i64) ^ i64::MIN)],
            )
            .await
            .unwrap()
            .get(0);
        let made = made.get(i).map_or(0, |m| m.load(Ordering::Relaxed));
        assert_eq!(
            stored as u64, made,
            "replica {i}: {made} ops made, {stored} in Postgres (seed {seed})"
        );
        total += made;
    }
    assert!(total > 3 * OPS_BETWEEN, "the replicas edited: {total} ops");
    eprintln!(
        "balanced seed {seed}: {total} ops, head {}, {} nodes; quiesced in {quiesce:?}; \
         {:?} in all; balancer {:?}, {} refused",
        settled,
        pg.nodes.len(),
        started.elapsed(),
        balancer.report(),
        balancer.refused()
    );
    for c in &clients {
        c.task.abort();
    }
    drop(clients);
    drop(servers);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A backend that writes its index to every connection.
async fn numbered(index: u8) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            use tokio::io::AsyncWriteExt as _;
            let _ = s.write_all(&[index]).await;
        }
    });
    (addr, task)
}

/// The index of the backend a new connection through `b` reaches, `None`
/// if it is dropped.
async fn reached(b: &Balancer) -> Option<u8> {
    let mut s = tokio::net::TcpStream::connect(b.addr).await.unwrap();
    let mut byte = [0u8; 1];
    match tokio::time::timeout(Duration::from_secs(5), s.read(&mut byte)).await {
        Ok(Ok(1)) => Some(byte[0]),
        _ => None,
    }
}

#[tokio::test]
async fn the_balancer_goes_round_robin_and_skips_what_is_down() {
    let mut backends = Vec::new();
    for i in 0..3 {
        backends.push(numbered(i).await);
    }
    let b = Balancer::start(&backends.iter().map(|(a, _)| *a).collect::<Vec<_>>())
        .await
        .unwrap();
    let mut seen = Vec::new();
    for _ in 0..6 {
        seen.push(reached(&b).await);
    }
    assert_eq!(seen, [0, 1, 2, 0, 1, 2].map(Some));

    // Backend 1 stops listening: its connects fail and are passed on.
    backends[1].1.abort();
    let _ = (&mut backends[1].1).await;
    for _ in 0..6 {
        assert_ne!(reached(&b).await, Some(1));
    }
    let report = b.report();
    assert!(report[1].failed > 0 && !report[1].down, "{report:?}");

    // Marked down: skipped without a connect.
    b.set_down(2, true);
    for _ in 0..3 {
        assert_eq!(reached(&b).await, Some(0));
    }
    // Nothing up: the client is dropped.
    b.set_down(0, true);
    assert_eq!(reached(&b).await, None);
    assert_eq!(b.refused(), 1);

    // An active check marks a backend up on 200, down otherwise.
    let probe = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let probe_addr = probe.local_addr().unwrap();
    let healthy = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let answers = healthy.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = probe.accept().await {
            use tokio::io::AsyncWriteExt as _;
            let status = if answers.load(Ordering::SeqCst) {
                "200 OK"
            } else {
                "503 Service Unavailable"
            };
            let mut request = [0u8; 1024];
            let _ = s.read(&mut request).await;
            let _ = s
                .write_all(format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n").as_bytes())
                .await;
        }
    });
    b.check(2, probe_addr, "/readyz", Duration::from_millis(10));
    let deadline = Instant::now() + Duration::from_secs(10);
    while b.is_down(2) {
        assert!(Instant::now() < deadline, "a 200 marks it up");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(reached(&b).await, Some(2));
    healthy.store(false, Ordering::SeqCst);
    while !b.is_down(2) {
        assert!(Instant::now() < deadline, "a 503 marks it down");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// On SIGTERM every socket of the process gets its 1001 before the process
/// exits (a regression: the drain once returned when the HTTP connections
/// were done, and upgraded sockets, which it does not track, were cut:
/// 31 of 200 in one run).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_process_closes_every_socket_with_1001() {
    const ROUNDS: usize = 5;
    const SOCKETS: u64 = 20;
    let cluster = PgCluster::shared();
    let db = stack::database(cluster, "e2e_balanced_drain", 2).await;
    db.create_space("s").await.unwrap();
    let url = cluster.conn_string("e2e_balanced_drain");
    let mut codes = std::collections::BTreeMap::new();
    for _ in 0..ROUNDS {
        let mut server = ServerProcess::start(&url, SECRET, &SERVER_ARGS).unwrap();
        server.wait_ready(BOUND).await.unwrap();
        let mut endings = Vec::new();
        for i in 0..SOCKETS {
            // A token each: at most 16 sockets per token.
            let token = token(&format!("w{i}"), Role::Read);
            let mut socket = ws::connect(&server.url(), "s", Some(&token)).await.unwrap();
            ws::hello(&mut socket, 1 + i, Some(0)).await;
            endings.push(tokio::spawn(async move { ws::ending(&mut socket).await.1 }));
        }
        server.terminate().unwrap();
        for ending in endings {
            *codes.entry(ending.await.unwrap()).or_insert(0) += 1;
        }
        let exit = server.wait_exit(BOUND).await;
        assert!(exit.is_some_and(|s| s.success()), "{exit:?}");
    }
    assert_eq!(
        codes,
        [(Some(1001), ROUNDS as u64 * SOCKETS)].into(),
        "how drained sockets ended (None: cut without a close frame)"
    );
}
