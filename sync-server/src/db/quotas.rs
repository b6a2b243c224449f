//! Quotas: per-space limits (enforced by migration 0008's triggers from
//! session settings) and the per-tenant count of spaces (checked here when a
//! space is created, forked or imported).

use super::*;

/// The limits of one server (0: no limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quotas {
    /// Nodes in one space (the tree, trash included).
    pub max_nodes: u64,
    /// Rows in one space's op log.
    pub max_log_rows: u64,
    /// Bytes of keys, field names and values in one space (log and
    /// registers).
    pub max_bytes: u64,
    /// Spaces one tenant may create (by create, fork or import).
    pub max_spaces_per_tenant: u64,
}

impl Quotas {
    /// No limit at all.
    pub const NONE: Quotas = Quotas {
        max_nodes: 0,
        max_log_rows: 0,
        max_bytes: 0,
        max_spaces_per_tenant: 0,
    };

    /// The defaults of `arbor-server serve`: far above an outliner's
    /// largest thoughtspace (a million nodes), far below what hurts the
    /// database.
    pub const DEFAULT: Quotas = Quotas {
        max_nodes: 10_000_000,
        max_log_rows: 100_000_000,
        max_bytes: 16 << 30,
        max_spaces_per_tenant: 1_000,
    };

    /// Adds the per-space limits to the sessions `config` opens (the
    /// `arbor.max_*` settings migration 0008's triggers read).
    pub fn apply_to(&self, config: &mut tokio_postgres::Config) {
        let options = config.get_options().unwrap_or_default().to_string();
        config.options(
            format!(
                "{options} -c arbor.max_nodes={} -c arbor.max_log_rows={} -c arbor.max_bytes={}",
                self.max_nodes, self.max_log_rows, self.max_bytes
            )
            .trim_start(),
        );
    }
}

/// Who creates a space, for the per-tenant count.
#[derive(Debug, Clone, Copy)]
pub struct Owner<'a> {
    /// The tenant the new space belongs to.
    pub tenant: &'a str,
    /// How many spaces the tenant may hold (0: no limit).
    pub max_spaces: u64,
}

/// A space's usage, as the quotas count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Nodes in the tree (trash included).
    pub nodes: u64,
    /// Rows in the op log.
    pub log_rows: u64,
    /// Bytes of keys, field names and values (log and registers).
    pub bytes: u64,
}

/// Two-int advisory lock key of a tenant's space count ("ARBT", hash): the
/// check and the insert that follows are one step for concurrent creators.
const TENANT_LOCK: i32 = 0x4152_4254;

/// In `tx`: waits for the tenant's lock, then refuses (`quota_exceeded`)
/// when the tenant already holds its quota of spaces.
pub(crate) async fn claim_space_slot(
    tx: &tokio_postgres::Transaction<'_>,
    owner: &Owner<'_>,
) -> Result<(), DbError> {
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, hashtext($2))",
        &[&TENANT_LOCK, &owner.tenant],
    )
    .await
    .map_err(map_pg)?;
    if owner.max_spaces == 0 {
        return Ok(());
    }
    let held: i64 = tx
        .query_one(
            "SELECT count(*) FROM spaces WHERE tenant = $1",
            &[&owner.tenant],
        )
        .await
        .map_err(map_pg)?
        .get(0);
    if u64::try_from(held).unwrap_or(0) >= owner.max_spaces {
        return Err(DbError::rejected(
            RejectCode::QuotaExceeded,
            format!(
                "quota_exceeded: tenant {} holds {held} spaces; its quota is {}",
                owner.tenant, owner.max_spaces
            ),
        ));
    }
    Ok(())
}

/// In `tx`: records `owner` as the tenant of the space `name`.
pub(crate) async fn set_tenant(
    tx: &tokio_postgres::Transaction<'_>,
    name: &str,
    owner: &Owner<'_>,
) -> Result<(), DbError> {
    tx.execute(
        "UPDATE spaces SET tenant = $2 WHERE name = $1",
        &[&name, &owner.tenant],
    )
    .await
    .map_err(map_pg)?;
    Ok(())
}

impl Db {
    /// The space's usage (None: no such space).
    pub async fn usage(&self, name: &str) -> Result<Option<Usage>, DbError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT node_count, log_rows, bytes FROM spaces WHERE name = $1",
                &[&name],
            )
            .await?;
        row.map(|r| {
            Ok(Usage {
                nodes: u64_of(r.try_get(0)?, "node_count")?,
                log_rows: u64_of(r.try_get(1)?, "log_rows")?,
                bytes: u64_of(r.try_get(2)?, "bytes")?,
            })
        })
        .transpose()
    }

    /// The tenant a space belongs to (None: no such space, or created
    /// without one).
    pub async fn tenant(&self, name: &str) -> Result<Option<String>, DbError> {
        let client = self.client().await?;
        let row = client
            .query_opt("SELECT tenant FROM spaces WHERE name = $1", &[&name])
            .await?;
        Ok(row.and_then(|r| r.get(0)))
    }
}
