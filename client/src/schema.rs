//! The replica's SQLite schema and its migrations (`PRAGMA user_version`).
//!
//! Encodings match the server's (`migrations/README.md`): node ids are
//! 16-byte blobs, order keys blobs compared bytewise, HLCs signed 64-bit
//! integers, replica ids stored with the sign bit flipped so `(hlc,
//! replica)` row order is stamp order.

use rusqlite::Connection;

/// The value index's lookup indexes and the triggers that keep it: made
/// by migration 6, dropped before a snapshot load and made again after it
/// (which fills the index in one pass: [`VALUE_INDEX_FILL`]).
macro_rules! value_index_ddl {
    () => {
        "CREATE INDEX value_index_value ON value_index (field, norm, node);
         CREATE INDEX value_index_child ON value_index (parent, field, norm, key, node);
         CREATE TRIGGER value_search_insert AFTER INSERT ON value_index BEGIN
             INSERT INTO value_search (rowid, norm) VALUES (NEW.id, NEW.norm);
         END;
         CREATE TRIGGER value_search_delete AFTER DELETE ON value_index BEGIN
             DELETE FROM value_search WHERE rowid = OLD.id;
         END;
         CREATE TRIGGER value_index_insert AFTER INSERT ON payloads
         WHEN NEW.value IS NOT NULL BEGIN
             DELETE FROM value_index WHERE node = NEW.node AND field = NEW.field;
             INSERT INTO value_index (node, field, norm, parent, key)
             VALUES (NEW.node, NEW.field, arbor_normalize(NEW.value),
                     (SELECT parent FROM nodes WHERE id = NEW.node),
                     (SELECT key FROM nodes WHERE id = NEW.node));
         END;
         CREATE TRIGGER value_index_update AFTER UPDATE OF value ON payloads
         WHEN NEW.value IS NOT OLD.value BEGIN
             DELETE FROM value_index WHERE node = OLD.node AND field = OLD.field;
             INSERT INTO value_index (node, field, norm, parent, key)
             SELECT NEW.node, NEW.field, arbor_normalize(NEW.value),
                    (SELECT parent FROM nodes WHERE id = NEW.node),
                    (SELECT key FROM nodes WHERE id = NEW.node)
             WHERE NEW.value IS NOT NULL;
         END;
         CREATE TRIGGER value_index_delete AFTER DELETE ON payloads BEGIN
             DELETE FROM value_index WHERE node = OLD.node AND field = OLD.field;
         END;
         CREATE TRIGGER value_index_node_insert AFTER INSERT ON nodes BEGIN
             UPDATE value_index SET parent = NEW.parent, key = NEW.key WHERE node = NEW.id;
         END;
         CREATE TRIGGER value_index_node_update AFTER UPDATE OF parent, key ON nodes
         WHEN NEW.parent IS NOT OLD.parent OR NEW.key IS NOT OLD.key BEGIN
             UPDATE value_index SET parent = NEW.parent, key = NEW.key WHERE node = NEW.id;
         END;
         CREATE TRIGGER value_index_node_delete AFTER DELETE ON nodes BEGIN
             UPDATE value_index SET parent = NULL, key = NULL WHERE node = OLD.id;
         END;"
    };
}

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
    // 6: the value index (`replica/values.rs`): every set field's value,
    // normalized (`normalize.rs`), with its node's place, kept by triggers
    // in the transaction that writes the field or moves the node, so every
    // write path (local edits, remote apply with undo and redo, restores,
    // subtree changes) keeps it exact. `parent` and `key` are NULL while
    // the node is not in the tree (its field arrived before its create).
    concat!(
        "CREATE TABLE value_index (
             id     INTEGER PRIMARY KEY,
             node   BLOB NOT NULL,
             field  TEXT NOT NULL,
             norm   TEXT NOT NULL,
             parent BLOB,
             key    BLOB,
             UNIQUE (node, field)
         );
         -- Full-text search over the normalized values (`replica/search.rs`):
         -- contentless (the text is in value_index), rows deleted by id.
         CREATE VIRTUAL TABLE value_search USING fts5(
             norm, content = '', contentless_delete = 1,
             tokenize = 'unicode61 remove_diacritics 0'
         );",
        value_index_ddl!(),
        "INSERT INTO value_index (node, field, norm, parent, key)
         SELECT p.node, p.field, arbor_normalize(p.value), n.parent, n.key
         FROM payloads p LEFT JOIN nodes n ON n.id = p.node
         WHERE p.value IS NOT NULL;"
    ),
];

/// [`value_index_ddl`]'s indexes and triggers (after a snapshot load).
pub const VALUE_INDEX_DDL: &str = value_index_ddl!();

/// Drops what [`VALUE_INDEX_DDL`] makes and empties the index (before a
/// snapshot load: a trigger per inserted row would cost more than one
/// pass at the end).
pub const VALUE_INDEX_DROP: &str = "DROP INDEX IF EXISTS value_index_value;
     DROP INDEX IF EXISTS value_index_child;
     DROP TRIGGER IF EXISTS value_index_insert;
     DROP TRIGGER IF EXISTS value_index_update;
     DROP TRIGGER IF EXISTS value_index_delete;
     DROP TRIGGER IF EXISTS value_index_node_insert;
     DROP TRIGGER IF EXISTS value_index_node_update;
     DROP TRIGGER IF EXISTS value_index_node_delete;
     DROP TRIGGER IF EXISTS value_search_insert;
     DROP TRIGGER IF EXISTS value_search_delete;
     DELETE FROM value_index;
     INSERT INTO value_search (value_search) VALUES ('delete-all');";

/// Marks the (emptied) value index as pending after a bulk load: its
/// triggers are made again, so later writes keep what they touch, and
/// `Replica::build_value_index_step` fills the rest in chunks, in
/// `(node, field)` order (the replica's images and cold starts leave it to
/// the client: an image carrying the index would be twice the size).
pub const VALUE_INDEX_PENDING: &str =
    "INSERT OR REPLACE INTO meta (key, value) VALUES ('value_index_pending', 1);
     DELETE FROM meta WHERE key IN ('value_index_after_node', 'value_index_after_field');";

/// Fills the emptied value index from `payloads` and `nodes`, and its
/// full-text index from it, in one pass each.
pub const VALUE_INDEX_FILL: &str = "INSERT INTO value_index (node, field, norm, parent, key)
     SELECT p.node, p.field, arbor_normalize(p.value), n.parent, n.key
     FROM payloads p LEFT JOIN nodes n ON n.id = p.node
     WHERE p.value IS NOT NULL;
     INSERT INTO value_search (rowid, norm) SELECT id, norm FROM value_index;";

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
    register_functions(conn)?;
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

/// Registers the SQL functions the schema's triggers call
/// (`arbor_normalize`, [`crate::normalize::normalize`]) on `conn`: every
/// connection that writes `payloads` or `nodes` needs them ([`migrate`]
/// does it). Another SQLite tool may read a replica file, but not write
/// those two tables.
pub fn register_functions(conn: &Connection) -> rusqlite::Result<()> {
    use rusqlite::functions::FunctionFlags;
    conn.create_scalar_function(
        "arbor_normalize",
        1,
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
        |ctx| {
            let value: Option<String> = ctx.get(0)?;
            Ok(value.map(|v| crate::normalize::normalize(&v)))
        },
    )
}
