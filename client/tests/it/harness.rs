//! A sync server on a fresh database of the shared test cluster, tokens,
//! replicas in a temp dir, and waiting on sync status.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arbor_client::{Replica, SharedReplica, SyncConfig, SyncState, SyncStatus};
use arbor_e2e::server::KillableServer;
use arbor_e2e::stack;
use arbor_shared::auth::Role;
use arbor_sync_server::Config;
use arbor_sync_server::db::Db;
use arbor_testkit::PgCluster;
pub use arbor_testkit::wait::wait_for;
use tokio::sync::OnceCell;

const SECRET: &[u8] = b"client-tests-secret-client-tests!";
static TEMPLATE: OnceCell<()> = OnceCell::const_new();

/// A fresh migrated database's name.
pub async fn fresh_db() -> String {
    let cluster = PgCluster::shared();
    TEMPLATE
        .get_or_init(|| async {
            let mut c = arbor_testkit::sql::create_database(cluster, "client_template")
                .await
                .unwrap();
            arbor_sync_server::db::migrate(&mut c).await.unwrap();
        })
        .await;
    cluster.fresh_db(Some("client_template")).await.unwrap()
}

pub fn token(space: &str, role: Role) -> String {
    arbor_testkit::tokens::token(SECRET, "client-test", space, role, 3600)
}

/// A server in its own tokio runtime on a fixed address. Killing it shuts
/// the runtime down: every task (connections included) is dropped at once,
/// sockets and database connections close mid-flight, like a crash.
pub struct TestServer {
    // First: dropped (killed) before the rest.
    server: KillableServer,
    pub db: Db,
    pub db_name: String,
}

impl TestServer {
    /// A server with the space `space` created.
    pub async fn start(space: &str) -> TestServer {
        TestServer::start_with(space, |_| {}).await
    }

    /// [`TestServer::start`] with `configure` applied to its config.
    pub async fn start_with(space: &str, configure: impl FnOnce(&mut Config)) -> TestServer {
        let db_name = fresh_db().await;
        let db = Db::new(PgCluster::shared().config(&db_name), 4).unwrap();
        db.create_space(space).await.unwrap();
        let mut config = Config {
            socket_queue_frames: 4096,
            ..stack::config(PgCluster::shared(), &db_name, SECRET)
        };
        configure(&mut config);
        let server = KillableServer::start(config).unwrap();
        TestServer {
            server,
            db,
            db_name,
        }
    }

    /// Kills the server (see the type's doc).
    pub async fn kill(&mut self) {
        self.server.kill();
    }

    /// Serves again on the same address.
    pub async fn restart(&mut self) {
        self.server.restart().unwrap();
    }

    pub fn url(&self) -> String {
        self.server.url()
    }

    /// `GET {url}{path}` with a read token for `s`, its JSON body as `T`.
    pub async fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> T {
        reqwest::Client::new()
            .get(format!("{}{path}", self.url()))
            .bearer_auth(token("s", Role::Read))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Raises `space`'s horizon to now: every op made before is below it.
    pub async fn raise_horizon_to_now(&self, space: &str) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        self.db
            .raise_horizon(space, arbor_shared::Stamp::new(now << 16, u64::MAX))
            .await
            .unwrap();
    }

    pub fn sync_config(&self, space: &str) -> SyncConfig {
        let mut c = SyncConfig::new(&self.url(), space, &token(space, Role::Write));
        c.min_backoff = Duration::from_millis(20);
        c.max_backoff = Duration::from_millis(200);
        c
    }
}

/// A replica file in a fresh temp dir (removed at drop of the dir guard).
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("arbor-client-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn replica(&self, name: &str) -> SharedReplica {
        Arc::new(Mutex::new(
            Replica::open(&self.0.join(format!("{name}.db"))).unwrap(),
        ))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn is_live(s: &SyncStatus) -> bool {
    s.state == SyncState::Live && s.outbox == 0
}

/// Seed from `ARBOR_SEED` or the clock, printed so a failure can be
/// replayed.
pub fn seed(name: &str) -> u64 {
    let seed = arbor_testkit::env::seed_from_env();
    eprintln!("{name}: ARBOR_SEED={seed}");
    seed
}

/// One sync of `r` with space `s` of `server` (until caught up and
/// pushed), three attempts at most.
pub async fn sync(server: &TestServer, r: &SharedReplica) {
    let (tx, _rx) = tokio::sync::watch::channel(SyncStatus::default());
    arbor_client::sync_once(r.clone(), server.sync_config("s"), tx, 3)
        .await
        .unwrap();
}
