//! What one client cannot take from the others, on a real server over real sockets: stalled streams are dropped and never starve short requests; silent connections and sockets time out; caps and rates answer with typed refusals and a wait.

use std::time::{Duration, Instant};

use arbor_shared::NodeId;
use arbor_shared::auth::Role;
use arbor_shared::protocol::{ClientMsg, ServerMsg};
use arbor_sync_server::limits::Limits;
use arbor_testkit::sql::insert_nodes;
use arbor_testkit::stall;
use futures_util::SinkExt as _;
use serde_json::json;
use tokio::io::AsyncReadExt as _;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use crate::harness::*;
use crate::http::{Server, error_code, generous_limits, token, token_of};
use crate::ws::{Ws, code_of, connect, ending, hello};

/// The last `error` frame and the close code a socket ends with.
async fn last_error(ws: &mut Ws) -> (Option<ServerMsg>, Option<u16>) {
    let (errors, close) = ending(ws).await;
    (errors.last().cloned(), close)
}

/// A token of user `sub` (limits count per user and space).
fn user_token(sub: &str, space: &str, role: Role) -> String {
    token_of(sub, space, role, 600)
}

/// Limits for a test: the defaults of a pool of 4, generous rates, and
/// `f`'s changes.
fn limits(f: impl FnOnce(&mut Limits)) -> Limits {
    let mut l = generous_limits();
    f(&mut l);
    l
}

/// A server on a fresh database with `f`'s changes to the limits, and the
/// space `demo`.
async fn demo_server(f: impl FnOnce(&mut Limits)) -> Server {
    let s = Server::start_limited(test_db_config().await, 256, 5, limits(f)).await;
    let admin = token("demo", Role::Admin, None, 600);
    s.create_space("demo", &admin).await;
    s
}

/// A server on the fresh database `db_name` with `f`'s changes to the
/// limits, and the space `big` of 100,000 nodes: far more than the socket
/// buffers hold.
async fn big_server(db_name: &str, f: impl FnOnce(&mut Limits)) -> Server {
    let cluster = arbor_testkit::PgCluster::shared();
    let s = Server::start_limited(cluster.config(db_name), 256, 5, limits(f)).await;
    let admin = token("big", Role::Admin, None, 600);
    s.create_space("big", &admin).await;
    let sql = cluster.connect(db_name).await.unwrap();
    sql.batch_execute(&insert_nodes("big", 100_000))
        .await
        .unwrap();
    s
}

/// The seconds of a refusal's `Retry-After`.
fn retry_after(r: &reqwest::Response) -> u64 {
    r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
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
    let s = big_server(&db_name, |l| l.stall_timeout = Duration::from_secs(2)).await;
    s.create_space("other", &token("other", Role::Admin, None, 600))
        .await;
    let host = host_of(&s);
    // 16 users, two downloads each: every one within its token's cap.
    let stalled = stall::downloads_and_imports(
        &host,
        "big",
        32,
        |i| user_token(&format!("user{}", i / 2), "big", Role::Read),
        |i, space| user_token(&format!("importer{i}"), space, Role::Admin),
    )
    .await
    .unwrap();
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
        let r = s.get("/v1/spaces/big/snapshot", &fresh).await;
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
        let wait = retry_after(&r);
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
    let s = big_server(&db_name, |l| l.max_streams = 3).await;
    let host = host_of(&s);
    let t = token("big", Role::Read, Some(5), 600);
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut tcp = stall::download(&host, "/v1/spaces/big/snapshot", &t)
            .await
            .unwrap();
        // The status line comes once the stream started.
        let mut head = [0u8; 12];
        tcp.read_exact(&mut head).await.unwrap();
        assert_eq!(&head, b"HTTP/1.1 200");
        held.push(tcp);
    }
    let r = s.get("/v1/spaces/big/snapshot", &t).await;
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

