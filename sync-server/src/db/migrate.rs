//! The embedded migration runner: numbered SQL files, applied once each.
//!
//! Our own rather than refinery: the contract we need is small (ordered
//! files, one transaction each, a checksum so an edited applied file is
//! caught, an advisory lock so concurrent starts are safe), and refinery
//! would add a dozen crates to a build that is already the slow part of CI.

use tokio_postgres::Client;

use super::DbError;

/// One migration: its number, its name and its SQL.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Version; applied in increasing order, never reused.
    pub version: i32,
    /// File name, for messages.
    pub name: &'static str,
    /// The SQL, run in one transaction.
    pub sql: &'static str,
}

/// Every migration, in order (the files in `migrations/`).
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "0001_schema.sql",
        sql: include_str!("../../../migrations/0001_schema.sql"),
    },
    Migration {
        version: 2,
        name: "0002_apply.sql",
        sql: include_str!("../../../migrations/0002_apply.sql"),
    },
    Migration {
        version: 3,
        name: "0003_fork.sql",
        sql: include_str!("../../../migrations/0003_fork.sql"),
    },
    Migration {
        version: 4,
        name: "0004_notify.sql",
        sql: include_str!("../../../migrations/0004_notify.sql"),
    },
    Migration {
        version: 5,
        name: "0005_import.sql",
        sql: include_str!("../../../migrations/0005_import.sql"),
    },
    Migration {
        version: 6,
        name: "0006_restore_pass.sql",
        sql: include_str!("../../../migrations/0006_restore_pass.sql"),
    },
    Migration {
        version: 7,
        name: "0007_restore_place.sql",
        sql: include_str!("../../../migrations/0007_restore_place.sql"),
    },
    Migration {
        version: 8,
        name: "0008_quotas.sql",
        sql: include_str!("../../../migrations/0008_quotas.sql"),
    },
    Migration {
        version: 9,
        name: "0009_past_move.sql",
        sql: include_str!("../../../migrations/0009_past_move.sql"),
    },
    Migration {
        version: 10,
        name: "0010_replica_owners.sql",
        sql: include_str!("../../../migrations/0010_replica_owners.sql"),
    },
    Migration {
        version: 11,
        name: "0011_past_move_chains.sql",
        sql: include_str!("../../../migrations/0011_past_move_chains.sql"),
    },
    Migration {
        version: 12,
        name: "0012_scoped_apply.sql",
        sql: include_str!("../../../migrations/0012_scoped_apply.sql"),
    },
    Migration {
        version: 13,
        name: "0013_node_changes.sql",
        sql: include_str!("../../../migrations/0013_node_changes.sql"),
    },
    Migration {
        version: 14,
        name: "0014_scoped_side_effects.sql",
        sql: include_str!("../../../migrations/0014_scoped_side_effects.sql"),
    },
    Migration {
        version: 15,
        name: "0015_scoped_create.sql",
        sql: include_str!("../../../migrations/0015_scoped_create.sql"),
    },
    Migration {
        version: 16,
        name: "0016_node_history.sql",
        sql: include_str!("../../../migrations/0016_node_history.sql"),
    },
    Migration {
        version: 17,
        name: "0017_subtree_at.sql",
        sql: include_str!("../../../migrations/0017_subtree_at.sql"),
    },
    Migration {
        version: 18,
        name: "0018_value_index.sql",
        sql: include_str!("../../../migrations/0018_value_index.sql"),
    },
];

/// Key of the session advisory lock held while migrating (two-int form, so it
/// never collides with the per-space `pg_advisory_xact_lock(bigint)`).
const LOCK: (i32, i32) = (0x4152_424f, 1); // "ARBO", 1

/// Migration 0002's `arbor_restore_pass` as a `CREATE OR REPLACE`
/// statement: installed over 0006's in a scratch database, it is the
/// baseline the differential test and the restore benchmark compare with.
pub fn restore_pass_0002() -> String {
    function_0002("arbor_restore_pass")
}

