//! Snapshots over HTTP: framing, header and trailer, the binary COPY rows
//! equal Postgres' state, and a cut stream is detected.

use std::collections::BTreeMap;

use arbor_shared::auth::Role;
use arbor_shared::snapshot::Event;
use arbor_shared::{NodeId, OrderKey};
use arbor_sync_server::snapshot::{MAGIC, SnapshotHeader};
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::json;
use tokio_postgres::binary_copy::BinaryCopyOutStream;
use tokio_postgres::types::Type;

use crate::harness::*;
use crate::http::{Server, token};

pub(crate) type Row = Vec<Option<Vec<u8>>>;

fn take<'a>(b: &mut &'a [u8], n: usize) -> Result<&'a [u8], String> {
    if b.len() < n {
        return Err(format!("cut: wanted {n} bytes, {} left", b.len()));
    }
    let (head, tail) = b.split_at(n);
    *b = tail;
    Ok(head)
}

fn u32_at(b: &mut &[u8]) -> Result<u32, String> {
    Ok(u32::from_be_bytes(
        take(b, 4)?.try_into().map_err(|_| "u32")?,
    ))
}

fn u64_at(b: &mut &[u8]) -> Result<u64, String> {
    Ok(u64::from_be_bytes(
        take(b, 8)?.try_into().map_err(|_| "u64")?,
    ))
}

/// Rows of one raw `COPY ... (FORMAT binary)` stream.
fn copy_rows(mut b: &[u8]) -> Result<Vec<Row>, String> {
    let b = &mut b;
    if take(b, 11)? != b"PGCOPY\n\xff\r\n\0" {
        return Err("bad COPY signature".into());
    }
    take(b, 4)?; // flags
    let ext = u32_at(b)? as usize;
    take(b, ext)?;
    let mut rows = Vec::new();
    loop {
        let n = i16::from_be_bytes(take(b, 2)?.try_into().map_err(|_| "i16")?);
        if n == -1 {
            return if b.is_empty() {
                Ok(rows)
            } else {
                Err("bytes after COPY trailer".into())
            };
        }
        let mut row = Vec::new();
        for _ in 0..n {
            let len = i32::from_be_bytes(take(b, 4)?.try_into().map_err(|_| "i32")?);
            row.push(if len < 0 {
                None
            } else {
                Some(take(b, len as usize)?.to_vec())
            });
        }
        rows.push(row);
    }
}

/// Parses a whole snapshot; any cut or corruption is an error.
pub(crate) fn parse(body: &[u8]) -> Result<(SnapshotHeader, Vec<Vec<Row>>), String> {
    let mut b = body;
    let b = &mut b;
    if take(b, 8)? != MAGIC {
        return Err("bad magic".into());
    }
    if u32_at(b)? != 1 {
        return Err("bad version".into());
    }
    let n = u32_at(b)? as usize;
    let header: SnapshotHeader = serde_json::from_slice(take(b, n)?).map_err(|e| e.to_string())?;
    let mut sections = Vec::new();
    for tag in [b'N', b'P', b'L'] {
        if take(b, 1)? != [tag] {
            return Err(format!("expected section {}", tag as char));
        }
        let mut raw = Vec::new();
        loop {
            let len = u32_at(b)? as usize;
            if len == 0 {
                break;
            }
            raw.extend_from_slice(take(b, len)?);
        }
        sections.push(copy_rows(&raw)?);
    }
    let before = body.len() - b.len();
    if take(b, 1)? != b"E" {
        return Err("no trailer".into());
    }
    let counts = [u64_at(b)?, u64_at(b)?, u64_at(b)?];
    let total = u64_at(b)?;
    let crc = u32_at(b)?;
    if !b.is_empty() {
        return Err("bytes after the trailer".into());
    }
    if total != before as u64 || crc != crc32fast::hash(&body[..before]) {
        return Err("checksum mismatch".into());
    }
    let rows: Vec<u64> = sections.iter().map(|s| s.len() as u64).collect();
    if counts[..] != rows[..] || counts != [header.nodes, header.payloads, header.log] {
        return Err(format!("counts {counts:?}, rows {rows:?}"));
    }
    Ok((header, sections))
}

pub(crate) fn uuid(b: &Option<Vec<u8>>) -> NodeId {
    NodeId(u128::from_be_bytes(
        b.as_deref().unwrap().try_into().unwrap(),
    ))
}

