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
/// socket) is not forwarded; one that comes while the object has a commit
/// in flight waits for that commit's answer, since it is most likely that
/// commit's own (Postgres delivers the notice and the commit's reply at
/// once, on two connections).
#[derive(Debug, Clone)]
pub struct Forwarder {
    /// Per space, the newest head to forward, and how many of the object's
    /// commits had been answered when it came.
    waiting: Arc<std::sync::Mutex<std::collections::HashMap<String, (u64, u64)>>>,
    edges: Arc<std::sync::Mutex<std::collections::HashMap<String, Edge>>>,
    wake: Arc<tokio::sync::Notify>,
}

/// What the forwarder knows of a space's object's upstream commits.
#[derive(Debug, Default)]
struct Edge {
    /// The highest seq its object committed over its upstream socket (the
    /// object saw those commits' answers).
    knows: u64,
    /// Its commits in flight.
    busy: usize,
    /// Its commits answered so far.
    answered: u64,
}

/// What becomes of a waiting notice.
enum Fate {
    Forward,
    Drop,
    /// Wait for the object's commit in flight.
    Hold,
}

/// Held while an object's commit is in flight (from [`Forwarder::edge_commit`]).
#[derive(Debug)]
pub struct EdgeCommit {
    forwarder: Forwarder,
    space: String,
}

impl Drop for EdgeCommit {
    fn drop(&mut self) {
        {
            let mut edges = self.forwarder.edges();
            if let Some(e) = edges.get_mut(&self.space) {
                e.busy = e.busy.saturating_sub(1);
                e.answered += 1;
            }
        }
        // Notices held for this commit are looked at again.
        self.forwarder.wake.notify_one();
    }
}

impl Forwarder {
    /// Starts the forwarding task for `url`, minting tokens with `key`.
    pub fn start(url: String, key: arbor_shared::auth::Hs256Key) -> Forwarder {
        let f = Forwarder {
            waiting: Arc::default(),
            edges: Arc::default(),
            wake: Arc::default(),
        };
        let me = f.clone();
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            let url = url.trim_end_matches('/').to_string();
            loop {
                me.wake.notified().await;
                let batch: Vec<(String, (u64, u64))> = me.waiting().drain().collect();
                for (space, (head, seen)) in batch {
                    // Looked at when sending: the object's own commit is
                    // usually answered by then.
                    match me.fate(&space, head, seen) {
                        Fate::Forward => forward_one(&http, &url, &key, &space, head).await,
                        Fate::Drop => {}
                        Fate::Hold => me.queue(&space, head, seen),
                    }
                }
            }
        });
        f
    }

    fn edges(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, Edge>> {
        self.edges.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn waiting(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, (u64, u64)>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The space's object is committing over its upstream socket until the
    /// returned guard is dropped (after [`Forwarder::edge_committed`]).
    pub fn edge_commit(&self, space: &str) -> EdgeCommit {
        self.edges().entry(space.to_string()).or_default().busy += 1;
        EdgeCommit {
            forwarder: self.clone(),
            space: space.to_string(),
        }
    }

    /// The space's object committed up to `head` itself (it has the ops).
    pub fn edge_committed(&self, space: &str, head: u64) {
        let mut edges = self.edges();
        let e = edges.entry(space.to_string()).or_default();
        e.knows = e.knows.max(head);
    }

    /// A notice of `head`, which came when `seen` of the object's commits
    /// had been answered.
    fn fate(&self, space: &str, head: u64, seen: u64) -> Fate {
        match self.edges().get(space) {
            Some(e) if e.knows >= head => Fate::Drop,
            // Held for the commits in flight when it came, no longer: a
            // notice of another path waits for one answer at most.
            Some(e) if e.busy > 0 && e.answered == seen => Fate::Hold,
            _ => Fate::Forward,
        }
    }

    fn queue(&self, space: &str, head: u64, seen: u64) {
        let mut w = self.waiting();
        let e = w.entry(space.to_string()).or_insert((head, seen));
        *e = (e.0.max(head), e.1.min(seen));
    }

    /// Queues `space`'s head for forwarding, unless its object has it.
    pub fn push(&self, space: &str, head: u64) {
        let seen = match self.edges().get(space) {
            Some(e) if e.knows >= head => return,
            Some(e) => e.answered,
            None => 0,
        };
        self.queue(space, head, seen);
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
    use super::{Fate, Forwarder, parse};

    /// A forwarder without its sending task: what it would do with each
    /// waiting notice.
    fn forwarder() -> Forwarder {
        Forwarder {
            waiting: Default::default(),
            edges: Default::default(),
            wake: Default::default(),
        }
    }

    fn fate_of(f: &Forwarder, space: &str) -> Option<&'static str> {
        let (head, seen) = *f.waiting().get(space)?;
        Some(match f.fate(space, head, seen) {
            Fate::Forward => "forward",
            Fate::Drop => "drop",
            Fate::Hold => "hold",
        })
    }

    #[test]
    fn a_notice_waits_for_the_objects_commit_in_flight() {
        let f = forwarder();
        // No object commits: forwarded.
        f.push("a", 3);
        assert_eq!(fate_of(&f, "a"), Some("forward"));
        f.waiting().clear();
        // Its own commit's notice comes before the commit's answer.
        let busy = f.edge_commit("a");
        f.push("a", 4);
        assert_eq!(fate_of(&f, "a"), Some("hold"));
        f.edge_committed("a", 4);
        drop(busy);
        assert_eq!(fate_of(&f, "a"), Some("drop"));
        // Later notices it already has are not even queued.
        f.waiting().clear();
        f.push("a", 4);
        assert_eq!(fate_of(&f, "a"), None);
    }

    #[test]
    fn another_paths_notice_waits_for_one_answer_at_most() {
        let f = forwarder();
        let first = f.edge_commit("a");
        // Committed by another path while the object's commit runs.
        f.push("a", 7);
        assert_eq!(fate_of(&f, "a"), Some("hold"));
        f.edge_committed("a", 6);
        drop(first);
        // The next commit is in flight already: the notice goes anyway.
        let _second = f.edge_commit("a");
        assert_eq!(fate_of(&f, "a"), Some("forward"));
    }

    #[test]
    fn parses_notices() {
        assert_eq!(parse("demo 42"), Some(("demo", 42)));
        assert_eq!(parse("a.b-c_d 0"), Some(("a.b-c_d", 0)));
        assert_eq!(parse("demo"), None);
        assert_eq!(parse("demo x"), None);
        assert_eq!(parse("demo -1"), None);
    }
}
