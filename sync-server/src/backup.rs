//! Backups to object storage: each changed space's export streamed to an S3-compatible bucket, a manifest per space, retention, the schedule in `serve`, and restore of a space with its history.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::{Stream, StreamExt as _};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt as _, PutPayloadMut, WriteMultipart};
use serde::{Deserialize, Serialize};

use crate::db::{Db, DbError, Owner, RejectCode};
use crate::import::ImportError;
use crate::snapshot::{Scope, snapshot};

/// The name of a space's manifest in its folder.
pub const MANIFEST: &str = "manifest.json";
/// The manifest format this server writes and reads.
pub const MANIFEST_FORMAT: u32 = 1;
/// S3's smallest part (all but the last part of a multipart upload).
pub const MIN_PART_BYTES: usize = 5 << 20;
/// Parts uploaded at once by one upload.
const PARTS_IN_FLIGHT: usize = 2;
/// The session advisory lock of a backup run (two-int keys: "ARBB", 1).
const LOCK: (i32, i32) = (0x4152_4242, 1);

/// Flags and environment variables of the bucket, shared by `serve`
/// (its schedule) and `backup`.
#[derive(Debug, Clone, clap::Args)]
pub struct BackupArgs {
    /// Where backups go: `s3://bucket/prefix` (any S3-compatible store).
    /// Endpoint, region and credentials come from the standard `AWS_*`
    /// variables (`AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, `AWS_ALLOW_HTTP`; docs/DEPLOY.md).
    #[arg(long, env = "ARBOR_BACKUP_URL")]
    pub backup_url: Option<String>,
    /// Backups kept per space: after a new one is written, older ones
    /// beyond this many are deleted.
    #[arg(long, env = "ARBOR_BACKUP_KEEP", default_value_t = 7,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub backup_keep: u32,
    /// Part size of multipart uploads, MiB (S3's minimum is 5). An upload
    /// holds at most three parts in memory.
    #[arg(long, env = "ARBOR_BACKUP_PART_MIB", default_value_t = 8,
          value_parser = clap::value_parser!(u32).range(5..=5120))]
    pub backup_part_mib: u32,
    /// Also store each backed-up space's replica image beside its export
    /// (docs/PROTOCOL.md, "Replica images"): a finished client replica a
    /// device can start from without any server.
    #[arg(long, env = "ARBOR_BACKUP_IMAGES")]
    pub backup_images: bool,
}

impl BackupArgs {
    /// The run options these flags give (all spaces).
    pub fn options(&self) -> RunOptions {
        RunOptions {
            keep: self.backup_keep as usize,
            part_bytes: (self.backup_part_mib as usize) << 20,
            images: self.backup_images,
            ..RunOptions::default()
        }
    }

    /// The bucket, from `--backup-url` and the process's `AWS_*`
    /// variables; `None` without a URL.
    pub fn target(&self) -> Result<Option<Target>, BackupError> {
        self.backup_url.as_deref().map(Target::from_env).transpose()
    }

    /// `serve`'s schedule: a run every `interval_s` seconds (0: none).
    /// An interval without a URL is an error; a URL without an interval
    /// schedules nothing (the `backup` command uses it).
    pub fn schedule(&self, interval_s: u64) -> Result<Option<Schedule>, BackupError> {
        if interval_s == 0 {
            // The URL is still checked, so a typo fails at start.
            self.target()?;
            return Ok(None);
        }
        let target = self.target()?.ok_or_else(|| BackupError::BadUrl {
            reason: "--backup-interval-s needs --backup-url (ARBOR_BACKUP_URL)".into(),
        })?;
        Ok(Some(Schedule {
            target,
            interval: Duration::from_secs(interval_s),
            options: self.options(),
        }))
    }
}

/// Why a backup, a restore or a listing failed.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The backup URL is not `s3://bucket[/prefix]` (or the store cannot
    /// be configured from it and the `AWS_*` settings).
    #[error("backup url: {reason}")]
    BadUrl {
        /// What is wrong (never the credentials).
        reason: String,
    },
    /// The bucket failed a request (unreachable, refused credentials, no
    /// such bucket), after the store's retries.
    #[error("object store: {op} {path}: {source}")]
    Store {
        /// What was being done (`get`, `put`, `list`, `delete`, `upload`).
        op: &'static str,
        /// The object or folder.
        path: String,
        /// The store's error.
        source: object_store::Error,
    },
    /// The database failed (listing spaces, the run lock, an export).
    #[error(transparent)]
    Db(#[from] DbError),
    /// An export stream failed midway (the database went away).
    #[error("exporting {space}: {message}")]
    Export {
        /// The space.
        space: String,
        /// Why.
        message: String,
    },
    /// A manifest in the bucket does not parse or has another format.
    #[error("manifest {path}: {reason}")]
    BadManifest {
        /// The manifest's path.
        path: String,
        /// Why.
        reason: String,
    },
    /// No backup of the space (or none at the asked seq) in the bucket.
    #[error("no backup of {space}{} in {target}", .seq.map(|s| format!(" at seq {s}")).unwrap_or_default())]
    NoBackup {
        /// The space.
        space: String,
        /// The asked seq, if any.
        seq: Option<u64>,
        /// The bucket and prefix.
        target: String,
    },
    /// A restore's import failed (a bad file, the database).
    #[error("restoring {space}: {source}")]
    Import {
        /// The space being created.
        space: String,
        /// Why.
        source: ImportError,
    },
    /// Options that do not go together (`--seq` without exactly one space).
    #[error("{0}")]
    Usage(String),
    /// Another run holds the run lock (the schedule skips its turn).
    #[error("another backup run is in progress on this database")]
    Busy,
}

