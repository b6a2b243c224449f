//! The realtime upgrade (`GET .../ws`): the token is checked before the socket is accepted, then `realtime` serves it.

use std::sync::Arc;

use arbor_shared::ErrorCode;
use arbor_shared::auth::{self, Need, TokenSource, WS_PROTOCOL};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, header};
use axum::response::Response;
use serde::Deserialize;

use super::auth::authorize_token;
use super::{ApiError, AppState};

/// Query of the WebSocket upgrade (browsers cannot set headers).
#[derive(Debug, Deserialize)]
pub(super) struct WsQuery {
    /// The token, when neither the header nor a subprotocol carries it.
    access_token: Option<String>,
}

pub(super) async fn websocket(
    State(state): State<Arc<AppState>>,
    Path(space): Path<String>,
    headers: HeaderMap,
    query: Result<Query<WsQuery>, QueryRejection>,
    conn: Option<axum::Extension<crate::limits::ConnHold>>,
    ws: axum::extract::ws::WebSocketUpgrade,
) -> Result<Response, ApiError> {
    // The token is checked before the upgrade: a bad one gets 401/403.
    let header_text = |name| headers.get(name).and_then(|v| v.to_str().ok());
    let query = query.ok().and_then(|Query(q)| q.access_token);
    let found = auth::request_token(
        header_text(header::AUTHORIZATION),
        header_text(header::SEC_WEBSOCKET_PROTOCOL),
        query.as_deref(),
    );
    let claims = authorize_token(&state, found.map(|(t, _)| t), &space, Need::Read)?;
    if state.db.space(&space).await?.is_none() {
        return Err(ApiError::new(
            ErrorCode::UnknownSpace,
            format!("unknown_space: {space}"),
        ));
    }
    // The transport reads up to twice the protocol limit so a frame just
    // over it reaches the room, which answers `frame_too_large` and closes
    // 1009; anything larger fails in the transport (also closed 1009).
    let ws = ws
        .max_message_size(2 * arbor_shared::protocol::MAX_FRAME_BYTES)
        .max_frame_size(2 * arbor_shared::protocol::MAX_FRAME_BYTES);
    let ws = if found.is_some_and(|(_, source)| source == TokenSource::Subprotocol) {
        ws.protocols([WS_PROTOCOL])
    } else {
        ws
    };
    let Some(token_hold) = state.rooms.hold_socket(&claims) else {
        return Err(ApiError::limited(crate::limits::Refused {
            code: ErrorCode::RateLimited,
            message: "too many sockets open for this token".into(),
            retry_after: std::time::Duration::from_secs(5),
        }));
    };
    let rooms = state.rooms.clone();
    let holds = (token_hold, conn.map(|axum::Extension(c)| c));
    Ok(ws.on_upgrade(move |socket| rooms.serve(space, claims, socket, holds)))
}
