//! The HTTP accept loop: a deadline for request headers, a cap on connections per client address, `TCP_NODELAY`, and the graceful drain.
//!
//! Ours rather than `axum::serve` because that one sets no header-read
//! timeout (hyper has one only with a timer, which `axum::serve` does not
//! give it) and no per-address cap: a client that opens sockets and sends
//! nothing would hold them for ever.

use std::net::IpAddr;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::limits::{ConnHold, Counter};

/// Serves `app` on `listener` until `stop` turns true; then stops
/// accepting, asks every connection to finish its request and close, and
/// waits for them up to `drain`.
pub async fn serve_http(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    header_read_timeout: Duration,
    max_per_addr: usize,
    mut stop: watch::Receiver<bool>,
    drain: Duration,
) -> std::io::Result<()> {
    let per_addr = std::sync::Arc::new(Counter::new(max_per_addr));
    let mut conns = JoinSet::new();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and the like: back off a moment, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stopped(&mut stop) => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
        };
        let Some(held) = per_addr.try_hold(&addr_key(peer.ip())) else {
            metrics::counter!(crate::metrics::LIMITED, "code" => "connections_per_addr")
                .increment(1);
            tracing::debug!(%peer, "refused: too many connections from this address");
            continue;
        };
        // Realtime frames are small and latency-bound: no Nagle delay.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY failed");
        }
        // The connection's share stays held by a WebSocket it upgrades to
        // (the handler keeps this extension), so sockets count too.
        let hold = ConnHold(std::sync::Arc::new(held));
        let service = TowerToHyperService::new(app.clone().layer(axum::Extension(hold)));
        let mut stop = stop.clone();
        conns.spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(header_read_timeout);
            let conn = builder
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        tracing::trace!(error = %e, "connection ended");
                    }
                    return;
                }
                () = stopped(&mut stop) => conn.as_mut().graceful_shutdown(),
            }
            let _ = conn.await;
        });
    }
    drop(listener);
    let all_closed = async { while conns.join_next().await.is_some() {} };
    if tokio::time::timeout(drain, all_closed).await.is_err() {
        tracing::warn!("drain deadline passed: closing with requests in flight");
        conns.abort_all();
    }
    Ok(())
}

/// Resolves once `stop` is true (the value's guard is not held across an
/// await, so the futures stay `Send`).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// The address a cap counts: IPv6 clients by their /64 (one host usually
/// holds a whole /64), IPv4 by the address.
fn addr_key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
    }
}
