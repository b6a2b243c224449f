//! The HTTP API on a real socket, against real Postgres: auth by role,
//! ingest, catch-up, children, typed errors, readiness and shutdown.

use std::time::Duration;

use arbor_shared::auth::{Claims, Hs256Key, Role, mint};
use arbor_shared::{NodeId, Op, ReplicaId};
use arbor_sync_server::api::{ChildrenBody, OpsBody};
use arbor_sync_server::limits::Limits;
use arbor_sync_server::{Config, ServerError, serve};
use serde_json::json;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::harness::*;

const SECRET: &[u8] = b"test-secret-test-secret-test-secret!";

pub struct Server {
    pub base: String,
    pub admin: String,
    pub http: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), ServerError>>,
}

pub fn key() -> Hs256Key {
    arbor_testkit::tokens::key(SECRET)
}

/// A token of the tester for `space`, valid for `ttl` seconds (a negative
/// ttl makes an expired token), bound to replica `rid` if given.
pub fn token(space: &str, role: Role, rid: Option<u64>, ttl: i64) -> String {
    let claims = arbor_testkit::tokens::claims("tester", space, role, 0);
    let claims = Claims {
        rid: rid.map(ReplicaId),
        exp: claims.exp.saturating_add_signed(ttl),
        ..claims
    };
    mint(&claims, &key())
}

/// A token of user `sub` for `space`, valid for `ttl_s` seconds, without a
/// `rid` claim (limits count per user and space; the replica id is
/// whatever its ops say).
pub fn token_of(sub: &str, space: &str, role: Role, ttl_s: u64) -> String {
    arbor_testkit::tokens::token(SECRET, sub, space, role, ttl_s)
}

/// The limits of a pool of 4 with rates far above a client's: tests that
/// are not about rates send far more than a client does.
pub fn generous_limits() -> Limits {
    Limits {
        requests_per_s: 100_000.0,
        pushes_per_s: 100_000.0,
        ..Limits::for_pool(4)
    }
}

impl Server {
    pub async fn start() -> Server {
        Server::start_with(256, 5).await
    }

    /// A server (as [`Server::start`]) with the space `demo`, and the admin
    /// token that created it.
    pub async fn start_demo() -> (Server, String) {
        Server::start_demo_with(256, 5).await
    }

    /// [`Server::start_with`] with the space `demo`, and the admin token
    /// that created it.
    pub async fn start_demo_with(queue: usize, leeway_s: u64) -> (Server, String) {
        let s = Server::start_with(queue, leeway_s).await;
        let admin = token("demo", Role::Admin, None, 60);
        s.create_space("demo", &admin).await;
        (s, admin)
    }

    /// A server with `queue` frames per socket and `leeway_s` token leeway.
    pub async fn start_with(queue: usize, leeway_s: u64) -> Server {
        Server::start_on(test_db_config().await, queue, leeway_s).await
    }

    /// A server on an existing database (several servers can share one).
    pub async fn start_on(database: tokio_postgres::Config, queue: usize, leeway_s: u64) -> Server {
        Server::start_limited(database, queue, leeway_s, generous_limits()).await
    }

    /// A server with these quotas (and the rates of [`Server::start_on`]).
    pub async fn start_with_quotas(quotas: arbor_sync_server::db::Quotas) -> Server {
        Server::start_full(test_db_config().await, 256, 5, generous_limits(), quotas).await
    }

    /// A server with these limits.
    pub async fn start_limited(
        database: tokio_postgres::Config,
        queue: usize,
        leeway_s: u64,
        limits: Limits,
    ) -> Server {
        let quotas = arbor_sync_server::db::Quotas::DEFAULT;
        Server::start_full(database, queue, leeway_s, limits, quotas).await
    }

