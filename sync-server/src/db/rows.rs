//! What the database layer answers ([`Committed`], [`SpaceInfo`], pages) and how values are encoded into and decoded from rows and arrays.

use arbor_shared::{MoveOp, NodeId, Op, OrderKey, Payload, ReplicaId, SetOp, Stamp};
use tokio_postgres::Row;
use uuid::Uuid;

use super::*;

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
    /// The token subject that owns the op's replica id in its space (who
    /// made it; `None` for restores and unclaimed replica ids).
    pub author: Option<String>,
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
    /// Whether it has children of its own.
    pub has_children: bool,
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

pub(super) fn uuid(n: NodeId) -> Uuid {
    Uuid::from_u128(n.0)
}

pub(super) fn node(u: Uuid) -> NodeId {
    NodeId(u.as_u128())
}

pub(super) fn u64_of(v: i64, what: &str) -> Result<u64, DbError> {
    u64::try_from(v).map_err(|_| DbError::BadRow(format!("negative {what}: {v}")))
}

pub(super) fn stamp_from(hlc: i64, replica: i64) -> Result<Stamp, DbError> {
    Ok(Stamp::new(u64_of(hlc, "hlc")?, replica_from_sql(replica)))
}

/// Decodes a row of `apply_ops` or of the catch-up query: columns seq, hlc,
/// replica, kind, node, parent, key, field, value, known_seq, then, found by
/// name, `origin` and `author` when the query has them.
pub(super) fn committed_from_row(row: &Row) -> Result<Committed, DbError> {
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
    let column = |name: &str| row.columns().iter().position(|c| c.name() == name);
    let origin = if let Some(i) = column("origin") {
        match row.try_get::<_, i8>(i)? as u8 {
            b'd' => Origin::Duplicate,
            b'r' => Origin::Restore,
            _ => Origin::New,
        }
    } else if stamp.replica == ReplicaId::SERVER {
        Origin::Restore
    } else {
        Origin::New
    };
    let author = match column("author") {
        Some(i) => row.try_get(i)?,
        None => None,
    };
    Ok(Committed {
        seq,
        op,
        origin,
        author,
    })
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
