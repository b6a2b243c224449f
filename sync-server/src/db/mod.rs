//! The database layer: pool, migrations, the typed `apply_ops` call, catch-up
//! and children pages. Encodings and the SQL contract: `migrations/README.md`.

mod migrate;

use std::collections::BTreeMap;

use arbor_shared::tree::TreeState;
use arbor_shared::{MoveOp, NodeId, Op, OrderKey, Payload, Place, ReplicaId, SetOp, Stamp};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::Row;
use uuid::Uuid;

pub use migrate::{MIGRATIONS, Migration, migrate, restore_pass_0002};

/// Why Postgres refused a batch (the `ARnnn` SQLSTATEs of `apply_ops`, plus
/// the checks done before the call). Nothing was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectCode {
    /// `AR001`: ROOT or TRASH as the node of an op.
    ReservedNode,
    /// `AR002`: order key outside 1..=256 bytes or ending in 0x00.
    BadKey,
    /// `AR003`: field name outside 1..=64 bytes.
    BadField,
    /// `AR004`: value longer than 64 KiB.
    ValueTooLong,
    /// `AR005`: stamp at or below the space's horizon (re-stamp and retry).
    Stale,
    /// `AR006`: stamp too far ahead of the database clock.
    ClockAhead,
    /// `AR007`: replica 0 (the server's) or an author other than the caller.
    WrongReplica,
    /// `AR008`: a move's parent or a set's node is not in the tree.
    UnknownNode,
    /// `AR009`: one stamp used by two different ops.
    StampConflict,
    /// `AR010`: no such thoughtspace.
    UnknownSpace,
    /// `AR011`: malformed batch (array shapes, NULLs, too many ops, numbers
    /// out of range).
    BadBatch,
    /// `AR012`: a space of that name exists already (fork, import).
    SpaceExists,
    /// `AR013`: an imported file's rows are inconsistent (a node or register
    /// twice, a cycle).
    BadImport,
}

impl RejectCode {
    /// Every code, for mapping tables and tests.
    pub const ALL: [RejectCode; 13] = [
        RejectCode::ReservedNode,
        RejectCode::BadKey,
        RejectCode::BadField,
        RejectCode::ValueTooLong,
        RejectCode::Stale,
        RejectCode::ClockAhead,
        RejectCode::WrongReplica,
        RejectCode::UnknownNode,
        RejectCode::StampConflict,
        RejectCode::UnknownSpace,
        RejectCode::BadBatch,
        RejectCode::SpaceExists,
        RejectCode::BadImport,
    ];

    /// The SQLSTATE `apply_ops` raises for it.
    pub fn sqlstate(self) -> &'static str {
        match self {
            RejectCode::ReservedNode => "AR001",
            RejectCode::BadKey => "AR002",
            RejectCode::BadField => "AR003",
            RejectCode::ValueTooLong => "AR004",
            RejectCode::Stale => "AR005",
            RejectCode::ClockAhead => "AR006",
            RejectCode::WrongReplica => "AR007",
            RejectCode::UnknownNode => "AR008",
            RejectCode::StampConflict => "AR009",
            RejectCode::UnknownSpace => "AR010",
            RejectCode::BadBatch => "AR011",
            RejectCode::SpaceExists => "AR012",
            RejectCode::BadImport => "AR013",
        }
    }

    /// The stable snake_case name clients see.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectCode::ReservedNode => "reserved_node",
            RejectCode::BadKey => "bad_key",
            RejectCode::BadField => "bad_field",
            RejectCode::ValueTooLong => "value_too_long",
            RejectCode::Stale => "stale",
            RejectCode::ClockAhead => "clock_ahead",
            RejectCode::WrongReplica => "wrong_replica",
            RejectCode::UnknownNode => "unknown_node",
            RejectCode::StampConflict => "stamp_conflict",
            RejectCode::UnknownSpace => "unknown_space",
            RejectCode::BadBatch => "bad_batch",
            RejectCode::SpaceExists => "space_exists",
            RejectCode::BadImport => "bad_import",
        }
    }

    fn from_sqlstate(code: &str) -> Option<RejectCode> {
        RejectCode::ALL.into_iter().find(|c| c.sqlstate() == code)
    }
}

