//! Snapshot streaming: one `REPEATABLE READ READ ONLY` transaction, raw
//! Postgres binary `COPY` sections framed into one stream, a trailer with
//! counts and a CRC so a cut stream is detected. Format: `docs/PROTOCOL.md`.
//!
//! Memory stays flat: each chunk Postgres sends is framed and handed to the
//! HTTP body as it comes; the next is read only when the body asks for it,
//! so a slow reader slows the `COPY`, not the heap.

use std::collections::VecDeque;
use std::pin::Pin;

use bytes::{BufMut as _, Bytes, BytesMut};
use futures_util::{Stream, StreamExt as _};

use crate::db::{Db, DbError, RejectCode, replica_from_sql};

pub use arbor_shared::snapshot::{MAGIC, SnapshotHeader, VERSION};

/// Target size of a framed chunk.
const CHUNK: usize = 64 * 1024;

/// What a snapshot covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The whole space, with the log above the horizon (cold start).
    Space,
    /// The subtree of a node (which must be in the tree), with the log of
    /// its nodes above the horizon.
    Subtree(arbor_shared::NodeId),
    /// The subtree of `node` for a token limited to the subtree of `root`:
    /// `node` must be `root` or below it (else `out_of_scope`, whether or
    /// not it is stored), `node`'s row names ROOT as its parent (its real
    /// parent may be outside), and the log section keeps only the ops that name
    /// no node outside the subtree of `node` (sets, and moves whose parent
    /// and previous parent are in it or TRASH); the header's owners are
    /// those of the replicas in that log.
    ScopedSubtree {
        /// The subtree sent.
        node: arbor_shared::NodeId,
        /// The token's `root` claim.
        root: arbor_shared::NodeId,
    },
    /// The whole space with its whole log (export).
    Export,
}

/// The sections, in order: tag and `COPY` query. The space id is passed as
/// the transaction-local setting `arbor.space` (COPY takes no parameters).
const SECTIONS: [(u8, &str); 3] = [
    (
        b'N',
        "COPY (SELECT id, parent, key FROM nodes
               WHERE space = current_setting('arbor.space')::bigint)
         TO STDOUT (FORMAT binary)",
    ),
    (
        b'P',
        "COPY (SELECT node, field, value, hlc, replica FROM payloads
               WHERE space = current_setting('arbor.space')::bigint)
         TO STDOUT (FORMAT binary)",
    ),
    (
        b'L',
        "COPY (SELECT o.seq, o.hlc, o.replica, o.kind, o.node, o.parent, o.key, o.field, o.value,
                      o.known_seq, o.applied, o.prev_parent, o.prev_key
               FROM ops o JOIN spaces s ON s.id = o.space
               WHERE o.space = current_setting('arbor.space')::bigint
                 AND (s.horizon_hlc IS NULL
                      OR (o.hlc, o.replica) > (s.horizon_hlc, s.horizon_replica))
               ORDER BY o.seq)
         TO STDOUT (FORMAT binary)",
    ),
];

/// The sections of an export: the whole log.
const EXPORT_SECTIONS: [(u8, &str); 3] = [
    SECTIONS[0],
    SECTIONS[1],
    (
        b'L',
        "COPY (SELECT o.seq, o.hlc, o.replica, o.kind, o.node, o.parent, o.key, o.field, o.value,
                      o.known_seq, o.applied, o.prev_parent, o.prev_key
               FROM ops o WHERE o.space = current_setting('arbor.space')::bigint
               ORDER BY o.seq)
         TO STDOUT (FORMAT binary)",
    ),
];

/// `sub`: the ids of the subtree of `arbor.root` (itself included), for the
/// subtree snapshot's queries. (`UNION`, not `UNION ALL`: in a damaged
/// store whose parent links close a cycle the walk still ends.)
macro_rules! subtree {
    () => {
        "WITH RECURSIVE sub (id) AS (
             SELECT current_setting('arbor.root')::uuid
             UNION
             SELECT n.id FROM sub JOIN nodes n
               ON n.space = current_setting('arbor.space')::bigint AND n.parent = sub.id)"
    };
}

