//! The realtime room state machine, driven by a simulated host: scenarios
//! and a seeded random interleaving of commits, pushes, catch-up pages,
//! connects and closes.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use arbor_shared::ErrorCode;
use arbor_shared::auth::{Claims, Role};
use arbor_shared::protocol::{ClientMsg, MAX_FRAME_BYTES, PresenceState, SeqOp, ServerMsg};
use arbor_shared::room::{
    Action, ConnId, IngestResult, Push, Room, RoomLimits, SubtreeAnswer, close,
};
use arbor_shared::sim::splitmix;
use arbor_shared::{NodeId, Op, ReplicaId};

use crate::util::{mv, seed};

fn claims(role: Role, rid: Option<u64>, exp: u64) -> Claims {
    Claims {
        sub: format!("user{}", rid.unwrap_or(0)),
        space: "s".into(),
        role,
        rid: rid.map(ReplicaId),
        tenant: None,
        exp,
        nbf: None,
        iat: None,
        jti: None,
        root: None,
    }
}

fn hello(replica: u64, cursor: Option<u64>) -> String {
    ClientMsg::Hello {
        v: 1,
        replica: ReplicaId(replica),
        cursor,
        root: None,
    }
    .encode()
}

/// A host: a committed log, the frames each connection received, pending
/// catch-up page requests and commit groups (served when the test says so).
/// Gap pages are served at once.
struct Host {
    room: Room,
    log: Vec<SeqOp>,
    received: BTreeMap<ConnId, Vec<ServerMsg>>,
    closed: BTreeMap<ConnId, u16>,
    catch_ups: VecDeque<(ConnId, u64, u64, u32)>,
    commits: VecDeque<Vec<Push>>,
    subtrees: VecDeque<(u64, BTreeSet<NodeId>)>,
}

impl Host {
    fn new(head: u64) -> Host {
        let log = (1..=head)
            .map(|s| SeqOp::new(s, mv(s, 9, 1000 + u128::from(s), 0)))
            .collect();
        Host {
            room: Room::new(
                "s",
                head,
                None,
                RoomLimits {
                    max_buffered_ops: 50,
                    ..RoomLimits::default()
                },
            ),
            log,
            received: BTreeMap::new(),
            closed: BTreeMap::new(),
            catch_ups: VecDeque::new(),
            commits: VecDeque::new(),
            subtrees: VecDeque::new(),
        }
    }

    fn run(&mut self, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::Send { conn, msg } => self.received.entry(conn).or_default().push(msg),
                Action::Broadcast { conns, msg } => {
                    for conn in conns {
                        self.received.entry(conn).or_default().push(msg.clone());
                    }
                }
                Action::Close { conn, code, .. } => {
                    self.closed.insert(conn, code);
                    let more = self.room.on_close(conn);
                    self.run(more);
                }
                Action::CatchUp {
                    conn,
                    after,
                    upto,
                    limit,
                } => self.catch_ups.push_back((conn, after, upto, limit)),
                Action::Commit { pushes } => self.commits.push_back(pushes),
                Action::Subtree { after, roots } => self.subtrees.push_back((after, roots)),
                Action::FetchGap { after, upto, limit } => {
                    let ops: Vec<SeqOp> = self
                        .range(after, upto)
                        .into_iter()
                        .take(limit as usize)
                        .collect();
                    let more = self.room.on_gap(ops);
                    self.run(more);
                }
            }
        }
        self.room.check_invariants().unwrap();
    }

    fn connect(&mut self, conn: ConnId, claims: Claims) {
        let a = self.room.on_connect(conn, claims);
        self.run(a);
    }

    fn range(&self, after: u64, upto: u64) -> Vec<SeqOp> {
        self.log
            .iter()
            .filter(|o| o.seq > after && o.seq <= upto)
            .cloned()
            .collect()
    }

    /// Commits an op from elsewhere (HTTP ingest, another path).
    fn commit_external(&mut self) {
        let seq = self.log.len() as u64 + 1;
        let op = SeqOp::new(seq, mv(seq, 9, 1000 + u128::from(seq), 0));
        self.log.push(op.clone());
        let a = self.room.on_committed(vec![op]);
        self.run(a);
    }

    /// Serves one pending catch-up page, of at most `page` ops (a short
    /// page: the room asks for the rest).
    fn serve_catch_up(&mut self, page: usize) {
        let Some((conn, after, upto, limit)) = self.catch_ups.pop_front() else {
            return;
        };
        let chunk: Vec<SeqOp> = self
            .range(after, upto)
            .into_iter()
            .take(page.min(limit as usize))
            .collect();
        let a = self.room.on_catch_up(conn, chunk);
        self.run(a);
    }

    /// Commits the oldest group the room asked for, every push of it.
    fn serve_ingest(&mut self) {
        let Some(group) = self.commits.pop_front() else {
            return;
        };
        let results = group
            .into_iter()
            .map(|push| {
                // A stamp already committed is a duplicate: left out of
                // the answer, as the database does.
                let new: Vec<Op> = push
                    .ops
                    .into_iter()
                    .filter(|op| self.log.iter().all(|l| l.op.stamp() != op.stamp()))
                    .collect();
                IngestResult::Committed(
                    new.into_iter()
                        .map(|op| {
                            let seq = self.log.len() as u64 + 1;
                            let s = SeqOp::new(seq, op);
                            self.log.push(s.clone());
                            s
                        })
                        .collect(),
                )
            })
            .collect();
        let a = self.room.on_commit(results);
        self.run(a);
    }

    fn seqs(&self, conn: ConnId) -> Vec<u64> {
        self.received
            .get(&conn)
            .into_iter()
            .flatten()
            .filter_map(|m| match m {
                ServerMsg::Ops { ops } => Some(ops.iter().map(|o| o.seq).collect::<Vec<_>>()),
                _ => None,
            })
            .flatten()
            .collect()
    }
}

