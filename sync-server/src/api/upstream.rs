//! The upstream socket (`GET .../upstream`, service tokens): the Durable Object's persistent link for group commits, one frame each way per group.

use std::sync::Arc;

use arbor_shared::auth::Need;
use arbor_shared::error::ErrorDetail;
use arbor_shared::http::UpstreamMsg;
use arbor_shared::{ErrorCode, protocol::MAX_FRAME_BYTES};
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;

use super::auth::authorize;
use super::ops::commit_group;
use super::{ApiError, AppState};

pub(super) async fn upstream(
    State(state): State<Arc<AppState>>,
    Path(space): Path<String>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, &space, Need::Service)?;
    if state.db.space(&space).await?.is_none() {
        return Err(ApiError::new(
            ErrorCode::UnknownSpace,
            format!("unknown_space: {space}"),
        ));
    }
    // A group is at most 10,000 ops of at most 64 KiB values: far more than
    // a realtime frame, as a group ingest body may be.
    let ws = ws
        .max_message_size(64 * MAX_FRAME_BYTES)
        .max_frame_size(64 * MAX_FRAME_BYTES);
    Ok(ws.on_upgrade(move |socket| serve(state, space, socket)))
}

/// Commits each group as it arrives, in order, and answers it. The object
/// waits for one answer before it sends the next group.
async fn serve(state: Arc<AppState>, space: String, mut socket: WebSocket) {
    metrics::gauge!(crate::metrics::EDGE_LINKS).increment(1.0);
    serve_frames(&state, &space, &mut socket).await;
    metrics::gauge!(crate::metrics::EDGE_LINKS).decrement(1.0);
}

async fn serve_frames(state: &AppState, space: &str, socket: &mut WebSocket) {
    while let Some(Ok(message)) = socket.recv().await {
        let Message::Text(text) = message else {
            continue;
        };
        let answer = match serde_json::from_str::<UpstreamMsg>(text.as_str()) {
            Ok(UpstreamMsg::Commit { id, pushes }) => {
                // Commit notices wait for this answer (they are most likely
                // this commit's, which the object gets here).
                let _busy = state.forwarder.as_ref().map(|f| f.edge_commit(space));
                match commit_group(state, space, pushes).await {
                    Ok(results) => {
                        // The object sees these seqs in this answer: no
                        // need to forward their commit notices to it.
                        let head = results
                            .iter()
                            .flat_map(|r| r.ops.iter().flatten())
                            .map(|c| c.seq)
                            .max();
                        if let (Some(f), Some(head)) = (&state.forwarder, head) {
                            f.edge_committed(space, head);
                        }
                        UpstreamMsg::Committed { id, results }
                    }
                    Err(e) => UpstreamMsg::Refused {
                        id,
                        error: e.into_detail(),
                    },
                }
            }
            Ok(_) | Err(_) => UpstreamMsg::Refused {
                id: 0,
                error: ErrorDetail {
                    code: ErrorCode::Malformed,
                    message: "expected a commit frame".into(),
                },
            },
        };
        let Ok(text) = serde_json::to_string(&answer) else {
            break;
        };
        if socket.send(Message::Text(text.into())).await.is_err() {
            break;
        }
    }
}
