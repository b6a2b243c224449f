//! The token keys and revocation list of a running server: HS256 secrets, a JWKS from a file or a URL (fetched, cached, fetched again on an unknown `kid`), and the revocation file, reloaded while it runs.
//!
//! Failure modes (docs/DEPLOY.md, "Keys"): a JWKS or revocation file that
//! is missing or bad at start stops the server; later, the last good copy
//! stays in force and the error is logged and counted. A JWKS URL that
//! cannot be fetched at start is not fatal (HS256 tokens still work; EdDSA
//! tokens are refused `bad_token` until a fetch succeeds, retried with
//! backoff); later failures keep the last good keys.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use arbor_shared::auth::{AuthError, Hs256Key};
use arbor_shared::keys::{Jwks, KeySet, Keys, Revocations};
use tokio::sync::{Notify, watch};

/// How often files are checked for changes.
const FILE_POLL: Duration = Duration::from_secs(1);
/// An unknown `kid` fetches the JWKS URL again at most this often.
const REFETCH_AT_MOST_EVERY: Duration = Duration::from_secs(30);
/// Longest a JWKS fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest JWKS document read.
const MAX_JWKS_BYTES: usize = 1 << 20;

use crate::metrics::RELOAD_FAILED;

/// Where EdDSA keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksSource {
    /// A JWKS file, read again when it changes.
    File(PathBuf),
    /// A JWKS URL, fetched every refresh interval and on an unknown `kid`.
    Url(String),
}

/// The key settings of `serve` beyond the current HS256 secret.
#[derive(Debug, Clone, Default)]
pub struct AuthConfig {
    /// The previous HS256 secret, still accepted during a rotation.
    pub previous: Option<Hs256Key>,
    /// Ed25519 keys.
    pub jwks: Option<JwksSource>,
    /// How often a JWKS URL is fetched again.
    pub jwks_refresh: Duration,
    /// `iss` every EdDSA token must carry.
    pub issuer: Option<String>,
    /// A value an EdDSA token's `aud` must carry.
    pub audience: Option<String>,
    /// Prefix of namespaced claims (`https://arbor.example/`).
    pub claims_prefix: Option<String>,
    /// The revocation list, read again when it changes.
    pub revocation_file: Option<PathBuf>,
}

/// Why the keys cannot be loaded at start.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A file cannot be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The JWKS does not parse.
    #[error("{0}: {1}")]
    Jwks(String, arbor_shared::keys::JwksError),
    /// The revocation list does not parse.
    #[error("{0}: {1}")]
    Revocations(String, arbor_shared::keys::RevocationsError),
}

/// The keys and revocation list in force, swapped whole on a reload.
#[derive(Debug)]
pub struct KeyStore {
    /// The key set with the settings' issuer, audience and prefix.
    keys: RwLock<Arc<Keys>>,
    revoked: RwLock<Arc<Revocations>>,
    /// Bumped at every reload of the revocation list (the `ETag` the
    /// Durable Objects ask with).
    revoked_version: std::sync::atomic::AtomicU64,
    /// Keys without any JWKS (HS256 and the claim rules): a reload adds
    /// the new JWKS to these.
    base: Keys,
    config: AuthConfig,
    /// Wakes the reloader to fetch the JWKS URL again (an unknown `kid`).
    refetch: Notify,
    last_refetch: Mutex<Option<Instant>>,
}

fn read_file(path: &PathBuf) -> Result<(Vec<u8>, Option<SystemTime>), KeyError> {
    let bytes = std::fs::read(path).map_err(|source| KeyError::Read {
        path: path.clone(),
        source,
    })?;
    let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
    Ok((bytes, modified))
}

fn modified(path: &PathBuf) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

async fn fetch_jwks(http: &reqwest::Client, url: &str) -> Result<Jwks, String> {
    let response = http
        .get(url)
        .timeout(FETCH_TIMEOUT)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("{url}: HTTP {}", response.status()));
    }
    let body = response.bytes().await.map_err(|e| e.to_string())?;
    if body.len() > MAX_JWKS_BYTES {
        return Err(format!("{url}: larger than {MAX_JWKS_BYTES} bytes"));
    }
    Jwks::parse(&body).map_err(|e| format!("{url}: {e}"))
}

