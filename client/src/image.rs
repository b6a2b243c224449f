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

use arbor_shared::NodeId;

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

/// The page size of images (8 KiB): the browser's SQLite
/// (`sqlite-wasm-rs`) makes 8 KiB pages, so a browser replica born from an
/// image is the file one born from rows would be. (A replica takes the
/// image's file as it is, whatever its page size.)
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

/// One zstd frame, decoded push-style. Natively the reference library
/// (about twice as fast as the pure-Rust decoder on a 300 MB image, most of
/// a native image cold start); in the browser the pure-Rust `ruzstd`,
/// which builds for wasm32. The checks around it are the same.
#[cfg(not(target_arch = "wasm32"))]
struct Frame {
    decoder: zstd::stream::raw::Decoder<'static>,
    done: bool,
}

#[cfg(not(target_arch = "wasm32"))]
impl Frame {
    fn new() -> Result<Frame, ReplicaError> {
        Ok(Frame {
            decoder: zstd::stream::raw::Decoder::new().map_err(|e| bad(format!("zstd: {e}")))?,
            done: false,
        })
    }

    /// Decodes from `input` into `out`: (bytes read, bytes written).
    fn step(
        &mut self,
        input: &[u8],
        out: &mut [u8],
        _last: bool,
    ) -> Result<(usize, usize), ReplicaError> {
        use zstd::stream::raw::Operation as _;
        if self.done {
            if input.is_empty() {
                return Ok((0, 0));
            }
            return Err(bad("bytes after the image's frame"));
        }
        let status = self
            .decoder
            .run_on_buffers(input, out)
            .map_err(|e| bad(format!("the image is not zstd: {e}")))?;
        // 0: the frame is decoded and flushed.
        self.done = status.remaining == 0;
        Ok((status.bytes_read, status.bytes_written))
    }

    fn finished(&self) -> bool {
        self.done
    }
}

/// The largest zstd frame header (RFC 8878): `ruzstd` starts once it has
/// that much, or the whole body.
#[cfg(target_arch = "wasm32")]
const MAX_FRAME_HEADER: usize = 18;

#[cfg(target_arch = "wasm32")]
struct Frame {
    decoder: ruzstd::decoding::FrameDecoder,
    started: bool,
}

#[cfg(target_arch = "wasm32")]
impl Frame {
    fn new() -> Result<Frame, ReplicaError> {
        Ok(Frame {
            decoder: ruzstd::decoding::FrameDecoder::new(),
            started: false,
        })
    }

    fn step(
        &mut self,
        input: &[u8],
        out: &mut [u8],
        last: bool,
    ) -> Result<(usize, usize), ReplicaError> {
        if !self.started && input.len() < MAX_FRAME_HEADER && !last {
            return Ok((0, 0));
        }
        if !self.started && input.is_empty() {
            return Err(bad("the image was cut short"));
        }
        let (read, written) = self
            .decoder
            .decode_from_to(input, out)
            .map_err(|e| bad(format!("the image is not zstd: {e}")))?;
        self.started = true;
        if read == 0 && written == 0 && self.finished() && !input.is_empty() {
            return Err(bad("bytes after the image's frame"));
        }
        Ok((read, written))
    }

    fn finished(&self) -> bool {
        self.started && self.decoder.is_finished() && self.decoder.can_collect() == 0
    }
}

