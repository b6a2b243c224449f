//! Backup and restore: `pg_dump` of the database, more acknowledged work,
//! then the database is lost and restored from the dump into a fresh
//! cluster. Replicas that synced before (and after) the backup reconnect:
//! the server has less than their cursors, so they push again every op
//! they still hold, load a snapshot, and converge; every op they made is
//! in the restored database exactly once.

use arbor_e2e::stack;
use arbor_sync_server::db::Db;
use arbor_testkit::{PgCluster, PgOptions, pg_bin_dir};

use crate::replicas::{self, Shared, Space, edit, serve, sync};

const SECRET: &str = "backup-secret-backup-secret-backup-secret";
const S: Space = Space {
    secret: SECRET,
    sub: "backup",
    name: "s",
};

/// Makes `n` local ops (creates with a text: 2 ops each).
fn ops(r: &Shared, n: usize, tag: &str) -> u64 {
    2 * edit(r, n, tag) as u64
}

async fn ops_by(cluster: &PgCluster, r: &Shared) -> u64 {
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
    stack::database(&first, "arbor", 2)
        .await
        .create_space("s")
        .await
        .unwrap();
    let server = serve(&first, SECRET).await;
    let dir = replicas::temp_dir("backup");
    let a = replicas::open(&dir, "a.db");
    let b = replicas::open(&dir, "b.db");
    let (mut made_a, mut made_b) = (ops(&a, 10, "a"), ops(&b, 10, "b"));
    sync(&a, &server, S).await;
    sync(&b, &server, S).await;
    sync(&a, &server, S).await;

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
    made_a += ops(&a, 5, "a-late");
    made_b += ops(&b, 5, "b-late");
    sync(&a, &server, S).await;
    sync(&b, &server, S).await;
    assert_eq!(ops_by(&first, &a).await, made_a);
    // b keeps one edit it never pushed.
    made_b += ops(&b, 1, "b-offline");
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
    let restored = serve(&second, SECRET).await;
    // The dump has the early ops only.
    assert_eq!(ops_by(&second, &a).await, 20);

    // The replicas reconnect: each pushes again what it still holds.
    sync(&a, &restored, S).await;
    sync(&b, &restored, S).await;
    sync(&a, &restored, S).await;
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
