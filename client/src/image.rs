//! Replica images: a cold start from the finished SQLite file of a space instead of its rows (docs/PROTOCOL.md, "Replica images"): the answer's headers, the streaming zstd decoder with its checks, building an image, and installing a verified one.
//!
//! A row snapshot costs the client its inserts and index builds; an image
//! is the server's own replica of the space, built once with this crate's
//! schema and loader, so a client only writes its pages. The image never
//! replaces a replica that holds anything of its own: it is taken only by
//! a replica that has never loaded anything and has nothing to push, and
//! only once every check below has passed (the row snapshot stays the way
//! for everything else).

use std::path::Path;

use rusqlite::{Connection, OpenFlags};
use sha2::{Digest as _, Sha256};

use crate::replica::{Replica, ReplicaError, key, meta_get, meta_i64, meta_set};
use crate::schema;

/// The header with the seq the image is consistent at.
pub const SEQ_HEADER: &str = "arbor-image-seq";
/// The header with the image's client schema version (`PRAGMA user_version`).
pub const SCHEMA_HEADER: &str = "arbor-image-schema";
/// The header with the size of the SQLite file, decompressed, in bytes.
pub const SIZE_HEADER: &str = "arbor-image-size";
/// The header with the SHA-256 of the SQLite file, decompressed, in hex.
pub const SHA256_HEADER: &str = "arbor-image-sha256";

/// The largest image a client takes (64 GiB): a size header beyond it is
/// refused before anything is written.
pub const MAX_IMAGE_BYTES: u64 = 64 << 30;

/// What the server says of an image, from its answer's headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    /// The seq it is consistent at: the replica's cursor once installed.
    pub seq: u64,
    /// Its schema version (a client takes only its own, [`schema::VERSION`]).
    pub schema: i64,
    /// Its size in bytes, decompressed.
    pub size: u64,
    /// The SHA-256 of its bytes, decompressed.
    pub sha256: [u8; 32],
}

fn bad(m: impl std::fmt::Display) -> ReplicaError {
    ReplicaError::Image(m.to_string())
}

impl ImageInfo {
    /// Reads the four headers through `get` (a header's value by its
    /// lowercase name). Any missing or malformed one is an error.
    pub fn from_headers(get: impl Fn(&str) -> Option<String>) -> Result<ImageInfo, ReplicaError> {
        let field = |name: &str| get(name).ok_or_else(|| bad(format!("no {name} header")));
        let number = |name: &str| -> Result<u64, ReplicaError> {
            field(name)?
                .trim()
                .parse()
                .map_err(|_| bad(format!("{name} is not a number")))
        };
        let hex = field(SHA256_HEADER)?;
        let hex = hex.trim();
        let mut sha256 = [0u8; 32];
        if hex.len() != 64 || !hex.is_ascii() {
            return Err(bad(format!("{SHA256_HEADER} is not 64 hex digits")));
        }
        for (i, byte) in sha256.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
                .map_err(|_| bad(format!("{SHA256_HEADER} is not 64 hex digits")))?;
        }
        let info = ImageInfo {
            seq: number(SEQ_HEADER)?,
            schema: i64::try_from(number(SCHEMA_HEADER)?).unwrap_or(i64::MAX),
            size: number(SIZE_HEADER)?,
            sha256,
        };
        if info.size == 0 || info.size > MAX_IMAGE_BYTES {
            return Err(bad(format!("an image of {} bytes", info.size)));
        }
        Ok(info)
    }

    /// The SHA-256 in lowercase hex (the header's form).
    pub fn sha256_hex(&self) -> String {
        hex(&self.sha256)
    }
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The largest zstd frame header (RFC 8878): the decoder starts once it
/// has that much, or the whole body.
const MAX_FRAME_HEADER: usize = 18;

/// Decompresses an image's body as it arrives, in any chunks, handing the
/// decoded bytes on in order, and checks them: never more than the size
/// the headers announced, and at the end exactly that size with that
/// SHA-256. Its memory is the zstd window plus one block, whatever the
/// image's size.
pub struct ImageDecoder {
    frame: ruzstd::decoding::FrameDecoder,
    /// Compressed bytes not yet decoded (less than one block).
    pending: Vec<u8>,
    started: bool,
    out: Vec<u8>,
    hasher: Sha256,
    /// Decoded bytes so far.
    decoded: u64,
    expected: ImageInfo,
}

impl std::fmt::Debug for ImageDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageDecoder")
            .field("decoded", &self.decoded)
            .field("expected", &self.expected)
            .finish_non_exhaustive()
    }
}

