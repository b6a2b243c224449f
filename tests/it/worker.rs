//! Native clients through the Durable Object in workerd, against a real
//! sync server and Postgres: push from one, receive in the other in seq
//! order; ops committed by another path arrive without a reconnect;
//! reconnect with a cursor; bad tokens refused before the upgrade; the
//! state reached through the object equals Postgres; and everything keeps
//! working after workerd restarts (every object's memory lost).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use arbor_client::{Position, Replica, SyncConfig, SyncState, SyncStatus, sync_forever};
use arbor_shared::auth::{Claims, Hs256Key, Role, mint};
use arbor_shared::protocol::{ClientMsg, ServerMsg};
use arbor_shared::{NodeId, ReplicaId};
use arbor_sync_server::Config;
use arbor_sync_server::db::Db;
use arbor_testkit::PgCluster;
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

use crate::workerd::{Workerd, free_port};

const SECRET: &str = "e2e-secret-e2e-secret-e2e-secret-e2e!";

fn token_with(space: &str, role: Role, secret: &str) -> String {
    token_full(space, role, secret, "e2e")
}

fn token_full(space: &str, role: Role, secret: &str, sub: &str) -> String {
    let claims = Claims::new(sub, space, role, arbor_e2e::now_s(), 3600);
    mint(&claims, &Hs256Key::new(secret.as_bytes()).unwrap())
}

fn token(space: &str, role: Role) -> String {
    token_with(space, role, SECRET)
}

/// A token of another subject (limits count per subject).
fn token_with_sub(space: &str, role: Role, sub: &str) -> String {
    token_full(space, role, SECRET, sub)
}
type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(base: &str, space: &str, tok: Option<&str>) -> Result<Ws, u16> {
    let url = format!("{}/v1/spaces/{space}/ws", base.replace("http://", "ws://"));
    let mut req = url.into_client_request().unwrap();
    if let Some(t) = tok {
        req.headers_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    match tokio_tungstenite::connect_async_with_config(req, None, true).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => Err(r.status().as_u16()),
        Err(e) => panic!("{e}"),
    }
}

async fn recv(ws: &mut Ws) -> ServerMsg {
    loop {
        let next = tokio::time::timeout(Duration::from_secs(30), ws.next())
            .await
            .expect("no frame within 30 s");
        match next.unwrap().unwrap() {
            Message::Text(t) => return ServerMsg::decode(&t).unwrap(),
            Message::Close(f) => panic!("closed: {f:?}"),
            _ => {}
        }
    }
}

/// Receives until `n` ops came; returns their seqs.
async fn recv_seqs(ws: &mut Ws, n: usize) -> Vec<u64> {
    let mut seqs = Vec::new();
    while seqs.len() < n {
        if let ServerMsg::Ops { ops } = recv(ws).await {
            seqs.extend(ops.iter().map(|o| o.seq));
        }
    }
    seqs
}

async fn hello(ws: &mut Ws, replica: u64, cursor: Option<u64>) -> u64 {
    let msg = ClientMsg::Hello {
        v: 1,
        replica: ReplicaId(replica),
        cursor,
    };
    ws.send(Message::Text(msg.encode().into())).await.unwrap();
    loop {
        if let ServerMsg::Welcome { head_seq, .. } = recv(ws).await {
            return head_seq;
        }
    }
}

async fn wait_for(
    rx: &mut watch::Receiver<SyncStatus>,
    what: &str,
    done: impl Fn(&SyncStatus) -> bool,
) {
    let ok = matches!(
        tokio::time::timeout(Duration::from_secs(60), rx.wait_for(|s| done(s))).await,
        Ok(Ok(_))
    );
    if !ok {
        panic!("timed out waiting for {what}; status {:?}", *rx.borrow());
    }
}

struct Synced {
    replica: Arc<Mutex<Replica>>,
    status: watch::Receiver<SyncStatus>,
    task: tokio::task::JoinHandle<()>,
}

fn start_sync(dir: &std::path::Path, name: &str, server: &str, worker: &str) -> Synced {
    let replica = Arc::new(Mutex::new(
        Replica::open(&dir.join(format!("{name}.db"))).unwrap(),
    ));
    let mut config = SyncConfig::new(server, "s", &token("s", Role::Write));
    config.realtime = Some(worker.to_string());
    config.min_backoff = Duration::from_millis(50);
    config.max_backoff = Duration::from_millis(500);
    let (tx, rx) = watch::channel(SyncStatus::default());
    let r = replica.clone();
    let task = tokio::spawn(async move {
        let _ = sync_forever(r, config, tx, std::future::pending()).await;
    });
    Synced {
        replica,
        status: rx,
        task,
    }
}

