//! Replica images (`GET .../image`): the cache of each space's (and subtree's) finished client replica file, zstd-compressed, built from a consistent snapshot in the background and rebuilt when enough has changed.
//!
//! An image is the client's own replica, built by the client crate's
//! cold start (`arbor_client::image::build_image`) from the same snapshot
//! stream a row cold start reads, so its schema is the client's exactly. A
//! request never waits for a build: a missing image is answered 404 (the
//! client loads rows) and built behind it, one build at a time server-wide,
//! each holding one pooled connection (of a standby when one is
//! configured) for the length of its snapshot. A cached image is served
//! while the log still holds every op after its seq (catch-up covers the
//! rest) and rebuilt behind it once it lags the head by `rebuild_ops`.

use std::collections::HashSet;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arbor_shared::NodeId;
use futures_util::StreamExt as _;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use crate::db::Readers;
use crate::snapshot::Scope;

/// Where images are kept, and when they are rebuilt.
#[derive(Debug, Clone)]
pub struct ImageConfig {
    /// The cache folder (created if missing). Images of a space are
    /// `<hex of its name>[~<root>]-<seq>-<build>.image.zst`, with
    /// `<hex of its name>[~<root>].json` beside naming the current one.
    pub dir: PathBuf,
    /// An image this many ops behind the head is rebuilt (it is still
    /// served meanwhile: catch-up brings a client the rest).
    pub rebuild_ops: u64,
    /// zstd level (1 to 19; 3 is zstd's default).
    pub level: i32,
}

/// What the cache knows of one image (its `.json`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ImageMeta {
    /// The seq it is consistent at.
    pub seq: u64,
    /// The client schema version it has.
    pub schema: i64,
    /// Its size, decompressed.
    pub size: u64,
    /// CRC-32 of its decompressed bytes, 8 lowercase hex digits.
    pub crc32: String,
    /// The compressed file's name in the cache folder.
    pub file: String,
    /// The compressed file's size.
    pub compressed: u64,
    /// Seconds the build took.
    pub build_s: f64,
}

/// A cached image ready to send.
#[derive(Debug)]
pub struct Cached {
    /// Its compressed file.
    pub path: PathBuf,
    /// What it is.
    pub meta: ImageMeta,
    /// The file, opened when its pointer was read: a build that replaces
    /// it (and removes the old file) after that cannot take it from the
    /// response that is about to send it.
    pub file: tokio::fs::File,
}

/// The image cache of a server.
#[derive(Debug)]
pub struct Images {
    config: ImageConfig,
    readers: Arc<Readers>,
    /// Keys with a build running or queued (one build per key at a time).
    building: Mutex<HashSet<String>>,
    /// One build at a time, server-wide: a build holds a pooled connection
    /// and a core for as long as a cold start does.
    slots: Arc<Semaphore>,
}

