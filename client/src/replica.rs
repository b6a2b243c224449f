//! [`Replica`]: the local replica over SQLite. Every local op is applied and
//! queued in the outbox in one transaction; remote ops are applied in seq
//! order; change notifications say which nodes changed.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc;

use arbor_shared::protocol::SeqOp;
use arbor_shared::snapshot::field::{replica_from_stored, replica_to_stored};
use arbor_shared::tree::TreeState;
use arbor_shared::{
    Clock, ClockError, Hlc, KeyGen, MoveOp, NodeId, Op, OpError, OrderKey, Place, ReplicaId, SetOp,
    Stamp, Tree, TreeError,
};
use rusqlite::{Connection, OptionalExtension as _, TransactionBehavior, params};

use crate::schema::{self, SchemaError};
use crate::store::{Changes, SqliteStore, hlc_to_sql, id_blob, id_from_blob, key_from_blob};

/// Errors of the replica.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    /// SQLite failed.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The file's schema cannot be used.
    #[error(transparent)]
    Schema(#[from] SchemaError),
    /// The node is not in the tree.
    #[error("unknown node {0}")]
    UnknownNode(NodeId),
    /// ROOT and TRASH never move and have no fields.
    #[error("{0} is reserved")]
    Reserved(NodeId),
    /// The sibling named by a position has another parent.
    #[error("{sibling} is not a child of {parent}")]
    NotASibling {
        /// The sibling.
        sibling: NodeId,
        /// The parent asked for.
        parent: NodeId,
    },
    /// The move would put a node under itself.
    #[error("moving {node} under {parent} would make a cycle")]
    Cycle {
        /// The node.
        node: NodeId,
        /// Its requested parent (a descendant of it).
        parent: NodeId,
    },
    /// No order key fits between two siblings with equal keys.
    #[error("no room for a key: {0}")]
    Key(#[from] arbor_shared::key::KeyError),
    /// An op is malformed (limits).
    #[error(transparent)]
    Op(#[from] OpError),
    /// The local clock cannot issue a stamp.
    #[error(transparent)]
    Clock(#[from] ClockError),
    /// The CRDT refused ops (stale stamps) or the store failed.
    #[error("tree: {0}")]
    Tree(String),
    /// Remote ops did not continue the cursor.
    #[error("ops start at seq {got}, expected {expected}")]
    Gap {
        /// The cursor + 1.
        expected: u64,
        /// The first seq received.
        got: u64,
    },
    /// The replica belongs to another thoughtspace.
    #[error("the replica belongs to thoughtspace {have}, not {want}")]
    WrongSpace {
        /// The replica's.
        have: String,
        /// The one asked for.
        want: String,
    },
    /// A snapshot could not be loaded (nothing changed).
    #[error("snapshot: {0}")]
    Snapshot(String),
}

impl From<TreeError<rusqlite::Error>> for ReplicaError {
    fn from(e: TreeError<rusqlite::Error>) -> Self {
        match e {
            TreeError::Store(e) => ReplicaError::Sqlite(e),
            TreeError::Op(e) => ReplicaError::Op(e),
            e @ TreeError::Stale { .. } => ReplicaError::Tree(e.to_string()),
        }
    }
}

type Result<T> = std::result::Result<T, ReplicaError>;

/// Where a new or moved node goes among its new siblings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    /// Before every child.
    First,
    /// After every child.
    Last,
    /// Right before this sibling.
    Before(NodeId),
    /// Right after this sibling.
    After(NodeId),
}

/// A node with its order key and fields (cleared fields omitted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeView {
    /// The node.
    pub id: NodeId,
    /// Its order key among its siblings.
    pub key: OrderKey,
    /// Its fields.
    pub fields: BTreeMap<String, String>,
}

/// Open options.
#[derive(Debug, Clone, Copy, Default)]
pub struct OpenOptions {
    /// `synchronous=FULL`: every commit survives power loss (an fsync per
    /// local op). Default NORMAL: survives process crashes.
    pub synchronous_full: bool,
}

/// Meta keys.
pub(crate) mod key {
    pub(crate) const REPLICA: &str = "replica";
    pub(crate) const CLOCK: &str = "clock";
    pub(crate) const CURSOR: &str = "cursor";
    pub(crate) const SPACE: &str = "space";
    pub(crate) const HORIZON_HLC: &str = "horizon_hlc";
    pub(crate) const HORIZON_REPLICA: &str = "horizon_replica";
    pub(crate) const ROOT: &str = "root";
    pub(crate) const RESTAMP: &str = "restamp";
}

/// Wall-clock milliseconds for the HLC.
#[cfg(not(all(target_arch = "wasm32", target_os = "unknown")))]
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Wall-clock milliseconds for the HLC (`SystemTime` panics in browsers).
#[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
pub(crate) fn now_ms() -> u64 {
    js_sys::Date::now() as u64
}

fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    if getrandom::fill(&mut b).is_err() {
        // No OS generator (should not happen on supported targets): the
        // clock, spread by a multiply, still differs between replicas.
        return now_ms().wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    }
    u64::from_le_bytes(b)
}

