//! Backups to object storage (issue 18): moto's S3-compatible server,
//! started by the test on a free port, is the bucket. Spaces are backed up,
//! edited, backed up again (only the changed one is uploaded), trimmed to
//! the kept number, then the database is lost and the spaces are restored
//! into a fresh cluster: each equals the original at its backup, and the
//! replicas that synced before reconnect and converge. A bucket that is
//! unreachable fails a run with a typed error, and `serve` with a schedule
//! pointed at it keeps serving.

use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use arbor_client::Position;
use arbor_shared::NodeId;
use arbor_sync_server::Config;
use arbor_sync_server::backup::{
    self, BackupError, Known, MIN_PART_BYTES, RestoreOptions, RunOptions, Schedule, Target,
};
use arbor_sync_server::db::{Db, PgTls};
use arbor_testkit::{PgCluster, PgOptions};

use crate::replicas::{self, Space, edit, serve, sync};

const SECRET: &str = "s3-backup-secret-s3-backup-secret-s3";
/// The spaces the replicas sync with.
const S: Space = Space {
    secret: SECRET,
    sub: "s3",
    name: "s",
};
const T: Space = Space { name: "t", ..S };
const BUCKET: &str = "arbor-backups";

/// moto's server (`moto_server`, installed by `scripts/ensure-moto.sh`),
/// under a shell that kills it when this process lets go of its stdin (as
/// the Postgres clusters' watchers do), so a killed test leaves no server.
struct Moto {
    /// `http://127.0.0.1:<port>`.
    endpoint: String,
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Moto {
    fn start() -> Moto {
        let server = std::env::var("ARBOR_MOTO_SERVER").unwrap_or_else(|_| {
            let home = std::env::var("HOME").unwrap_or_default();
            format!("{home}/.cache/arbor/moto/bin/moto_server")
        });
        assert!(
            std::path::Path::new(&server).is_file(),
            "moto_server not found at {server}: run `bash scripts/ensure-moto.sh` \
             (it installs moto[server] into ~/.cache/arbor/moto) or set ARBOR_MOTO_SERVER"
        );
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(
                "trap '' INT TERM HUP; \"$0\" -H 127.0.0.1 -p 0 </dev/null & pid=$!; \
                 cat >/dev/null; kill $pid",
            )
            .arg(&server)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        // Werkzeug prints `Running on http://127.0.0.1:<port>` on stderr, then
        // a line per request: the thread reads on so the pipe never fills.
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(at) = line.find("Running on http://") {
                    let url = line[at + "Running on ".len()..].trim().to_string();
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(url);
                    }
                }
            }
        });
        let endpoint = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("moto_server did not say where it listens within 60 s");
        Moto {
            endpoint,
            child,
            stdin,
        }
    }

    /// The settings an operator would export as `AWS_*` variables.
    fn settings(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", self.endpoint.as_str()),
            ("AWS_ALLOW_HTTP", "true"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// Creates the bucket (moto takes an unsigned `PUT /bucket`).
    async fn create_bucket(&self, bucket: &str) {
        let status = reqwest::Client::new()
            .put(format!("{}/{bucket}", self.endpoint))
            .send()
            .await
            .unwrap()
            .status();
        assert!(status.is_success(), "creating the bucket: {status}");
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = stdin.flush();
        }
        let _ = self.child.wait();
    }
}

/// Ops in the log of `space` in the database `arbor` of `cluster` (by one
/// replica if given).
async fn ops_of(cluster: &PgCluster, space: &str, replica: Option<u64>) -> u64 {
    let sql = cluster.connect("arbor").await.unwrap();
    let n: i64 = sql
        .query_one(
            "SELECT count(*) FROM ops o JOIN spaces s ON s.id = o.space
             WHERE s.name = $1 AND ($2::bigint IS NULL OR o.replica = $2)",
            &[&space, &replica.map(|r| (r as i64) ^ i64::MIN)],
        )
        .await
        .unwrap()
        .get(0);
    n as u64
}

