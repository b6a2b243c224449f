//! The fault proxy itself: it forwards, adds delay, holds bytes while
//! dropping (then delivers them), cuts open connections, and refuses new
//! ones while partitioned.

use std::time::{Duration, Instant};

use arbor_e2e::proxy::FaultProxy;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

/// An echo server.
async fn echo() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

async fn round_trip(s: &mut TcpStream) -> Option<Duration> {
    let t = Instant::now();
    s.write_all(b"ping").await.ok()?;
    let mut buf = [0u8; 4];
    match tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut buf)).await {
        Ok(Ok(_)) if &buf == b"ping" => Some(t.elapsed()),
        _ => None,
    }
}

#[tokio::test]
async fn the_proxy_delays_drops_cuts_and_partitions_on_command() {
    let proxy = FaultProxy::start(echo().await).await.unwrap();
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    assert!(round_trip(&mut s).await.is_some());

    proxy.delay(100);
    let slow = round_trip(&mut s).await.unwrap();
    assert!(slow >= Duration::from_millis(200), "{slow:?}");
    proxy.delay(0);

    // Dropping holds the bytes (no answer) until it is lifted.
    proxy.drop_traffic(true);
    s.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    assert!(
        tokio::time::timeout(Duration::from_millis(300), s.read_exact(&mut buf))
            .await
            .is_err()
    );
    proxy.drop_traffic(false);
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"ping");

    // A cut closes open connections; new ones work.
    proxy.cut_all();
    let mut buf = [0u8; 1];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0, "the cut connection reads EOF");
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    assert!(round_trip(&mut s).await.is_some());

    // A partition cuts and refuses until healed.
    proxy.partition(true);
    let mut t = TcpStream::connect(proxy.addr).await.unwrap();
    assert!(round_trip(&mut t).await.is_none());
    proxy.partition(false);
    let mut t = TcpStream::connect(proxy.addr).await.unwrap();
    assert!(round_trip(&mut t).await.is_some());
    assert!(proxy.accepted() >= 3);
}