impl ImageDecoder {
    /// A decoder for the image `info` describes.
    pub fn new(info: &ImageInfo) -> ImageDecoder {
        ImageDecoder {
            frame: ruzstd::decoding::FrameDecoder::new(),
            pending: Vec::new(),
            started: false,
            out: vec![0; 256 * 1024],
            hasher: Sha256::new(),
            decoded: 0,
            expected: info.clone(),
        }
    }

    /// Decoded bytes so far.
    pub fn decoded(&self) -> u64 {
        self.decoded
    }

    /// Takes the next compressed `chunk`; `sink` gets the decoded bytes.
    pub fn push(
        &mut self,
        chunk: &[u8],
        sink: &mut dyn FnMut(&[u8]) -> Result<(), ReplicaError>,
    ) -> Result<(), ReplicaError> {
        self.pending.extend_from_slice(chunk);
        self.drain(false, sink)
    }

    fn drain(
        &mut self,
        last: bool,
        sink: &mut dyn FnMut(&[u8]) -> Result<(), ReplicaError>,
    ) -> Result<(), ReplicaError> {
        let mut used = 0;
        loop {
            if !self.started && self.pending.len() < MAX_FRAME_HEADER && !last {
                break;
            }
            let (read, written) = self
                .frame
                .decode_from_to(&self.pending[used..], &mut self.out)
                .map_err(|e| bad(format!("the image is not zstd: {e}")))?;
            self.started = true;
            used += read;
            if written > 0 {
                self.decoded += written as u64;
                if self.decoded > self.expected.size {
                    return Err(bad(format!(
                        "the image is longer than its {} bytes",
                        self.expected.size
                    )));
                }
                self.hasher.update(&self.out[..written]);
                sink(&self.out[..written])?;
            }
            if read == 0 && written == 0 {
                break;
            }
        }
        self.pending.drain(..used);
        Ok(())
    }

    /// The body ended: the last bytes go to `sink`, then the image must be
    /// one whole frame of exactly the announced size and SHA-256.
    pub fn finish(
        mut self,
        sink: &mut dyn FnMut(&[u8]) -> Result<(), ReplicaError>,
    ) -> Result<(), ReplicaError> {
        self.drain(true, sink)?;
        if !self.started || !self.frame.is_finished() || self.frame.can_collect() > 0 {
            return Err(bad("the image was cut short"));
        }
        if !self.pending.is_empty() {
            return Err(bad("bytes after the image's frame"));
        }
        if self.decoded != self.expected.size {
            return Err(bad(format!(
                "the image has {} bytes, not {}",
                self.decoded, self.expected.size
            )));
        }
        let sum: [u8; 32] = self.hasher.finalize().into();
        if sum != self.expected.sha256 {
            return Err(bad("the image's SHA-256 does not match"));
        }
        Ok(())
    }
}

/// Builds an image at `path` (a new file) from a snapshot stream of the
/// space (or subtree): this crate's own replica, loaded by its own cold
/// start, left as one self-contained file (rollback journal, no WAL), with
/// no replica id or clock of its own. Returns the seq it holds.
pub fn build_image<E: std::fmt::Display>(
    path: &Path,
    chunks: impl IntoIterator<Item = Result<bytes::Bytes, E>>,
) -> Result<u64, ReplicaError> {
    let seq = {
        let mut replica = Replica::open_with(
            path,
            crate::OpenOptions {
                no_history: true,
                ..Default::default()
            },
        )?;
        let loaded = crate::snapshot::load_snapshot(&mut replica, chunks, |_| {})?;
        loaded.header.head_seq
    };
    let conn = Connection::open(path)?;
    conn.execute_batch(
        "DELETE FROM meta WHERE key IN ('replica', 'clock');
         PRAGMA journal_mode = DELETE;",
    )?;
    Ok(seq)
}

impl Replica {
    /// Whether an image may replace this replica: it has never loaded
    /// anything (no cursor) and holds nothing of its own (no outbox, no
    /// refused ops). Anything else takes the row snapshot, whose load keeps
    /// and rebases local edits.
    pub fn can_take_image(&mut self) -> Result<bool, ReplicaError> {
        self.commit_held()?;
        Ok(self.cursor()?.is_none() && self.outbox_len()? == 0 && self.rejected_len()? == 0)
    }

