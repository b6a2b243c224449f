//! Two replicas edit offline, including a pair of moves that would form a
//! cycle, then exchange ops and converge.
//!
//! Run: `cargo run -p arbor-shared --example converge`
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use arbor_shared::{Clock, Hlc, KeyGen, MemoryStore, MoveOp, NodeId, Op, ReplicaId, SetOp, Tree};

struct Device {
    name: &'static str,
    tree: Tree<MemoryStore>,
    clock: Clock,
    keys: KeyGen,
    outbox: Vec<Op>,
}

impl Device {
    fn new(name: &'static str, replica: u64) -> Self {
        Device {
            name,
            tree: Tree::new(MemoryStore::new()),
            clock: Clock::new(ReplicaId(replica), Hlc(0)),
            keys: KeyGen::new(replica),
            outbox: Vec::new(),
        }
    }

    fn mv(&mut self, node: NodeId, parent: NodeId, now_ms: u64) {
        let last = self.tree.last_child(parent).unwrap();
        let key = self.keys.append_after(last.as_ref().map(|c| &c.key));
        let stamp = self.clock.tick(now_ms).unwrap();
        let op = Op::Move(MoveOp {
            stamp,
            known_seq: 0,
            node,
            parent,
            key,
        });
        self.tree.apply(std::slice::from_ref(&op)).unwrap();
        self.outbox.push(op);
    }

    fn set(&mut self, node: NodeId, text: &str, now_ms: u64) {
        let stamp = self.clock.tick(now_ms).unwrap();
        let op = Op::Set(SetOp {
            stamp,
            known_seq: 0,
            node,
            field: "text".into(),
            value: Some(text.into()),
        });
        self.tree.apply(std::slice::from_ref(&op)).unwrap();
        self.outbox.push(op);
    }

    fn receive(&mut self, ops: &[Op]) {
        for op in ops {
            self.clock.observe(op.stamp().hlc);
        }
        let applied = self.tree.apply(ops).unwrap();
        println!(
            "{} applied {} remote ops ({} moves redone, {} skipped as cycles)",
            self.name,
            ops.len(),
            applied.redone,
            applied.skipped
        );
    }

    fn print(&self) {
        println!("{}:", self.name);
        for item in self.tree.subtree(NodeId::ROOT) {
            let (node, depth) = item.unwrap();
            let text = self
                .tree
                .payload(node, "text")
                .unwrap()
                .and_then(|p| p.value)
                .unwrap_or_default();
            println!("{}- {text}", "  ".repeat(depth));
        }
    }
}

fn main() {
    let (a, b, c) = (NodeId(1), NodeId(2), NodeId(3));
    let mut laptop = Device::new("laptop", 1);
    laptop.mv(a, NodeId::ROOT, 1_000);
    laptop.set(a, "Groceries", 1_000);
    laptop.mv(b, NodeId::ROOT, 1_001);
    laptop.set(b, "Errands", 1_001);
    laptop.mv(c, a, 1_002);
    laptop.set(c, "Milk", 1_002);
    let mut phone = Device::new("phone", 2);
    let initial = std::mem::take(&mut laptop.outbox);
    phone.receive(&initial);

    // Offline: the laptop moves Groceries under Errands while the phone
    // moves Errands under Groceries. Together these would form a cycle.
    laptop.mv(a, b, 2_000);
    phone.mv(b, a, 2_000);
    phone.set(c, "Oat milk", 2_001);

    let (from_laptop, from_phone) = (
        std::mem::take(&mut laptop.outbox),
        std::mem::take(&mut phone.outbox),
    );
    laptop.receive(&from_phone);
    phone.receive(&from_laptop);
    laptop.print();
    phone.print();
    assert_eq!(laptop.tree.state().unwrap(), phone.tree.state().unwrap());
    laptop.tree.check_invariants().unwrap();
    println!("converged: identical trees, no cycle");
}
