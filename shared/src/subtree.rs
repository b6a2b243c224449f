//! The subtree feed's projection: what a change of the whole tree means to a replica of one subtree (pure; the server feeds it from Postgres).
//!
//! A change between two seqs is given as the nodes it touched, each with
//! its chain of ancestors before and after. [`project`] tells one subtree
//! root which nodes entered its subtree (to be sent whole), which moved
//! within it, which left it, and which registers it must merge;
//! [`frames`] cuts that, with the entered subtrees' rows, into `subtree`
//! frames under the frame size limit. Membership is decided by the chains
//! alone: a node is in the subtree of `root` when it is `root` or `root`
//! is among its ancestors, so the answer never depends on what the
//! replica holds, and never names a node outside the subtree.

use std::collections::BTreeSet;

use crate::id::NodeId;
use crate::key::OrderKey;
use crate::protocol::{MAX_FRAME_BYTES, ServerMsg, SubtreeNode, SubtreeRegister};

/// One node a change touched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeChange {
    /// The node.
    pub node: NodeId,
    /// True if its place changed (created, moved, deleted, restored);
    /// false if only its registers did.
    pub moved: bool,
    /// Its ancestors before the change, parent first, up to ROOT, TRASH
    /// or a parent not in the tree (`None`: the node was not in the tree).
    /// Only looked at when `moved`.
    pub before: Option<Vec<NodeId>>,
    /// Its ancestors after the change (`None`: not in the tree).
    pub after: Option<Vec<NodeId>>,
    /// Its place after the change, if in the tree.
    pub place: Option<(NodeId, OrderKey)>,
}

impl NodeChange {
    fn inside(node: NodeId, chain: Option<&Vec<NodeId>>, root: NodeId) -> bool {
        chain.is_some_and(|c| node == root || c.contains(&root))
    }

    /// True if the node is in the subtree of `root` after the change.
    pub fn inside_after(&self, root: NodeId) -> bool {
        Self::inside(self.node, self.after.as_ref(), root)
    }

    /// True if the node was in the subtree of `root` before the change.
    pub fn inside_before(&self, root: NodeId) -> bool {
        if self.moved {
            Self::inside(self.node, self.before.as_ref(), root)
        } else {
            self.inside_after(root)
        }
    }
}

/// What a change means to the replica of one subtree.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Projection {
    /// Nodes that moved into the subtree: each is sent with its whole
    /// subtree and registers.
    pub entered: Vec<NodeId>,
    /// Nodes that moved within the subtree, with their new place.
    pub moved: Vec<SubtreeNode>,
    /// Nodes that left it (the root itself when it left the tree).
    pub removed: Vec<NodeId>,
    /// Nodes inside afterwards whose registers changed.
    pub written: BTreeSet<NodeId>,
    /// Whether the root is in the trash, when its place changed.
    pub root_in_trash: Option<bool>,
}

impl Projection {
    /// True if the replica has nothing to apply.
    pub fn is_empty(&self) -> bool {
        self.entered.is_empty()
            && self.moved.is_empty()
            && self.removed.is_empty()
            && self.written.is_empty()
            && self.root_in_trash.is_none()
    }
}

/// The change `changes` as seen by the replica of the subtree of `root`.
pub fn project(changes: &[NodeChange], root: NodeId) -> Projection {
    let mut p = Projection::default();
    for c in changes {
        let (before, after) = (c.inside_before(root), c.inside_after(root));
        if c.moved {
            if c.node == root {
                if after {
                    p.root_in_trash = c.after.as_ref().map(|a| a.contains(&NodeId::TRASH));
                } else if before {
                    p.removed.push(root);
                }
            } else {
                match (before, after, &c.place) {
                    (false, true, _) => p.entered.push(c.node),
                    (true, true, Some((parent, key))) => p.moved.push(SubtreeNode {
                        id: c.node,
                        parent: *parent,
                        key: key.clone(),
                    }),
                    (true, false, _) => p.removed.push(c.node),
                    _ => {}
                }
            }
        }
        if after {
            p.written.insert(c.node);
        }
    }
    p
}

/// A node of an entered subtree, as read with the change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubtreeRow {
    /// The node.
    pub id: NodeId,
    /// Its parent.
    pub parent: NodeId,
    /// Its key.
    pub key: OrderKey,
}

/// Bytes a frame may hold before the next item goes to a new frame: the
/// limit less room for the envelope and one more item (a register value
/// reaches 64 KiB).
const FRAME_BUDGET: usize = MAX_FRAME_BYTES - 80 * 1024;

/// The `subtree` frames of a projection: `rows` are the nodes of its
/// entered subtrees, `registers` the registers to merge (of those nodes
/// and of the written ones), both already limited to the subtree. The last
/// frame carries `removed`, `root_in_trash` and `head_seq`.
pub fn frames(
    p: &Projection,
    rows: &[SubtreeRow],
    registers: Vec<SubtreeRegister>,
    head_seq: u64,
) -> Vec<ServerMsg> {
    let mut out = Vec::new();
    let mut nodes: Vec<SubtreeNode> = Vec::new();
    let mut regs: Vec<SubtreeRegister> = Vec::new();
    let mut size = 0usize;
    let node_items = rows
        .iter()
        .map(|r| SubtreeNode {
            id: r.id,
            parent: r.parent,
            key: r.key.clone(),
        })
        .chain(p.moved.iter().cloned());
    let flush = |nodes: &mut Vec<SubtreeNode>,
                 regs: &mut Vec<SubtreeRegister>,
                 size: &mut usize,
                 out: &mut Vec<ServerMsg>| {
        out.push(ServerMsg::Subtree {
            nodes: std::mem::take(nodes),
            registers: std::mem::take(regs),
            removed: Vec::new(),
            root_in_trash: None,
            head_seq: None,
        });
        *size = 0;
    };
    for n in node_items {
        // id and parent (36 bytes each), the key's hex, the JSON around.
        size += 100 + 2 * n.key.as_bytes().len();
        nodes.push(n);
        if size > FRAME_BUDGET {
            flush(&mut nodes, &mut regs, &mut size, &mut out);
        }
    }
    for r in registers {
        size += 120 + r.field.len() + r.value.as_ref().map_or(4, |v| v.len() * 2);
        regs.push(r);
        if size > FRAME_BUDGET {
            flush(&mut nodes, &mut regs, &mut size, &mut out);
        }
    }
    // `removed` ids are 40 bytes each: cut them too.
    let mut removed = p.removed.clone();
    while removed.len() * 40 + size > FRAME_BUDGET {
        let take = (FRAME_BUDGET.saturating_sub(size) / 40)
            .max(1)
            .min(removed.len());
        let rest = removed.split_off(take);
        out.push(ServerMsg::Subtree {
            nodes: std::mem::take(&mut nodes),
            registers: std::mem::take(&mut regs),
            removed: std::mem::replace(&mut removed, rest),
            root_in_trash: None,
            head_seq: None,
        });
        size = 0;
    }
    out.push(ServerMsg::Subtree {
        nodes,
        registers: regs,
        removed,
        root_in_trash: p.root_in_trash,
        head_seq: Some(head_seq),
    });
    out
}
