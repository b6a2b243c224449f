//! JSON Web Tokens (RFC 7519 / RFC 7515): verification (HS256, and EdDSA
//! with the keys of [`crate::keys`]) and HS256 minting.
//!
//! Our own on top of `hmac` + `sha2` and `ed25519-dalek` rather than a JWT
//! crate: it must build for `wasm32-unknown-unknown` (the Durable Object
//! verifies tokens too) with no ring/openssl, and the subset we accept is
//! small and strict: compact serialization only, `alg` exactly `HS256` or
//! `EdDSA` (as the key set allows), no `crit`, the signature checked over
//! the original segments (never re-encoded; MACs in constant time), `exp`
//! required, `nbf` and `iat` honoured, all with a leeway. Time is passed in
//! (the core reads no clock).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::id::{NodeId, ReplicaId};
use crate::keys::{KeySet, Revocations};

/// Longest token accepted, in bytes (a real one is a few hundred).
pub const MAX_TOKEN_LEN: usize = 8 * 1024;
/// Shortest HS256 secret accepted (RFC 7518 section 3.2: at least the hash
/// size, 256 bits).
pub const MIN_KEY_LEN: usize = 32;
/// Default clock leeway for `exp`, `nbf` and `iat`, in seconds.
pub const DEFAULT_LEEWAY_S: u64 = 60;

/// What a token lets its bearer do in its thoughtspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read the thoughtspace (snapshots, catch-up, live ops).
    Read,
    /// Read and push ops.
    Write,
    /// Write, plus fork, export and administration.
    Admin,
    /// A trusted service (the Durable Object): pushes on behalf of clients.
    Service,
}

impl Role {
    /// True if the role may push ops.
    pub fn can_write(self) -> bool {
        !matches!(self, Role::Read)
    }

    /// True if the role may fork, export and administer.
    pub fn can_admin(self) -> bool {
        matches!(self, Role::Admin | Role::Service)
    }
}

/// The claims Arbor's tokens carry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user (or service) the token was issued to.
    pub sub: String,
    /// The thoughtspaces it is scoped to: one name, a prefix pattern
    /// (`acme.*`: every space whose name starts with `acme.`), or `*` (every
    /// space; service tokens only).
    pub space: String,
    /// What it may do there.
    pub role: Role,
    /// The replica bound to the token, if any: ops must be authored by it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rid: Option<ReplicaId>,
    /// The tenant the spaces this token creates belong to (quotas count
    /// spaces per tenant); absent: the subject is its own tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Expiry, seconds since the epoch (required).
    pub exp: u64,
    /// Not valid before, seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Issued at, seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// The token's id (revocation by id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// The subtree the token is limited to: the node and everything below
    /// it, wherever it is moved (invariant, checked by [`verify`]: never
    /// TRASH, and only on `read` and `write` tokens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<NodeId>,
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Longer than [`MAX_TOKEN_LEN`].
    #[error("token longer than {MAX_TOKEN_LEN} bytes")]
    TooLarge,
    /// Not three base64url segments of JSON objects.
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// The header names another algorithm, or critical extensions.
    #[error("unsupported token algorithm or header: {0}")]
    Unsupported(String),
    /// The MAC does not match.
    #[error("bad token signature")]
    BadSignature,
    /// `exp` (plus leeway) has passed.
    #[error("token expired at {exp} (now {now})")]
    Expired {
        /// The token's `exp`.
        exp: u64,
        /// The time checked against.
        now: u64,
    },
    /// `nbf` (minus leeway) is still ahead.
    #[error("token not valid before {nbf} (now {now})")]
    NotYetValid {
        /// The token's `nbf`.
        nbf: u64,
        /// The time checked against.
        now: u64,
    },
    /// `iat` (minus leeway) is ahead: issued in the future.
    #[error("token issued in the future at {iat} (now {now})")]
    IssuedInFuture {
        /// The token's `iat`.
        iat: u64,
        /// The time checked against.
        now: u64,
    },
    /// A required claim is missing or has the wrong type.
    #[error("bad claims: {0}")]
    BadClaims(String),
    /// The header names a `kid` the key set does not hold (a key rotated
    /// in at the identity provider: the JWKS may need fetching again).
    #[error("unknown signing key {0}")]
    UnknownKey(String),
    /// The revocation list refuses the token.
    #[error("the token has been revoked")]
    Revoked,
}