/// The subtree log's condition on an op `o` beyond naming a node of `sub`:
/// when `arbor.scoped` is `t` (a token limited to a subtree), no parent or
/// previous parent outside `sub` (TRASH aside).
macro_rules! scoped_log {
    () => {
        "(coalesce(current_setting('arbor.scoped', true), '') <> 't'
          OR o.kind = 's'
          OR ((o.parent IN (SELECT sub.id FROM sub)
               OR o.parent = 'ffffffff-ffff-ffff-ffff-ffffffffffff')
              AND (o.prev_parent IS NULL OR o.prev_parent IN (SELECT sub.id FROM sub)
                   OR o.prev_parent = 'ffffffff-ffff-ffff-ffff-ffffffffffff')))"
    };
}

/// The sections of a subtree snapshot: `arbor.root` is the subtree's root;
/// the log holds the ops about nodes of the subtree.
const SUBTREE_SECTIONS: [(u8, &str); 3] = [
    (
        b'N',
        concat!(
            "COPY (",
            subtree!(),
            "
               SELECT n.id,
                      CASE WHEN n.id = current_setting('arbor.root')::uuid
                                AND coalesce(current_setting('arbor.scoped', true), '') = 't'
                           THEN '00000000-0000-0000-0000-000000000000'::uuid
                           ELSE n.parent END,
                      n.key
               FROM sub JOIN nodes n
                 ON n.space = current_setting('arbor.space')::bigint AND n.id = sub.id)
         TO STDOUT (FORMAT binary)"
        ),
    ),
    (
        b'P',
        concat!(
            "COPY (",
            subtree!(),
            "
               SELECT p.node, p.field, p.value, p.hlc, p.replica FROM sub JOIN payloads p
                 ON p.space = current_setting('arbor.space')::bigint AND p.node = sub.id)
         TO STDOUT (FORMAT binary)"
        ),
    ),
    (
        b'L',
        concat!(
            "COPY (",
            subtree!(),
            "
               SELECT o.seq, o.hlc, o.replica, o.kind, o.node, o.parent, o.key, o.field, o.value,
                      o.known_seq, o.applied, o.prev_parent, o.prev_key
               FROM ops o JOIN spaces s ON s.id = o.space
               WHERE o.space = current_setting('arbor.space')::bigint
                 AND o.node IN (SELECT sub.id FROM sub)
                 AND (s.horizon_hlc IS NULL
                      OR (o.hlc, o.replica) > (s.horizon_hlc, s.horizon_replica))
                 AND ",
            scoped_log!(),
            "
               ORDER BY o.seq)
         TO STDOUT (FORMAT binary)"
        ),
    ),
];

type CopyStream = Pin<Box<tokio_postgres::CopyOutStream>>;

struct State {
    /// The connection, in its transaction; invariant: `Some` until the
    /// stream ends. Dropped unfinished, it is taken out of the pool (closed,
    /// so Postgres rolls back) rather than returned mid-COPY.
    conn: Option<deadpool_postgres::Object>,
    pending: VecDeque<Bytes>,
    sections: VecDeque<(u8, &'static str)>,
    copy: Option<CopyStream>,
    crc: crc32fast::Hasher,
    total: u64,
    counts: [u64; 3],
    done: bool,
}

impl Drop for State {
    fn drop(&mut self) {
        if !self.done {
            if let Some(conn) = self.conn.take() {
                drop(deadpool_postgres::Object::take(conn));
            }
        }
    }
}

impl State {
    fn emit(&mut self, bytes: Bytes) {
        metrics::counter!(crate::metrics::SNAPSHOT_BYTES).increment(bytes.len() as u64);
        self.crc.update(&bytes);
        self.total += bytes.len() as u64;
        self.pending.push_back(bytes);
    }

    async fn next_chunk(&mut self) -> Option<Result<Bytes, std::io::Error>> {
        loop {
            if let Some(b) = self.pending.pop_front() {
                return Some(Ok(b));
            }
            if self.done {
                return None;
            }
            match self.step().await {
                Ok(()) => {}
                Err(e) => {
                    self.done = true;
                    if let Some(conn) = self.conn.take() {
                        drop(deadpool_postgres::Object::take(conn));
                    }
                    return Some(Err(std::io::Error::other(e.to_string())));
                }
            }
        }
    }