    async fn start_full(
        database: tokio_postgres::Config,
        queue: usize,
        leeway_s: u64,
        limits: Limits,
        quotas: arbor_sync_server::db::Quotas,
    ) -> Server {
        Server::start_config(Config {
            db_pool: 4,
            token_leeway_s: leeway_s,
            max_body_bytes: 256 * 1024,
            max_import_bytes: 64 << 20,
            drain: Duration::from_secs(5),
            cors_origins: vec!["https://app.example".into()],
            socket_queue_frames: queue,
            notify_url: None,
            limits,
            quotas,
            // Tests push stamps of their choosing (some far in the past).
            horizon_keep: None,
            ..Config::new(database, key())
        })
        .await
    }

    /// A server with this configuration.
    pub async fn start_config(config: Config) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let admin_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = format!("http://{}", admin_listener.local_addr().unwrap());
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, Some(admin_listener), config, async move {
            let _ = rx.await;
        }));
        let s = Server {
            base,
            admin,
            http: reqwest::Client::new(),
            stop: Some(tx),
            task,
        };
        // The listener is bound before run() opens the database, so this
        // request waits in the accept queue until the server serves: no
        // polling.
        let r = s
            .http
            .get(format!("{}/readyz", s.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        s
    }

    /// The admin listener's `/metrics` text.
    pub async fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.admin))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Creates `space` with an admin `token`.
    pub async fn create_space(&self, space: &str, token: &str) {
        let r = self
            .http
            .put(self.url(&format!("/v1/spaces/{space}")))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }

    /// GETs `path` with `token`.
    pub async fn get(&self, path: &str, token: impl std::fmt::Display) -> reqwest::Response {
        self.http
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    /// GETs `path` with `token` and decodes the JSON answer.
    pub async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        token: impl std::fmt::Display,
    ) -> T {
        self.get(path, token).await.json().await.unwrap()
    }

    /// POSTs `ops` to the ingest of `space` with `token`.
    pub async fn push(
        &self,
        space: &str,
        token: impl std::fmt::Display,
        ops: &[Op],
    ) -> reqwest::Response {
        self.http
            .post(self.url(&format!("/v1/spaces/{space}/ops")))
            .bearer_auth(token)
            .json(&json!({ "ops": ops }))
            .send()
            .await
            .unwrap()
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        self.task.await.unwrap().unwrap();
    }
}

pub async fn error_code(r: reqwest::Response) -> (u16, String) {
    let status = r.status().as_u16();
    let body: serde_json::Value = r.json().await.unwrap();
    (
        status,
        body["error"]["code"].as_str().unwrap_or("").to_string(),
    )
}

#[tokio::test]
async fn auth_is_checked_on_every_route_by_role_and_space() {
    let s = Server::start().await;
    let http = &s.http;
    assert_eq!(
        http.get(s.url("/livez")).send().await.unwrap().status(),
        200
    );
    let create = |t: Option<String>| {
        let mut r = http.put(s.url("/v1/spaces/demo"));
        if let Some(t) = t {
            r = r.bearer_auth(t);
        }
        r.send()
    };
    let other_key = {
        let k = Hs256Key::new(b"another-secret-another-secret-xx!").unwrap();
        let mut c =
            arbor_shared::auth::verify(&token("demo", Role::Admin, None, 60), &key(), 0, u64::MAX)
                .unwrap();
        c.exp = u64::MAX / 2;
        mint(&c, &k)
    };
    for (t, want) in [
        (None, (401, "missing_token")),
        (Some("garbage".to_string()), (401, "bad_token")),
        (Some(other_key), (401, "bad_token")),
        (
            Some(token("demo", Role::Admin, None, -60)),
            (401, "token_expired"),
        ),
        (
            Some(token("other", Role::Admin, None, 60)),
            (403, "wrong_space"),
        ),
        (
            Some(token("demo", Role::Write, None, 60)),
            (403, "forbidden"),
        ),
    ] {
        let (status, code) = error_code(create(t).await.unwrap()).await;
        assert_eq!((status, code.as_str()), want);
    }
    assert_eq!(
        create(Some(token("demo", Role::Admin, None, 60)))
            .await
            .unwrap()
            .status(),
        200
    );

    // A read token reads but does not push.
    let read = token("demo", Role::Read, None, 60);
    let r = s.get("/v1/spaces/demo/ops?after=0", &read).await;
    assert_eq!(r.status(), 200);
    let op = op_create(1, 1, NodeId::ROOT);
    let r = s.push("demo", &read, std::slice::from_ref(&op)).await;
    assert_eq!(error_code(r).await, (403, "forbidden".into()));
    // A service token scoped to every space may push.
    let service = token("*", Role::Service, None, 60);
    let r = s.push("demo", &service, &[op]).await;
    assert_eq!(r.status(), 200);
    s.stop().await;
}

