//! The replica's SQLite schema and its migrations (`PRAGMA user_version`).
//!
//! Encodings match the server's (`migrations/README.md`): node ids are
//! 16-byte blobs, order keys blobs compared bytewise, HLCs signed 64-bit
//! integers, replica ids stored with the sign bit flipped so `(hlc,
//! replica)` row order is stamp order.

use rusqlite::Connection;

/// Each migration's SQL, in order; `user_version` counts those applied.
const MIGRATIONS: &[&str] = &[
    // 1: the replica.
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID;
     -- The tree: one row per node in it (ROOT and TRASH are implicit). A
     -- parent may be a node not in the table (its create has not arrived).
     CREATE TABLE nodes (
         id     BLOB PRIMARY KEY,
         parent BLOB NOT NULL,
         key    BLOB NOT NULL
     ) WITHOUT ROWID;
     CREATE INDEX nodes_children ON nodes (parent, key, id);
     -- Last-writer-wins registers.
     CREATE TABLE payloads (
         node    BLOB NOT NULL,
         field   TEXT NOT NULL,
         value   TEXT,
         hlc     INTEGER NOT NULL,
         replica INTEGER NOT NULL,
         PRIMARY KEY (node, field)
     ) WITHOUT ROWID;
     -- The move log above the horizon, with each move's effect (for undo).
     CREATE TABLE ops (
         hlc         INTEGER NOT NULL,
         replica     INTEGER NOT NULL,
         node        BLOB NOT NULL,
         parent      BLOB NOT NULL,
         key         BLOB NOT NULL,
         applied     INTEGER NOT NULL,
         prev_parent BLOB,
         prev_key    BLOB,
         PRIMARY KEY (hlc, replica)
     ) WITHOUT ROWID;
     -- Local ops the server has not committed yet, in creation order.
     CREATE TABLE outbox (
         ord     INTEGER PRIMARY KEY AUTOINCREMENT,
         hlc     INTEGER NOT NULL,
         replica INTEGER NOT NULL,
         op      TEXT NOT NULL
     );
     CREATE UNIQUE INDEX outbox_stamp ON outbox (hlc, replica);",
    // 2: local ops the server refused for good, moved out of the outbox and
    // kept for the application to show (until it clears them).
    "CREATE TABLE rejected (
         ord     INTEGER PRIMARY KEY AUTOINCREMENT,
         hlc     INTEGER NOT NULL,
         replica INTEGER NOT NULL,
         op      TEXT NOT NULL,
         code    TEXT NOT NULL,
         message TEXT NOT NULL
     );",
    // 3: the conflict list (what this replica's edits lost, the server's
    // restores), newest last, trimmed to the last 1,000.
    "CREATE TABLE conflicts (
         ord    INTEGER PRIMARY KEY AUTOINCREMENT,
         seq    INTEGER NOT NULL,
         kind   TEXT NOT NULL,
         node   BLOB NOT NULL,
         field  TEXT,
         lost   TEXT,
         kept   TEXT,
         parent BLOB,
         by     TEXT
     );
     -- This replica's newest write of each node's place (field '') and of
     -- each field that came back committed, with its stamp and seq:
     -- another replica's op that did not know that seq was concurrent
     -- with it.
     CREATE TABLE own_writes (
         node    BLOB NOT NULL,
         field   TEXT NOT NULL,
         seq     INTEGER NOT NULL,
         hlc     INTEGER NOT NULL,
         replica INTEGER NOT NULL,
         PRIMARY KEY (node, field)
     ) WITHOUT ROWID;",
    // 4: local history: every committed op this replica has seen (the
    // snapshot's log section and every op applied since), by seq, for a
    // node's history without the server (`replica/history.rs`). A move has
    // `parent` and `key`, a set `field` (and `value`, NULL: cleared).
    "CREATE TABLE history (
         seq       INTEGER PRIMARY KEY,
         hlc       INTEGER NOT NULL,
         replica   INTEGER NOT NULL,
         known_seq INTEGER NOT NULL,
         node      BLOB NOT NULL,
         parent    BLOB,
         key       BLOB,
         field     TEXT,
         value     TEXT,
         restore   INTEGER NOT NULL,
         author    TEXT,
         applied   INTEGER
     );
     CREATE INDEX history_node ON history (node, seq);
     -- The last applied move of a node (conflict detection, per remote
     -- move): without it, a scan of the log per op.
     CREATE INDEX ops_node ON ops (node, hlc, replica);",
    // 5: the calls record (`replica/calls.rs`): application calls whose
    // edit was committed, by the caller's key, with the node a create
    // made; the last 1,000.
    "CREATE TABLE calls (
         ord     INTEGER PRIMARY KEY AUTOINCREMENT,
         key     TEXT NOT NULL UNIQUE,
         created BLOB
     );",
];

/// The schema version this build writes.
pub const VERSION: i64 = MIGRATIONS.len() as i64;

/// Errors of [`migrate`].
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// The file was written by a newer build.
    #[error("the replica file has schema version {0}, newer than this build's {VERSION}")]
    TooNew(i64),
    /// SQLite failed.
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
}

/// Sets the connection up (WAL, foreign-key-free, `synchronous`) and
/// applies pending migrations, each in its own transaction.
pub fn migrate(conn: &mut Connection, synchronous_full: bool) -> Result<(), SchemaError> {
    // WAL: readers never block the writer, and a commit is one append.
    // synchronous=NORMAL keeps the file consistent across crashes; a power
    // loss can drop the last few commits (FULL is the option for that).
    // In the browser the VFS (OPFS sync access handles) has no shared
    // memory, and SQLite uses WAL there only in exclusive locking mode; one
    // worker owns the file anyway. Without it the journal stays a rollback
    // journal: several OPFS flushes per commit instead of none.
    #[cfg(target_arch = "wasm32")]
    conn.pragma_update(None, "locking_mode", "EXCLUSIVE")?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(
        None,
        "synchronous",
        if synchronous_full { "FULL" } else { "NORMAL" },
    )?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version > VERSION {
        return Err(SchemaError::TooNew(version));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i as i64 + 1)?;
        tx.commit()?;
    }
    Ok(())
}
