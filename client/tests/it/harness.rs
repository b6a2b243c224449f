//! A sync server on a fresh database of the shared test cluster, tokens,
//! replicas in a temp dir, and waiting on sync status.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arbor_client::{Replica, SharedReplica, SyncConfig, SyncState, SyncStatus};
use arbor_shared::auth::{Claims, Hs256Key, Role, mint};
use arbor_sync_server::Config;
use arbor_sync_server::db::Db;
use arbor_testkit::PgCluster;
use tokio::sync::{OnceCell, watch};

const SECRET: &[u8] = b"client-tests-secret-client-tests!";
static TEMPLATE: OnceCell<()> = OnceCell::const_new();

/// A fresh migrated database's name.
pub async fn fresh_db() -> String {
    let cluster = PgCluster::shared();
    TEMPLATE
        .get_or_init(|| async {
            let admin = cluster.connect("postgres").await.unwrap();
            admin
                .batch_execute("CREATE DATABASE client_template")
                .await
                .unwrap();
            let mut c = cluster.connect("client_template").await.unwrap();
            arbor_sync_server::db::migrate(&mut c).await.unwrap();
        })
        .await;
    cluster.fresh_db(Some("client_template")).await.unwrap()
}

pub fn token(space: &str, role: Role) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = Claims::new("client-test", space, role, now, 3600);
    mint(&claims, &Hs256Key::new(SECRET).unwrap())
}

/// A server in its own tokio runtime on a fixed address. Killing it shuts
/// the runtime down: every task (connections included) is dropped at once,
/// sockets and database connections close mid-flight, like a crash.
pub struct TestServer {
    pub addr: SocketAddr,
    pub db: Db,
    pub db_name: String,
    runtime: Option<tokio::runtime::Runtime>,
}

fn config(db_name: &str) -> Config {
    Config {
        db_pool: 4,
        token_leeway_s: 60,
        max_body_bytes: 4 << 20,
        max_import_bytes: 1 << 30,
        drain: Duration::from_secs(2),
        cors_origins: Vec::new(),
        socket_queue_frames: 4096,
        notify_url: None,
        ..Config::new(
            PgCluster::shared().config(db_name),
            Hs256Key::new(SECRET).unwrap(),
        )
    }
}

impl TestServer {
    /// A server with the space `space` created.
    pub async fn start(space: &str) -> TestServer {
        let db_name = fresh_db().await;
        let db = Db::new(PgCluster::shared().config(&db_name), 4).unwrap();
        db.create_space(space).await.unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut s = TestServer {
            addr,
            db,
            db_name,
            runtime: None,
        };
        s.serve(listener);
        s
    }

    fn serve(&mut self, listener: std::net::TcpListener) {
        let config = config(&self.db_name);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        listener.set_nonblocking(true).unwrap();
        runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let _ = arbor_sync_server::serve(listener, None, config, std::future::pending()).await;
        });
        self.runtime = Some(runtime);
    }

    /// Kills the server (see the type's doc).
    pub async fn kill(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }

    /// Serves again on the same address.
    pub async fn restart(&mut self) {
        let listener = std::net::TcpListener::bind(self.addr).unwrap();
        self.serve(listener);
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
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

/// Waits until the status satisfies `done` (bounded: fails after 60 s).
pub async fn wait_for(
    rx: &mut watch::Receiver<SyncStatus>,
    what: &str,
    done: impl Fn(&SyncStatus) -> bool,
) {
    let ok = matches!(
        tokio::time::timeout(Duration::from_secs(60), rx.wait_for(|s| done(s))).await,
        Ok(Ok(_))
    );
    if !ok {
        panic!("timed out waiting for {what}; status {:?}", *rx.borrow());
    }
}

pub fn is_live(s: &SyncStatus) -> bool {
    s.state == SyncState::Live && s.outbox == 0
}

/// Seed from `ARBOR_SEED` or the clock, printed so a failure can be
/// replayed.
pub fn seed(name: &str) -> u64 {
    let seed = std::env::var("ARBOR_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("{name}: ARBOR_SEED={seed}");
    seed
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}
