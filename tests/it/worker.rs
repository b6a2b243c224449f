//! Native clients through the Durable Object in workerd, against a real
//! sync server and Postgres: push from one, receive in the other in seq
//! order; ops committed by another path arrive without a reconnect;
//! reconnect with a cursor; bad tokens refused before the upgrade; the
//! state reached through the object equals Postgres; and everything keeps
//! working after workerd restarts (every object's memory lost).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use arbor_client::{
    Position, PresenceSender, Replica, SyncConfig, SyncState, SyncStatus, presence_channel,
    sync_forever,
};
use arbor_e2e::stack;
use arbor_e2e::ws::{Ws, connect, ending, hello, recv, send};
use arbor_shared::NodeId;
use arbor_shared::auth::Role;
use arbor_shared::protocol::{ClientMsg, ServerMsg};
use arbor_sync_server::Config;
use arbor_testkit::PgCluster;
use arbor_testkit::wait::wait_for;
use futures_util::SinkExt as _;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

use crate::workerd::{Workerd, free_port};

const SECRET: &str = "e2e-secret-e2e-secret-e2e-secret-e2e!";

fn token_with(space: &str, role: Role, secret: &str) -> String {
    token_full(space, role, secret, "e2e")
}

fn token_full(space: &str, role: Role, secret: &str, sub: &str) -> String {
    arbor_testkit::tokens::token(secret.as_bytes(), sub, space, role, 3600)
}

fn token(space: &str, role: Role) -> String {
    token_with(space, role, SECRET)
}

