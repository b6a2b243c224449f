//! HTTP request metrics by route template, method and status (`arbor_http_requests_total`, `arbor_http_request_seconds`) and the request's span: labels from the route table, never from the path.

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;

use crate::metrics::{HTTP_REQUESTS, HTTP_SECONDS};

/// Counts and times one matched request. The `route` label is the route's
/// template (`/v1/spaces/{space}/ops`), so its values are the route table's,
/// whatever spaces and nodes the paths name.
pub(super) async fn record(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = request.method().as_str().to_string();
    let started = std::time::Instant::now();
    let span = tracing::info_span!(
        "http_request",
        route = %route,
        method = %method,
        status = tracing::field::Empty
    );
    let response = tracing::Instrument::instrument(next.run(request), span.clone()).await;
    span.record("status", response.status().as_u16());
    // Time to the response head: a streamed body (snapshots) is measured
    // by its own metrics.
    metrics::histogram!(HTTP_SECONDS, "route" => route.clone(), "method" => method.clone())
        .record(started.elapsed().as_secs_f64());
    metrics::counter!(
        HTTP_REQUESTS,
        "route" => route,
        "method" => method,
        "status" => response.status().as_str().to_string()
    )
    .increment(1);
    response
}

/// Counts a request no route matched (its path is not a label).
pub(super) fn unmatched(status: u16) {
    metrics::counter!(
        HTTP_REQUESTS,
        "route" => "unmatched",
        "method" => "any",
        "status" => status.to_string()
    )
    .increment(1);
}
