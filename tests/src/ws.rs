//! A raw realtime client for tests and benchmarks: sockets on a thoughtspace's endpoint, hello, frames.

// Test support: a failure here is the test's failure.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use arbor_shared::ReplicaId;
use arbor_shared::protocol::{ClientMsg, ServerMsg};
use futures_util::{SinkExt as _, StreamExt as _};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

/// A client socket.
pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A socket on the realtime endpoint of `space` at `base` (an `http://`
/// URL), with `token` as its bearer token if given, Nagle off; or the
/// status that refused the upgrade.
pub async fn connect(base: &str, space: &str, token: Option<&str>) -> Result<Ws, u16> {
    let url = format!("{}/v1/spaces/{space}/ws", base.replace("http://", "ws://"));
    let mut req = url.into_client_request().unwrap();
    if let Some(t) = token {
        req.headers_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    match tokio_tungstenite::connect_async_with_config(req, None, true).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => Err(r.status().as_u16()),
        Err(e) => panic!("{e}"),
    }
}

/// Sends `msg`.
pub async fn send(ws: &mut Ws, msg: &ClientMsg) {
    ws.send(Message::Text(msg.encode().into())).await.unwrap();
}

/// Says hello as `replica` from `cursor`, without waiting for the answer.
pub async fn say_hello(ws: &mut Ws, replica: u64, cursor: Option<u64>) {
    let msg = ClientMsg::Hello {
        v: 1,
        replica: ReplicaId(replica),
        cursor,
        root: None,
    };
    send(ws, &msg).await;
}

/// Says hello as `replica` from `cursor` and waits for the welcome (other
/// frames before it are dropped); returns its head seq.
pub async fn hello(ws: &mut Ws, replica: u64, cursor: Option<u64>) -> u64 {
    say_hello(ws, replica, cursor).await;
    loop {
        if let ServerMsg::Welcome { head_seq, .. } = recv(ws).await {
            return head_seq;
        }
    }
}

/// The next message; a frame that does not come within 30 s, or a close,
/// fails the test.
pub async fn recv(ws: &mut Ws) -> ServerMsg {
    loop {
        let next = tokio::time::timeout(Duration::from_secs(30), ws.next())
            .await
            .expect("no frame within 30 s");
        match next.unwrap().unwrap() {
            Message::Text(t) => return ServerMsg::decode(&t).unwrap(),
            Message::Close(f) => panic!("closed: {f:?}"),
            _ => {}
        }
    }
}

/// The `error` frames and the close code a socket ends with (a frame that
/// does not come within 30 s fails the test).
pub async fn ending(ws: &mut Ws) -> (Vec<ServerMsg>, Option<u16>) {
    let mut errors = Vec::new();
    loop {
        let next = tokio::time::timeout(Duration::from_secs(30), ws.next())
            .await
            .expect("no close within 30 s");
        match next {
            Some(Ok(Message::Text(t))) => {
                if let Ok(m @ ServerMsg::Error { .. }) = ServerMsg::decode(&t) {
                    errors.push(m);
                }
            }
            Some(Ok(Message::Close(f))) => return (errors, f.map(|f| u16::from(f.code))),
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return (errors, None),
        }
    }
}
