//! Key sets: the RFC 8037 Ed25519 vector, EdDSA tokens chosen by `kid`,
//! two HS256 secrets during a rotation, issuer, audience and namespaced
//! claims, JWKS parsing, and the revocation list.

use arbor_shared::auth::{AuthError, Claims, Hs256Key, Role, authorize, mint, verify};
use arbor_shared::error::ErrorCode;
use arbor_shared::keys::{Jwks, KeySet, Keys, Revocations, mint_eddsa, public_jwk};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

const NOW: u64 = 2_000_000_000;

/// RFC 8037, appendix A: the Ed25519 key (`d`, `x`) and A.4's JWS.
const RFC_D: &str = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A";
const RFC_X: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
const RFC_JWS: &str = "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc.hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg";

fn secret(n: u8) -> [u8; 32] {
    [n; 32]
}

fn hs(n: u8) -> Hs256Key {
    Hs256Key::new(&[n; 32]).unwrap()
}

fn claims() -> Claims {
    Claims::new("alice", "demo", Role::Write, NOW, 600)
}

fn jwks(keys: &[serde_json::Value]) -> Jwks {
    Jwks::parse(serde_json::json!({ "keys": keys }).to_string().as_bytes()).unwrap()
}

#[test]
fn rfc8037_a4_verifies_and_a_changed_byte_does_not() {
    let set = jwks(&[serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": RFC_X})]);
    let keys = Keys::default().with_jwks(&set);
    let (input, sig) = RFC_JWS.rsplit_once('.').unwrap();
    let sig = URL_SAFE_NO_PAD.decode(sig).unwrap();
    assert_eq!(keys.check("EdDSA", None, input.as_bytes(), &sig), Ok(()));
    let mut bad = sig.clone();
    bad[10] ^= 1;
    assert_eq!(
        keys.check("EdDSA", None, input.as_bytes(), &bad),
        Err(AuthError::BadSignature)
    );
    // The same key through our own minting: the public half matches x.
    let d: [u8; 32] = URL_SAFE_NO_PAD.decode(RFC_D).unwrap().try_into().unwrap();
    assert_eq!(public_jwk(&d, "k")["x"], RFC_X);
}

#[test]
fn eddsa_tokens_are_chosen_by_kid() {
    let set = jwks(&[public_jwk(&secret(1), "one"), public_jwk(&secret(2), "two")]);
    let keys = Keys::hs256(hs(9)).with_jwks(&set);
    for (n, kid) in [(1, "one"), (2, "two")] {
        let token = mint_eddsa(&claims(), &secret(n), Some(kid));
        assert_eq!(verify(&token, &keys, NOW, 0), Ok(claims()), "{kid}");
    }
    // Signed by one key, naming the other: refused.
    let swapped = mint_eddsa(&claims(), &secret(1), Some("two"));
    assert_eq!(
        verify(&swapped, &keys, NOW, 0),
        Err(AuthError::BadSignature)
    );
    let unknown = mint_eddsa(&claims(), &secret(3), Some("three"));
    assert_eq!(
        verify(&unknown, &keys, NOW, 0),
        Err(AuthError::UnknownKey("three".into()))
    );
    // Without a kid: only when the set holds one key.
    let bare = mint_eddsa(&claims(), &secret(1), None);
    assert!(matches!(
        verify(&bare, &keys, NOW, 0),
        Err(AuthError::Malformed(_))
    ));
    let single = Keys::default().with_jwks(&jwks(&[public_jwk(&secret(1), "one")]));
    assert_eq!(verify(&bare, &single, NOW, 0), Ok(claims()));
    // HS256 still works beside it; EdDSA without any JWKS does not.
    assert_eq!(
        verify(&mint(&claims(), &hs(9)), &keys, NOW, 0),
        Ok(claims())
    );
    let token = mint_eddsa(&claims(), &secret(1), Some("one"));
    assert!(matches!(
        verify(&token, &Keys::hs256(hs(9)), NOW, 0),
        Err(AuthError::Unsupported(_))
    ));
    // A key set of one HS256 secret refuses EdDSA outright.
    assert!(matches!(
        verify(&token, &hs(9), NOW, 0),
        Err(AuthError::Unsupported(_))
    ));
}

#[test]
fn two_secrets_verify_during_a_rotation_and_a_third_does_not() {
    let keys = Keys::hs256(hs(1)).with_previous(hs(2));
    assert_eq!(
        verify(&mint(&claims(), &hs(1)), &keys, NOW, 0),
        Ok(claims())
    );
    assert_eq!(
        verify(&mint(&claims(), &hs(2)), &keys, NOW, 0),
        Ok(claims())
    );
    assert_eq!(
        verify(&mint(&claims(), &hs(3)), &keys, NOW, 0),
        Err(AuthError::BadSignature)
    );
    // After the rotation, the old secret is gone.
    assert_eq!(
        verify(&mint(&claims(), &hs(2)), &Keys::hs256(hs(1)), NOW, 0),
        Err(AuthError::BadSignature)
    );
}

#[test]
fn issuer_audience_and_namespaced_claims() {
    let mut keys = Keys::default().with_jwks(&jwks(&[public_jwk(&secret(1), "k")]));
    keys.issuer = Some("https://idp.example/".into());
    keys.audience = Some("arbor".into());
    keys.claims_prefix = Some("https://arbor.example/".into());
    let token = |payload: serde_json::Value| {
        // mint_eddsa signs Claims; an IdP's token has other claims: sign
        // raw JSON the same way.
        let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"EdDSA","kid":"k"}"#);
        let body = URL_SAFE_NO_PAD.encode(payload.to_string());
        let input = format!("{header}.{body}");
        use ed25519_dalek::Signer as _;
        let sig = ed25519_dalek::SigningKey::from_bytes(&secret(1)).sign(input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()))
    };
    let idp = serde_json::json!({
        "iss": "https://idp.example/",
        "aud": ["other", "arbor"],
        "sub": "auth0|alice",
        "exp": NOW + 600,
        "https://arbor.example/space": "demo",
        "https://arbor.example/role": "write",
    });
    let got = verify(&token(idp.clone()), &keys, NOW, 0).unwrap();
    assert_eq!(
        (got.sub.as_str(), got.space.as_str(), got.role),
        ("auth0|alice", "demo", Role::Write)
    );
    for (field, value) in [
        ("iss", serde_json::json!("https://evil.example/")),
        ("aud", serde_json::json!("other")),
        ("aud", serde_json::json!(["other"])),
    ] {
        let mut wrong = idp.clone();
        wrong[field] = value;
        assert!(
            matches!(
                verify(&token(wrong), &keys, NOW, 0),
                Err(AuthError::BadClaims(_))
            ),
            "{field}"
        );
    }
    let mut missing = idp.clone();
    missing.as_object_mut().unwrap().remove("aud");
    assert!(matches!(
        verify(&token(missing), &keys, NOW, 0),
        Err(AuthError::BadClaims(_))
    ));
}