#[test]
fn hello_catch_up_and_live_ops_have_no_gap_or_duplicate() {
    let mut h = Host::new(10);
    h.connect(1, claims(Role::Write, Some(1), u64::MAX));
    let a = h.room.on_message(1, &hello(1, Some(4)));
    h.run(a);
    assert!(matches!(
        h.received[&1][0],
        ServerMsg::Welcome { head_seq: 10, .. }
    ));
    // Live commits arrive while the catch-up is still running.
    h.commit_external();
    h.commit_external();
    h.serve_catch_up(3);
    h.commit_external();
    while !h.catch_ups.is_empty() {
        h.serve_catch_up(3);
    }
    h.commit_external();
    assert_eq!(h.seqs(1), (5..=14).collect::<Vec<_>>());
}

#[test]
fn pushes_are_relayed_only_after_commit_to_everyone_then_acked() {
    let mut h = Host::new(0);
    for c in [1, 2] {
        h.connect(c, claims(Role::Write, Some(c), u64::MAX));
        let a = h.room.on_message(c, &hello(c, None));
        h.run(a);
    }
    let push = ClientMsg::Push {
        batch: 7,
        ops: vec![mv(1, 1, 5, 0)],
    }
    .encode();
    let a = h.room.on_message(1, &push);
    h.run(a);
    assert!(matches!(
        &h.commits[0][..],
        [Push {
            conn: 1,
            batch: 7,
            ..
        }]
    ));
    // Nothing relayed before the commit.
    assert!(h.seqs(2).is_empty() && h.seqs(1).is_empty());
    h.serve_ingest();
    assert_eq!(h.seqs(1), [1]);
    assert_eq!(h.seqs(2), [1]);
    let last = h.received[&1].last().unwrap().clone();
    assert_eq!(last, ServerMsg::Ack { batch: 7 });
    // A failed push: an error for that batch, nothing relayed.
    let a = h.room.on_message(
        1,
        &ClientMsg::Push {
            batch: 8,
            ops: vec![mv(2, 1, 6, 0)],
        }
        .encode(),
    );
    h.run(a);
    assert_eq!(h.commits.len(), 1);
    h.commits.clear();
    let a = h.room.on_commit(vec![IngestResult::Failed {
        code: ErrorCode::Stale,
        message: "re-stamp".into(),
    }]);
    h.run(a);
    assert!(matches!(
        h.received[&1].last(),
        Some(ServerMsg::Error { batch: Some(8), .. })
    ));
    assert_eq!(h.seqs(2), [1]);
}

#[test]
fn refusals_close_with_codes() {
    let mut h = Host::new(3);
    // Read tokens cannot push; the socket stays open.
    h.connect(1, claims(Role::Read, Some(1), u64::MAX));
    let a = h.room.on_message(1, &hello(1, Some(3)));
    h.run(a);
    let a = h.room.on_message(
        1,
        &ClientMsg::Push {
            batch: 1,
            ops: vec![],
        }
        .encode(),
    );
    h.run(a);
    assert!(
        matches!(h.received[&1].last(), Some(ServerMsg::Error { code, .. }) if *code == ErrorCode::Forbidden)
    );
    assert!(h.commits.is_empty() && !h.closed.contains_key(&1));
    // A hello with another replica than the token's.
    h.connect(2, claims(Role::Write, Some(2), u64::MAX));
    let a = h.room.on_message(2, &hello(3, None));
    h.run(a);
    assert_eq!(h.closed.get(&2), Some(&close::FORBIDDEN));
    // Malformed and oversized frames.
    h.connect(3, claims(Role::Write, Some(3), u64::MAX));
    let a = h.room.on_message(3, "{\"type\":\"nope\"}");
    h.run(a);
    assert_eq!(h.closed.get(&3), Some(&close::PROTOCOL));
    h.connect(4, claims(Role::Write, Some(4), u64::MAX));
    let a = h.room.on_message(4, &"x".repeat(MAX_FRAME_BYTES + 1));
    h.run(a);
    assert_eq!(h.closed.get(&4), Some(&close::TOO_BIG));
    // A cursor ahead of the head: snapshot required.
    h.connect(5, claims(Role::Write, Some(5), u64::MAX));
    let a = h.room.on_message(5, &hello(5, Some(99)));
    h.run(a);
    assert!(matches!(
        h.received[&5][0],
        ServerMsg::SnapshotRequired { head_seq: 3 }
    ));
    // Tokens expire.
    h.connect(6, claims(Role::Write, Some(6), 1_000));
    let a = h.room.on_tick(1_059, 60);
    h.run(a);
    assert!(!h.closed.contains_key(&6));
    let a = h.room.on_tick(1_061, 60);
    h.run(a);
    assert_eq!(h.closed.get(&6), Some(&close::TOKEN_EXPIRED));
}