fn names(report: &backup::RunReport) -> Vec<&str> {
    report.uploaded.iter().map(|u| u.space.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_spaces_go_to_the_bucket_and_restore_equal_and_replicas_converge() {
    let moto = Moto::start();
    moto.create_bucket(BUCKET).await;
    let target = Target::open(&format!("s3://{BUCKET}/prod"), moto.settings()).unwrap();
    assert_eq!(target.to_string(), format!("s3://{BUCKET}/prod"));

    let first = PgCluster::start(PgOptions::default()).unwrap();
    let db = arbor_e2e::stack::database(&first, "arbor", 4).await;
    for space in ["s", "t", "big"] {
        db.create_space(space).await.unwrap();
    }
    let sql = first.connect("arbor").await.unwrap();
    // "big" is larger than two parts: its upload is a multipart one.
    sql.batch_execute(&arbor_testkit::sql::insert_nodes("big", 250_000))
        .await
        .unwrap();
    sql.batch_execute("UPDATE spaces SET tenant = 'acme' WHERE name = 't'")
        .await
        .unwrap();
    let server = serve(&first, SECRET).await;
    let dir = replicas::temp_dir("s3-backup");
    let a = replicas::open(&dir, "a.db");
    let b = replicas::open(&dir, "b.db");
    let c = replicas::open(&dir, "c.db");
    edit(&a, 10, "a");
    edit(&b, 10, "b");
    edit(&c, 4, "c");
    sync(&a, &server, S).await;
    sync(&b, &server, S).await;
    sync(&a, &server, S).await;
    sync(&c, &server, T).await;
    // In "t", a delete concurrent with a child made under the deleted node:
    // the server restores it (a restore record the export does not carry).
    let d = replicas::open(&dir, "d.db");
    let x = c
        .lock()
        .unwrap()
        .create_with(NodeId::ROOT, Position::Last, &[("text", "x")])
        .unwrap();
    sync(&c, &server, T).await;
    sync(&d, &server, T).await;
    c.lock().unwrap().delete(x).unwrap();
    sync(&c, &server, T).await;
    d.lock()
        .unwrap()
        .create_with(x, Position::Last, &[("text", "under x")])
        .unwrap();
    sync(&d, &server, T).await;
    sync(&c, &server, T).await;

    // 1. The first run uploads every space.
    let options = RunOptions {
        keep: 2,
        part_bytes: MIN_PART_BYTES,
        ..RunOptions::default()
    };
    let first_run = backup::run(&db, &target, &options, &mut Known::default())
        .await
        .unwrap();
    assert_eq!(names(&first_run), ["big", "s", "t"]);
    let big = &first_run.uploaded[0];
    assert!(
        big.entry.bytes > 2 * MIN_PART_BYTES as u64 && big.parts >= 3,
        "big: {} bytes in {} parts",
        big.entry.bytes,
        big.parts
    );
    assert_eq!(big.entry.nodes, 250_000);
    assert_eq!(first_run.uploaded[2].entry.tenant.as_deref(), Some("acme"));
    assert_eq!(first_run.uploaded[2].entry.restores.len(), 1);
    let t_at_1 = db.state("t").await.unwrap();
    let big_at_1 = db.state("big").await.unwrap();
    let s_seq_1 = first_run.uploaded[1].entry.head_seq;
    assert_eq!(s_seq_1, 40);

    // 2. Nothing changed: a run (with nothing remembered) uploads nothing.
    let idle = backup::run(&db, &target, &options, &mut Known::default())
        .await
        .unwrap();
    assert!(idle.uploaded.is_empty(), "{idle:?}");
    assert_eq!(idle.unchanged, 3);

    // 3. Only "s" changes: only "s" is uploaded.
    edit(&a, 5, "a2-");
    sync(&a, &server, S).await;
    let second_run = backup::run(&db, &target, &options, &mut Known::default())
        .await
        .unwrap();
    assert_eq!(names(&second_run), ["s"]);
    assert_eq!(second_run.unchanged, 2);
    assert_eq!(second_run.uploaded[0].parts, 1);
    let s_at_2 = db.state("s").await.unwrap();
    let s_seq_2 = second_run.uploaded[0].entry.head_seq;
    assert_eq!(s_seq_2, 50);

    // 4. Once more: with two kept, the first backup of "s" goes.
    edit(&b, 3, "b3-");
    sync(&b, &server, S).await;
    sync(&a, &server, S).await;
    let third_run = backup::run(&db, &target, &options, &mut Known::default())
        .await
        .unwrap();
    assert_eq!(names(&third_run), ["s"]);
    assert_eq!(third_run.uploaded[0].deleted, 1);
    let s_at_3 = db.state("s").await.unwrap();
    let manifest = target.manifest("s").await.unwrap().unwrap();
    assert_eq!(
        manifest
            .backups
            .iter()
            .map(|e| e.head_seq)
            .collect::<Vec<_>>(),
        [s_seq_2, 56]
    );
    let gone = &first_run.uploaded[1].entry.object;
    assert_eq!(target.size_of("s", gone).await.unwrap(), None);
    for kept in &manifest.backups {
        let size = target.size_of("s", &kept.object).await.unwrap();
        assert_eq!(size, Some(kept.bytes));
    }
    assert_eq!(
        backup::list(&target, &[])
            .await
            .unwrap()
            .iter()
            .map(|m| (m.space.as_str(), m.backups.len()))
            .collect::<Vec<_>>(),
        [("big", 1), ("s", 2), ("t", 1)]
    );

    // Work acknowledged after the last backup, then the database is lost.
    edit(&a, 3, "a-late");
    sync(&a, &server, S).await;
    edit(&b, 1, "b-offline");
    first.stop();

    // 5. Restore into a fresh cluster (migrated by opening it).
    let second = PgCluster::start(PgOptions::default()).unwrap();
    second
        .connect("postgres")
        .await
        .unwrap()
        .batch_execute("CREATE DATABASE arbor")
        .await
        .unwrap();
    let restored_db = Db::open(second.config("arbor"), &PgTls::default(), 4)
        .await
        .unwrap();
    let report = backup::restore(&restored_db, &target, &RestoreOptions::default())
        .await
        .unwrap();
    let created: Vec<_> = report.restored.iter().map(|r| r.created.as_str()).collect();
    assert_eq!(created, ["big", "s", "t"]);
    assert!(report.exists.is_empty());
    assert_eq!(restored_db.state("s").await.unwrap(), s_at_3);
    // With its history: the same head, the same log.
    let s_info = restored_db.space("s").await.unwrap().unwrap();
    assert_eq!(s_info.head_seq, 56);
    assert_eq!(ops_of(&second, "s", None).await, 56);
    assert_eq!(restored_db.state("t").await.unwrap(), t_at_1);
    assert!(t_at_1.nodes.contains_key(&x), "x was restored");
    let records: i64 = second
        .connect("arbor")
        .await
        .unwrap()
        .query_one(
            "SELECT count(*) FROM restores r JOIN spaces s ON s.id = r.space WHERE s.name = 't'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(records, 1);
    assert_eq!(restored_db.state("big").await.unwrap(), big_at_1);
    assert_eq!(
        restored_db.tenant("t").await.unwrap().as_deref(),
        Some("acme")
    );

    // 6. Into an existing server: spaces that exist are refused, named.
    let again = backup::restore(&restored_db, &target, &RestoreOptions::default())
        .await
        .unwrap();
    assert!(again.restored.is_empty());
    assert_eq!(again.exists, ["big", "s", "t"]);
    // An older backup, next to the space, under a suffix.
    let older = backup::restore(
        &restored_db,
        &target,
        &RestoreOptions {
            spaces: vec!["s".into()],
            seq: Some(s_seq_2),
            suffix: "-at-50".into(),
            ..RestoreOptions::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(older.restored[0].created, "s-at-50");
    assert_eq!(restored_db.state("s-at-50").await.unwrap(), s_at_2);
    // The first backup is gone (retention).
    let err = backup::restore(
        &restored_db,
        &target,
        &RestoreOptions {
            spaces: vec!["s".into()],
            seq: Some(s_seq_1),
            suffix: "-at-40".into(),
            ..RestoreOptions::default()
        },
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, BackupError::NoBackup { seq: Some(40), .. }),
        "{err}"
    );

    // 7. The replicas reconnect to the restored server and converge.
    let restored = serve(&second, SECRET).await;
    sync(&a, &restored, S).await;
    sync(&b, &restored, S).await;
    sync(&a, &restored, S).await;
    sync(&c, &restored, T).await;
    sync(&d, &restored, T).await;
    // Every op either made is in the restored database exactly once: those
    // of the backup, the late ones it missed (pushed again), the offline one.
    let (id_a, id_b) = (
        a.lock().unwrap().replica_id().0,
        b.lock().unwrap().replica_id().0,
    );
    assert_eq!(ops_of(&second, "s", Some(id_a)).await, 2 * (10 + 5 + 3));
    assert_eq!(ops_of(&second, "s", Some(id_b)).await, 2 * (10 + 3 + 1));
    let s_now = restored_db.state("s").await.unwrap();
    for r in [&a, &b] {
        let g = r.lock().unwrap();
        assert_eq!(g.state().unwrap(), s_now);
        g.check_invariants().unwrap();
    }
    assert_eq!(s_now.nodes.len(), 10 + 10 + 5 + 3 + 3 + 1);
    for r in [&c, &d] {
        assert_eq!(r.lock().unwrap().state().unwrap(), t_at_1);
    }
    let texts = s_now
        .payloads
        .values()
        .filter_map(|p| p.value.as_deref())
        .collect::<std::collections::BTreeSet<_>>();
    for want in ["a0", "b9", "a2-4", "b3-2", "a-late2", "b-offline0"] {
        assert!(texts.contains(want), "{want} is missing");
    }
    let _ = std::fs::remove_dir_all(&dir);
    second.stop();
}

/// The value of `name` (with its labels) on the admin listener's `/metrics`.
async fn metric(admin: &str, name: &str) -> Option<f64> {
    let text = reqwest::get(format!("{admin}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_bucket_fails_the_run_and_serve_keeps_serving() {
    // A port nothing listens on: connections are refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let settings = vec![
        (
            "AWS_ENDPOINT_URL".to_string(),
            format!("http://127.0.0.1:{port}"),
        ),
        ("AWS_ALLOW_HTTP".into(), "true".into()),
        ("AWS_REGION".into(), "us-east-1".into()),
        ("AWS_ACCESS_KEY_ID".into(), "test".into()),
        ("AWS_SECRET_ACCESS_KEY".into(), "test".into()),
    ];
    let target = Target::open("s3://nowhere/arbor", settings).unwrap();
    let cluster = PgCluster::start(PgOptions::default()).unwrap();
    let db = arbor_e2e::stack::database(&cluster, "arbor", 4).await;
    db.create_space("s").await.unwrap();

    // The command's run: a typed error naming the store and the object.
    let started = Instant::now();
    let err = backup::run(&db, &target, &RunOptions::default(), &mut Known::default())
        .await
        .unwrap_err();
    match &err {
        BackupError::Store { op, path, .. } => {
            assert_eq!((*op, path.as_str()), ("get", "arbor/s/manifest.json"));
        }
        other => panic!("expected a store error, got {other:?}"),
    }
    assert!(
        err.to_string()
            .starts_with("object store: get arbor/s/manifest.json: ")
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
    // And the bad URLs are refused before any request.
    for bad in [
        "http://bucket/x",
        "s3://",
        "s3://user:secret@bucket/x",
        "s3://bucket/a//b",
    ] {
        assert!(
            matches!(
                Target::open(bad, Vec::new()),
                Err(BackupError::BadUrl { .. })
            ),
            "{bad}"
        );
    }
    assert!(!format!("{:?}", Target::open("s3://user:secret@b/x", Vec::new())).contains("secret"));

    // `serve` with a schedule against it: runs fail and are retried every
    // interval, and the server serves meanwhile.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = format!("http://{}", listener.local_addr().unwrap());
    let admin_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = format!("http://{}", admin_listener.local_addr().unwrap());
    let config = Config {
        backup: Some(Schedule {
            target,
            interval: Duration::from_secs(1),
            options: RunOptions::default(),
        }),
        ..arbor_e2e::stack::config(&cluster, "arbor", SECRET.as_bytes())
    };
    tokio::spawn(arbor_sync_server::serve(
        listener,
        Some(admin_listener),
        config,
        std::future::pending(),
    ));
    const FAILED: &str = "arbor_backup_runs_total{outcome=\"failed\"}";
    let dir = replicas::temp_dir("s3-unreachable");
    let r = replicas::open(&dir, "r.db");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut synced = 0;
    // Until two runs have failed, the replica keeps editing and syncing.
    while metric(&admin, FAILED).await.unwrap_or(0.0) < 2.0 {
        assert!(Instant::now() < deadline, "no two failed runs in 60 s");
        edit(&r, 2, "r");
        sync(&r, &server, S).await;
        synced += 1;
    }
    assert!(synced >= 1);
    let status = reqwest::get(format!("{admin}/readyz"))
        .await
        .unwrap()
        .status();
    assert!(status.is_success(), "readyz: {status}");
    let pg = db.state("s").await.unwrap();
    assert_eq!(r.lock().unwrap().state().unwrap(), pg);
    assert_eq!(pg.nodes.len(), 2 * synced);
    let _ = std::fs::remove_dir_all(&dir);
    cluster.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schedule_in_serve_backs_up_what_changes() {
    let moto = Moto::start();
    moto.create_bucket(BUCKET).await;
    let target = Target::open(&format!("s3://{BUCKET}/scheduled"), moto.settings()).unwrap();
    let cluster = PgCluster::start(PgOptions::default()).unwrap();
    let db = arbor_e2e::stack::database(&cluster, "arbor", 4).await;
    db.create_space("s").await.unwrap();
    let config = Config {
        backup: Some(Schedule {
            target: target.clone(),
            interval: Duration::from_secs(1),
            options: RunOptions::default(),
        }),
        ..arbor_e2e::stack::config(&cluster, "arbor", SECRET.as_bytes())
    };
    let server = arbor_e2e::stack::serve(config).await;
    let dir = replicas::temp_dir("s3-schedule");
    let r = replicas::open(&dir, "r.db");
    for round in 1..=2u64 {
        edit(&r, 3, "r");
        sync(&r, &server, S).await;
        // Bounded wait for the schedule to catch the new head.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let newest = target
                .manifest("s")
                .await
                .unwrap()
                .and_then(|m| m.backups.last().map(|e| e.head_seq));
            if newest == Some(6 * round) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "round {round}: the newest backup is at {newest:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // One backup per change: the idle intervals between uploaded nothing.
    let manifest = target.manifest("s").await.unwrap().unwrap();
    let seqs: Vec<u64> = manifest.backups.iter().map(|e| e.head_seq).collect();
    assert!(
        seqs.contains(&6) && seqs.ends_with(&[12]) && seqs.windows(2).all(|w| w[0] < w[1]),
        "{seqs:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
    cluster.stop();
}

/// `--backup-images`: each backup also stores the space's replica image; a
/// fresh replica decodes it straight from the bucket (no server) and holds
/// the space; retention deletes it with its export.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_stores_the_replica_image_and_a_replica_starts_from_it() {
    use arbor_client::image::{ImageDecoder, ImageInfo};
    let moto = Moto::start();
    moto.create_bucket(BUCKET).await;
    let target = Target::open(&format!("s3://{BUCKET}/images"), moto.settings()).unwrap();
    let cluster = PgCluster::start(PgOptions::default()).unwrap();
    let db = arbor_e2e::stack::database(&cluster, "arbor", 4).await;
    db.create_space("s").await.unwrap();
    let server = serve(&cluster, SECRET).await;
    let dir = replicas::temp_dir("s3-image");
    let a = replicas::open(&dir, "a.db");
    edit(&a, 30, "a");
    sync(&a, &server, S).await;

    let options = RunOptions {
        keep: 1,
        images: true,
        ..RunOptions::default()
    };
    let run = backup::run(&db, &target, &options, &mut Known::default())
        .await
        .unwrap();
    let entry = run.uploaded[0].entry.clone();
    let image = entry.image.clone().expect("the image is in the manifest");
    assert_eq!(image.seq, entry.head_seq);
    let manifest = target.manifest("s").await.unwrap().unwrap();
    assert_eq!(manifest.backups.len(), 1);
    assert_eq!(manifest.backups[0], entry);

    let info = ImageInfo {
        seq: image.seq,
        schema: image.schema,
        size: image.size,
        crc32: u32::from_str_radix(&image.crc32, 16).unwrap(),
    };
    let mut decoded = Vec::new();
    let mut decoder = ImageDecoder::new(&info).unwrap();
    let mut sink = |b: &[u8]| {
        decoded.extend_from_slice(b);
        Ok(())
    };
    let mut stream = target.read("s", &image.object).await.unwrap().unwrap();
    let mut fetched = 0u64;
    while let Some(chunk) = futures_util::StreamExt::next(&mut stream).await {
        let chunk = chunk.unwrap();
        fetched += chunk.len() as u64;
        decoder.push(&chunk, &mut sink).unwrap();
    }
    decoder.finish(&mut sink).unwrap();
    assert_eq!(fetched, image.bytes);
    let file = dir.join("from-backup.db.image");
    std::fs::write(&file, &decoded).unwrap();
    let mut replica = arbor_client::Replica::open(&dir.join("from-backup.db")).unwrap();
    assert_eq!(replica.install_image(&file, &info).unwrap(), image.seq);
    assert_eq!(replica.state().unwrap(), db.state("s").await.unwrap());

    // A newer backup replaces it (one kept): the old image goes too.
    edit(&a, 3, "a2-");
    sync(&a, &server, S).await;
    let again = backup::run(&db, &target, &options, &mut Known::default())
        .await
        .unwrap();
    assert_eq!(again.uploaded[0].deleted, 1);
    assert_eq!(target.size_of("s", &image.object).await.unwrap(), None);
    assert_eq!(target.size_of("s", &entry.object).await.unwrap(), None);
    let newer = again.uploaded[0].entry.image.as_ref().unwrap();
    assert!(target.size_of("s", &newer.object).await.unwrap().is_some());
    cluster.stop();
}
