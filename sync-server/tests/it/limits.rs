//! What one client cannot take from the others, on a real server over real sockets: stalled streams are dropped and never starve short requests; silent connections and sockets time out; caps and rates answer with typed refusals and a wait.

use std::time::{Duration, Instant};

use arbor_shared::auth::Role;
use arbor_shared::protocol::{ClientMsg, ServerMsg};
use arbor_shared::{NodeId, ReplicaId};
use arbor_sync_server::limits::Limits;
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

use crate::harness::*;
use crate::http::{Server, error_code, key, token};

/// A token of user `sub` (limits count per user and space).
fn user_token(sub: &str, space: &str, role: Role) -> String {
    let claims = arbor_shared::auth::Claims::new(sub, space, role, now_ms() / 1000, 600);
    arbor_shared::auth::mint(&claims, &key())
}

/// Limits for a test: the defaults of a pool of 4, generous rates, and
/// `f`'s changes.
fn limits(f: impl FnOnce(&mut Limits)) -> Limits {
    let mut l = Limits {
        requests_per_s: 100_000.0,
        pushes_per_s: 100_000.0,
        ..Limits::for_pool(4)
    };
    f(&mut l);
    l
}

fn host_of(s: &Server) -> String {
    s.base.trim_start_matches("http://").to_string()
}

/// Waits (at most `within`) until the server closes `stream`: a read gives
/// end of file. Returns how long it took.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> Duration {
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(within, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return started.elapsed(),
            Ok(Ok(_)) => {}
            Err(_) => panic!("the server did not close the connection within {within:?}"),
        }
    }
}

