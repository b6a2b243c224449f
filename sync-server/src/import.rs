//! Import: a snapshot file streamed from the request body into staging
//! tables with binary `COPY FROM`, verified (framing, CRC, counts), then
//! turned into a new thoughtspace by `import_space` in the same transaction
//! (contract: `migrations/README.md`). Nothing is written unless the whole
//! file is good. Memory stays flat: each body chunk goes on to Postgres.
//! [`restore`] does the same with an export of a whole space and puts its
//! history back too (log, seqs, head, horizon): backups (`crate::backup`).

use arbor_shared::snapshot::{Decoder, Event, SnapshotError, SnapshotHeader};
use bytes::Bytes;
use futures_util::{SinkExt as _, Stream, StreamExt as _};

use crate::db::{Db, DbError, SpaceInfo, map_pg, replica_to_sql};

/// Why an import was refused. Nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The file is not a well-formed snapshot (framing, checksum, counts,
    /// or `COPY` data Postgres refused).
    #[error("bad snapshot: {0}")]
    Snapshot(String),
    /// The file is larger than the configured limit.
    #[error("the file is larger than {0} bytes")]
    TooLarge(u64),
    /// The request body failed (client gone).
    #[error("request body: {0}")]
    Body(String),
    /// The database refused the rows (typed) or failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<SnapshotError> for ImportError {
    fn from(e: SnapshotError) -> Self {
        ImportError::Snapshot(e.to_string())
    }
}

/// Postgres refusing `COPY` input is the file's fault, not the server's.
/// Its own words go to the log, not to the caller.
fn copy_error(e: tokio_postgres::Error) -> ImportError {
    refused_by_postgres(
        e,
        "import rows refused",
        "a row of the file does not fit its column (bad COPY data)",
    )
}

/// A database error that is the file's fault becomes `message` for the
/// caller, Postgres' own words going to the log under `logged`; any other
/// failure stays a database error.
fn refused_by_postgres(e: tokio_postgres::Error, logged: &str, message: &str) -> ImportError {
    match e.as_db_error() {
        Some(db) => {
            tracing::info!(message = db.message(), code = db.code().code(), "{logged}");
            ImportError::Snapshot(message.into())
        }
        None => ImportError::Db(DbError::Postgres(e)),
    }
}

const STAGING: [&str; 3] = [
    "COPY arbor_import_nodes FROM STDIN (FORMAT binary)",
    "COPY arbor_import_payloads FROM STDIN (FORMAT binary)",
    "COPY arbor_import_log FROM STDIN (FORMAT binary)",
];

/// Creates `dst` from the snapshot file in `body` (at most `max_bytes`),
/// counted against `owner`'s quota of spaces when given.
pub async fn import<S, E>(
    db: &Db,
    dst: &str,
    body: S,
    max_bytes: u64,
    owner: Option<&crate::db::Owner<'_>>,
) -> Result<SpaceInfo, ImportError>
where
    S: Stream<Item = Result<Bytes, E>>,
    E: std::fmt::Display,
{
    load(db, dst, body, max_bytes, owner, None).await
}

/// A row of the restore rule's records (`restores`): the delete undone,
/// the write that needed it, the server's move (seqs).
pub type RestoreRecord = (i64, i64, i64);

/// Creates `dst` as the space an export of a whole space was taken from
/// (a backup, docs/DEPLOY.md): what [`import`] does, and its history too:
/// the log with its seqs, `head_seq`, the horizon of the file's header, the
/// newest logged move, and the restore rule's `records` (which the file
/// does not carry). The same space as a database restore gives back:
/// replicas that synced it catch up from their cursors, or push again what
/// the backup misses, and the server keeps what it has (same stamps).
/// Nothing is written unless all of it is good.
pub async fn restore<S, E>(
    db: &Db,
    dst: &str,
    body: S,
    max_bytes: u64,
    owner: Option<&crate::db::Owner<'_>>,
    records: &[RestoreRecord],
) -> Result<SpaceInfo, ImportError>
where
    S: Stream<Item = Result<Bytes, E>>,
    E: std::fmt::Display,
{
    load(db, dst, body, max_bytes, owner, Some(records)).await
}

