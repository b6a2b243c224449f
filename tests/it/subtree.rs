//! Subtree replicas under live edits (issue 19), differential and seeded:
//! full replicas and subtree replicas (random roots, some with tokens
//! limited to their root) edit at random, moving nodes across the
//! subtrees' boundaries, deleting and restoring, and sync in random order
//! (each sync a new connection). After quiescence every full replica
//! equals the server, every subtree replica equals the server's tree
//! projected onto its root, and a recorder socket per scoped token, which
//! applies the `subtree` frames it gets to a model of its own, proves that
//! no frame named a node outside its subtree and that the frames alone
//! rebuild the projection.

use std::collections::{BTreeMap, BTreeSet};

use arbor_client::Position;
use arbor_e2e::ws::{self, Ws};
use arbor_shared::auth::{Claims, Role, mint};
use arbor_shared::protocol::{ClientMsg, ServerMsg};
use arbor_shared::tree::TreeState;
use arbor_shared::{NodeId, Place};
use arbor_testkit::PgCluster;
use arbor_testkit::env::Rng;
use futures_util::StreamExt as _;

use crate::replicas::{self, Shared};

const SECRET: &str = "subtree-feed-secret-subtree-feed-secret!";
const SPACE: &str = "tree";

fn token(sub: &str, role: Role, root: Option<NodeId>) -> String {
    let claims = Claims {
        root,
        ..arbor_testkit::tokens::claims(sub, SPACE, role, 3600)
    };
    mint(&claims, &arbor_testkit::tokens::key(SECRET.as_bytes()))
}

/// The ids of the subtree of `root` in `state` (itself included).
fn subtree_ids(state: &TreeState, root: NodeId) -> BTreeSet<NodeId> {
    let mut children: BTreeMap<NodeId, Vec<NodeId>> = BTreeMap::new();
    for (id, place) in &state.nodes {
        children.entry(place.parent).or_default().push(*id);
    }
    let mut out = BTreeSet::new();
    let mut stack = vec![root];
    while let Some(n) = stack.pop() {
        if out.insert(n) {
            stack.extend(children.get(&n).into_iter().flatten().copied());
        }
    }
    out
}