impl std::fmt::Display for RejectCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Errors of the database layer.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The input was refused; nothing was written.
    #[error("{code}: {message}")]
    Rejected {
        /// Why.
        code: RejectCode,
        /// Postgres' message (names the offending op's index).
        message: String,
    },
    /// Postgres or the connection failed.
    #[error("postgres: {}", pg_message(.0))]
    Postgres(#[from] tokio_postgres::Error),
    /// No connection could be taken from the pool.
    #[error("pool: {0}")]
    Pool(String),
    /// A migration could not be applied.
    #[error("migration: {0}")]
    Migration(String),
    /// A stored row does not decode (a bug or a hand-edited database).
    #[error("bad row: {0}")]
    BadRow(String),
    /// The group commit this push was part of failed before or at commit
    /// (the connection or Postgres failed): nothing of it committed.
    #[error("group commit failed: {0}")]
    GroupFailed(String),
}

impl DbError {
    /// The rejection code, if the input was refused.
    pub fn reject_code(&self) -> Option<RejectCode> {
        match self {
            DbError::Rejected { code, .. } => Some(*code),
            _ => None,
        }
    }

    fn rejected(code: RejectCode, message: impl Into<String>) -> DbError {
        DbError::Rejected {
            code,
            message: message.into(),
        }
    }
}

/// Postgres' own message for an error (the driver's Display hides it).
pub(crate) fn pg_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => e.to_string(),
    }
}

pub(crate) fn map_pg(e: tokio_postgres::Error) -> DbError {
    if let Some(db) = e.as_db_error() {
        if let Some(code) = RejectCode::from_sqlstate(db.code().code()) {
            return DbError::rejected(code, db.message());
        }
    }
    DbError::Postgres(e)
}

/// One `apply_ops` call on `client` (a connection, transaction or
/// savepoint).
async fn apply_on<C: deadpool_postgres::GenericClient>(
    client: &C,
    space: &str,
    author: Option<ReplicaId>,
    ops: &[Op],
) -> Result<Vec<Committed>, DbError> {
    let a = OpArrays::encode(ops)?;
    let author = author.map(|r| replica_to_sql(r.0));
    let stmt = client
        .prepare_cached(
            "SELECT seq, hlc, replica, kind, node, parent, key, field, value, known_seq, origin
             FROM apply_ops($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .await?;
    let rows = client
        .query(
            &stmt,
            &[
                &space,
                &author,
                &a.hlc,
                &a.replica,
                &a.kind,
                &a.node,
                &a.parent,
                &a.key,
                &a.field,
                &a.value,
                &a.known_seq,
            ],
        )
        .await
        .map_err(map_pg)?;
    rows.iter().map(committed_from_row).collect()
}

/// How an op in [`Db::apply`]'s answer got there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Committed by this call.
    New,
    /// Already stored before this call (idempotent re-push): its old seq.
    Duplicate,
    /// Appended by the restore rule (authored by the server, replica 0).
    Restore,
}

/// A committed op and its seq in its thoughtspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    /// The op's place in the space's gapless sequence (1, 2, ...).
    pub seq: u64,
    /// The op.
    pub op: Op,
    /// How it got into this answer.
    pub origin: Origin,
}

/// A thoughtspace's row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpaceInfo {
    /// Internal id (keys every row of the space).
    pub id: i64,
    /// Its name (the URL segment).
    pub name: String,
    /// Highest committed seq.
    pub head_seq: u64,
    /// Ops at or below this stamp are refused as stale.
    pub horizon: Option<Stamp>,
    /// The lowest cursor catch-up can serve (`None`: any, even no cursor:
    /// the log holds every op from seq 1 of a space created empty). An
    /// imported space's state is not in its log, and a truncated log lacks
    /// its first ops: a `hello` with a lower cursor, or none, must load a
    /// snapshot.
    pub min_cursor: Option<u64>,
}

/// A page of the catch-up feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpsPage {
    /// Ops with seq above the cursor, in seq order.
    pub ops: Vec<Committed>,
    /// The space's head seq when the page was read.
    pub head_seq: u64,
    /// The lowest cursor catch-up can serve ([`SpaceInfo::min_cursor`]).
    pub min_cursor: Option<u64>,
}

/// A child in sibling order with its registers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildRow {
    /// The child.
    pub id: NodeId,
    /// Its order key.
    pub key: OrderKey,
    /// Its registers, sorted by field.
    pub payloads: Vec<(String, Payload)>,
}

/// Stored replica ids are the u64 with the sign bit flipped, so that bigint
/// order is u64 order (stamps compare as `(hlc, replica)` in SQL).
pub fn replica_to_sql(r: u64) -> i64 {
    (r as i64) ^ i64::MIN
}

/// Inverse of [`replica_to_sql`].
pub fn replica_from_sql(r: i64) -> u64 {
    (r ^ i64::MIN) as u64
}