/// [`import`], and with `history` [`restore`].
async fn load<S, E>(
    db: &Db,
    dst: &str,
    body: S,
    max_bytes: u64,
    owner: Option<&crate::db::Owner<'_>>,
    history: Option<&[RestoreRecord]>,
) -> Result<SpaceInfo, ImportError>
where
    S: Stream<Item = Result<Bytes, E>>,
    E: std::fmt::Display,
{
    let mut client = db.client().await?;
    let tx = client.transaction().await.map_err(DbError::from)?;
    // Before the body streams in: a tenant at its quota is refused at once.
    if let Some(owner) = owner {
        crate::db::claim_space_slot(&tx, owner).await?;
    }
    tx.execute("SELECT arbor_import_begin()", &[])
        .await
        .map_err(DbError::from)?;
    let mut decoder = Decoder::new();
    let mut header: Option<SnapshotHeader> = None;
    let mut section = 0usize;
    let mut sink = None;
    let mut received = 0u64;
    let mut body = std::pin::pin!(body);
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| ImportError::Body(e.to_string()))?;
        received += chunk.len() as u64;
        if received > max_bytes {
            return Err(ImportError::TooLarge(max_bytes));
        }
        decoder.push(&chunk);
        while let Some(event) = decoder.next_event()? {
            match event {
                Event::Header(h) => header = Some(h),
                Event::SectionStart(_) => {
                    let copy = tx
                        .copy_in::<_, Bytes>(STAGING[section])
                        .await
                        .map_err(DbError::from)?;
                    sink = Some(Box::pin(copy));
                }
                Event::Data(data) => {
                    if let Some(s) = sink.as_mut() {
                        s.send(Bytes::from(data)).await.map_err(copy_error)?;
                    }
                }
                Event::SectionEnd(tag) => {
                    let rows = match sink.take() {
                        Some(mut s) => s.as_mut().finish().await.map_err(copy_error)?,
                        None => 0,
                    };
                    let want = header
                        .as_ref()
                        .map_or(0, |h| [h.nodes, h.payloads, h.log][section]);
                    if rows != want {
                        return Err(ImportError::Snapshot(format!(
                            "section {}: {rows} rows, the header says {want}",
                            char::from(tag)
                        )));
                    }
                    section += 1;
                }
                Event::End(_) => {}
            }
        }
    }
    decoder.finish()?;
    let header = header.ok_or(SnapshotError::Cut(0))?;
    if let Some(root) = header.root {
        // A subtree becomes a space: its root hangs from ROOT.
        tx.execute(
            "UPDATE arbor_import_nodes SET parent = '00000000-0000-0000-0000-000000000000'
             WHERE id = $1",
            &[&uuid::Uuid::from_u128(root.0)],
        )
        .await
        .map_err(DbError::from)?;
    }
    let (hlc, replica) = match header.horizon {
        Some(h) => (
            Some(
                i64::try_from(h.hlc.0)
                    .map_err(|_| ImportError::Snapshot("horizon hlc above 2^63".into()))?,
            ),
            Some(replica_to_sql(h.replica.0)),
        ),
        None => (None, None),
    };
    tx.execute("SELECT import_space($1, $2, $3)", &[&dst, &hlc, &replica])
        .await
        .map_err(|e| {
            if e.code() == Some(&tokio_postgres::error::SqlState::CHECK_VIOLATION) {
                ImportError::Db(DbError::Rejected {
                    code: crate::db::RejectCode::UnknownSpace,
                    message: "a space name is 1..64 of [A-Za-z0-9_.-]".into(),
                })
            } else {
                ImportError::Db(map_pg(e))
            }
        })?;
    if let Some(owner) = owner {
        crate::db::set_tenant(&tx, dst, owner).await?;
    }
    // The file's replica owners stay the owners in the new space.
    if header
        .owners
        .values()
        .any(|s| s.is_empty() || s.len() > 1024 || s.contains('\0'))
    {
        return Err(ImportError::Snapshot(
            "owners: a subject is 1 to 1,024 bytes without NUL".into(),
        ));
    }
    let (replicas, subs): (Vec<i64>, Vec<&str>) = header
        .owners
        .iter()
        .filter(|(r, _)| **r != arbor_shared::ReplicaId::SERVER)
        .map(|(r, sub)| (replica_to_sql(r.0), sub.as_str()))
        .unzip();
    tx.execute(
        "INSERT INTO replicas (space, replica, sub)
         SELECT s.id, o.replica, o.sub FROM spaces s,
                unnest($2::bigint[], $3::text[]) AS o (replica, sub)
         WHERE s.name = $1",
        &[&dst, &replicas, &subs],
    )
    .await
    .map_err(DbError::from)?;
    if let Some(records) = history {
        restore_history(&tx, dst, &header, records).await?;
    }
    // Its place changes before now are not recorded (migration 0013): a
    // subtree cursor below its head loads a snapshot.
    tx.execute(
        "UPDATE spaces SET changes_from = head_seq WHERE name = $1",
        &[&dst],
    )
    .await
    .map_err(DbError::from)?;
    tx.commit().await.map_err(DbError::from)?;
    db.space(dst)
        .await?
        .ok_or_else(|| ImportError::Db(DbError::BadRow("imported space vanished".into())))
}