#[tokio::test]
async fn snapshot_streams_the_state_and_a_cut_is_detected() {
    let (s, admin) = Server::start_demo().await;
    let base = now_ms() << 16;
    let mut ops = Vec::new();
    for i in 0..300u64 {
        let parent = if i < 10 {
            NodeId::ROOT
        } else {
            n(u128::from(i % 10) + 1)
        };
        ops.push(mv(
            base + 2 * i,
            7,
            n(u128::from(i) + 1),
            parent,
            &[0x80, (i % 200) as u8 + 1],
            0,
        ));
        ops.push(set(
            base + 2 * i + 1,
            7,
            n(u128::from(i) + 1),
            "text",
            Some(&format!("node {i}")),
            0,
        ));
    }
    let r = s.push("demo", &admin, &ops).await;
    assert_eq!(r.status(), 200);
    let read = token("demo", Role::Read, None, 60);

    let r = s.get("/v1/spaces/demo/snapshot", &read).await;
    assert_eq!(r.status(), 200);
    let body = r.bytes().await.unwrap();
    let (header, sections) = parse(&body).unwrap();
    assert_eq!(
        (header.head_seq, header.nodes, header.payloads, header.log),
        (600, 300, 300, 600)
    );

    // The rows are the committed state.
    let nodes: BTreeMap<NodeId, (NodeId, OrderKey)> = sections[0]
        .iter()
        .map(|r| {
            (
                uuid(&r[0]),
                (
                    uuid(&r[1]),
                    OrderKey::new(r[2].as_deref().unwrap()).unwrap(),
                ),
            )
        })
        .collect();
    for op in &ops {
        if let arbor_shared::Op::Move(m) = op {
            assert_eq!(nodes[&m.node], (m.parent, m.key.clone()));
        }
    }
    // Postgres agrees: the nodes section, loaded back with COPY FROM and
    // read with tokio-postgres' binary COPY reader, is the same rows.
    let pg = arbor_testkit::PgCluster::shared()
        .connect("postgres")
        .await
        .unwrap();
    pg.batch_execute("CREATE TEMP TABLE snap_nodes (id uuid, parent uuid, key bytea)")
        .await
        .unwrap();
    let mut raw = Vec::new();
    let mut decoder = arbor_shared::snapshot::Decoder::new();
    decoder.push(&body);
    let mut in_nodes = false;
    while let Some(event) = decoder.next_event().unwrap() {
        match event {
            Event::SectionStart(tag) => in_nodes = tag == b'N',
            Event::Data(d) if in_nodes => raw.extend(d),
            _ => {}
        }
    }
    let sink = pg
        .copy_in::<_, bytes::Bytes>("COPY snap_nodes FROM STDIN (FORMAT binary)")
        .await
        .unwrap();
    let mut sink = std::pin::pin!(sink);
    sink.send(bytes::Bytes::from(raw)).await.unwrap();
    assert_eq!(sink.as_mut().finish().await.unwrap(), 300);
    let out = pg
        .copy_out("COPY snap_nodes TO STDOUT (FORMAT binary)")
        .await
        .unwrap();
    let rows: Vec<_> = BinaryCopyOutStream::new(out, &[Type::UUID, Type::UUID, Type::BYTEA])
        .collect()
        .await;
    assert_eq!(rows.len(), 300);
    for row in rows {
        let row = row.unwrap();
        let id = NodeId(row.get::<uuid::Uuid>(0).as_u128());
        let parent = NodeId(row.get::<uuid::Uuid>(1).as_u128());
        let key = OrderKey::new(row.get::<&[u8]>(2)).unwrap();
        assert_eq!(nodes[&id], (parent, key));
    }
    let texts: BTreeMap<NodeId, String> = sections[1]
        .iter()
        .map(|r| {
            (
                uuid(&r[0]),
                String::from_utf8(r[2].clone().unwrap()).unwrap(),
            )
        })
        .collect();
    assert_eq!(texts[&n(5)], "node 4");
    let seqs: Vec<i64> = sections[2]
        .iter()
        .map(|r| i64::from_be_bytes(r[0].as_deref().unwrap().try_into().unwrap()))
        .collect();
    assert_eq!(seqs, (1..=600).collect::<Vec<_>>());

    // Every cut of the stream is detected, and so is a flipped byte.
    for cut in [
        0,
        7,
        20,
        body.len() / 3,
        body.len() / 2,
        body.len() - 30,
        body.len() - 1,
    ] {
        assert!(parse(&body[..cut]).is_err(), "cut at {cut} not detected");
    }
    let mut flipped = body.to_vec();
    let i = flipped.len() / 2;
    flipped[i] ^= 0x40;
    assert!(parse(&flipped).is_err());

    // The subtree of node 1: itself and its 29 children, their registers
    // and their ops.
    let r = s
        .get(&format!("/v1/spaces/demo/subtree/{}/snapshot", n(1)), &read)
        .await;
    assert_eq!(r.status(), 200);
    let (sub, sections) = parse(&r.bytes().await.unwrap()).unwrap();
    assert_eq!(
        (sub.root, sub.nodes, sub.payloads, sub.log),
        (Some(n(1)), 30, 30, 60)
    );
    let ids: Vec<NodeId> = sections[0].iter().map(|r| uuid(&r[0])).collect();
    assert!(ids.contains(&n(1)) && ids.contains(&n(11)) && !ids.contains(&n(2)));
    let r = s
        .get(
            &format!("/v1/spaces/demo/subtree/{}/snapshot", n(999)),
            &read,
        )
        .await;
    assert_eq!(r.status(), 422);

    // Unknown space and bad token.
    let r = s
        .get(
            "/v1/spaces/nope/snapshot",
            token("nope", Role::Read, None, 60),
        )
        .await;
    assert_eq!(r.status(), 404);
    let r = s
        .http
        .get(s.url("/v1/spaces/demo/snapshot"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    s.stop().await;
}

#[tokio::test]
async fn a_snapshot_during_writes_plus_catch_up_equals_the_final_state() {
    let (s, admin) = Server::start_demo().await;
    let base = now_ms() << 16;
    // A writer keeps committing batches while the snapshot is taken.
    let writer = {
        let (http, url, admin) = (s.http.clone(), s.url("/v1/spaces/demo/ops"), admin.clone());
        tokio::spawn(async move {
            for b in 0..40u64 {
                let ops: Vec<_> = (0..50u64)
                    .map(|i| {
                        let k = b * 50 + i;
                        let parent = if k < 5 {
                            NodeId::ROOT
                        } else {
                            n(u128::from(k % 5) + 1)
                        };
                        mv(
                            base + k,
                            7,
                            n(u128::from(k) + 1),
                            parent,
                            &[0x80, (k % 250) as u8 + 1],
                            0,
                        )
                    })
                    .collect();
                let r = http
                    .post(&url)
                    .bearer_auth(&admin)
                    .json(&json!({ "ops": ops }))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
            }
        })
    };
    let mut snapshots = Vec::new();
    for _ in 0..5 {
        let r = s.get("/v1/spaces/demo/snapshot", &admin).await;
        snapshots.push(r.bytes().await.unwrap());
    }
    writer.await.unwrap();
    let feed: arbor_sync_server::api::OpsBody = s
        .get_json("/v1/spaces/demo/ops?after=0&limit=10000", &admin)
        .await;
    let all: Vec<_> = feed.ops.iter().map(|c| c.op.clone()).collect();
    assert_eq!(all.len(), 2000);
    for body in snapshots {
        let (header, sections) = parse(&body).unwrap();
        let head = header.head_seq as usize;
        // The snapshot is exactly the state of ops 1..=head ...
        let mut at_head = tree();
        at_head.apply(&all[..head]).unwrap();
        let snap_nodes: BTreeMap<NodeId, (NodeId, Vec<u8>)> = sections[0]
            .iter()
            .map(|r| (uuid(&r[0]), (uuid(&r[1]), r[2].clone().unwrap())))
            .collect();
        let core_nodes: BTreeMap<NodeId, (NodeId, Vec<u8>)> = at_head
            .state()
            .unwrap()
            .nodes
            .into_iter()
            .map(|(id, p)| (id, (p.parent, p.key.as_bytes().to_vec())))
            .collect();
        assert_eq!(snap_nodes, core_nodes, "snapshot at head {head}");
        // ... and catch-up from its head is exactly the rest: no gap, no
        // duplicate.
        let rest: arbor_sync_server::api::OpsBody = s
            .get_json(
                &format!("/v1/spaces/demo/ops?after={head}&limit=10000"),
                &admin,
            )
            .await;
        let seqs: Vec<u64> = rest.ops.iter().map(|c| c.seq).collect();
        assert_eq!(seqs, ((head as u64 + 1)..=2000).collect::<Vec<_>>());
        at_head
            .apply(&rest.ops.iter().map(|c| c.op.clone()).collect::<Vec<_>>())
            .unwrap();
        let mut full = tree();
        full.apply(&all).unwrap();
        assert_eq!(at_head.state().unwrap(), full.state().unwrap());
    }
    s.stop().await;
}