fn uuid(n: NodeId) -> Uuid {
    Uuid::from_u128(n.0)
}

fn node(u: Uuid) -> NodeId {
    NodeId(u.as_u128())
}

fn u64_of(v: i64, what: &str) -> Result<u64, DbError> {
    u64::try_from(v).map_err(|_| DbError::BadRow(format!("negative {what}: {v}")))
}

fn stamp_from(hlc: i64, replica: i64) -> Result<Stamp, DbError> {
    Ok(Stamp::new(u64_of(hlc, "hlc")?, replica_from_sql(replica)))
}

/// Decodes a row of `apply_ops` or of the catch-up query: columns seq, hlc,
/// replica, kind, node, parent, key, field, value, known_seq[, origin].
fn committed_from_row(row: &Row) -> Result<Committed, DbError> {
    let seq = u64_of(row.try_get(0)?, "seq")?;
    let stamp = stamp_from(row.try_get(1)?, row.try_get(2)?)?;
    let kind: i8 = row.try_get(3)?;
    let node_id = node(row.try_get(4)?);
    let known_seq = u64_of(row.try_get(9)?, "known_seq")?;
    let op = match kind as u8 {
        b'm' => {
            let parent: Option<Uuid> = row.try_get(5)?;
            let key: Option<Vec<u8>> = row.try_get(6)?;
            let (Some(parent), Some(key)) = (parent, key) else {
                return Err(DbError::BadRow(format!("move {seq} without parent or key")));
            };
            let key = OrderKey::new(&key)
                .map_err(|e| DbError::BadRow(format!("move {seq}: key: {e}")))?;
            Op::Move(MoveOp {
                stamp,
                known_seq,
                node: node_id,
                parent: node(parent),
                key,
            })
        }
        b's' => {
            let field: Option<String> = row.try_get(7)?;
            let Some(field) = field else {
                return Err(DbError::BadRow(format!("set {seq} without field")));
            };
            Op::Set(SetOp {
                stamp,
                known_seq,
                node: node_id,
                field,
                value: row.try_get(8)?,
            })
        }
        other => return Err(DbError::BadRow(format!("op {seq}: kind {other}"))),
    };
    let origin = if row.len() > 10 {
        match row.try_get::<_, i8>(10)? as u8 {
            b'd' => Origin::Duplicate,
            b'r' => Origin::Restore,
            _ => Origin::New,
        }
    } else if stamp.replica == ReplicaId::SERVER {
        Origin::Restore
    } else {
        Origin::New
    };
    Ok(Committed { seq, op, origin })
}

/// A batch as the column arrays `apply_ops` takes (encodings in
/// `migrations/README.md`): element `i` of every array is op `i`.
#[derive(Debug, Default, Clone)]
pub struct OpArrays {
    /// HLC of each stamp (below 2^63).
    pub hlc: Vec<i64>,
    /// Replica of each stamp, sign bit flipped ([`replica_to_sql`]).
    pub replica: Vec<i64>,
    /// `'m'` (move) or `'s'` (set), as a Postgres `"char"`.
    pub kind: Vec<i8>,
    /// The node.
    pub node: Vec<Uuid>,
    /// Moves: the parent (NULL for sets).
    pub parent: Vec<Option<Uuid>>,
    /// Moves: the order key bytes (NULL for sets).
    pub key: Vec<Option<Vec<u8>>>,
    /// Sets: the field (NULL for moves).
    pub field: Vec<Option<String>>,
    /// Sets: the value (NULL clears; NULL for moves).
    pub value: Vec<Option<String>>,
    /// The author's known_seq.
    pub known_seq: Vec<i64>,
}

impl OpArrays {
    /// Encodes a batch; refuses numbers Postgres' bigint cannot hold.
    pub fn encode(ops: &[Op]) -> Result<OpArrays, DbError> {
        let mut a = OpArrays::default();
        for (i, op) in ops.iter().enumerate() {
            let stamp = op.stamp();
            let hlc = i64::try_from(stamp.hlc.0).map_err(|_| {
                DbError::rejected(RejectCode::BadBatch, format!("op {i}: hlc above 2^63"))
            })?;
            let known = i64::try_from(op.known_seq()).map_err(|_| {
                DbError::rejected(
                    RejectCode::BadBatch,
                    format!("op {i}: known_seq above 2^63"),
                )
            })?;
            a.hlc.push(hlc);
            a.replica.push(replica_to_sql(stamp.replica.0));
            a.node.push(uuid(op.node()));
            a.known_seq.push(known);
            match op {
                Op::Move(m) => {
                    a.kind.push(b'm' as i8);
                    a.parent.push(Some(uuid(m.parent)));
                    a.key.push(Some(m.key.as_bytes().to_vec()));
                    a.field.push(None);
                    a.value.push(None);
                }
                Op::Set(s) => {
                    a.kind.push(b's' as i8);
                    a.parent.push(None);
                    a.key.push(None);
                    a.field.push(Some(s.field.clone()));
                    a.value.push(s.value.clone());
                }
            }
        }
        Ok(a)
    }
}

