//! A round-robin TCP load balancer for tests: new connections go to the next backend not marked down, one whose connect fails is skipped (a passive health check), and backends can be marked down or up (an active one) or added.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

/// How long a backend has to accept a connection before it is skipped.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Debug)]
struct Backend {
    addr: SocketAddr,
    /// Marked down: no new connections (open ones stay, as in nginx).
    down: AtomicBool,
    /// Connections forwarded to it.
    forwarded: AtomicU64,
    /// Connections forwarded to it and still open.
    open: AtomicU64,
    /// Connects to it that failed (it was skipped).
    failed: AtomicU64,
}

#[derive(Debug, Default)]
struct Shared {
    backends: RwLock<Vec<Arc<Backend>>>,
    /// Connections forwarded so far: the round-robin position.
    next: AtomicUsize,
    /// Client connections dropped because no backend took them.
    refused: AtomicU64,
}

/// One backend as [`Balancer::report`] sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendReport {
    /// Its address.
    pub addr: SocketAddr,
    /// Marked down.
    pub down: bool,
    /// Connections forwarded to it.
    pub forwarded: u64,
    /// Of those, still open.
    pub open: u64,
    /// Connects that failed, so the connection went to the next backend.
    pub failed: u64,
}

/// A running balancer; clones share it.
#[derive(Debug, Clone)]
pub struct Balancer {
    /// Where clients connect.
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

impl Balancer {
    /// Starts a balancer on 127.0.0.1 (a free port) in front of `backends`
    /// (their indexes are their order here, then the order of [`add`]).
    ///
    /// [`add`]: Balancer::add
    pub async fn start(backends: &[SocketAddr]) -> std::io::Result<Balancer> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let balancer = Balancer {
            addr: listener.local_addr()?,
            shared: Arc::default(),
        };
        for &b in backends {
            balancer.add(b);
        }
        let shared = balancer.shared.clone();
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(forward(shared.clone(), client));
            }
        });
        Ok(balancer)
    }

    /// The base URL clients use (`http://addr`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Adds a backend (up); returns its index.
    pub fn add(&self, addr: SocketAddr) -> usize {
        let mut backends = self
            .shared
            .backends
            .write()
            .unwrap_or_else(|p| p.into_inner());
        backends.push(Arc::new(Backend {
            addr,
            down: AtomicBool::new(false),
            forwarded: AtomicU64::new(0),
            open: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        }));
        backends.len() - 1
    }

    /// Marks backend `i` down (no new connections) or up again.
    pub fn set_down(&self, i: usize, down: bool) {
        if let Some(b) = self.backend(i) {
            b.down.store(down, Ordering::SeqCst);
        }
    }

    /// Whether backend `i` is marked down (false for an unknown index).
    pub fn is_down(&self, i: usize) -> bool {
        self.backend(i)
            .is_some_and(|b| b.down.load(Ordering::SeqCst))
    }

    /// Every backend, in index order.
    pub fn report(&self) -> Vec<BackendReport> {
        self.shared
            .backends
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|b| BackendReport {
                addr: b.addr,
                down: b.down.load(Ordering::SeqCst),
                forwarded: b.forwarded.load(Ordering::Relaxed),
                open: b.open.load(Ordering::Relaxed),
                failed: b.failed.load(Ordering::Relaxed),
            })
            .collect()
    }

    /// Starts an active health check of backend `i`: `GET {path}` on
    /// `probe` (its admin listener, say) every `every`; a 200 marks it up,
    /// two failures in a row (an error status, a refused connection, no
    /// answer within a second) mark it down. Runs as long as the runtime.
    pub fn check(&self, i: usize, probe: SocketAddr, path: &str, every: Duration) {
        let (balancer, path) = (self.clone(), path.to_string());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut failures = 0;
            loop {
                tick.tick().await;
                if http_status(probe, &path).await == Some(200) {
                    failures = 0;
                    balancer.set_down(i, false);
                } else {
                    failures += 1;
                    if failures >= 2 {
                        balancer.set_down(i, true);
                    }
                }
            }
        });
    }

    /// Client connections dropped because no backend took them.
    pub fn refused(&self) -> u64 {
        self.shared.refused.load(Ordering::Relaxed)
    }

    fn backend(&self, i: usize) -> Option<Arc<Backend>> {
        self.shared
            .backends
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(i)
            .cloned()
    }
}

/// Connects `client` to the next backend that is up and accepts, then
/// copies both ways until both sides are done (a half-close is passed on);
/// drops `client` if no backend accepts.
async fn forward(shared: Arc<Shared>, mut client: TcpStream) {
    let _ = client.set_nodelay(true);
    // Round robin over the backends that are up, so a down one's share
    // spreads evenly; a failed connect moves on to the next.
    let up: Vec<Arc<Backend>> = shared
        .backends
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .filter(|b| !b.down.load(Ordering::SeqCst))
        .cloned()
        .collect();
    let n = up.len();
    let start = shared.next.fetch_add(1, Ordering::Relaxed);
    for k in 0..n {
        let b = &up[(start + k) % n];
        let connected = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(b.addr)).await;
        let Ok(Ok(mut server)) = connected else {
            b.failed.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let _ = server.set_nodelay(true);
        b.forwarded.fetch_add(1, Ordering::Relaxed);
        b.open.fetch_add(1, Ordering::Relaxed);
        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
        b.open.fetch_sub(1, Ordering::Relaxed);
        return;
    }
    shared.refused.fetch_add(1, Ordering::Relaxed);
}

/// The status of `GET path` on `addr` (HTTP/1.1, the connection closed
/// after), or `None` if there is none within a second.
pub async fn http_status(addr: SocketAddr, path: &str) -> Option<u16> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let exchange = async {
        let mut s = TcpStream::connect(addr).await.ok()?;
        let request = format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n");
        s.write_all(request.as_bytes()).await.ok()?;
        // "HTTP/1.1 200"
        let mut head = [0u8; 12];
        s.read_exact(&mut head).await.ok()?;
        std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
    };
    tokio::time::timeout(Duration::from_secs(1), exchange)
        .await
        .ok()
        .flatten()
}
