//! The subtree feed's projection and frames, and `Tree::rebase` (the
//! subtree replica's way of putting the server's state under its pending
//! moves).

use arbor_shared::protocol::{MAX_FRAME_BYTES, ServerMsg, SubtreeRegister};
use arbor_shared::subtree::{NodeChange, SubtreeRow, frames, project};
use arbor_shared::{MemoryStore, NodeId, OrderKey, Stamp, Tree, TreeStore as _};

use crate::util::mv;

const R: NodeId = NodeId(100);
const OUT: NodeId = NodeId(200);

fn change(node: u128, before: Option<&[u128]>, after: Option<&[u128]>) -> NodeChange {
    let chain = |c: Option<&[u128]>| c.map(|c| c.iter().map(|n| NodeId(*n)).collect::<Vec<_>>());
    let after = chain(after);
    NodeChange {
        node: NodeId(node),
        moved: true,
        before: chain(before),
        place: after
            .as_ref()
            .map(|a| (a[0], OrderKey::new(&[0x80]).unwrap())),
        after,
    }
}

#[test]
fn a_change_is_seen_by_a_subtree_as_entered_moved_removed_or_nothing() {
    let changes = vec![
        // Moved within R.
        change(1, Some(&[100, 0]), Some(&[5, 100, 0])),
        // Moved in from outside, and created inside.
        change(2, Some(&[200, 0]), Some(&[100, 0])),
        change(3, None, Some(&[100, 0])),
        // Moved out, and deleted.
        change(4, Some(&[100, 0]), Some(&[200, 0])),
        change(6, Some(&[5, 100, 0]), Some(&[u128::MAX])),
        // Outside all along.
        change(7, Some(&[200, 0]), Some(&[200, 0])),
        // R itself, into the trash.
        change(100, Some(&[0]), Some(&[u128::MAX])),
        // Registers only, inside and outside.
        NodeChange {
            moved: false,
            ..change(8, None, Some(&[100, 0]))
        },
        NodeChange {
            moved: false,
            ..change(9, None, Some(&[200, 0]))
        },
    ];
    let p = project(&changes, R);
    assert_eq!(p.entered, [NodeId(2), NodeId(3)]);
    assert_eq!(
        p.moved.iter().map(|m| (m.id, m.parent)).collect::<Vec<_>>(),
        [(NodeId(1), NodeId(5))]
    );
    assert_eq!(p.removed, [NodeId(4), NodeId(6)]);
    assert_eq!(p.root_in_trash, Some(true));
    assert!(p.written.contains(&NodeId(8)) && !p.written.contains(&NodeId(9)));
    assert!(!p.written.contains(&NodeId(7)) && !p.written.contains(&NodeId(4)));
    // Seen from the outside node's subtree: 7 moved within, 2 and 4 left
    // and entered it.
    let q = project(&changes, OUT);
    assert_eq!(q.removed, [NodeId(2)]);
    assert_eq!(q.entered, [NodeId(4)]);
    // The root leaving the tree is a removal of the root.
    let gone = project(&[change(100, Some(&[0]), None)], R);
    assert_eq!(gone.removed, [R]);
}

#[test]
fn a_large_change_goes_out_in_frames_under_the_limit_with_the_head_last() {
    let rows: Vec<SubtreeRow> = (0..30_000u128)
        .map(|i| SubtreeRow {
            id: NodeId(1_000 + i),
            parent: R,
            key: OrderKey::new(&[0x80, (i % 200) as u8 + 1]).unwrap(),
        })
        .collect();
    let big = "x".repeat(60_000);
    let registers: Vec<SubtreeRegister> = (0..40u128)
        .map(|i| SubtreeRegister {
            node: NodeId(1_000 + i),
            field: "text".into(),
            value: Some(big.clone()),
            stamp: Stamp::new(1, 1),
        })
        .collect();
    let mut p = project(&[change(1_000, None, Some(&[100]))], R);
    p.removed = (0..20_000u128).map(|i| NodeId(90_000 + i)).collect();
    let out = frames(&p, &rows, registers, 42);
    assert!(out.len() > 2, "{} frames", out.len());
    let (mut nodes, mut regs, mut removed) = (0, 0, 0);
    for (i, f) in out.iter().enumerate() {
        assert!(f.encode().len() <= MAX_FRAME_BYTES, "frame {i}");
        let ServerMsg::Subtree {
            nodes: n,
            registers: r,
            removed: d,
            head_seq,
            ..
        } = f
        else {
            panic!("{f:?}");
        };
        assert_eq!(head_seq.is_some(), i + 1 == out.len());
        if removed > 0 {
            assert!(n.is_empty() && r.is_empty(), "places after removals");
        }
        (nodes, regs, removed) = (nodes + n.len(), regs + r.len(), removed + d.len());
    }
    assert_eq!((nodes, regs, removed), (30_000, 40, 20_000));
}

#[test]
fn rebase_puts_new_state_under_the_logged_moves_and_drops_what_it_is_told() {
    let mut tree = Tree::new(MemoryStore::default());
    // The base: 1 and 2 under ROOT; pending: 1 under 2 (stamp 10), then
    // a create of 3 under 1 (stamp 11).
    tree.apply(&[mv(1, 1, 1, 0), mv(2, 1, 2, 0)]).unwrap();
    tree.store_mut()
        .log_truncate_through(Stamp::new(2, 1))
        .unwrap();
    tree.apply(&[mv(10, 2, 1, 2), mv(11, 2, 3, 1)]).unwrap();
    // The server's state: 2 moved under 1 by someone else (older stamp).
    // Redone on top, the pending move of 1 under 2 would close a cycle:
    // it is skipped, and the create still lands under 1.
    let dropped = tree
        .rebase(
            |_| true,
            |st| {
                let (two, one) = (st.intern(NodeId(2))?, st.intern(NodeId(1))?);
                st.set_place(
                    two,
                    arbor_shared::Place {
                        parent: one,
                        key: OrderKey::new(&[0x80]).unwrap(),
                    },
                )
            },
        )
        .unwrap();
    assert!(dropped.is_empty());
    tree.check_invariants().unwrap();
    assert_eq!(tree.parent(NodeId(2)).unwrap(), Some(NodeId(1)));
    assert_eq!(tree.parent(NodeId(1)).unwrap(), Some(NodeId::ROOT));
    assert_eq!(tree.parent(NodeId(3)).unwrap(), Some(NodeId(1)));
    // The create is acknowledged: it leaves the log and the state stays.
    let dropped = tree.rebase(|s| s != Stamp::new(11, 2), |_| Ok(())).unwrap();
    assert_eq!(dropped, [NodeId(3)]);
    tree.check_invariants().unwrap();
    assert_eq!(
        tree.parent(NodeId(3)).unwrap(),
        None,
        "an undone create that is not redone leaves"
    );
}
