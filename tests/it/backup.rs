//! Backup and restore: `pg_dump` of the database, more acknowledged work,
//! then the database is lost and restored from the dump into a fresh
//! cluster. Replicas that synced before (and after) the backup reconnect:
//! the server has less than their cursors, so they push again every op
//! they still hold, load a snapshot, and converge; every op they made is
//! in the restored database exactly once.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use arbor_client::{Position, Replica, SyncConfig, SyncStatus, sync_once};
use arbor_shared::NodeId;
use arbor_shared::auth::{Claims, Hs256Key, Role, mint};
use arbor_sync_server::Config;
use arbor_sync_server::db::Db;
use arbor_testkit::{PgCluster, PgOptions, pg_bin_dir};
use tokio::sync::watch;

const SECRET: &str = "backup-secret-backup-secret-backup-secret";

fn token() -> String {
    let claims = Claims::new("backup", "s", Role::Write, arbor_e2e::now_s(), 3600);
    mint(&claims, &Hs256Key::new(SECRET.as_bytes()).unwrap())
}

fn config(cluster: &PgCluster) -> Config {
    Config {
        db_pool: 4,
        token_leeway_s: 60,
        max_body_bytes: 4 << 20,
        max_import_bytes: 1 << 30,
        drain: Duration::from_secs(1),
        cors_origins: Vec::new(),
        socket_queue_frames: 1024,
        notify_url: None,
        ..Config::new(
            cluster.config("arbor"),
            Hs256Key::new(SECRET.as_bytes()).unwrap(),
        )
    }
}

async fn serve(cluster: &PgCluster) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(arbor_sync_server::serve(
        listener,
        None,
        config(cluster),
        std::future::pending(),
    ));
    url
}

async fn sync(r: &Arc<Mutex<Replica>>, server: &str) {
    let (tx, rx) = watch::channel(SyncStatus::default());
    let done = tokio::time::timeout(
        Duration::from_secs(60),
        sync_once(r.clone(), SyncConfig::new(server, "s", &token()), tx, 3),
    )
    .await;
    match done {
        Ok(result) => {
            result.unwrap();
        }
        Err(_) => panic!("sync did not finish in 60 s: {:?}", *rx.borrow()),
    }
}

/// Makes `n` local ops (creates with a text: 2 ops each).
fn edit(r: &Arc<Mutex<Replica>>, n: usize, tag: &str) -> u64 {
    let mut g = r.lock().unwrap();
    for i in 0..n {
        g.create_with(
            NodeId::ROOT,
            Position::Last,
            &[("text", &format!("{tag}{i}"))],
        )
        .unwrap();
    }
    2 * n as u64
}

async fn ops_by(cluster: &PgCluster, r: &Arc<Mutex<Replica>>) -> u64 {
    let id = r.lock().unwrap().replica_id().0;
    let sql = cluster.connect("arbor").await.unwrap();
    let n: i64 = sql
        .query_one(
            "SELECT count(*) FROM ops WHERE replica = $1",
            &[&((id as i64) ^ i64::MIN)],
        )
        .await
        .unwrap()
        .get(0);
    n as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_dump_and_replicas_that_reconnect_converge_without_loss() {
    let first = PgCluster::start(PgOptions::default()).unwrap();
    let admin = first.connect("postgres").await.unwrap();
    admin.batch_execute("CREATE DATABASE arbor").await.unwrap();
    let mut c = first.connect("arbor").await.unwrap();
    arbor_sync_server::db::migrate(&mut c).await.unwrap();
    Db::new(first.config("arbor"), 2)
        .unwrap()
        .create_space("s")
        .await
        .unwrap();
    let server = serve(&first).await;
    let dir = std::env::temp_dir().join(format!("arbor-backup-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let a = Arc::new(Mutex::new(Replica::open(&dir.join("a.db")).unwrap()));
    let b = Arc::new(Mutex::new(Replica::open(&dir.join("b.db")).unwrap()));
    let (mut made_a, mut made_b) = (edit(&a, 10, "a"), edit(&b, 10, "b"));
    sync(&a, &server).await;
    sync(&b, &server).await;
    sync(&a, &server).await;

    // The backup: pg_dump, as the runbook in docs/RELIABILITY.md does it.
    let dump = dir.join("arbor.dump");
    let status = std::process::Command::new(pg_bin_dir().unwrap().join("pg_dump"))
        .args(["--format=custom", "--file"])
        .arg(&dump)
        .arg(first.conn_string("arbor"))
        .status()
        .unwrap();
    assert!(status.success());

    // Work acknowledged after the backup, then the database is lost.
    made_a += edit(&a, 5, "a-late");
    made_b += edit(&b, 5, "b-late");
    sync(&a, &server).await;
    sync(&b, &server).await;
    assert_eq!(ops_by(&first, &a).await, made_a);
    // b keeps one edit it never pushed.
    made_b += edit(&b, 1, "b-offline");
    first.stop();

    // Restore into a fresh cluster and serve it.
    let second = PgCluster::start(PgOptions::default()).unwrap();
    let admin = second.connect("postgres").await.unwrap();
    admin.batch_execute("CREATE DATABASE arbor").await.unwrap();
    let status = std::process::Command::new(pg_bin_dir().unwrap().join("pg_restore"))
        .args(["--no-owner", "--dbname"])
        .arg(second.conn_string("arbor"))
        .arg(&dump)
        .status()
        .unwrap();
    assert!(status.success());
    let restored = serve(&second).await;
    // The dump has the early ops only.
    assert_eq!(ops_by(&second, &a).await, 20);

    // The replicas reconnect: each pushes again what it still holds.
    sync(&a, &restored).await;
    sync(&b, &restored).await;
    sync(&a, &restored).await;
    assert_eq!(ops_by(&second, &a).await, made_a, "a's acknowledged ops");
    assert_eq!(ops_by(&second, &b).await, made_b, "b's ops");
    let pg = Db::new(second.config("arbor"), 2)
        .unwrap()
        .state("s")
        .await
        .unwrap();
    assert_eq!(pg.nodes.len(), 31);
    for r in [&a, &b] {
        let g = r.lock().unwrap();
        assert_eq!(g.state().unwrap(), pg);
        g.check_invariants().unwrap();
    }
    let _ = std::fs::remove_dir_all(&dir);
    second.stop();
}
