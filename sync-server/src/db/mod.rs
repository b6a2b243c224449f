//! The database layer: pool, migrations, the typed `apply_ops` call, catch-up
//! and children pages. Encodings and the SQL contract: `migrations/README.md`.
//!
//! # Layout
//!
//! - `mod.rs`: [`Db`], the pool.
//! - `error.rs`: [`DbError`], [`RejectCode`].
//! - `rows.rs`: answers and encodings (rows, arrays, replica ids).
//! - `apply.rs`: `apply_ops` calls, one batch or a group.
//! - `reads.rs`: catch-up, children pages (and the page query other reads share), state.
//! - `history.rs`: a node's history ([`HistoryEntry`]).
//! - `spaces.rs`: create, look up, fork, horizon.
//! - `quotas.rs`: [`Quotas`], the tenant's count of spaces, usage.
//! - `migrate.rs`: the embedded migration runner.
//! - `tls.rs`: [`PgTls`], libpq's TLS settings over rustls.
//! - `readers.rs`: [`Readers`], reads served by hot standbys within a lag bound.
//! - `subtree.rs`: the subtree feed's reads (what changed in a subtree since a seq).
//! - `search.rs`: full-text search over register values.
//! - `values.rs`: lookups through the value index (a value's holders, a child by value).

mod apply;
mod error;
mod history;
mod migrate;
mod quotas;
mod readers;
mod reads;
mod rows;
mod search;
mod spaces;
mod subtree;
mod tls;
mod values;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};

pub use apply::{MAX_BATCH, Pusher};
pub use error::{DbError, RejectCode};
pub(crate) use error::{map_pg, pg_message, with_sources};
pub use history::{HistoryEntry, MAX_HISTORY_PAGE, MAX_SUBTREE_AT, SubtreeAt, SubtreeAtRefusal};
pub use migrate::{
    MIGRATIONS, Migration, apply_ops_0002, migrate, restore_pass_0002, restore_pass_reference,
};
pub use quotas::{Owner, Quotas, Usage};
pub(crate) use quotas::{claim_space_slot, set_tenant};
pub use readers::Readers;
pub use rows::*;
use rows::{committed_from_row, node, stamp_from, u64_of, uuid};
pub use search::{MAX_SEARCH_HITS, SEARCH_CANDIDATES, SearchRow, tsquery_text};
pub use subtree::{MAX_CHANGED_NODES, MAX_ENTERED_NODES, MAX_REGISTER_BYTES};
pub use tls::{PgTls, PgTlsError, RootCert, Verify, parse_database_url};
pub use values::{HolderRow, HoldersPage, MAX_VALUE_PAGE};

/// The database: a connection pool over the schema of `migrations/`.
#[derive(Clone)]
pub struct Db {
    pool: Pool,
    /// The `pool` label of its metrics (`primary`, `standby0`, ...): one
    /// per configured database, so the label's values stay few.
    name: std::sync::Arc<str>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db").finish_non_exhaustive()
    }
}

impl Db {
    /// A pool of at most `max_size` connections (opened lazily), with the
    /// default TLS settings ([`PgTls::default`]: encrypted when the server
    /// offers it, certificate not checked; never on unix sockets).
    pub fn new(config: tokio_postgres::Config, max_size: usize) -> Result<Db, DbError> {
        Db::with_tls(config, &PgTls::default(), max_size)
    }

    /// [`Db::new`] with the TLS settings of the database URL. Each session
    /// has `client_connection_check_interval` at 1 s unless the config's
    /// `options` set it.
    pub fn with_tls(
        mut config: tokio_postgres::Config,
        tls: &PgTls,
        max_size: usize,
    ) -> Result<Db, DbError> {
        // A server that dies mid-commit leaves its backend running the
        // apply, holding the space's advisory lock, until Postgres notices
        // the client is gone; by default only when it next writes to it,
        // at the end of the apply. Every push of that space waits meanwhile
        // (the fault soak saw such waits of over ten seconds). Checking the
        // connection every second cancels such a query within a second.
        let options = config.get_options().unwrap_or_default().to_string();
        if !options.contains("client_connection_check_interval") {
            config.options(
                format!("{options} -c client_connection_check_interval=1000").trim_start(),
            );
        }
        let connector = tls.connector().map_err(|e| DbError::Tls(e.to_string()))?;
        let manager = Manager::from_config(
            config,
            connector,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(max_size.max(1))
            .build()
            .map_err(|e| DbError::Pool(e.to_string()))?;
        Ok(Db {
            pool,
            name: "primary".into(),
        })
    }

    /// The same pool, its metrics labelled `pool="<name>"`.
    #[must_use]
    pub fn named(mut self, name: &str) -> Db {
        self.name = name.into();
        self
    }

    /// [`Db::with_tls`], then applies pending migrations (safe at every start).
    pub async fn open(
        config: tokio_postgres::Config,
        tls: &PgTls,
        max_size: usize,
    ) -> Result<Db, DbError> {
        let db = Db::with_tls(config, tls, max_size)?;
        db.migrate().await?;
        Ok(db)
    }

    /// Applies pending migrations; returns the versions applied.
    pub async fn migrate(&self) -> Result<Vec<i32>, DbError> {
        let mut client = self.client().await?;
        migrate(&mut client).await
    }

    /// A pooled connection.
    pub async fn client(&self) -> Result<deadpool_postgres::Object, DbError> {
        use crate::metrics::{POOL_IN_USE, POOL_OPEN, POOL_WAIT_SECONDS, POOL_WAITING};
        let started = std::time::Instant::now();
        let got = self.pool.get().await;
        let pool = self.name.to_string();
        metrics::histogram!(POOL_WAIT_SECONDS, "pool" => pool.clone())
            .record(started.elapsed().as_secs_f64());
        let status = self.pool.status();
        metrics::gauge!(POOL_IN_USE, "pool" => pool.clone())
            .set(status.size.saturating_sub(status.available) as f64);
        metrics::gauge!(POOL_OPEN, "pool" => pool.clone()).set(status.size as f64);
        metrics::gauge!(POOL_WAITING, "pool" => pool).set(status.waiting as f64);
        got.map_err(|e| DbError::Pool(with_sources(&e)))
    }
}

/// A `REPEATABLE READ READ ONLY` transaction on `client`: reads that must
/// agree with each other see one snapshot (it runs on a standby too).
pub(super) async fn read_snapshot(
    client: &mut deadpool_postgres::Object,
) -> Result<deadpool_postgres::Transaction<'_>, DbError> {
    Ok(client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?)
}