/// Migration 0002's `apply_ops` as a `CREATE OR REPLACE` statement: every
/// move older than the log's newest is undone and redone. The baseline the
/// past-move test and benchmark compare migration 0009's with.
pub fn apply_ops_0002() -> String {
    function_0002("apply_ops")
}

/// A function of migration 0002, restated as `CREATE OR REPLACE`.
fn function_0002(name: &str) -> String {
    let sql = MIGRATIONS[1].sql;
    let start = sql.find(&format!("CREATE FUNCTION {name}(")).unwrap_or(0);
    let end = sql[start..]
        .find("END $$;")
        .map_or(sql.len(), |e| start + e + "END $$;".len());
    sql[start..end].replacen("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1)
}

/// 0002's pass with the write test of migration 0007 (each delete pairs
/// with its first write that restores, `arbor_restore_place`): the simple
/// reference the differential test holds the current pass to.
pub fn restore_pass_reference() -> String {
    const PAIRED: &str = "AND o.seq > lower AND o.known_seq < d.seq AND o.replica <> d.replica";
    let sql = restore_pass_0002();
    assert_eq!(sql.matches(PAIRED).count(), 2, "0002's pass changed shape");
    sql.replace(
        PAIRED,
        &format!(
            "{PAIRED} AND (arbor_restore_place(p_space, d.node, o.seq, o.known_seq, \
             o.replica)).cause_seq IS NOT NULL"
        ),
    )
}

/// FNV-1a 64 of the SQL text: detects an applied file that was edited.
fn checksum(sql: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in sql.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h as i64
}

/// Applies every pending migration. Safe to run at every start and from
/// several processes at once: it holds an advisory lock, skips applied
/// versions, and refuses to start if an applied file's checksum changed.
/// Returns the versions it applied.
pub async fn migrate(client: &mut Client) -> Result<Vec<i32>, DbError> {
    client
        .execute("SELECT pg_advisory_lock($1, $2)", &[&LOCK.0, &LOCK.1])
        .await?;
    let result = migrate_locked(client).await;
    let unlock = client
        .execute("SELECT pg_advisory_unlock($1, $2)", &[&LOCK.0, &LOCK.1])
        .await;
    let applied = result?;
    unlock?;
    Ok(applied)
}

async fn migrate_locked(client: &mut Client) -> Result<Vec<i32>, DbError> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS arbor_migrations (
                 version    integer PRIMARY KEY,
                 name       text NOT NULL,
                 checksum   bigint NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .await?;
    let rows = client
        .query("SELECT version, checksum FROM arbor_migrations", &[])
        .await?;
    let mut done = std::collections::BTreeMap::new();
    for row in rows {
        done.insert(row.try_get::<_, i32>(0)?, row.try_get::<_, i64>(1)?);
    }
    if let Some((&v, _)) = done.iter().next_back() {
        if !MIGRATIONS.iter().any(|m| m.version == v) {
            return Err(DbError::Migration(format!(
                "the database has migration {v}, which this build does not know: \
                 it was migrated by a newer version"
            )));
        }
    }
    let mut applied = Vec::new();
    for m in MIGRATIONS {
        match done.get(&m.version) {
            Some(&sum) if sum == checksum(m.sql) => continue,
            Some(_) => {
                return Err(DbError::Migration(format!(
                    "migration {} ({}) was edited after it was applied; add a new migration instead",
                    m.version, m.name
                )));
            }
            None => {}
        }
        let tx = client.transaction().await?;
        tx.batch_execute(m.sql).await.map_err(|e| {
            DbError::Migration(format!("{} failed: {}", m.name, super::pg_message(&e)))
        })?;
        tx.execute(
            "INSERT INTO arbor_migrations (version, name, checksum) VALUES ($1, $2, $3)",
            &[&m.version, &m.name, &checksum(m.sql)],
        )
        .await?;
        tx.commit().await?;
        tracing::info!(version = m.version, name = m.name, "applied migration");
        applied.push(m.version);
    }
    Ok(applied)
}