/// Decompresses an image's body as it arrives, in any chunks, handing the
/// decoded bytes on in order, and checks them: never more than the size
/// the headers announced, and at the end one whole frame of exactly that
/// size with that CRC-32. Its memory is the zstd window plus a buffer,
/// whatever the image's size.
pub struct ImageDecoder {
    frame: Frame,
    /// Compressed bytes not yet decoded.
    pending: Vec<u8>,
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
    pub fn new(info: &ImageInfo) -> Result<ImageDecoder, ReplicaError> {
        Ok(ImageDecoder {
            frame: Frame::new()?,
            pending: Vec::new(),
            out: vec![0; 256 * 1024],
            hasher: crc32fast::Hasher::new(),
            decoded: 0,
            expected: info.clone(),
        })
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
            let (read, written) = self
                .frame
                .step(&self.pending[used..], &mut self.out, last)?;
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
        if !self.frame.finished() {
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
    /// Whether an image may replace this replica: it has a file (an image
    /// replaces the file), has never loaded anything (no cursor) and holds
    /// nothing of its own (no outbox, no refused ops). Anything else takes
    /// the row snapshot, whose load keeps and rebases local edits.
    pub fn can_take_image(&mut self) -> Result<bool, ReplicaError> {
        self.commit_held()?;
        let on_file = self.conn.path().is_some_and(|p| !p.is_empty());
        Ok(on_file
            && self.cursor()?.is_none()
            && self.outbox_len()? == 0
            && self.rejected_len()? == 0)
    }

    /// Replaces this replica's file with the verified image at `path` (a
    /// file decoded by [`ImageDecoder`], on the same disk): first every
    /// check (this replica may take an image, the file is a SQLite
    /// database of this build's schema, of this replica's space and
    /// subtree, at `info.seq`), then this replica's id, clock and settings
    /// are written into it and it is renamed over the replica's file. Any
    /// failure before the rename leaves the replica as it was. Returns the
    /// seq it now holds. (The browser's pool has no rename:
    /// [`Replica::close_for_image`].)
    #[cfg(not(target_arch = "wasm32"))]
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
        let checked = check_image(&image, self.space()?, self.subtree_root()?, info)?;
        image.close().map_err(|(_, e)| e)?;
        let own = self.own_rows()?;
        self.clock
            .observe(arbor_shared::Hlc(checked.max_hlc.max(0) as u64));
        let clock = i64::try_from(self.clock.last().0).unwrap_or(i64::MAX);
        self.put_in_place(path, &own, &checked.space, clock)?;
        self.notify_changes(crate::Changes {
            reset: true,
            ..crate::Changes::default()
        });
        Ok(info.seq)
    }

    /// What is this replica's own in `meta`, kept across an install: its
    /// id, clock, space and settings.
    fn own_rows(&self) -> Result<Vec<(String, rusqlite::types::Value)>, ReplicaError> {
        let mut stmt = self.conn.prepare(
            "SELECT key, value FROM meta
             WHERE key IN ('replica', 'clock', 'space') OR key LIKE 'setting.%'",
        )?;
        Ok(stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?)
    }

    /// The browser's way to take an image (its OPFS pool has no rename, and
    /// a copy of the pages costs a second write of the whole file through
    /// the WAL): closes this replica's file, which may then be replaced,
    /// and returns what [`Replica::open_image`] and [`Replica::reopen_empty`]
    /// need. Refused unless the replica may take an image. Until one of
    /// those two, the replica is an empty database in memory.
    pub fn close_for_image(&mut self) -> Result<ImageSwap, ReplicaError> {
        if !self.can_take_image()? {
            return Err(bad("the replica holds state of its own: it loads rows"));
        }
        let path = match self.conn.path() {
            Some(p) if !p.is_empty() => std::path::PathBuf::from(p),
            _ => return Err(bad("a replica in memory has no file to replace")),
        };
        let swap = ImageSwap {
            path,
            own: self.own_rows()?,
            space: self.space()?,
            root: self.subtree_root()?,
        };
        let old = std::mem::replace(&mut self.conn, Connection::open_in_memory()?);
        old.close().map_err(|(_, e)| e)?;
        Ok(swap)
    }

    /// Opens the file now at the closed replica's path (an image, put there
    /// whole) as this replica, once it checks out against what the replica
    /// was (space, subtree) and `info`, and writes the replica's own rows
    /// into it. On an error the file is not this replica's: delete it and
    /// call [`Replica::reopen_empty`].
    pub fn open_image(&mut self, swap: &ImageSwap, info: &ImageInfo) -> Result<u64, ReplicaError> {
        let image = Connection::open_with_flags(
            &swap.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        let checked = check_image(&image, swap.space.clone(), swap.root, info)?;
        image.close().map_err(|(_, e)| e)?;
        self.clock
            .observe(arbor_shared::Hlc(checked.max_hlc.max(0) as u64));
        let clock = i64::try_from(self.clock.last().0).unwrap_or(i64::MAX);
        let mut conn = Connection::open(&swap.path)?;
        crate::schema::migrate(&mut conn, self.synchronous_full)?;
        write_own(&mut conn, &swap.own, &checked.space, clock)?;
        self.conn = conn;
        self.notify_changes(crate::Changes {
            reset: true,
            ..crate::Changes::default()
        });
        Ok(info.seq)
    }

    /// Opens a new, empty file at the closed replica's path (the caller
    /// deleted whatever was there) as this replica, with its own rows and
    /// subtree root back: the replica is as it was before
    /// [`Replica::close_for_image`].
    pub fn reopen_empty(&mut self, swap: &ImageSwap) -> Result<(), ReplicaError> {
        let mut conn = Connection::open(&swap.path)?;
        crate::schema::migrate(&mut conn, self.synchronous_full)?;
        let tx = conn.transaction()?;
        for (k, v) in &swap.own {
            tx.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)",
                rusqlite::params![k, v],
            )?;
        }
        if let Some(root) = swap.root {
            meta_set(&tx, key::ROOT, root.to_bytes().to_vec())?;
        }
        tx.commit()?;
        self.conn = conn;
        Ok(())
    }

