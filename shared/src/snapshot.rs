//! The snapshot file format (`ARBORSNP`, byte for byte in `docs/PROTOCOL.md`):
//! a sans-I/O framing decoder and encoder, and a codec for the rows of its
//! Postgres binary `COPY` sections.
//!
//! The same bytes are a cold-start snapshot, an export, and the upload that
//! creates a thoughtspace from a replica, so the server, the native client
//! and the browser share this one implementation. It is written here rather
//! than taken from `postgres-protocol` because that crate decodes only a
//! live `COPY` from a connection, and the decoder must also run in wasm.

use serde::{Deserialize, Serialize};

use crate::{NodeId, Stamp};

/// The file's first 8 bytes.
pub const MAGIC: &[u8; 8] = b"ARBORSNP";
/// The format version this code reads and writes.
pub const VERSION: u32 = 1;
/// Largest header JSON accepted.
pub const MAX_HEADER_BYTES: u32 = 64 * 1024;
/// Largest section chunk accepted (writers use about 64 KiB).
pub const MAX_CHUNK_BYTES: u32 = 16 << 20;
/// Section tags, in file order.
pub const SECTIONS: [u8; 3] = [b'N', b'P', b'L'];
/// Size of the trailer: tag, four u64, u32.
pub const TRAILER_BYTES: usize = 1 + 4 * 8 + 4;

/// The JSON header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotHeader {
    /// The thoughtspace.
    pub space: String,
    /// Every op with seq at or below it is in the snapshot's state.
    pub head_seq: u64,
    /// The log horizon, if any: ops at or below it are not in the log.
    pub horizon: Option<Stamp>,
    /// Rows in the nodes section.
    pub nodes: u64,
    /// Rows in the payloads section.
    pub payloads: u64,
    /// Rows in the log section.
    pub log: u64,
    /// For a subtree snapshot: its root (whose own row is in the nodes
    /// section, with its place).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<NodeId>,
}

/// The trailer's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trailer {
    /// Rows per section (nodes, payloads, log).
    pub counts: [u64; 3],
    /// Bytes before the trailer.
    pub total: u64,
    /// CRC-32 (IEEE) of those bytes.
    pub crc: u32,
}

/// Why a snapshot stream is refused. A reader that gets any of these must
/// discard everything it took from the stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    /// Not an `ARBORSNP` stream.
    #[error("bad magic")]
    BadMagic,
    /// A version this code does not read.
    #[error("unsupported version {0}")]
    Version(u32),
    /// The header is too large or not the expected JSON.
    #[error("bad header: {0}")]
    BadHeader(String),
    /// A section tag other than the next expected one.
    #[error("unexpected tag {0:#04x}")]
    BadTag(u8),
    /// A chunk longer than [`MAX_CHUNK_BYTES`].
    #[error("chunk of {0} bytes is too large")]
    ChunkTooLarge(u32),
    /// The stream ended before its trailer.
    #[error("stream cut after {0} bytes")]
    Cut(u64),
    /// Byte count or CRC in the trailer disagree with the stream.
    #[error("checksum mismatch")]
    Checksum,
    /// Row counts disagree (trailer vs header, or vs the rows decoded).
    #[error("row counts disagree: {0}")]
    Counts(String),
    /// Bytes after the trailer.
    #[error("trailing bytes after the trailer")]
    Trailing,
    /// A section's `COPY` data is malformed.
    #[error("bad COPY data: {0}")]
    BadCopy(String),
}

/// What the decoder found, in stream order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The header (always first).
    Header(SnapshotHeader),
    /// A section starts (`N`, `P`, then `L`).
    SectionStart(u8),
    /// Bytes of the current section's `COPY` stream (any split).
    Data(Vec<u8>),
    /// The current section ended.
    SectionEnd(u8),
    /// The trailer, verified against the bytes and the header's counts.
    End(Trailer),
}

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

/// Postgres binary `COPY` streams (signature, flags, header extension,
/// tuples of length-prefixed fields, trailer `-1`).
pub mod copy {
    use super::SnapshotError;

    /// The 11-byte signature.
    pub const SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";
    /// Most fields a tuple of ours has (the log's 13).
    const MAX_FIELDS: i16 = 64;

    /// One tuple: each field's bytes (`None`: SQL NULL).
    pub type Tuple = Vec<Option<Vec<u8>>>;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Phase {
        Header,
        Tuples,
        Done,
    }

    /// Incremental tuple reader: [`Reader::push`] section data, take
    /// [`Reader::next_tuple`] until `None`, [`Reader::finish`] at section end.
    #[derive(Debug)]
    pub struct Reader {
        phase: Phase,
        /// Fields every tuple must have.
        fields: i16,
        buf: Vec<u8>,
        pos: usize,
        rows: u64,
    }

