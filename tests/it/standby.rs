//! Reads from a hot standby (issue 18): a primary and a standby made by
//! `pg_basebackup`; cold starts are served by the standby while a writer
//! keeps committing; a standby whose replay is paused past the lag bound
//! is skipped; the standby stopped mid-run moves reads to the primary; and
//! every replica converges on the primary's state.

use std::time::{Duration, Instant};

use arbor_shared::auth::Hs256Key;
use arbor_sync_server::Config;
use arbor_sync_server::db::{Db, PgTls};
use arbor_testkit::{PgCluster, PgOptions};
use tokio::sync::watch;

use crate::replicas::{self, Shared, Space, edit, sync};

const SECRET: &str = "standby-secret-standby-secret-standby";
const S: Space = Space {
    secret: SECRET,
    sub: "standby",
    name: "s",
};

/// The value of `name` (with its labels, e.g. `x{a="b"}`) on `/metrics`.
async fn metric(admin: &str, name: &str) -> Option<f64> {
    let text = reqwest::get(format!("{admin}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Waits (bounded) until `check` holds for the metric's value.
async fn until_metric(admin: &str, name: &str, what: &str, check: impl Fn(Option<f64>) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = metric(admin, name).await;
        if check(v) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {name} is {v:?} after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

const STANDBY_READS: &str = "arbor_reads_total{source=\"standby\"}";
const LAG: &str = "arbor_standby_lag_seconds{standby=\"0\"}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_starts_come_from_the_standby_until_it_lags_or_stops() {
    let primary = PgCluster::start(PgOptions::default()).unwrap();
    let admin_db = primary.connect("postgres").await.unwrap();
    admin_db
        .batch_execute("CREATE DATABASE arbor")
        .await
        .unwrap();
    let db = Db::new(primary.config("arbor"), 2).unwrap();
    db.migrate().await.unwrap();
    db.create_space("s").await.unwrap();
    let standby = primary.start_standby().unwrap();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = format!("http://{}", listener.local_addr().unwrap());
    let admin_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = format!("http://{}", admin_listener.local_addr().unwrap());
    let config = Config {
        db_pool: 4,
        read_replicas: vec![(standby.config("arbor"), PgTls::default())],
        read_replica_max_lag: Duration::from_millis(1500),
        horizon_keep: None,
        ..Config::new(
            primary.config("arbor"),
            Hs256Key::new(SECRET.as_bytes()).unwrap(),
        )
    };
    tokio::spawn(arbor_sync_server::serve(
        listener,
        Some(admin_listener),
        config,
        std::future::pending(),
    ));
    until_metric(&admin, LAG, "the standby comes into use", |v| {
        v.is_some_and(|lag| (0.0..1.5).contains(&lag))
    })
    .await;

    let dir = replicas::temp_dir("standby");
    let writer = replicas::open(&dir, "writer.db");
    let mut readers = Vec::new();

    // 1. In step: cold starts while the writer commits all along; each
    // one's snapshot comes from the standby.
    let writing = Writer::start(writer.clone(), server.clone(), "a");
    for round in 0..4 {
        let before = metric(&admin, STANDBY_READS).await.unwrap_or(0.0);
        let r = replicas::open(&dir, &format!("in-step-{round}.db"));
        sync(&r, &server, S).await;
        let after = metric(&admin, STANDBY_READS).await.unwrap_or(0.0);
        assert!(
            after > before,
            "round {round}: the cold start read nothing from the standby"
        );
        readers.push(r);
    }
    let mut made = writing.stop().await;

    // 2. Lagging past the bound: replay paused while the writer commits.
    // The cold start comes from the primary, and holds what the paused
    // standby does not.
    let on_standby = standby.connect("arbor").await.unwrap();
    on_standby
        .batch_execute("SELECT pg_wal_replay_pause()")
        .await
        .unwrap();
    made += edit(&writer, 25, "lagging-");
    sync(&writer, &server, S).await;
    until_metric(&admin, LAG, "the paused standby is skipped", |v| {
        // Clear of the bound (the gauge has more digits than the check).
        v.is_some_and(|lag| !(0.0..=2.0).contains(&lag))
    })
    .await;
    let before = metric(&admin, STANDBY_READS).await.unwrap_or(0.0);
    let r = replicas::open(&dir, "lagging.db");
    sync(&r, &server, S).await;
    assert_eq!(metric(&admin, STANDBY_READS).await.unwrap_or(0.0), before);
    assert_eq!(
        r.lock().unwrap().state().unwrap(),
        writer.lock().unwrap().state().unwrap()
    );
    readers.push(r);
    on_standby
        .batch_execute("SELECT pg_wal_replay_resume()")
        .await
        .unwrap();
    until_metric(&admin, LAG, "the resumed standby comes back", |v| {
        v.is_some_and(|lag| (0.0..1.5).contains(&lag))
    })
    .await;

    // 3. The standby stops mid-run, writes going on: the next reads fail
    // over to the primary at once (no wait for the monitor) and keep
    // working; nothing more is read from the standby.
    let writing = Writer::start(writer.clone(), server.clone(), "b");
    drop(on_standby);
    standby.stop();
    let before = metric(&admin, STANDBY_READS).await.unwrap_or(0.0);
    for round in 0..3 {
        let r = replicas::open(&dir, &format!("after-stop-{round}.db"));
        sync(&r, &server, S).await;
        readers.push(r);
    }
    assert_eq!(metric(&admin, STANDBY_READS).await.unwrap_or(0.0), before);
    made += writing.stop().await;

    // Quiescence: every replica syncs once more and equals the primary.
    sync(&writer, &server, S).await;
    let pg = db.state("s").await.unwrap();
    assert_eq!(pg.nodes.len(), made);
    for r in readers.iter().chain([&writer]) {
        sync(r, &server, S).await;
        let g = r.lock().unwrap();
        assert_eq!(g.state().unwrap(), pg);
        g.check_invariants().unwrap();
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A task that edits and syncs `writer` in a loop until stopped.
struct Writer {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<usize>,
}

impl Writer {
    fn start(writer: Shared, server: String, tag: &'static str) -> Writer {
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            let mut made = 0;
            let mut round = 0;
            while !*stopped.borrow() {
                made += edit(&writer, 5, &format!("{tag}{round}-"));
                sync(&writer, &server, S).await;
                round += 1;
            }
            made
        });
        Writer { stop, task }
    }

    /// Stops after the current round; the nodes it made.
    async fn stop(self) -> usize {
        self.stop.send(true).unwrap();
        self.task.await.unwrap()
    }
}
