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
/// Replica image builds, by `outcome` (`built`, `failed`).
pub const IMAGE_BUILDS: &str = "arbor_image_builds_total";
/// Time to build a replica image, seconds.
pub const IMAGE_BUILD_SECONDS: &str = "arbor_image_build_seconds";
/// Replica images sent.
pub const IMAGES_SENT: &str = "arbor_images_sent_total";
/// Snapshot bytes streamed.
pub const SNAPSHOT_BYTES: &str = "arbor_snapshot_bytes_total";
/// Streams dropped because their reader (or writer) stalled.
pub const STREAMS_STALLED: &str = "arbor_streams_stalled_total";
/// Requests and frames refused by a limit, by `code`.
pub const LIMITED: &str = "arbor_limited_total";
/// Reads (snapshots, exports, children, catch-up) by `source`: `primary`
/// or `standby`.
pub const READS: &str = "arbor_reads_total";
/// A standby's lag behind the primary in seconds, by `standby` (its index
/// among the `--read-replica-url` flags); -1 while it is not usable.
pub const STANDBY_LAG: &str = "arbor_standby_lag_seconds";
/// Key reloads (JWKS, revocation list) that failed, by `what` (`jwks`,
/// `revocations`).
pub const RELOAD_FAILED: &str = "arbor_key_reload_failed_total";
/// HTTP requests, by `route` (the route's template, or `unmatched`),
/// `method` and `status`.
pub const HTTP_REQUESTS: &str = "arbor_http_requests_total";
/// Time to a response's head, seconds, by `route` and `method`.
pub const HTTP_SECONDS: &str = "arbor_http_request_seconds";
/// Time a request waited for a pooled connection, seconds, by `pool`
/// (`primary`, `standby0`, ...).
pub const POOL_WAIT_SECONDS: &str = "arbor_db_pool_wait_seconds";
/// Pooled connections in use, by `pool`.
pub const POOL_IN_USE: &str = "arbor_db_pool_in_use";
/// Pooled connections open, by `pool`.
pub const POOL_OPEN: &str = "arbor_db_pool_open";
/// Requests waiting for a pooled connection, by `pool`.
pub const POOL_WAITING: &str = "arbor_db_pool_waiting";
/// Snapshot streams (snapshots, subtree snapshots, exports) finished, by
/// `scope` (`space`, `subtree`, `export`) and `outcome` (`done`, `cut`).
pub const SNAPSHOTS: &str = "arbor_snapshots_total";
/// Time a snapshot stream took from its first byte to its last, seconds,
/// by `scope`.
pub const SNAPSHOT_SECONDS: &str = "arbor_snapshot_seconds";
/// Time from a commit's answer to its ops queued on every socket of the
/// room, seconds, by `tier` (`native`).
pub const FANOUT_SECONDS: &str = "arbor_fanout_seconds";
/// Time each push held the database (its own statements), seconds: the
/// undo and redo an old-stamped move causes shows here.
pub const PUSH_DB_SECONDS: &str = "arbor_push_db_seconds";
/// Open realtime sockets, by `tier` (`native`; the edge tier's client
/// sockets are the Durable Objects', counted by Cloudflare).
pub const SOCKETS_ACTIVE: &str = "arbor_sockets_active";
/// Open upstream links of Durable Objects (one per object with clients).
pub const EDGE_LINKS: &str = "arbor_edge_links_active";
/// Scheduled backup runs, by `outcome`: `ok`, `failed` (the bucket or the
/// database failed; the next interval tries again), `skipped` (another
/// process held the run lock).
pub const BACKUP_RUNS: &str = "arbor_backup_runs_total";
/// Spaces uploaded by backup runs.
pub const BACKUP_SPACES: &str = "arbor_backup_spaces_total";
/// Export bytes uploaded by backup runs.
pub const BACKUP_BYTES: &str = "arbor_backup_bytes_total";
/// When the last scheduled backup run succeeded, seconds since the epoch.
pub const BACKUP_LAST_SUCCESS: &str = "arbor_backup_last_success_timestamp_seconds";

/// Buckets of every histogram (all are in seconds): 0.5 ms to a minute.
const SECONDS_BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide recorder once; `None` if another recorder was
/// installed first (metrics then go there).
pub fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            // Histograms with fixed buckets (not summaries): they add up
            // across processes, so a fleet's p99 can be computed.
            let builder = PrometheusBuilder::new();
            let builder = match builder.set_buckets(&SECONDS_BUCKETS) {
                Ok(b) => b,
                Err(_) => PrometheusBuilder::new(),
            };
            let recorder = builder.build_recorder();
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
