//! Clients that stall a server: HTTP/1.1 requests that send their head (and the start of a body) and then nothing.

use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;

/// A `GET` of `path` on `host` with a bearer `token`, whose answer is never
/// read.
pub async fn download(host: &str, path: &str, token: &str) -> std::io::Result<TcpStream> {
    let head =
        format!("GET {path} HTTP/1.1\r\nhost: {host}\r\nauthorization: Bearer {token}\r\n\r\n");
    send(host, head.as_bytes()).await
}

/// A `POST` to `path` on `host` with a bearer `token` that announces
/// `length` bytes of body and sends only `start`.
pub async fn upload(
    host: &str,
    path: &str,
    token: &str,
    length: u64,
    start: &[u8],
) -> std::io::Result<TcpStream> {
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nhost: {host}\r\nauthorization: Bearer {token}\r\ncontent-length: {length}\r\n\r\n"
    )
    .into_bytes();
    request.extend_from_slice(start);
    send(host, &request).await
}

async fn send(host: &str, bytes: &[u8]) -> std::io::Result<TcpStream> {
    let mut tcp = TcpStream::connect(host).await?;
    tcp.write_all(bytes).await?;
    Ok(tcp)
}

/// `n` snapshot downloads of `space` that never read, the `i`th with the
/// token `download_token(i)`; then `n` imports into the spaces `imp0`,
/// `imp1`, ... that announce a megabyte and send only a snapshot's magic,
/// the `i`th with the token `import_token(i, its space)`.
pub async fn downloads_and_imports(
    host: &str,
    space: &str,
    n: usize,
    download_token: impl Fn(usize) -> String,
    import_token: impl Fn(usize, &str) -> String,
) -> std::io::Result<Vec<TcpStream>> {
    let mut stalled = Vec::new();
    let snapshot = format!("/v1/spaces/{space}/snapshot");
    for i in 0..n {
        stalled.push(download(host, &snapshot, &download_token(i)).await?);
    }
    for i in 0..n {
        let space = format!("imp{i}");
        let t = import_token(i, &space);
        let path = format!("/v1/spaces/{space}/import");
        stalled.push(upload(host, &path, &t, 1_000_000, b"ARBORSNP").await?);
    }
    Ok(stalled)
}