/// A token of another subject (limits count per subject).
fn token_with_sub(space: &str, role: Role, sub: &str) -> String {
    token_full(space, role, SECRET, sub)
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

struct Synced {
    replica: Arc<Mutex<Replica>>,
    status: watch::Receiver<SyncStatus>,
    presence: PresenceSender,
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
    let (presence, presence_rx) = presence_channel();
    config.presence = Some(presence_rx);
    let (tx, rx) = watch::channel(SyncStatus::default());
    let r = replica.clone();
    let task = tokio::spawn(async move {
        let _ = sync_forever(r, config, tx, std::future::pending()).await;
    });
    Synced {
        replica,
        status: rx,
        presence,
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
    let db = stack::database(cluster, "e2e_worker", 2).await;
    db.create_space("s").await.unwrap();
    let worker_port = free_port();
    // The sync server's revocation list: the objects fetch it.
    let revocation_file =
        std::env::temp_dir().join(format!("arbor-e2e-revoked-{}.json", std::process::id()));
    std::fs::write(&revocation_file, r#"{"sub": {"mallory": null}}"#).unwrap();
    let base = stack::config(cluster, "e2e_worker", SECRET.as_bytes());
    let server = stack::serve(Config {
        notify_url: Some(format!("http://127.0.0.1:{worker_port}")),
        auth: arbor_sync_server::keys::AuthConfig {
            revocation_file: Some(revocation_file.clone()),
            ..base.auth.clone()
        },
        ..base
    })
    .await;
    // The Worker also takes EdDSA tokens from its JWKS, and refuses the
    // subjects the sync server's revocation list names.
    let jwks = serde_json::json!({ "keys": [arbor_shared::keys::public_jwk(&[7; 32], "edge")] });
    let mut workerd = Workerd::start_with_vars(
        &server,
        SECRET,
        worker_port,
        &[("ARBOR_JWKS", jwks.to_string())],
    )
    .await;
    let worker = workerd.url();
    let claims =
        |sub: &str| arbor_shared::auth::Claims::new(sub, "s", Role::Read, arbor_e2e::now_s(), 600);
    let eddsa = arbor_shared::keys::mint_eddsa(&claims("edge-user"), &[7; 32], Some("edge"));
    assert!(connect(&worker, "s", Some(&eddsa)).await.is_ok());
    let unknown = arbor_shared::keys::mint_eddsa(&claims("edge-user"), &[8; 32], Some("other"));
    assert_eq!(connect(&worker, "s", Some(&unknown)).await.err(), Some(401));
    let revoked = token_full("s", Role::Read, SECRET, "mallory");
    assert_eq!(connect(&worker, "s", Some(&revoked)).await.err(), Some(401));
    // A live socket whose token is revoked later is closed 4005 at the
    // object's next tick (every 15 s) after the server reloads the list.
    let mut edge = connect(&worker, "s", Some(&eddsa)).await.unwrap();
    assert_eq!(hello(&mut edge, 0xed6e, Some(0)).await, 0);
    let tmp = revocation_file.with_extension("tmp");
    std::fs::write(&tmp, r#"{"sub": {"mallory": null, "edge-user": null}}"#).unwrap();
    std::fs::rename(&tmp, &revocation_file).unwrap();
    let (errors, code) = ending(&mut edge).await;
    assert_eq!(code, Some(4005), "{errors:?}");
    assert_eq!(connect(&worker, "s", Some(&eddsa)).await.err(), Some(401));

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
    // Presence goes through the object too, and never to its sender.
    let focus = arbor_shared::protocol::PresenceState {
        focus: Some(NodeId(40)),
        ..Default::default()
    };
    a.presence.set(Some(focus.clone())).unwrap();
    wait_for(&mut b.status, "b sees a's presence", |s| {
        s.peers.iter().any(|p| p.state.as_ref() == Some(&focus))
    })
    .await;
    assert!(a.status.borrow().peers.iter().all(|p| p.state.is_none()));
    a.presence.set(None).unwrap();
    wait_for(&mut b.status, "b sees a's presence cleared", |s| {
        s.peers.iter().all(|p| p.state.is_none())
    })
    .await;
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
    let orphan = arbor_shared::Op::Move(arbor_shared::MoveOp {
        stamp: arbor_shared::Stamp::new(arbor_testkit::env::now_ms() << 16, 88),
        known_seq: 51,
        node: NodeId(0xabcdef),
        parent: NodeId(0x123456),
        key: arbor_shared::KeyGen::new(1).append_after(None),
    });
    let push = ClientMsg::Push {
        batch: 9,
        ops: vec![orphan],
    };
    send(&mut writer, &push).await;
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
    let (errors, close) = ending(&mut writer).await;
    let code = match errors.last() {
        Some(ServerMsg::Error { code, .. }) => Some(code.as_str()),
        _ => None,
    };
    assert_eq!(code, Some("malformed"));
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
    let (errors, close) = ending(&mut flood).await;
    let (code, retry) = match errors.last() {
        Some(ServerMsg::Error {
            code,
            retry_after_ms,
            ..
        }) => (*code, *retry_after_ms),
        _ => panic!("no rate_limited error"),
    };
    assert_eq!(code.as_str(), "rate_limited");
    assert!(retry.is_some_and(|ms| ms > 0), "{retry:?}");
    assert_eq!(close, Some(4029));
    // Another token is not affected.
    let mut patient = connect(&worker, "s", Some(&token("s", Role::Read)))
        .await
        .unwrap();
    assert_eq!(hello(&mut patient, 78, Some(54)).await, 54);

    // A token limited to a subtree gets that subtree's changes through the
    // object (the object asks the sync server for them), and nothing else.
    let t = arbor_testkit::env::now_ms() << 16;
    let (root, inside, outside) = (NodeId(0x5e1), NodeId(0x5e2), NodeId(0x5e3));
    let push = |ops: Vec<arbor_shared::Op>| {
        let server = server.clone();
        async move {
            let r = reqwest::Client::new()
                .post(format!("{server}/v1/spaces/s/ops"))
                .bearer_auth(token("s", Role::Admin))
                .json(&serde_json::json!({ "ops": ops }))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            let body: arbor_shared::http::OpsBody = r.json().await.unwrap();
            body.ops.last().unwrap().seq
        }
    };
    let mv = |i: u64, node, parent| arbor_testkit::ops::mv(t + i, 0x5ee, node, parent, &[0x80], 0);
    let head = push(vec![mv(0, root, NodeId::ROOT)]).await;
    let scoped = arbor_shared::keys::mint_eddsa(
        &arbor_shared::auth::Claims {
            root: Some(root),
            ..claims("edge-user-2")
        },
        &[7; 32],
        Some("edge"),
    );
    let mut sub = connect(&worker, "s", Some(&scoped)).await.unwrap();
    hello(&mut sub, 0x5c0, Some(head)).await;
    let last = push(vec![mv(1, inside, root), mv(2, outside, NodeId::ROOT)]).await;
    let mut placed = Vec::new();
    loop {
        match recv(&mut sub).await {
            ServerMsg::Subtree {
                nodes, head_seq, ..
            } => {
                placed.extend(nodes.iter().map(|n| (n.id, n.parent)));
                if head_seq.is_some_and(|h| h >= last) {
                    break;
                }
            }
            ServerMsg::Ops { .. } => panic!("a subtree socket was sent ops"),
            _ => {}
        }
    }
    assert_eq!(placed, [(inside, root)]);

    a.task.abort();
    b.task.abort();
    let _ = std::fs::remove_dir_all(&dir);
}