/// 32 snapshot downloads that never read and 32 imports that send their
/// headers and then nothing hold no more than the stream budget, and every
/// push and catch-up on another space is served meanwhile; once the stall
/// timeout passes, the stalled streams are dropped and the budget is free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_streams_never_starve_short_requests() {
    let db_name = test_db_name().await;
    let sql = arbor_testkit::PgCluster::shared()
        .connect(&db_name)
        .await
        .unwrap();
    let s = Server::start_limited(
        arbor_testkit::PgCluster::shared().config(&db_name),
        256,
        5,
        limits(|l| l.stall_timeout = Duration::from_secs(2)),
    )
    .await;
    let admin = token("big", Role::Admin, None, 600);
    s.create_space("big", &admin).await;
    s.create_space("other", &token("other", Role::Admin, None, 600))
        .await;
    // 100,000 nodes: far more than the socket buffers hold.
    sql.batch_execute(
        "INSERT INTO nodes (space, id, parent, key)
           SELECT s.id, md5(i::text)::uuid, '00000000-0000-0000-0000-000000000000',
                  '\\x80'::bytea || int4send(i) || '\\x01'::bytea
           FROM spaces s, generate_series(1, 100000) i WHERE s.name = 'big';",
    )
    .await
    .unwrap();
    let host = host_of(&s);
    let mut stalled = Vec::new();
    for i in 0..32 {
        // 16 users, two downloads each: every one within its token's cap.
        let t = user_token(&format!("user{}", i / 2), "big", Role::Read);
        let mut tcp = TcpStream::connect(&host).await.unwrap();
        tcp.write_all(
            format!(
                "GET /v1/spaces/big/snapshot HTTP/1.1\r\nhost: {host}\r\nauthorization: Bearer {t}\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        stalled.push(tcp);
    }
    for i in 0..32 {
        let space = format!("imp{i}");
        let t = user_token(&format!("importer{i}"), &space, Role::Admin);
        let mut tcp = TcpStream::connect(&host).await.unwrap();
        tcp.write_all(
            format!(
                "POST /v1/spaces/{space}/import HTTP/1.1\r\nhost: {host}\r\nauthorization: Bearer {t}\r\ncontent-length: 1000000\r\n\r\nARBORSNP"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        stalled.push(tcp);
    }
    // Short requests on another space are all served, each in bounded
    // time, while every stalled stream is open.
    let write = user_token("writer", "other", Role::Write);
    let read = user_token("reader", "other", Role::Read);
    let base = now_ms() << 16;
    for i in 0..50u64 {
        let op = mv(base + i, 7, n(1), NodeId::ROOT, &[0x80, 1 + i as u8], 0);
        let r = tokio::time::timeout(
            Duration::from_secs(5),
            s.http
                .post(s.url("/v1/spaces/other/ops"))
                .bearer_auth(&write)
                .json(&json!({ "ops": [op] }))
                .send(),
        )
        .await
        .expect("a push was starved")
        .unwrap();
        assert_eq!(r.status(), 200);
        let r = tokio::time::timeout(
            Duration::from_secs(5),
            s.http
                .get(s.url("/v1/spaces/other/ops?after=0"))
                .bearer_auth(&read)
                .send(),
        )
        .await
        .expect("a catch-up was starved")
        .unwrap();
        assert_eq!(r.status(), 200);
    }
    // The stalled streams are dropped after the stall timeout: then a
    // download with a fresh token gets the whole snapshot.
    let fresh = user_token("latecomer", "big", Role::Read);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = s
            .http
            .get(s.url("/v1/spaces/big/snapshot"))
            .bearer_auth(&fresh)
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            let body = r.bytes().await.unwrap();
            assert!(body.len() > 1_000_000, "{} bytes", body.len());
            break;
        }
        // Refused while the budget is taken: typed, with a wait.
        assert_eq!(r.status(), 503);
        assert!(r.headers().contains_key("retry-after"));
        assert!(
            Instant::now() < deadline,
            "the stalled streams were never dropped"
        );
        let wait: u64 = r.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        tokio::time::sleep(Duration::from_secs(wait.min(2))).await;
    }
    drop(stalled);
    s.stop().await;
}

/// A token may run two streams at once: a third is refused at once with
/// 429 and `Retry-After`, not queued.
#[tokio::test]
async fn a_token_has_a_cap_on_concurrent_streams() {
    let db_name = test_db_name().await;
    let s = Server::start_limited(
        arbor_testkit::PgCluster::shared().config(&db_name),
        256,
        5,
        limits(|l| l.max_streams = 3),
    )
    .await;
    let admin = token("big", Role::Admin, None, 600);
    s.create_space("big", &admin).await;
    let sql = arbor_testkit::PgCluster::shared()
        .connect(&db_name)
        .await
        .unwrap();
    sql.batch_execute(
        "INSERT INTO nodes (space, id, parent, key)
           SELECT s.id, md5(i::text)::uuid, '00000000-0000-0000-0000-000000000000',
                  '\\x80'::bytea || int4send(i) || '\\x01'::bytea
           FROM spaces s, generate_series(1, 100000) i WHERE s.name = 'big';",
    )
    .await
    .unwrap();
    let host = host_of(&s);
    let t = token("big", Role::Read, Some(5), 600);
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut tcp = TcpStream::connect(&host).await.unwrap();
        tcp.write_all(
            format!("GET /v1/spaces/big/snapshot HTTP/1.1\r\nhost: {host}\r\nauthorization: Bearer {t}\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
        // The status line comes once the stream started.
        let mut head = [0u8; 12];
        tcp.read_exact(&mut head).await.unwrap();
        assert_eq!(&head, b"HTTP/1.1 200");
        held.push(tcp);
    }
    let r = s
        .http
        .get(s.url("/v1/spaces/big/snapshot"))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(error_code(r).await, (429, "rate_limited".into()));
    drop(held);
    s.stop().await;
}

/// A connection that sends no request headers is closed after the header
/// deadline, and an address holds at most its cap of connections.
#[tokio::test]
async fn silent_connections_time_out_and_an_address_has_a_cap() {
    let s = Server::start_limited(
        test_db_config().await,
        256,
        5,
        limits(|l| {
            l.header_read_timeout = Duration::from_secs(1);
            l.max_connections_per_addr = 3;
        }),
    )
    .await;
    let host = host_of(&s);
    // The harness's client keeps a pooled connection: start from none.
    drop(s.http.clone());
    let mut silent = TcpStream::connect(&host).await.unwrap();
    let took = closed_within(&mut silent, Duration::from_secs(20)).await;
    assert!(took >= Duration::from_millis(900), "closed after {took:?}");
    // Three idle connections; the fourth is closed at once.
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(TcpStream::connect(&host).await.unwrap());
    }
    let mut fourth = TcpStream::connect(&host).await.unwrap();
    let took = closed_within(&mut fourth, Duration::from_secs(20)).await;
    assert!(took < Duration::from_millis(900), "closed after {took:?}");
    drop(idle);
    s.stop().await;
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn socket(s: &Server, tok: &str) -> Result<Ws, u16> {
    let url = format!("{}/v1/spaces/demo/ws", s.base.replace("http://", "ws://"));
    let mut req = url.into_client_request().unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {tok}").parse().unwrap());
    match tokio_tungstenite::connect_async(req).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => Err(r.status().as_u16()),
        Err(e) => panic!("{e}"),
    }
}

/// The `error` frame and close code a socket ends with (bounded wait).
async fn ending(ws: &mut Ws) -> (Option<ServerMsg>, Option<u16>) {
    let mut error = None;
    loop {
        match tokio::time::timeout(Duration::from_secs(20), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => {
                if let Ok(m @ ServerMsg::Error { .. }) = ServerMsg::decode(&t) {
                    error = Some(m);
                }
            }
            Ok(Some(Ok(Message::Close(f)))) => return (error, f.map(|f| u16::from(f.code))),
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(_)) | None) => return (error, None),
            Err(_) => panic!("the socket was not closed within 20 s"),
        }
    }
}

fn code_of(m: &Option<ServerMsg>) -> Option<&'static str> {
    match m {
        Some(ServerMsg::Error { code, .. }) => Some(code.as_str()),
        _ => None,
    }
}

