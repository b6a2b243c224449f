//! Fuzz targets over bytes: run by the stable tests with seeded random
//! bytes and a fixed budget, and by the cargo-fuzz targets in `fuzz/`.
//!
//! Each target builds its input from the bytes with `arbitrary` (valid
//! shapes with wrong values, valid encodings with mutated bytes), runs the
//! code under test and asserts what must hold: never a panic, always a
//! typed error, a corrupted snapshot or token always refused, a refused
//! batch writes nothing. A failed assertion is the finding (that is what a
//! fuzzer reports), hence the asserts in library code; the module only
//! exists with the `fuzz` feature.

use arbitrary::{Arbitrary, Result, Unstructured};

use crate::auth::{self, Claims, Hs256Key, Role};
use crate::protocol::{ClientMsg, SeqOp, ServerMsg};
use crate::snapshot::copy::{Reader, Writer};
use crate::snapshot::{Decoder, Encoder, Event, SnapshotHeader};
use crate::{MemoryStore, MoveOp, NodeId, Op, OrderKey, ReplicaId, SetOp, Stamp, Tree};

/// An op from arbitrary parts: small id and stamp spaces (so ops meet),
/// keys and fields of any bytes, values up to past the limits.
pub fn op(u: &mut Unstructured<'_>) -> Result<Op> {
    let node = if u.ratio(1, 8)? {
        NodeId(
            u128::from(u.int_in_range(0u8..=12)?) | if bool::arbitrary(u)? { u128::MAX } else { 0 },
        )
    } else {
        NodeId(u128::from(u.int_in_range(1u8..=12)?))
    };
    let stamp = Stamp::new(u.int_in_range(0u64..=64)?, u.int_in_range(0u64..=3)?);
    let known_seq = u64::arbitrary(u)? % 100;
    Ok(if bool::arbitrary(u)? {
        let key_bytes: Vec<u8> = if u.ratio(1, 10)? {
            Vec::<u8>::arbitrary(u)?
        } else {
            vec![0x80, u.int_in_range(1u8..=255)?]
        };
        // Keys the type refuses cannot be built; the JSON frames carry them.
        let key = match OrderKey::new(&key_bytes) {
            Ok(k) => k,
            Err(_) => OrderKey::new(&[0x80]).map_err(|_| arbitrary::Error::IncorrectFormat)?,
        };
        let parent = if u.ratio(1, 10)? {
            NodeId::TRASH
        } else {
            NodeId(u128::from(u.int_in_range(0u8..=12)?))
        };
        Op::Move(MoveOp {
            stamp,
            known_seq,
            node,
            parent,
            key,
        })
    } else {
        let field = if u.ratio(1, 10)? {
            String::arbitrary(u)?
        } else {
            ["text", "color", ""][u.int_in_range(0usize..=2)?].to_string()
        };
        let value = if u.ratio(1, 20)? {
            Some("v".repeat(70_000))
        } else {
            Option::<String>::arbitrary(u)?
        };
        Op::Set(SetOp {
            stamp,
            known_seq,
            node,
            field,
            value,
        })
    })
}

/// Flips, inserts and deletes a few bytes of `b`.
pub fn mutate(u: &mut Unstructured<'_>, mut b: Vec<u8>) -> Result<Vec<u8>> {
    for _ in 0..u.int_in_range(1u8..=4)? {
        if b.is_empty() {
            b.push(u8::arbitrary(u)?);
            continue;
        }
        let i = u.choose_index(b.len())?;
        match u.int_in_range(0u8..=2)? {
            0 => b[i] ^= 1 << u.int_in_range(0u8..=7)?,
            1 => b.insert(i, u8::arbitrary(u)?),
            _ => {
                b.remove(i);
            }
        }
    }
    Ok(b)
}

/// The frame decoders take any text: a raw string, or a valid `push` or
/// `ops` frame with mutated bytes. They return a typed error or a message.
pub fn frames(u: &mut Unstructured<'_>) -> Result<()> {
    let text = match u.int_in_range(0u8..=2)? {
        0 => String::arbitrary(u)?,
        1 => {
            let mut ops = Vec::new();
            for _ in 0..u.int_in_range(0usize..=4)? {
                ops.push(op(u)?);
            }
            let msg = ClientMsg::Push {
                batch: u64::arbitrary(u)?,
                ops,
            };
            String::from_utf8_lossy(&mutate(u, msg.encode().into_bytes())?).into_owned()
        }
        _ => {
            let mut ops = Vec::new();
            for seq in 1..=u.int_in_range(0u64..=3)? {
                ops.push(SeqOp::new(seq, op(u)?));
            }
            let b = mutate(u, ServerMsg::Ops { ops }.encode().into_bytes())?;
            String::from_utf8_lossy(&b).into_owned()
        }
    };
    let _ = ClientMsg::decode(&text);
    let _ = ServerMsg::decode(&text);
    Ok(())
}

