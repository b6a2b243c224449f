//! [`ApiError`]: an HTTP refusal with its code's status, and what a database error becomes on the wire.

use arbor_shared::ErrorCode;
use arbor_shared::error::ErrorBody;
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::db::{DbError, RejectCode};

/// An API error: a code (its HTTP status comes from the code's table entry)
/// and a message for the caller.
#[derive(Debug)]
pub struct ApiError {
    code: ErrorCode,
    message: String,
    /// Sent as `Retry-After` (whole seconds, rounded up).
    retry_after: Option<std::time::Duration>,
}

impl ApiError {
    /// A refusal with `code`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// A refusal by a limit, with the wait it asks for.
    pub fn limited(refused: crate::limits::Refused) -> ApiError {
        metrics::counter!(crate::metrics::LIMITED, "code" => refused.code.as_str()).increment(1);
        ApiError {
            code: refused.code,
            message: refused.message,
            retry_after: Some(refused.retry_after),
        }
    }

    /// The code.
    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// The code and message, as an error body carries them.
    pub fn into_detail(self) -> arbor_shared::error::ErrorDetail {
        arbor_shared::error::ErrorDetail {
            code: self.code,
            message: self.message,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, Json(ErrorBody::new(self.code, self.message))).into_response();
        if let Some(wait) = self.retry_after {
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.max(1).into());
        }
        response
    }
}

impl From<arbor_shared::auth::Refusal> for ApiError {
    fn from(r: arbor_shared::auth::Refusal) -> ApiError {
        ApiError::new(r.code, r.message)
    }
}

/// The wire code of a refusal by `apply_ops` (the SQLSTATEs of
/// `migrations/README.md`).
fn reject_code(code: RejectCode) -> ErrorCode {
    match code {
        RejectCode::ReservedNode => ErrorCode::ReservedNode,
        RejectCode::BadKey => ErrorCode::BadKey,
        RejectCode::BadField => ErrorCode::BadField,
        RejectCode::ValueTooLong => ErrorCode::ValueTooLong,
        RejectCode::Stale => ErrorCode::Stale,
        RejectCode::ClockAhead => ErrorCode::ClockAhead,
        RejectCode::WrongReplica => ErrorCode::WrongReplica,
        RejectCode::UnknownNode => ErrorCode::UnknownNode,
        RejectCode::StampConflict => ErrorCode::StampConflict,
        RejectCode::UnknownSpace => ErrorCode::UnknownSpace,
        RejectCode::BadBatch => ErrorCode::BadBatch,
        RejectCode::SpaceExists => ErrorCode::SpaceExists,
        RejectCode::BadImport => ErrorCode::BadImport,
        RejectCode::QuotaExceeded => ErrorCode::QuotaExceeded,
        RejectCode::OutOfScope => ErrorCode::OutOfScope,
    }
}

/// What a database error becomes on the wire: its code and a message. A
/// refusal keeps the message of our own apply function (it names the
/// offending op); any other failure is logged here and answered with a
/// fixed text, so no response carries Postgres's own words.
pub fn db_refusal(e: &DbError) -> (ErrorCode, String) {
    match e {
        DbError::Rejected { code, message } => (reject_code(*code), message.clone()),
        DbError::Pool(_) | DbError::Postgres(_) | DbError::GroupFailed(_) => {
            tracing::warn!(error = %e, "database unavailable");
            (
                ErrorCode::Unavailable,
                "the database is unavailable; retry".into(),
            )
        }
        DbError::Migration(_) | DbError::BadRow(_) | DbError::Corrupt(_) | DbError::Tls(_) => {
            tracing::error!(error = %e, "internal error");
            (ErrorCode::Internal, "internal error".into())
        }
    }
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> ApiError {
        let (code, message) = db_refusal(&e);
        ApiError::new(code, message)
    }
}

/// Answer of a path no route serves.
pub(super) async fn not_found() -> ApiError {
    super::request_metrics::unmatched(404);
    ApiError::new(ErrorCode::NotFound, "no such route")
}

/// Answer of a route asked with a method it does not serve.
pub(super) async fn method_not_allowed() -> ApiError {
    super::request_metrics::unmatched(405);
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        "the route does not take this method",
    )
}
