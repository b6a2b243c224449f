//! The keys tokens are checked with ([`Keys`]: HS256 secrets, two during a rotation, and Ed25519 keys from a JWKS chosen by `kid`), the issuer and audience an identity provider's tokens must name, and the revocation list ([`Revocations`]).
//!
//! Ed25519 through `ed25519-dalek` (pure Rust: the Durable Object verifies
//! in wasm32 too), strict verification (no malleable signatures, no small-
//! order keys). A JWKS is parsed for its `OKP`/`Ed25519` keys; keys of other
//! types (an identity provider's RSA keys, say) are counted and skipped.

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signature, VerifyingKey};
use serde::Deserialize;

use crate::auth::{AuthError, Claims, Hs256Key};

/// Checks a token's signature for the algorithm and key its header names.
/// [`Hs256Key`] alone (one secret) and [`Keys`] implement it.
pub trait KeySet {
    /// Checks `signature` over `signing_input` (the token's first two
    /// segments as sent) for a header naming `alg` and `kid`.
    fn check(
        &self,
        alg: &str,
        kid: Option<&str>,
        signing_input: &[u8],
        signature: &[u8],
    ) -> Result<(), AuthError>;

    /// Checks the registered claims an identity provider sets (`iss`,
    /// `aud`) and moves namespaced claims into place, for a token whose
    /// signature checked with `alg`; the default does nothing.
    fn check_claims(
        &self,
        _alg: &str,
        _claims: &mut serde_json::Map<String, serde_json::Value>,
    ) -> Result<(), AuthError> {
        Ok(())
    }
}

impl KeySet for Hs256Key {
    fn check(
        &self,
        alg: &str,
        _kid: Option<&str>,
        signing_input: &[u8],
        signature: &[u8],
    ) -> Result<(), AuthError> {
        if alg != "HS256" {
            return Err(AuthError::Unsupported(format!("alg {alg}")));
        }
        if self.verifies(signing_input, signature) {
            Ok(())
        } else {
            Err(AuthError::BadSignature)
        }
    }
}

/// Every key a server (or the Durable Object) accepts tokens from, and
/// what an identity provider's tokens must say besides.
#[derive(Debug, Clone, Default)]
pub struct Keys {
    /// HS256 secrets, the current one first; a token verifies if any
    /// matches (two during a rotation).
    hs256: Vec<Hs256Key>,
    /// Ed25519 public keys by `kid` (`None`: a JWKS key without one).
    ed25519: Vec<(Option<String>, VerifyingKey)>,
    /// `iss` every EdDSA token must carry, when set.
    pub issuer: Option<String>,
    /// A value an EdDSA token's `aud` must carry (a string, or one of an
    /// array), when set.
    pub audience: Option<String>,
    /// Arbor's claims (`space`, `role`, `rid`, `tenant`, `root`) read under this
    /// prefix when an EdDSA token has them there
    /// (`https://arbor.example/space`): identity providers that require
    /// namespaced custom claims. (Issuer, audience and prefix are the
    /// identity provider's rules; HS256 tokens are the application's own.)
    pub claims_prefix: Option<String>,
}

impl Keys {
    /// Tokens signed with `current` (HS256).
    pub fn hs256(current: Hs256Key) -> Keys {
        Keys {
            hs256: vec![current],
            ..Keys::default()
        }
    }

    /// Also accepts HS256 tokens signed with `previous` (a rotation).
    #[must_use]
    pub fn with_previous(mut self, previous: Hs256Key) -> Keys {
        self.hs256.push(previous);
        self
    }

    /// Also accepts EdDSA tokens signed by a key of `jwks` (replacing any
    /// Ed25519 keys from an earlier JWKS).
    #[must_use]
    pub fn with_jwks(mut self, jwks: &Jwks) -> Keys {
        self.ed25519 = jwks.keys.clone();
        self
    }

    /// How many Ed25519 keys it holds.
    pub fn ed25519_len(&self) -> usize {
        self.ed25519.len()
    }

    /// The `kid`s of the Ed25519 keys held.
    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.ed25519.iter().filter_map(|(k, _)| k.as_deref())
    }
}