    /// Replaces this replica's contents with the verified image at `path`
    /// (a file in the same SQLite VFS, decoded by [`ImageDecoder`]): first
    /// every check (this replica may take an image, the file is a SQLite
    /// database of this build's schema and page size, of this replica's
    /// space and subtree, at `info.seq`), then its pages are copied in one
    /// write transaction (SQLite's backup), and this replica's id, clock
    /// and settings are written back. Any failure leaves the replica as it
    /// was. Returns the seq it now holds.
    pub fn install_image(&mut self, path: &Path, info: &ImageInfo) -> Result<u64, ReplicaError> {
        if !self.can_take_image()? {
            return Err(bad("the replica holds state of its own: it loads rows"));
        }
        if info.schema != schema::VERSION {
            return Err(bad(format!(
                "an image of schema {}, this build's is {}",
                info.schema,
                schema::VERSION
            )));
        }
        let image = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        let checked = check_image(&image, self, info).map_err(|e| match e {
            // A file SQLite cannot read as a database is a bad image.
            ReplicaError::Sqlite(e) => bad(format!("the image is not a replica: {e}")),
            e => e,
        })?;
        // What is this replica's own, kept across the copy.
        let own: Vec<(String, rusqlite::types::Value)> = {
            let mut stmt = self.conn.prepare(
                "SELECT key, value FROM meta
                 WHERE key IN ('replica', 'clock', 'space') OR key LIKE 'setting.%'",
            )?;
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?
        };
        {
            let backup = rusqlite::backup::Backup::new(&image, &mut self.conn)?;
            // All pages in one step: one write transaction on the replica,
            // committed when the last page is in (no sleeps between steps,
            // which the browser's worker cannot do).
            match backup.step(-1)? {
                rusqlite::backup::StepResult::Done => {}
                other => return Err(bad(format!("copying the image stopped: {other:?}"))),
            }
        }
        drop(image);
        let tx = self.conn.transaction()?;
        tx.execute(
            "DELETE FROM meta WHERE key IN ('replica', 'clock', 'space') OR key LIKE 'setting.%'",
            [],
        )?;
        for (k, v) in &own {
            tx.execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2)",
                rusqlite::params![k, v],
            )?;
        }
        meta_set(&tx, key::SPACE, checked.space.as_str())?;
        self.clock
            .observe(arbor_shared::Hlc(checked.max_hlc.max(0) as u64));
        meta_set(
            &tx,
            key::CLOCK,
            i64::try_from(self.clock.last().0).unwrap_or(i64::MAX),
        )?;
        tx.commit()?;
        self.notify_changes(crate::Changes {
            reset: true,
            ..crate::Changes::default()
        });
        Ok(info.seq)
    }
}

/// What [`check_image`] read from a good image.
struct Checked {
    space: String,
    /// The newest HLC in it, so the clock never goes behind the image.
    max_hlc: i64,
}

fn check_image(
    image: &Connection,
    replica: &Replica,
    info: &ImageInfo,
) -> Result<Checked, ReplicaError> {
    let version: i64 = image.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version != schema::VERSION {
        return Err(bad(format!(
            "the image's schema is {version}, this build's {}",
            schema::VERSION
        )));
    }
    let page_size = |c: &Connection| -> rusqlite::Result<i64> {
        c.pragma_query_value(None, "page_size", |r| r.get(0))
    };
    if page_size(image)? != page_size(&replica.conn)? {
        return Err(bad("the image's page size differs from the replica's"));
    }
    let space = match meta_get(image, key::SPACE)? {
        Some(rusqlite::types::Value::Text(s)) => s,
        _ => return Err(bad("the image names no space")),
    };
    if let Some(have) = replica.space()?
        && have != space
    {
        return Err(bad(format!(
            "an image of thoughtspace {space}, the replica's is {have}"
        )));
    }
    let image_root = match meta_get(image, key::ROOT)? {
        Some(rusqlite::types::Value::Blob(b)) => Some(crate::store::id_from_blob(&b)?),
        None => None,
        Some(_) => return Err(bad("the image's root is not an id")),
    };
    if image_root != replica.subtree_root()? {
        return Err(bad("the image is of another subtree"));
    }
    let cursor = meta_i64(image, key::CURSOR)?;
    if cursor != i64::try_from(info.seq).ok() {
        return Err(bad(format!(
            "the image holds seq {cursor:?}, its headers say {}",
            info.seq
        )));
    }
    let max_hlc: Option<i64> = image.query_row(
        "SELECT max(h) FROM (SELECT max(hlc) AS h FROM payloads UNION ALL SELECT max(hlc) FROM ops
                              UNION ALL SELECT value FROM meta WHERE key = 'horizon_hlc')",
        [],
        |r| r.get(0),
    )?;
    Ok(Checked {
        space,
        max_hlc: max_hlc.unwrap_or(0),
    })
}
