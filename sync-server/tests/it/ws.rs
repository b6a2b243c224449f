//! The native realtime endpoint over real sockets: tokens checked before
//! the upgrade, hello and catch-up, pushes relayed after commit to every
//! socket (author included) then acked, HTTP ingest reaching sockets.

use arbor_shared::auth::Role;
use arbor_shared::protocol::{ClientMsg, ServerMsg};
use arbor_shared::{NodeId, Op, ReplicaId};
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

use crate::harness::*;
use crate::http::{Server, token};

pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A socket on `space`'s realtime endpoint with `tok`, or the status that
/// refused the upgrade.
pub async fn connect(s: &Server, space: &str, tok: &str) -> Result<Ws, u16> {
    let url = format!(
        "{}/v1/spaces/{space}/ws",
        s.base.replace("http://", "ws://")
    );
    let mut req = url.into_client_request().unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {tok}").parse().unwrap());
    match tokio_tungstenite::connect_async(req).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => Err(r.status().as_u16()),
        Err(e) => panic!("{e}"),
    }
}

/// A socket on `space` with `tok` that said hello as `replica` from
/// `cursor`.
pub async fn open(s: &Server, space: &str, tok: &str, replica: u64, cursor: Option<u64>) -> Ws {
    let mut ws = connect(s, space, tok).await.unwrap();
    hello(&mut ws, replica, cursor).await;
    ws
}

pub async fn send(ws: &mut Ws, msg: ClientMsg) {
    ws.send(Message::Text(msg.encode().into())).await.unwrap();
}

/// Sends a text frame that need not be a message.
pub async fn send_text(ws: &mut Ws, text: &str) {
    ws.send(Message::Text(text.into())).await.unwrap();
}

/// Says hello as `replica` from `cursor`.
pub async fn hello(ws: &mut Ws, replica: u64, cursor: Option<u64>) {
    let msg = ClientMsg::Hello {
        v: 1,
        replica: ReplicaId(replica),
        cursor,
        root: None,
    };
    send(ws, msg).await;
}

/// Pushes `ops` as `batch`.
pub async fn push(ws: &mut Ws, batch: u64, ops: Vec<Op>) {
    send(ws, ClientMsg::Push { batch, ops }).await;
}

/// A socket on `demo` with a 60 s token of `role` bound to `replica`,
/// that said hello as `replica` from `cursor`.
pub async fn demo_socket(s: &Server, role: Role, replica: u64, cursor: Option<u64>) -> Ws {
    let tok = token("demo", role, Some(replica), 60);
    open(s, "demo", &tok, replica, cursor).await
}

/// The next frame; a frame that does not come within 20 s fails the test
/// (a bound on failure, not a synchronization).
pub async fn recv(ws: &mut Ws) -> ServerMsg {
    loop {
        let next = tokio::time::timeout(std::time::Duration::from_secs(20), ws.next())
            .await
            .expect("no frame within 20 s");
        match next.unwrap().unwrap() {
            Message::Text(t) => return ServerMsg::decode(&t).unwrap(),
            Message::Close(f) => panic!("closed: {f:?}"),
            _ => {}
        }
    }
}

/// Receives until `n` ops arrived; returns their seqs and the other frames.
pub async fn recv_ops(ws: &mut Ws, n: usize) -> (Vec<u64>, Vec<ServerMsg>) {
    let (mut seqs, mut other) = (Vec::new(), Vec::new());
    while seqs.len() < n {
        match recv(ws).await {
            ServerMsg::Ops { ops } => seqs.extend(ops.iter().map(|o| o.seq)),
            m => other.push(m),
        }
    }
    (seqs, other)
}

/// The close code the socket ends with (`None`: it ended without one).
pub async fn close_code(ws: &mut Ws) -> Option<u16> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Close(f))) => return f.map(|f| u16::from(f.code)),
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return None,
        }
    }
}

/// The `error` frames and the close code a socket ends with (a frame that
/// does not come within 20 s fails the test).
pub async fn ending(ws: &mut Ws) -> (Vec<ServerMsg>, Option<u16>) {
    let mut errors = Vec::new();
    loop {
        match tokio::time::timeout(std::time::Duration::from_secs(20), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => {
                if let Ok(m @ ServerMsg::Error { .. }) = ServerMsg::decode(&t) {
                    errors.push(m);
                }
            }
            Ok(Some(Ok(Message::Close(f)))) => return (errors, f.map(|f| u16::from(f.code))),
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(_)) | None) => return (errors, None),
            Err(_) => panic!("the socket was not closed within 20 s"),
        }
    }
}

