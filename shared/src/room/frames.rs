//! Committed ops cut into `ops` frames that stay under the frame limit.

use crate::op::Op;
use crate::protocol::{MAX_FRAME_BYTES, SeqOp, ServerMsg};

use super::{Action, ConnId};

/// Budget for one `ops` frame's ops, well under [`MAX_FRAME_BYTES`] (the
/// platform limit of the Durable Object tier is also 1 MiB).
const FRAME_BUDGET: usize = MAX_FRAME_BYTES * 3 / 4;

/// An upper bound of an op's JSON size: fixed fields plus the text ones,
/// counted 6 times (the worst JSON escape, `\u0000`).
fn op_size_bound(op: &SeqOp) -> usize {
    let text = match &op.op {
        Op::Move(m) => m.key.as_bytes().len() * 2,
        Op::Set(s) => 6 * (s.field.len() + s.value.as_ref().map_or(0, String::len)),
    };
    256 + text
}

/// `ops` as `ops` frames for `conn`, each within [`FRAME_BUDGET`] (an op
/// larger than the budget alone still fits the frame limit).
pub(super) fn ops_frames(conn: ConnId, ops: Vec<SeqOp>) -> Vec<Action> {
    let mut frames = Vec::new();
    let mut frame = Vec::new();
    let mut size = 0;
    for op in ops {
        let n = op_size_bound(&op);
        if !frame.is_empty() && size + n > FRAME_BUDGET {
            frames.push(Action::Send {
                conn,
                msg: ServerMsg::Ops {
                    ops: std::mem::take(&mut frame),
                },
            });
            size = 0;
        }
        size += n;
        frame.push(op);
    }
    if !frame.is_empty() {
        frames.push(Action::Send {
            conn,
            msg: ServerMsg::Ops { ops: frame },
        });
    }
    frames
}