    /// Writes this replica's own rows into the checked image at `path`,
    /// then makes it this replica's file: a rename over the file, after
    /// closing every connection to it (`Replica::replace_file`). Nothing is
    /// copied, and a crash leaves the old file or the new one whole.
    #[cfg(not(target_arch = "wasm32"))]
    fn put_in_place(
        &mut self,
        path: &Path,
        own: &[(String, rusqlite::types::Value)],
        space: &str,
        clock: i64,
    ) -> Result<(), ReplicaError> {
        let target = self
            .file_path()
            .ok_or_else(|| bad("a replica in memory has no file to replace"))?;
        let mut file = Connection::open(path)?;
        write_own(&mut file, own, space, clock)?;
        file.close().map_err(|(_, e)| e)?;
        self.replace_file(path, &target)
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

/// A replica closed to take an image in place of its file
/// ([`Replica::close_for_image`]).
#[derive(Debug, Clone)]
pub struct ImageSwap {
    /// The replica's file.
    pub path: std::path::PathBuf,
    /// Its own `meta` rows (id, clock, space, settings).
    own: Vec<(String, rusqlite::types::Value)>,
    space: Option<String>,
    root: Option<NodeId>,
}

/// What [`check_image`] read from a good image.
struct Checked {
    space: String,
    /// The newest HLC in it, so the clock never goes behind the image.
    max_hlc: i64,
}

/// Checks `image` against what the replica expects: its space (`None`:
/// any) and subtree root, and `info`'s seq. A file SQLite cannot read as
/// a database is a bad image.
fn check_image(
    image: &Connection,
    space: Option<String>,
    root: Option<NodeId>,
    info: &ImageInfo,
) -> Result<Checked, ReplicaError> {
    check_image_file(image, space, root, info).map_err(|e| match e {
        ReplicaError::Sqlite(e) => bad(format!("the image is not a replica: {e}")),
        e => e,
    })
}

fn check_image_file(
    image: &Connection,
    space: Option<String>,
    root: Option<NodeId>,
    info: &ImageInfo,
) -> Result<Checked, ReplicaError> {
    let version: i64 = image.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version != schema::VERSION {
        return Err(bad(format!(
            "the image's schema is {version}, this build's {}",
            schema::VERSION
        )));
    }
    let image_space = match meta_get(image, key::SPACE)? {
        Some(rusqlite::types::Value::Text(s)) => s,
        _ => return Err(bad("the image names no space")),
    };
    if let Some(have) = space.as_deref()
        && have != image_space
    {
        return Err(bad(format!(
            "an image of thoughtspace {image_space}, the replica's is {have}"
        )));
    }
    let image_root = match meta_get(image, key::ROOT)? {
        Some(rusqlite::types::Value::Blob(b)) => Some(crate::store::id_from_blob(&b)?),
        None => None,
        Some(_) => return Err(bad("the image's root is not an id")),
    };
    if image_root != root {
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
        space: image_space,
        max_hlc: max_hlc.unwrap_or(0),
    })
}
