//! Group commits from the Durable Object: `POST .../ops/group` and the upstream socket, on a real server.

use arbor_shared::ErrorCode;
use arbor_shared::auth::Role;
use arbor_shared::http::{GroupIngestAnswer, GroupPush, UpstreamMsg};
use arbor_shared::{NodeId, ReplicaId};
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

use crate::harness::*;
use crate::http::{Server, error_code, token};

fn now_hlc() -> u64 {
    now_ms() << 16
}

/// POSTs `body` to `url` with `token`.
async fn post(s: &Server, url: &str, token: &str, body: serde_json::Value) -> reqwest::Response {
    s.http
        .post(url)
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_group_commits_each_push_alone_and_refuses_only_the_bad_one() {
    let (s, admin) = Server::start_demo().await;
    let service = token("demo", Role::Service, None, 60);
    let base = now_hlc();
    let too_long = "x".repeat(70_000);
    let pushes = vec![
        GroupPush {
            author: Some(ReplicaId(7)),
            sub: None,
            root: None,
            ops: vec![mv(base, 7, n(1), NodeId::ROOT, &[0x80], 0)],
        },
        GroupPush {
            author: Some(ReplicaId(8)),
            sub: None,
            root: None,
            ops: vec![set(base + 1, 8, n(1), "text", Some(&too_long), 0)],
        },
        // Depends on the first push of the group: applied after it.
        GroupPush {
            author: Some(ReplicaId(7)),
            sub: None,
            root: None,
            ops: vec![set(base + 2, 7, n(1), "text", Some("hi"), 0)],
        },
        // By another replica than its author: refused by the database.
        GroupPush {
            author: Some(ReplicaId(9)),
            sub: None,
            root: None,
            ops: vec![set(base + 3, 7, n(1), "text", Some("no"), 0)],
        },
    ];
    let url = s.url("/v1/spaces/demo/ops/group");
    // Only a service token may commit for others.
    let write = token("demo", Role::Write, Some(7), 60);
    let r = post(&s, &url, &write, json!({ "pushes": pushes })).await;
    assert_eq!(error_code(r).await, (403, "forbidden".into()));
    let r = post(&s, &url, &service, json!({ "pushes": pushes })).await;
    assert_eq!(r.status(), 200);
    let answer: GroupIngestAnswer = r.json().await.unwrap();
    let summary: Vec<Result<Vec<u64>, ErrorCode>> = answer
        .results
        .iter()
        .map(|r| match (&r.ops, &r.error) {
            (Some(ops), None) => Ok(ops.iter().map(|c| c.seq).collect()),
            (None, Some(e)) => Err(e.code),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        summary,
        [
            Ok(vec![1]),
            Err(ErrorCode::BadOp),
            Ok(vec![2]),
            Err(ErrorCode::WrongReplica)
        ]
    );
    // More than 64 pushes: the whole group is refused, nothing written.
    let many: Vec<GroupPush> = (0..65)
        .map(|i| GroupPush {
            author: Some(ReplicaId(7)),
            sub: None,
            root: None,
            ops: vec![set(base + 10 + i, 7, n(1), "text", Some("x"), 0)],
        })
        .collect();
    let r = post(&s, &url, &service, json!({ "pushes": many })).await;
    assert_eq!(error_code(r).await, (413, "batch_too_large".into()));
    let feed: arbor_shared::http::OpsBody = s.get_json("/v1/spaces/demo/ops", &admin).await;
    assert_eq!(feed.head_seq, Some(2));
    s.stop().await;
}

#[tokio::test]
async fn the_upstream_socket_answers_each_commit_by_id() {
    let (s, admin) = Server::start_demo().await;
    let url = s
        .url("/v1/spaces/demo/upstream")
        .replace("http://", "ws://");
    // A write token is refused before the upgrade.
    let mut req = url.clone().into_client_request().unwrap();
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {}", token("demo", Role::Write, Some(7), 60))
            .parse()
            .unwrap(),
    );
    let refused = tokio_tungstenite::connect_async(req).await.unwrap_err();
    assert!(refused.to_string().contains("403"), "{refused}");
    let mut req = url.into_client_request().unwrap();
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {}", token("demo", Role::Service, None, 60))
            .parse()
            .unwrap(),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    let base = now_hlc();
    let mut next = async |frame: String| -> UpstreamMsg {
        ws.send(Message::Text(frame.into())).await.unwrap();
        loop {
            if let Some(Ok(Message::Text(t))) = ws.next().await {
                return serde_json::from_str(&t).unwrap();
            }
        }
    };
    let commit = UpstreamMsg::Commit {
        id: 41,
        pushes: vec![GroupPush {
            author: Some(ReplicaId(7)),
            sub: None,
            root: None,
            ops: vec![mv(base, 7, n(1), NodeId::ROOT, &[0x80], 0)],
        }],
    };
    match next(serde_json::to_string(&commit).unwrap()).await {
        UpstreamMsg::Committed { id: 41, results } => {
            assert_eq!(results.len(), 1);
            assert_eq!(results[0].ops.as_ref().unwrap()[0].seq, 1);
        }
        other => panic!("{other:?}"),
    }
    // Not a commit: refused, and the socket stays usable.
    match next("{\"type\":\"hello\"}".into()).await {
        UpstreamMsg::Refused { id: 0, error } => assert_eq!(error.code, ErrorCode::Malformed),
        other => panic!("{other:?}"),
    }
    let again = UpstreamMsg::Commit {
        id: 42,
        pushes: vec![GroupPush {
            author: Some(ReplicaId(7)),
            sub: None,
            root: None,
            ops: vec![set(base + 1, 7, n(1), "text", Some("hi"), 0)],
        }],
    };
    assert!(matches!(
        next(serde_json::to_string(&again).unwrap()).await,
        UpstreamMsg::Committed { id: 42, .. }
    ));
    let feed: arbor_shared::http::OpsBody = s.get_json("/v1/spaces/demo/ops", &admin).await;
    assert_eq!(feed.head_seq, Some(2));
    s.stop().await;
}