/// The code of an `error` frame.
pub fn code_of(m: Option<&ServerMsg>) -> Option<&'static str> {
    match m {
        Some(ServerMsg::Error { code, .. }) => Some(code.as_str()),
        _ => None,
    }
}

fn create(step: u64, replica: u64, node: u128) -> Op {
    mv(
        (now_ms() << 16) + step,
        replica,
        n(node),
        NodeId::ROOT,
        &[0x80],
        0,
    )
}

#[tokio::test]
async fn sockets_catch_up_push_and_relay_in_seq_order() {
    let s = Server::start().await;
    s.create_space("demo", &token("demo", Role::Admin, None, 60))
        .await;
    // Bad tokens never reach an upgrade.
    assert_eq!(connect(&s, "demo", "garbage").await.err(), Some(401));
    assert_eq!(
        connect(&s, "demo", &token("other", Role::Write, None, 60))
            .await
            .err(),
        Some(403)
    );
    assert_eq!(
        connect(&s, "nope", &token("nope", Role::Write, None, 60))
            .await
            .err(),
        Some(404)
    );

    // Three ops exist before anyone connects.
    let before: Vec<Op> = (1..=3).map(|i| create(i, 9, u128::from(i))).collect();
    s.push("demo", token("demo", Role::Write, None, 60), &before)
        .await;

    let mut a = demo_socket(&s, Role::Write, 1, Some(1)).await;
    assert!(matches!(
        recv(&mut a).await,
        ServerMsg::Welcome { head_seq: 3, .. }
    ));
    assert_eq!(recv_ops(&mut a, 2).await.0, [2, 3]);

    let mut b = demo_socket(&s, Role::Read, 2, Some(3)).await;
    assert!(matches!(
        recv(&mut b).await,
        ServerMsg::Welcome { head_seq: 3, .. }
    ));

    // A pushes: both get the op (A first the op, then the ack).
    push(&mut a, 1, vec![create(10, 1, 10)]).await;
    let (seqs_a, other_a) = recv_ops(&mut a, 1).await;
    assert_eq!(seqs_a, [4]);
    let next = recv(&mut a).await;
    let acked =
        other_a.contains(&ServerMsg::Ack { batch: 1 }) || next == ServerMsg::Ack { batch: 1 };
    assert!(acked, "{other_a:?} then {next:?}");
    assert_eq!(recv_ops(&mut b, 1).await.0, [4]);

    // A push by another replica than the token's is refused, nothing relayed.
    push(&mut a, 2, vec![create(11, 5, 11)]).await;
    loop {
        match recv(&mut a).await {
            ServerMsg::Error {
                batch: Some(2),
                code,
                ..
            } => {
                assert_eq!(code.as_str(), "wrong_replica");
                break;
            }
            ServerMsg::Ops { ops } => panic!("relayed a refused push: {ops:?}"),
            _ => {}
        }
    }
    // A read token cannot push.
    push(&mut b, 3, vec![create(12, 2, 12)]).await;
    loop {
        if let ServerMsg::Error {
            batch: Some(3),
            code,
            ..
        } = recv(&mut b).await
        {
            assert_eq!(code.as_str(), "forbidden");
            break;
        }
    }

    // An op committed over HTTP reaches the sockets.
    s.push(
        "demo",
        token("demo", Role::Write, None, 60),
        &[create(20, 9, 20)],
    )
    .await;
    assert_eq!(recv_ops(&mut a, 1).await.0, [5]);
    assert_eq!(recv_ops(&mut b, 1).await.0, [5]);

    // A malformed frame closes the socket with 4003.
    send_text(&mut a, "{\"type\":\"bogus\"}").await;
    assert_eq!(close_code(&mut a).await, Some(4003));
    drop(b);
    s.stop().await;
}