impl BackupError {
    fn store(op: &'static str, path: &Path, source: object_store::Error) -> BackupError {
        BackupError::Store {
            op,
            path: path.to_string(),
            source,
        }
    }
}

/// A bucket and prefix, with its client. Shows as `s3://bucket/prefix`;
/// its credentials are never printed. One folder per space:
///
/// ```text
/// <prefix>/<space>/manifest.json                    the backups of the space, oldest first
/// <prefix>/<space>/<taken_at_ms>-<head_seq>.arbor   one export (GET .../export bytes)
/// ```
///
/// Format and failure modes: docs/DEPLOY.md, "Backups".
#[derive(Clone)]
pub struct Target {
    store: Arc<dyn ObjectStore>,
    bucket: String,
    prefix: Path,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Target({self})")
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.prefix.as_ref().is_empty() {
            write!(f, "s3://{}", self.bucket)
        } else {
            write!(f, "s3://{}/{}", self.bucket, self.prefix)
        }
    }
}

impl Target {
    /// [`Target::open`] with this process's environment variables.
    pub fn from_env(url: &str) -> Result<Target, BackupError> {
        Target::open(url, std::env::vars())
    }

    /// The bucket and prefix of `url` (`s3://bucket[/prefix]`), its client
    /// configured from `settings` as the AWS tools read their environment:
    /// every `AWS_*` name object_store knows (`AWS_ENDPOINT_URL`,
    /// `AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
    /// `AWS_SESSION_TOKEN`, `AWS_ALLOW_HTTP`,
    /// `AWS_VIRTUAL_HOSTED_STYLE_REQUEST`, ...); others are ignored. Makes
    /// no request: an unreachable bucket fails the first run, not this.
    pub fn open(
        url: &str,
        settings: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Target, BackupError> {
        let bad = |reason: &str| BackupError::BadUrl {
            reason: reason.to_string(),
        };
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| bad("it must start with s3:// (s3://bucket/prefix)"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        // Bucket names (S3, R2, MinIO) are 3..63 of these; no `user@`.
        if bucket.len() < 3
            || bucket.len() > 63
            || !bucket
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
        {
            return Err(bad(
                "the bucket name is 3 to 63 letters, digits, '-', '.' or '_' (credentials go in AWS_* variables)",
            ));
        }
        let prefix =
            Path::parse(prefix.trim_end_matches('/')).map_err(|e| bad(&format!("prefix: {e}")))?;
        let mut builder = object_store::aws::AmazonS3Builder::new();
        for (name, value) in settings {
            if !name.starts_with("AWS_") {
                continue;
            }
            if let Ok(key) = name.to_ascii_lowercase().parse() {
                builder = builder.with_config(key, value);
            }
        }
        let store = builder
            .with_bucket_name(bucket)
            .with_retry(object_store::RetryConfig {
                backoff: object_store::BackoffConfig::default(),
                max_retries: 3,
                retry_timeout: Duration::from_secs(60),
            })
            .build()
            .map_err(|e| bad(&format!("configuring the S3 client: {e}")))?;
        Ok(Target {
            store: Arc::new(store),
            bucket: bucket.to_string(),
            prefix,
        })
    }

    /// The folder of `space`.
    fn dir(&self, space: &str) -> Path {
        self.prefix.clone().join(space)
    }

    /// The path of an object of `space` (a manifest entry's `object`).
    pub fn object_path(&self, space: &str, object: &str) -> Path {
        self.dir(space).join(object)
    }

    /// The size of an object of `space`, if it exists.
    pub async fn size_of(&self, space: &str, object: &str) -> Result<Option<u64>, BackupError> {
        let path = self.object_path(space, object);
        match self.store.head(&path).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(BackupError::store("head", &path, e)),
        }
    }

    /// The bytes of an object of `space`, as a stream, if it exists (an
    /// export, or a replica image a client decodes as it arrives).
    pub async fn read(
        &self,
        space: &str,
        object: &str,
    ) -> Result<Option<impl Stream<Item = Result<Bytes, object_store::Error>> + use<>>, BackupError>
    {
        let path = self.object_path(space, object);
        match self.store.get(&path).await {
            Ok(got) => Ok(Some(got.into_stream())),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(BackupError::store("get", &path, e)),
        }
    }

    /// The URL of an object of `space` (`s3://bucket/prefix/space/object`).
    pub fn object_url(&self, space: &str, object: &str) -> String {
        format!("s3://{}/{}", self.bucket, self.object_path(space, object))
    }

    /// The manifest of `space`, if it has one.
    pub async fn manifest(&self, space: &str) -> Result<Option<Manifest>, BackupError> {
        let path = self.dir(space).join(MANIFEST);
        let bytes = match self.store.get(&path).await {
            Ok(got) => got
                .bytes()
                .await
                .map_err(|e| BackupError::store("get", &path, e))?,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(BackupError::store("get", &path, e)),
        };
        let manifest: Manifest =
            serde_json::from_slice(&bytes).map_err(|e| BackupError::BadManifest {
                path: path.to_string(),
                reason: e.to_string(),
            })?;
        if manifest.format != MANIFEST_FORMAT {
            return Err(BackupError::BadManifest {
                path: path.to_string(),
                reason: format!(
                    "format {} (this server reads {MANIFEST_FORMAT})",
                    manifest.format
                ),
            });
        }
        Ok(Some(manifest))
    }

    async fn put_manifest(&self, manifest: &Manifest) -> Result<(), BackupError> {
        let path = self.dir(&manifest.space).join(MANIFEST);
        let body = serde_json::to_vec_pretty(manifest).map_err(|e| BackupError::BadManifest {
            path: path.to_string(),
            reason: e.to_string(),
        })?;
        self.store
            .put(&path, body.into())
            .await
            .map_err(|e| BackupError::store("put", &path, e))?;
        Ok(())
    }

    /// The names of the spaces with a folder under the prefix, sorted.
    pub async fn spaces(&self) -> Result<Vec<String>, BackupError> {
        let prefix = (!self.prefix.as_ref().is_empty()).then_some(&self.prefix);
        let listed = self
            .store
            .list_with_delimiter(prefix)
            .await
            .map_err(|e| BackupError::store("list", &self.prefix, e))?;
        let mut names: Vec<String> = listed
            .common_prefixes
            .iter()
            .filter_map(|dir| dir.filename())
            .filter_map(|part| {
                percent_encoding::percent_decode_str(part)
                    .decode_utf8()
                    .ok()
                    .map(|s| s.into_owned())
            })
            .collect();
        names.sort();
        Ok(names)
    }
}

/// A space's manifest: its backups, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`MANIFEST_FORMAT`].
    pub format: u32,
    /// The space's name.
    pub space: String,
    /// Its backups, oldest first; the last is the newest.
    pub backups: Vec<Entry>,
}

