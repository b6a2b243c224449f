//! Databases by name, test data written straight into Arbor's tables past the apply function and the log, and the snapshot's queries run by `psql`.

use crate::{PgCluster, PgError};

/// Creates the database `name` in `cluster` and connects to it (as the
/// cluster's superuser).
pub async fn create_database(
    cluster: &PgCluster,
    name: &str,
) -> Result<tokio_postgres::Client, PgError> {
    let admin = cluster.connect("postgres").await?;
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .map_err(|e| PgError(format!("CREATE DATABASE {name}: {e}")))?;
    cluster.connect(name).await
}

/// Inserts `count` nodes under ROOT into the space named `space` (its
/// `nodes` rows only: no ops, no payloads). Node `i` (1 to `count`) has the
/// id `md5(i)` and the key `80 ‖ i (4 bytes) ‖ 01`.
pub fn insert_nodes(space: &str, count: u32) -> String {
    format!(
        "INSERT INTO nodes (space, id, parent, key)
           SELECT s.id, md5(i::text)::uuid, '00000000-0000-0000-0000-000000000000',
                  '\\x80'::bytea || int4send(i) || '\\x01'::bytea
           FROM spaces s, generate_series(1, {count}) i WHERE s.name = '{space}';"
    )
}

/// The three `COPY ... TO STDOUT (FORMAT binary)` queries a snapshot of the
/// space with id `space_id` streams: nodes, payloads, the log.
pub fn snapshot_copies(space_id: impl std::fmt::Display) -> [String; 3] {
    [
        format!(
            "COPY (SELECT id, parent, key FROM nodes WHERE space = {space_id}) TO STDOUT (FORMAT binary)"
        ),
        format!(
            "COPY (SELECT node, field, value, hlc, replica FROM payloads WHERE space = {space_id}) TO STDOUT (FORMAT binary)"
        ),
        format!(
            "COPY (SELECT seq, hlc, replica, kind, node, parent, key, field, value, known_seq, applied, prev_parent, prev_key FROM ops WHERE space = {space_id} ORDER BY seq) TO STDOUT (FORMAT binary)"
        ),
    ]
}

/// Runs `queries` one after the other, each with its own `psql` on the
/// database `db` of `cluster`, their output discarded.
pub fn psql_discard(cluster: &PgCluster, db: &str, queries: &[String]) -> Result<(), PgError> {
    let psql = crate::pg_bin_dir()?.join("psql");
    for query in queries {
        let status = std::process::Command::new(&psql)
            .arg(cluster.conn_string(db))
            .args(["-X", "-q", "-c", query])
            .stdout(std::process::Stdio::null())
            .status()
            .map_err(|e| PgError(format!("psql: {e}")))?;
        if !status.success() {
            return Err(PgError(format!("psql {query}: {status}")));
        }
    }
    Ok(())
}
