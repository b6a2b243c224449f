//! The server side of a test or benchmark: a migrated database, the sync server's settings for tests, a server serving them.

// Test support: a failure here is the test's failure.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use arbor_sync_server::Config;
use arbor_sync_server::db::Db;
use arbor_testkit::PgCluster;

/// Creates the database `name` in `cluster`, migrates it, and opens a pool
/// of `pool` connections to it.
pub async fn database(cluster: &PgCluster, name: &str, pool: usize) -> Db {
    let mut c = arbor_testkit::sql::create_database(cluster, name)
        .await
        .unwrap();
    arbor_sync_server::db::migrate(&mut c).await.unwrap();
    Db::new(cluster.config(name), pool).unwrap()
}

/// The settings tests and benchmarks start from (override fields with
/// struct update syntax): the database `db` of `cluster`, tokens signed
/// with `secret`, a pool of 4, a minute of token leeway, 4 MiB bodies,
/// 1 GiB imports, a 2 s drain, no CORS, 1,024 frames per socket, no
/// notify URL.
pub fn config(cluster: &PgCluster, db: &str, secret: &[u8]) -> Config {
    Config {
        db_pool: 4,
        token_leeway_s: 60,
        max_body_bytes: 4 << 20,
        max_import_bytes: 1 << 30,
        drain: Duration::from_secs(2),
        cors_origins: Vec::new(),
        socket_queue_frames: 1024,
        notify_url: None,
        ..Config::new(cluster.config(db), arbor_testkit::tokens::key(secret))
    }
}

/// Serves `config` on a free port of 127.0.0.1 until the process ends;
/// returns its base URL.
pub async fn serve(config: Config) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(arbor_sync_server::serve(
        listener,
        None,
        config,
        std::future::pending(),
    ));
    url
}