fn op_create(hlc_step: u64, node: u128, parent: NodeId) -> Op {
    let hlc = (now_ms() << 16) + hlc_step;
    mv(hlc, 7, n(node), parent, &[0x80], 0)
}

#[tokio::test]
async fn ingest_catch_up_and_children_over_http() {
    let s = Server::start().await;
    let http = &s.http;
    let admin = token("demo", Role::Admin, None, 60);
    s.create_space("demo", &admin).await;
    let write = token("demo", Role::Write, Some(7), 60);
    let base = now_ms() << 16;
    let ops = vec![
        mv(base, 7, n(1), NodeId::ROOT, &[0x80], 0),
        mv(base + 1, 7, n(2), n(1), &[0x80], 0),
        set(base + 2, 7, n(2), "text", Some("hello"), 0),
    ];
    let r = s.push("demo", &write, &ops).await;
    assert_eq!(r.status(), 200);
    let body: OpsBody = r.json().await.unwrap();
    assert_eq!(
        body.ops.iter().map(|c| c.seq).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert!(
        body.ops
            .iter()
            .all(|c| c.origin == arbor_shared::http::Origin::New)
    );
    assert_eq!(
        body.ops.iter().map(|c| c.op.clone()).collect::<Vec<_>>(),
        ops
    );
    // Re-push: duplicates with their seqs.
    let again: OpsBody = s.push("demo", &write, &ops).await.json().await.unwrap();
    assert!(
        again
            .ops
            .iter()
            .all(|c| c.origin == arbor_shared::http::Origin::Duplicate)
    );
    // Catch-up in pages.
    let page: OpsBody = s
        .get_json("/v1/spaces/demo/ops?after=1&limit=1", &write)
        .await;
    assert_eq!(page.head_seq, Some(3));
    assert_eq!(page.ops.len(), 1);
    assert_eq!(page.ops[0].seq, 2);
    // Children with registers.
    let kids: ChildrenBody = s
        .get_json(&format!("/v1/spaces/demo/nodes/{}/children", n(1)), &write)
        .await;
    assert_eq!(kids.children.len(), 1);
    assert_eq!(kids.children[0].id, n(2));
    assert_eq!(
        kids.children[0].payloads["text"].value.as_deref(),
        Some("hello")
    );

    // Typed refusals, and nothing changes.
    let post = |body: serde_json::Value, t: &str| {
        http.post(s.url("/v1/spaces/demo/ops"))
            .bearer_auth(t.to_string())
            .json(&body)
            .send()
    };
    let cases = vec![
        (json!({"ops": "nope"}), (400, "bad_request")),
        (json!({"ops": [], "extra": 1}), (400, "bad_request")),
        (json!({"ops": [{"kind": "move"}]}), (400, "bad_request")),
        (
            json!({"ops": [serde_json::to_value(mv(base + 9, 7, NodeId::ROOT, n(1), &[0x80], 0)).unwrap()]}),
            (400, "bad_op"),
        ),
        (
            json!({"ops": [serde_json::to_value(mv(base + 9, 7, n(5), n(99), &[0x80], 0)).unwrap()]}),
            (422, "unknown_node"),
        ),
        (
            json!({"ops": [serde_json::to_value(mv(base + 9, 8, n(5), n(1), &[0x80], 0)).unwrap()]}),
            (403, "wrong_replica"),
        ),
    ];
    for (body, want) in cases {
        let got = error_code(post(body.clone(), &write).await.unwrap()).await;
        assert_eq!((got.0, got.1.as_str()), want, "{body}");
    }
    let huge = json!({"ops": [serde_json::to_value(set(base + 9, 7, n(1), "text", Some(&"x".repeat(300_000)), 0)).unwrap()]});
    assert_eq!(post(huge, &write).await.unwrap().status(), 413);
    let r = s
        .get("/v1/spaces/nope/ops", token("nope", Role::Read, None, 60))
        .await;
    assert_eq!(error_code(r).await, (404, "unknown_space".into()));
    let feed: OpsBody = s.get_json("/v1/spaces/demo/ops", &write).await;
    assert_eq!(feed.head_seq, Some(3));
    s.stop().await;
}

#[tokio::test]
async fn shutdown_flips_readiness_and_stops() {
    let s = Server::start().await;
    let url = s.url("/readyz");
    let http = s.http.clone();
    assert_eq!(http.get(&url).send().await.unwrap().status(), 200);
    s.stop().await;
    // The listener is closed: connections are refused.
    assert!(http.get(&url).send().await.is_err());
}

#[tokio::test]
async fn admin_listener_serves_metrics_and_cors_is_applied() {
    let (s, admin) = Server::start_demo().await;
    let base = now_ms() << 16;
    let r = s
        .push(
            "demo",
            &admin,
            &[mv(base, 7, n(1), NodeId::ROOT, &[0x80], 0)],
        )
        .await;
    assert_eq!(r.status(), 200);
    let r = s
        .push("demo", &admin, &[mv(base + 1, 7, n(2), n(99), &[0x80], 0)])
        .await;
    assert_eq!(r.status(), 422);
    let text = s.metrics().await;
    assert!(text.contains("arbor_ops_applied_total"), "{text}");
    assert!(
        text.contains("arbor_ops_rejected_total{code=\"unknown_node\"}"),
        "{text}"
    );
    assert!(text.contains("arbor_ingest_seconds"), "{text}");
    assert_eq!(
        s.http
            .get(format!("{}/readyz", s.admin))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // The API listener has no /metrics.
    assert_eq!(
        s.http.get(s.url("/metrics")).send().await.unwrap().status(),
        404
    );

    // CORS: the configured origin may call with a token; another may not.
    let preflight = |origin: &str| {
        s.http
            .request(reqwest::Method::OPTIONS, s.url("/v1/spaces/demo/ops"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,content-type",
            )
            .send()
    };
    let ok = preflight("https://app.example").await.unwrap();
    assert_eq!(
        ok.headers()
            .get("access-control-allow-origin")
            .map(|v| v.to_str().unwrap()),
        Some("https://app.example")
    );
    let other = preflight("https://evil.example").await.unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
    s.stop().await;
}

#[tokio::test]
async fn fork_copies_a_space_that_then_lives_on_its_own() {
    let (s, admin) = Server::start_demo().await;
    let base = now_ms() << 16;
    let ops = vec![
        mv(base, 7, n(1), NodeId::ROOT, &[0x80], 0),
        mv(base + 1, 7, n(2), n(1), &[0x80], 0),
        set(base + 2, 7, n(2), "text", Some("hi"), 0),
    ];
    s.push("demo", &admin, &ops).await;
    let fork = |t: &str, to: &str| {
        s.http
            .post(s.url("/v1/spaces/demo/fork"))
            .bearer_auth(t.to_string())
            .json(&json!({ "to": to }))
            .send()
    };
    assert_eq!(
        error_code(
            fork(&token("demo", Role::Write, None, 60), "copy")
                .await
                .unwrap()
        )
        .await
        .0,
        403
    );
    // The copy is a new space: an admin of "demo" alone may not make it.
    assert_eq!(
        error_code(fork(&admin, "demo.copy").await.unwrap()).await,
        (403, "wrong_space".into())
    );
    // A token for every space named "demo...": admin of both.
    let tenant_admin = token("demo*", Role::Admin, None, 60);
    let r = fork(&tenant_admin, "demo.copy").await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        error_code(fork(&tenant_admin, "demo.copy").await.unwrap()).await,
        (409, "space_exists".into())
    );
    assert_eq!(
        error_code(fork(&tenant_admin, "other").await.unwrap()).await,
        (403, "wrong_space".into())
    );
    assert_eq!(
        error_code(fork(&tenant_admin, "bad name!").await.unwrap())
            .await
            .0,
        400
    );

    let server = &s;
    let feed = move |space: &'static str| async move {
        let path = format!("/v1/spaces/{space}/ops");
        server
            .get_json::<OpsBody>(&path, token(space, Role::Read, None, 60))
            .await
    };
    let (a, b) = (feed("demo").await, feed("demo.copy").await);
    assert_eq!(a.head_seq, b.head_seq);
    assert_eq!(a.ops, b.ops);
    // The copy takes new ops on its own.
    let copy_admin = token("demo.copy", Role::Admin, None, 60);
    s.push(
        "demo.copy",
        &copy_admin,
        &[mv(base + 3, 7, n(3), n(2), &[0x80], 0)],
    )
    .await;
    assert_eq!(feed("demo.copy").await.head_seq, Some(4));
    assert_eq!(feed("demo").await.head_seq, Some(3));
    s.stop().await;
}

/// A token with any header and payload, signed with `secret`.
fn forge(header: &str, payload: &serde_json::Value, secret: &[u8]) -> String {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    use hmac::{Hmac, Mac};
    let h = B64.encode(header);
    let p = B64.encode(payload.to_string());
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret).unwrap();
    mac.update(format!("{h}.{p}").as_bytes());
    format!("{h}.{p}.{}", B64.encode(mac.finalize().into_bytes()))
}