#[test]
fn a_catch_up_that_falls_behind_is_closed_not_buffered_forever() {
    let mut h = Host::new(5);
    h.connect(1, claims(Role::Read, Some(1), u64::MAX));
    let a = h.room.on_message(1, &hello(1, Some(0)));
    h.run(a);
    for _ in 0..60 {
        h.commit_external();
    }
    assert_eq!(h.closed.get(&1), Some(&close::TOO_SLOW));
    assert!(h.room.is_empty());
}

#[test]
fn presence_follows_hellos_and_closes() {
    let mut h = Host::new(0);
    h.connect(1, claims(Role::Write, Some(1), u64::MAX));
    let a = h.room.on_message(1, &hello(1, None));
    h.run(a);
    h.connect(2, claims(Role::Write, Some(2), u64::MAX));
    let a = h.room.on_message(2, &hello(2, None));
    h.run(a);
    let peers = |m: &ServerMsg| match m {
        ServerMsg::Peers { peers } => Some(peers.iter().map(|p| p.conn).collect::<Vec<_>>()),
        _ => None,
    };
    assert_eq!(
        h.received[&1].iter().filter_map(peers).next_back(),
        Some(vec![1, 2])
    );
    let a = h.room.on_close(2);
    h.run(a);
    assert_eq!(
        h.received[&1].iter().filter_map(peers).next_back(),
        Some(vec![1])
    );
    // A ping gets a pong.
    let a = h.room.on_message(1, &ClientMsg::Ping {}.encode());
    h.run(a);
    assert_eq!(h.received[&1].last(), Some(&ServerMsg::Pong));
}

#[test]
fn commits_reported_out_of_order_are_delivered_in_order() {
    let mut h = Host::new(0);
    h.connect(1, claims(Role::Write, Some(1), u64::MAX));
    let a = h.room.on_message(1, &hello(1, None));
    h.run(a);
    for s in 1..=3u64 {
        h.log.push(SeqOp::new(s, mv(s, 9, 2000 + u128::from(s), 0)));
    }
    // Seq 3 is reported first: the room asks for the gap and the host
    // fills it from its log.
    let a = h.room.on_committed(vec![h.log[2].clone()]);
    h.run(a);
    assert_eq!(h.seqs(1), [1, 2, 3]);
}

#[test]
fn random_interleavings_deliver_every_op_once_in_order() {
    let seed = seed("room interleavings");
    for case in 0..300u64 {
        let mut s = seed ^ case.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let mut h = Host::new(splitmix(&mut s) % 20);
        h.room = Room::new("s", h.log.len() as u64, None, RoomLimits::default());
        let mut starts: BTreeMap<ConnId, u64> = BTreeMap::new();
        let mut next_conn = 1u64;
        for _ in 0..200 {
            match splitmix(&mut s) % 7 {
                0 => {
                    let c = next_conn;
                    next_conn += 1;
                    h.connect(c, claims(Role::Write, Some(c), u64::MAX));
                    let head = h.room.head_seq();
                    let cursor = splitmix(&mut s) % (head + 1);
                    starts.insert(c, cursor);
                    let a = h.room.on_message(c, &hello(c, Some(cursor)));
                    h.run(a);
                }
                1 | 2 => h.commit_external(),
                3 => {
                    let page = 1 + (splitmix(&mut s) % 5) as usize;
                    h.serve_catch_up(page);
                }
                4 => {
                    if let Some(&c) = starts
                        .keys()
                        .nth((splitmix(&mut s) % (starts.len() as u64 + 1)) as usize)
                    {
                        let batch = splitmix(&mut s);
                        let op = mv(
                            1_000_000 + batch % 1000,
                            c,
                            5_000 + u128::from(batch % 1000),
                            0,
                        );
                        let a = h.room.on_message(
                            c,
                            &ClientMsg::Push {
                                batch,
                                ops: vec![op],
                            }
                            .encode(),
                        );
                        h.run(a);
                    }
                }
                5 => h.serve_ingest(),
                _ => {
                    if let Some(&c) = starts
                        .keys()
                        .nth((splitmix(&mut s) % (starts.len() as u64 + 4)) as usize)
                    {
                        let a = h.room.on_close(c);
                        h.run(a);
                        starts.remove(&c);
                    }
                }
            }
        }
        while !h.catch_ups.is_empty() || !h.commits.is_empty() {
            h.serve_catch_up(7);
            h.serve_ingest();
        }
        let head = h.log.len() as u64;
        for (c, start) in &starts {
            if h.closed.contains_key(c) {
                continue;
            }
            assert_eq!(
                h.seqs(*c),
                ((start + 1)..=head).collect::<Vec<_>>(),
                "case {case} conn {c}"
            );
        }
    }
}

