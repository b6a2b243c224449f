//! Presence between two native clients through a real server: a state set
//! on one reaches the other, is sent again after the server restarts (the
//! room forgot it), and goes when its connection goes.

use std::time::Duration;

use arbor_client::session::PresenceTooLarge;
use arbor_client::{SyncStatus, presence_channel, sync_forever};
use arbor_shared::NodeId;
use arbor_shared::protocol::{MAX_PRESENCE_BYTES, PresenceState};
use tokio::sync::watch;

use crate::harness::*;

/// The focus of the first peer that shows one (a client is sent the
/// others' states only, never its own).
fn focus_seen(s: &SyncStatus) -> Option<NodeId> {
    s.peers
        .iter()
        .find_map(|p| p.state.as_ref().and_then(|st| st.focus))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_reaches_the_other_client_survives_a_restart_and_goes_with_the_connection() {
    let mut server = TestServer::start("s").await;
    let dir = TempDir::new("presence");
    let (a, b) = (dir.replica("a"), dir.replica("b"));
    let (a_presence, a_rx) = presence_channel();
    let mut a_config = server.sync_config("s");
    a_config.presence = Some(a_rx);
    let (a_tx, mut a_status) = watch::channel(SyncStatus::default());
    let a_task = tokio::spawn(sync_forever(a, a_config, a_tx, std::future::pending()));
    let (b_tx, mut b_status) = watch::channel(SyncStatus::default());
    let b_config = server.sync_config("s");
    let b_task = tokio::spawn(sync_forever(b, b_config, b_tx, std::future::pending()));
    wait_for(&mut a_status, "a live", is_live).await;
    wait_for(&mut b_status, "b live", is_live).await;

    // A state too large is refused before it is sent.
    let big = PresenceState {
        data: Some(serde_json::Value::String("x".repeat(MAX_PRESENCE_BYTES))),
        ..PresenceState::default()
    };
    assert!(matches!(
        a_presence.set(Some(big)),
        Err(PresenceTooLarge(n)) if n > MAX_PRESENCE_BYTES
    ));

    let focus = |n: u128| PresenceState {
        user: Some("ann".into()),
        focus: Some(NodeId(n)),
        editing: true,
        ..PresenceState::default()
    };
    a_presence.set(Some(focus(7))).unwrap();
    wait_for(&mut b_status, "b sees a's focus", |s| {
        focus_seen(s) == Some(NodeId(7))
    })
    .await;
    // B shows nothing: A sees no state.
    assert_eq!(focus_seen(&a_status.borrow()), None);
    // Changes follow (the latest wins).
    for n in 8..=12 {
        a_presence.set(Some(focus(n))).unwrap();
    }
    wait_for(&mut b_status, "b sees a's last focus", |s| {
        focus_seen(s) == Some(NodeId(12))
    })
    .await;

    // The server restarts: its rooms forget every state; A sends its own
    // again when it is welcomed back.
    server.kill().await;
    wait_for(&mut b_status, "b sees the server gone", |s| !is_live(s)).await;
    server.restart().await;
    wait_for(&mut b_status, "b sees a's focus again", |s| {
        is_live(s) && focus_seen(s) == Some(NodeId(12))
    })
    .await;
    // A is listed to itself by the server, with its state; its status
    // leaves its own connection out.
    wait_for(&mut a_status, "a sees b", |s| {
        is_live(s) && !s.peers.is_empty()
    })
    .await;
    assert_eq!(focus_seen(&a_status.borrow()), None);

    // Cleared, then set again, then A's connection goes: B sees it gone.
    a_presence.set(None).unwrap();
    wait_for(&mut b_status, "b sees a's state cleared", |s| {
        focus_seen(s).is_none()
    })
    .await;
    a_presence.set(Some(focus(13))).unwrap();
    wait_for(&mut b_status, "b sees a's new focus", |s| {
        focus_seen(s) == Some(NodeId(13))
    })
    .await;
    a_task.abort();
    let _ = a_task.await;
    wait_for(&mut b_status, "b sees a gone", |s| focus_seen(s).is_none()).await;
    b_task.abort();
    let _ = tokio::time::timeout(Duration::from_secs(5), b_task).await;
}