#[tokio::test]
async fn a_slow_reader_is_closed_while_others_keep_up() {
    // Four frames of queue per socket: a reader that stops reading is
    // closed with 4002 once its queue and the kernel's buffers are full;
    // a reader that keeps reading gets every op.
    let (s, admin) = Server::start_demo_with(4, 5).await;
    let base = now_ms() << 16;
    s.push(
        "demo",
        &admin,
        &[mv(base, 9, n(1), NodeId::ROOT, &[0x80], 0)],
    )
    .await;
    let mut slow = demo_socket(&s, Role::Read, 1, Some(1)).await;
    let mut fast = demo_socket(&s, Role::Read, 2, Some(1)).await;
    const BATCHES: u64 = 100;
    const PER: u64 = 200;
    let reader = tokio::spawn(async move {
        let (seqs, _) = recv_ops(&mut fast, (BATCHES * PER) as usize).await;
        seqs
    });
    let value = "v".repeat(1_000);
    for b in 0..BATCHES {
        let ops: Vec<_> = (0..PER)
            .map(|i| set(base + 1 + b * PER + i, 9, n(1), "text", Some(&value), 1))
            .collect();
        let r = s.push("demo", &admin, &ops).await;
        assert_eq!(r.status(), 200);
    }
    let seqs = reader.await.unwrap();
    assert_eq!(seqs, (2..=(1 + BATCHES * PER)).collect::<Vec<_>>());
    assert_eq!(close_code(&mut slow).await, Some(4002));
    s.stop().await;
}

#[tokio::test]
async fn an_expired_token_closes_its_socket_and_shutdown_closes_the_rest() {
    let (s, _) = Server::start_demo_with(256, 0).await;
    // Valid for one more second: the room's once-a-second check closes it.
    let mut short = open(&s, "demo", &token("demo", Role::Read, Some(1), 1), 1, None).await;
    let mut long = open(
        &s,
        "demo",
        &token("demo", Role::Read, Some(2), 600),
        2,
        None,
    )
    .await;
    assert_eq!(close_code(&mut short).await, Some(4001));
    // Shutdown: the remaining socket is closed with 1001, and the server
    // returns.
    let stopping = tokio::spawn(s.stop());
    assert_eq!(close_code(&mut long).await, Some(1001));
    stopping.await.unwrap();
}

#[tokio::test]
async fn reconnecting_with_a_cursor_gets_exactly_the_missed_ops() {
    let (s, admin) = Server::start_demo().await;
    let push_http = |from: u64, to: u64| {
        let ops: Vec<Op> = (from..to).map(|i| create(i, 9, u128::from(i))).collect();
        s.http
            .post(s.url("/v1/spaces/demo/ops"))
            .bearer_auth(admin.clone())
            .json(&json!({ "ops": ops }))
            .send()
    };
    push_http(1, 6).await.unwrap();
    let mut a = demo_socket(&s, Role::Read, 1, None).await;
    assert_eq!(recv_ops(&mut a, 5).await.0, [1, 2, 3, 4, 5]);
    a.close(None).await.unwrap();
    drop(a);
    // Offline: three more ops.
    push_http(6, 9).await.unwrap();
    let mut a = demo_socket(&s, Role::Read, 1, Some(5)).await;
    assert!(matches!(
        recv(&mut a).await,
        ServerMsg::Welcome { head_seq: 8, .. }
    ));
    // Then one live op: the catch-up and live ops meet with no gap.
    push_http(9, 10).await.unwrap();
    assert_eq!(recv_ops(&mut a, 4).await.0, [6, 7, 8, 9]);
    // A push whose op does not decode is refused with its batch, typed,
    // and changes nothing; the socket stays open.
    a.send(Message::Text(
        "{\"type\":\"push\",\"batch\":1,\"ops\":[{\"kind\":\"move\"}]}".into(),
    ))
    .await
    .unwrap();
    match recv(&mut a).await {
        ServerMsg::Error { code, batch, .. } => {
            assert_eq!((code.as_str(), batch), ("bad_op", Some(1)));
        }
        other => panic!("{other:?}"),
    }
    send(&mut a, ClientMsg::Ping {}).await;
    assert_eq!(recv(&mut a).await, ServerMsg::Pong);
    // A frame that is not a message at all closes the socket (4003).
    a.send(Message::Text("{\"type\":\"nope\"}".into()))
        .await
        .unwrap();
    let mut got_error = false;
    while let Some(Ok(m)) = a.next().await {
        match m {
            Message::Text(t) => {
                if let ServerMsg::Error { code, .. } = ServerMsg::decode(&t).unwrap() {
                    assert_eq!(code.as_str(), "malformed");
                    got_error = true;
                }
            }
            Message::Close(_) => break,
            _ => {}
        }
    }
    assert!(got_error);
    let feed: arbor_sync_server::api::OpsBody = s.get_json("/v1/spaces/demo/ops", &admin).await;
    assert_eq!(feed.head_seq, Some(9));
    s.stop().await;
}

