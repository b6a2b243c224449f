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

use crate::replica::{Replica, ReplicaError, key, meta_get, meta_i64, meta_set};
use crate::schema;

/// The header with the seq the image is consistent at.
pub const SEQ_HEADER: &str = "arbor-image-seq";
/// The header with the image's client schema version (`PRAGMA user_version`).
pub const SCHEMA_HEADER: &str = "arbor-image-schema";
/// The header with the size of the SQLite file, decompressed, in bytes.
pub const SIZE_HEADER: &str = "arbor-image-size";
/// The header with the CRC-32 (IEEE, as the snapshot trailer's) of the
/// SQLite file, decompressed, in 8 lowercase hex digits.
pub const CRC32_HEADER: &str = "arbor-image-crc32";

/// The page size of images (8 KiB). The browser's SQLite
/// (`sqlite-wasm-rs`) makes 8 KiB pages, and a browser replica takes an
/// image by copying its pages in (its OPFS pool has no rename), which
/// SQLite allows only between equal page sizes. A native replica takes the
/// image's file as it is, whatever the page size.
pub const IMAGE_PAGE_SIZE: i64 = 8192;

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
    /// The CRC-32 of its bytes, decompressed.
    pub crc32: u32,
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
        let crc = field(CRC32_HEADER)?;
        let crc = crc.trim();
        if crc.len() != 8 || !crc.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad(format!("{CRC32_HEADER} is not 8 hex digits")));
        }
        let crc32 = u32::from_str_radix(crc, 16)
            .map_err(|_| bad(format!("{CRC32_HEADER} is not 8 hex digits")))?;
        let info = ImageInfo {
            seq: number(SEQ_HEADER)?,
            schema: i64::try_from(number(SCHEMA_HEADER)?).unwrap_or(i64::MAX),
            size: number(SIZE_HEADER)?,
            crc32,
        };
        if info.size == 0 || info.size > MAX_IMAGE_BYTES {
            return Err(bad(format!("an image of {} bytes", info.size)));
        }
        Ok(info)
    }

    /// The CRC-32 as the header has it.
    pub fn crc32_hex(&self) -> String {
        format!("{:08x}", self.crc32)
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
/// CRC-32. Its memory is the zstd window plus one block, whatever the
/// image's size.
pub struct ImageDecoder {
    frame: ruzstd::decoding::FrameDecoder,
    /// Compressed bytes not yet decoded (less than one block).
    pending: Vec<u8>,
    started: bool,
    out: Vec<u8>,
    hasher: crc32fast::Hasher,
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
            hasher: crc32fast::Hasher::new(),
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
    /// one whole frame of exactly the announced size and CRC-32.
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
        if self.hasher.finalize() != self.expected.crc32 {
            return Err(bad("the image's CRC-32 does not match"));
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
    {
        // The page size is fixed by the first write of an empty file.
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "page_size", IMAGE_PAGE_SIZE)?;
        conn.execute_batch("VACUUM")?;
    }
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
    /// database of this build's schema, of this replica's
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
        // What is this replica's own, kept across the install.
        let own: Vec<(String, rusqlite::types::Value)> = {
            let mut stmt = self.conn.prepare(
                "SELECT key, value FROM meta
                 WHERE key IN ('replica', 'clock', 'space') OR key LIKE 'setting.%'",
            )?;
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?
        };
        self.clock
            .observe(arbor_shared::Hlc(checked.max_hlc.max(0) as u64));
        let clock = i64::try_from(self.clock.last().0).unwrap_or(i64::MAX);
        self.put_in_place(path, image, &own, &checked.space, clock)?;
        self.notify_changes(crate::Changes {
            reset: true,
            ..crate::Changes::default()
        });
        Ok(info.seq)
    }

    /// Copies the image's pages into this replica's database in one write
    /// transaction (SQLite's backup; the browser's pool has no rename),
    /// then writes back this replica's own rows.
    fn copy_in(
        &mut self,
        image: &Connection,
        own: &[(String, rusqlite::types::Value)],
        space: &str,
        clock: i64,
    ) -> Result<(), ReplicaError> {
        let page_size = |c: &Connection| -> rusqlite::Result<i64> {
            c.pragma_query_value(None, "page_size", |r| r.get(0))
        };
        if page_size(image)? != page_size(&self.conn)? {
            return Err(bad("the image's page size differs from the replica's"));
        }
        {
            let backup = rusqlite::backup::Backup::new(image, &mut self.conn)?;
            // All pages in one step: one write transaction on the replica,
            // committed when the last page is in (no sleeps between steps,
            // which the browser's worker cannot do).
            match backup.step(-1)? {
                rusqlite::backup::StepResult::Done => {}
                other => return Err(bad(format!("copying the image stopped: {other:?}"))),
            }
        }
        write_own(&mut self.conn, own, space, clock)
    }

    /// Makes the checked image at `path` this replica's database, with its
    /// own rows written back. A replica with a file: the image becomes the
    /// file (its own rows written into it first, then a rename), so nothing
    /// is copied, and a crash leaves the old file or the new one whole. In
    /// memory, or in the browser (whose pool has no rename): its pages are
    /// copied in.
    #[cfg(not(target_arch = "wasm32"))]
    fn put_in_place(
        &mut self,
        path: &Path,
        image: Connection,
        own: &[(String, rusqlite::types::Value)],
        space: &str,
        clock: i64,
    ) -> Result<(), ReplicaError> {
        match self.file_path() {
            Some(target) => {
                drop(image);
                let mut file = Connection::open(path)?;
                write_own(&mut file, own, space, clock)?;
                file.close().map_err(|(_, e)| e)?;
                self.replace_file(path, &target)
            }
            None => self.copy_in(&image, own, space, clock),
        }
    }

    #[cfg(target_arch = "wasm32")]
    fn put_in_place(
        &mut self,
        _path: &Path,
        image: Connection,
        own: &[(String, rusqlite::types::Value)],
        space: &str,
        clock: i64,
    ) -> Result<(), ReplicaError> {
        self.copy_in(&image, own, space, clock)
    }
}

/// Writes a replica's own `meta` rows (`own`: its id, clock, settings)
/// over what an image has, with `space` and `clock`, in one transaction.
fn write_own(
    conn: &mut Connection,
    own: &[(String, rusqlite::types::Value)],
    space: &str,
    clock: i64,
) -> Result<(), ReplicaError> {
    let tx = conn.transaction()?;
    tx.execute(
        "DELETE FROM meta WHERE key IN ('replica', 'clock', 'space') OR key LIKE 'setting.%'",
        [],
    )?;
    for (k, v) in own {
        tx.execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2)",
            rusqlite::params![k, v],
        )?;
    }
    meta_set(&tx, key::SPACE, space)?;
    meta_set(&tx, key::CLOCK, clock)?;
    tx.commit()?;
    Ok(())
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