/// One backup of a space.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The object's name in the space's folder.
    pub object: String,
    /// The export's head seq (its header's).
    pub head_seq: u64,
    /// `spaces.id` at the time: a space dropped and made again under the
    /// same name is a different space.
    pub space_id: i64,
    /// The space's tenant (restored with it), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// When the export started, milliseconds since the epoch.
    pub taken_at_ms: u64,
    /// The object's size.
    pub bytes: u64,
    /// Rows in the export's nodes, payloads and log sections.
    pub nodes: u64,
    /// See `nodes`.
    pub payloads: u64,
    /// See `nodes`.
    pub log: u64,
    /// The restore rule's records up to `head_seq` (cause, trigger and
    /// restore seqs): the export does not carry them, and a restore puts
    /// them back so the rule stays idempotent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restores: Vec<[i64; 3]>,
    /// The space's replica image stored with this backup
    /// ([`RunOptions::images`]), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageEntry>,
}

/// A replica image stored with a backup: the body and headers of
/// `GET .../image` (docs/PROTOCOL.md, "Replica images"), as an object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageEntry {
    /// The object's name in the space's folder (one zstd frame).
    pub object: String,
    /// The seq the image holds (its own snapshot: it may be above the
    /// export's).
    pub seq: u64,
    /// Its client schema version.
    pub schema: i64,
    /// Its size decompressed.
    pub size: u64,
    /// The CRC-32 of its decompressed bytes, 8 lowercase hex digits.
    pub crc32: String,
    /// The object's size.
    pub bytes: u64,
}