fn caught_up(s: &SyncStatus, seq: u64) -> bool {
    s.state == SyncState::Live && s.outbox == 0 && s.cursor.is_some_and(|c| c >= seq)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_clients_sync_through_the_durable_object() {
    // Postgres and the sync server, which forwards its commit notices to
    // the Worker.
    let cluster = PgCluster::shared();
    let admin = cluster.connect("postgres").await.unwrap();
    admin
        .batch_execute("CREATE DATABASE e2e_worker")
        .await
        .unwrap();
    let mut c = cluster.connect("e2e_worker").await.unwrap();
    arbor_sync_server::db::migrate(&mut c).await.unwrap();
    let db = Db::new(cluster.config("e2e_worker"), 2).unwrap();
    db.create_space("s").await.unwrap();
    let worker_port = free_port();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = format!("http://{}", listener.local_addr().unwrap());
    let config = Config {
        db_pool: 4,
        token_leeway_s: 60,
        max_body_bytes: 4 << 20,
        max_import_bytes: 1 << 30,
        drain: Duration::from_secs(2),
        cors_origins: Vec::new(),
        socket_queue_frames: 1024,
        notify_url: Some(format!("http://127.0.0.1:{worker_port}")),
        ..Config::new(
            cluster.config("e2e_worker"),
            Hs256Key::new(SECRET.as_bytes()).unwrap(),
        )
    };
    tokio::spawn(arbor_sync_server::serve(
        listener,
        None,
        config,
        std::future::pending(),
    ));
    let mut workerd = Workerd::start(&server, SECRET, worker_port).await;
    let worker = workerd.url();

    // Bad tokens are refused before any upgrade.
    assert_eq!(connect(&worker, "s", None).await.err(), Some(401));
    let forged = token_with("s", Role::Write, "another-secret-another-secret-another!");
    assert_eq!(connect(&worker, "s", Some(&forged)).await.err(), Some(401));
    assert_eq!(
        connect(&worker, "s", Some("garbage")).await.err(),
        Some(401)
    );
    let other = token("other", Role::Write);
    assert_eq!(connect(&worker, "s", Some(&other)).await.err(), Some(403));

    // A raw observer socket, and two replicas syncing through the object.
    let mut observer = connect(&worker, "s", Some(&token("s", Role::Read)))
        .await
        .unwrap();
    assert_eq!(hello(&mut observer, 77, Some(0)).await, 0);
    let dir = std::env::temp_dir().join(format!("arbor-e2e-worker-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut a = start_sync(&dir, "a", &server, &worker);
    let mut b = start_sync(&dir, "b", &server, &worker);
    wait_for(&mut a.status, "a live", |s| caught_up(s, 0)).await;
    wait_for(&mut b.status, "b live", |s| caught_up(s, 0)).await;
    {
        let mut r = a.replica.lock().unwrap();
        for i in 0..20 {
            r.create_with(NodeId::ROOT, Position::Last, &[("text", &format!("a{i}"))])
                .unwrap();
        }
    }
    // 20 creates and 20 sets: seqs 1..=40, in order, at the observer and b.
    assert_eq!(
        recv_seqs(&mut observer, 40).await,
        (1..=40).collect::<Vec<_>>()
    );
    wait_for(&mut b.status, "b has a's ops", |s| caught_up(s, 40)).await;
    let pg = db.state("s").await.unwrap();
    assert_eq!(b.replica.lock().unwrap().state().unwrap(), pg);
    // The object pushed for its client: every op names the client's token
    // subject as its author (replica owners).
    let log = db.ops_after("s", 0, 100).await.unwrap();
    assert_eq!(log.ops.len(), 40);
    assert!(
        log.ops.iter().all(|c| c.author.as_deref() == Some("e2e")),
        "{:?}",
        log.ops.iter().map(|c| &c.author).collect::<Vec<_>>()
    );

    // Another path (HTTP ingest on the sync server) reaches the object's
    // sockets without a reconnect.
    let op = {
        let mut r = Replica::open_in_memory().unwrap();
        r.create(NodeId::ROOT, Position::Last).unwrap();
        r.outbox(1).unwrap()
    };
    let r = reqwest::Client::new()
        .post(format!("{server}/v1/spaces/s/ops"))
        .bearer_auth(token("s", Role::Admin))
        .json(&serde_json::json!({ "ops": op }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(recv_seqs(&mut observer, 1).await, [41]);
    wait_for(&mut a.status, "a has the HTTP op", |s| caught_up(s, 41)).await;

    // Reconnect with a cursor: exactly the missed ops.
    observer.close(None).await.unwrap();
    drop(observer);
    {
        let mut r = b.replica.lock().unwrap();
        for i in 0..5 {
            r.create_with(NodeId::ROOT, Position::First, &[("text", &format!("b{i}"))])
                .unwrap();
        }
    }
    wait_for(&mut a.status, "a has b's ops", |s| caught_up(s, 51)).await;
    let mut observer = connect(&worker, "s", Some(&token("s", Role::Read)))
        .await
        .unwrap();
    assert_eq!(hello(&mut observer, 77, Some(41)).await, 51);
    assert_eq!(
        recv_seqs(&mut observer, 10).await,
        (42..=51).collect::<Vec<_>>()
    );
    drop(observer);

    // Typed refusals through the object: an ingest failure (a parent the
    // database does not know), then a malformed frame, which closes 4003.
    let mut writer = connect(&worker, "s", Some(&token("s", Role::Write)))
        .await
        .unwrap();
    assert_eq!(hello(&mut writer, 88, Some(51)).await, 51);
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let orphan = arbor_shared::Op::Move(arbor_shared::MoveOp {
        stamp: arbor_shared::Stamp::new(now_ms << 16, 88),
        known_seq: 51,
        node: NodeId(0xabcdef),
        parent: NodeId(0x123456),
        key: arbor_shared::KeyGen::new(1).append_after(None),
    });
    let push = ClientMsg::Push {
        batch: 9,
        ops: vec![orphan],
    };
    writer
        .send(Message::Text(push.encode().into()))
        .await
        .unwrap();
    loop {
        match recv(&mut writer).await {
            ServerMsg::Error { code, batch, .. } => {
                assert_eq!((code.as_str(), batch), ("unknown_node", Some(9)));
                break;
            }
            ServerMsg::Ops { .. } => panic!("nothing may be relayed that was not committed"),
            _ => {}
        }
    }
    writer
        .send(Message::Text("{\"type\":\"push\"".into()))
        .await
        .unwrap();
    let mut code = None;
    let mut close = None;
    while let Some(Ok(m)) = writer.next().await {
        match m {
            Message::Text(t) => {
                if let Ok(ServerMsg::Error { code: c, .. }) = ServerMsg::decode(&t) {
                    code = Some(c);
                }
            }
            Message::Close(f) => {
                close = f.map(|f| u16::from(f.code));
                break;
            }
            _ => {}
        }
    }
    assert_eq!(code.map(|c| c.as_str()), Some("malformed"));
    assert_eq!(close, Some(4003));
    assert_eq!(db.state("s").await.unwrap().nodes.len(), 26);

    // workerd restarts: every object's memory and socket is gone. The
    // clients reconnect by themselves and keep converging.
    workerd.restart().await;
    {
        let mut r = a.replica.lock().unwrap();
        let x = r
            .create_with(NodeId::ROOT, Position::Last, &[("text", "after restart")])
            .unwrap();
        r.set(x, "color", Some("blue")).unwrap();
    }
    wait_for(&mut a.status, "a pushed after the restart", |s| {
        caught_up(s, 54)
    })
    .await;
    wait_for(&mut b.status, "b got it after the restart", |s| {
        caught_up(s, 54)
    })
    .await;
    let pg = db.state("s").await.unwrap();
    assert_eq!(pg.nodes.len(), 27);
    for s in [&a, &b] {
        let r = s.replica.lock().unwrap();
        assert_eq!(r.state().unwrap(), pg);
        r.check_invariants().unwrap();
    }

    // A token that floods its socket is refused `rate_limited` with a
    // retry hint and closed 4029, as on the native endpoint (100 frames a
    // second, bursts of 500).
    let flood_token = token_with_sub("s", Role::Write, "flooder");
    let mut flood = connect(&worker, "s", Some(&flood_token)).await.unwrap();
    hello(&mut flood, 99, Some(54)).await;
    for _ in 0..3_000 {
        if flood
            .send(Message::Text(ClientMsg::Ping {}.encode().into()))
            .await
            .is_err()
        {
            break;
        }
    }
    let (mut limited, mut close) = (None, None);
    loop {
        let next = tokio::time::timeout(Duration::from_secs(30), flood.next())
            .await
            .expect("no close within 30 s");
        match next {
            Some(Ok(Message::Text(t))) => {
                if let Ok(ServerMsg::Error {
                    code,
                    retry_after_ms,
                    ..
                }) = ServerMsg::decode(&t)
                {
                    limited = Some((code, retry_after_ms));
                }
            }
            Some(Ok(Message::Close(f))) => {
                close = f.map(|f| u16::from(f.code));
                break;
            }
            Some(Ok(_)) => {}
            Some(Err(_)) | None => break,
        }
    }
    let (code, retry) = limited.expect("no rate_limited error");
    assert_eq!(code.as_str(), "rate_limited");
    assert!(retry.is_some_and(|ms| ms > 0), "{retry:?}");
    assert_eq!(close, Some(4029));
    // Another token is not affected.
    let mut patient = connect(&worker, "s", Some(&token("s", Role::Read)))
        .await
        .unwrap();
    assert_eq!(hello(&mut patient, 78, Some(54)).await, 54);

    a.task.abort();
    b.task.abort();
    let _ = std::fs::remove_dir_all(&dir);
}