/// An HS256 secret, kept as a keyed MAC state. Its `Debug` never shows it.
#[derive(Clone)]
pub struct Hs256Key {
    /// HMAC-SHA256 keyed with the secret (invariant: at least
    /// [`MIN_KEY_LEN`] bytes); cloned per use.
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for Hs256Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hs256Key(..)")
    }
}

/// A secret shorter than [`MIN_KEY_LEN`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an HS256 secret must be at least {MIN_KEY_LEN} bytes, got {0}")]
pub struct KeyTooShort(pub usize);

impl Hs256Key {
    /// A key from its secret bytes.
    pub fn new(secret: &[u8]) -> Result<Hs256Key, KeyTooShort> {
        if secret.len() < MIN_KEY_LEN {
            return Err(KeyTooShort(secret.len()));
        }
        // HMAC accepts keys of any length; the error arm is unreachable.
        let mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|_| KeyTooShort(secret.len()))?;
        Ok(Hs256Key { mac })
    }

    fn mac(&self) -> Hmac<Sha256> {
        self.mac.clone()
    }

    /// True if `signature` is this key's MAC of `input` (constant time).
    pub(crate) fn verifies(&self, input: &[u8], signature: &[u8]) -> bool {
        let mut mac = self.mac();
        mac.update(input);
        mac.verify_slice(signature).is_ok()
    }
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    crit: Option<serde_json::Value>,
}

fn b64(segment: &str, what: &'static str) -> Result<Vec<u8>, AuthError> {
    URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| AuthError::Malformed(what))
}

/// Checks the header and the signature with `keys`; returns the payload's
/// JSON object.
fn verify_signature(
    token: &str,
    keys: &(impl KeySet + ?Sized),
) -> Result<serde_json::Map<String, serde_json::Value>, AuthError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(AuthError::TooLarge);
    }
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthError::Malformed(
            "a token is three dot-separated segments",
        ));
    };
    let header: Header = serde_json::from_slice(&b64(h, "header is not base64url")?)
        .map_err(|_| AuthError::Malformed("header is not a JSON object with alg"))?;
    if header.crit.is_some() {
        return Err(AuthError::Unsupported("crit".into()));
    }
    let signature = b64(s, "signature is not base64url")?;
    // The signing input is the first two segments exactly as sent.
    let signing_input = &token.as_bytes()[..h.len() + 1 + p.len()];
    keys.check(
        &header.alg,
        header.kid.as_deref(),
        signing_input,
        &signature,
    )?;
    let mut claims: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&b64(p, "payload is not base64url")?)
            .map_err(|_| AuthError::Malformed("payload is not a JSON object"))?;
    keys.check_claims(&header.alg, &mut claims)?;
    Ok(claims)
}

fn time_claim(
    claims: &serde_json::Map<String, serde_json::Value>,
    name: &'static str,
) -> Result<Option<u64>, AuthError> {
    match claims.get(name) {
        None => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| AuthError::BadClaims(format!("{name} must be a non-negative integer"))),
    }
}

/// Verifies the MAC, the header and the registered time claims (`exp`
/// required, `nbf`, `iat`) at `now_s` with `leeway_s`; returns every claim.
/// The RFC layer, without Arbor's own claims.
pub fn verify_standard(
    token: &str,
    keys: &(impl KeySet + ?Sized),
    now_s: u64,
    leeway_s: u64,
) -> Result<serde_json::Map<String, serde_json::Value>, AuthError> {
    let claims = verify_signature(token, keys)?;
    let exp = time_claim(&claims, "exp")?
        .ok_or_else(|| AuthError::BadClaims("exp is required".into()))?;
    if now_s > exp.saturating_add(leeway_s) {
        return Err(AuthError::Expired { exp, now: now_s });
    }
    if let Some(nbf) = time_claim(&claims, "nbf")? {
        if now_s.saturating_add(leeway_s) < nbf {
            return Err(AuthError::NotYetValid { nbf, now: now_s });
        }
    }
    if let Some(iat) = time_claim(&claims, "iat")? {
        if now_s.saturating_add(leeway_s) < iat {
            return Err(AuthError::IssuedInFuture { iat, now: now_s });
        }
    }
    Ok(claims)
}

