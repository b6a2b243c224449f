//! Postgres as the source of truth, end to end:
//!
//! ```text
//! cargo run -p arbor-sync-server --example postgres_demo
//! ```
//!
//! Starts a throwaway Postgres cluster, applies the migrations, and has two
//! replicas push through `apply_ops`: A builds a small outline; B, offline,
//! deletes a section while A adds a child under it. The server's restore
//! rule brings the section back (a server-authored move), and the tree in
//! Postgres equals what a replica gets by applying the committed ops.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use arbor_shared::{KeyGen, MemoryStore, MoveOp, NodeId, Op, ReplicaId, SetOp, Stamp, Tree};
use arbor_sync_server::db::{ChildRow, Committed, Db, Origin, migrate};
use arbor_testkit::{PgCluster, PgOptions};

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

struct Author {
    replica: u64,
    hlc: u64,
    known_seq: u64,
    keys: KeyGen,
}

impl Author {
    fn new(replica: u64) -> Author {
        Author {
            replica,
            hlc: now_ms() << 16,
            known_seq: 0,
            keys: KeyGen::new(replica),
        }
    }
    fn stamp(&mut self) -> Stamp {
        self.hlc = self.hlc.max(now_ms() << 16) + 1;
        Stamp::new(self.hlc, self.replica)
    }
    fn mv(&mut self, node: NodeId, parent: NodeId) -> Op {
        let key = self.keys.between(None, None).unwrap();
        Op::Move(MoveOp {
            stamp: self.stamp(),
            known_seq: self.known_seq,
            node,
            parent,
            key,
        })
    }
    fn text(&mut self, node: NodeId, text: &str) -> Op {
        Op::Set(SetOp {
            stamp: self.stamp(),
            known_seq: self.known_seq,
            node,
            field: "text".into(),
            value: Some(text.into()),
        })
    }
    fn saw(&mut self, committed: &[Committed]) {
        for c in committed {
            self.known_seq = self.known_seq.max(c.seq);
            self.hlc = self.hlc.max(c.op.stamp().hlc.0);
        }
    }
}

fn label(kid: &ChildRow) -> String {
    kid.payloads
        .iter()
        .find(|(f, _)| f == "text")
        .and_then(|(_, p)| p.value.clone())
        .unwrap_or_default()
}

/// Prints ROOT's and TRASH's subtrees from Postgres, in sibling order.
async fn print_tree(db: &Db, title: &str) {
    println!("{title}");
    let mut work = vec![
        (NodeId::TRASH, 0usize, "TRASH".to_string()),
        (NodeId::ROOT, 0usize, "ROOT".to_string()),
    ];
    while let Some((id, depth, name)) = work.pop() {
        println!("{}{}", "    ".repeat(depth + 1), name);
        let kids = db.children("demo", id, None, 100).await.unwrap();
        for kid in kids.iter().rev() {
            work.push((kid.id, depth + 1, label(kid)));
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let cluster = PgCluster::start(PgOptions::default()).expect("start postgres");
    let admin = cluster.connect("postgres").await.unwrap();
    admin.batch_execute("CREATE DATABASE demo").await.unwrap();
    let mut client = cluster.connect("demo").await.unwrap();
    let applied = migrate(&mut client).await.unwrap();
    println!(
        "postgres {} started, migrations applied: {applied:?}",
        cluster.socket_dir().display()
    );
    let db = Db::new(cluster.config("demo"), 4).unwrap();
    db.create_space("demo").await.unwrap();

    let (mut a, mut b) = (Author::new(0xA), Author::new(0xB));
    let (plan, groceries, milk, bread) = (NodeId(1), NodeId(2), NodeId(3), NodeId(4));
    let outline = vec![
        a.mv(plan, NodeId::ROOT),
        a.text(plan, "Weekend plan"),
        a.mv(groceries, plan),
        a.text(groceries, "Groceries"),
        a.mv(milk, groceries),
        a.text(milk, "milk"),
    ];
    let got = db
        .apply("demo", Some(ReplicaId(0xA)), &outline)
        .await
        .unwrap();
    a.saw(&got);
    b.saw(&got);
    print_tree(&db, "\nA builds an outline (seqs 1..6):").await;

    // B, offline, deletes "Groceries"; A, not knowing, adds "bread" under it.
    let delete = b.mv(groceries, NodeId::TRASH);
    let add = vec![a.mv(bread, groceries), a.text(bread, "bread")];
    let got_add = db.apply("demo", Some(ReplicaId(0xA)), &add).await.unwrap();
    let got_del = db
        .apply("demo", Some(ReplicaId(0xB)), &[delete])
        .await
        .unwrap();
    for c in got_add.iter().chain(&got_del) {
        let who = match c.origin {
            Origin::Restore => "server (restore rule)".to_string(),
            _ => format!("replica {}", c.op.stamp().replica),
        };
        println!("committed seq {:>2} by {who}: {}", c.seq, serde_like(&c.op));
    }
    print_tree(&db, "\nAfter B's concurrent delete reaches the server:").await;

    // A replica that applies the committed feed gets exactly Postgres' tree.
    let feed = db.ops_after("demo", 0, 1000).await.unwrap();
    let mut replica = Tree::new(MemoryStore::new());
    replica
        .apply(&feed.ops.iter().map(|c| c.op.clone()).collect::<Vec<_>>())
        .unwrap();
    replica.check_invariants().unwrap();
    assert!(replica.state().unwrap() == db.state("demo").await.unwrap());
    println!(
        "\nA replica fed the {} committed ops equals Postgres: yes",
        feed.ops.len()
    );
    cluster.stop();
}

fn serde_like(op: &Op) -> String {
    let name = |n: NodeId| match n {
        NodeId::ROOT => "ROOT".to_string(),
        NodeId::TRASH => "TRASH".to_string(),
        n => format!("#{}", n.0),
    };
    match op {
        Op::Move(m) => format!("move {} under {}", name(m.node), name(m.parent)),
        Op::Set(s) => format!("set {}.{} = {:?}", name(s.node), s.field, s.value),
    }
}