impl KeyStore {
    /// Loads the keys (`current` first) and the revocation list; fails on a
    /// file that is missing or bad. A JWKS URL is fetched once here; if it
    /// fails the server starts without its keys (see the module docs).
    pub async fn load(current: Hs256Key, config: AuthConfig) -> Result<KeyStore, KeyError> {
        let mut base = Keys::hs256(current);
        if let Some(previous) = config.previous.clone() {
            base = base.with_previous(previous);
        }
        base.issuer = config.issuer.clone();
        base.audience = config.audience.clone();
        base.claims_prefix = config.claims_prefix.clone();
        let jwks = match &config.jwks {
            None => None,
            Some(JwksSource::File(path)) => {
                let (bytes, _) = read_file(path)?;
                Some(
                    Jwks::parse(&bytes)
                        .map_err(|e| KeyError::Jwks(path.display().to_string(), e))?,
                )
            }
            Some(JwksSource::Url(url)) => match fetch_jwks(&reqwest::Client::new(), url).await {
                Ok(jwks) => Some(jwks),
                Err(e) => {
                    tracing::warn!(error = %e, "JWKS not fetched at start: EdDSA tokens are refused until it is");
                    metrics::counter!(RELOAD_FAILED, "what" => "jwks").increment(1);
                    None
                }
            },
        };
        let revoked = match &config.revocation_file {
            None => Revocations::default(),
            Some(path) => {
                let (bytes, _) = read_file(path)?;
                Revocations::parse(&bytes)
                    .map_err(|e| KeyError::Revocations(path.display().to_string(), e))?
            }
        };
        let keys = match &jwks {
            Some(j) => base.clone().with_jwks(j),
            None => base.clone(),
        };
        if let Some(j) = &jwks {
            tracing::info!(keys = j.len(), skipped = j.skipped, "JWKS loaded");
        }
        Ok(KeyStore {
            keys: RwLock::new(Arc::new(keys)),
            revoked: RwLock::new(Arc::new(revoked)),
            revoked_version: std::sync::atomic::AtomicU64::new(1),
            base,
            config,
            refetch: Notify::new(),
            last_refetch: Mutex::new(None),
        })
    }

