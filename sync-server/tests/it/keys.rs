//! Keys that rotate and tokens that are revoked (issue 18): EdDSA tokens
//! from a JWKS file and from a JWKS URL (fetched again on an unknown
//! `kid`), two HS256 secrets during a rotation, an identity provider's
//! issuer and audience, and a revocation file that refuses new requests and
//! closes live sockets holding a revoked token.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arbor_shared::auth::{Claims, Hs256Key, Role, mint};
use arbor_shared::keys::{mint_eddsa, public_jwk};
use arbor_sync_server::Config;
use arbor_sync_server::keys::{AuthConfig, JwksSource};

use crate::harness::*;
use crate::http::{Server, error_code, key};
use crate::ws::{close_code, connect, open};

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn claims(sub: &str, space: &str, role: Role) -> Claims {
    Claims::new(sub, space, role, now_s(), 600)
}

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("arbor-keys-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn jwks(keys: &[(u8, &str)]) -> String {
    let keys: Vec<_> = keys
        .iter()
        .map(|(n, kid)| public_jwk(&[*n; 32], kid))
        .collect();
    serde_json::json!({ "keys": keys }).to_string()
}

/// Writes `text` to `path` so a watcher sees one change: to a temp file,
/// then renamed over (no half-written file is ever read).
fn replace(path: &PathBuf, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

async fn server(auth: AuthConfig) -> Server {
    Server::start_config(Config {
        db_pool: 2,
        horizon_keep: None,
        auth,
        ..Config::new(test_db_config().await, key())
    })
    .await
}

/// GET of the catch-up route with `token`: the status.
async fn status(s: &Server, space: &str, token: &str) -> u16 {
    s.http
        .get(s.url(&format!("/v1/spaces/{space}/ops")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Bounded wait until `check` holds (a reload happens within seconds).
async fn within_10s(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within 10 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn eddsa_tokens_from_a_jwks_file_and_its_rotation() {
    let file = temp("jwks-file.json");
    replace(&file, &jwks(&[(1, "one")]));
    let s = server(AuthConfig {
        jwks: Some(JwksSource::File(file.clone())),
        ..AuthConfig::default()
    })
    .await;
    s.create_space("ks", &mint(&claims("admin", "ks", Role::Admin), &key()))
        .await;
    let one = mint_eddsa(&claims("alice", "ks", Role::Write), &[1; 32], Some("one"));
    let two = mint_eddsa(&claims("alice", "ks", Role::Write), &[2; 32], Some("two"));
    assert_eq!(status(&s, "ks", &one).await, 200);
    let r = s
        .http
        .get(s.url("/v1/spaces/ks/ops"))
        .bearer_auth(&two)
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, (401, "bad_token".into()));
    // The sockets take the same tokens.
    assert!(connect(&s, "ks", &one).await.is_ok());
    assert_eq!(connect(&s, "ks", &two).await.err(), Some(401));
    // The file gains key two and drops key one: read again within seconds.
    replace(&file, &jwks(&[(2, "two")]));
    within_10s("key two accepted", async || {
        status(&s, "ks", &two).await == 200
    })
    .await;
    assert_eq!(status(&s, "ks", &one).await, 401);
    // A broken file keeps the last good keys.
    replace(&file, "{not json");
    let failed = "arbor_key_reload_failed_total{what=\"jwks\"}";
    within_10s("the bad file is noticed", async || {
        s.metrics().await.lines().any(|l| l.starts_with(failed))
    })
    .await;
    assert_eq!(status(&s, "ks", &two).await, 200);
    s.stop().await;
}

#[tokio::test]
async fn a_jwks_url_is_fetched_again_when_a_token_names_a_new_kid() {
    // The identity provider: serves whatever JWKS the test sets, counting
    // fetches.
    let document = Arc::new(Mutex::new(jwks(&[(1, "one")])));
    let fetches = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let app = {
        let (document, fetches) = (document.clone(), fetches.clone());
        axum::Router::new().route(
            "/jwks.json",
            axum::routing::get(move || {
                fetches.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let body = document.lock().unwrap().clone();
                async move { body }
            }),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let s = server(AuthConfig {
        jwks: Some(JwksSource::Url(url)),
        // Long: only an unknown kid makes it fetch again in this test.
        jwks_refresh: Duration::from_secs(3600),
        ..AuthConfig::default()
    })
    .await;
    s.create_space("ku", &mint(&claims("admin", "ku", Role::Admin), &key()))
        .await;
    assert_eq!(fetches.load(std::sync::atomic::Ordering::SeqCst), 1);
    let one = mint_eddsa(&claims("alice", "ku", Role::Read), &[1; 32], Some("one"));
    assert_eq!(status(&s, "ku", &one).await, 200);
    // The provider rotates in key two; a token naming it is refused once,
    // and the refusal fetches the JWKS again.
    *document.lock().unwrap() = jwks(&[(1, "one"), (2, "two")]);
    let two = mint_eddsa(&claims("alice", "ku", Role::Read), &[2; 32], Some("two"));
    within_10s("key two accepted", async || {
        status(&s, "ku", &two).await == 200
    })
    .await;
    assert_eq!(fetches.load(std::sync::atomic::Ordering::SeqCst), 2);
    // Made-up kids do not turn into a stream of fetches.
    for i in 0..20 {
        let bogus = mint_eddsa(
            &claims("eve", "ku", Role::Read),
            &[9; 32],
            Some(&format!("x{i}")),
        );
        assert_eq!(status(&s, "ku", &bogus).await, 401);
    }
    assert!(fetches.load(std::sync::atomic::Ordering::SeqCst) <= 3);
    s.stop().await;
}

#[tokio::test]
async fn two_secrets_during_a_rotation_and_an_identity_providers_claims() {
    let previous = Hs256Key::new(b"the-previous-secret-the-previous-secret").unwrap();
    let s = server(AuthConfig {
        previous: Some(previous.clone()),
        jwks: None,
        ..AuthConfig::default()
    })
    .await;
    s.create_space("kr", &mint(&claims("admin", "kr", Role::Admin), &key()))
        .await;
    let stranger = Hs256Key::new(b"a-third-secret-nobody-configured-here").unwrap();
    for (k, want) in [(&key(), 200), (&previous, 200), (&stranger, 401)] {
        assert_eq!(
            status(&s, "kr", &mint(&claims("a", "kr", Role::Read), k)).await,
            want
        );
    }
    s.stop().await;

    // An identity provider's EdDSA tokens: issuer, audience and namespaced
    // claims are checked.
    let file = temp("jwks-idp.json");
    replace(&file, &jwks(&[(5, "idp")]));
    let s = server(AuthConfig {
        jwks: Some(JwksSource::File(file)),
        issuer: Some("https://idp.example/".into()),
        audience: Some("arbor".into()),
        claims_prefix: Some("https://arbor.example/".into()),
        ..AuthConfig::default()
    })
    .await;
    s.create_space("ki", &mint(&claims("admin", "ki", Role::Admin), &key()))
        .await;
    let idp_token = |iss: &str, aud: &str| {
        use base64::Engine as _;
        use ed25519_dalek::Signer as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let header = b64.encode(r#"{"alg":"EdDSA","kid":"idp"}"#);
        let body = b64.encode(
            serde_json::json!({
                "iss": iss, "aud": aud, "sub": "auth0|alice", "exp": now_s() + 600,
                "https://arbor.example/space": "ki",
                "https://arbor.example/role": "read",
            })
            .to_string(),
        );
        let input = format!("{header}.{body}");
        let sig = ed25519_dalek::SigningKey::from_bytes(&[5; 32]).sign(input.as_bytes());
        format!("{input}.{}", b64.encode(sig.to_bytes()))
    };
    assert_eq!(
        status(&s, "ki", &idp_token("https://idp.example/", "arbor")).await,
        200
    );
    assert_eq!(
        status(&s, "ki", &idp_token("https://other.example/", "arbor")).await,
        401
    );
    assert_eq!(
        status(&s, "ki", &idp_token("https://idp.example/", "other")).await,
        401
    );
    s.stop().await;
}

#[tokio::test]
async fn a_revoked_token_is_refused_and_its_socket_closed() {
    let file = temp("revoked.json");
    replace(&file, r#"{"jti": [], "sub": {}}"#);
    let s = server(AuthConfig {
        revocation_file: Some(file.clone()),
        ..AuthConfig::default()
    })
    .await;
    s.create_space("kv", &mint(&claims("admin", "kv", Role::Admin), &key()))
        .await;
    let stolen = mint(
        &Claims {
            jti: Some("t-stolen".into()),
            ..claims("alice", "kv", Role::Read)
        },
        &key(),
    );
    let alices_other = mint(
        &Claims {
            jti: Some("t-other".into()),
            ..claims("alice", "kv", Role::Read)
        },
        &key(),
    );
    let bobs = mint(&claims("bob", "kv", Role::Read), &key());
    let mut stolen_ws = open(&s, "kv", &stolen, 1, None).await;
    let mut other_ws = open(&s, "kv", &alices_other, 2, None).await;
    let mut bob_ws = open(&s, "kv", &bobs, 3, None).await;

    // Revoke one token by id: its socket closes 4005 within seconds, new
    // requests with it get 401 token_revoked; the others are untouched.
    replace(&file, r#"{"jti": ["t-stolen"]}"#);
    let closed = tokio::time::timeout(Duration::from_secs(10), close_code(&mut stolen_ws))
        .await
        .expect("the revoked socket was not closed within 10 s");
    assert_eq!(closed, Some(4005));
    let r = s
        .http
        .get(s.url("/v1/spaces/kv/ops"))
        .bearer_auth(&stolen)
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, (401, "token_revoked".into()));
    assert_eq!(connect(&s, "kv", &stolen).await.err(), Some(401));
    assert_eq!(status(&s, "kv", &alices_other).await, 200);

    // Revoke the subject: alice's other socket goes too, bob's stays.
    replace(&file, r#"{"jti": ["t-stolen"], "sub": {"alice": null}}"#);
    let closed = tokio::time::timeout(Duration::from_secs(10), close_code(&mut other_ws))
        .await
        .expect("the subject's socket was not closed within 10 s");
    assert_eq!(closed, Some(4005));
    assert_eq!(status(&s, "kv", &alices_other).await, 401);
    assert_eq!(status(&s, "kv", &bobs).await, 200);
    // Bob's socket is open: a ping is answered.
    crate::ws::send(&mut bob_ws, arbor_shared::protocol::ClientMsg::Ping {}).await;
    while !matches!(
        crate::ws::recv(&mut bob_ws).await,
        arbor_shared::protocol::ServerMsg::Pong
    ) {}
    s.stop().await;
}
