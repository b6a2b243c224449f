//! Ops (`Move`, `Set`), their JSON wire shape and their validation limits.
//!
//! # JSON shape (stable; `docs/PROTOCOL.md` is the reference)
//!
//! ```json
//! {"kind":"move","stamp":"0001234567890000-00000000deadbeef","known_seq":12,
//!  "node":"0190f3c2-...","parent":"00000000-0000-0000-0000-000000000000","key":"8081"}
//! {"kind":"set","stamp":"...","known_seq":12,"node":"...","field":"text","value":"hi"}
//! ```
//!
//! `value: null` clears the field. Unknown fields are rejected.

use serde::{Deserialize, Serialize};

use crate::clock::Stamp;
use crate::id::NodeId;
use crate::key::{MAX_KEY_LEN, OrderKey};

/// Longest field name, in bytes.
pub const MAX_FIELD_LEN: usize = 64;
/// Longest field value, in bytes.
pub const MAX_VALUE_LEN: usize = 64 * 1024;

/// Make `node` the child of `parent` at order key `key`. Creating a node is
/// its first move; deleting is a move under [`NodeId::TRASH`]; restoring is
/// a move out of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MoveOp {
    /// The op id and its place in the total order.
    pub stamp: Stamp,
    /// Highest server sequence number the author had applied.
    pub known_seq: u64,
    /// The node moved (never ROOT or TRASH).
    pub node: NodeId,
    /// Its new parent.
    pub parent: NodeId,
    /// Its order key among the new parent's children.
    pub key: OrderKey,
}

/// Last-writer-wins write of one field of one node (`None` clears it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetOp {
    /// The op id; the highest stamp per (node, field) wins.
    pub stamp: Stamp,
    /// Highest server sequence number the author had applied.
    pub known_seq: u64,
    /// The node written.
    pub node: NodeId,
    /// The field name (1..=[`MAX_FIELD_LEN`] bytes).
    pub field: String,
    /// The new value (at most [`MAX_VALUE_LEN`] bytes), or `None` to clear.
    pub value: Option<String>,
}

/// One op of the replicated tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Op {
    /// See [`MoveOp`].
    Move(MoveOp),
    /// See [`SetOp`].
    Set(SetOp),
}

/// Why an op is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpError {
    /// ROOT and TRASH are never the node of an op.
    #[error("op {stamp}: node {node} is reserved (ROOT and TRASH never move)")]
    ReservedNode {
        /// The op.
        stamp: Stamp,
        /// The reserved node.
        node: NodeId,
    },
    /// The order key breaks the key format.
    #[error("op {stamp}: order key must be 1..={MAX_KEY_LEN} bytes not ending in 0x00")]
    BadKey {
        /// The op.
        stamp: Stamp,
    },
    /// The field name is empty or too long.
    #[error("op {stamp}: field name must be 1..={MAX_FIELD_LEN} bytes")]
    BadField {
        /// The op.
        stamp: Stamp,
    },
    /// The value is too long.
    #[error("op {stamp}: value longer than {MAX_VALUE_LEN} bytes")]
    ValueTooLong {
        /// The op.
        stamp: Stamp,
    },
    /// The field name or value holds a NUL character (U+0000), which
    /// Postgres text cannot store.
    #[error("op {stamp}: field names and values may not contain NUL (U+0000)")]
    Nul {
        /// The op.
        stamp: Stamp,
    },
}

impl OpError {
    /// The wire code of this refusal (the database's codes for the same
    /// limits; a NUL is `bad_op`).
    pub fn code(&self) -> crate::error::ErrorCode {
        use crate::error::ErrorCode;
        match self {
            OpError::ReservedNode { .. } => ErrorCode::ReservedNode,
            OpError::BadKey { .. } => ErrorCode::BadKey,
            OpError::BadField { .. } => ErrorCode::BadField,
            OpError::ValueTooLong { .. } => ErrorCode::ValueTooLong,
            OpError::Nul { .. } => ErrorCode::BadOp,
        }
    }
}

impl Op {
    /// The op's stamp.
    pub fn stamp(&self) -> Stamp {
        match self {
            Op::Move(m) => m.stamp,
            Op::Set(s) => s.stamp,
        }
    }

    /// The node the op is about.
    pub fn node(&self) -> NodeId {
        match self {
            Op::Move(m) => m.node,
            Op::Set(s) => s.node,
        }
    }

    /// The author's `known_seq`.
    pub fn known_seq(&self) -> u64 {
        match self {
            Op::Move(m) => m.known_seq,
            Op::Set(s) => s.known_seq,
        }
    }

