//! `/livez` and `/readyz` (also on the admin listener).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use arbor_shared::ErrorCode;
use axum::extract::State;

use super::{ApiError, AppState};
use crate::db::DbError;

pub(super) async fn livez() -> &'static str {
    "ok"
}

pub(super) async fn readyz(State(state): State<Arc<AppState>>) -> Result<&'static str, ApiError> {
    if state.draining.load(Ordering::Relaxed) {
        return Err(ApiError::new(ErrorCode::Draining, "shutting down"));
    }
    let client = state.db.client().await.map_err(ApiError::from)?;
    client
        .simple_query("SELECT 1")
        .await
        .map_err(|e| ApiError::from(DbError::Postgres(e)))?;
    Ok("ready")
}