#[tokio::test]
async fn back_to_back_pushes_commit_in_arrival_order() {
    // A client pushes a create and, without waiting for its ack, a set on
    // the new node: the room commits them in arrival order, so both land.
    let (s, _) = Server::start_demo().await;
    let mut a = demo_socket(&s, Role::Write, 1, None).await;
    let base = now_ms() << 16;
    // Six pairs: twelve pushes in flight, under the room's limit of 16.
    for i in 0..6u64 {
        let node = n(u128::from(i) + 1);
        push(
            &mut a,
            2 * i,
            vec![mv(base + 2 * i, 1, node, NodeId::ROOT, &[0x80], 0)],
        )
        .await;
        push(
            &mut a,
            2 * i + 1,
            vec![set(base + 2 * i + 1, 1, node, "text", Some("x"), 0)],
        )
        .await;
    }
    let (seqs, other) = recv_ops(&mut a, 12).await;
    assert_eq!(seqs, (1..=12).collect::<Vec<_>>());
    assert!(
        !other.iter().any(|m| matches!(m, ServerMsg::Error { .. })),
        "{other:?}"
    );
    s.stop().await;
}

#[tokio::test]
async fn two_server_processes_relay_each_others_commits() {
    // Two servers share one database and nothing else: a push through one
    // and an HTTP ingest through the other reach the sockets of both, in
    // seq order, through the commit notices.
    let db = test_db_config().await;
    let one = Server::start_on(db.clone(), 256, 5).await;
    let two = Server::start_on(db, 256, 5).await;
    let admin = token("demo", Role::Admin, None, 60);
    one.create_space("demo", &admin).await;
    let mut a = connect(&one, "demo", &token("demo", Role::Write, Some(1), 60))
        .await
        .unwrap();
    let mut b = connect(&two, "demo", &token("demo", Role::Write, Some(2), 60))
        .await
        .unwrap();
    for (ws, replica) in [(&mut a, 1), (&mut b, 2)] {
        hello(ws, replica, Some(0)).await;
        assert!(matches!(
            recv(ws).await,
            ServerMsg::Welcome { head_seq: 0, .. }
        ));
    }
    push(&mut a, 1, vec![create(1, 1, 1), create(2, 1, 2)]).await;
    assert_eq!(recv_ops(&mut a, 2).await.0, [1, 2]);
    assert_eq!(recv_ops(&mut b, 2).await.0, [1, 2]);
    let ops: Vec<Op> = (3..6).map(|i| create(i, 9, u128::from(i))).collect();
    let r = two.push("demo", &admin, &ops).await;
    assert_eq!(r.status(), 200);
    assert_eq!(recv_ops(&mut b, 3).await.0, [3, 4, 5]);
    assert_eq!(recv_ops(&mut a, 3).await.0, [3, 4, 5]);
    push(&mut b, 7, vec![create(6, 2, 6)]).await;
    let (seqs, other) = recv_ops(&mut b, 1).await;
    assert_eq!(seqs, [6]);
    assert!(!other.iter().any(|m| matches!(m, ServerMsg::Error { .. })));
    assert_eq!(recv_ops(&mut a, 1).await.0, [6]);
    one.stop().await;
    two.stop().await;
}

#[tokio::test]
async fn oversized_frames_close_1009_and_change_nothing() {
    let (s, admin) = Server::start_demo().await;
    // Just over the protocol limit: the room refuses it with a typed error,
    // then closes 1009. Far over it: the transport refuses it, also 1009.
    for (size, typed) in [((1 << 20) + 10, true), (3 << 20, false)] {
        let mut ws = demo_socket(&s, Role::Write, 1, Some(0)).await;
        assert!(matches!(recv(&mut ws).await, ServerMsg::Welcome { .. }));
        let ops = serde_json::to_string(&[create(1, 1, 1)]).unwrap();
        let frame = format!(
            "{{\"type\":\"push\",\"batch\":1,\"ops\":{ops},\"pad\":\"{}\"}}",
            "x".repeat(size)
        );
        send_text(&mut ws, &frame).await;
        let (errors, code) = ending(&mut ws).await;
        let error = errors.last();
        assert_eq!(code, Some(1009), "frame of {size} bytes");
        if typed {
            assert_eq!(code_of(error), Some("frame_too_large"));
        }
    }
    let feed: arbor_sync_server::api::OpsBody = s.get_json("/v1/spaces/demo/ops", &admin).await;
    assert_eq!(feed.head_seq, Some(0));
    assert!(feed.ops.is_empty());
    s.stop().await;
}