impl KeySet for Keys {
    fn check(
        &self,
        alg: &str,
        kid: Option<&str>,
        signing_input: &[u8],
        signature: &[u8],
    ) -> Result<(), AuthError> {
        match alg {
            "HS256" if !self.hs256.is_empty() => {
                if self
                    .hs256
                    .iter()
                    .any(|k| k.verifies(signing_input, signature))
                {
                    Ok(())
                } else {
                    Err(AuthError::BadSignature)
                }
            }
            "EdDSA" if !self.ed25519.is_empty() => {
                let key = match kid {
                    Some(kid) => self
                        .ed25519
                        .iter()
                        .find(|(k, _)| k.as_deref() == Some(kid))
                        .map(|(_, key)| key)
                        .ok_or_else(|| AuthError::UnknownKey(kid.to_string()))?,
                    None => match self.ed25519.as_slice() {
                        [(_, key)] => key,
                        _ => {
                            return Err(AuthError::Malformed(
                                "an EdDSA token must name its key (kid)",
                            ));
                        }
                    },
                };
                let signature = Signature::from_slice(signature)
                    .map_err(|_| AuthError::Malformed("an Ed25519 signature is 64 bytes"))?;
                key.verify_strict(signing_input, &signature)
                    .map_err(|_| AuthError::BadSignature)
            }
            other => Err(AuthError::Unsupported(format!("alg {other}"))),
        }
    }

    fn check_claims(
        &self,
        alg: &str,
        claims: &mut serde_json::Map<String, serde_json::Value>,
    ) -> Result<(), AuthError> {
        // The identity provider's rules are for its tokens (EdDSA, from the
        // JWKS); HS256 tokens come from the application's own backend.
        if alg != "EdDSA" {
            return Ok(());
        }
        if let Some(issuer) = &self.issuer
            && claims.get("iss").and_then(|v| v.as_str()) != Some(issuer.as_str())
        {
            return Err(AuthError::BadClaims(format!("iss must be {issuer}")));
        }
        if let Some(audience) = &self.audience {
            let ok = match claims.get("aud") {
                Some(serde_json::Value::String(a)) => a == audience,
                Some(serde_json::Value::Array(a)) => {
                    a.iter().any(|v| v.as_str() == Some(audience.as_str()))
                }
                _ => false,
            };
            if !ok {
                return Err(AuthError::BadClaims(format!("aud must include {audience}")));
            }
        }
        if let Some(prefix) = &self.claims_prefix {
            for name in ["space", "role", "rid", "tenant", "root"] {
                if let Some(v) = claims.remove(&format!("{prefix}{name}")) {
                    claims.insert(name.to_string(), v);
                }
            }
        }
        Ok(())
    }
}

/// Ed25519 keys read from a JSON Web Key Set (RFC 7517, keys per RFC 8037).
#[derive(Debug, Clone, Default)]
pub struct Jwks {
    keys: Vec<(Option<String>, VerifyingKey)>,
    /// Keys of other types or curves, skipped.
    pub skipped: usize,
}

/// A JWKS that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwksError {
    /// Not a JSON object with a `keys` array.
    #[error("not a JWKS (a JSON object with a keys array): {0}")]
    NotJwks(String),
    /// An Ed25519 key whose `x` is not 32 base64url bytes, or not a point.
    #[error("key {kid:?}: {message}")]
    BadKey {
        /// The key's `kid`.
        kid: Option<String>,
        /// What is wrong.
        message: String,
    },
    /// Two keys with one `kid`.
    #[error("two keys with kid {0}")]
    DuplicateKid(String),
}

#[derive(Deserialize)]
struct JwksJson {
    keys: Vec<JwkJson>,
}

#[derive(Deserialize)]
struct JwkJson {
    kty: String,
    #[serde(default)]
    crv: Option<String>,
    #[serde(default)]
    x: Option<String>,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default, rename = "use")]
    use_: Option<String>,
    #[serde(default)]
    alg: Option<String>,
}

impl Jwks {
    /// Parses a JWKS document, keeping its Ed25519 signing keys.
    pub fn parse(json: &[u8]) -> Result<Jwks, JwksError> {
        let doc: JwksJson =
            serde_json::from_slice(json).map_err(|e| JwksError::NotJwks(e.to_string()))?;
        let mut jwks = Jwks::default();
        let mut kids = BTreeSet::new();
        for k in doc.keys {
            let signing = k.use_.as_deref().is_none_or(|u| u == "sig")
                && k.alg.as_deref().is_none_or(|a| a == "EdDSA");
            if k.kty != "OKP" || k.crv.as_deref() != Some("Ed25519") || !signing {
                jwks.skipped += 1;
                continue;
            }
            let bad = |message: &str| JwksError::BadKey {
                kid: k.kid.clone(),
                message: message.into(),
            };
            let x = k.x.as_deref().ok_or_else(|| bad("no x"))?;
            let bytes: [u8; 32] = URL_SAFE_NO_PAD
                .decode(x)
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| bad("x is not 32 base64url bytes"))?;
            let key = VerifyingKey::from_bytes(&bytes).map_err(|_| bad("x is not a key"))?;
            if key.is_weak() {
                return Err(bad("a small-order key"));
            }
            if let Some(kid) = &k.kid
                && !kids.insert(kid.clone())
            {
                return Err(JwksError::DuplicateKid(kid.clone()));
            }
            jwks.keys.push((k.kid, key));
        }
        Ok(jwks)
    }

    /// How many Ed25519 keys it holds.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True if it holds no Ed25519 key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// Tokens refused although their signature and times are good: by `jti`,
