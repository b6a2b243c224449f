//! The encoder of the framing: header, sections of `COPY` chunks, trailer with counts and CRC.

use super::*;

/// Writes the framing: [`Encoder::header`], then per section
/// [`Encoder::section`] with its `COPY` bytes in [`Encoder::chunk`]s and
/// [`Encoder::end_section`], then [`Encoder::trailer`]. Each call returns
/// the bytes to send and keeps the running CRC.
#[derive(Debug, Default)]
pub struct Encoder {
    crc: crc32fast::Hasher,
    total: u64,
    counts: [u64; 3],
}

impl Encoder {
    /// A new stream.
    pub fn new() -> Encoder {
        Encoder::default()
    }

    fn out(&mut self, bytes: Vec<u8>) -> Vec<u8> {
        self.crc.update(&bytes);
        self.total += bytes.len() as u64;
        bytes
    }

    /// Magic, version and the JSON header.
    pub fn header(&mut self, header: &SnapshotHeader) -> Vec<u8> {
        self.counts = [header.nodes, header.payloads, header.log];
        // Serializing plain strings and integers cannot fail.
        let json = serde_json::to_vec(header).unwrap_or_default();
        let mut b = Vec::with_capacity(16 + json.len());
        b.extend_from_slice(MAGIC);
        b.extend_from_slice(&VERSION.to_be_bytes());
        b.extend_from_slice(&u32::try_from(json.len()).unwrap_or(u32::MAX).to_be_bytes());
        b.extend_from_slice(&json);
        self.out(b)
    }

    /// A section's tag.
    pub fn section(&mut self, tag: u8) -> Vec<u8> {
        self.out(vec![tag])
    }

    /// One chunk of `COPY` bytes (empty input gives no bytes: a zero length
    /// would end the section).
    pub fn chunk(&mut self, data: &[u8]) -> Vec<u8> {
        if data.is_empty() {
            return Vec::new();
        }
        let mut b = Vec::with_capacity(4 + data.len());
        b.extend_from_slice(&u32::try_from(data.len()).unwrap_or(u32::MAX).to_be_bytes());
        b.extend_from_slice(data);
        self.out(b)
    }

    /// Ends a section.
    pub fn end_section(&mut self) -> Vec<u8> {
        self.out(vec![0, 0, 0, 0])
    }

    /// The trailer (not counted in its own CRC).
    pub fn trailer(&mut self) -> Vec<u8> {
        let crc = std::mem::take(&mut self.crc).finalize();
        let mut t = Vec::with_capacity(TRAILER_BYTES);
        t.push(b'E');
        for c in self.counts {
            t.extend_from_slice(&c.to_be_bytes());
        }
        t.extend_from_slice(&self.total.to_be_bytes());
        t.extend_from_slice(&crc.to_be_bytes());
        t
    }
}
