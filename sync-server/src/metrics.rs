//! Prometheus metrics (`metrics` facade, rendered by
//! `metrics-exporter-prometheus` on the admin listener's `/metrics`).

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Ops committed by ingest (new ops and restores).
pub const OPS_APPLIED: &str = "arbor_ops_applied_total";
/// Pushes refused, by `code`.
pub const OPS_REJECTED: &str = "arbor_ops_rejected_total";
/// Time to commit one batch, seconds.
pub const INGEST_SECONDS: &str = "arbor_ingest_seconds";
/// Snapshot bytes streamed.
pub const SNAPSHOT_BYTES: &str = "arbor_snapshot_bytes_total";
/// Streams dropped because their reader (or writer) stalled.
pub const STREAMS_STALLED: &str = "arbor_streams_stalled_total";
/// Requests and frames refused by a limit, by `code`.
pub const LIMITED: &str = "arbor_limited_total";
/// Open realtime sockets.
pub const SOCKETS_ACTIVE: &str = "arbor_sockets_active";

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide recorder once; `None` if another recorder was
/// installed first (metrics then go there).
pub fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok().map(|()| handle)
        })
        .as_ref()
}

/// Records one ingest's outcome.
pub fn ingest(result: Result<u64, arbor_shared::ErrorCode>, seconds: f64) {
    match result {
        Ok(applied) => {
            metrics::counter!(OPS_APPLIED).increment(applied);
            metrics::histogram!(INGEST_SECONDS).record(seconds);
        }
        Err(code) => metrics::counter!(OPS_REJECTED, "code" => code.as_str()).increment(1),
    }
}
