//! Property tests: random `Action` lists over 3-5 replicas.

use arbor_shared::MemoryStore;
use arbor_shared::Tree;
use arbor_shared::sim::{Action, Sim, shuffle, splitmix};
use proptest::prelude::*;

pub fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        6 => (any::<u8>(), any::<u16>(), any::<u8>()).prop_map(|(replica, parent, pos)| Action::Create { replica, parent, pos }),
        5 => (any::<u8>(), any::<u16>(), any::<u16>(), any::<u8>()).prop_map(|(replica, node, parent, pos)| Action::Move { replica, node, parent, pos }),
        2 => (any::<u8>(), any::<u16>()).prop_map(|(replica, node)| Action::Delete { replica, node }),
        1 => (any::<u8>(), any::<u16>()).prop_map(|(replica, node)| Action::Restore { replica, node }),
        2 => (any::<u8>(), any::<u16>(), any::<u8>(), 0u8..4).prop_map(|(replica, node, field, value)| Action::Set { replica, node, field, value }),
        2 => (any::<u8>(), any::<u8>(), any::<u16>(), any::<u16>()).prop_map(|(a, b, x, y)| Action::CrossMove { a, b, x, y }),
        4 => (any::<u8>(), 1u8..12, any::<u64>()).prop_map(|(to, count, seed)| Action::Deliver { to, count, seed }),
        1 => (any::<u8>(), any::<u16>()).prop_map(|(to, op)| Action::Redeliver { to, op }),
        2 => (0u16..3).prop_map(|ms| Action::Tick { ms }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// Replicas converge whatever the delivery order, duplicates and batch
    /// boundaries; invariants hold after every delivery; any permutation of
    /// the op set gives the same state.
    #[test]
    fn replicas_converge(replicas in 3usize..=5, actions in proptest::collection::vec(action(), 1..150), seed in any::<u64>()) {
        let mut sim = Sim::new(replicas);
        for a in &actions {
            sim.step(a).map_err(|e| TestCaseError::fail(e.to_string()))?;
        }
        let state = sim.finish(seed).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut s = seed ^ 0xABCD;
        for _ in 0..3 {
            let mut ops = sim.ops.clone();
            shuffle(&mut ops, &mut s);
            let mut t = Tree::new(MemoryStore::new());
            let mut rest = &ops[..];
            while !rest.is_empty() {
                let k = 1 + (splitmix(&mut s) % 9) as usize;
                let (batch, tail) = rest.split_at(k.min(rest.len()));
                t.apply(batch).map_err(|e| TestCaseError::fail(e.to_string()))?;
                rest = tail;
            }
            t.check_invariants().map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(&t.state().map_err(|e| TestCaseError::fail(e.to_string()))?, &state);
        }
    }
}