/// In the import's transaction, after `import_space`: the log of the file
/// with its seqs, the head, the header's horizon, the newest logged move,
/// and the restore records. The clock stays at the newest stamp of the
/// file, as `import_space` set it.
async fn restore_history(
    tx: &tokio_postgres::Transaction<'_>,
    dst: &str,
    header: &SnapshotHeader,
    records: &[RestoreRecord],
) -> Result<(), ImportError> {
    if header.root.is_some() {
        return Err(ImportError::Snapshot(
            "a subtree snapshot is not an export of a space".into(),
        ));
    }
    let head = i64::try_from(header.head_seq)
        .map_err(|_| ImportError::Snapshot("head_seq above 2^63".into()))?;
    let outside: i64 = tx
        .query_one(
            "SELECT count(*) FROM arbor_import_log WHERE seq < 1 OR seq > $1",
            &[&head],
        )
        .await
        .map_err(DbError::from)?
        .get(0);
    if outside > 0 || records.iter().any(|r| r.0 < 1 || r.2 > head) {
        return Err(ImportError::Snapshot(format!(
            "log seqs outside 1..={head} (the header's head_seq)"
        )));
    }
    tx.execute(
        "INSERT INTO ops (space, seq, hlc, replica, kind, node, parent, key, field, value,
                          known_seq, applied, prev_parent, prev_key)
         SELECT s.id, l.seq, l.hlc, l.replica, l.kind, l.node, l.parent, l.key, l.field, l.value,
                l.known_seq, l.applied, l.prev_parent, l.prev_key
         FROM arbor_import_log l, spaces s WHERE s.name = $1",
        &[&dst],
    )
    .await
    .map_err(history_error)?;
    let (hlc, replica) = match header.horizon {
        Some(h) => (
            Some(
                i64::try_from(h.hlc.0)
                    .map_err(|_| ImportError::Snapshot("horizon hlc above 2^63".into()))?,
            ),
            Some(replica_to_sql(h.replica.0)),
        ),
        None => (None, None),
    };
    tx.execute(
        "UPDATE spaces SET head_seq = $2, horizon_hlc = $3, horizon_replica = $4,
                log_hlc = (SELECT l.hlc FROM arbor_import_log l WHERE l.kind = 'm'
                           ORDER BY l.hlc DESC, l.replica DESC LIMIT 1),
                log_replica = (SELECT l.replica FROM arbor_import_log l WHERE l.kind = 'm'
                               ORDER BY l.hlc DESC, l.replica DESC LIMIT 1)
         WHERE name = $1",
        &[&dst, &head, &hlc, &replica],
    )
    .await
    .map_err(DbError::from)?;
    let causes: Vec<i64> = records.iter().map(|r| r.0).collect();
    let triggers: Vec<i64> = records.iter().map(|r| r.1).collect();
    let moves: Vec<i64> = records.iter().map(|r| r.2).collect();
    tx.execute(
        "INSERT INTO restores (space, cause_seq, trigger_seq, restore_seq)
         SELECT s.id, r.cause, r.trig, r.moved
         FROM spaces s, unnest($2::bigint[], $3::bigint[], $4::bigint[]) AS r (cause, trig, moved)
         WHERE s.name = $1",
        &[&dst, &causes, &triggers, &moves],
    )
    .await
    .map_err(history_error)?;
    Ok(())
}

/// Postgres refusing a log row or a restore record (a seq or a stamp twice,
/// a row that breaks a check) is the file's fault; its words go to the log.
fn history_error(e: tokio_postgres::Error) -> ImportError {
    refused_by_postgres(
        e,
        "restored history refused",
        "the log or the restore records have a seq or a stamp twice, or a bad row",
    )
}