#[test]
fn a_host_that_lost_its_memory_restores_sockets_without_gap_or_duplicate() {
    // Two live sockets at different cursors; the host (a Durable Object
    // after hibernation) keeps only each socket's claims and cursor.
    let mut h = Host::new(5);
    for (c, cursor) in [(1, Some(5)), (2, Some(2))] {
        h.connect(c, claims(Role::Write, Some(c), u64::MAX));
        let a = h.room.on_message(c, &hello(c, cursor));
        h.run(a);
    }
    while !h.catch_ups.is_empty() {
        h.serve_catch_up(2);
    }
    h.commit_external();
    let kept: Vec<(ConnId, (ReplicaId, u64))> = [1, 2]
        .iter()
        .map(|&c| (c, h.room.conn_cursor(c).unwrap()))
        .collect();
    assert_eq!(kept[0].1.1, 6);
    // Memory lost; meanwhile seqs 7 and 8 commit elsewhere. The new room
    // starts from the lowest cursor it knows (one socket is behind).
    h.log.push(SeqOp::new(7, mv(7, 9, 1007, 0)));
    h.log.push(SeqOp::new(8, mv(8, 9, 1008, 0)));
    let before: BTreeMap<ConnId, usize> = [1, 2].iter().map(|&c| (c, h.seqs(c).len())).collect();
    h.room = Room::new("s", 6, None, RoomLimits::default());
    // Socket 2 was told seq 6 too; restore it as behind to exercise the
    // catch-up path.
    let a = h.room.restore(
        2,
        claims(Role::Write, Some(2), u64::MAX),
        Some((ReplicaId(2), 4)),
        None,
    );
    h.run(a);
    let a = h.room.restore(
        1,
        claims(Role::Write, Some(1), u64::MAX),
        Some((ReplicaId(1), 6)),
        None,
    );
    h.run(a);
    // A commit notice brings the room up to the database's head.
    let a = h.room.on_head(8);
    h.run(a);
    while !h.catch_ups.is_empty() {
        h.serve_catch_up(2);
    }
    h.commit_external();
    let after1: Vec<u64> = h.seqs(1)[before[&1]..].to_vec();
    let after2: Vec<u64> = h.seqs(2)[before[&2]..].to_vec();
    assert_eq!(after1, [7, 8, 9]);
    assert_eq!(after2, [5, 6, 7, 8, 9]);
    assert_eq!(h.room.peers().len(), 2);
}

#[test]
fn large_commits_go_out_in_frames_under_the_limit() {
    // 300 sets of 10 KiB each: about 3 MiB of ops for one socket.
    let mut h = Host::new(0);
    h.connect(1, claims(Role::Read, Some(1), u64::MAX));
    let a = h.room.on_message(1, &hello(1, Some(0)));
    h.run(a);
    let value = "x".repeat(10 * 1024);
    let ops: Vec<SeqOp> = (1..=300u64)
        .map(|seq| {
            SeqOp::new(
                seq,
                Op::Set(arbor_shared::SetOp {
                    stamp: arbor_shared::Stamp::new(seq, 9),
                    known_seq: 0,
                    node: arbor_shared::NodeId(7),
                    field: "text".into(),
                    value: Some(value.clone()),
                }),
            )
        })
        .collect();
    h.log.extend(ops.clone());
    let a = h.room.on_committed(ops);
    h.run(a);
    let frames: Vec<&ServerMsg> = h.received[&1]
        .iter()
        .filter(|m| matches!(m, ServerMsg::Ops { .. }))
        .collect();
    assert!(frames.len() > 3, "{} frames", frames.len());
    for f in &frames {
        assert!(f.encode().len() <= MAX_FRAME_BYTES);
    }
    assert_eq!(h.seqs(1), (1..=300).collect::<Vec<_>>());
}

#[test]
fn a_hello_ahead_of_the_room_waits_for_the_database_or_gets_a_snapshot() {
    // The room saw up to 3; the database (another process) has 6.
    let mut h = Host::new(6);
    h.room = Room::new("s", 3, None, RoomLimits::default());
    h.connect(1, claims(Role::Read, Some(1), u64::MAX));
    let a = h.room.on_message(1, &hello(1, Some(5)));
    h.run(a);
    // Welcomed once the room fetched up to the cursor.
    assert!(
        matches!(h.received[&1][0], ServerMsg::Welcome { head_seq: 5, .. }),
        "{:?}",
        h.received[&1]
    );
    // The next commit notice brings the rest.
    let a = h.room.on_head(6);
    h.run(a);
    assert_eq!(h.seqs(1), [6]);
    // A cursor the database never reached: load a snapshot.
    h.connect(2, claims(Role::Read, Some(2), u64::MAX));
    let a = h.room.on_message(2, &hello(2, Some(50)));
    h.run(a);
    assert!(matches!(
        h.received[&2][..],
        [ServerMsg::SnapshotRequired { head_seq: 6 }]
    ));
}