    async fn step(&mut self) -> Result<(), DbError> {
        if let Some(copy) = self.copy.as_mut() {
            // Postgres sends one CopyData message per row: gather them into
            // chunks of about CHUNK bytes (a frame per row would cost more
            // than the row).
            let mut buf = BytesMut::with_capacity(CHUNK + 4);
            buf.put_u32(0);
            let mut ended = false;
            while buf.len() < CHUNK {
                match copy.next().await {
                    Some(data) => buf.put_slice(&data?),
                    None => {
                        ended = true;
                        break;
                    }
                }
            }
            let len = buf.len() - 4;
            if len > 0 {
                buf[..4].copy_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
                self.emit(buf.freeze());
            }
            if ended {
                self.copy = None;
                self.emit(Bytes::from_static(&[0, 0, 0, 0]));
            }
            return Ok(());
        }
        if self.conn.is_none() {
            self.done = true;
            return Ok(());
        }
        match self.sections.pop_front() {
            Some((tag, sql)) => {
                self.emit(Bytes::copy_from_slice(&[tag]));
                if let Some(conn) = self.conn.as_ref() {
                    let stream = conn.copy_out(sql).await?;
                    self.copy = Some(Box::pin(stream));
                }
            }
            None => {
                if let Some(conn) = self.conn.as_ref() {
                    conn.batch_execute("COMMIT").await?;
                }
                let mut t = BytesMut::with_capacity(1 + 8 * 4 + 4);
                t.put_u8(b'E');
                for c in self.counts {
                    t.put_u64(c);
                }
                t.put_u64(self.total);
                let crc = std::mem::take(&mut self.crc).finalize();
                t.put_u32(crc);
                // The trailer is not part of what it checks.
                self.pending.push_back(t.freeze());
                self.done = true;
                // Finished cleanly: the connection goes back to the pool.
                self.conn = None;
            }
        }
        Ok(())
    }
}

/// Opens the snapshot transaction and returns the header and the byte
/// stream of the whole snapshot (header included) of `scope`.
pub async fn snapshot(
    db: &Db,
    space: &str,
    scope: Scope,
) -> Result<
    (
        SnapshotHeader,
        impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static + use<>,
    ),
    DbError,
> {
    let conn = db.client().await?;
    conn.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await?;
    let mut state = State {
        conn: Some(conn),
        pending: VecDeque::new(),
        sections: match scope {
            Scope::Space => SECTIONS.into_iter().collect(),
            Scope::Subtree(_) | Scope::ScopedSubtree { .. } => {
                SUBTREE_SECTIONS.into_iter().collect()
            }
            Scope::Export => EXPORT_SECTIONS.into_iter().collect(),
        },
        copy: None,
        crc: crc32fast::Hasher::new(),
        total: 0,
        counts: [0; 3],
        done: false,
    };
    let Some(conn) = state.conn.as_ref() else {
        return Err(DbError::BadRow("no connection".into()));
    };
    let Some(row) = conn
        .query_opt(
            // The whole space's counts only for a whole-space file: a
            // subtree's are counted below (counting a million rows for
            // nothing was most of a 10k-node subtree's cold start).
            "SELECT id, head_seq, horizon_hlc, horizon_replica,
                    CASE WHEN $3 THEN (SELECT count(*) FROM nodes WHERE space = s.id) ELSE 0 END,
                    CASE WHEN $3 THEN (SELECT count(*) FROM payloads WHERE space = s.id) ELSE 0 END,
                    CASE WHEN $3 THEN (SELECT count(*) FROM ops o WHERE o.space = s.id
                       AND ($2 OR s.horizon_hlc IS NULL
                            OR (o.hlc, o.replica) > (s.horizon_hlc, s.horizon_replica))) ELSE 0 END
             FROM spaces s WHERE name = $1",
            &[
                &space,
                &(scope == Scope::Export),
                &matches!(scope, Scope::Space | Scope::Export),
            ],
        )
        .await?
    else {
        return Err(DbError::Rejected {
            code: RejectCode::UnknownSpace,
            message: format!("unknown_space: {space}"),
        });
    };
    let id: i64 = row.try_get(0)?;
    conn.execute(
        "SELECT set_config('arbor.space', $1, true)",
        &[&id.to_string()],
    )
    .await?;
    let mut counts = [count_at(&row, 4)?, count_at(&row, 5)?, count_at(&row, 6)?];
    let root = match scope {
        Scope::Subtree(root) | Scope::ScopedSubtree { node: root, .. } => Some(root),
        Scope::Space | Scope::Export => None,
    };
    if let Scope::ScopedSubtree { node, root } = scope {
        // Checked in the snapshot's own transaction: what it reads is what
        // the check saw.
        let inside = node == root
            || conn
                .query_one(
                    "SELECT EXISTS (SELECT 1 FROM arbor_scope_members($1, $2, ARRAY[$3::uuid]))",
                    &[
                        &id,
                        &uuid::Uuid::from_u128(root.0),
                        &uuid::Uuid::from_u128(node.0),
                    ],
                )
                .await?
                .try_get::<_, bool>(0)?;
        if !inside {
            return Err(DbError::Rejected {
                code: RejectCode::OutOfScope,
                message: format!("out_of_scope: node {node} is not in the token's subtree"),
            });
        }
        conn.execute("SELECT set_config('arbor.scoped', 't', true)", &[])
            .await?;
    }
    if let Some(root) = root {
        conn.execute(
            "SELECT set_config('arbor.root', $1, true)",
            &[&root.to_string()],
        )
        .await?;
        let sub = conn
            .query_one(
                concat!(
                    subtree!(),
                    "
                 SELECT (SELECT count(*) FROM sub JOIN nodes n
                           ON n.space = current_setting('arbor.space')::bigint AND n.id = sub.id),
                        (SELECT count(*) FROM sub JOIN payloads p
                           ON p.space = current_setting('arbor.space')::bigint AND p.node = sub.id),
                        (SELECT count(*) FROM ops o JOIN spaces s ON s.id = o.space
                          WHERE o.space = current_setting('arbor.space')::bigint
                            AND o.node IN (SELECT sub.id FROM sub)
                            AND (s.horizon_hlc IS NULL
                                 OR (o.hlc, o.replica) > (s.horizon_hlc, s.horizon_replica))
                            AND ",
                    scoped_log!(),
                    ")"
                ),
                &[],
            )
            .await?;
        counts = [count_at(&sub, 0)?, count_at(&sub, 1)?, count_at(&sub, 2)?];
        if counts[0] == 0 {
            return Err(DbError::Rejected {
                code: RejectCode::UnknownNode,
                message: format!("unknown_node: {root} is not in the tree"),
            });
        }
    }
    let horizon = match (
        row.try_get::<_, Option<i64>>(2)?,
        row.try_get::<_, Option<i64>>(3)?,
    ) {
        (Some(h), Some(r)) => Some(arbor_shared::Stamp::new(h as u64, replica_from_sql(r))),
        _ => None,
    };
    // Replica owners (migration 0010): a small table, read whole; for a
    // scoped token only the owners of the replicas its log names.
    let owner_rows = if matches!(scope, Scope::ScopedSubtree { .. }) {
        conn.query(
            concat!(
                subtree!(),
                "
             SELECT r.replica, r.sub FROM replicas r
             WHERE r.space = $1 AND r.replica IN (
                 SELECT o.replica FROM ops o JOIN spaces s ON s.id = o.space
                 WHERE o.space = $1 AND o.node IN (SELECT sub.id FROM sub)
                   AND (s.horizon_hlc IS NULL
                        OR (o.hlc, o.replica) > (s.horizon_hlc, s.horizon_replica))
                   AND ",
                scoped_log!(),
                ")"
            ),
            &[&id],
        )
        .await?
    } else {
        conn.query("SELECT replica, sub FROM replicas WHERE space = $1", &[&id])
            .await?
    };
    let mut owners = std::collections::BTreeMap::new();
    for r in owner_rows {
        owners.insert(
            arbor_shared::ReplicaId(replica_from_sql(r.try_get(0)?)),
            r.try_get::<_, String>(1)?,
        );
    }
    let header = SnapshotHeader {
        space: space.to_string(),
        head_seq: row.try_get::<_, i64>(1)?.max(0) as u64,
        horizon,
        nodes: counts[0],
        payloads: counts[1],
        log: counts[2],
        root,
        owners,
    };
    state.counts = [header.nodes, header.payloads, header.log];
    let json = serde_json::to_vec(&header).map_err(|e| DbError::BadRow(e.to_string()))?;
    let mut head = BytesMut::with_capacity(16 + json.len());
    head.put_slice(MAGIC);
    head.put_u32(VERSION);
    head.put_u32(u32::try_from(json.len()).unwrap_or(u32::MAX));
    head.put_slice(&json);
    state.emit(head.freeze());
    let stream = futures_util::stream::unfold(state, |mut st| async move {
        st.next_chunk().await.map(|item| (item, st))
    });
    Ok((header, stream))
}

fn count_at(row: &tokio_postgres::Row, i: usize) -> Result<u64, DbError> {
    Ok(row.try_get::<_, i64>(i)?.max(0) as u64)
}
