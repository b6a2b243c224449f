//! Test databases: a migrated template in the shared cluster, cloned per test.

use arbor_shared::tree::TreeState;
use arbor_shared::{MemoryStore, MoveOp, NodeId, Op, OrderKey, SetOp, Stamp, Tree};
use arbor_sync_server::db::{Committed, Db, Origin};
use arbor_testkit::PgCluster;
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
            let admin = cluster.connect("postgres").await.unwrap();
            admin
                .batch_execute(&format!("CREATE DATABASE {TEMPLATE_DB}"))
                .await
                .unwrap();
            let mut client = cluster.connect(TEMPLATE_DB).await.unwrap();
            let applied = arbor_sync_server::db::migrate(&mut client).await.unwrap();
            assert!(!applied.is_empty());
        })
        .await;
    cluster.fresh_db(Some(TEMPLATE_DB)).await.unwrap()
}

pub type MemTree = Tree<MemoryStore>;

pub fn tree() -> MemTree {
    Tree::new(MemoryStore::new())
}

pub fn n(i: u128) -> NodeId {
    NodeId(i)
}

pub fn key(b: &[u8]) -> OrderKey {
    OrderKey::new(b).unwrap()
}

/// A move with stamp (hlc, replica), a key and a known_seq.
pub fn mv(hlc: u64, replica: u64, node: NodeId, parent: NodeId, k: &[u8], known: u64) -> Op {
    Op::Move(MoveOp {
        stamp: Stamp::new(hlc, replica),
        known_seq: known,
        node,
        parent,
        key: key(k),
    })
}

pub fn set(
    hlc: u64,
    replica: u64,
    node: NodeId,
    field: &str,
    value: Option<&str>,
    known: u64,
) -> Op {
    Op::Set(SetOp {
        stamp: Stamp::new(hlc, replica),
        known_seq: known,
        node,
        field: field.into(),
        value: value.map(Into::into),
    })
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

/// Seed from `ARBOR_SEED` or the clock; printed so a failure can be replayed.
pub fn seed(name: &str) -> u64 {
    let seed = std::env::var("ARBOR_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    eprintln!("{name}: seed {seed} (replay with ARBOR_SEED={seed})");
    seed
}

/// Milliseconds since the epoch (stamps must not be ahead of Postgres'
/// clock).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