/// A socket that never says hello, or goes silent, is closed 4008
/// `timeout`; a token that sends frames too fast is told `rate_limited`
/// with the wait, and closed 4029; a token has a cap on its sockets.
#[tokio::test]
async fn sockets_time_out_are_rate_limited_and_capped_per_token() {
    let s = Server::start_limited(
        test_db_config().await,
        256,
        5,
        limits(|l| {
            l.hello_timeout = Duration::from_secs(1);
            l.idle_timeout = Duration::from_secs(2);
            l.pushes_per_s = 5.0;
            l.burst_s = 2.0;
            l.max_sockets_per_token = 2;
        }),
    )
    .await;
    let admin = token("demo", Role::Admin, None, 600);
    s.create_space("demo", &admin).await;
    let hello = |r: u64| ClientMsg::Hello {
        v: 1,
        replica: ReplicaId(r),
        cursor: Some(0),
    };
    // No hello.
    let t1 = user_token("silent", "demo", Role::Read);
    let mut ws = socket(&s, &t1).await.unwrap();
    let (e, close) = ending(&mut ws).await;
    assert_eq!((code_of(&e), close), (Some("timeout"), Some(4008)));
    // Hello, then silence.
    let mut ws = socket(&s, &t1).await.unwrap();
    ws.send(Message::Text(hello(1).encode().into()))
        .await
        .unwrap();
    let (e, close) = ending(&mut ws).await;
    assert_eq!((code_of(&e), close), (Some("timeout"), Some(4008)));
    // Too many frames: 10 are allowed at once, then 5 a second.
    let t2 = user_token("chatty", "demo", Role::Write);
    let mut ws = socket(&s, &t2).await.unwrap();
    ws.send(Message::Text(hello(2).encode().into()))
        .await
        .unwrap();
    for _ in 0..40 {
        if ws
            .send(Message::Text(ClientMsg::Ping {}.encode().into()))
            .await
            .is_err()
        {
            break;
        }
    }
    let (e, close) = ending(&mut ws).await;
    assert_eq!((code_of(&e), close), (Some("rate_limited"), Some(4029)));
    assert!(matches!(
        e,
        Some(ServerMsg::Error {
            retry_after_ms: Some(ms),
            ..
        }) if ms > 0 && ms <= 1_000
    ));
    // Two sockets per token; the third is refused before the upgrade.
    let t3 = user_token("many", "demo", Role::Read);
    let a = socket(&s, &t3).await.unwrap();
    let b = socket(&s, &t3).await.unwrap();
    assert_eq!(socket(&s, &t3).await.err(), Some(429));
    drop((a, b));
    s.stop().await;
}

/// A token over its request rate gets 429 `rate_limited` with
/// `Retry-After`; another token is not affected.
#[tokio::test]
async fn a_token_over_its_request_rate_gets_429_with_retry_after() {
    let s = Server::start_limited(
        test_db_config().await,
        256,
        5,
        limits(|l| {
            l.requests_per_s = 5.0;
            l.burst_s = 2.0;
        }),
    )
    .await;
    let admin = token("demo", Role::Admin, None, 600);
    s.create_space("demo", &admin).await;
    let greedy = user_token("greedy", "demo", Role::Read);
    let mut limited = None;
    for _ in 0..40 {
        let r = s
            .http
            .get(s.url("/v1/spaces/demo/ops"))
            .bearer_auth(&greedy)
            .send()
            .await
            .unwrap();
        if r.status() == 429 {
            limited = Some(r);
            break;
        }
    }
    let r = limited.expect("never limited");
    let wait: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&wait), "Retry-After: {wait}");
    assert_eq!(error_code(r).await, (429, "rate_limited".into()));
    let other = user_token("patient", "demo", Role::Read);
    let r = s
        .http
        .get(s.url("/v1/spaces/demo/ops"))
        .bearer_auth(&other)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    s.stop().await;
}

/// A push's database time past the free share is charged to its token: a
/// 1,200-op push (tens of milliseconds) leaves a token with a burst of 2
/// requests in debt, so its next request waits; another token does not.
#[tokio::test]
async fn a_push_is_charged_its_database_time() {
    let s = Server::start_limited(
        test_db_config().await,
        256,
        5,
        limits(|l| {
            l.requests_per_s = 2.0;
            l.burst_s = 1.0;
        }),
    )
    .await;
    let admin = token("demo", Role::Admin, None, 600);
    s.create_space("demo", &admin).await;
    let heavy = user_token("heavy", "demo", Role::Write);
    let t = now_ms() << 16;
    let ops: Vec<_> = (0..1_200u64)
        .map(|i| {
            let node = n(u128::from(i) + 1);
            mv(
                t + i,
                7,
                node,
                NodeId::ROOT,
                &[0x40, (i >> 8) as u8, i as u8 | 1],
                0,
            )
        })
        .collect();
    let r = s
        .http
        .post(s.url("/v1/spaces/demo/ops"))
        .bearer_auth(&heavy)
        .json(&serde_json::json!({ "ops": ops }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Without the charge this token has 1 request of its burst left.
    let r = s
        .http
        .get(s.url("/v1/spaces/demo/ops?after=1200"))
        .bearer_auth(&heavy)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429, "the push's database time was not charged");
    let wait: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(wait >= 1, "Retry-After: {wait}");
    let other = user_token("light", "demo", Role::Read);
    let r = s
        .http
        .get(s.url("/v1/spaces/demo/ops?after=1200"))
        .bearer_auth(&other)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    s.stop().await;
}