/// What a backup run does.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Backups kept per space (at least 1).
    pub keep: usize,
    /// Part size of multipart uploads, bytes (at least [`MIN_PART_BYTES`]
    /// for S3; exports smaller than this go up in one `PUT`).
    pub part_bytes: usize,
    /// Only these spaces (empty: all).
    pub spaces: Vec<String>,
    /// Wait for another run to finish (the command) instead of returning
    /// [`BackupError::Busy`] (the schedule).
    pub wait_for_lock: bool,
    /// Also store each space's replica image (built for the run, in a
    /// temporary folder) beside its export.
    pub images: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            keep: 7,
            part_bytes: 8 << 20,
            spaces: Vec::new(),
            wait_for_lock: true,
            images: false,
        }
    }
}

/// `serve`'s schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// The bucket.
    pub target: Target,
    /// Time between the starts of two runs (the first runs at start).
    pub interval: Duration,
    /// Keep, part size (all spaces; never waits for the lock).
    pub options: RunOptions,
}

/// One space uploaded by a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uploaded {
    /// The space.
    pub space: String,
    /// Its manifest entry.
    pub entry: Entry,
    /// Parts of its upload (1: a single `PUT`).
    pub parts: usize,
    /// Older backups deleted by retention.
    pub deleted: usize,
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunReport {
    /// Spaces uploaded, in name order.
    pub uploaded: Vec<Uploaded>,
    /// Spaces whose newest backup is current.
    pub unchanged: usize,
    /// Spaces asked for (or listed) that no longer exist.
    pub missing: Vec<String>,
}

/// What the bucket held at the last run, per space: (`spaces.id`,
/// `head_seq`) of its newest backup. The schedule keeps it between runs,
/// so an unchanged space costs no request.
#[derive(Debug, Clone, Default)]
pub struct Known(HashMap<String, (i64, u64)>);

/// The run lock: a session advisory lock on a pooled connection. Dropped
/// without [`RunLock::release`] (a cancelled run), the connection leaves
/// the pool and closes, which releases the lock.
struct RunLock(Option<deadpool_postgres::Object>);

impl RunLock {
    async fn take(db: &Db, wait: bool) -> Result<Option<RunLock>, DbError> {
        let conn = db.client().await?;
        let lock = RunLock(Some(conn));
        let Some(conn) = lock.0.as_ref() else {
            return Ok(None);
        };
        if wait {
            conn.execute("SELECT pg_advisory_lock($1, $2)", &[&LOCK.0, &LOCK.1])
                .await?;
        } else {
            let got: bool = conn
                .query_one("SELECT pg_try_advisory_lock($1, $2)", &[&LOCK.0, &LOCK.1])
                .await?
                .get(0);
            if !got {
                return Ok(None);
            }
        }
        Ok(Some(lock))
    }