    impl Reader {
        /// A reader of tuples with exactly `fields` fields.
        pub fn new(fields: i16) -> Reader {
            Reader {
                phase: Phase::Header,
                fields,
                buf: Vec::new(),
                pos: 0,
                rows: 0,
            }
        }

        /// Appends section bytes.
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

        /// Tuples read so far.
        pub fn rows(&self) -> u64 {
            self.rows
        }

        fn avail(&self) -> &[u8] {
            &self.buf[self.pos..]
        }

        /// Reads the stream header if not done yet; false if more bytes
        /// are needed.
        fn read_header(&mut self) -> Result<bool, SnapshotError> {
            if self.phase != Phase::Header {
                return Ok(true);
            }
            let a = self.avail();
            if a.len() < 19 {
                return Ok(false);
            }
            if &a[..11] != SIGNATURE {
                return Err(SnapshotError::BadCopy("bad signature".into()));
            }
            let ext = u32::from_be_bytes([a[15], a[16], a[17], a[18]]) as usize;
            if ext > super::MAX_CHUNK_BYTES as usize {
                return Err(SnapshotError::BadCopy("header extension too long".into()));
            }
            if a.len() < 19 + ext {
                return Ok(false);
            }
            self.pos += 19 + ext;
            self.phase = Phase::Tuples;
            Ok(true)
        }

        fn check_done(&self) -> Result<(), SnapshotError> {
            if self.avail().is_empty() {
                Ok(())
            } else {
                Err(SnapshotError::BadCopy(
                    "bytes after the COPY trailer".into(),
                ))
            }
        }

        /// The next complete tuple, `Ok(None)` if more bytes are needed or
        /// the trailer was read.
        pub fn next_tuple(&mut self) -> Result<Option<Tuple>, SnapshotError> {
            let bad = |m: &str| SnapshotError::BadCopy(m.to_string());
            if !self.read_header()? {
                return Ok(None);
            }
            if self.phase == Phase::Done {
                return self.check_done().map(|()| None);
            }
            let a = self.avail();
            if a.len() < 2 {
                return Ok(None);
            }
            let n = i16::from_be_bytes([a[0], a[1]]);
            if n == -1 {
                self.pos += 2;
                self.phase = Phase::Done;
                return self.next_tuple();
            }
            if n != self.fields || !(0..=MAX_FIELDS).contains(&n) {
                return Err(SnapshotError::BadCopy(format!(
                    "tuple of {n} fields, expected {}",
                    self.fields
                )));
            }
            // Find the tuple's end before copying anything out.
            let mut at = 2usize;
            let mut spans = Vec::with_capacity(n as usize);
            for _ in 0..n {
                if a.len() < at + 4 {
                    return Ok(None);
                }
                let len = i32::from_be_bytes([a[at], a[at + 1], a[at + 2], a[at + 3]]);
                at += 4;
                if len == -1 {
                    spans.push(None);
                    continue;
                }
                let len = usize::try_from(len).map_err(|_| bad("negative field length"))?;
                if len > super::MAX_CHUNK_BYTES as usize {
                    return Err(bad("field too long"));
                }
                if a.len() < at + len {
                    return Ok(None);
                }
                spans.push(Some((at, len)));
                at += len;
            }
            let tuple = spans
                .into_iter()
                .map(|s| s.map(|(i, len)| a[i..i + len].to_vec()))
                .collect();
            self.pos += at;
            self.rows += 1;
            Ok(Some(tuple))
        }

        /// Like [`Reader::next_tuple`] without copying: calls `f` with the
        /// next complete tuple's fields borrowed from the buffer (at most 16
        /// fields), and returns its result.
        pub fn next_with<R>(
            &mut self,
            f: impl FnOnce(&[Option<&[u8]>]) -> R,
        ) -> Result<Option<R>, SnapshotError> {
            const MAX: usize = 16;
            let bad = |m: &str| SnapshotError::BadCopy(m.to_string());
            if !self.read_header()? {
                return Ok(None);
            }
            loop {
                if self.phase == Phase::Done {
                    return self.check_done().map(|()| None);
                }
                let a = &self.buf[self.pos..];
                if a.len() < 2 {
                    return Ok(None);
                }
                let n = i16::from_be_bytes([a[0], a[1]]);
                if n == -1 {
                    self.pos += 2;
                    self.phase = Phase::Done;
                    continue;
                }
                if n != self.fields || !(0..=MAX as i16).contains(&n) {
                    return Err(SnapshotError::BadCopy(format!(
                        "tuple of {n} fields, expected {}",
                        self.fields
                    )));
                }
                let mut fields: [Option<&[u8]>; MAX] = [None; MAX];
                let mut at = 2usize;
                for slot in fields.iter_mut().take(n as usize) {
                    if a.len() < at + 4 {
                        return Ok(None);
                    }
                    let len = i32::from_be_bytes([a[at], a[at + 1], a[at + 2], a[at + 3]]);
                    at += 4;
                    if len == -1 {
                        continue;
                    }
                    let len = usize::try_from(len).map_err(|_| bad("negative field length"))?;
                    if len > super::MAX_CHUNK_BYTES as usize {
                        return Err(bad("field too long"));
                    }
                    if a.len() < at + len {
                        return Ok(None);
                    }
                    *slot = Some(&a[at..at + len]);
                    at += len;
                }
                let result = f(&fields[..n as usize]);
                self.pos += at;
                self.rows += 1;
                return Ok(Some(result));
            }
        }