#[tokio::test]
async fn the_auth_matrix_is_refused_before_any_work() {
    let (s, admin) = Server::start_demo().await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = |extra: serde_json::Value| {
        let mut c = json!({"sub": "x", "space": "demo", "role": "write", "exp": now + 600});
        for (k, v) in extra.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        c
    };
    let hs = r#"{"alg":"HS256","typ":"JWT"}"#;
    let cases: Vec<(&str, String, u16, &str)> = vec![
        (
            "bad signature",
            forge(hs, &claims(json!({})), b"another-secret-another-secret-123"),
            401,
            "bad_token",
        ),
        (
            "alg none",
            forge(r#"{"alg":"none"}"#, &claims(json!({})), SECRET),
            401,
            "bad_token",
        ),
        (
            "alg HS512",
            forge(r#"{"alg":"HS512"}"#, &claims(json!({})), SECRET),
            401,
            "bad_token",
        ),
        (
            "expired",
            forge(hs, &claims(json!({"exp": now - 600})), SECRET),
            401,
            "token_expired",
        ),
        (
            "not yet valid",
            forge(hs, &claims(json!({"nbf": now + 600})), SECRET),
            401,
            "token_not_yet_valid",
        ),
        (
            "missing exp",
            forge(hs, &claims(json!({"exp": null})), SECRET),
            401,
            "bad_token",
        ),
        (
            "wrong space",
            forge(hs, &claims(json!({"space": "other"})), SECRET),
            403,
            "wrong_space",
        ),
        (
            "wrong role",
            forge(hs, &claims(json!({"role": "read"})), SECRET),
            403,
            "forbidden",
        ),
        ("malformed", "not.a.token".to_string(), 401, "bad_token"),
        ("two segments", "abc.def".to_string(), 401, "bad_token"),
    ];
    // A control: the same forge with the right key and claims works.
    let ok = forge(hs, &claims(json!({})), SECRET);
    let op = |i: u64| [op_create(i, u128::from(i), NodeId::ROOT)];
    let r = s.push("demo", &ok, &op(1)).await;
    assert_eq!(r.status(), 200);
    for (i, (what, tok, status, code)) in cases.into_iter().enumerate() {
        let r = s.push("demo", tok, &op(10 + i as u64)).await;
        assert_eq!(error_code(r).await, (status, code.to_string()), "{what}");
    }
    // Nothing was committed by any refused call.
    let feed: OpsBody = s.get_json("/v1/spaces/demo/ops", &admin).await;
    assert_eq!(feed.head_seq, Some(1));
    s.stop().await;
}