    async fn release(mut self) {
        if let Some(conn) = self.0.take() {
            let unlocked = conn
                .execute("SELECT pg_advisory_unlock($1, $2)", &[&LOCK.0, &LOCK.1])
                .await;
            if unlocked.is_err() {
                drop(deadpool_postgres::Object::take(conn));
            }
        }
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        if let Some(conn) = self.0.take() {
            drop(deadpool_postgres::Object::take(conn));
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// One backup run: every space (or `options.spaces`) whose newest backup is
/// not current is exported into `target`, its manifest updated and trimmed
/// to `options.keep`. A space is current when its (`spaces.id`, `head_seq`)
/// is its manifest's newest entry's. The export streams from its
/// `REPEATABLE READ` transaction into the bucket (a multipart upload when
/// larger than a part, memory under three parts); the manifest is written
/// after the object, so it names complete objects only; then the objects
/// that fell out of it are deleted. One run at a time per database (a
/// session advisory lock). Stops at the first failure (a space that
/// vanished meanwhile is not one); what was uploaded before stays, with its
/// manifest. `known` is read and updated (see [`Known`]).
pub async fn run(
    db: &Db,
    target: &Target,
    options: &RunOptions,
    known: &mut Known,
) -> Result<RunReport, BackupError> {
    let Some(lock) = RunLock::take(db, options.wait_for_lock).await? else {
        return Err(BackupError::Busy);
    };
    let result = run_locked(db, target, options, known).await;
    lock.release().await;
    result
}

async fn run_locked(
    db: &Db,
    target: &Target,
    options: &RunOptions,
    known: &mut Known,
) -> Result<RunReport, BackupError> {
    let keep = options.keep.max(1);
    let spaces = {
        let conn = db.client().await?;
        conn.query(
            "SELECT id, name, head_seq, tenant FROM spaces
             WHERE cardinality($1::text[]) = 0 OR name = ANY($1::text[])
             ORDER BY name",
            &[&options.spaces],
        )
        .await
        .map_err(DbError::from)?
    };
    let mut report = RunReport::default();
    for wanted in &options.spaces {
        if !spaces
            .iter()
            .any(|r| r.get::<_, &str>(1) == wanted.as_str())
        {
            report.missing.push(wanted.clone());
        }
    }
    let mut listed = std::collections::HashSet::new();
    for row in &spaces {
        let id: i64 = row.try_get(0).map_err(DbError::from)?;
        let name: String = row.try_get(1).map_err(DbError::from)?;
        let head: i64 = row.try_get(2).map_err(DbError::from)?;
        let tenant: Option<String> = row.try_get(3).map_err(DbError::from)?;
        let head = u64::try_from(head).unwrap_or(0);
        listed.insert(name.clone());
        if known.0.get(&name) == Some(&(id, head)) {
            report.unchanged += 1;
            continue;
        }
        let mut manifest = target.manifest(&name).await?.unwrap_or(Manifest {
            format: MANIFEST_FORMAT,
            space: name.clone(),
            backups: Vec::new(),
        });
        if let Some(newest) = manifest.backups.last() {
            if (newest.space_id, newest.head_seq) == (id, head) {
                known.0.insert(name, (id, head));
                report.unchanged += 1;
                continue;
            }
        }
        let Some(uploaded) =
            back_up_space(db, target, &name, id, tenant, options, &mut manifest).await?
        else {
            report.missing.push(name);
            continue;
        };
        // Retention: the manifest first (it only ever names complete
        // objects), then the objects it no longer names.
        let excess = manifest.backups.len().saturating_sub(keep);
        let dropped: Vec<Entry> = manifest.backups.drain(..excess).collect();
        target.put_manifest(&manifest).await?;
        let mut deleted = 0;
        for old in &dropped {
            let image = old.image.as_ref().map(|i| i.object.as_str());
            for (i, object) in std::iter::once(old.object.as_str())
                .chain(image)
                .enumerate()
            {
                let path = target.object_path(&name, object);
                match target.store.delete(&path).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {
                        deleted += usize::from(i == 0)
                    }
                    Err(e) => return Err(BackupError::store("delete", &path, e)),
                }
            }
        }
        metrics::counter!(crate::metrics::BACKUP_SPACES).increment(1);
        metrics::counter!(crate::metrics::BACKUP_BYTES).increment(uploaded.0.bytes);
        tracing::info!(
            space = %name,
            head_seq = uploaded.0.head_seq,
            bytes = uploaded.0.bytes,
            parts = uploaded.1,
            deleted,
            object = %target.object_url(&name, &uploaded.0.object),
            "space backed up"
        );
        known
            .0
            .insert(name.clone(), (id, uploaded.0.head_seq.max(head)));
        report.uploaded.push(Uploaded {
            space: name,
            entry: uploaded.0,
            parts: uploaded.1,
            deleted,
        });
    }
    if options.spaces.is_empty() {
        known.0.retain(|name, _| listed.contains(name));
    }
    Ok(report)
}

/// Exports `name` into a new object and appends its entry to `manifest`
/// (not yet written). `None`: the space vanished.
async fn back_up_space(
    db: &Db,
    target: &Target,
    name: &str,
    id: i64,
    tenant: Option<String>,
    options: &RunOptions,
    manifest: &mut Manifest,
) -> Result<Option<(Entry, usize)>, BackupError> {
    let part_bytes = options.part_bytes.max(1);
    let taken_at_ms = now_ms();
    let (header, body) = match snapshot(db, name, Scope::Export).await {
        Ok(got) => got,
        Err(e) if e.reject_code() == Some(RejectCode::UnknownSpace) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let object = format!("{taken_at_ms:013}-{}.arbor", header.head_seq);
    let path = target.object_path(name, &object);
    let (bytes, parts) = match upload(&target.store, &path, body, part_bytes).await {
        Ok(done) => done,
        Err(Failed::Export(e)) => {
            return Err(BackupError::Export {
                space: name.to_string(),
                message: e.to_string(),
            });
        }
        Err(Failed::Store(e)) => return Err(BackupError::store("upload", &path, e)),
    };
    // Records are appended with their restore move, in its commit: those
    // up to the export's head are exactly the export's.
    let restores = {
        let conn = db.client().await?;
        conn.query(
            "SELECT r.cause_seq, r.trigger_seq, r.restore_seq FROM restores r
             WHERE r.space = $1 AND r.restore_seq <= $2 ORDER BY r.cause_seq",
            &[&id, &i64::try_from(header.head_seq).unwrap_or(i64::MAX)],
        )
        .await
        .map_err(DbError::from)?
        .iter()
        .map(|row| Ok([row.try_get(0)?, row.try_get(1)?, row.try_get(2)?]))
        .collect::<Result<Vec<[i64; 3]>, tokio_postgres::Error>>()
        .map_err(DbError::from)?
    };
    let image = if options.images {
        Some(back_up_image(db, target, name, &object, part_bytes).await?)
    } else {
        None
    };
    let entry = Entry {
        object,
        head_seq: header.head_seq,
        space_id: id,
        tenant,
        taken_at_ms,
        bytes,
        nodes: header.nodes,
        payloads: header.payloads,
        log: header.log,
        restores,
        image,
    };
    manifest.backups.push(entry.clone());
    Ok(Some((entry, parts)))
}

/// Builds the replica image of `name` in a temporary folder and uploads
/// it as `<export object>.image.zst`.
async fn back_up_image(
    db: &Db,
    target: &Target,
    name: &str,
    export: &str,
    part_bytes: usize,
) -> Result<ImageEntry, BackupError> {
    static RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "arbor-backup-image-{}-{}",
        std::process::id(),
        RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let failed = |e: &dyn std::fmt::Display| BackupError::Export {
        space: name.to_string(),
        message: format!("its replica image: {e}"),
    };
    let result = async {
        let images = crate::image::Images::new(
            crate::image::ImageConfig {
                dir: dir.clone(),
                rebuild_ops: 0,
                level: 3,
            },
            Arc::new(crate::db::Readers::new(
                db.clone(),
                Vec::new(),
                Duration::from_secs(5),
            )),
        )
        .map_err(|e| failed(&e))?;
        let meta = images.build(name, None).await.map_err(|e| failed(&e))?;
        let object = format!("{}.image.zst", export.trim_end_matches(".arbor"));
        let path = target.object_path(name, &object);
        let file = tokio::fs::File::open(dir.join(&meta.file))
            .await
            .map_err(|e| failed(&e))?;
        let body = crate::image::file_chunks(file, 1 << 20);
        let (bytes, _) = match upload(&target.store, &path, body, part_bytes).await {
            Ok(done) => done,
            Err(Failed::Export(e)) => return Err(failed(&e)),
            Err(Failed::Store(e)) => return Err(BackupError::store("upload", &path, e)),
        };
        Ok(ImageEntry {
            object,
            seq: meta.seq,
            schema: meta.schema,
            size: meta.size,
            crc32: meta.crc32,
            bytes,
        })
    }
    .await;
    let _ = tokio::fs::remove_dir_all(&dir).await;
    result
}

/// Why an upload failed: its source or the store.
enum Failed {
    Export(std::io::Error),
    Store(object_store::Error),
}

/// Streams `body` to `path`: one `PUT` if it ends before `part_bytes`,
/// else a multipart upload of `part_bytes` parts, [`PARTS_IN_FLIGHT`] at
/// once (the body is read only as parts go out). A failed multipart
/// upload is aborted. Returns the bytes and the parts.
async fn upload(
    store: &Arc<dyn ObjectStore>,
    path: &Path,
    body: impl Stream<Item = Result<Bytes, std::io::Error>>,
    part_bytes: usize,
) -> Result<(u64, usize), Failed> {
    let mut multipart: Option<WriteMultipart> = None;
    let mut buffered = PutPayloadMut::new();
    let mut total = 0u64;
    let fed = async {
        let mut body = std::pin::pin!(body);
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(Failed::Export)?;
            total += chunk.len() as u64;
            if let Some(writer) = multipart.as_mut() {
                writer
                    .wait_for_capacity(PARTS_IN_FLIGHT)
                    .await
                    .map_err(Failed::Store)?;
                writer.put(chunk);
                continue;
            }
            buffered.push(chunk);
            if buffered.content_length() >= part_bytes {
                let started = store.put_multipart(path).await.map_err(Failed::Store)?;
                let mut writer = WriteMultipart::new_with_chunk_size(started, part_bytes);
                for piece in std::mem::take(&mut buffered).freeze() {
                    writer.put(piece);
                }
                multipart = Some(writer);
            }
        }
        Ok::<(), Failed>(())
    }
    .await;
    if let Err(e) = fed {
        if let Some(writer) = multipart {
            if let Err(abort) = writer.abort().await {
                tracing::warn!(error = %abort, %path, "aborting a failed multipart upload failed");
            }
        }
        return Err(e);
    }
    match multipart {
        Some(writer) => {
            writer.finish().await.map_err(Failed::Store)?;
            let parts = total.div_ceil(part_bytes as u64);
            Ok((total, usize::try_from(parts).unwrap_or(usize::MAX)))
        }
        None => {
            store
                .put(path, buffered.freeze())
                .await
                .map_err(Failed::Store)?;
            Ok((total, 1))
        }
    }
}

/// Runs [`run`] every `schedule.interval` (the first at once) until `stop`
/// turns true, on `db` (the server's own small pool for backups). A failed
/// run is logged and counted, and the next interval tries again; serving
/// is never affected. A run in progress at shutdown is dropped (an
/// unfinished multipart upload is aborted by the bucket's lifecycle rule,
/// docs/DEPLOY.md).
pub async fn schedule(db: Db, schedule: Schedule, mut stop: tokio::sync::watch::Receiver<bool>) {
    let options = RunOptions {
        wait_for_lock: false,
        ..schedule.options.clone()
    };
    let mut known = Known::default();
    let mut tick = tokio::time::interval(schedule.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tracing::info!(target = %schedule.target, interval_s = schedule.interval.as_secs(), keep = options.keep, "backup schedule started");
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let started = Instant::now();
        let result = tokio::select! {
            result = run(&db, &schedule.target, &options, &mut known) => result,
            _ = stop.wait_for(|s| *s) => {
                tracing::info!("backup run stopped by shutdown");
                return;
            }
        };
        let seconds = started.elapsed().as_secs_f64();
        match result {
            Ok(report) => {
                metrics::counter!(crate::metrics::BACKUP_RUNS, "outcome" => "ok").increment(1);
                metrics::gauge!(crate::metrics::BACKUP_LAST_SUCCESS).set(now_ms() as f64 / 1000.0);
                tracing::info!(
                    uploaded = report.uploaded.len(),
                    unchanged = report.unchanged,
                    seconds,
                    "backup run finished"
                );
            }
            Err(BackupError::Busy) => {
                metrics::counter!(crate::metrics::BACKUP_RUNS, "outcome" => "skipped").increment(1);
                tracing::debug!("backup run skipped: another process is running one");
            }
            Err(e) => {
                metrics::counter!(crate::metrics::BACKUP_RUNS, "outcome" => "failed").increment(1);
                tracing::warn!(
                    error = %e,
                    target = %schedule.target,
                    seconds,
                    "backup run failed; retrying at the next interval"
                );
            }
        }
    }
}

/// What a restore does.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// Only these spaces (empty: every space with a manifest).
    pub spaces: Vec<String>,
    /// The backup at this head seq (the newest such) instead of the newest
    /// backup; only with exactly one space.
    pub seq: Option<u64>,
    /// Appended to each restored space's name (`demo` + `-restored`); empty:
    /// the same name.
    pub suffix: String,
    /// Largest export accepted, bytes.
    pub max_import_bytes: u64,
}

impl Default for RestoreOptions {
    fn default() -> Self {
        RestoreOptions {
            spaces: Vec::new(),
            seq: None,
            suffix: String::new(),
            max_import_bytes: 4 << 30,
        }
    }
}

/// One space restored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    /// The space in the bucket.
    pub space: String,
    /// The space created (name + suffix).
    pub created: String,
    /// The backup it came from.
    pub entry: Entry,
}