/// A NUL in a value (or a field) is bad input, refused with a typed code
/// before it reaches Postgres, over the socket and over HTTP; so is a
/// space name with one. Nothing is written, no response names Postgres,
/// and the socket stays open.
#[tokio::test]
async fn a_nul_byte_is_refused_as_bad_input_not_as_an_outage() {
    let (s, admin) = Server::start_demo().await;
    let write = token("demo", Role::Write, Some(7), 60);
    let mut ws = open(&s, "demo", &write, 7, Some(0)).await;
    assert!(matches!(recv(&mut ws).await, ServerMsg::Welcome { .. }));
    let nul = set((now_ms() << 16) + 2, 7, n(1), "text\0", Some("x"), 0);
    let in_value = set((now_ms() << 16) + 3, 7, n(1), "text", Some("a\0b"), 0);
    for (batch, op) in [(1u64, nul), (2, in_value.clone())] {
        send(
            &mut ws,
            ClientMsg::Push {
                batch,
                ops: vec![create(1, 7, 1), op],
            },
        )
        .await;
        match recv(&mut ws).await {
            ServerMsg::Error {
                code,
                message,
                batch: b,
                ..
            } => {
                assert_eq!((code.as_str(), b), ("bad_op", Some(batch)));
                assert!(message.contains("NUL"), "{message}");
                assert!(!message.to_lowercase().contains("postgres"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }
    // The socket still works.
    send(&mut ws, ClientMsg::Ping {}).await;
    assert_eq!(recv(&mut ws).await, ServerMsg::Pong);
    // Over HTTP: 400 bad_op.
    let r = s.push("demo", &write, &[create(4, 7, 2), in_value]).await;
    let (status, code) = crate::http::error_code(r).await;
    assert_eq!((status, code.as_str()), (400, "bad_op"));
    // A space name with a NUL: 400 bad_request, from every route.
    for path in ["/v1/spaces/de%00mo/ops", "/v1/spaces/de%00mo/snapshot"] {
        let r = s.get(path, &admin).await;
        let (status, code) = crate::http::error_code(r).await;
        assert_eq!((status, code.as_str()), (400, "bad_request"), "{path}");
    }
    let r = s
        .http
        .put(s.url("/v1/spaces/a%00b"))
        .bearer_auth(token("a\0b", Role::Admin, None, 60))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let feed: arbor_shared::http::OpsBody = s.get_json("/v1/spaces/demo/ops", &admin).await;
    assert_eq!(feed.head_seq, Some(0), "nothing was written");
    s.stop().await;
}

/// A space whose state is not in its log (imported: horizon set, log
/// empty) tells a `hello` with no cursor to load a snapshot instead of
/// welcoming it to an empty feed; a cursor from its snapshot is welcome.
#[tokio::test]
async fn a_hello_without_a_cursor_on_an_imported_space_gets_snapshot_required() {
    let db_name = test_db_name().await;
    let s = Server::start_on(arbor_testkit::PgCluster::shared().config(&db_name), 256, 5).await;
    let admin = token("imp", Role::Admin, None, 60);
    s.create_space("imp", &admin).await;
    // What an import leaves: head 0, no log, a horizon.
    let db = arbor_sync_server::db::Db::new(arbor_testkit::PgCluster::shared().config(&db_name), 1)
        .unwrap();
    db.raise_horizon("imp", arbor_shared::Stamp::new(now_ms() << 16, 9))
        .await
        .unwrap();
    let read = token("imp", Role::Read, Some(3), 60);
    let mut ws = open(&s, "imp", &read, 3, None).await;
    assert_eq!(
        recv(&mut ws).await,
        ServerMsg::SnapshotRequired { head_seq: 0 }
    );
    let mut ws = open(&s, "imp", &read, 3, Some(0)).await;
    assert!(matches!(recv(&mut ws).await, ServerMsg::Welcome { .. }));
    let feed: arbor_shared::http::OpsBody = s.get_json("/v1/spaces/imp/ops", &read).await;
    assert_eq!(feed.min_cursor, Some(0));
    s.stop().await;
}