/// `state` limited to the subtree of `root`, without the root's own place
/// (a subtree replica shows its root under ROOT: its real parent may be
/// outside).
fn projection(state: &TreeState, root: NodeId) -> TreeState {
    let ids = subtree_ids(state, root);
    TreeState {
        nodes: state
            .nodes
            .iter()
            .filter(|(id, _)| ids.contains(id) && **id != root)
            .map(|(id, p)| (*id, p.clone()))
            .collect(),
        payloads: state
            .payloads
            .iter()
            .filter(|((id, _), _)| ids.contains(id))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

/// A replica in the workload.
struct Member {
    name: String,
    replica: Shared,
    token: String,
    /// A subtree replica's root.
    root: Option<NodeId>,
}

impl Member {
    /// The nodes it shows (its root's subtree, or ROOT's) and, for a full
    /// replica, the deleted ones directly under TRASH.
    fn held(&self) -> (Vec<NodeId>, Vec<NodeId>) {
        let r = self.replica.lock().unwrap();
        // The walk yields what is below its start.
        let mut shown = vec![self.root.unwrap_or(NodeId::ROOT)];
        r.walk(self.root.unwrap_or(NodeId::ROOT), |n, _| {
            shown.push(n);
            true
        })
        .unwrap();
        let trashed = match self.root {
            Some(_) => Vec::new(),
            None => r
                .children(NodeId::TRASH, None, 1_000)
                .unwrap()
                .into_iter()
                .map(|c| c.id)
                .collect(),
        };
        (shown, trashed)
    }

    /// One random local edit; local refusals (a cycle) are part of the
    /// game.
    fn edit(&self, rng: &mut Rng, round: usize) {
        let (shown, trashed) = self.held();
        let pick = |rng: &mut Rng, from: &[NodeId]| from[rng.below(from.len() as u64) as usize];
        let mut r = self.replica.lock().unwrap();
        let top = self.root.unwrap_or(NodeId::ROOT);
        let movable: Vec<NodeId> = shown.iter().copied().filter(|n| *n != top).collect();
        match rng.below(10) {
            0..=3 => {
                let parent = pick(rng, &shown);
                let text = format!("{}-{round}", self.name);
                let _ = r.create_with(parent, Position::Last, &[("text", &text)]);
            }
            4..=5 if !movable.is_empty() => {
                let node = pick(rng, &movable);
                let _ = r.move_node(node, pick(rng, &shown), Position::First);
            }
            6 if !movable.is_empty() => {
                let _ = r.delete(pick(rng, &movable));
            }
            7 if !trashed.is_empty() => {
                let _ = r.restore(pick(rng, &trashed));
            }
            _ => {
                let node = pick(rng, &shown);
                if node != NodeId::ROOT {
                    let _ = r.set(node, "text", Some(&format!("{}@{round}", self.name)));
                }
            }
        }
    }

    async fn sync(&self, server: &str) {
        replicas::sync_with(&self.replica, server, SPACE, &self.token).await;
    }
}

/// A raw socket of a scoped token that keeps its own model of the subtree
/// from the frames, and notes every frame that names a node it was not
/// shown.
struct Recorder {
    ws: Ws,
    root: NodeId,
    /// The model: node -> parent.
    parent: BTreeMap<NodeId, NodeId>,
    registers: BTreeSet<(NodeId, String)>,
    violations: Vec<String>,
    head: u64,
}

impl Recorder {
    async fn start(server: &str, root: NodeId, state: &TreeState, head: u64) -> Recorder {
        let tok = token("recorder", Role::Read, Some(root));
        let mut ws = ws::connect(server, SPACE, Some(&tok)).await.unwrap();
        ws::send(
            &mut ws,
            &ClientMsg::Hello {
                v: 1,
                replica: arbor_shared::ReplicaId(0xdec0),
                cursor: Some(head),
                root: Some(root),
            },
        )
        .await;
        let p = projection(state, root);
        Recorder {
            ws,
            root,
            parent: p.nodes.iter().map(|(id, pl)| (*id, pl.parent)).collect(),
            registers: p.payloads.keys().cloned().collect(),
            violations: Vec::new(),
            head,
        }
    }

    fn held(&self, n: NodeId) -> bool {
        n == self.root || self.parent.contains_key(&n)
    }

    fn apply(&mut self, msg: ServerMsg) {
        let ServerMsg::Subtree {
            nodes,
            registers,
            removed,
            head_seq,
            ..
        } = msg
        else {
            return;
        };
        let arriving: BTreeSet<NodeId> = nodes.iter().map(|n| n.id).collect();
        for n in &nodes {
            if !self.held(n.parent) && !arriving.contains(&n.parent) {
                self.violations.push(format!(
                    "{} placed under {}, not in the subtree",
                    n.id, n.parent
                ));
            }
            self.parent.insert(n.id, n.parent);
        }
        for r in &registers {
            if !self.held(r.node) {
                self.violations
                    .push(format!("a register of {}, not in the subtree", r.node));
            }
            self.registers.insert((r.node, r.field.clone()));
        }
        // A frame may name a node and one of its ancestors: check against
        // the model before any removal.
        let before: BTreeSet<NodeId> = self.parent.keys().copied().collect();
        for x in &removed {
            if *x != self.root && !before.contains(x) {
                self.violations.push(format!(
                    "{x} removed, never shown (frame to {head_seq:?}, model at {})",
                    self.head
                ));
            }
            let mut gone = BTreeSet::from([*x]);
            loop {
                let more: Vec<NodeId> = self
                    .parent
                    .iter()
                    .filter(|(id, p)| gone.contains(p) && !gone.contains(id))
                    .map(|(id, _)| *id)
                    .collect();
                if more.is_empty() {
                    break;
                }
                gone.extend(more);
            }
            self.parent.retain(|id, _| !gone.contains(id));
            self.registers.retain(|(id, _)| !gone.contains(id));
        }
        if let Some(h) = head_seq {
            self.head = h;
        }
    }

    /// Reads frames until the model is at `head`.
    async fn catch_up(&mut self, head: u64) {
        while self.head < head {
            let msg = tokio::time::timeout(std::time::Duration::from_secs(30), self.ws.next())
                .await
                .expect("the recorder's feed stalled")
                .expect("the recorder's socket ended")
                .unwrap();
            if let tokio_tungstenite::tungstenite::Message::Text(t) = msg {
                self.apply(ServerMsg::decode(t.as_str()).unwrap());
            }
        }
    }
}

/// The first `limit` committed ops of the space and its head (catch-up as
/// its owner).
async fn ops(http: &reqwest::Client, server: &str, limit: u32) -> arbor_shared::http::OpsBody {
    http.get(format!(
        "{server}/v1/spaces/{SPACE}/ops?after=0&limit={limit}"
    ))
    .bearer_auth(token("owner", Role::Admin, None))
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap()
}

#[tokio::test]
async fn subtree_replicas_stay_exact_under_random_live_edits() {
    let seed = arbor_testkit::env::seed("subtree_replicas_stay_exact_under_random_live_edits");
    let mut rng = Rng(seed | 1);
    let cluster = PgCluster::shared();
    let db = arbor_e2e::stack::database(cluster, "subtree_diff", 2).await;
    db.create_space(SPACE).await.unwrap();
    let server = arbor_e2e::stack::serve(arbor_sync_server::Config {
        drain: std::time::Duration::from_secs(1),
        ..arbor_e2e::stack::config(cluster, "subtree_diff", SECRET.as_bytes())
    })
    .await;
    let http = reqwest::Client::new();
    let dir = replicas::temp_dir("subtree-diff");

    // A full replica seeds a random tree of 40 nodes.
    let seeder = Member {
        name: "full0".into(),
        replica: replicas::open(&dir, "full0.db"),
        token: token("owner", Role::Write, None),
        root: None,
    };
    {
        let mut r = seeder.replica.lock().unwrap();
        let mut ids = vec![NodeId::ROOT];
        for i in 0..40 {
            let parent = ids[rng.below(ids.len() as u64) as usize];
            let id = r
                .create_with(parent, Position::Last, &[("text", &format!("seed{i}"))])
                .unwrap();
            ids.push(id);
        }
    }
    seeder.sync(&server).await;
    let seeded = seeder.replica.lock().unwrap().state().unwrap();
    let candidates: Vec<NodeId> = seeded.nodes.keys().copied().collect();

    // Two more full replicas, and four subtree replicas of random roots:
    // two with tokens limited to their root, two bound by the client only.
    let mut members = vec![seeder];
    members.push(Member {
        name: "full1".into(),
        replica: replicas::open(&dir, "full1.db"),
        token: token("owner", Role::Write, None),
        root: None,
    });
    let mut recorders = Vec::new();
    let mut roots = Vec::new();
    for i in 0..4 {
        let root = candidates[rng.below(candidates.len() as u64) as usize];
        roots.push(root);
        let scoped = i < 2;
        let replica = replicas::open(&dir, &format!("sub{i}.db"));
        replica.lock().unwrap().bind_subtree(root).unwrap();
        members.push(Member {
            name: format!("sub{i}"),
            replica,
            token: token(
                &format!("user{i}"),
                Role::Write,
                if scoped { Some(root) } else { None },
            ),
            root: Some(root),
        });
    }
    eprintln!("subtree roots: {roots:?}");
    for m in &members[1..] {
        m.sync(&server).await;
        if let Some(root) = m.root {
            let r = m.replica.lock().unwrap();
            assert!(
                r.contains(root).unwrap(),
                "{} lacks its root after its cold start: {:?}",
                m.name,
                r.state().unwrap()
            );
        }
    }
    let seq_now = ops(&http, &server, 1).await.head_seq.unwrap();
    for root in &roots[..2] {
        recorders.push(Recorder::start(&server, *root, &seeded, seq_now).await);
    }

    // Rounds: a few edits on a random member, then a random member syncs.
    for round in 0..60 {
        let who = rng.below(members.len() as u64) as usize;
        for _ in 0..1 + rng.below(3) {
            members[who].edit(&mut rng, round);
        }
        let syncer = rng.below(members.len() as u64) as usize;
        members[syncer].sync(&server).await;
        if rng.below(3) == 0 {
            members[who].sync(&server).await;
        }
    }
    // Quiescence: everyone pushes what it has, then everyone catches up.
    for _ in 0..3 {
        for m in &members {
            m.sync(&server).await;
        }
    }

    let checker = Member {
        name: "check".into(),
        replica: replicas::open(&dir, "check.db"),
        token: token("owner", Role::Read, None),
        root: None,
    };
    checker.sync(&server).await;
    let truth = checker.replica.lock().unwrap().state().unwrap();
    // The whole log, for the report of a failure.
    let log = ops(&http, &server, 10_000).await;
    for m in &members {
        let r = m.replica.lock().unwrap();
        r.check_invariants().unwrap();
        let got = r.state().unwrap();
        match m.root {
            None => assert!(
                got == truth,
                "{} differs from the server (seed {seed})",
                m.name
            ),
            Some(root) => {
                let want = projection(&truth, root);
                let mut got = got;
                got.nodes.remove(&root);
                assert_eq!(
                    got.nodes.keys().collect::<Vec<_>>(),
                    want.nodes.keys().collect::<Vec<_>>(),
                    "{}: nodes (seed {seed})",
                    m.name
                );
                let places: Vec<_> = want
                    .nodes
                    .iter()
                    .filter(|(id, p)| got.nodes.get(id) != Some(p))
                    .map(|(id, p)| (id, p, got.nodes.get(id)))
                    .collect();
                let regs: Vec<_> = want
                    .payloads
                    .iter()
                    .filter(|(k, v)| got.payloads.get(k) != Some(v))
                    .map(|(k, v)| (k, v, got.payloads.get(k)))
                    .chain(
                        got.payloads
                            .iter()
                            .filter(|(k, _)| !want.payloads.contains_key(k))
                            .map(|(k, v)| (k, v, None)),
                    )
                    .collect();
                if got != want {
                    let bad: BTreeSet<NodeId> = places
                        .iter()
                        .map(|(id, _, _)| **id)
                        .chain(regs.iter().map(|((id, _), _, _)| *id))
                        .collect();
                    for o in &log.ops {
                        let touches = bad.contains(&o.op.node())
                            || matches!(&o.op, arbor_shared::Op::Move(mv) if bad.contains(&mv.parent));
                        if touches {
                            eprintln!("{} {:?} {:?}", o.seq, o.op, o.author);
                        }
                    }
                    eprintln!("rejected: {:?}", r.rejected().ok());
                    for id in &bad {
                        let mut chain = vec![*id];
                        while let Some(p) = truth.nodes.get(chain.last().unwrap()) {
                            chain.push(p.parent);
                            if chain.len() > 50 {
                                break;
                            }
                        }
                        eprintln!("root {root}: {id} chain {chain:?}");
                    }
                }
                assert!(
                    got == want,
                    "{} differs from its projection (seed {seed}): places {places:?}, registers {regs:?}",
                    m.name
                );
            }
        }
    }
    let final_head = ops(&http, &server, 1).await.head_seq.unwrap();
    for rec in &mut recorders {
        rec.catch_up(final_head).await;
        if !rec.violations.is_empty() {
            for o in &log.ops {
                eprintln!("{} {:?}", o.seq, o.op);
            }
            eprintln!("recorder root {} started at {seq_now}", rec.root);
        }
        assert!(
            rec.violations.is_empty(),
            "frames named nodes outside the subtree (seed {seed}): {:?}",
            rec.violations
        );
        let want = projection(&truth, rec.root);
        let got: BTreeMap<NodeId, NodeId> = rec.parent.clone();
        let want_parents: BTreeMap<NodeId, NodeId> = want
            .nodes
            .iter()
            .map(|(id, p): (&NodeId, &Place)| (*id, p.parent))
            .collect();
        assert_eq!(got, want_parents, "the recorder's model (seed {seed})");
        let regs: BTreeSet<(NodeId, String)> = want.payloads.keys().cloned().collect();
        assert_eq!(
            rec.registers, regs,
            "the recorder's registers (seed {seed})"
        );
    }
}