/// Why a build failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// Reading the snapshot failed.
    #[error("snapshot: {0}")]
    Db(#[from] crate::db::DbError),
    /// Loading or checking the replica failed.
    #[error("replica: {0}")]
    Replica(#[from] arbor_client::ReplicaError),
    /// The cache folder.
    #[error("cache: {0}")]
    Io(#[from] std::io::Error),
    /// The build's thread.
    #[error("build thread: {0}")]
    Join(String),
}

/// The cache key of a space's image, or of its subtree's: file names are
/// flat, and any space name maps to a distinct one.
fn cache_key(space: &str, root: Option<NodeId>) -> String {
    let mut key = arbor_client::image::hex(space.as_bytes());
    if let Some(root) = root {
        key.push('~');
        key.push_str(&root.to_string());
    }
    key
}

impl Images {
    /// A cache in `config.dir`, building from `readers`.
    pub fn new(config: ImageConfig, readers: Arc<Readers>) -> std::io::Result<Images> {
        std::fs::create_dir_all(&config.dir)?;
        Ok(Images {
            config,
            readers,
            building: Mutex::new(HashSet::new()),
            slots: Arc::new(Semaphore::new(1)),
        })
    }

    /// The image of `space` (of the subtree of `root`) to serve to a client
    /// that can catch up from `floor` and sees the head at `head`, if one
    /// is cached that catch-up covers. Starts a build behind the answer
    /// when there is none or it lags the head by `rebuild_ops` or more.
    pub async fn get(
        self: &Arc<Self>,
        space: &str,
        root: Option<NodeId>,
        head: u64,
        floor: u64,
    ) -> Option<Cached> {
        let key = cache_key(space, root);
        let cached = self.read_meta(&key).await.filter(|c| {
            c.meta.schema == arbor_client::schema::VERSION
                && c.meta.seq >= floor
                && c.meta.seq <= head
        });
        let fresh = cached
            .as_ref()
            .is_some_and(|c| head - c.meta.seq < self.config.rebuild_ops);
        if !fresh {
            self.start_build(space, root, key);
        }
        cached
    }

    async fn read_meta(&self, key: &str) -> Option<Cached> {
        // Twice: a build may replace the file between the pointer and the
        // open (the old file is removed then); the pointer read again names
        // the new one.
        match self.read_meta_once(key).await {
            Some(c) => Some(c),
            None => self.read_meta_once(key).await,
        }
    }

    async fn read_meta_once(&self, key: &str) -> Option<Cached> {
        let json = tokio::fs::read(self.config.dir.join(format!("{key}.json")))
            .await
            .ok()?;
        let meta: ImageMeta = serde_json::from_slice(&json).ok()?;
        let path = self.config.dir.join(&meta.file);
        // A file removed by hand (or by a newer build since the pointer
        // was read), or never finished, is no image.
        let file = tokio::fs::File::open(&path).await.ok()?;
        let on_disk = file.metadata().await.ok()?;
        (on_disk.len() == meta.compressed).then_some(Cached { path, meta, file })
    }

    fn start_build(self: &Arc<Self>, space: &str, root: Option<NodeId>, key: String) {
        {
            let mut building = self.building.lock().unwrap_or_else(|p| p.into_inner());
            if !building.insert(key.clone()) {
                return;
            }
        }
        let images = self.clone();
        let space = space.to_string();
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let outcome = match images.slots.clone().acquire_owned().await {
                Ok(_slot) => images.build(&space, root).await,
                Err(_) => Err(BuildError::Join("the build slots closed".into())),
            };
            let seconds = started.elapsed().as_secs_f64();
            match &outcome {
                Ok(meta) => {
                    tracing::info!(
                        space,
                        ?root,
                        seq = meta.seq,
                        size = meta.size,
                        compressed = meta.compressed,
                        seconds,
                        "replica image built"
                    );
                    metrics::counter!(crate::metrics::IMAGE_BUILDS, "outcome" => "built")
                        .increment(1);
                    metrics::histogram!(crate::metrics::IMAGE_BUILD_SECONDS).record(seconds);
                }
                Err(e) => {
                    tracing::warn!(space, ?root, error = %e, "replica image build failed");
                    metrics::counter!(crate::metrics::IMAGE_BUILDS, "outcome" => "failed")
                        .increment(1);
                }
            }
            images
                .building
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&key);
        });
    }

    /// Builds the image now (also `arbor-server image`): the snapshot read
    /// in one transaction, loaded by the client's cold start into a new
    /// file, compressed while hashed, then put in place by renames (the
    /// `.json` last), so a reader sees the old image or the new one whole.
    pub async fn build(&self, space: &str, root: Option<NodeId>) -> Result<ImageMeta, BuildError> {
        let key = cache_key(space, root);
        let started = std::time::Instant::now();
        let scope = match root {
            Some(root) => Scope::Subtree(root),
            None => Scope::Space,
        };
        let (_, stream) = self
            .readers
            .read(
                |db| Box::pin(crate::snapshot::snapshot(db, space, scope)),
                |_| true,
            )
            .await?;
        let dir = self.config.dir.clone();
        // Its own names: a build never meets another's half-written files
        // (two processes may share a folder).
        let build_id = format!(
            "{}-{}",
            std::process::id(),
            BUILDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let sqlite = dir.join(format!("{key}.{build_id}.building.sqlite"));
        let level = self.config.level;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(8);
        let builder = tokio::task::spawn_blocking(move || -> Result<ImageMeta, BuildError> {
            let result = (|| -> Result<(ImageMeta, PathBuf), BuildError> {
                remove_if_there(&sqlite)?;
                let seq = arbor_client::image::build_image(
                    &sqlite,
                    std::iter::from_fn(|| rx.blocking_recv()),
                )?;
                let (meta, file) = compress(&sqlite, &dir, &key, &build_id, seq, level)?;
                Ok((meta, file))
            })();
            for suffix in ["", "-journal", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", sqlite.display()));
            }
            let (mut meta, _) = result?;
            meta.build_s = started.elapsed().as_secs_f64();
            // The pointer last: readers see the old image or the new one.
            let json = dir.join(format!("{key}.json"));
            let tmp = dir.join(format!("{key}.{build_id}.json.tmp"));
            std::fs::write(
                &tmp,
                serde_json::to_vec(&meta).map_err(std::io::Error::other)?,
            )?;
            let old = std::fs::read(&json)
                .ok()
                .and_then(|j| serde_json::from_slice::<ImageMeta>(&j).ok());
            std::fs::rename(&tmp, &json)?;
            // The old file goes; a response still sending it keeps its
            // open handle.
            if let Some(old) = old
                && old.file != meta.file
            {
                let _ = std::fs::remove_file(dir.join(old.file));
            }
            Ok(meta)
        });
        let mut stream = std::pin::pin!(stream);
        while let Some(chunk) = stream.next().await {
            let failed = chunk.is_err();
            if tx.send(chunk).await.is_err() || failed {
                break;
            }
        }
        drop(tx);
        builder.await.map_err(|e| BuildError::Join(e.to_string()))?
    }
}