/// A socket that never says hello, or goes silent, is closed 4008
/// `timeout`; a token that sends frames too fast is told `rate_limited`
/// with the wait, and closed 4029; a token has a cap on its sockets.
#[tokio::test]
async fn sockets_time_out_are_rate_limited_and_capped_per_token() {
    let s = demo_server(|l| {
        l.hello_timeout = Duration::from_secs(1);
        l.idle_timeout = Duration::from_secs(2);
        l.pushes_per_s = 5.0;
        l.burst_s = 2.0;
        l.max_sockets_per_token = 2;
    })
    .await;
    // No hello.
    let t1 = user_token("silent", "demo", Role::Read);
    let mut ws = connect(&s, "demo", &t1).await.unwrap();
    let (e, close) = last_error(&mut ws).await;
    assert_eq!((code_of(e.as_ref()), close), (Some("timeout"), Some(4008)));
    // Hello, then silence.
    let mut ws = connect(&s, "demo", &t1).await.unwrap();
    hello(&mut ws, 1, Some(0)).await;
    let (e, close) = last_error(&mut ws).await;
    assert_eq!((code_of(e.as_ref()), close), (Some("timeout"), Some(4008)));
    // Too many frames: 10 are allowed at once, then 5 a second.
    let t2 = user_token("chatty", "demo", Role::Write);
    let mut ws = connect(&s, "demo", &t2).await.unwrap();
    hello(&mut ws, 2, Some(0)).await;
    for _ in 0..40 {
        if ws
            .send(Message::Text(ClientMsg::Ping {}.encode().into()))
            .await
            .is_err()
        {
            break;
        }
    }
    let (e, close) = last_error(&mut ws).await;
    assert_eq!(
        (code_of(e.as_ref()), close),
        (Some("rate_limited"), Some(4029))
    );
    assert!(matches!(
        e,
        Some(ServerMsg::Error {
            retry_after_ms: Some(ms),
            ..
        }) if ms > 0 && ms <= 1_000
    ));
    // Two sockets per token; the third is refused before the upgrade.
    let t3 = user_token("many", "demo", Role::Read);
    let a = connect(&s, "demo", &t3).await.unwrap();
    let b = connect(&s, "demo", &t3).await.unwrap();
    assert_eq!(connect(&s, "demo", &t3).await.err(), Some(429));
    drop((a, b));
    s.stop().await;
}

/// A token over its request rate gets 429 `rate_limited` with
/// `Retry-After`; another token is not affected.
#[tokio::test]
async fn a_token_over_its_request_rate_gets_429_with_retry_after() {
    let s = demo_server(|l| {
        l.requests_per_s = 5.0;
        l.burst_s = 2.0;
    })
    .await;
    let greedy = user_token("greedy", "demo", Role::Read);
    let mut limited = None;
    for _ in 0..40 {
        let r = s.get("/v1/spaces/demo/ops", &greedy).await;
        if r.status() == 429 {
            limited = Some(r);
            break;
        }
    }
    let r = limited.expect("never limited");
    let wait = retry_after(&r);
    assert!((1..=2).contains(&wait), "Retry-After: {wait}");
    assert_eq!(error_code(r).await, (429, "rate_limited".into()));
    let other = user_token("patient", "demo", Role::Read);
    let r = s.get("/v1/spaces/demo/ops", &other).await;
    assert_eq!(r.status(), 200);
    s.stop().await;
}

/// A push's database time past the free share is charged to its token: a
/// 1,200-op push (tens of milliseconds) leaves a token with a burst of 2
/// requests in debt, so its next request waits; another token does not.
#[tokio::test]
async fn a_push_is_charged_its_database_time() {
    let s = demo_server(|l| {
        l.requests_per_s = 2.0;
        l.burst_s = 1.0;
    })
    .await;
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
    let r = s.push("demo", &heavy, &ops).await;
    assert_eq!(r.status(), 200);
    // Without the charge this token has 1 request of its burst left.
    let r = s.get("/v1/spaces/demo/ops?after=1200", &heavy).await;
    assert_eq!(r.status(), 429, "the push's database time was not charged");
    let wait = retry_after(&r);
    assert!(wait >= 1, "Retry-After: {wait}");
    let other = user_token("light", "demo", Role::Read);
    let r = s.get("/v1/spaces/demo/ops?after=1200", &other).await;
    assert_eq!(r.status(), 200);
    s.stop().await;
}
