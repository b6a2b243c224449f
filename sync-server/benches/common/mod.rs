//! What the sync server's benchmarks share: their token secret and tokens, and a migrated database of their own cluster.

// Each benchmark compiles this module and uses a part of it.
#![allow(dead_code)]

use arbor_shared::auth::Role;
use arbor_sync_server::db::migrate;
use arbor_testkit::{PgCluster, PgOptions};

/// The benchmarks' token secret.
pub(crate) const SECRET: &[u8] = b"bench-secret-bench-secret-bench-secret";

/// A token of `sub` for `space` with `role`, valid for an hour.
pub(crate) fn token(sub: &str, space: &str, role: Role) -> String {
    arbor_testkit::tokens::token(SECRET, sub, space, role, 3600)
}

/// A cluster of its own: durable settings unless `throwaway`.
pub(crate) fn cluster(throwaway: bool, shared_buffers: &'static str) -> PgCluster {
    PgCluster::start(PgOptions {
        throwaway,
        shared_buffers,
    })
    .unwrap()
}

/// The database `name` created in `cluster` and migrated; a connection to
/// it.
pub(crate) async fn database(cluster: &PgCluster, name: &str) -> tokio_postgres::Client {
    let mut c = arbor_testkit::sql::create_database(cluster, name)
        .await
        .unwrap();
    migrate(&mut c).await.unwrap();
    c
}
