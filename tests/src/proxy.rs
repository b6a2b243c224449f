//! A TCP proxy that injects network faults between clients and the server:
//! partitions (refuse new connections and cut open ones), cuts, added
//! delay, and silent drops (stop forwarding without closing).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Shared switches; every connection task watches them.
#[derive(Debug, Default)]
struct Switches {
    /// New connections are refused and open ones cut while set.
    partitioned: AtomicBool,
    /// Bytes are held instead of forwarded while set (a black hole: the
    /// peers see a silent connection).
    dropping: AtomicBool,
    /// Added delay per forwarded chunk, milliseconds.
    delay_ms: AtomicU64,
    /// Connections accepted.
    accepted: AtomicU64,
}

/// A running proxy from a local port to `upstream`.
#[derive(Debug, Clone)]
pub struct FaultProxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    switches: Arc<Switches>,
    /// Bumped to cut every open connection.
    cut: watch::Sender<u64>,
}

impl FaultProxy {
    /// Starts a proxy on 127.0.0.1 (a free port) to `upstream`.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<FaultProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let switches = Arc::new(Switches::default());
        let (cut, _) = watch::channel(0u64);
        let proxy = FaultProxy {
            addr,
            switches: switches.clone(),
            cut: cut.clone(),
        };
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                if switches.partitioned.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                switches.accepted.fetch_add(1, Ordering::Relaxed);
                let _ = client.set_nodelay(true);
                let switches = switches.clone();
                let mut cut_rx = cut.subscribe();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let _ = server.set_nodelay(true);
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    tokio::select! {
                        () = pipe(cr, sw, switches.clone()) => {}
                        () = pipe(sr, cw, switches.clone()) => {}
                        _ = cut_rx.changed() => {}
                    }
                });
            }
        });
        Ok(proxy)
    }

    /// The base URL clients use (`http://addr`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Partitions (refuses and cuts) or heals.
    pub fn partition(&self, on: bool) {
        self.switches.partitioned.store(on, Ordering::SeqCst);
        if on {
            self.cut_all();
        }
    }

    /// Cuts every open connection (new ones are accepted).
    pub fn cut_all(&self) {
        self.cut.send_modify(|n| *n += 1);
    }

    /// Holds bytes instead of forwarding them (or resumes).
    pub fn drop_traffic(&self, on: bool) {
        self.switches.dropping.store(on, Ordering::SeqCst);
    }

    /// Adds `ms` of delay to every forwarded chunk.
    pub fn delay(&self, ms: u64) {
        self.switches.delay_ms.store(ms, Ordering::SeqCst);
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.switches.accepted.load(Ordering::Relaxed)
    }
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    switches: Arc<Switches>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        loop {
            if switches.partitioned.load(Ordering::SeqCst) {
                return;
            }
            if !switches.dropping.load(Ordering::SeqCst) {
                break;
            }
            // A black hole holds the bytes until it is lifted.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let delay = switches.delay_ms.load(Ordering::Relaxed);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
