//! A subtree change's frames, gathered until the one that carries `head_seq`, so the replica applies the change whole.
//!
//! The server cuts one change into several `subtree` frames when it is
//! large (docs/PROTOCOL.md, "Subtree feed"). Applied one at a time, a frame
//! could set a place whose parent only a later frame moves out of the way
//! (a cycle in between); gathered, the change goes in as one transaction.

use arbor_shared::NodeId;
use arbor_shared::protocol::{SubtreeNode, SubtreeRegister};

/// Frames of one change a session holds at most before it gives up on the
/// change and reloads the subtree snapshot (the server's own caps keep a
/// change far below: docs/PROTOCOL.md).
pub(super) const MAX_GATHERED_FRAMES: usize = 128;

/// The frames of a change received so far.
#[derive(Debug, Default)]
pub(super) struct Gathered {
    /// Places, in frame order.
    pub(super) nodes: Vec<SubtreeNode>,
    /// Registers, in frame order.
    pub(super) registers: Vec<SubtreeRegister>,
    /// Removals, in frame order.
    pub(super) removed: Vec<NodeId>,
    /// The last `root_in_trash` a frame carried.
    pub(super) root_in_trash: Option<bool>,
    /// Frames gathered (invariant: at most [`MAX_GATHERED_FRAMES`]).
    frames: usize,
}

/// What adding a frame gave.
pub(super) enum Added {
    /// More frames follow.
    Waiting,
    /// The change is whole: apply it, then move the cursor to `head_seq`.
    Whole(Gathered, u64),
    /// Too many frames for one change.
    TooLarge,
}

impl Gathered {
    /// Adds one frame's parts. The server cuts a change into places, then
    /// registers, then removals, so each kind concatenated in frame order
    /// is the change as one frame would hold it.
    pub(super) fn add(
        &mut self,
        nodes: Vec<SubtreeNode>,
        registers: Vec<SubtreeRegister>,
        removed: Vec<NodeId>,
        root_in_trash: Option<bool>,
        head_seq: Option<u64>,
    ) -> Added {
        self.frames += 1;
        if self.frames > MAX_GATHERED_FRAMES {
            *self = Gathered::default();
            return Added::TooLarge;
        }
        self.nodes.extend(nodes);
        self.registers.extend(registers);
        self.removed.extend(removed);
        if root_in_trash.is_some() {
            self.root_in_trash = root_in_trash;
        }
        match head_seq {
            None => Added::Waiting,
            Some(head) => Added::Whole(std::mem::take(self), head),
        }
    }
}