#[test]
fn pushes_wait_behind_the_group_in_flight_and_commit_together_in_arrival_order() {
    let mut h = Host::new(0);
    for c in [1, 2, 3] {
        h.connect(c, claims(Role::Write, Some(c), u64::MAX));
        let a = h.room.on_message(c, &hello(c, None));
        h.run(a);
    }
    let push = |c: u64, batch: u64, node: u128| {
        ClientMsg::Push {
            batch,
            ops: vec![mv(batch, c, node, 0)],
        }
        .encode()
    };
    let a = h.room.on_message(1, &push(1, 10, 1));
    h.run(a);
    assert_eq!(h.commits.len(), 1, "the first push commits at once");
    // Three more arrive while it commits: no second group yet.
    for (c, b, n) in [(2, 20, 2), (3, 30, 3), (1, 11, 4)] {
        let a = h.room.on_message(c, &push(c, b, n));
        h.run(a);
    }
    assert_eq!(h.commits.len(), 1);
    assert_eq!(h.room.pushes_waiting(), 4);
    // A commit notice while the group is in flight is held, not fetched.
    let a = h.room.on_head(1);
    assert!(a.is_empty(), "{a:?}");
    h.serve_ingest();
    // The next group holds the three waiting pushes, in arrival order.
    let batches: Vec<u64> = h.commits[0].iter().map(|p| p.batch).collect();
    assert_eq!(batches, [20, 30, 11]);
    h.serve_ingest();
    assert_eq!(h.room.pushes_waiting(), 0);
    assert_eq!(h.seqs(2), [1, 2, 3, 4]);
    let acks: Vec<u64> = h.received[&1]
        .iter()
        .filter_map(|m| match m {
            ServerMsg::Ack { batch } => Some(*batch),
            _ => None,
        })
        .collect();
    assert_eq!(acks, [10, 11]);
}

#[test]
fn the_next_group_is_asked_for_before_the_answered_groups_frames() {
    // A host that starts its actions in order has the next group committed
    // while it writes the frames of the one just answered.
    let mut h = Host::new(0);
    h.connect(1, claims(Role::Write, Some(1), u64::MAX));
    let a = h.room.on_message(1, &hello(1, None));
    h.run(a);
    for (batch, node) in [(10, 1), (11, 2)] {
        let push = ClientMsg::Push {
            batch,
            ops: vec![mv(batch, 1, node, 0)],
        };
        let a = h.room.on_message(1, &push.encode());
        h.run(a);
    }
    let group = h.commits.pop_front().unwrap();
    let committed = SeqOp::new(1, group[0].ops[0].clone());
    h.log.push(committed.clone());
    let a = h
        .room
        .on_commit(vec![IngestResult::Committed(vec![committed])]);
    assert!(
        matches!(&a[..], [
            Action::Commit { pushes },
            Action::Send { msg: ServerMsg::Ops { .. }, .. },
            Action::Send { msg: ServerMsg::Ack { batch: 10 }, .. },
        ] if pushes.len() == 1 && pushes[0].batch == 11),
        "{a:?}"
    );
    h.run(a);
    h.serve_ingest();
    assert_eq!(h.seqs(1), [1, 2]);
}

#[test]
fn a_group_is_bounded_by_pushes_and_ops() {
    let mut h = Host::new(0);
    h.room = Room::new(
        "s",
        0,
        None,
        RoomLimits {
            group: arbor_shared::room::GroupLimits { pushes: 2, ops: 3 },
            ..RoomLimits::default()
        },
    );
    // Pushes of 1 op from connections 1 to 4, then one of 3 ops.
    for c in 1..=5u64 {
        h.connect(c, claims(Role::Write, Some(c), u64::MAX));
        let a = h.room.on_message(c, &hello(c, None));
        h.run(a);
        let n = if c == 5 { 3 } else { 1 };
        let ops = (0..n)
            .map(|i| mv(10 * c + i, c, u128::from(10 * c + i), 0))
            .collect();
        let a = h
            .room
            .on_message(c, &ClientMsg::Push { batch: c, ops }.encode());
        h.run(a);
    }
    // The first push went alone; then at most 2 pushes a group, and at
    // most 3 ops unless one push alone has more.
    let mut groups = Vec::new();
    while let Some(group) = h.commits.front() {
        groups.push(group.iter().map(|p| p.batch).collect::<Vec<_>>());
        h.serve_ingest();
    }
    assert_eq!(groups, [vec![1], vec![2, 3], vec![4], vec![5]]);
    assert_eq!(h.log.len(), 7);
}

#[test]
fn catch_up_goes_page_by_page_and_an_empty_page_closes_unavailable() {
    let mut h = Host::new(2_500);
    h.connect(1, claims(Role::Read, Some(1), u64::MAX));
    let a = h.room.on_message(1, &hello(1, Some(0)));
    h.run(a);
    // The room asks for one page of at most its page size at a time.
    let (_, after, upto, limit) = h.catch_ups[0];
    assert_eq!((after, upto, limit), (0, 2_500, 1_000));
    h.serve_catch_up(usize::MAX);
    let (_, after, _, limit) = h.catch_ups[0];
    assert_eq!((after, limit), (1_000, 1_000));
    h.serve_catch_up(usize::MAX);
    h.serve_catch_up(usize::MAX);
    assert!(h.catch_ups.is_empty());
    assert_eq!(h.seqs(1), (1..=2_500).collect::<Vec<_>>());
    // A database that has less than it committed: the connection is told
    // and closed, never left waiting.
    h.connect(2, claims(Role::Read, Some(2), u64::MAX));
    let a = h.room.on_message(2, &hello(2, Some(10)));
    h.run(a);
    h.log.truncate(5);
    h.serve_catch_up(usize::MAX);
    assert!(matches!(
        h.received[&2].last(),
        Some(ServerMsg::Error {
            code: ErrorCode::Unavailable,
            batch: None,
            ..
        })
    ));
    assert_eq!(h.closed.get(&2), Some(&close::INTERNAL));
}