fn random_u128() -> u128 {
    (u128::from(random_u64()) << 64) | u128::from(random_u64())
}

pub(crate) fn meta_get(
    conn: &Connection,
    k: &str,
) -> rusqlite::Result<Option<rusqlite::types::Value>> {
    conn.prepare_cached("SELECT value FROM meta WHERE key = ?1")?
        .query_row([k], |r| r.get(0))
        .optional()
}

pub(crate) fn meta_i64(conn: &Connection, k: &str) -> rusqlite::Result<Option<i64>> {
    Ok(match meta_get(conn, k)? {
        Some(rusqlite::types::Value::Integer(i)) => Some(i),
        _ => None,
    })
}

pub(crate) fn meta_text(conn: &Connection, k: &str) -> rusqlite::Result<Option<String>> {
    Ok(match meta_get(conn, k)? {
        Some(rusqlite::types::Value::Text(t)) => Some(t),
        _ => None,
    })
}

pub(crate) fn meta_set(
    conn: &Connection,
    k: &str,
    v: impl rusqlite::ToSql,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO meta (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )?
    .execute(params![k, v])?;
    Ok(())
}

pub(crate) fn meta_delete(conn: &Connection, k: &str) -> rusqlite::Result<()> {
    conn.prepare_cached("DELETE FROM meta WHERE key = ?1")?
        .execute([k])?;
    Ok(())
}

/// Queues `ops` in the outbox (inside the caller's transaction).
fn outbox_insert<'a>(tx: &Connection, ops: impl IntoIterator<Item = &'a Op>) -> Result<()> {
    let mut insert =
        tx.prepare_cached("INSERT INTO outbox (hlc, replica, op) VALUES (?1, ?2, ?3)")?;
    for op in ops {
        let s = op.stamp();
        let json = serde_json::to_string(op).map_err(|e| ReplicaError::Snapshot(e.to_string()))?;
        insert.execute(params![
            hlc_to_sql(s.hlc.0)?,
            replica_to_stored(s.replica.0),
            json
        ])?;
    }
    Ok(())
}

/// Removes the ops with these stamps from the outbox (inside the caller's
/// transaction).
fn outbox_delete(tx: &Connection, stamps: impl IntoIterator<Item = Stamp>) -> Result<()> {
    let mut delete = tx.prepare_cached("DELETE FROM outbox WHERE hlc = ?1 AND replica = ?2")?;
    for s in stamps {
        delete.execute(params![
            hlc_to_sql(s.hlc.0)?,
            replica_to_stored(s.replica.0)
        ])?;
    }
    Ok(())
}

/// A full local replica of one thoughtspace (or one subtree of it).
pub struct Replica {
    pub(crate) conn: Connection,
    /// Invariant: the id stored in `meta` (never changes for a file).
    pub(crate) replica: ReplicaId,
    /// Invariant: `clock.last()` is persisted in `meta` by every
    /// transaction that ticks or observes it.
    pub(crate) clock: Clock,
    keys: KeyGen,
    subscribers: Vec<mpsc::Sender<Arc<Changes>>>,
    /// Woken whenever the outbox grows (the sync client waits on it).
    outbox_grew: Arc<tokio::sync::Notify>,
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica")
            .field("replica", &self.replica)
            .finish_non_exhaustive()
    }
}

impl Replica {
    /// Opens (or creates) the replica file at `path`.
    pub fn open(path: &Path) -> Result<Replica> {
        Replica::open_with(path, OpenOptions::default())
    }

