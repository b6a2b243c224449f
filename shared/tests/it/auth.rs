//! HS256 tokens: the RFC 7515 A.1 vector with an injected clock, Arbor's
//! claims, and refusals of every malformed or tampered token.

use arbor_shared::ReplicaId;
use arbor_shared::auth::{
    AuthError, Claims, DEFAULT_LEEWAY_S, Hs256Key, KeyTooShort, MAX_TOKEN_LEN, Role, mint, verify,
    verify_standard,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// RFC 7515, appendix A.1: the JWK `k` and the compact serialization.
const RFC_KEY: &str =
    "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow";
const RFC_TOKEN: &str = "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const RFC_EXP: u64 = 1_300_819_380;

fn rfc_key() -> Hs256Key {
    Hs256Key::new(&URL_SAFE_NO_PAD.decode(RFC_KEY).unwrap()).unwrap()
}

fn key() -> Hs256Key {
    Hs256Key::new(b"0123456789abcdef0123456789abcdef").unwrap()
}

fn claims(exp: u64) -> Claims {
    Claims {
        sub: "alice".into(),
        space: "demo".into(),
        role: Role::Write,
        rid: Some(ReplicaId(0xdead_beef)),
        tenant: None,
        exp,
        nbf: None,
        iat: Some(exp - 3600),
        jti: None,
        root: None,
    }
}

#[test]
fn rfc7515_a1_verifies_with_an_injected_clock() {
    let key = rfc_key();
    let got = verify_standard(RFC_TOKEN, &key, RFC_EXP - 100, 0).unwrap();
    assert_eq!(got["iss"], "joe");
    assert_eq!(got["http://example.com/is_root"], true);
    // Within the leeway after exp, then past it.
    assert!(verify_standard(RFC_TOKEN, &key, RFC_EXP + 60, 60).is_ok());
    assert_eq!(
        verify_standard(RFC_TOKEN, &key, RFC_EXP + 61, 60),
        Err(AuthError::Expired {
            exp: RFC_EXP,
            now: RFC_EXP + 61
        })
    );
    // The vector has none of Arbor's claims.
    assert!(matches!(
        verify(RFC_TOKEN, &key, RFC_EXP - 100, 0),
        Err(AuthError::BadClaims(_))
    ));
    // Another key: bad signature.
    assert_eq!(
        verify_standard(RFC_TOKEN, &self::key(), RFC_EXP - 100, 0),
        Err(AuthError::BadSignature)
    );
}

#[test]
fn minted_tokens_round_trip_and_time_claims_are_honoured() {
    let now = 2_000_000_000;
    let c = claims(now + 600);
    let token = mint(&c, &key());
    assert_eq!(verify(&token, &key(), now, DEFAULT_LEEWAY_S).unwrap(), c);
    // rid travels as the replica's hex text, role in lowercase.
    let payload = token.split('.').nth(1).unwrap();
    let json: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    assert_eq!(json["role"], "write");
    assert_eq!(json["rid"], "00000000deadbeef");

    let not_yet = Claims {
        nbf: Some(now + 120),
        ..claims(now + 600)
    };
    assert_eq!(
        verify(&mint(&not_yet, &key()), &key(), now, 60),
        Err(AuthError::NotYetValid {
            nbf: now + 120,
            now
        })
    );
    assert!(verify(&mint(&not_yet, &key()), &key(), now + 61, 60).is_ok());
    let future = Claims {
        iat: Some(now + 120),
        ..claims(now + 600)
    };
    assert_eq!(
        verify(&mint(&future, &key()), &key(), now, 60),
        Err(AuthError::IssuedInFuture {
            iat: now + 120,
            now
        })
    );
    assert!(Role::Write.can_write() && !Role::Read.can_write());
    assert!(Role::Service.can_admin() && !Role::Write.can_admin());
}

/// Signs arbitrary segments with the test key (to reach the header and
/// claim checks behind the MAC).
fn forge(header: &str, payload: &str) -> String {
    use hmac::{Hmac, Mac};
    let h = URL_SAFE_NO_PAD.encode(header);
    let p = URL_SAFE_NO_PAD.encode(payload);
    let mut mac =
        Hmac::<sha2::Sha256>::new_from_slice(b"0123456789abcdef0123456789abcdef").unwrap();
    mac.update(format!("{h}.{p}").as_bytes());
    format!(
        "{h}.{p}.{}",
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    )
}

#[test]
fn refusals_are_typed() {
    let k = key();
    let now = 2_000_000_000u64;
    let body = serde_json::to_string(&claims(now + 600)).unwrap();
    // The forge helper signs like mint does: a control.
    assert!(verify(&forge(r#"{"alg":"HS256"}"#, &body), &k, now, 0).is_ok());
    for (header, want) in [
        (r#"{"alg":"none"}"#, "none"),
        (r#"{"alg":"HS512"}"#, "HS512"),
        (r#"{"alg":"hs256"}"#, "hs256"),
    ] {
        match verify(&forge(header, &body), &k, now, 0) {
            Err(AuthError::Unsupported(m)) => assert!(m.contains(want), "{m}"),
            other => panic!("{header}: {other:?}"),
        }
    }
    assert!(matches!(
        verify(&forge(r#"{"alg":"HS256","crit":["x"]}"#, &body), &k, now, 0),
        Err(AuthError::Unsupported(_))
    ));
    assert!(matches!(
        verify(&forge(r#"{"typ":"JWT"}"#, &body), &k, now, 0),
        Err(AuthError::Malformed(_))
    ));
    for (payload, what) in [
        (r#"{"sub":"a","space":"s","role":"write"}"#, "missing exp"),
        (
            r#"{"sub":"a","space":"s","role":"write","exp":"soon"}"#,
            "string exp",
        ),
        (
            r#"{"sub":"a","space":"s","role":"owner","exp":3000000000}"#,
            "unknown role",
        ),
        (
            r#"{"space":"s","role":"write","exp":3000000000}"#,
            "missing sub",
        ),
    ] {
        assert!(
            matches!(
                verify(&forge(r#"{"alg":"HS256"}"#, payload), &k, now, 0),
                Err(AuthError::BadClaims(_))
            ),
            "{what}"
        );
    }
    assert!(matches!(
        verify(&forge(r#"{"alg":"HS256"}"#, "[1,2]"), &k, now, 0),
        Err(AuthError::Malformed(_))
    ));
    let good = mint(&claims(now + 600), &k);
    let (h, rest) = good.split_once('.').unwrap();
    for bad in [
        "".to_string(),
        "a.b".to_string(),
        format!("{good}.x"),
        format!("{h}.!!!.{}", rest.split_once('.').unwrap().1),
        format!("{good}="),
        "x".repeat(MAX_TOKEN_LEN + 1),
    ] {
        assert!(verify(&bad, &k, now, 0).is_err(), "{bad:.40}");
    }
    assert_eq!(
        verify(&"x".repeat(MAX_TOKEN_LEN + 1), &k, now, 0),
        Err(AuthError::TooLarge)
    );
    assert_eq!(Hs256Key::new(b"short").unwrap_err(), KeyTooShort(5));
}

#[test]
fn no_mutation_of_a_token_verifies_or_panics() {
    let k = key();
    let now = 2_000_000_000u64;
    let token = mint(&claims(now + 600), &k).into_bytes();
    let mut s = crate::util::seed("token mutations");
    for _ in 0..5_000 {
        let mut t = token.clone();
        let n = 1 + arbor_shared::sim::splitmix(&mut s) % 3;
        for _ in 0..n {
            let r = arbor_shared::sim::splitmix(&mut s);
            let i = (r % t.len() as u64) as usize;
            match (r >> 32) % 3 {
                0 => t[i] = (r >> 40) as u8,
                1 => {
                    t.remove(i);
                }
                _ => t.insert(i, b"A.=-_"[((r >> 40) % 5) as usize]),
            }
        }
        let Ok(text) = String::from_utf8(t) else {
            continue;
        };
        if text.as_bytes() == token.as_slice() {
            continue;
        }
        assert!(
            verify(&text, &k, now, 0).is_err(),
            "mutated token verified: {text}"
        );
    }
}

#[test]
fn a_root_claim_is_for_read_and_write_tokens_and_can_be_read_unverified() {
    let now = 2_000_000_000;
    let root = arbor_shared::NodeId(0x5eed);
    let scoped = Claims {
        root: Some(root),
        ..claims(now + 600)
    };
    let token = mint(&scoped, &key());
    assert_eq!(verify(&token, &key(), now, 0).unwrap().root, Some(root));
    assert_eq!(arbor_shared::auth::unverified_root(&token), Some(root));
    assert_eq!(
        arbor_shared::auth::unverified_root(&mint(&claims(now), &key())),
        None
    );
    assert_eq!(arbor_shared::auth::unverified_root("not.a-token"), None);
    for bad in [
        Claims {
            role: Role::Admin,
            ..scoped.clone()
        },
        Claims {
            role: Role::Service,
            ..scoped.clone()
        },
        Claims {
            root: Some(arbor_shared::NodeId::TRASH),
            ..scoped.clone()
        },
    ] {
        assert!(matches!(
            verify(&mint(&bad, &key()), &key(), now, 0),
            Err(AuthError::BadClaims(_))
        ));
    }
}