/// A client ignores fields it does not know in server frames (the server
/// may add some within a version); the server refuses them in client frames.
#[test]
fn unknown_fields_are_ignored_in_server_frames_and_refused_in_client_frames() {
    let msg = ServerMsg::Ops {
        ops: vec![SeqOp::new(1, mv(1, 9, 1000, 0))],
    };
    let mut v: serde_json::Value = serde_json::from_str(&msg.encode()).unwrap();
    v["later"] = serde_json::json!(1);
    v["ops"][0]["later"] = serde_json::json!("x");
    assert_eq!(ServerMsg::decode(&v.to_string()).unwrap(), msg);
    let push = ClientMsg::Push {
        batch: 1,
        ops: vec![mv(1, 9, 1000, 0)],
    };
    for client in [ClientMsg::Ping {}, push] {
        let mut c: serde_json::Value = serde_json::from_str(&client.encode()).unwrap();
        assert!(ClientMsg::decode(&c.to_string()).is_ok());
        c["later"] = serde_json::json!(1);
        assert!(ClientMsg::decode(&c.to_string()).is_err(), "{c}");
    }
}

/// A `subtree` frame that only moves the cursor to `head`.
fn subtree_head(head: u64) -> ServerMsg {
    ServerMsg::Subtree {
        nodes: Vec::new(),
        registers: Vec::new(),
        removed: Vec::new(),
        root_in_trash: None,
        head_seq: Some(head),
    }
}

#[test]
fn subtree_connections_get_changes_not_ops_and_acks_after_the_change_that_covers_them() {
    let root = NodeId(77);
    let mut h = Host::new(5);
    // Without subtree feeds (the Durable Object) a hello with a root is
    // refused.
    h.connect(9, claims(Role::Read, None, u64::MAX));
    let hello_root = |cursor| {
        ClientMsg::Hello {
            v: 1,
            replica: ReplicaId(3),
            cursor,
            root: Some(root),
        }
        .encode()
    };
    let a = h.room.on_message(9, &hello_root(Some(5)));
    h.run(a);
    assert!(matches!(
        h.received[&9][0],
        ServerMsg::Error {
            code: ErrorCode::OutOfScope,
            ..
        }
    ));
    h.room.set_subtree_feeds(true);
    // A token with a root claim follows it (hello without root), another
    // connection asks for the same root; a full connection for contrast.
    h.connect(
        1,
        Claims {
            root: Some(root),
            ..claims(Role::Write, Some(3), u64::MAX)
        },
    );
    h.connect(2, claims(Role::Read, None, u64::MAX));
    h.connect(4, claims(Role::Read, None, u64::MAX));
    for (conn, msg) in [
        (1, hello(3, Some(5))),
        (2, hello(1, Some(5))),
        (4, hello_root(Some(5))),
    ] {
        let a = h.room.on_message(conn, &msg);
        h.run(a);
    }
    assert!(h.subtrees.is_empty(), "at the head: nothing to ask");
    // A push of the subtree connection: the full connection gets the ops,
    // the subtree connections nothing yet, and the room asks once for the
    // change of the root.
    let push = ClientMsg::Push {
        batch: 7,
        ops: vec![mv(100, 3, 50, 77)],
    }
    .encode();
    let a = h.room.on_message(1, &push);
    h.run(a);
    h.serve_ingest();
    assert_eq!(h.seqs(2), [6]);
    assert!(
        h.received[&1]
            .iter()
            .all(|m| !matches!(m, ServerMsg::Ops { .. } | ServerMsg::Ack { .. }))
    );
    assert_eq!(h.subtrees.pop_front(), Some((5, BTreeSet::from([root]))));
    // Another commit while the change is out: no second request.
    h.commit_external();
    assert!(h.subtrees.is_empty());
    // The change (read at head 6) goes to both, then the ack; the room
    // asks again from 6 for the commit it has not covered.
    let a = h.room.on_subtree(
        5,
        BTreeMap::from([(root, SubtreeAnswer::Frames(vec![subtree_head(6)]))]),
    );
    h.run(a);
    let tail: Vec<&ServerMsg> = h.received[&1].iter().rev().take(2).collect();
    assert_eq!(tail, [&ServerMsg::Ack { batch: 7 }, &subtree_head(6)]);
    assert_eq!(h.received[&4].last(), Some(&subtree_head(6)));
    assert_eq!(h.subtrees.pop_front(), Some((6, BTreeSet::from([root]))));
    // A host that lost its memory restores the subtree connection with its
    // root: it asks for the change again, never sends ops.
    let mut fresh = Room::new("s", 6, None, RoomLimits::default());
    fresh.set_subtree_feeds(true);
    let a = fresh.restore(
        4,
        claims(Role::Read, None, u64::MAX),
        Some((ReplicaId(3), 5)),
        Some(root),
    );
    assert_eq!(
        a,
        [Action::Subtree {
            after: 5,
            roots: BTreeSet::from([root])
        }]
    );
    assert_eq!(fresh.conn_root(4), Some(root));
    // A change that cannot be sent as frames: load a snapshot.
    let a = h.room.on_subtree(
        6,
        BTreeMap::from([(root, SubtreeAnswer::SnapshotRequired { head_seq: 7 })]),
    );
    h.run(a);
    assert!(matches!(
        h.received[&1].last(),
        Some(ServerMsg::SnapshotRequired { head_seq: 7 })
    ));
    assert_eq!(h.closed.get(&1), Some(&1000));
    assert_eq!(h.closed.get(&4), Some(&1000));
    assert!(!h.closed.contains_key(&2));
}