#[test]
fn jwks_documents_are_checked() {
    // Other key types are skipped, not refused (an IdP publishes RSA too).
    let set = jwks(&[
        serde_json::json!({"kty": "RSA", "kid": "r", "n": "AQAB", "e": "AQAB"}),
        serde_json::json!({"kty": "OKP", "crv": "X25519", "kid": "x", "x": RFC_X}),
        serde_json::json!({"kty": "OKP", "crv": "Ed25519", "kid": "enc", "use": "enc", "x": RFC_X}),
        public_jwk(&secret(1), "k"),
    ]);
    assert_eq!((set.len(), set.skipped), (1, 3));
    for bad in [
        "[]".to_string(),
        "{}".to_string(),
        r#"{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"a","x":"AAAA"}]}"#.to_string(),
        r#"{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"a"}]}"#.to_string(),
        // The identity point: a small-order key.
        format!(
            r#"{{"keys":[{{"kty":"OKP","crv":"Ed25519","kid":"a","x":"{}"}}]}}"#,
            URL_SAFE_NO_PAD.encode({
                let mut b = [0u8; 32];
                b[0] = 1;
                b
            })
        ),
        serde_json::json!({"keys": [public_jwk(&secret(1), "a"), public_jwk(&secret(2), "a")]})
            .to_string(),
    ] {
        assert!(Jwks::parse(bad.as_bytes()).is_err(), "{bad}");
    }
}

#[test]
fn the_revocation_list_refuses_by_id_and_by_subject() {
    let list =
        Revocations::parse(br#"{"jti": ["t-1"], "sub": {"mallory": null, "bob": 1999999000}}"#)
            .unwrap();
    assert_eq!(list.len(), 3);
    // What the server hands the Durable Objects reads back the same.
    assert_eq!(
        Revocations::parse(list.to_json().as_bytes()),
        Ok(list.clone())
    );
    let with = |sub: &str, jti: Option<&str>, iat: Option<u64>| Claims {
        jti: jti.map(String::from),
        iat,
        ..Claims::new(sub, "demo", Role::Write, NOW, 600)
    };
    assert!(list.revokes(&with("alice", Some("t-1"), Some(NOW))));
    assert!(!list.revokes(&with("alice", Some("t-2"), Some(NOW))));
    assert!(!list.revokes(&with("alice", None, Some(NOW))));
    assert!(list.revokes(&with("mallory", None, Some(NOW))));
    // bob: tokens issued before the bound (or without iat) only.
    assert!(list.revokes(&with("bob", None, Some(1_999_998_999))));
    assert!(list.revokes(&with("bob", None, None)));
    assert!(!list.revokes(&with("bob", None, Some(1_999_999_000))));
    for bad in [&b"[]"[..], br#"{"jti": "t-1"}"#, br#"{"users": []}"#] {
        assert!(Revocations::parse(bad).is_err());
    }
    // authorize refuses a revoked token with its own code.
    let key = hs(1);
    let token = mint(&with("mallory", None, Some(NOW)), &key);
    let refused = authorize(
        Some(&token),
        &key,
        &list,
        NOW,
        0,
        "demo",
        arbor_shared::auth::Need::Read,
    )
    .unwrap_err();
    assert_eq!(refused.code, ErrorCode::TokenRevoked);
    assert!(
        authorize(
            Some(&token),
            &key,
            &Revocations::default(),
            NOW,
            0,
            "demo",
            arbor_shared::auth::Need::Read
        )
        .is_ok()
    );
}
