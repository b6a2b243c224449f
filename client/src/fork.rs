//! Fork: the replica's state uploaded as a new thoughtspace (`POST /v1/spaces/{new}/import`), streamed as it is encoded.

use arbor_shared::error::ErrorBody;

use crate::sync::{SharedReplica, SyncError};

fn lock(r: &SharedReplica) -> std::sync::MutexGuard<'_, crate::Replica> {
    r.lock().unwrap_or_else(|p| p.into_inner())
}

fn transient(e: impl std::fmt::Display) -> SyncError {
    SyncError::Transient(e.to_string())
}

/// Creates the thoughtspace `new_space` on the server from the replica's
/// state (`POST /v1/spaces/{new_space}/import`, an admin token for the new
/// name). The replica is encoded on a blocking thread while the upload
/// streams it through a bounded channel, so memory stays flat.
pub async fn fork(
    replica: SharedReplica,
    server: &str,
    new_space: &str,
    token: &str,
) -> Result<(), SyncError> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<std::io::Result<Vec<u8>>>(16);
    let name = new_space.to_string();
    let writer = tokio::task::spawn_blocking(move || {
        let r = lock(&replica);
        crate::snapshot::write_snapshot(&r, &name, |chunk| {
            tx.blocking_send(Ok(chunk))
                .map_err(|_| std::io::Error::other("the upload ended"))
        })
    });
    let body = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let response = reqwest::Client::new()
        .post(format!(
            "{}/v1/spaces/{new_space}/import",
            server.trim_end_matches('/')
        ))
        .bearer_auth(token)
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await;
    let written = writer.await.map_err(transient)?;
    let response = response.map_err(transient)?;
    let status = response.status();
    if !status.is_success() {
        let text = response.text().await.unwrap_or_default();
        let retry = match serde_json::from_str::<ErrorBody>(&text) {
            Ok(b) => b.error.code.disposition() == arbor_shared::Disposition::Retry,
            Err(_) => !status.is_client_error(),
        };
        return Err(if retry {
            transient(format!("fork: {status} {text}"))
        } else {
            SyncError::Refused(format!("fork: {status} {text}"))
        });
    }
    written?;
    Ok(())
}