    /// The key set in force, which asks for a JWKS fetch when a token names
    /// a `kid` it does not hold.
    pub fn keys(&self) -> Watched<'_> {
        let keys = self
            .keys
            .read()
            .map_or_else(|p| p.into_inner().clone(), |k| k.clone());
        Watched { keys, store: self }
    }

    /// The revocation list in force.
    pub fn revoked(&self) -> Arc<Revocations> {
        self.revoked
            .read()
            .map_or_else(|p| p.into_inner().clone(), |r| r.clone())
    }

    fn set_jwks(&self, jwks: &Jwks) {
        let keys = Arc::new(self.base.clone().with_jwks(jwks));
        match self.keys.write() {
            Ok(mut k) => *k = keys,
            Err(p) => *p.into_inner() = keys,
        }
        tracing::info!(keys = jwks.len(), skipped = jwks.skipped, "JWKS loaded");
    }

    fn set_revoked(&self, list: Arc<Revocations>) {
        match self.revoked.write() {
            Ok(mut r) => *r = list,
            Err(p) => *p.into_inner() = list,
        }
        self.revoked_version
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// The revocation list in force and its version (bumped at each reload).
    pub fn revoked_with_version(&self) -> (Arc<Revocations>, u64) {
        let version = self
            .revoked_version
            .load(std::sync::atomic::Ordering::Relaxed);
        (self.revoked(), version)
    }

    /// Reloads until `stop`: the files when they change (checked every
    /// second), the JWKS URL every refresh interval and when asked. A new
    /// revocation list goes to `revoked` (the rooms close what it refuses).
    pub async fn run<F, Fut>(self: Arc<Self>, revoked: F, mut stop: watch::Receiver<bool>)
    where
        F: Fn(Arc<Revocations>) -> Fut + Send,
        Fut: std::future::Future<Output = ()> + Send,
    {
        let http = reqwest::Client::new();
        let mut jwks_seen = match &self.config.jwks {
            Some(JwksSource::File(p)) => modified(p),
            _ => None,
        };
        let mut revoked_seen = self.config.revocation_file.as_ref().and_then(modified);
        let refresh = self.config.jwks_refresh.max(Duration::from_secs(1));
        // A URL that failed at start is tried again soon, then backs off.
        let mut url_next = Instant::now() + refresh;
        let mut url_backoff = Duration::from_secs(1);
        let mut url_ok = matches!(&self.config.jwks, Some(JwksSource::Url(_)))
            && self.keys().keys.ed25519_len() > 0;
        if !url_ok {
            url_next = Instant::now() + url_backoff;
        }
        let mut poll = tokio::time::interval(FILE_POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let asked = tokio::select! {
                _ = poll.tick() => false,
                () = self.refetch.notified() => true,
                _ = stop.wait_for(|s| *s) => return,
            };
            if let Some(JwksSource::File(path)) = &self.config.jwks {
                let now = modified(path);
                if now != jwks_seen {
                    jwks_seen = now;
                    match read_file(path).map(|(b, _)| Jwks::parse(&b)) {
                        Ok(Ok(jwks)) => self.set_jwks(&jwks),
                        Ok(Err(e)) => reload_failed("jwks", &e.to_string()),
                        Err(e) => reload_failed("jwks", &e.to_string()),
                    }
                }
            }
            if let Some(JwksSource::Url(url)) = &self.config.jwks
                && (asked || Instant::now() >= url_next)
            {
                match fetch_jwks(&http, url).await {
                    Ok(jwks) => {
                        self.set_jwks(&jwks);
                        url_ok = true;
                        url_backoff = Duration::from_secs(1);
                        url_next = Instant::now() + refresh;
                    }
                    Err(e) => {
                        reload_failed("jwks", &e);
                        url_next = Instant::now() + if url_ok { refresh } else { url_backoff };
                        url_backoff = (url_backoff * 2).min(refresh);
                    }
                }
            }
            if let Some(path) = &self.config.revocation_file {
                let now = modified(path);
                if now != revoked_seen {
                    revoked_seen = now;
                    match read_file(path).map(|(b, _)| Revocations::parse(&b)) {
                        Ok(Ok(list)) => {
                            let list = Arc::new(list);
                            tracing::info!(entries = list.len(), "revocation list loaded");
                            self.set_revoked(list.clone());
                            revoked(list).await;
                        }
                        Ok(Err(e)) => reload_failed("revocations", &e.to_string()),
                        Err(e) => reload_failed("revocations", &e.to_string()),
                    }
                }
            }
        }
    }
}

fn reload_failed(what: &'static str, error: &str) {
    tracing::error!(
        what,
        error,
        "reload failed; the last good copy stays in force"
    );
    metrics::counter!(RELOAD_FAILED, "what" => what).increment(1);
}

/// The key set in force, held for one verification.
pub struct Watched<'a> {
    keys: Arc<Keys>,
    store: &'a KeyStore,
}

impl KeySet for Watched<'_> {
    fn check(
        &self,
        alg: &str,
        kid: Option<&str>,
        signing_input: &[u8],
        signature: &[u8],
    ) -> Result<(), AuthError> {
        let result = self.keys.check(alg, kid, signing_input, signature);
        if matches!(result, Err(AuthError::UnknownKey(_)))
            && matches!(self.store.config.jwks, Some(JwksSource::Url(_)))
        {
            // A key rotated in at the identity provider: fetch the JWKS
            // again, at most every REFETCH_AT_MOST_EVERY (a stream of
            // tokens with made-up kids must not become a stream of fetches).
            let mut last = self
                .store
                .last_refetch
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if last.is_none_or(|t| t.elapsed() >= REFETCH_AT_MOST_EVERY) {
                *last = Some(Instant::now());
                self.store.refetch.notify_one();
            }
        }
        result
    }

    fn check_claims(
        &self,
        alg: &str,
        claims: &mut serde_json::Map<String, serde_json::Value>,
    ) -> Result<(), AuthError> {
        self.keys.check_claims(alg, claims)
    }
}