/// Largest batch `apply_ops` takes (its own limit; checked here first).
pub const MAX_BATCH: usize = 10_000;

/// The database: a connection pool over the schema of `migrations/`.
#[derive(Clone)]
pub struct Db {
    pool: Pool,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db").finish_non_exhaustive()
    }
}

impl Db {
    /// A pool of at most `max_size` connections (opened lazily). Each
    /// session has `client_connection_check_interval` at 1 s unless the
    /// config's `options` set it.
    pub fn new(mut config: tokio_postgres::Config, max_size: usize) -> Result<Db, DbError> {
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
        let manager = Manager::from_config(
            config,
            tokio_postgres::NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(max_size.max(1))
            .build()
            .map_err(|e| DbError::Pool(e.to_string()))?;
        Ok(Db { pool })
    }

    /// [`Db::new`], then applies pending migrations (safe at every start).
    pub async fn open(config: tokio_postgres::Config, max_size: usize) -> Result<Db, DbError> {
        let db = Db::new(config, max_size)?;
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
        self.pool
            .get()
            .await
            .map_err(|e| DbError::Pool(e.to_string()))
    }

    /// Creates the thoughtspace if it does not exist; returns its row.
    pub async fn create_space(&self, name: &str) -> Result<SpaceInfo, DbError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached("INSERT INTO spaces (name) VALUES ($1) ON CONFLICT (name) DO NOTHING")
            .await?;
        client.execute(&stmt, &[&name]).await.map_err(|e| {
            if e.code() == Some(&tokio_postgres::error::SqlState::CHECK_VIOLATION) {
                DbError::rejected(
                    RejectCode::UnknownSpace,
                    "a space name is 1..64 of [A-Za-z0-9_.-]",
                )
            } else {
                map_pg(e)
            }
        })?;
        // Back to the pool first: `space` takes a connection of its own (a
        // pool of one would wait for itself).
        drop(client);
        self.space(name).await?.ok_or_else(|| {
            DbError::rejected(RejectCode::UnknownSpace, format!("space {name} vanished"))
        })
    }

