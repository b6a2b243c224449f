//! [`SqliteStore`]: the CRDT's storage trait over the replica's SQLite
//! tables, so the shared algorithm runs against disk, not a loaded tree.

use std::collections::BTreeSet;

use arbor_shared::snapshot::field::{replica_from_stored, replica_to_stored};
use arbor_shared::{Child, Effect, LogEntry, NodeId, OrderKey, Payload, Place, Stamp, TreeStore};
use rusqlite::{Connection, OptionalExtension as _, params};

/// Which nodes a write touched (for change notifications).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// Nodes created, moved, deleted or restored.
    pub moved: BTreeSet<NodeId>,
    /// Parents whose children list changed (old and new parents).
    pub parents: BTreeSet<NodeId>,
    /// Nodes whose fields changed.
    pub fields: BTreeSet<NodeId>,
    /// The whole replica was replaced (a cold start): reload everything.
    pub reset: bool,
    /// What committed ops took from this replica's edits, and the server's
    /// restores (also kept in `Replica::conflicts`).
    pub conflicts: Vec<crate::replica::Conflict>,
}

impl Changes {
    /// True if nothing changed.
    pub fn is_empty(&self) -> bool {
        !self.reset
            && self.moved.is_empty()
            && self.parents.is_empty()
            && self.fields.is_empty()
            && self.conflicts.is_empty()
    }

    /// Adds `other`'s nodes.
    pub fn extend(&mut self, other: Changes) {
        self.moved.extend(other.moved);
        self.parents.extend(other.parents);
        self.fields.extend(other.fields);
        self.reset |= other.reset;
        self.conflicts.extend(other.conflicts);
    }
}

/// Encodes an HLC as SQLite's signed 64-bit integer (HLCs stay far below
/// 2^63: milliseconds shifted by 16 bits).
pub(crate) fn hlc_to_sql(hlc: u64) -> rusqlite::Result<i64> {
    i64::try_from(hlc).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
}

pub(crate) fn stamp_from_sql(hlc: i64, replica: i64) -> Stamp {
    Stamp::new(hlc as u64, replica_from_stored(replica))
}

pub(crate) fn id_blob(id: NodeId) -> [u8; 16] {
    id.to_bytes()
}

pub(crate) fn id_from_blob(b: &[u8]) -> rusqlite::Result<NodeId> {
    let bytes: [u8; 16] = b.try_into().map_err(|_| {
        rusqlite::Error::FromSqlConversionFailure(
            16,
            rusqlite::types::Type::Blob,
            "a node id is 16 bytes".into(),
        )
    })?;
    Ok(NodeId::from_bytes(bytes))
}

pub(crate) fn key_from_blob(b: &[u8]) -> rusqlite::Result<OrderKey> {
    OrderKey::new(b).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Blob, Box::new(e))
    })
}

/// The CRDT's storage over one SQLite connection (the caller holds the
/// transaction). Node handles are the ids themselves: rows are keyed by the
/// 16-byte id, so snapshots load without an id mapping.
#[derive(Debug)]
pub struct SqliteStore<'c> {
    conn: &'c Connection,
    /// What the writes through this store touched.
    pub changes: Changes,
}

impl<'c> SqliteStore<'c> {
    /// A store over `conn` (inside the caller's transaction).
    pub fn new(conn: &'c Connection) -> Self {
        SqliteStore {
            conn,
            changes: Changes::default(),
        }
    }

    fn meta_i64(&self, key: &str) -> rusqlite::Result<Option<i64>> {
        self.conn
            .prepare_cached("SELECT value FROM meta WHERE key = ?1")?
            .query_row([key], |r| r.get(0))
            .optional()
    }

    fn old_parent(&self, node: NodeId) -> rusqlite::Result<Option<NodeId>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT parent FROM nodes WHERE id = ?1")?;
        stmt.query_row([id_blob(node)], |r| id_from_blob(&r.get::<_, Vec<u8>>(0)?))
            .optional()
    }
}

fn entry_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<LogEntry> {
    let stamp = stamp_from_sql(r.get(0)?, r.get(1)?);
    let node = id_from_blob(&r.get::<_, Vec<u8>>(2)?)?;
    let parent = id_from_blob(&r.get::<_, Vec<u8>>(3)?)?;
    let key = key_from_blob(&r.get::<_, Vec<u8>>(4)?)?;
    let applied: bool = r.get(5)?;
    let effect = if !applied {
        Effect::Skipped
    } else {
        let prev = match (
            r.get::<_, Option<Vec<u8>>>(6)?,
            r.get::<_, Option<Vec<u8>>>(7)?,
        ) {
            (Some(p), Some(k)) => Some(Place {
                parent: id_from_blob(&p)?,
                key: key_from_blob(&k)?,
            }),
            _ => None,
        };
        Effect::Moved { prev }
    };
    Ok(LogEntry {
        stamp,
        node,
        parent,
        key,
        effect,
    })
}

