//! HS256 tokens for tests and benchmarks, issued now and signed with a test secret.

// A secret too short for a key is a broken test: failing at once is right.
#![allow(clippy::expect_used)]

use arbor_shared::auth::{Claims, Hs256Key, Role, mint};

/// The key of `secret` (at least 32 bytes).
pub fn key(secret: &[u8]) -> Hs256Key {
    Hs256Key::new(secret).expect("a test secret of at least 32 bytes")
}

/// Claims of `sub` for `space` with `role`, issued now and valid for
/// `ttl_s` seconds (set `rid`, `tenant`, ... with struct update syntax).
pub fn claims(sub: &str, space: &str, role: Role, ttl_s: u64) -> Claims {
    Claims::new(sub, space, role, crate::env::now_s(), ttl_s)
}

/// `claims` signed with `secret`.
pub fn mint_with(secret: &[u8], claims: &Claims) -> String {
    mint(claims, &key(secret))
}

/// A token of `sub` for `space` with `role`, issued now, valid for `ttl_s`
/// seconds, signed with `secret`.
pub fn token(secret: &[u8], sub: &str, space: &str, role: Role, ttl_s: u64) -> String {
    mint_with(secret, &claims(sub, space, role, ttl_s))
}
