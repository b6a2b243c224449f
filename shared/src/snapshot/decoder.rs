//! The incremental decoder of the framing: bytes in, events out, nothing buffered whole.

use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Magic,
    HeaderLen,
    Header(u32),
    Tag(usize),
    ChunkLen(usize),
    Chunk(usize, u32),
    Trailer,
    Done,
}

/// Incremental decoder of the framing: [`Decoder::push`] bytes as they
/// arrive, take [`Event`]s with [`Decoder::next_event`] until `None`, and
/// call [`Decoder::finish`] at the end of input. Memory is bounded by the
/// largest header and the bytes pushed but not yet taken.
#[derive(Debug)]
pub struct Decoder {
    phase: Phase,
    /// Bytes pushed and not consumed (invariant: `buf[pos..]`).
    buf: Vec<u8>,
    pos: usize,
    crc: crc32fast::Hasher,
    /// Bytes consumed before the trailer.
    total: u64,
    header: Option<SnapshotHeader>,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::new()
    }
}

impl Decoder {
    /// A decoder at the start of a stream.
    pub fn new() -> Decoder {
        Decoder {
            phase: Phase::Magic,
            buf: Vec::new(),
            pos: 0,
            crc: crc32fast::Hasher::new(),
            total: 0,
            header: None,
        }
    }

    /// Appends input.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.pos > 0 && self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        } else if self.pos > 64 * 1024 && self.pos * 2 > self.buf.len() {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The header, once decoded.
    pub fn header(&self) -> Option<&SnapshotHeader> {
        self.header.as_ref()
    }

    /// True once the trailer was verified.
    pub fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// Bytes consumed so far (progress).
    pub fn consumed(&self) -> u64 {
        self.total
    }

    fn available(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Takes `n` bytes (which must be available), counted in the CRC.
    fn take(&mut self, n: usize) -> &[u8] {
        let start = self.pos;
        self.pos += n;
        let bytes = &self.buf[start..start + n];
        self.crc.update(bytes);
        self.total += n as u64;
        bytes
    }

    fn take_u32(&mut self) -> u32 {
        let b = self.take(4);
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }

    /// The next event, `Ok(None)` when more input is needed (or after
    /// `End`).
    pub fn next_event(&mut self) -> Result<Option<Event>, SnapshotError> {
        loop {
            match self.phase {
                Phase::Magic => {
                    if self.available() < 12 {
                        return Ok(None);
                    }
                    if self.take(8) != MAGIC {
                        return Err(SnapshotError::BadMagic);
                    }
                    let version = self.take_u32();
                    if version != VERSION {
                        return Err(SnapshotError::Version(version));
                    }
                    self.phase = Phase::HeaderLen;
                }
                Phase::HeaderLen => {
                    if self.available() < 4 {
                        return Ok(None);
                    }
                    let len = self.take_u32();
                    if len > MAX_HEADER_BYTES {
                        return Err(SnapshotError::BadHeader(format!("{len} bytes")));
                    }
                    self.phase = Phase::Header(len);
                }
                Phase::Header(len) => {
                    if self.available() < len as usize {
                        return Ok(None);
                    }
                    let header: SnapshotHeader = serde_json::from_slice(self.take(len as usize))
                        .map_err(|e| SnapshotError::BadHeader(e.to_string()))?;
                    self.header = Some(header.clone());
                    self.phase = Phase::Tag(0);
                    return Ok(Some(Event::Header(header)));
                }
                Phase::Tag(i) => {
                    if self.available() < 1 {
                        return Ok(None);
                    }
                    let tag = self.buf[self.pos];
                    match SECTIONS.get(i) {
                        Some(&want) if tag == want => {
                            self.take(1);
                            self.phase = Phase::ChunkLen(i);
                            return Ok(Some(Event::SectionStart(tag)));
                        }
                        None if tag == b'E' => self.phase = Phase::Trailer,
                        _ => return Err(SnapshotError::BadTag(tag)),
                    }
                }
                Phase::ChunkLen(i) => {
                    if self.available() < 4 {
                        return Ok(None);
                    }
                    let len = self.take_u32();
                    if len == 0 {
                        self.phase = Phase::Tag(i + 1);
                        return Ok(Some(Event::SectionEnd(SECTIONS[i])));
                    }
                    if len > MAX_CHUNK_BYTES {
                        return Err(SnapshotError::ChunkTooLarge(len));
                    }
                    self.phase = Phase::Chunk(i, len);
                }
                Phase::Chunk(i, left) => {
                    let n = self.available().min(left as usize);
                    if n == 0 {
                        return Ok(None);
                    }
                    let data = self.take(n).to_vec();
                    let left = left - n as u32;
                    self.phase = if left == 0 {
                        Phase::ChunkLen(i)
                    } else {
                        Phase::Chunk(i, left)
                    };
                    return Ok(Some(Event::Data(data)));
                }
                Phase::Trailer => {
                    if self.available() < TRAILER_BYTES {
                        return Ok(None);
                    }
                    let total = self.total;
                    let crc = std::mem::take(&mut self.crc).finalize();
                    let t = &self.buf[self.pos..self.pos + TRAILER_BYTES];
                    let u64_at = |i: usize| {
                        let mut b = [0u8; 8];
                        b.copy_from_slice(&t[i..i + 8]);
                        u64::from_be_bytes(b)
                    };
                    let trailer = Trailer {
                        counts: [u64_at(1), u64_at(9), u64_at(17)],
                        total: u64_at(25),
                        crc: u32::from_be_bytes([t[33], t[34], t[35], t[36]]),
                    };
                    self.pos += TRAILER_BYTES;
                    if trailer.total != total || trailer.crc != crc {
                        return Err(SnapshotError::Checksum);
                    }
                    if let Some(h) = &self.header {
                        if [h.nodes, h.payloads, h.log] != trailer.counts {
                            return Err(SnapshotError::Counts(format!(
                                "header {:?}, trailer {:?}",
                                [h.nodes, h.payloads, h.log],
                                trailer.counts
                            )));
                        }
                    }
                    self.phase = Phase::Done;
                    return Ok(Some(Event::End(trailer)));
                }
                Phase::Done => {
                    if self.available() > 0 {
                        return Err(SnapshotError::Trailing);
                    }
                    return Ok(None);
                }
            }
        }
    }

    /// The input ended: an error unless the trailer was read and nothing
    /// follows it.
    pub fn finish(&self) -> Result<(), SnapshotError> {
        match self.phase {
            Phase::Done if self.available() == 0 => Ok(()),
            Phase::Done => Err(SnapshotError::Trailing),
            _ => Err(SnapshotError::Cut(self.total)),
        }
    }
}
