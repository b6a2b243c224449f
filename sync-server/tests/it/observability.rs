//! Metrics an operator alerts on (issue 18): requests by route and status,
//! pool use and waits, snapshots, fan-out lag, database time per push,
//! sockets by tier; and no label that grows with spaces, nodes or users.

use arbor_shared::NodeId;
use arbor_shared::auth::Role;
use arbor_shared::protocol::ServerMsg;

use crate::harness::*;
use crate::http::{Server, token};
use crate::ws::{open, push, recv};

#[tokio::test]
async fn the_metrics_an_operator_needs_are_there_with_bounded_labels() {
    let s = Server::start().await;
    // Names that must never show up in a label.
    let spaces = ["obs-a7f3c1", "obs-b91e44", "obs-c0d2aa"];
    let nodes: Vec<NodeId> = (0..3).map(|i| n(0x0b5e_0000 + i)).collect();
    for (i, space) in spaces.iter().enumerate() {
        let admin = token(space, Role::Admin, None, 60);
        s.create_space(space, &admin).await;
        let writer = token(space, Role::Write, Some(40 + i as u64), 60);
        let op = mv(
            (now_ms() << 16) + 1,
            40 + i as u64,
            nodes[i],
            NodeId::ROOT,
            &[0x80],
            0,
        );
        assert_eq!(s.push(space, &writer, &[op]).await.status(), 200);
        let reader = token(space, Role::Read, None, 60);
        assert_eq!(
            s.get(&format!("/v1/spaces/{space}/ops?after=0"), &reader)
                .await
                .status(),
            200
        );
        let children = format!("/v1/spaces/{space}/nodes/{}/children", NodeId::ROOT);
        assert_eq!(s.get(&children, &reader).await.status(), 200);
        let snapshot = s
            .get(&format!("/v1/spaces/{space}/snapshot"), &reader)
            .await;
        assert_eq!(snapshot.status(), 200);
        snapshot.bytes().await.unwrap();
    }
    // A push over a socket: committed, fanned out, acked.
    let space = spaces[0];
    let tok = token(space, Role::Write, Some(77), 60);
    let mut ws = open(&s, space, &tok, 77, Some(0)).await;
    let op = mv(
        (now_ms() << 16) + 9,
        77,
        n(0x0b5e_0077),
        NodeId::ROOT,
        &[0x81],
        0,
    );
    push(&mut ws, 1, vec![op]).await;
    while !matches!(recv(&mut ws).await, ServerMsg::Ack { .. }) {}
    // A path no route has.
    assert_eq!(s.get("/v1/nope/obs-a7f3c1", "x").await.status(), 404);

    let text = s.metrics().await;
    for want in [
        r#"arbor_http_requests_total{route="/v1/spaces/{space}/ops",method="POST",status="200"}"#,
        r#"arbor_http_requests_total{route="/v1/spaces/{space}/ops",method="GET",status="200"}"#,
        r#"arbor_http_requests_total{route="/v1/spaces/{space}/nodes/{node}/children",method="GET",status="200"}"#,
        r#"arbor_http_requests_total{route="unmatched",method="any",status="404"}"#,
        r#"arbor_http_request_seconds_count{route="/v1/spaces/{space}/snapshot",method="GET"}"#,
        r#"arbor_db_pool_wait_seconds_count{pool="primary"}"#,
        r#"arbor_db_pool_in_use{pool="primary"}"#,
        r#"arbor_db_pool_open{pool="primary"}"#,
        r#"arbor_db_pool_waiting{pool="primary"}"#,
        r#"arbor_snapshots_total{scope="space",outcome="done"}"#,
        r#"arbor_snapshot_seconds_count{scope="space"}"#,
        r#"arbor_fanout_seconds_count{tier="native"}"#,
        "arbor_push_db_seconds_count",
        r#"arbor_sockets_active{tier="native"}"#,
        r#"arbor_reads_total{source="primary"}"#,
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(want)),
            "no {want} in /metrics:\n{text}"
        );
    }
    // Every label value comes from a fixed set: no space name, node id or
    // token subject appears anywhere.
    for leak in spaces
        .iter()
        .map(|s| s.to_string())
        .chain(nodes.iter().map(|n| n.to_string()))
        .chain(["tester".to_string()])
    {
        assert!(!text.contains(&leak), "{leak} is in /metrics");
    }
    s.stop().await;
}

/// The dashboard and the alert rules in `deploy/` name only metrics the
/// server exports (a renamed metric would leave a panel or an alert blank).
#[test]
fn the_dashboard_and_alerts_name_real_metrics() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let source = [
        "sync-server/src/metrics.rs",
        "sync-server/src/db/readers.rs",
    ]
    .map(|f| std::fs::read_to_string(root.join(f)).unwrap())
    .join("\n");
    for file in ["deploy/alerts.yml", "deploy/grafana-dashboard.json"] {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        let mut named = 0;
        for (i, _) in text.match_indices("arbor_") {
            let name: String = text[i..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_' || c.is_ascii_digit())
                .collect();
            let base = ["_bucket", "_count", "_sum"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(&name);
            assert!(
                source.contains(&format!("\"{base}\"")),
                "{file} names {name}, which the server does not export"
            );
            named += 1;
        }
        assert!(named > 5, "{file} names only {named} metrics");
    }
}