/// A push of a subtree connection whose ops were all committed before (a
/// re-push after a lost ack) commits nothing now; its ack still waits for
/// the change that covers the head the room knows, so the replica never
/// drops its pending edit before the frame that holds it.
#[test]
fn a_duplicate_push_of_a_subtree_connection_is_acked_after_the_covering_change() {
    let root = NodeId(77);
    let mut h = Host::new(5);
    h.room.set_subtree_feeds(true);
    h.connect(
        1,
        Claims {
            root: Some(root),
            ..claims(Role::Write, Some(3), u64::MAX)
        },
    );
    let a = h.room.on_message(1, &hello(3, Some(5)));
    h.run(a);
    // Its first push commits at 6 on another path (the ack was lost with
    // the connection): the room knows head 6, the change is asked for.
    let op = mv(100, 3, 50, 77);
    let seq = h.log.len() as u64 + 1;
    h.log.push(SeqOp::new(seq, op.clone()));
    let a = h.room.on_committed(vec![SeqOp::new(seq, op.clone())]);
    h.run(a);
    assert_eq!(h.subtrees.pop_front(), Some((5, BTreeSet::from([root]))));
    // The re-push is all duplicates: no ack before the change.
    let a = h.room.on_message(
        1,
        &ClientMsg::Push {
            batch: 8,
            ops: vec![op],
        }
        .encode(),
    );
    h.run(a);
    h.serve_ingest();
    assert!(
        !h.received[&1]
            .iter()
            .any(|m| matches!(m, ServerMsg::Ack { .. })),
        "{:?}",
        h.received[&1]
    );
    let a = h.room.on_subtree(
        5,
        BTreeMap::from([(root, SubtreeAnswer::Frames(vec![subtree_head(6)]))]),
    );
    h.run(a);
    let tail: Vec<&ServerMsg> = h.received[&1].iter().rev().take(2).collect();
    assert_eq!(tail, [&ServerMsg::Ack { batch: 8 }, &subtree_head(6)]);
}

#[test]
fn presence_in_a_large_room_goes_out_once_per_tick() {
    use arbor_shared::room::PRESENCE_BATCH_ABOVE;
    let mut h = Host::new(0);
    let n = PRESENCE_BATCH_ABOVE as u64 + 10;
    for c in 1..=n {
        h.connect(c, claims(Role::Read, Some(c), u64::MAX));
        let a = h.room.on_message(c, &hello(c, Some(0)));
        h.run(a);
    }
    let peers_frames = |h: &Host| -> usize {
        h.received
            .values()
            .flatten()
            .filter(|m| matches!(m, ServerMsg::Peers { .. }))
            .count()
    };
    // Up to the threshold each hello told the others; past it, nobody.
    let before = peers_frames(&h);
    let small: usize = (1..=PRESENCE_BATCH_ABOVE).map(|k| k - 1).sum();
    assert_eq!(before, small);
    // The tick tells everyone once, with the full list.
    let a = h.room.on_tick(0, 0);
    h.run(a);
    assert_eq!(peers_frames(&h), before + n as usize);
    match h.received[&1].last() {
        Some(ServerMsg::Peers { peers }) => assert_eq!(peers.len(), n as usize),
        other => panic!("{other:?}"),
    }
    // Nothing more until something changes.
    let a = h.room.on_tick(1, 0);
    h.run(a);
    assert_eq!(peers_frames(&h), before + n as usize);
}

#[test]
fn a_token_limited_to_a_subtree_sees_only_the_peers_of_that_subtree() {
    let root = NodeId(77);
    let mut h = Host::new(0);
    h.room.set_subtree_feeds(true);
    h.connect(1, claims(Role::Read, Some(1), u64::MAX));
    h.connect(
        2,
        Claims {
            root: Some(root),
            ..claims(Role::Read, Some(2), u64::MAX)
        },
    );
    h.connect(
        3,
        Claims {
            root: Some(root),
            ..claims(Role::Read, Some(3), u64::MAX)
        },
    );
    for c in 1..=3 {
        let a = h.room.on_message(c, &hello(c, Some(0)));
        h.run(a);
    }
    let last_peers = |h: &Host, c: ConnId| -> Vec<ConnId> {
        match h.received[&c]
            .iter()
            .rev()
            .find(|m| matches!(m, ServerMsg::Peers { .. }))
        {
            Some(ServerMsg::Peers { peers }) => peers.iter().map(|p| p.conn).collect(),
            _ => Vec::new(),
        }
    };
    assert_eq!(last_peers(&h, 1), [1, 2, 3]);
    assert_eq!(last_peers(&h, 2), [2, 3]);
    match &h.received[&3][0] {
        ServerMsg::Welcome { peers, .. } => {
            assert_eq!(peers.iter().map(|p| p.conn).collect::<Vec<_>>(), [2, 3]);
        }
        other => panic!("{other:?}"),
    }
}

