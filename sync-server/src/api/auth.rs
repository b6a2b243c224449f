//! The bearer token of a request, verified and checked for a space and a role (the rule itself is `arbor_shared::auth::authorize`).

use arbor_shared::auth::{self, Claims, Need};
use axum::http::{HeaderMap, header};

use super::{ApiError, AppState};

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Refuses a thoughtspace name that breaks the naming rule (before it
/// reaches the database: a NUL byte, say, is refused there with an error
/// that is not the caller's to read).
pub(super) fn check_space_name(space: &str) -> Result<(), ApiError> {
    if arbor_shared::id::valid_space_name(space) {
        Ok(())
    } else {
        Err(ApiError::new(
            arbor_shared::ErrorCode::BadRequest,
            "a thoughtspace name is 1 to 64 ASCII letters, digits, '_', '.' or '-'",
        ))
    }
}

/// Verifies the `Authorization: Bearer` token and its scope for `space`
/// and `need`.
pub(super) fn authorize(
    state: &AppState,
    headers: &HeaderMap,
    space: &str,
    need: Need,
) -> Result<Claims, ApiError> {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let token = auth::request_token(authorization, None, None).map(|(t, _)| t);
    authorize_token(state, token, space, need)
}

/// [`authorize`] for a token found anywhere (header, subprotocol, query).
pub(super) fn authorize_token(
    state: &AppState,
    token: Option<&str>,
    space: &str,
    need: Need,
) -> Result<Claims, ApiError> {
    check_space_name(space)?;
    let claims = auth::authorize(
        token,
        &state.keys.keys(),
        &state.keys.revoked(),
        now_s(),
        state.leeway_s,
        space,
        need,
    )?;
    // The service tokens of the Durable Object and of other servers carry
    // many clients' traffic: they are not rate-limited per token.
    if claims.role != arbor_shared::auth::Role::Service
        && let Err(wait) = state
            .requests
            .take(&token_key(&claims), std::time::Instant::now())
    {
        return Err(ApiError::limited(crate::limits::Refused {
            code: arbor_shared::ErrorCode::RateLimited,
            message: "too many requests for this token".into(),
            retry_after: wait,
        }));
    }
    Ok(claims)
}

/// The key limits count a token by: its subject in its space.
pub fn token_key(claims: &Claims) -> String {
    claims.rate_key()
}

/// The owner a space created with `claims` counts against.
pub(super) fn owner<'a>(state: &AppState, claims: &'a Claims) -> crate::db::Owner<'a> {
    crate::db::Owner {
        tenant: claims.tenant(),
        max_spaces: state.max_spaces_per_tenant,
    }
}
