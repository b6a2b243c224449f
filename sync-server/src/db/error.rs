//! [`DbError`] and [`RejectCode`]: what the database layer refuses or fails with.

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
    /// `AR015`: a space over one of its quotas (nodes, log rows, bytes), or
    /// a tenant over its quota of spaces.
    QuotaExceeded,
    /// `AR016`: an op of a push by a token limited to a subtree reaches
    /// outside it (migration 0012).
    OutOfScope,
}

impl RejectCode {
    /// Every code, for mapping tables and tests.
    pub const ALL: [RejectCode; 15] = [
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
        RejectCode::QuotaExceeded,
        RejectCode::OutOfScope,
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
            RejectCode::QuotaExceeded => "AR015",
            RejectCode::OutOfScope => "AR016",
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
            RejectCode::QuotaExceeded => "quota_exceeded",
            RejectCode::OutOfScope => "out_of_scope",
        }
    }

    pub(super) fn from_sqlstate(code: &str) -> Option<RejectCode> {
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
    /// The database URL's TLS settings cannot be used (a missing or bad
    /// certificate file): said at startup.
    #[error("tls: {0}")]
    Tls(String),
    /// No connection could be taken from the pool.
    #[error("pool: {0}")]
    Pool(String),
    /// A migration could not be applied.
    #[error("migration: {0}")]
    Migration(String),
    /// A stored row does not decode (a bug or a hand-edited database).
    #[error("bad row: {0}")]
    BadRow(String),
    /// The stored tree is damaged (`AR014`: parent links that form a
    /// cycle, from a hand-edited or corrupted database).
    #[error("corrupt: {0}")]
    Corrupt(String),
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

    pub(super) fn rejected(code: RejectCode, message: impl Into<String>) -> DbError {
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
        None => with_sources(e),
    }
}

/// An error and its sources, `: `-joined: a connection error's own text
/// ("error performing TLS handshake") does not say why; its source does
/// ("invalid peer certificate: UnknownIssuer"). For logs and startup
/// errors only: responses never carry it.
pub(crate) fn with_sources(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.ends_with(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

pub(crate) fn map_pg(e: tokio_postgres::Error) -> DbError {
    if let Some(db) = e.as_db_error() {
        if let Some(code) = RejectCode::from_sqlstate(db.code().code()) {
            return DbError::rejected(code, db.message());
        }
        if db.code().code() == "AR014" {
            return DbError::Corrupt(db.message().to_owned());
        }
    }
    DbError::Postgres(e)
}
