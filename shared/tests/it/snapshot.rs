//! The snapshot format: encode, then decode under every split of the
//! input; every cut and every flipped byte is detected.

use arbor_shared::snapshot::copy::{Reader, Tuple, Writer};
use arbor_shared::snapshot::field::{int8, to_int8, to_text, to_uuid, uuid};
use arbor_shared::snapshot::{Decoder, Encoder, Event, SnapshotError, SnapshotHeader};
use arbor_shared::{NodeId, Stamp};

/// A file with `n` node rows, `n` payload rows and no log rows, each
/// section's COPY stream split into chunks of `chunk` bytes.
fn file(n: u64, chunk: usize) -> Vec<u8> {
    let header = SnapshotHeader {
        space: "s".into(),
        head_seq: 7,
        horizon: Some(Stamp::new(5, 1)),
        nodes: n,
        payloads: n,
        log: 0,
        root: None,
        owners: Default::default(),
    };
    let mut enc = Encoder::new();
    let mut out = enc.header(&header);
    for (tag, rows) in [(b'N', n), (b'P', n), (b'L', 0)] {
        let mut w = Writer::new();
        for i in 0..rows {
            let id = uuid(NodeId(u128::from(i) + 1));
            if tag == b'N' {
                w.tuple(&[
                    Some(&id),
                    Some(&uuid(NodeId::ROOT)),
                    Some(&[0x80, i as u8 | 1]),
                ]);
            } else {
                let v = format!("value {i}");
                w.tuple(&[
                    Some(&id),
                    Some(b"text"),
                    Some(v.as_bytes()),
                    Some(&int8(i as i64)),
                    Some(&int8(1)),
                ]);
            }
        }
        let copy = w.finish();
        out.extend(enc.section(tag));
        for c in copy.chunks(chunk) {
            out.extend(enc.chunk(c));
        }
        out.extend(enc.end_section());
    }
    out.extend(enc.trailer());
    out
}

/// Each section's tag and tuples.
type Sections = Vec<(u8, Vec<Tuple>)>;

/// Decodes `bytes` fed in pieces of `step`; returns the header and rows.
fn decode(bytes: &[u8], step: usize) -> Result<(SnapshotHeader, Sections), SnapshotError> {
    let mut d = Decoder::new();
    let mut header = None;
    let mut sections = Vec::new();
    let mut reader: Option<(u8, Reader)> = None;
    for piece in bytes.chunks(step.max(1)) {
        d.push(piece);
        while let Some(e) = d.next_event()? {
            match e {
                Event::Header(h) => header = Some(h),
                Event::SectionStart(tag) => {
                    let fields = match tag {
                        b'N' => 3,
                        b'P' => 5,
                        _ => 13,
                    };
                    reader = Some((tag, Reader::new(fields)));
                    sections.push((tag, Vec::new()));
                }
                Event::Data(data) => {
                    let (_, r) = reader.as_mut().unwrap();
                    r.push(&data);
                    while let Some(t) = r.next_tuple()? {
                        sections.last_mut().unwrap().1.push(t);
                    }
                }
                Event::SectionEnd(_) => {
                    let (_, r) = reader.take().unwrap();
                    r.finish()?;
                }
                Event::End(_) => {}
            }
        }
    }
    d.finish()?;
    Ok((header.unwrap(), sections))
}

#[test]
fn round_trip_under_every_split() {
    let bytes = file(50, 97);
    let (h, sections) = decode(&bytes, bytes.len()).unwrap();
    assert_eq!((h.nodes, h.payloads, h.log, h.head_seq), (50, 50, 0, 7));
    assert_eq!(
        sections
            .iter()
            .map(|s| (s.0, s.1.len()))
            .collect::<Vec<_>>(),
        [(b'N', 50), (b'P', 50), (b'L', 0)]
    );
    let p = &sections[1].1[3];
    assert_eq!(to_uuid(p[0].as_deref()).unwrap(), NodeId(4));
    assert_eq!(to_text(p[2].as_deref()).unwrap(), "value 3");
    assert_eq!(to_int8(p[3].as_deref()).unwrap(), 3);
    for step in 1..64 {
        assert_eq!(decode(&bytes, step).unwrap().1, sections, "step {step}");
    }
}

#[test]
fn every_cut_is_detected() {
    let bytes = file(5, 13);
    for len in 0..bytes.len() {
        let err = decode(&bytes[..len], 7).unwrap_err();
        assert!(
            matches!(err, SnapshotError::Cut(_) | SnapshotError::BadCopy(_)),
            "cut at {len}: {err:?}"
        );
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert_eq!(decode(&longer, 7).unwrap_err(), SnapshotError::Trailing);
}

#[test]
fn every_flipped_byte_is_detected() {
    let bytes = file(5, 13);
    for i in 0..bytes.len() {
        let mut bad = bytes.clone();
        bad[i] ^= 0x01;
        assert!(decode(&bad, 64).is_err(), "flip at byte {i} went unnoticed");
    }
}

#[test]
fn limits_and_shapes_are_typed_errors() {
    assert_eq!(
        decode(b"NOTASNAPxxxxxxxx", 4).unwrap_err(),
        SnapshotError::BadMagic
    );
    let mut v2 = file(1, 8);
    v2[11] = 2;
    assert_eq!(decode(&v2, 8).unwrap_err(), SnapshotError::Version(2));
    let mut huge = b"ARBORSNP\0\0\0\x01".to_vec();
    huge.extend_from_slice(&u32::MAX.to_be_bytes());
    assert!(matches!(
        decode(&huge, 8).unwrap_err(),
        SnapshotError::BadHeader(_)
    ));
    // A tuple with the wrong number of fields.
    let mut r = Reader::new(3);
    let mut w = Writer::new();
    w.tuple(&[Some(b"x"), None]);
    r.push(&w.finish());
    assert!(matches!(r.next_tuple(), Err(SnapshotError::BadCopy(_))));
}