    /// Checks the limits and reserved ids (not the horizon: that is state).
    pub fn validate(&self) -> Result<(), OpError> {
        match self {
            Op::Move(m) => {
                if m.node.is_reserved() {
                    return Err(OpError::ReservedNode {
                        stamp: m.stamp,
                        node: m.node,
                    });
                }
                // Keys built by deserialization are already valid; keys built
                // in code through `OrderKey::new` too. Re-check for safety.
                if OrderKey::new(m.key.as_bytes()).is_err() {
                    return Err(OpError::BadKey { stamp: m.stamp });
                }
            }
            Op::Set(s) => {
                if s.node.is_reserved() {
                    return Err(OpError::ReservedNode {
                        stamp: s.stamp,
                        node: s.node,
                    });
                }
                if s.field.is_empty() || s.field.len() > MAX_FIELD_LEN {
                    return Err(OpError::BadField { stamp: s.stamp });
                }
                if s.value.as_ref().is_some_and(|v| v.len() > MAX_VALUE_LEN) {
                    return Err(OpError::ValueTooLong { stamp: s.stamp });
                }
                if s.field.contains('\0') || s.value.as_ref().is_some_and(|v| v.contains('\0')) {
                    return Err(OpError::Nul { stamp: s.stamp });
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_shape_is_stable() {
        let op = Op::Move(MoveOp {
            stamp: Stamp::new(0x1_0000, 0xbeef),
            known_seq: 3,
            node: NodeId(1),
            parent: NodeId::ROOT,
            key: OrderKey::new(&[0x80, 0x81]).unwrap_or_else(|e| unreachable!("{e}")),
        });
        let json = serde_json::to_string(&op).unwrap_or_default();
        assert_eq!(
            json,
            r#"{"kind":"move","stamp":"0000000000010000-000000000000beef","known_seq":3,"node":"00000000-0000-0000-0000-000000000001","parent":"00000000-0000-0000-0000-000000000000","key":"8081"}"#
        );
        let back: Op = serde_json::from_str(&json).unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(back, op);
        let set = r#"{"kind":"set","stamp":"0000000000010000-000000000000beef","known_seq":0,"node":"00000000-0000-0000-0000-000000000001","field":"text","value":null}"#;
        let op: Op = serde_json::from_str(set).unwrap_or_else(|e| unreachable!("{e}"));
        assert!(matches!(&op, Op::Set(s) if s.value.is_none()));
        assert_eq!(serde_json::to_string(&op).unwrap_or_default(), set);
    }

    #[test]
    fn malformed_json_is_an_error() {
        for bad in [
            r#"{"kind":"move"}"#,
            r#"{"kind":"jump","stamp":"0000000000010000-000000000000beef"}"#,
            r#"{"kind":"move","stamp":"1-2","known_seq":0,"node":"00000000-0000-0000-0000-000000000001","parent":"00000000-0000-0000-0000-000000000000","key":"80"}"#,
            r#"{"kind":"move","stamp":"0000000000010000-000000000000beef","known_seq":0,"node":"00000000-0000-0000-0000-000000000001","parent":"00000000-0000-0000-0000-000000000000","key":"8000"}"#,
            r#"{"kind":"move","stamp":"0000000000010000-000000000000beef","known_seq":0,"node":"00000000-0000-0000-0000-000000000001","parent":"00000000-0000-0000-0000-000000000000","key":"80","extra":1}"#,
        ] {
            assert!(serde_json::from_str::<Op>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn validation_rejects_reserved_nodes_and_oversized_fields() {
        let key = OrderKey::new(&[0x80]).unwrap_or_else(|e| unreachable!("{e}"));
        let mv = |node| {
            Op::Move(MoveOp {
                stamp: Stamp::new(1, 1),
                known_seq: 0,
                node,
                parent: NodeId::ROOT,
                key: key.clone(),
            })
        };
        assert!(matches!(
            mv(NodeId::ROOT).validate(),
            Err(OpError::ReservedNode { .. })
        ));
        assert!(matches!(
            mv(NodeId::TRASH).validate(),
            Err(OpError::ReservedNode { .. })
        ));
        assert!(mv(NodeId(5)).validate().is_ok());
        let set = |field: &str, value: usize| {
            Op::Set(SetOp {
                stamp: Stamp::new(1, 1),
                known_seq: 0,
                node: NodeId(5),
                field: field.into(),
                value: Some("x".repeat(value)),
            })
        };
        assert!(set("text", MAX_VALUE_LEN).validate().is_ok());
        assert!(matches!(
            set("text", MAX_VALUE_LEN + 1).validate(),
            Err(OpError::ValueTooLong { .. })
        ));
        assert!(matches!(
            set("", 1).validate(),
            Err(OpError::BadField { .. })
        ));
        assert!(matches!(
            set(&"f".repeat(65), 1).validate(),
            Err(OpError::BadField { .. })
        ));
    }
}