        /// The section ended: an error unless the trailer was read.
        pub fn finish(&self) -> Result<u64, SnapshotError> {
            if self.phase == Phase::Done && self.avail().is_empty() {
                Ok(self.rows)
            } else {
                Err(SnapshotError::BadCopy("section ended mid-COPY".into()))
            }
        }
    }

    /// Writes a `COPY` stream: [`Writer::new`] emits the header into its
    /// buffer, [`Writer::tuple`] appends rows, [`Writer::finish`] the
    /// trailer; [`Writer::take`] drains what is buffered.
    #[derive(Debug)]
    pub struct Writer {
        buf: Vec<u8>,
        rows: u64,
    }

    impl Default for Writer {
        fn default() -> Self {
            Writer::new()
        }
    }

    impl Writer {
        /// A stream with its header written.
        pub fn new() -> Writer {
            let mut buf = Vec::with_capacity(64 * 1024);
            buf.extend_from_slice(SIGNATURE);
            buf.extend_from_slice(&0u32.to_be_bytes());
            buf.extend_from_slice(&0u32.to_be_bytes());
            Writer { buf, rows: 0 }
        }

        /// Appends one tuple.
        pub fn tuple(&mut self, fields: &[Option<&[u8]>]) {
            let n = i16::try_from(fields.len()).unwrap_or(i16::MAX);
            self.buf.extend_from_slice(&n.to_be_bytes());
            for f in fields {
                match f {
                    None => self.buf.extend_from_slice(&(-1i32).to_be_bytes()),
                    Some(b) => {
                        let len = i32::try_from(b.len()).unwrap_or(i32::MAX);
                        self.buf.extend_from_slice(&len.to_be_bytes());
                        self.buf.extend_from_slice(b);
                    }
                }
            }
            self.rows += 1;
        }

        /// Rows written.
        pub fn rows(&self) -> u64 {
            self.rows
        }

        /// Bytes buffered.
        pub fn buffered(&self) -> usize {
            self.buf.len()
        }

        /// Drains the buffered bytes.
        pub fn take(&mut self) -> Vec<u8> {
            std::mem::take(&mut self.buf)
        }

        /// Appends the trailer and drains everything.
        pub fn finish(mut self) -> Vec<u8> {
            self.buf.extend_from_slice(&(-1i16).to_be_bytes());
            self.buf
        }
    }
}

/// Field encodings of the sections (Postgres binary send formats).
pub mod field {
    use super::SnapshotError;
    use crate::NodeId;

    /// `uuid`: 16 bytes, big-endian.
    pub fn uuid(n: NodeId) -> [u8; 16] {
        n.0.to_be_bytes()
    }

    /// `int8`: 8 bytes, big-endian.
    pub fn int8(v: i64) -> [u8; 8] {
        v.to_be_bytes()
    }

    /// Decodes a `uuid`.
    pub fn to_uuid(f: Option<&[u8]>) -> Result<NodeId, SnapshotError> {
        let b: [u8; 16] = f
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| SnapshotError::BadCopy("bad uuid".into()))?;
        Ok(NodeId(u128::from_be_bytes(b)))
    }

    /// Decodes an `int8`.
    pub fn to_int8(f: Option<&[u8]>) -> Result<i64, SnapshotError> {
        let b: [u8; 8] = f
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| SnapshotError::BadCopy("bad int8".into()))?;
        Ok(i64::from_be_bytes(b))
    }

    /// Decodes a `text`.
    pub fn to_text(f: Option<&[u8]>) -> Result<String, SnapshotError> {
        let b = f.ok_or_else(|| SnapshotError::BadCopy("NULL text".into()))?;
        String::from_utf8(b.to_vec()).map_err(|_| SnapshotError::BadCopy("text not UTF-8".into()))
    }

    /// Replica ids are stored with the sign bit flipped (so row order is
    /// stamp order): the stored `int8` of replica `r`.
    pub fn replica_to_stored(r: u64) -> i64 {
        (r as i64) ^ i64::MIN
    }

    /// Inverse of [`replica_to_stored`].
    pub fn replica_from_stored(r: i64) -> u64 {
        (r ^ i64::MIN) as u64
    }
}
