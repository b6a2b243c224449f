//! The whole-database path (issue 18): a cluster archiving its WAL to a
//! folder, a base backup (`pg_basebackup`), more commits, a point noted by
//! its LSN, more commits after it; then a new cluster recovered from the
//! base backup and the archive to that LSN holds exactly the state at that
//! point, and a replica that synced past it reconnects, pushes again what
//! the recovery lost, and converges. The runbook: docs/RELIABILITY.md.

use std::time::{Duration, Instant};

use arbor_sync_server::db::Db;
use arbor_testkit::archive::ServerDir;
use arbor_testkit::{PgCluster, PgOptions};

use crate::replicas::{self, Space, edit, serve, sync};

const SECRET: &str = "pitr-secret-pitr-secret-pitr-secret-pitr";
const S: Space = Space {
    secret: SECRET,
    sub: "pitr",
    name: "s",
};

/// Waits (bounded) until `sql` returns true on `db` of `cluster`.
async fn until(cluster: &PgCluster, db: &str, sql: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(client) = cluster.connect(db).await {
            if let Ok(row) = client.query_one(sql, &[]).await {
                if row.get::<_, bool>(0) {
                    return;
                }
            }
        }
        assert!(Instant::now() < deadline, "{what}: not within 60 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_base_backup_and_the_wal_archive_recover_the_state_at_a_chosen_lsn() {
    let durable = PgOptions {
        throwaway: false,
        shared_buffers: "128MB",
    };
    let archive = ServerDir::new("wal-archive").unwrap();
    let primary = PgCluster::start_archiving(durable, &archive).unwrap();
    arbor_e2e::stack::database(&primary, "arbor", 2)
        .await
        .create_space("s")
        .await
        .unwrap();
    let server = serve(&primary, SECRET).await;
    let dir = replicas::temp_dir("pitr");
    let a = replicas::open(&dir, "a.db");
    edit(&a, 10, "before-base");
    sync(&a, &server, S).await;

    // The base backup, then more work, then the point to recover to.
    let base = primary.base_backup().unwrap();
    edit(&a, 5, "after-base");
    sync(&a, &server, S).await;
    let db = Db::new(primary.config("arbor"), 2).unwrap();
    let at_point = db.state("s").await.unwrap();
    assert_eq!(at_point.nodes.len(), 15);
    let sql = primary.connect("arbor").await.unwrap();
    let lsn: String = sql
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .unwrap()
        .get(0);

    // Work after the point, then the last segment is archived and the
    // primary is lost.
    edit(&a, 7, "after-point");
    sync(&a, &server, S).await;
    assert_eq!(db.state("s").await.unwrap().nodes.len(), 22);
    let segment: String = sql
        .query_one("SELECT pg_walfile_name(pg_switch_wal())", &[])
        .await
        .unwrap()
        .get(0);
    until(
        &primary,
        "arbor",
        &format!("SELECT coalesce(last_archived_wal >= '{segment}', false) FROM pg_stat_archiver"),
        "the last segment archived",
    )
    .await;
    assert!(archive.files().contains(&segment), "{:?}", archive.files());
    drop((sql, db));
    primary.stop();

    // Recovery to the LSN: the state at the point, nothing after it.
    let recovered = PgCluster::recover(durable, &base, &archive, &lsn).unwrap();
    until(
        &recovered,
        "arbor",
        "SELECT NOT pg_is_in_recovery()",
        "recovery to the target LSN and promotion",
    )
    .await;
    let restored_db = Db::new(recovered.config("arbor"), 2).unwrap();
    assert_eq!(restored_db.state("s").await.unwrap(), at_point);
    assert_eq!(restored_db.space("s").await.unwrap().unwrap().head_seq, 30);

    // The replica synced past the point: it reconnects, pushes again what
    // the recovery lost, and converges.
    let restored = serve(&recovered, SECRET).await;
    sync(&a, &restored, S).await;
    let now = restored_db.state("s").await.unwrap();
    assert_eq!(now.nodes.len(), 22);
    let g = a.lock().unwrap();
    assert_eq!(g.state().unwrap(), now);
    g.check_invariants().unwrap();
    drop(g);
    let _ = std::fs::remove_dir_all(&dir);
    recovered.stop();
}