/// Verifies a token and returns Arbor's claims (`sub`, `space`, `role`,
/// optional `rid`, and the time claims).
pub fn verify(
    token: &str,
    keys: &(impl KeySet + ?Sized),
    now_s: u64,
    leeway_s: u64,
) -> Result<Claims, AuthError> {
    let claims = verify_standard(token, keys, now_s, leeway_s)?;
    let claims: Claims = serde_json::from_value(serde_json::Value::Object(claims))
        .map_err(|e| AuthError::BadClaims(e.to_string()))?;
    if let Some(root) = claims.root {
        if root == NodeId::TRASH {
            return Err(AuthError::BadClaims("root cannot be TRASH".into()));
        }
        if !matches!(claims.role, Role::Read | Role::Write) {
            return Err(AuthError::BadClaims(
                "a token with root has role read or write".into(),
            ));
        }
    }
    Ok(claims)
}

/// The `root` claim of `token`, read without checking anything (no key,
/// no expiry): for a client choosing what to replicate (a token limited to
/// a subtree can only follow that subtree). `None` for a token without one
/// or that does not decode. The server checks the token itself.
pub fn unverified_root(token: &str) -> Option<NodeId> {
    let payload = token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    let claims: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&bytes).ok()?;
    claims.get("root")?.as_str()?.parse().ok()
}

/// Mints a token for `claims` (development tooling and tests; production
/// tokens come from the application's auth service with the same secret).
pub fn mint(claims: &Claims, key: &Hs256Key) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    // Serializing plain strings, integers and enums cannot fail.
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap_or_default());
    let mut mac = key.mac();
    mac.update(header.as_bytes());
    mac.update(b".");
    mac.update(payload.as_bytes());
    let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{header}.{payload}.{signature}")
}

impl AuthError {
    /// The wire code of this refusal.
    pub fn code(&self) -> crate::error::ErrorCode {
        use crate::error::ErrorCode;
        match self {
            AuthError::Expired { .. } => ErrorCode::TokenExpired,
            AuthError::NotYetValid { .. } | AuthError::IssuedInFuture { .. } => {
                ErrorCode::TokenNotYetValid
            }
            AuthError::Revoked => ErrorCode::TokenRevoked,
            _ => ErrorCode::BadToken,
        }
    }
}

/// The subprotocol a server selects when the client offered its token as a
/// `bearer.<token>` subprotocol (browsers cannot set headers on a WebSocket).
pub const WS_PROTOCOL: &str = "arbor.v1";

/// Where a request carried its token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenSource {
    /// `Authorization: Bearer <token>`.
    Header,
    /// A `bearer.<token>` entry of `Sec-WebSocket-Protocol`: the answer must
    /// select [`WS_PROTOCOL`].
    Subprotocol,
    /// The `access_token` query parameter.
    Query,
}

/// The token of a request, looked for in this order: the `Authorization`
/// header's bearer token, a `bearer.<token>` entry of the
/// `Sec-WebSocket-Protocol` header, the `access_token` query parameter.
/// The arguments are those three raw values, if present.
pub fn request_token<'a>(
    authorization: Option<&'a str>,
    ws_protocol: Option<&'a str>,
    access_token: Option<&'a str>,
) -> Option<(&'a str, TokenSource)> {
    if let Some(t) = authorization.and_then(|h| h.strip_prefix("Bearer ")) {
        return Some((t.trim(), TokenSource::Header));
    }
    if let Some(t) = ws_protocol.and_then(|p| {
        p.split(',')
            .map(str::trim)
            .find_map(|e| e.strip_prefix("bearer."))
    }) {
        return Some((t, TokenSource::Subprotocol));
    }
    access_token.map(|t| (t, TokenSource::Query))
}

/// What a route needs from the caller's token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Any role.
    Read,
    /// A role that may push (`write`, `admin`, `service`).
    Write,
    /// `admin` or `service`.
    Admin,
    /// `service` only.
    Service,
}

/// A refused authorization: its code and a message for the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Refusal {
    /// The wire code.
    pub code: crate::error::ErrorCode,
    /// Detail for the caller.
    pub message: String,
}