/// A valid snapshot file of 1..=20 nodes.
fn snapshot_file(u: &mut Unstructured<'_>) -> Result<Vec<u8>> {
    let n = u.int_in_range(1u64..=20)?;
    let header = SnapshotHeader {
        space: "s".into(),
        head_seq: n,
        horizon: None,
        nodes: n,
        payloads: 0,
        log: 0,
        root: None,
        owners: Default::default(),
    };
    let mut enc = Encoder::new();
    let mut out = enc.header(&header);
    for (tag, rows) in [(b'N', n), (b'P', 0), (b'L', 0)] {
        let mut w = Writer::new();
        for i in 0..rows {
            w.tuple(&[
                Some(&(u128::from(i) + 1).to_be_bytes()),
                Some(&0u128.to_be_bytes()),
                Some(&[0x80, 1 + i as u8]),
            ]);
        }
        out.extend(enc.section(tag));
        out.extend(enc.chunk(&w.finish()));
        out.extend(enc.end_section());
    }
    out.extend(enc.trailer());
    Ok(out)
}

/// The snapshot decoder, fed in pieces of any size, takes a mutated file,
/// a cut one or random bytes without a panic, and refuses every one that
/// is not the valid file.
pub fn snapshot(u: &mut Unstructured<'_>) -> Result<()> {
    let good = snapshot_file(u)?;
    let input = match u.int_in_range(0u8..=2)? {
        0 => mutate(u, good.clone())?,
        1 => good[..u.choose_index(good.len())?].to_vec(),
        _ => Vec::<u8>::arbitrary(u)?,
    };
    let step = u.int_in_range(1usize..=64)?;
    let mut d = Decoder::new();
    let mut reader: Option<Reader> = None;
    let mut refused = false;
    'feed: for piece in input.chunks(step) {
        d.push(piece);
        loop {
            match d.next_event() {
                Ok(Some(Event::SectionStart(_))) => reader = Some(Reader::new(3)),
                Ok(Some(Event::Data(data))) => {
                    if let Some(r) = reader.as_mut() {
                        r.push(&data);
                        while let Ok(Some(_)) = r.next_with(|f| f.len()) {}
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => {
                    refused = true;
                    break 'feed;
                }
            }
        }
    }
    let accepted = !refused && d.finish().is_ok();
    assert!(!accepted || input == good, "a corrupted snapshot decoded");
    Ok(())
}

/// The token verifier takes any string and accepts only the valid token.
pub fn token(u: &mut Unstructured<'_>) -> Result<()> {
    let key = Hs256Key::new(b"fuzz-secret-fuzz-secret-fuzz-secret!")
        .map_err(|_| arbitrary::Error::IncorrectFormat)?;
    let good = auth::mint(
        &Claims {
            sub: "fuzz".into(),
            space: "s".into(),
            role: Role::Write,
            rid: Some(ReplicaId(7)),
            tenant: None,
            exp: 2_000_000_000,
            nbf: None,
            iat: None,
            jti: None,
            root: None,
        },
        &key,
    );
    let token = if bool::arbitrary(u)? {
        String::arbitrary(u)?
    } else {
        String::from_utf8_lossy(&mutate(u, good.clone().into_bytes())?).into_owned()
    };
    let verdict = auth::verify(&token, &key, 1_000_000_000, 60);
    assert!(
        verdict.is_err() || token == good,
        "a mutated token verified: {token}"
    );
    Ok(())
}

/// The CRDT apply path: up to 20 batches of arbitrary ops on one tree.
/// A refused batch leaves the state as it was; the invariants hold after
/// every batch.
pub fn apply(u: &mut Unstructured<'_>) -> Result<()> {
    let mut tree = Tree::new(MemoryStore::new());
    for _ in 0..u.int_in_range(1u8..=20)? {
        let mut batch = Vec::new();
        for _ in 0..u.int_in_range(1usize..=6)? {
            batch.push(op(u)?);
        }
        let before = tree.state().ok();
        if tree.apply(&batch).is_err() {
            assert!(tree.state().ok() == before, "a refused batch wrote");
        }
        assert!(
            tree.check_invariants().is_ok(),
            "invariants broken: {:?}",
            tree.check_invariants()
        );
    }
    Ok(())
}