/// or every token of a subject (issued before a time, or all).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Revocations {
    jti: BTreeSet<String>,
    /// Subject to the `iat` its tokens must be at or after (`None`: every
    /// token of the subject is refused).
    sub: BTreeMap<String, Option<u64>>,
}

/// A revocation list that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("revocation list: {0}")]
pub struct RevocationsError(pub String);

#[derive(Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct RevocationsJson {
    #[serde(default)]
    jti: Vec<String>,
    #[serde(default)]
    sub: BTreeMap<String, Option<u64>>,
}

impl Revocations {
    /// Parses `{"jti": ["..."], "sub": {"alice": null, "bob": 1796000000}}`:
    /// tokens with one of these `jti`s; every token of `alice`; `bob`'s
    /// tokens issued (`iat`) before that time, or without `iat`.
    pub fn parse(json: &[u8]) -> Result<Revocations, RevocationsError> {
        let value: serde_json::Value =
            serde_json::from_slice(json).map_err(|e| RevocationsError(e.to_string()))?;
        // serde would read a struct from an array too; only an object is a list.
        if !value.is_object() {
            return Err(RevocationsError("not a JSON object".into()));
        }
        let doc: RevocationsJson =
            serde_json::from_value(value).map_err(|e| RevocationsError(e.to_string()))?;
        Ok(Revocations {
            jti: doc.jti.into_iter().collect(),
            sub: doc.sub,
        })
    }

    /// The list in the format [`Revocations::parse`] reads (the sync
    /// server hands it to the Durable Objects so).
    pub fn to_json(&self) -> String {
        serde_json::to_string(&RevocationsJson {
            jti: self.jti.iter().cloned().collect(),
            sub: self.sub.clone(),
        })
        .unwrap_or_default()
    }

    /// True if the list refuses a token with these claims.
    pub fn revokes(&self, claims: &Claims) -> bool {
        if claims.jti.as_ref().is_some_and(|j| self.jti.contains(j)) {
            return true;
        }
        match self.sub.get(&claims.sub) {
            None => false,
            Some(None) => true,
            Some(Some(since)) => claims.iat.is_none_or(|iat| iat < *since),
        }
    }

    /// Entries in the list (ids and subjects).
    pub fn len(&self) -> usize {
        self.jti.len() + self.sub.len()
    }

    /// True if nothing is revoked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Mints an EdDSA token for `claims` with the Ed25519 key whose secret is
/// `secret`, naming `kid` (tests and development; production tokens come
/// from the identity provider).
pub fn mint_eddsa(claims: &Claims, secret: &[u8; 32], kid: Option<&str>) -> String {
    use ed25519_dalek::Signer as _;
    let header = match kid {
        Some(kid) => serde_json::json!({"alg": "EdDSA", "typ": "JWT", "kid": kid}),
        None => serde_json::json!({"alg": "EdDSA", "typ": "JWT"}),
    };
    let header = URL_SAFE_NO_PAD.encode(header.to_string());
    // Serializing plain strings, integers and enums cannot fail.
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap_or_default());
    let input = format!("{header}.{payload}");
    let signature = ed25519_dalek::SigningKey::from_bytes(secret).sign(input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()))
}

/// The public JWK (`OKP`, `Ed25519`) of the key whose secret is `secret`,
/// for a JWKS document.
pub fn public_jwk(secret: &[u8; 32], kid: &str) -> serde_json::Value {
    let public = ed25519_dalek::SigningKey::from_bytes(secret).verifying_key();
    serde_json::json!({
        "kty": "OKP",
        "crv": "Ed25519",
        "use": "sig",
        "alg": "EdDSA",
        "kid": kid,
        "x": URL_SAFE_NO_PAD.encode(public.as_bytes()),
    })
}
