//! Postgres binary `COPY` streams (signature, flags, header extension, tuples of length-prefixed fields, trailer `-1`): a reader and a writer of their rows.

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