    /// Opens (or creates) the replica file at `path` with `options`.
    pub fn open_with(path: &Path, options: OpenOptions) -> Result<Replica> {
        Replica::from_connection(Connection::open(path)?, options)
    }

    /// A replica in memory (tests; browsers without durable storage).
    pub fn open_in_memory() -> Result<Replica> {
        Replica::from_connection(Connection::open_in_memory()?, OpenOptions::default())
    }

    fn from_connection(mut conn: Connection, options: OpenOptions) -> Result<Replica> {
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        schema::migrate(&mut conn, options.synchronous_full)?;
        let replica = match meta_i64(&conn, key::REPLICA)? {
            Some(r) => ReplicaId(r as u64),
            None => {
                // Never 0 (the server's) and never with the top bit clear
                // ambiguity: any nonzero value works.
                let mut r = random_u64();
                if r == 0 {
                    r = 1;
                }
                meta_set(&conn, key::REPLICA, r as i64)?;
                ReplicaId(r)
            }
        };
        let last = meta_i64(&conn, key::CLOCK)?.unwrap_or(0).max(0) as u64;
        Ok(Replica {
            conn,
            replica,
            clock: Clock::new(replica, Hlc(last)),
            keys: KeyGen::new(replica.0 ^ random_u64()),
            subscribers: Vec::new(),
            outbox_grew: Arc::new(tokio::sync::Notify::new()),
        })
    }

    /// This replica's id (random, fixed for the file).
    pub fn replica_id(&self) -> ReplicaId {
        self.replica
    }

    /// The connection (read-only use: queries of the app's own).
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// The thoughtspace this replica belongs to, once bound.
    pub fn space(&self) -> Result<Option<String>> {
        Ok(meta_text(&self.conn, key::SPACE)?)
    }

    /// Binds the replica to `space` (a replica holds one thoughtspace).
    pub fn bind_space(&mut self, space: &str) -> Result<()> {
        match self.space()? {
            Some(have) if have != space => Err(ReplicaError::WrongSpace {
                have,
                want: space.to_string(),
            }),
            Some(_) => Ok(()),
            None => Ok(meta_set(&self.conn, key::SPACE, space)?),
        }
    }

    /// For a subtree replica: the subtree's root (set by its cold start).
    pub fn subtree_root(&self) -> Result<Option<NodeId>> {
        Ok(match meta_get(&self.conn, key::ROOT)? {
            Some(rusqlite::types::Value::Blob(b)) => Some(id_from_blob(&b)?),
            _ => None,
        })
    }

    /// Makes this a subtree replica of `root` (before its first sync).
    pub fn bind_subtree(&mut self, root: NodeId) -> Result<()> {
        Ok(meta_set(&self.conn, key::ROOT, id_blob(root).to_vec())?)
    }

    /// A free-form setting kept in the file (the CLI's server URL, token).
    pub fn setting(&self, name: &str) -> Result<Option<String>> {
        Ok(meta_text(&self.conn, &format!("setting.{name}"))?)
    }

    /// Stores a free-form setting.
    pub fn set_setting(&mut self, name: &str, value: &str) -> Result<()> {
        Ok(meta_set(&self.conn, &format!("setting.{name}"), value)?)
    }

    /// The highest server seq applied (`None`: never synced, or reset for a
    /// cold start).
    pub fn cursor(&self) -> Result<Option<u64>> {
        Ok(meta_i64(&self.conn, key::CURSOR)?.map(|c| c.max(0) as u64))
    }

    /// Forgets the cursor, so the next sync cold-starts from a snapshot.
    pub fn reset_cursor(&mut self) -> Result<()> {
        Ok(meta_delete(&self.conn, key::CURSOR)?)
    }

