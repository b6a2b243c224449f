//! The horizon policy: every space's horizon is kept a configured age
//! behind now, so a push can reach only that far into the past.

use std::time::Duration;

use arbor_shared::NodeId;
use arbor_sync_server::db::{Db, RejectCode};
use arbor_sync_server::horizon::cutoff;

use crate::harness::*;
use crate::http::{Server, key};

const KEEP: Duration = Duration::from_secs(60);

/// Stamp of `ago` before now.
fn ago(ago: Duration) -> u64 {
    (now_ms() - ago.as_millis() as u64) << 16
}

#[tokio::test]
async fn the_policy_step_raises_old_horizons_and_never_lowers_one() {
    let db = test_db().await;
    db.create_space("old").await.unwrap();
    db.create_space("ahead").await.unwrap();
    // A space whose horizon is already past the cutoff keeps it.
    let ahead = arbor_shared::Stamp::new(ago(Duration::from_secs(1)), 0);
    db.raise_horizon("ahead", ahead).await.unwrap();
    let raised = db.raise_horizons(cutoff(now_ms(), KEEP)).await.unwrap();
    assert_eq!(raised, 1);
    assert_eq!(
        db.space("ahead").await.unwrap().unwrap().horizon,
        Some(ahead)
    );
    // Older than the kept age: stale, and nothing changes. Younger: applies.
    let old = mv(ago(2 * KEEP), 3, n(1), NodeId::ROOT, &[0x80], 0);
    let err = db.apply("old", None, &[old]).await.unwrap_err();
    assert_eq!(err.reject_code(), Some(RejectCode::Stale), "{err}");
    assert_eq!(db.space("old").await.unwrap().unwrap().head_seq, 0);
    let young = mv(ago(KEEP / 2), 3, n(1), NodeId::ROOT, &[0x80], 0);
    db.apply("old", None, &[young]).await.unwrap();
    // Running again changes nothing that is already past the cutoff.
    let again = db
        .raise_horizons(cutoff(now_ms() - 10_000, KEEP))
        .await
        .unwrap();
    assert_eq!(again, 0);
}

/// The server runs the step on its own (`--horizon-keep-s`).
#[tokio::test]
async fn the_server_raises_horizons_by_itself() {
    let database = test_db_config().await;
    let db = Db::new(database.clone(), 1).unwrap();
    db.create_space("s").await.unwrap();
    assert_eq!(db.space("s").await.unwrap().unwrap().horizon, None);
    let server = Server::start_config(arbor_sync_server::Config {
        horizon_keep: Some(KEEP),
        ..arbor_sync_server::Config::new(database, key())
    })
    .await;
    // The policy's first step runs when the server starts; wait for its
    // effect (bounded), then an op older than the kept age is stale.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while db.space("s").await.unwrap().unwrap().horizon.is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no horizon after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let old = mv(ago(2 * KEEP), 3, n(1), NodeId::ROOT, &[0x80], 0);
    let err = db.apply("s", None, &[old]).await.unwrap_err();
    assert_eq!(err.reject_code(), Some(RejectCode::Stale), "{err}");
    server.stop().await;
}