impl Claims {
    /// Claims of `sub` for `space` with `role`, issued at `now_s` and valid
    /// for `ttl_s` seconds; no `rid`, `tenant` or `nbf` (set them with
    /// struct update syntax).
    pub fn new(sub: &str, space: &str, role: Role, now_s: u64, ttl_s: u64) -> Claims {
        Claims {
            sub: sub.into(),
            space: space.into(),
            role,
            rid: None,
            tenant: None,
            exp: now_s.saturating_add(ttl_s),
            nbf: None,
            iat: Some(now_s),
            jti: None,
            root: None,
        }
    }

    /// What per-token limits count the token by: its subject within its
    /// `space` claim (the same on the sync server and the Durable Object).
    pub fn rate_key(&self) -> String {
        format!("{}\u{0}{}", self.space, self.sub)
    }

    /// The tenant the token's spaces count against: its `tenant` claim, or
    /// else its subject.
    pub fn tenant(&self) -> &str {
        self.tenant.as_deref().unwrap_or(&self.sub)
    }

    /// True if the token's `space` claim covers `space`: the same name, a
    /// prefix pattern (`acme.*`) the name starts with, or `*` on a service
    /// token.
    pub fn covers(&self, space: &str) -> bool {
        if self.space == space {
            return true;
        }
        if self.space == "*" {
            return self.role == Role::Service;
        }
        match self.space.strip_suffix('*') {
            Some(prefix) => !prefix.is_empty() && space.starts_with(prefix),
            None => false,
        }
    }
}

/// Checks that verified `claims` cover `space` with a role that meets
/// `need` (the second half of [`authorize`], also used for a request that
/// touches a second space, like a fork's destination).
pub fn check_scope(claims: &Claims, space: &str, need: Need) -> Result<(), Refusal> {
    use crate::error::ErrorCode;
    if !claims.covers(space) {
        return Err(Refusal {
            code: ErrorCode::WrongSpace,
            message: format!("the token is for space {}, not {space}", claims.space),
        });
    }
    let allowed = match need {
        Need::Read => true,
        Need::Write => claims.role.can_write(),
        Need::Admin => claims.role.can_admin(),
        Need::Service => claims.role == Role::Service,
    };
    if !allowed {
        return Err(Refusal {
            code: ErrorCode::Forbidden,
            message: format!("role {:?} may not do this", claims.role),
        });
    }
    Ok(())
}

/// Refuses a token limited to a subtree (a `root` claim) on a route that
/// serves the whole space (a snapshot, an export, catch-up, the live feed).
pub fn check_unscoped(claims: &Claims, what: &str) -> Result<(), Refusal> {
    match claims.root {
        None => Ok(()),
        Some(root) => Err(Refusal {
            code: crate::error::ErrorCode::OutOfScope,
            message: format!(
                "the token is limited to the subtree of {root}: {what} serves the whole space"
            ),
        }),
    }
}

/// The refusal of a node outside a scoped token's subtree (or not stored:
/// the two are not told apart).
pub fn out_of_scope(node: NodeId) -> Refusal {
    Refusal {
        code: crate::error::ErrorCode::OutOfScope,
        message: format!("node {node} is not in the token's subtree"),
    }
}

/// Verifies `token` (if any) at `now_s` with `keys`, refuses it if
/// `revoked` lists it, and checks that it covers `space` (one name, a prefix
/// pattern, or `*` on a service token) with a role that meets `need`. The
/// one authorization rule of the sync server and the Worker.
pub fn authorize(
    token: Option<&str>,
    keys: &(impl KeySet + ?Sized),
    revoked: &Revocations,
    now_s: u64,
    leeway_s: u64,
    space: &str,
    need: Need,
) -> Result<Claims, Refusal> {
    use crate::error::ErrorCode;
    let token = token.ok_or_else(|| Refusal {
        code: ErrorCode::MissingToken,
        message: "send Authorization: Bearer <token>".into(),
    })?;
    let claims = verify(token.trim(), keys, now_s, leeway_s).map_err(|e| Refusal {
        code: e.code(),
        message: e.to_string(),
    })?;
    if revoked.revokes(&claims) {
        return Err(Refusal {
            code: AuthError::Revoked.code(),
            message: AuthError::Revoked.to_string(),
        });
    }
    check_scope(&claims, space, need)?;
    Ok(claims)
}