    /// The server went back in time (restored from a backup: it has less
    /// than this replica's cursor). Queues again every op of this replica
    /// that it still holds (its own moves in the log, its own winning
    /// registers) with the outbox, in stamp order, so they are pushed
    /// again after the next snapshot load: the server keeps the ones it
    /// has (same stamps) and commits the ones the rewind lost. Returns how
    /// many were queued again.
    pub fn requeue_own_ops(&mut self) -> Result<u64> {
        let me = replica_to_stored(self.replica.0);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut ops: BTreeMap<Stamp, Op> = BTreeMap::new();
        {
            let mut stmt =
                tx.prepare("SELECT hlc, node, parent, key FROM ops WHERE replica = ?1")?;
            let rows = stmt.query_map([me], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    id_from_blob(&r.get::<_, Vec<u8>>(1)?)?,
                    id_from_blob(&r.get::<_, Vec<u8>>(2)?)?,
                    key_from_blob(&r.get::<_, Vec<u8>>(3)?)?,
                ))
            })?;
            for row in rows {
                let (hlc, node, parent, key) = row?;
                let stamp = Stamp::new(hlc as u64, self.replica.0);
                ops.insert(
                    stamp,
                    Op::Move(MoveOp {
                        stamp,
                        known_seq: 0,
                        node,
                        parent,
                        key,
                    }),
                );
            }
            let mut stmt =
                tx.prepare("SELECT hlc, node, field, value FROM payloads WHERE replica = ?1")?;
            let rows = stmt.query_map([me], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    id_from_blob(&r.get::<_, Vec<u8>>(1)?)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, Option<String>>(3)?,
                ))
            })?;
            for row in rows {
                let (hlc, node, field, value) = row?;
                let stamp = Stamp::new(hlc as u64, self.replica.0);
                ops.insert(
                    stamp,
                    Op::Set(SetOp {
                        stamp,
                        known_seq: 0,
                        node,
                        field,
                        value,
                    }),
                );
            }
            // What the outbox holds already keeps its own text.
            let mut stmt = tx.prepare("SELECT op FROM outbox")?;
            let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
            for row in rows {
                let op: Op = serde_json::from_str(&row?)
                    .map_err(|e| ReplicaError::Snapshot(format!("outbox row: {e}")))?;
                ops.insert(op.stamp(), op);
            }
        }
        let queued = ops.len() as u64;
        tx.execute("DELETE FROM outbox", [])?;
        outbox_insert(&tx, ops.values())?;
        tx.commit()?;
        Ok(queued)
    }

    /// Marks the outbox for re-stamping at the next snapshot load (the
    /// server refused an op as stale).
    pub fn request_restamp(&mut self) -> Result<()> {
        Ok(meta_set(&self.conn, key::RESTAMP, 1i64)?)
    }

    /// The log horizon (from the last snapshot).
    pub fn horizon(&self) -> Result<Option<Stamp>> {
        let h = meta_i64(&self.conn, key::HORIZON_HLC)?;
        let r = meta_i64(&self.conn, key::HORIZON_REPLICA)?;
        Ok(h.zip(r)
            .map(|(h, r)| Stamp::new(h as u64, replica_from_stored(r))))
    }

    /// Receives the changes of every later commit (local or remote).
    pub fn subscribe(&mut self) -> mpsc::Receiver<Arc<Changes>> {
        let (tx, rx) = mpsc::channel();
        self.subscribers.push(tx);
        rx
    }

    /// Notified whenever local ops are queued.
    pub fn outbox_notify(&self) -> Arc<tokio::sync::Notify> {
        self.outbox_grew.clone()
    }

    fn notify(&mut self, changes: Changes) {
        if changes.is_empty() {
            return;
        }
        let changes = Arc::new(changes);
        self.subscribers.retain(|s| s.send(changes.clone()).is_ok());
    }

    // ----- reads -----

    fn tree(&self) -> Tree<SqliteStore<'_>> {
        Tree::new(SqliteStore::new(&self.conn))
    }

    /// True if the node is in the tree (ROOT and TRASH always are).
    pub fn contains(&self, node: NodeId) -> Result<bool> {
        Ok(self.tree().contains(node)?)
    }

    /// The node's parent (`None` for ROOT, TRASH and unknown nodes).
    pub fn parent(&self, node: NodeId) -> Result<Option<NodeId>> {
        Ok(self.tree().parent(node)?)
    }

    /// The node's place (parent and key).
    pub fn place(&self, node: NodeId) -> Result<Option<Place>> {
        Ok(self.tree().place(node)?)
    }

    /// Ancestors, parent first, ending at ROOT or TRASH.
    pub fn ancestors(&self, node: NodeId) -> Result<Vec<NodeId>> {
        Ok(self.tree().ancestors(node)?)
    }

    /// True if the node is deleted (under TRASH).
    pub fn is_deleted(&self, node: NodeId) -> Result<bool> {
        Ok(self.tree().is_in_trash(node)?)
    }

    /// One field's value.
    pub fn field(&self, node: NodeId, field: &str) -> Result<Option<String>> {
        Ok(self.tree().payload(node, field)?.and_then(|p| p.value))
    }

    /// Every set field of the node.
    pub fn fields(&self, node: NodeId) -> Result<BTreeMap<String, String>> {
        use arbor_shared::TreeStore as _;
        let store = SqliteStore::new(&self.conn);
        Ok(store
            .payloads(node)?
            .into_iter()
            .filter_map(|(f, p)| p.value.map(|v| (f, v)))
            .collect())
    }

    /// A page of `parent`'s children in order, after the child `after`
    /// (`None`: from the first), with their fields.
    pub fn children(
        &self,
        parent: NodeId,
        after: Option<NodeId>,
        limit: usize,
    ) -> Result<Vec<NodeView>> {
        let tree = self.tree();
        let cursor = match after {
            Some(a) => {
                let place = tree.place(a)?.ok_or(ReplicaError::UnknownNode(a))?;
                Some(arbor_shared::Child {
                    id: a,
                    key: place.key,
                })
            }
            None => None,
        };
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        // One query for the page and its fields (not one per child).
        let (after_key, after_id) = match &cursor {
            Some(c) => (c.key.as_bytes().to_vec(), id_blob(c.id).to_vec()),
            None => (Vec::new(), Vec::new()),
        };
        let mut stmt = self.conn.prepare_cached(
            "SELECT n.id, n.key, p.field, p.value
             FROM (SELECT id, key FROM nodes
                   WHERE parent = ?1 AND (?2 = 0 OR (key, id) > (?3, ?4))
                   ORDER BY key, id LIMIT ?5) n
             LEFT JOIN payloads p ON p.node = n.id
             ORDER BY n.key, n.id, p.field",
        )?;
        let mut rows = stmt.query(params![
            id_blob(parent),
            i64::from(cursor.is_some()),
            after_key,
            after_id,
            limit
        ])?;
        let mut out: Vec<NodeView> = Vec::new();
        while let Some(r) = rows.next()? {
            let id = id_from_blob(&r.get::<_, Vec<u8>>(0)?)?;
            if out.last().is_none_or(|v| v.id != id) {
                out.push(NodeView {
                    id,
                    key: key_from_blob(&r.get::<_, Vec<u8>>(1)?)?,
                    fields: BTreeMap::new(),
                });
            }
            if let (Some(field), Some(value)) = (
                r.get::<_, Option<String>>(2)?,
                r.get::<_, Option<String>>(3)?,
            ) {
                if let Some(v) = out.last_mut() {
                    v.fields.insert(field, value);
                }
            }
        }
        Ok(out)
    }

    /// Calls `f(node, depth)` for `root`'s subtree in pre-order (root
    /// excluded, depth 1 for its children), reading children page by page.
    /// `f` returns false to stop.
    pub fn walk(&self, root: NodeId, mut f: impl FnMut(NodeId, usize) -> bool) -> Result<()> {
        let tree = self.tree();
        for item in tree.subtree(root) {
            let (node, depth) = item?;
            if !f(node, depth) {
                break;
            }
        }
        Ok(())
    }

    /// Number of nodes (ROOT and TRASH excluded).
    pub fn node_count(&self) -> Result<u64> {
        Ok(self.tree().node_count()?)
    }

    /// Every place and register (tests and checks).
    pub fn state(&self) -> Result<TreeState> {
        Ok(self.tree().state()?)
    }

    /// Checks the CRDT's invariants over the whole replica (O(n)).
    pub fn check_invariants(&self) -> std::result::Result<(), String> {
        self.tree().check_invariants().map_err(|e| e.to_string())
    }

    /// The unacknowledged local ops, oldest first (at most `limit`).
    pub fn outbox(&self, limit: usize) -> Result<Vec<Op>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT op FROM outbox ORDER BY ord LIMIT ?1")?;
        let rows = stmt.query_map([i64::try_from(limit).unwrap_or(i64::MAX)], |r| {
            r.get::<_, String>(0)
        })?;
        let mut out = Vec::new();
        for text in rows {
            let text = text?;
            let op: Op = serde_json::from_str(&text)
                .map_err(|e| ReplicaError::Snapshot(format!("outbox row: {e}")))?;
            out.push(op);
        }
        Ok(out)
    }

    /// Number of unacknowledged local ops.
    pub fn outbox_len(&self) -> Result<u64> {
        let n: i64 = self
            .conn
            .prepare_cached("SELECT count(*) FROM outbox")?
            .query_row([], |r| r.get(0))?;
        Ok(n.max(0) as u64)
    }

    // ----- local ops -----

    fn key_for(
        &mut self,
        parent: NodeId,
        pos: Position,
        moving: Option<NodeId>,
    ) -> Result<OrderKey> {
        let tree = Tree::new(SqliteStore::new(&self.conn));
        // Neighbors of the gap, skipping the node being moved (moving a node
        // next to itself keeps the order).
        let neighbors = |sib: NodeId| -> Result<(Option<OrderKey>, OrderKey, Option<OrderKey>)> {
            let place = tree.place(sib)?.ok_or(ReplicaError::UnknownNode(sib))?;
            if place.parent != parent {
                return Err(ReplicaError::NotASibling {
                    sibling: sib,
                    parent,
                });
            }
            let prev: Option<OrderKey> = self
                .conn
                .prepare_cached(
                    "SELECT key FROM nodes WHERE parent = ?1 AND (key, id) < (?2, ?3) AND id <> ?4
                     ORDER BY key DESC, id DESC LIMIT 1",
                )?
                .query_row(
                    params![
                        id_blob(parent),
                        place.key.as_bytes(),
                        id_blob(sib),
                        id_blob(moving.unwrap_or(NodeId::ROOT))
                    ],
                    |r| key_from_blob(&r.get::<_, Vec<u8>>(0)?),
                )
                .optional()?;
            let next: Option<OrderKey> = self
                .conn
                .prepare_cached(
                    "SELECT key FROM nodes WHERE parent = ?1 AND (key, id) > (?2, ?3) AND id <> ?4
                     ORDER BY key, id LIMIT 1",
                )?
                .query_row(
                    params![
                        id_blob(parent),
                        place.key.as_bytes(),
                        id_blob(sib),
                        id_blob(moving.unwrap_or(NodeId::ROOT))
                    ],
                    |r| key_from_blob(&r.get::<_, Vec<u8>>(0)?),
                )
                .optional()?;
            Ok((prev, place.key, next))
        };
        let edge = |desc: bool| -> Result<Option<OrderKey>> {
            let sql = if desc {
                "SELECT key FROM nodes WHERE parent = ?1 AND id <> ?2 ORDER BY key DESC, id DESC LIMIT 1"
            } else {
                "SELECT key FROM nodes WHERE parent = ?1 AND id <> ?2 ORDER BY key, id LIMIT 1"
            };
            Ok(self
                .conn
                .prepare_cached(sql)?
                .query_row(
                    params![id_blob(parent), id_blob(moving.unwrap_or(NodeId::ROOT))],
                    |r| key_from_blob(&r.get::<_, Vec<u8>>(0)?),
                )
                .optional()?)
        };
        let (lo, hi) = match pos {
            Position::First => (None, edge(false)?),
            Position::Last => (edge(true)?, None),
            Position::Before(sib) => {
                let (prev, key, _) = neighbors(sib)?;
                (prev, Some(key))
            }
            Position::After(sib) => {
                let (_, key, next) = neighbors(sib)?;
                (Some(key), next)
            }
        };
        Ok(self.keys.between(lo.as_ref(), hi.as_ref())?)
    }

    /// Applies `ops` (made by this replica) and queues them, in one
    /// transaction; persists the clock.
    fn commit_local(&mut self, ops: Vec<Op>) -> Result<()> {
        for op in &ops {
            op.validate()?;
        }
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let changes = {
            let mut tree = Tree::new(SqliteStore::new(&tx));
            tree.apply(&ops)?;
            tree.into_store().changes
        };
        outbox_insert(&tx, &ops)?;
        meta_set(&tx, key::CLOCK, hlc_to_sql(self.clock.last().0)?)?;
        tx.commit()?;
        self.notify(changes);
        self.outbox_grew.notify_one();
        Ok(())
    }

    fn tick(&mut self) -> Result<Stamp> {
        Ok(self.clock.tick(now_ms())?)
    }

    fn known_seq(&self) -> Result<u64> {
        Ok(self.cursor()?.unwrap_or(0))
    }

    fn check_movable(&self, node: NodeId) -> Result<()> {
        if node.is_reserved() {
            return Err(ReplicaError::Reserved(node));
        }
        if !self.contains(node)? {
            return Err(ReplicaError::UnknownNode(node));
        }
        Ok(())
    }

    fn check_parent(&self, parent: NodeId) -> Result<()> {
        if !self.contains(parent)? {
            return Err(ReplicaError::UnknownNode(parent));
        }
        Ok(())
    }

    /// Creates a node under `parent` at `pos`, with `fields` set, in one
    /// transaction; returns its id.
    pub fn create_with(
        &mut self,
        parent: NodeId,
        pos: Position,
        fields: &[(&str, &str)],
    ) -> Result<NodeId> {
        self.check_parent(parent)?;
        let node = NodeId::from_random_bits(random_u128());
        let key = self.key_for(parent, pos, None)?;
        let known_seq = self.known_seq()?;
        let mut ops = vec![Op::Move(MoveOp {
            stamp: self.tick()?,
            known_seq,
            node,
            parent,
            key,
        })];
        for (field, value) in fields {
            ops.push(Op::Set(SetOp {
                stamp: self.tick()?,
                known_seq,
                node,
                field: (*field).to_string(),
                value: Some((*value).to_string()),
            }));
        }
        self.commit_local(ops)?;
        Ok(node)
    }

    /// Creates an empty node under `parent` at `pos`.
    pub fn create(&mut self, parent: NodeId, pos: Position) -> Result<NodeId> {
        self.create_with(parent, pos, &[])
    }

    /// Moves `node` under `parent` at `pos`.
    pub fn move_node(&mut self, node: NodeId, parent: NodeId, pos: Position) -> Result<()> {
        self.check_movable(node)?;
        self.check_parent(parent)?;
        if node == parent || self.tree().is_ancestor(node, parent)? {
            return Err(ReplicaError::Cycle { node, parent });
        }
        let key = self.key_for(parent, pos, Some(node))?;
        let op = Op::Move(MoveOp {
            stamp: self.tick()?,
            known_seq: self.known_seq()?,
            node,
            parent,
            key,
        });
        self.commit_local(vec![op])
    }

    /// Deletes `node` (and so its subtree): moves it under TRASH.
    pub fn delete(&mut self, node: NodeId) -> Result<()> {
        self.check_movable(node)?;
        let key = self.key_for(NodeId::TRASH, Position::Last, Some(node))?;
        let op = Op::Move(MoveOp {
            stamp: self.tick()?,
            known_seq: self.known_seq()?,
            node,
            parent: NodeId::TRASH,
            key,
        });
        self.commit_local(vec![op])
    }

    /// Restores a deleted node to where it was before its newest delete
    /// (under ROOT, last, if that place is no longer known).
    pub fn restore(&mut self, node: NodeId) -> Result<()> {
        self.check_movable(node)?;
        if self.parent(node)? != Some(NodeId::TRASH) {
            return Ok(());
        }
        // The newest applied move of `node` into TRASH, and where it was.
        let prev: Option<(Vec<u8>, Vec<u8>)> = self
            .conn
            .prepare_cached(
                "SELECT prev_parent, prev_key FROM ops
                 WHERE node = ?1 AND parent = ?2 AND applied AND prev_parent IS NOT NULL
                 ORDER BY hlc DESC, replica DESC LIMIT 1",
            )?
            .query_row(params![id_blob(node), id_blob(NodeId::TRASH)], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?;
        let (parent, key) = match prev {
            Some((p, k)) => {
                let parent = id_from_blob(&p)?;
                if parent == NodeId::TRASH || !self.contains(parent)? {
                    (
                        NodeId::ROOT,
                        self.key_for(NodeId::ROOT, Position::Last, Some(node))?,
                    )
                } else {
                    (parent, key_from_blob(&k)?)
                }
            }
            None => (
                NodeId::ROOT,
                self.key_for(NodeId::ROOT, Position::Last, Some(node))?,
            ),
        };
        let op = Op::Move(MoveOp {
            stamp: self.tick()?,
            known_seq: self.known_seq()?,
            node,
            parent,
            key,
        });
        self.commit_local(vec![op])
    }

    /// Sets (`Some`) or clears (`None`) a field.
    pub fn set(&mut self, node: NodeId, field: &str, value: Option<&str>) -> Result<()> {
        self.check_movable(node)?;
        let op = Op::Set(SetOp {
            stamp: self.tick()?,
            known_seq: self.known_seq()?,
            node,
            field: field.to_string(),
            value: value.map(str::to_string),
        });
        self.commit_local(vec![op])
    }

    // ----- sync -----

    /// Applies committed ops from the server (in seq order, continuing the
    /// cursor), removes this replica's own ops among them from the outbox,
    /// and advances the cursor; one transaction.
    pub fn apply_remote(&mut self, ops: &[SeqOp]) -> Result<Changes> {
        let Some(first) = ops.first() else {
            return Ok(Changes::default());
        };
        let cursor = self.cursor()?.unwrap_or(0);
        if first.seq != cursor + 1 || !ops.windows(2).all(|w| w[1].seq == w[0].seq + 1) {
            return Err(ReplicaError::Gap {
                expected: cursor + 1,
                got: first.seq,
            });
        }
        for o in ops {
            self.clock.observe(o.op.stamp().hlc);
        }
        let plain: Vec<Op> = ops.iter().map(|o| o.op.clone()).collect();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let changes = {
            let mut tree = Tree::new(SqliteStore::new(&tx));
            tree.apply(&plain)?;
            tree.into_store().changes
        };
        outbox_delete(
            &tx,
            plain
                .iter()
                .map(Op::stamp)
                .filter(|s| s.replica == self.replica),
        )?;
        let last = ops.last().map_or(cursor, |o| o.seq);
        meta_set(&tx, key::CURSOR, i64::try_from(last).unwrap_or(i64::MAX))?;
        meta_set(&tx, key::CLOCK, hlc_to_sql(self.clock.last().0)?)?;
        tx.commit()?;
        self.notify(changes.clone());
        Ok(changes)
    }

    /// Removes ops the server committed (an `ack`) from the outbox.
    pub fn acknowledge(&mut self, stamps: &[Stamp]) -> Result<()> {
        let tx = self.conn.transaction()?;
        outbox_delete(&tx, stamps.iter().copied())?;
        tx.commit()?;
        Ok(())
    }

    /// Drops ops the server refused for good from the outbox (their local
    /// effects go away at the next cold start, which the caller triggers).
    pub fn drop_from_outbox(&mut self, stamps: &[Stamp]) -> Result<()> {
        self.acknowledge(stamps)
    }

    // ----- files -----

    /// Writes a consistent copy of the replica file to `path` (`VACUUM
    /// INTO`: a compact SQLite file, openable with [`Replica::open`]).
    ///
    /// The copy is a new replica: a fresh replica id (two live files with
    /// one id would issue equal stamps), no cursor (its first sync loads a
    /// snapshot) and an empty outbox (the unacknowledged ops stay this
    /// file's to push; the copy shows their effects until it syncs, and a
    /// fork of it includes them).
    pub fn export(&self, path: &Path) -> Result<()> {
        let text = path
            .to_str()
            .ok_or_else(|| ReplicaError::Snapshot("export path is not UTF-8".into()))?;
        self.conn.execute("VACUUM INTO ?1", [text])?;
        let copy = Connection::open(path)?;
        let mut id = random_u64();
        if id == 0 || id == self.replica.0 {
            id = id.wrapping_add(1).max(1);
        }
        meta_set(&copy, key::REPLICA, id as i64)?;
        meta_delete(&copy, key::CURSOR)?;
        copy.execute("DELETE FROM outbox", [])?;
        Ok(())
    }

    pub(crate) fn notify_changes(&mut self, changes: Changes) {
        self.notify(changes);
    }

    pub(crate) fn wake_outbox(&self) {
        self.outbox_grew.notify_one();
    }
}
