//! Node and replica identifiers.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A node of the tree: 128 bits, written as a UUID (`8-4-4-4-12` lowercase hex).
///
/// Two ids are reserved and always present: [`NodeId::ROOT`] (all zeros) and
/// [`NodeId::TRASH`] (all ones). Ordering is numeric, which equals the byte
/// order of the big-endian representation and the lexicographic order of
/// the UUID text.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct NodeId(pub u128);

impl NodeId {
    /// The root of every thoughtspace. Never moved, never deleted.
    pub const ROOT: NodeId = NodeId(0);
    /// Deleted nodes live under this node. Never moved, never deleted.
    pub const TRASH: NodeId = NodeId(u128::MAX);

    /// True for [`NodeId::ROOT`] and [`NodeId::TRASH`].
    pub fn is_reserved(self) -> bool {
        self == Self::ROOT || self == Self::TRASH
    }

    /// Builds an id from 16 big-endian bytes (the UUID byte order).
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        NodeId(u128::from_be_bytes(bytes))
    }

    /// The 16 big-endian bytes of this id (the UUID byte order).
    pub fn to_bytes(self) -> [u8; 16] {
        self.0.to_be_bytes()
    }

    /// A random version-4 UUID drawn from 128 random bits supplied by the
    /// caller (the engine never reads a random source itself).
    pub fn from_random_bits(bits: u128) -> Self {
        // Set version 4 and the RFC 4122 variant so the text is a valid UUID.
        let v = (bits & !(0xF << 76) & !(0b11 << 62)) | (0x4 << 76) | (0b10 << 62);
        NodeId(v)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.0;
        write!(
            f,
            "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            (v >> 96) as u32,
            (v >> 80) as u16,
            (v >> 64) as u16,
            (v >> 48) as u16,
            v & 0xFFFF_FFFF_FFFF
        )
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            NodeId::ROOT => f.write_str("ROOT"),
            NodeId::TRASH => f.write_str("TRASH"),
            _ => write!(f, "{self}"),
        }
    }
}

/// Error returned when parsing an id from text fails.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdParseError {
    /// The text is not `8-4-4-4-12` hex digits.
    #[error("invalid node id {0:?}: expected a UUID like 00000000-0000-0000-0000-000000000000")]
    NodeId(String),
    /// The text is not 1 to 16 hex digits.
    #[error("invalid replica id {0:?}: expected 1 to 16 hex digits")]
    ReplicaId(String),
}

impl FromStr for NodeId {
    type Err = IdParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || IdParseError::NodeId(s.chars().take(64).collect());
        let b = s.as_bytes();
        if b.len() != 36 {
            return Err(err());
        }
        let mut v: u128 = 0;
        for (i, &c) in b.iter().enumerate() {
            if matches!(i, 8 | 13 | 18 | 23) {
                if c != b'-' {
                    return Err(err());
                }
                continue;
            }
            let d = (c as char).to_digit(16).ok_or_else(err)?;
            v = (v << 4) | u128::from(d);
        }
        Ok(NodeId(v))
    }
}

impl Serialize for NodeId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for NodeId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A device replica. Random and non-zero for devices; [`ReplicaId::SERVER`]
/// (zero) authors the server's corrective ops.
///
/// Written as 16 lowercase hex digits in text (JSON numbers lose precision
/// above 2^53).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ReplicaId(pub u64);

impl ReplicaId {
    /// The server, author of corrective (restore) ops.
    pub const SERVER: ReplicaId = ReplicaId(0);
}

impl fmt::Display for ReplicaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Debug for ReplicaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "r{:x}", self.0)
    }
}

impl FromStr for ReplicaId {
    type Err = IdParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || IdParseError::ReplicaId(s.chars().take(64).collect());
        if s.is_empty() || s.len() > 16 || !s.bytes().all(|c| c.is_ascii_hexdigit()) {
            return Err(err());
        }
        u64::from_str_radix(s, 16).map(ReplicaId).map_err(|_| err())
    }
}

impl Serialize for ReplicaId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ReplicaId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The thoughtspace-name rule (`migrations/0001_schema.sql`): 1 to 64
/// ASCII letters, digits, `_`, `.` or `-`. Checked before a name reaches
/// the database or a Durable Object.
pub fn valid_space_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_id_text_round_trips() {
        let id = NodeId(0x0123_4567_89ab_cdef_0011_2233_4455_6677);
        let s = id.to_string();
        assert_eq!(s, "01234567-89ab-cdef-0011-223344556677");
        assert_eq!(s.parse::<NodeId>(), Ok(id));
        assert_eq!(
            NodeId::TRASH.to_string(),
            "ffffffff-ffff-ffff-ffff-ffffffffffff"
        );
        assert!(
            "01234567-89ab-cdef-0011-22334455667"
                .parse::<NodeId>()
                .is_err()
        );
        assert!(
            "01234567x89ab-cdef-0011-223344556677"
                .parse::<NodeId>()
                .is_err()
        );
        assert!(
            "0123456g-89ab-cdef-0011-223344556677"
                .parse::<NodeId>()
                .is_err()
        );
    }

    #[test]
    fn random_node_ids_are_v4_uuids() {
        let id = NodeId::from_random_bits(u128::MAX);
        let s = id.to_string();
        assert_eq!(&s[14..15], "4");
        assert!(matches!(&s[19..20], "8" | "9" | "a" | "b"));
    }

    #[test]
    fn replica_id_text_round_trips() {
        let r = ReplicaId(0xdead_beef);
        assert_eq!(r.to_string(), "00000000deadbeef");
        assert_eq!("00000000deadbeef".parse::<ReplicaId>(), Ok(r));
        assert!("".parse::<ReplicaId>().is_err());
        assert!("+1".parse::<ReplicaId>().is_err());
        assert!("00000000000000000".parse::<ReplicaId>().is_err());
    }
}
