//! Commit notices: `LISTEN arbor_head` on a dedicated connection and hand
//! every notice to the open rooms, so ops committed by any server process
//! reach every socket (contract: `migrations/README.md`, "Commit notices").

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::watch;
use tokio_postgres::AsyncMessage;

use crate::realtime::Rooms;

/// Longest wait between reconnect attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Parses a notice payload, `"<space> <head_seq>"`.
fn parse(payload: &str) -> Option<(&str, u64)> {
    let (space, seq) = payload.rsplit_once(' ')?;
    Some((space, seq.parse().ok()?))
}

/// Forwards commit notices to the realtime Worker (`POST
/// {url}/v1/spaces/{space}/notify`, body `{"head_seq": N}`, a service token
/// for the space), so a Durable Object's sockets see ops committed by any
/// path. Only the newest head per space waits: a slow Worker coalesces
/// notices instead of queueing them. A notice the space's Durable Object
/// already knows (it committed those seqs itself, over its upstream
/// socket) is not forwarded.
#[derive(Debug, Clone)]
pub struct Forwarder {
    waiting: Arc<std::sync::Mutex<std::collections::HashMap<String, u64>>>,
    /// Per space, the highest seq its object committed over its upstream
    /// socket (the object saw those commits' answers).
    edge_knows: Arc<std::sync::Mutex<std::collections::HashMap<String, u64>>>,
    wake: Arc<tokio::sync::Notify>,
}

impl Forwarder {
    /// Starts the forwarding task for `url`, minting tokens with `key`.
    pub fn start(url: String, key: arbor_shared::auth::Hs256Key) -> Forwarder {
        let f = Forwarder {
            waiting: Arc::default(),
            edge_knows: Arc::default(),
            wake: Arc::default(),
        };
        let me = f.clone();
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            let url = url.trim_end_matches('/').to_string();
            loop {
                me.wake.notified().await;
                let batch: Vec<(String, u64)> = {
                    let mut w = me.waiting.lock().unwrap_or_else(|p| p.into_inner());
                    w.drain().collect()
                };
                for (space, head) in batch {
                    // Looked at when sending: the object's own commit is
                    // usually answered by then.
                    if !me.edge_has(&space, head) {
                        forward_one(&http, &url, &key, &space, head).await;
                    }
                }
            }
        });
        f
    }

    /// The space's object committed up to `head` itself (it has the ops).
    pub fn edge_committed(&self, space: &str, head: u64) {
        let mut k = self.edge_knows.lock().unwrap_or_else(|p| p.into_inner());
        let e = k.entry(space.to_string()).or_insert(head);
        *e = (*e).max(head);
    }

    fn edge_has(&self, space: &str, head: u64) -> bool {
        self.edge_knows
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(space)
            .is_some_and(|&k| k >= head)
    }

    /// Queues `space`'s head for forwarding, unless its object has it.
    pub fn push(&self, space: &str, head: u64) {
        if self.edge_has(space, head) {
            return;
        }
        {
            let mut w = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
            let e = w.entry(space.to_string()).or_insert(head);
            *e = (*e).max(head);
        }
        self.wake.notify_one();
    }
}

async fn forward_one(
    http: &reqwest::Client,
    url: &str,
    key: &arbor_shared::auth::Hs256Key,
    space: &str,
    head: u64,
) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let token = arbor_shared::auth::mint(
        &arbor_shared::auth::Claims::new(
            "arbor-server",
            space,
            arbor_shared::auth::Role::Service,
            now,
            60,
        ),
        key,
    );
    let sent = http
        .post(format!("{url}/v1/spaces/{space}/notify"))
        .bearer_auth(token)
        .json(&serde_json::json!({ "head_seq": head }))
        .timeout(Duration::from_secs(10))
        .send()
        .await;
    match sent {
        Ok(r) if r.status().is_success() => {}
        Ok(r) => tracing::warn!(space, status = %r.status(), "the worker refused a commit notice"),
        Err(e) => tracing::warn!(space, error = %e, "forwarding a commit notice failed"),
    }
}

/// Listens until `stop` turns true, reconnecting with backoff when the
/// connection fails. After every (re)connect the open rooms re-read their
/// head, since notices sent while disconnected are lost. Every notice also
/// goes to `forward`, if set.
pub async fn listen(
    config: tokio_postgres::Config,
    tls: tokio_postgres_rustls::MakeRustlsConnect,
    rooms: Arc<Rooms>,
    forward: Option<Forwarder>,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let mut connected = false;
        tokio::select! {
            result = listen_once(&config, &tls, &rooms, forward.as_ref(), &mut connected) => {
                if let Err(e) = result {
                    tracing::warn!(error = %e, "commit notice connection lost; reconnecting");
                }
            }
            _ = stop.wait_for(|s| *s) => return,
        }
        if connected {
            // It worked for a while: the next failure starts over.
            backoff = Duration::from_millis(100);
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

async fn listen_once(
    config: &tokio_postgres::Config,
    tls: &tokio_postgres_rustls::MakeRustlsConnect,
    rooms: &Rooms,
    forward: Option<&Forwarder>,
    connected: &mut bool,
) -> Result<(), tokio_postgres::Error> {
    let (client, mut connection) = config.connect(tls.clone()).await?;
    *connected = true;
    // The connection must be polled for the LISTEN to complete, and its
    // notices come out of the same poll: a task forwards them.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<String, tokio_postgres::Error>>(1024);
    let driver = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            let forward = match message {
                Ok(AsyncMessage::Notification(n)) => Ok(n.payload().to_string()),
                Ok(_) => continue,
                Err(e) => Err(e),
            };
            let failed = forward.is_err();
            if tx.send(forward).await.is_err() || failed {
                return;
            }
        }
    });
    let result = async {
        client.batch_execute("LISTEN arbor_head").await?;
        for space in rooms.open_rooms().await {
            let row = client
                .query_opt("SELECT head_seq FROM spaces WHERE name = $1", &[&space])
                .await?;
            if let Some(head) = row.and_then(|r| r.get::<_, Option<i64>>(0)) {
                rooms.head(&space, u64::try_from(head).unwrap_or(0)).await;
            }
        }
        tracing::debug!("listening for commit notices");
        while let Some(message) = rx.recv().await {
            let payload = message?;
            match parse(&payload) {
                Some((space, seq)) => {
                    if let Some(f) = forward {
                        f.push(space, seq);
                    }
                    rooms.head(space, seq).await;
                }
                None => tracing::warn!(payload, "malformed commit notice"),
            }
        }
        Ok(())
    }
    .await;
    driver.abort();
    result
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn parses_notices() {
        assert_eq!(parse("demo 42"), Some(("demo", 42)));
        assert_eq!(parse("a.b-c_d 0"), Some(("a.b-c_d", 0)));
        assert_eq!(parse("demo"), None);
        assert_eq!(parse("demo x"), None);
        assert_eq!(parse("demo -1"), None);
    }
}
