//! Field encodings of the sections (Postgres binary send formats).

use super::SnapshotError;
use crate::NodeId;

/// `uuid`: 16 bytes, big-endian.
pub fn uuid(n: NodeId) -> [u8; 16] {
    n.0.to_be_bytes()
}

/// `int8`: 8 bytes, big-endian.
pub fn int8(v: i64) -> [u8; 8] {
    v.to_be_bytes()
}

/// Decodes a `uuid`.
pub fn to_uuid(f: Option<&[u8]>) -> Result<NodeId, SnapshotError> {
    let b: [u8; 16] = f
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| SnapshotError::BadCopy("bad uuid".into()))?;
    Ok(NodeId(u128::from_be_bytes(b)))
}

/// Decodes an `int8`.
pub fn to_int8(f: Option<&[u8]>) -> Result<i64, SnapshotError> {
    let b: [u8; 8] = f
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| SnapshotError::BadCopy("bad int8".into()))?;
    Ok(i64::from_be_bytes(b))
}

/// Decodes a `text`.
pub fn to_text(f: Option<&[u8]>) -> Result<String, SnapshotError> {
    let b = f.ok_or_else(|| SnapshotError::BadCopy("NULL text".into()))?;
    String::from_utf8(b.to_vec()).map_err(|_| SnapshotError::BadCopy("text not UTF-8".into()))
}

/// Replica ids are stored with the sign bit flipped (so row order is
/// stamp order): the stored `int8` of replica `r`.
pub fn replica_to_stored(r: u64) -> i64 {
    (r as i64) ^ i64::MIN
}

/// Inverse of [`replica_to_stored`].
pub fn replica_from_stored(r: i64) -> u64 {
    (r ^ i64::MIN) as u64
}