/// What a restore did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreReport {
    /// Spaces created.
    pub restored: Vec<Restored>,
    /// Spaces not restored because a space of that name exists (the name
    /// that exists).
    pub exists: Vec<String>,
    /// Folders under the prefix without a manifest (not Arbor's, or a
    /// first upload that never finished).
    pub no_manifest: Vec<String>,
}

/// Creates each chosen space from its newest backup (or the one at
/// `options.seq`) by import, as `name + suffix`, owned by its tenant of
/// the time. A name that exists is not touched: it is reported in
/// [`RestoreReport::exists`] and the others go on. Any other failure stops
/// the restore (the spaces created so far stay).
pub async fn restore(
    db: &Db,
    target: &Target,
    options: &RestoreOptions,
) -> Result<RestoreReport, BackupError> {
    if options.seq.is_some() && options.spaces.len() != 1 {
        return Err(BackupError::Usage(
            "--seq picks a backup of one space: name exactly one --space".into(),
        ));
    }
    let chosen = if options.spaces.is_empty() {
        target.spaces().await?
    } else {
        options.spaces.clone()
    };
    let mut report = RestoreReport::default();
    for space in chosen {
        let Some(manifest) = target.manifest(&space).await? else {
            if options.spaces.is_empty() {
                tracing::warn!(%space, "no manifest in its folder: skipped");
                report.no_manifest.push(space);
                continue;
            }
            return Err(BackupError::NoBackup {
                space,
                seq: None,
                target: target.to_string(),
            });
        };
        let entry = match options.seq {
            None => manifest.backups.last(),
            Some(seq) => manifest.backups.iter().rev().find(|e| e.head_seq == seq),
        };
        let Some(entry) = entry.cloned() else {
            return Err(BackupError::NoBackup {
                space,
                seq: options.seq,
                target: target.to_string(),
            });
        };
        let created = format!("{space}{}", options.suffix);
        // Checked before the download; the import checks again at commit.
        if db.space(&created).await?.is_some() {
            tracing::warn!(%space, %created, "a space of that name exists: not restored");
            report.exists.push(created);
            continue;
        }
        let path = target.object_path(&space, &entry.object);
        let body = target
            .store
            .get(&path)
            .await
            .map_err(|e| BackupError::store("get", &path, e))?
            .into_stream();
        // The store's own error, kept typed (the import only sees text).
        let failed: Arc<Mutex<Option<object_store::Error>>> = Arc::default();
        let seen = failed.clone();
        let body = body.map(move |chunk| {
            chunk.map_err(|e| {
                let text = e.to_string();
                if let Ok(mut slot) = seen.lock() {
                    slot.get_or_insert(e);
                }
                text
            })
        });
        let owner = entry.tenant.as_deref().map(|tenant| Owner {
            tenant,
            // An operator's restore is not refused by the tenant's quota.
            max_spaces: 0,
        });
        let records: Vec<crate::import::RestoreRecord> =
            entry.restores.iter().map(|r| (r[0], r[1], r[2])).collect();
        match crate::import::restore(
            db,
            &created,
            body,
            options.max_import_bytes,
            owner.as_ref(),
            &records,
        )
        .await
        {
            Ok(_) => {}
            Err(ImportError::Db(e)) if e.reject_code() == Some(RejectCode::SpaceExists) => {
                tracing::warn!(%space, %created, "a space of that name exists: not restored");
                report.exists.push(created);
                continue;
            }
            Err(e) => {
                if let Some(source) = failed.lock().ok().and_then(|mut s| s.take()) {
                    return Err(BackupError::store("get", &path, source));
                }
                return Err(BackupError::Import {
                    space: created,
                    source: e,
                });
            }
        }
        tracing::info!(%space, %created, head_seq = entry.head_seq, object = %target.object_url(&space, &entry.object), "space restored");
        report.restored.push(Restored {
            space,
            created,
            entry,
        });
    }
    Ok(report)
}

