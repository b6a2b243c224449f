//! Test databases: a migrated template in the shared cluster, cloned per test.

use arbor_shared::Op;
use arbor_shared::tree::TreeState;
use arbor_sync_server::db::{Committed, Db, Origin};
use arbor_testkit::PgCluster;
pub use arbor_testkit::env::{now_ms, seed};
pub use arbor_testkit::ops::{MemTree, mv, n, set, tree};
use arbor_testkit::sql::create_database;
use tokio::sync::OnceCell;

static TEMPLATE: OnceCell<()> = OnceCell::const_new();
const TEMPLATE_DB: &str = "arbor_template";

/// A fresh, migrated database of its own.
pub async fn test_db() -> Db {
    Db::new(test_db_config().await, 16).unwrap()
}

/// The connection config of a fresh, migrated database of its own.
pub async fn test_db_config() -> tokio_postgres::Config {
    PgCluster::shared().config(&test_db_name().await)
}

/// The name of a fresh, migrated database of its own (in the shared
/// cluster).
pub async fn test_db_name() -> String {
    let cluster = PgCluster::shared();
    TEMPLATE
        .get_or_init(|| async {
            let mut client = create_database(cluster, TEMPLATE_DB).await.unwrap();
            let applied = arbor_sync_server::db::migrate(&mut client).await.unwrap();
            assert!(!applied.is_empty());
        })
        .await;
    cluster.fresh_db(Some(TEMPLATE_DB)).await.unwrap()
}

/// The ops of an answer that the reference must apply: new ones and
/// restores, in seq order.
pub fn to_apply(committed: &[Committed]) -> Vec<Op> {
    committed
        .iter()
        .filter(|c| c.origin != Origin::Duplicate)
        .map(|c| c.op.clone())
        .collect()
}

/// Applies an answer to the reference and checks Postgres equals it.
pub async fn check_same(db: &Db, space: &str, reference: &mut MemTree, committed: &[Committed]) {
    reference.apply(&to_apply(committed)).unwrap();
    reference.check_invariants().unwrap();
    assert_state_eq(&db.state(space).await.unwrap(), &reference.state().unwrap());
}

pub fn assert_state_eq(pg: &TreeState, core: &TreeState) {
    if pg != core {
        for (id, place) in &core.nodes {
            match pg.nodes.get(id) {
                Some(p) if p == place => {}
                other => eprintln!("node {id}: core {place:?}, postgres {other:?}"),
            }
        }
        for (id, place) in &pg.nodes {
            if !core.nodes.contains_key(id) {
                eprintln!("node {id}: only in postgres {place:?}");
            }
        }
        if pg.payloads != core.payloads {
            eprintln!(
                "payloads differ: core {:?}, postgres {:?}",
                core.payloads, pg.payloads
            );
        }
        panic!("postgres state differs from the core's");
    }
}