/// The bytes of an open file as a stream of chunks of up to `chunk` bytes
/// (an image sent to a client or uploaded to a bucket).
pub fn file_chunks(
    file: tokio::fs::File,
    chunk: usize,
) -> impl futures_util::Stream<Item = Result<bytes::Bytes, std::io::Error>> + Send + 'static {
    futures_util::stream::unfold(file, move |mut file| async move {
        use tokio::io::AsyncReadExt as _;
        let mut buf = bytes::BytesMut::with_capacity(chunk);
        match file.read_buf(&mut buf).await {
            Ok(0) => None,
            Ok(_) => Some((Ok(buf.freeze()), file)),
            Err(e) => Some((Err(e), file)),
        }
    })
}

/// Builds started by this process (names their files).
static BUILDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn remove_if_there(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Compresses the SQLite file at `sqlite` into `<key>-<seq>-<build>.image.zst` in
/// `dir`, hashing the uncompressed bytes on the way.
fn compress(
    sqlite: &Path,
    dir: &Path,
    key: &str,
    build_id: &str,
    seq: u64,
    level: i32,
) -> Result<(ImageMeta, PathBuf), BuildError> {
    // Its own name per build: two builds of one seq (a second server, or a
    // build asked for while the server's own runs) never rename over a
    // file a response has just been given the headers of.
    let file = format!("{key}-{seq}-{build_id}.image.zst");
    let path = dir.join(&file);
    let tmp = dir.join(format!("{file}.{build_id}.tmp"));
    let mut input = std::fs::File::open(sqlite)?;
    let out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&tmp)?);
    let mut encoder = zstd::stream::Encoder::new(out, level)?;
    let mut hasher = crc32fast::Hasher::new();
    let mut size = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = input.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        encoder.write_all(&buf[..n])?;
        size += n as u64;
    }
    let mut out = encoder.finish()?;
    out.flush()?;
    let out = out.into_inner().map_err(|e| e.into_error())?;
    out.sync_all()?;
    let compressed = out.metadata()?.len();
    std::fs::rename(&tmp, &path)?;
    let crc32 = hasher.finalize();
    Ok((
        ImageMeta {
            seq,
            schema: arbor_client::schema::VERSION,
            size,
            crc32: format!("{crc32:08x}"),
            file,
            compressed,
            build_s: 0.0,
        },
        path,
    ))
}