/// The `presence` frames `conn` received, as (sender, state).
fn presence_seen(h: &Host, conn: ConnId) -> Vec<(u64, Option<PresenceState>)> {
    h.received
        .get(&conn)
        .into_iter()
        .flatten()
        .filter_map(|m| match m {
            ServerMsg::Presence { conn, state, .. } => Some((*conn, state.clone())),
            _ => None,
        })
        .collect()
}

fn presence(state: Option<PresenceState>) -> String {
    ClientMsg::Presence { state }.encode()
}

fn focus(n: u128) -> PresenceState {
    PresenceState {
        focus: Some(NodeId(n)),
        ..PresenceState::default()
    }
}

#[test]
fn presence_goes_to_who_sees_the_sender_rate_limited_expired_and_cleared_on_close() {
    use arbor_shared::protocol::MAX_PRESENCE_BYTES;
    use arbor_shared::room::{PRESENCE_PER_S, PRESENCE_TTL_MS};
    let root = NodeId(77);
    let mut h = Host::new(0);
    h.room.set_subtree_feeds(true);
    h.room.set_clock(1_000);
    // 1, 2, 3 follow the whole space; 4 and 5 have tokens limited to root.
    for c in 1..=5 {
        let mut cl = claims(Role::Write, Some(c), u64::MAX);
        if c >= 4 {
            cl.root = Some(root);
        }
        h.connect(c, cl);
        let a = h.room.on_message(c, &hello(c, Some(0)));
        h.run(a);
    }
    // Before hello: refused and closed.
    h.connect(9, claims(Role::Read, Some(9), u64::MAX));
    let a = h.room.on_message(9, &presence(Some(focus(1))));
    h.run(a);
    assert_eq!(h.closed.get(&9), Some(&close::PROTOCOL));

    // A full connection's state reaches the other full ones only.
    let a = h.room.on_message(1, &presence(Some(focus(5))));
    h.run(a);
    for c in [2, 3] {
        assert_eq!(presence_seen(&h, c), [(1, Some(focus(5)))], "conn {c}");
    }
    for c in [1, 4, 5] {
        assert!(presence_seen(&h, c).is_empty(), "conn {c}");
    }
    // A scoped connection's state reaches its subtree's peer and the full
    // connections.
    let a = h.room.on_message(4, &presence(Some(focus(78))));
    h.run(a);
    for c in [1, 2, 3, 5] {
        assert_eq!(
            presence_seen(&h, c).last(),
            Some(&(4, Some(focus(78)))),
            "conn {c}"
        );
    }

    // Over the rate: the burst goes out, the rest waits; the tick sends
    // the latest.
    let burst = PRESENCE_PER_S as u128;
    for i in 0..burst + 5 {
        let a = h.room.on_message(2, &presence(Some(focus(100 + i))));
        h.run(a);
    }
    let from_2 = |h: &Host| -> Vec<Option<PresenceState>> {
        presence_seen(h, 3)
            .into_iter()
            .filter(|(c, _)| *c == 2)
            .map(|(_, s)| s)
            .collect()
    };
    assert_eq!(from_2(&h).len(), burst as usize);
    let a = h.room.on_tick(2, 0);
    h.run(a);
    assert_eq!(from_2(&h).last(), Some(&Some(focus(100 + burst + 4))));
    assert_eq!(from_2(&h).len(), burst as usize + 1);

    // A welcome shows everyone's state.
    h.connect(6, claims(Role::Read, Some(6), u64::MAX));
    let a = h.room.on_message(6, &hello(6, Some(0)));
    h.run(a);
    let Some(ServerMsg::Welcome { peers, .. }) = h.received[&6].first() else {
        panic!("{:?}", h.received[&6])
    };
    let state_of = |c: u64| {
        peers
            .iter()
            .find(|p| p.conn == c)
            .and_then(|p| p.state.clone())
    };
    assert_eq!(state_of(1), Some(focus(5)));
    assert_eq!(state_of(4), Some(focus(78)));

    // Too large: refused and closed, nothing relayed.
    let big = PresenceState {
        data: Some(serde_json::Value::String("x".repeat(MAX_PRESENCE_BYTES))),
        ..PresenceState::default()
    };
    let before = presence_seen(&h, 1).len();
    let a = h.room.on_message(3, &presence(Some(big)));
    h.run(a);
    assert_eq!(h.closed.get(&3), Some(&close::PROTOCOL));
    assert_eq!(presence_seen(&h, 1).len(), before);

    // Not set again within the time to live: cleared at the next tick.
    // Connection 2 sets its state again at 5 s, so it is still live at 31 s.
    h.room.set_clock(5_000);
    let a = h.room.on_message(2, &presence(Some(focus(200))));
    h.run(a);
    let a = h.room.on_tick(1 + PRESENCE_TTL_MS / 1000, 0);
    h.run(a);
    assert_eq!(presence_seen(&h, 2).last(), Some(&(4, None)));
    assert!(presence_seen(&h, 2).contains(&(1, None)));
    assert!(!presence_seen(&h, 1).contains(&(2, None)));

    // Closing clears it at once.
    let a = h.room.on_close(2);
    h.run(a);
    assert_eq!(presence_seen(&h, 1).last(), Some(&(2, None)));
}