    /// The thoughtspace's row, if it exists.
    pub async fn space(&self, name: &str) -> Result<Option<SpaceInfo>, DbError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT s.id, s.name, s.head_seq, s.horizon_hlc, s.horizon_replica,
                        (SELECT min(o.seq) FROM ops o WHERE o.space = s.id)
                 FROM spaces s WHERE s.name = $1",
            )
            .await?;
        let Some(row) = client.query_opt(&stmt, &[&name]).await? else {
            return Ok(None);
        };
        let horizon = match (
            row.try_get::<_, Option<i64>>(3)?,
            row.try_get::<_, Option<i64>>(4)?,
        ) {
            (Some(h), Some(r)) => Some(stamp_from(h, r)?),
            _ => None,
        };
        let head_seq = u64_of(row.try_get(2)?, "head_seq")?;
        // A horizon means the log does not start from an empty space: the
        // space was imported (its state came from a file), or its log was
        // truncated below the horizon.
        let min_cursor = match (horizon, row.try_get::<_, Option<i64>>(5)?) {
            (None, _) => None,
            (Some(_), Some(first)) => Some(u64_of(first, "seq")?.saturating_sub(1)),
            (Some(_), None) => Some(head_seq),
        };
        Ok(Some(SpaceInfo {
            id: row.try_get(0)?,
            name: row.try_get(1)?,
            head_seq,
            horizon,
            min_cursor,
        }))
    }

    async fn space_id(&self, name: &str) -> Result<SpaceInfo, DbError> {
        self.space(name).await?.ok_or_else(|| {
            DbError::rejected(RejectCode::UnknownSpace, format!("unknown_space: {name}"))
        })
    }

    /// Applies a batch through `apply_ops` in one transaction: validation,
    /// idempotency, the CRDT apply and the restore rule. `author`, when
    /// given, must be every op's replica. Returns every committed op of the
    /// answer in seq order: the batch's new ops, its already-stored ops with
    /// their old seqs, and restores the batch caused.
    pub async fn apply(
        &self,
        space: &str,
        author: Option<ReplicaId>,
        ops: &[Op],
    ) -> Result<Vec<Committed>, DbError> {
        if ops.len() > MAX_BATCH {
            return Err(DbError::rejected(
                RejectCode::BadBatch,
                format!("batch_too_large: {} ops, at most {MAX_BATCH}", ops.len()),
            ));
        }
        let client = self.client().await?;
        apply_on(&client, space, author, ops).await
    }

    /// Commits several pushes to `space` in one transaction (group commit:
    /// one WAL flush for all of them), each as if applied alone in the given
    /// order: each runs under its own savepoint, so a refused push changes
    /// nothing and the others still commit. The answers are in push order;
    /// if the commit itself fails, every push gets that error.
    pub async fn apply_group(
        &self,
        space: &str,
        pushes: &[(Option<ReplicaId>, Vec<Op>)],
    ) -> Vec<Result<Vec<Committed>, DbError>> {
        if let [(author, ops)] = pushes {
            return vec![self.apply(space, *author, ops).await];
        }
        let mut client = match self.client().await {
            Ok(c) => c,
            Err(e) => {
                return pushes
                    .iter()
                    .map(|_| Err(DbError::GroupFailed(e.to_string())))
                    .collect();
            }
        };
        let mut tx = match client.transaction().await {
            Ok(t) => t,
            Err(e) => {
                let e = DbError::from(e);
                return pushes
                    .iter()
                    .map(|_| Err(DbError::GroupFailed(e.to_string())))
                    .collect();
            }
        };
        let mut answers = Vec::with_capacity(pushes.len());
        for (author, ops) in pushes {
            if ops.len() > MAX_BATCH {
                answers.push(Err(DbError::rejected(
                    RejectCode::BadBatch,
                    format!("batch_too_large: {} ops, at most {MAX_BATCH}", ops.len()),
                )));
                continue;
            }
            let answer = match tx.savepoint("push").await {
                Ok(sp) => match apply_on(&sp, space, *author, ops).await {
                    Ok(committed) => sp.commit().await.map(|()| committed).map_err(DbError::from),
                    // Dropping the savepoint rolls it back.
                    Err(e) => Err(e),
                },
                Err(e) => Err(DbError::from(e)),
            };
            answers.push(answer);
        }
        if let Err(e) = tx.commit().await {
            let e = DbError::from(e);
            return pushes
                .iter()
                .map(|_| Err(DbError::GroupFailed(e.to_string())))
                .collect();
        }
        answers
    }

    /// Catch-up: up to `limit` ops with seq above `after`, in seq order.
    pub async fn ops_after(&self, space: &str, after: u64, limit: u32) -> Result<OpsPage, DbError> {
        let info = self.space_id(space).await?;
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT seq, hlc, replica, kind, node, parent, key, field, value, known_seq
                 FROM ops WHERE space = $1 AND seq > $2 ORDER BY seq LIMIT $3",
            )
            .await?;
        let rows = client
            .query(&stmt, &[&info.id, &after, &i64::from(limit)])
            .await?;
        let ops = rows
            .iter()
            .map(committed_from_row)
            .collect::<Result<_, _>>()?;
        Ok(OpsPage {
            ops,
            head_seq: info.head_seq,
            min_cursor: info.min_cursor,
        })
    }

    /// A page of `parent`'s children in `(key, id)` order after the cursor,
    /// each with its registers.
    pub async fn children(
        &self,
        space: &str,
        parent: NodeId,
        after: Option<(&OrderKey, NodeId)>,
        limit: u32,
    ) -> Result<Vec<ChildRow>, DbError> {
        let info = self.space_id(space).await?;
        let client = self.client().await?;
        // Two statements rather than `$3 IS NULL OR ...`, which would keep
        // the planner from seeking the (space, parent, key, id) index.
        const PAGE: &str = "SELECT page.id, page.key, p.field, p.value, p.hlc, p.replica
             FROM page LEFT JOIN payloads p ON p.space = $1 AND p.node = page.id
             ORDER BY page.key, page.id, p.field";
        let limit = i64::from(limit);
        let rows = match after {
            None => {
                let stmt = client
                    .prepare_cached(&format!(
                        "WITH page AS (SELECT id, key FROM nodes WHERE space = $1 AND parent = $2
                                       ORDER BY key, id LIMIT $3) {PAGE}"
                    ))
                    .await?;
                client
                    .query(&stmt, &[&info.id, &uuid(parent), &limit])
                    .await?
            }
            Some((key, id)) => {
                let stmt = client
                    .prepare_cached(&format!(
                        "WITH page AS (SELECT id, key FROM nodes WHERE space = $1 AND parent = $2
                                         AND (key, id) > ($4, $5)
                                       ORDER BY key, id LIMIT $3) {PAGE}"
                    ))
                    .await?;
                client
                    .query(
                        &stmt,
                        &[&info.id, &uuid(parent), &limit, &key.as_bytes(), &uuid(id)],
                    )
                    .await?
            }
        };
        let mut out: Vec<ChildRow> = Vec::new();
        for row in rows {
            let id = node(row.try_get(0)?);
            if out.last().is_none_or(|c| c.id != id) {
                let key: Vec<u8> = row.try_get(1)?;
                let key = OrderKey::new(&key)
                    .map_err(|e| DbError::BadRow(format!("node {id}: key: {e}")))?;
                out.push(ChildRow {
                    id,
                    key,
                    payloads: Vec::new(),
                });
            }
            if let Some(field) = row.try_get::<_, Option<String>>(2)? {
                let stamp = stamp_from(row.try_get(4)?, row.try_get(5)?)?;
                let value = row.try_get(3)?;
                if let Some(c) = out.last_mut() {
                    c.payloads.push((field, Payload { stamp, value }));
                }
            }
        }
        Ok(out)
    }

    /// Every node place and register of the space (tests, export).
    pub async fn state(&self, space: &str) -> Result<TreeState, DbError> {
        let info = self.space_id(space).await?;
        let client = self.client().await?;
        let mut nodes = BTreeMap::new();
        for row in client
            .query(
                "SELECT id, parent, key FROM nodes WHERE space = $1",
                &[&info.id],
            )
            .await?
        {
            let id = node(row.try_get(0)?);
            let key: Vec<u8> = row.try_get(2)?;
            let key =
                OrderKey::new(&key).map_err(|e| DbError::BadRow(format!("node {id}: key: {e}")))?;
            nodes.insert(
                id,
                Place {
                    parent: node(row.try_get(1)?),
                    key,
                },
            );
        }
        let mut payloads = BTreeMap::new();
        for row in client
            .query(
                "SELECT node, field, value, hlc, replica FROM payloads WHERE space = $1",
                &[&info.id],
            )
            .await?
        {
            payloads.insert(
                (node(row.try_get(0)?), row.try_get(1)?),
                Payload {
                    stamp: stamp_from(row.try_get(3)?, row.try_get(4)?)?,
                    value: row.try_get(2)?,
                },
            );
        }
        Ok(TreeState { nodes, payloads })
    }

    /// Copies `src` into a new space `dst` (tree, registers, the op log with
    /// its seqs, restores, head and horizon) in one transaction.
    pub async fn fork(&self, src: &str, dst: &str) -> Result<SpaceInfo, DbError> {
        let client = self.client().await?;
        let stmt = client.prepare_cached("SELECT fork_space($1, $2)").await?;
        client.query_one(&stmt, &[&src, &dst]).await.map_err(|e| {
            if e.code() == Some(&tokio_postgres::error::SqlState::CHECK_VIOLATION) {
                DbError::rejected(
                    RejectCode::BadBatch,
                    "a space name is 1..64 of [A-Za-z0-9_.-]",
                )
            } else {
                map_pg(e)
            }
        })?;
        self.space_id(dst).await
    }

    /// Raises the space's horizon (never lowers it): ops at or below it are
    /// refused as stale from now on.
    pub async fn raise_horizon(&self, space: &str, horizon: Stamp) -> Result<(), DbError> {
        let info = self.space_id(space).await?;
        let hlc = i64::try_from(horizon.hlc.0)
            .map_err(|_| DbError::rejected(RejectCode::BadBatch, "horizon hlc above 2^63"))?;
        let rep = replica_to_sql(horizon.replica.0);
        let mut client = self.client().await?;
        // Under the space's ingest lock: an apply that read the old horizon
        // commits before the new one is visible, never after.
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&info.id])
            .await?;
        tx.execute(
            "UPDATE spaces SET horizon_hlc = $2, horizon_replica = $3
             WHERE id = $1 AND (horizon_hlc IS NULL OR (horizon_hlc, horizon_replica) < ($2, $3))",
            &[&info.id, &hlc, &rep],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }
}
