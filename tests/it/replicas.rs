//! Native replicas for the end-to-end tests: open, edit, sync once with a bound.
//!
//! Each test file names its own secret, token subject and spaces (a
//! [`Space`] per space it syncs) and serves its clusters with [`serve`].
//! These helpers live in `it/` and not in the `arbor-e2e` library: only
//! the tests depend on `arbor-client`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arbor_client::{Position, Replica, SyncConfig, SyncStatus, sync_once};
use arbor_shared::NodeId;
use arbor_shared::auth::Role;
use arbor_sync_server::Config;
use arbor_testkit::PgCluster;
use tokio::sync::watch;

/// A replica, shared with the sync that runs on it.
pub type Shared = Arc<Mutex<Replica>>;

/// A space replicas sync with: its `name`, and the write tokens they show
/// (of `sub`, signed with `secret`, the server's secret).
#[derive(Clone, Copy, Debug)]
pub struct Space {
    pub secret: &'static str,
    pub sub: &'static str,
    pub name: &'static str,
}

impl Space {
    /// A write token for the space, issued now and valid for an hour.
    pub fn token(&self) -> String {
        arbor_testkit::tokens::token(
            self.secret.as_bytes(),
            self.sub,
            self.name,
            Role::Write,
            3600,
        )
    }
}

/// A fresh, empty directory `arbor-<tag>-<pid>` under the system's temp
/// dir (what a previous run left there is removed).
pub fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("arbor-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Opens the replica file `name` in `dir` (created if it is not there).
pub fn open(dir: &Path, name: &str) -> Shared {
    Arc::new(Mutex::new(Replica::open(&dir.join(name)).unwrap()))
}

/// Makes `n` nodes under ROOT, with the texts `<tag>0`, `<tag>1`, ...
/// (2 local ops each: the create and its text); returns `n`.
pub fn edit(r: &Shared, n: usize, tag: &str) -> usize {
    let mut g = r.lock().unwrap();
    for i in 0..n {
        g.create_with(
            NodeId::ROOT,
            Position::Last,
            &[("text", &format!("{tag}{i}"))],
        )
        .unwrap();
    }
    n
}

/// Syncs `r` once with `space` on `server` (a token minted for this sync,
/// 3 attempts); panics on an error, or with the last status if the sync
/// has not finished within 60 s.
pub async fn sync(r: &Shared, server: &str, space: Space) {
    sync_with(r, server, space.name, &space.token()).await;
}

/// [`sync`] with any `token` for the space named `space`.
pub async fn sync_with(r: &Shared, server: &str, space: &str, token: &str) {
    let (tx, rx) = watch::channel(SyncStatus::default());
    let done = tokio::time::timeout(
        Duration::from_secs(60),
        sync_once(r.clone(), SyncConfig::new(server, space, token), tx, 3),
    )
    .await;
    match done {
        Ok(result) => {
            result.unwrap();
        }
        Err(_) => panic!("sync did not finish in 60 s: {:?}", *rx.borrow()),
    }
}

/// Serves the database `arbor` of `cluster` (tokens signed with `secret`,
/// a 1 s drain) on a free port; returns its base URL.
pub async fn serve(cluster: &PgCluster, secret: &str) -> String {
    arbor_e2e::stack::serve(Config {
        drain: Duration::from_secs(1),
        ..arbor_e2e::stack::config(cluster, "arbor", secret.as_bytes())
    })
    .await
}