const LOG_COLUMNS: &str = "hlc, replica, node, parent, key, applied, prev_parent, prev_key";

/// The levels [`SqliteStore`]'s ancestor query climbs before it hands the
/// walk to the bounded default.
const ANCESTOR_QUERY_DEPTH: i64 = 4_096;

impl TreeStore for SqliteStore<'_> {
    type Error = rusqlite::Error;
    type Node = NodeId;

    fn lookup(&self, id: NodeId) -> rusqlite::Result<Option<NodeId>> {
        Ok(Some(id))
    }

    fn intern(&mut self, id: NodeId) -> rusqlite::Result<NodeId> {
        Ok(id)
    }

    fn id(&self, node: NodeId) -> rusqlite::Result<NodeId> {
        Ok(node)
    }

    fn place(&self, node: NodeId) -> rusqlite::Result<Option<Place<NodeId>>> {
        if node.is_reserved() {
            return Ok(None);
        }
        let mut stmt = self
            .conn
            .prepare_cached("SELECT parent, key FROM nodes WHERE id = ?1")?;
        stmt.query_row([id_blob(node)], |r| {
            Ok(Place {
                parent: id_from_blob(&r.get::<_, Vec<u8>>(0)?)?,
                key: key_from_blob(&r.get::<_, Vec<u8>>(1)?)?,
            })
        })
        .optional()
    }

    fn parent(&self, node: NodeId) -> rusqlite::Result<Option<NodeId>> {
        if node.is_reserved() {
            return Ok(None);
        }
        self.old_parent(node)
    }

    /// One recursive query for the first [`ANCESTOR_QUERY_DEPTH`] levels
    /// instead of one query per level: the browser build pays a call into
    /// SQLite per statement, and outlines hold chains hundreds deep (every
    /// local move checks one for a cycle). A walk that goes deeper (a very
    /// deep chain, or a damaged store's loop) continues as the default one.
    fn is_ancestor(&self, a: NodeId, b: NodeId) -> rusqlite::Result<Option<bool>> {
        if a == b {
            return Ok(Some(true));
        }
        let mut stmt = self.conn.prepare_cached(
            "WITH RECURSIVE up(id, depth) AS (
                 SELECT ?2, 0
                 UNION ALL
                 SELECT n.parent, up.depth + 1 FROM up JOIN nodes n ON n.id = up.id
                 WHERE up.id <> ?1 AND up.depth < ?3
             )
             SELECT coalesce(max(id = ?1), 0), max(depth) FROM up",
        )?;
        let (found, depth): (bool, i64) = stmt
            .query_row(params![id_blob(a), id_blob(b), ANCESTOR_QUERY_DEPTH], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?;
        if found {
            Ok(Some(true))
        } else if depth < ANCESTOR_QUERY_DEPTH {
            // The walk reached a node with no parent row: ROOT, TRASH or
            // a node not in the tree.
            Ok(Some(false))
        } else {
            arbor_shared::walk_is_ancestor(self, a, b)
        }
    }

    fn contains(&self, node: NodeId) -> rusqlite::Result<bool> {
        if node.is_reserved() {
            return Ok(true);
        }
        let mut stmt = self
            .conn
            .prepare_cached("SELECT 1 FROM nodes WHERE id = ?1")?;
        stmt.exists([id_blob(node)])
    }

    fn has_children(&self, node: NodeId) -> rusqlite::Result<bool> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT 1 FROM nodes WHERE parent = ?1 LIMIT 1")?;
        stmt.exists([id_blob(node)])
    }

    fn set_place(&mut self, node: NodeId, place: Place<NodeId>) -> rusqlite::Result<()> {
        if let Some(old) = self.old_parent(node)? {
            self.changes.parents.insert(old);
        }
        self.changes.moved.insert(node);
        self.changes.parents.insert(place.parent);
        let mut stmt = self.conn.prepare_cached(
            "INSERT INTO nodes (id, parent, key) VALUES (?1, ?2, ?3)
             ON CONFLICT (id) DO UPDATE SET parent = excluded.parent, key = excluded.key",
        )?;
        stmt.execute(params![
            id_blob(node),
            id_blob(place.parent),
            place.key.as_bytes()
        ])?;
        Ok(())
    }

    fn remove(&mut self, node: NodeId) -> rusqlite::Result<()> {
        if let Some(old) = self.old_parent(node)? {
            self.changes.parents.insert(old);
        }
        self.changes.moved.insert(node);
        self.conn
            .prepare_cached("DELETE FROM nodes WHERE id = ?1")?
            .execute([id_blob(node)])?;
        Ok(())
    }

    fn children(
        &self,
        parent: NodeId,
        after: Option<(&OrderKey, NodeId)>,
        limit: usize,
    ) -> rusqlite::Result<Vec<Child>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let map = |r: &rusqlite::Row<'_>| {
            Ok(Child {
                id: id_from_blob(&r.get::<_, Vec<u8>>(0)?)?,
                key: key_from_blob(&r.get::<_, Vec<u8>>(1)?)?,
            })
        };
        match after {
            None => {
                let mut stmt = self.conn.prepare_cached(
                    "SELECT id, key FROM nodes WHERE parent = ?1 ORDER BY key, id LIMIT ?2",
                )?;
                stmt.query_map(params![id_blob(parent), limit], map)?
                    .collect()
            }
            Some((key, id)) => {
                let mut stmt = self.conn.prepare_cached(
                    "SELECT id, key FROM nodes WHERE parent = ?1 AND (key, id) > (?2, ?3)
                     ORDER BY key, id LIMIT ?4",
                )?;
                stmt.query_map(
                    params![id_blob(parent), key.as_bytes(), id_blob(id), limit],
                    map,
                )?
                .collect()
            }
        }
    }

    fn last_child(&self, parent: NodeId) -> rusqlite::Result<Option<Child>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, key FROM nodes WHERE parent = ?1 ORDER BY key DESC, id DESC LIMIT 1",
        )?;
        stmt.query_row([id_blob(parent)], |r| {
            Ok(Child {
                id: id_from_blob(&r.get::<_, Vec<u8>>(0)?)?,
                key: key_from_blob(&r.get::<_, Vec<u8>>(1)?)?,
            })
        })
        .optional()
    }

    fn node_count(&self) -> rusqlite::Result<u64> {
        let n: i64 = self
            .conn
            .prepare_cached("SELECT count(*) FROM nodes")?
            .query_row([], |r| r.get(0))?;
        Ok(n.max(0) as u64)
    }

    fn all_nodes(&self) -> rusqlite::Result<Vec<(NodeId, Place)>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT id, parent, key FROM nodes")?;
        stmt.query_map([], |r| {
            Ok((
                id_from_blob(&r.get::<_, Vec<u8>>(0)?)?,
                Place {
                    parent: id_from_blob(&r.get::<_, Vec<u8>>(1)?)?,
                    key: key_from_blob(&r.get::<_, Vec<u8>>(2)?)?,
                },
            ))
        })?
        .collect()
    }

    fn log_last(&self) -> rusqlite::Result<Option<Stamp>> {
        self.conn
            .prepare_cached("SELECT hlc, replica FROM ops ORDER BY hlc DESC, replica DESC LIMIT 1")?
            .query_row([], |r| Ok(stamp_from_sql(r.get(0)?, r.get(1)?)))
            .optional()
    }

    fn log_contains(&self, stamp: Stamp) -> rusqlite::Result<bool> {
        self.conn
            .prepare_cached("SELECT 1 FROM ops WHERE hlc = ?1 AND replica = ?2")?
            .exists(params![
                hlc_to_sql(stamp.hlc.0)?,
                replica_to_stored(stamp.replica.0)
            ])
    }

    fn log_push(&mut self, entry: LogEntry<NodeId>) -> rusqlite::Result<()> {
        let (applied, prev) = match &entry.effect {
            Effect::Skipped => (false, None),
            Effect::Moved { prev } => (true, prev.as_ref()),
        };
        self.conn
            .prepare_cached(
                "INSERT INTO ops (hlc, replica, node, parent, key, applied, prev_parent, prev_key)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?
            .execute(params![
                hlc_to_sql(entry.stamp.hlc.0)?,
                replica_to_stored(entry.stamp.replica.0),
                id_blob(entry.node),
                id_blob(entry.parent),
                entry.key.as_bytes(),
                applied,
                prev.map(|p| id_blob(p.parent)),
                prev.map(|p| p.key.as_bytes().to_vec()),
            ])?;
        Ok(())
    }

    fn log_pop_above(
        &mut self,
        stamp: Stamp,
        out: &mut Vec<LogEntry<NodeId>>,
    ) -> rusqlite::Result<()> {
        let (h, r) = (hlc_to_sql(stamp.hlc.0)?, replica_to_stored(stamp.replica.0));
        {
            let mut stmt = self.conn.prepare_cached(&format!(
                "SELECT {LOG_COLUMNS} FROM ops WHERE (hlc, replica) > (?1, ?2)
                 ORDER BY hlc DESC, replica DESC"
            ))?;
            for e in stmt.query_map(params![h, r], entry_from_row)? {
                out.push(e?);
            }
        }
        self.conn
            .prepare_cached("DELETE FROM ops WHERE (hlc, replica) > (?1, ?2)")?
            .execute(params![h, r])?;
        Ok(())
    }

    fn log_truncate_through(&mut self, stamp: Stamp) -> rusqlite::Result<u64> {
        let n = self
            .conn
            .prepare_cached("DELETE FROM ops WHERE (hlc, replica) <= (?1, ?2)")?
            .execute(params![
                hlc_to_sql(stamp.hlc.0)?,
                replica_to_stored(stamp.replica.0)
            ])?;
        Ok(n as u64)
    }

    fn log_len(&self) -> rusqlite::Result<u64> {
        let n: i64 = self
            .conn
            .prepare_cached("SELECT count(*) FROM ops")?
            .query_row([], |r| r.get(0))?;
        Ok(n.max(0) as u64)
    }

    fn log_entries(&self) -> rusqlite::Result<Vec<LogEntry>> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {LOG_COLUMNS} FROM ops ORDER BY hlc, replica"
        ))?;
        stmt.query_map([], entry_from_row)?.collect()
    }

    fn horizon(&self) -> rusqlite::Result<Option<Stamp>> {
        match (
            self.meta_i64("horizon_hlc")?,
            self.meta_i64("horizon_replica")?,
        ) {
            (Some(h), Some(r)) => Ok(Some(stamp_from_sql(h, r))),
            _ => Ok(None),
        }
    }

    fn set_horizon(&mut self, horizon: Stamp) -> rusqlite::Result<()> {
        let mut stmt = self.conn.prepare_cached(
            "INSERT INTO meta (key, value) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )?;
        stmt.execute(params!["horizon_hlc", hlc_to_sql(horizon.hlc.0)?])?;
        stmt.execute(params![
            "horizon_replica",
            replica_to_stored(horizon.replica.0)
        ])?;
        Ok(())
    }

    fn payload(&self, node: NodeId, field: &str) -> rusqlite::Result<Option<Payload>> {
        self.conn
            .prepare_cached(
                "SELECT value, hlc, replica FROM payloads WHERE node = ?1 AND field = ?2",
            )?
            .query_row(params![id_blob(node), field], |r| {
                Ok(Payload {
                    value: r.get(0)?,
                    stamp: stamp_from_sql(r.get(1)?, r.get(2)?),
                })
            })
            .optional()
    }

    fn set_payload(&mut self, node: NodeId, field: &str, payload: Payload) -> rusqlite::Result<()> {
        self.changes.fields.insert(node);
        self.conn
            .prepare_cached(
                "INSERT INTO payloads (node, field, value, hlc, replica) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (node, field) DO UPDATE
                 SET value = excluded.value, hlc = excluded.hlc, replica = excluded.replica",
            )?
            .execute(params![
                id_blob(node),
                field,
                payload.value,
                hlc_to_sql(payload.stamp.hlc.0)?,
                replica_to_stored(payload.stamp.replica.0)
            ])?;
        Ok(())
    }

    fn payloads(&self, node: NodeId) -> rusqlite::Result<Vec<(String, Payload)>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT field, value, hlc, replica FROM payloads WHERE node = ?1 ORDER BY field",
        )?;
        stmt.query_map([id_blob(node)], |r| {
            Ok((
                r.get(0)?,
                Payload {
                    value: r.get(1)?,
                    stamp: stamp_from_sql(r.get(2)?, r.get(3)?),
                },
            ))
        })?
        .collect()
    }

    fn all_payloads(&self) -> rusqlite::Result<Vec<(NodeId, String, Payload)>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT node, field, value, hlc, replica FROM payloads")?;
        stmt.query_map([], |r| {
            Ok((
                id_from_blob(&r.get::<_, Vec<u8>>(0)?)?,
                r.get(1)?,
                Payload {
                    value: r.get(2)?,
                    stamp: stamp_from_sql(r.get(3)?, r.get(4)?),
                },
            ))
        })?
        .collect()
    }
}