/// The manifests of `spaces` (empty: every folder under the prefix that
/// has one), for `restore --list`.
pub async fn list(target: &Target, spaces: &[String]) -> Result<Vec<Manifest>, BackupError> {
    let names = if spaces.is_empty() {
        target.spaces().await?
    } else {
        spaces.to_vec()
    };
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        if let Some(manifest) = target.manifest(&name).await? {
            out.push(manifest);
        }
    }
    Ok(out)
}

/// `arbor-server backup`: one run now (it waits for a run of another
/// process to finish first).
#[derive(Debug, Clone, clap::Args)]
pub struct BackupCommand {
    /// The database (same syntax as `serve --database-url`).
    #[arg(long, env = "ARBOR_DATABASE_URL")]
    pub database_url: String,
    /// The bucket (`--backup-url` is required here).
    #[command(flatten)]
    pub bucket: BackupArgs,
    /// Only this space (repeatable; default: every space).
    #[arg(long = "space")]
    pub spaces: Vec<String>,
}

/// `arbor-server restore`: spaces from the bucket into the database (a new
/// one is migrated first), or `--list` what the bucket holds.
#[derive(Debug, Clone, clap::Args)]
pub struct RestoreCommand {
    /// The database to restore into (same syntax as `serve --database-url`).
    #[arg(long, env = "ARBOR_DATABASE_URL", required_unless_present = "list")]
    pub database_url: Option<String>,
    /// The bucket and prefix the backups were written to.
    #[arg(long, env = "ARBOR_BACKUP_URL")]
    pub backup_url: String,
    /// Only this space (repeatable; default: every space in the bucket).
    #[arg(long = "space")]
    pub spaces: Vec<String>,
    /// The backup at this head seq instead of the newest (one `--space`).
    #[arg(long, requires = "spaces")]
    pub seq: Option<u64>,
    /// Restore each space as its name with this appended (e.g.
    /// `-restored`), next to the space of the same name.
    #[arg(long, default_value = "")]
    pub suffix: String,
    /// Largest export accepted, bytes.
    #[arg(long, env = "ARBOR_MAX_IMPORT_BYTES", default_value_t = 4 << 30)]
    pub max_import_bytes: u64,
    /// Print the backups in the bucket (space, head seq, time, bytes,
    /// object) and restore nothing.
    #[arg(long)]
    pub list: bool,
}

impl RestoreCommand {
    /// The restore options these flags give.
    pub fn options(&self) -> RestoreOptions {
        RestoreOptions {
            spaces: self.spaces.clone(),
            seq: self.seq,
            suffix: self.suffix.clone(),
            max_import_bytes: self.max_import_bytes,
        }
    }
}
