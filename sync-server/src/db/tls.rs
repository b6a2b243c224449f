//! Postgres over TLS: libpq's `sslmode`, `sslrootcert`, `sslcert` and `sslkey` read from a database URL and carried out with rustls.
//!
//! tokio-postgres itself knows `sslmode` only up to `require` and refuses
//! the other libpq settings as unknown, so [`parse_database_url`] takes them
//! out of the URL first and describes them as a [`PgTls`]; the rest parses
//! as before. The rules (docs/DEPLOY.md):
//!
//! | `sslmode` | encrypted | certificate checked |
//! |---|---|---|
//! | `disable` | never | - |
//! | `allow`, `prefer` (default) | when the server offers TLS | no (`sslrootcert` file given: chain) |
//! | `require` | always (else refused) | no (`sslrootcert` file given: chain) |
//! | `verify-ca` | always | chain to a trusted root |
//! | `verify-full` | always | chain, and the host name (or IP) in the certificate |
//!
//! Trusted roots: the `sslrootcert` PEM file, or the system store with
//! `sslrootcert=system`; without `sslrootcert`, `~/.postgresql/root.crt`
//! when it exists, else the system store. Unix sockets never use TLS (as in
//! libpq; Postgres does not offer it there).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use percent_encoding::percent_decode_str;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ClientConfig, WebPkiServerVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// Why a database URL's TLS settings cannot be used (said at startup).
#[derive(Debug, thiserror::Error)]
pub enum PgTlsError {
    /// The URL does not parse, or names a setting value this server does not know.
    #[error("database url: {0}")]
    Url(String),
    /// A certificate or key file cannot be read.
    #[error("{what} {path}: {source}")]
    Read {
        /// `sslrootcert`, `sslcert` or `sslkey`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file holds no usable PEM certificate or key.
    #[error("{what} {path}: {message}")]
    Pem {
        /// `sslrootcert`, `sslcert` or `sslkey`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// `sslrootcert=system` (or the default) found no CA certificates.
    #[error("sslrootcert=system: no CA certificates in the system store")]
    NoSystemRoots,
    /// Only one of `sslcert` and `sslkey` is set.
    #[error("sslcert and sslkey go together: set both or neither")]
    ClientCertHalf,
    /// rustls refused the configuration (an unusable key, say).
    #[error("tls: {0}")]
    Rustls(#[from] rustls::Error),
}

/// What is checked of the server's certificate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Verify {
    /// `prefer`, `require` (and `allow`, `disable`): encrypted, certificate
    /// not checked, unless an `sslrootcert` file is given (then as [`Verify::Ca`]).
    #[default]
    Encrypt,
    /// `verify-ca`: the chain must lead to a trusted root.
    Ca,
    /// `verify-full`: the chain, and the host name must be the certificate's.
    Full,
}

/// Where trusted roots come from (`sslrootcert`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootCert {
    /// `sslrootcert=system`: the operating system's store.
    System,
    /// A PEM file of one or more CA certificates.
    File(PathBuf),
}

/// The TLS settings of a database URL (see the module docs for the rules).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PgTls {
    /// What is checked of the server's certificate.
    pub verify: Verify,
    /// `sslrootcert`; `None`: `~/.postgresql/root.crt` if it exists, else the system store.
    pub root_cert: Option<RootCert>,
    /// `sslcert` and `sslkey`: a client certificate and its key (PEM), for
    /// servers that ask for one. Both or neither.
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

/// Settings taken out of the URL before tokio-postgres parses it.
const OURS: [&str; 4] = ["sslmode", "sslrootcert", "sslcert", "sslkey"];

/// Parses a database URL (`postgres://...?...` or libpq `key=value` form)
/// into the tokio-postgres config and its TLS settings.
pub fn parse_database_url(url: &str) -> Result<(tokio_postgres::Config, PgTls), PgTlsError> {
    let url = url.trim();
    let (rest, ours) = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        split_uri(url)?
    } else {
        split_key_values(url)?
    };
    let mut tls = PgTls::default();
    let mut sslmode = None;
    let (mut cert, mut key) = (None, None);
    for (k, v) in ours {
        match k.as_str() {
            "sslmode" => {
                let (mode, verify) = match v.as_str() {
                    "disable" => ("disable", Verify::Encrypt),
                    // tokio-postgres has no `allow` (plain first, then
                    // TLS); `prefer` is the closer of the two it has.
                    "allow" | "prefer" => ("prefer", Verify::Encrypt),
                    "require" => ("require", Verify::Encrypt),
                    "verify-ca" => ("require", Verify::Ca),
                    "verify-full" => ("require", Verify::Full),
                    other => {
                        return Err(PgTlsError::Url(format!(
                            "sslmode={other}: expected disable, allow, prefer, require, verify-ca or verify-full"
                        )));
                    }
                };
                sslmode = Some(mode);
                tls.verify = verify;
            }
            "sslrootcert" => {
                tls.root_cert = Some(if v == "system" {
                    RootCert::System
                } else {
                    RootCert::File(PathBuf::from(v))
                });
            }
            "sslcert" => cert = Some(PathBuf::from(v)),
            _ => key = Some(PathBuf::from(v)),
        }
    }
    tls.client_cert = match (cert, key) {
        (Some(c), Some(k)) => Some((c, k)),
        (None, None) => None,
        _ => return Err(PgTlsError::ClientCertHalf),
    };
    let mut config = rest
        .parse::<tokio_postgres::Config>()
        .map_err(|e| PgTlsError::Url(e.to_string()))?;
    if let Some(mode) = sslmode {
        config.ssl_mode(match mode {
            "disable" => tokio_postgres::config::SslMode::Disable,
            "require" => tokio_postgres::config::SslMode::Require,
            _ => tokio_postgres::config::SslMode::Prefer,
        });
    }
    Ok((config, tls))
}

/// A `postgres://` URI without [`OURS`] in its query, and their values.
fn split_uri(url: &str) -> Result<(String, Vec<(String, String)>), PgTlsError> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_string(), Vec::new()));
    };
    let mut kept = Vec::new();
    let mut ours = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let decode = |s: &str| {
            percent_decode_str(s)
                .decode_utf8()
                .map(|c| c.into_owned())
                .map_err(|_| PgTlsError::Url(format!("`{pair}` is not UTF-8 once decoded")))
        };
        let key = decode(k)?;
        if OURS.contains(&key.as_str()) {
            ours.push((key, decode(v)?));
        } else {
            kept.push(pair);
        }
    }
    let rest = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((rest, ours))
}

/// A libpq `key=value` string without [`OURS`], and their values. Values
/// may be single-quoted, with `\'` and `\\` escapes (libpq's rules).
fn split_key_values(s: &str) -> Result<(String, Vec<(String, String)>), PgTlsError> {
    let mut kept = Vec::new();
    let mut ours = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            break;
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(PgTlsError::Url(format!("`{key}` has no `=` and value")));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    Some('\'') => break,
                    Some('\\') => value.extend(chars.next()),
                    Some(c) => value.push(c),
                    None => {
                        return Err(PgTlsError::Url(format!("`{key}`: unterminated quote")));
                    }
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
        }
        if OURS.contains(&key.as_str()) {
            ours.push((key, value));
        } else {
            let quoted = value.replace('\\', "\\\\").replace('\'', "\\'");
            kept.push(format!("{key}='{quoted}'"));
        }
    }
    Ok((kept.join(" "), ours))
}

impl PgTls {
    /// What is checked in the end: an `sslrootcert` file upgrades
    /// [`Verify::Encrypt`] to [`Verify::Ca`], as in libpq.
    pub fn effective_verify(&self) -> Verify {
        match (self.verify, &self.root_cert) {
            (Verify::Encrypt, Some(RootCert::File(_))) => Verify::Ca,
            (v, _) => v,
        }
    }

    /// The rustls client configuration these settings describe; reads the
    /// certificate files (so a missing or unreadable file fails here, at
    /// startup, not at the first connection).
    pub fn client_config(&self) -> Result<ClientConfig, PgTlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier: Arc<dyn ServerCertVerifier> = match self.effective_verify() {
            Verify::Encrypt => Arc::new(EncryptOnly {
                algorithms: provider.signature_verification_algorithms,
            }),
            Verify::Ca => Arc::new(ChainOnly(self.webpki(&provider)?)),
            Verify::Full => self.webpki(&provider)?,
        };
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        Ok(match &self.client_cert {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let chain = read_certs("sslcert", cert)?;
                let key = PrivateKeyDer::from_pem_file(key).map_err(|e| PgTlsError::Pem {
                    what: "sslkey",
                    path: key.clone(),
                    message: e.to_string(),
                })?;
                builder.with_client_auth_cert(chain, key)?
            }
        })
    }

    /// The connector handed to tokio-postgres and the pool.
    pub fn connector(&self) -> Result<tokio_postgres_rustls::MakeRustlsConnect, PgTlsError> {
        Ok(tokio_postgres_rustls::MakeRustlsConnect::new(
            self.client_config()?,
        ))
    }

    fn webpki(
        &self,
        provider: &Arc<CryptoProvider>,
    ) -> Result<Arc<WebPkiServerVerifier>, PgTlsError> {
        let mut roots = RootCertStore::empty();
        let default_file = std::env::var_os("HOME")
            .map(|h| Path::new(&h).join(".postgresql/root.crt"))
            .filter(|p| p.exists());
        match (&self.root_cert, default_file.as_ref()) {
            (Some(RootCert::File(path)), _) | (None, Some(path)) => {
                for cert in read_certs("sslrootcert", path)? {
                    roots.add(cert)?;
                }
            }
            (Some(RootCert::System), _) | (None, None) => {
                // Unreadable entries of the store are skipped; an empty
                // store is the error.
                let found = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(found.certs);
                if roots.is_empty() {
                    return Err(PgTlsError::NoSystemRoots);
                }
            }
        }
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| PgTlsError::Rustls(rustls::Error::General(e.to_string())))
    }
}

fn read_certs(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, PgTlsError> {
    let bytes = std::fs::read(path).map_err(|source| PgTlsError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PgTlsError::Pem {
            what,
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(PgTlsError::Pem {
            what,
            path: path.to_path_buf(),
            message: "no PEM certificate in it".into(),
        });
    }
    Ok(certs)
}

/// `sslmode=require` without a root file: any certificate is accepted (an
/// encrypted channel, no identity), as libpq does. Handshake signatures are
/// still verified, so the channel is bound to the certificate presented.
#[derive(Debug)]
struct EncryptOnly {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// `sslmode=verify-ca`: the full WebPKI check except the name (a managed
/// database reached by an address its certificate does not list).
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // The name is checked after the chain, so a name error means the
        // chain was good.
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn uri_settings_are_taken_out_and_the_rest_parses() {
        let (config, tls) = parse_database_url(
            "postgres://u:p@db.example.com:6543/arbor?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&application_name=x",
        )
        .unwrap();
        assert_eq!(tls.verify, Verify::Full);
        assert_eq!(tls.root_cert, Some(RootCert::File("/etc/ca.pem".into())));
        assert_eq!(
            config.get_ssl_mode(),
            tokio_postgres::config::SslMode::Require
        );
        assert_eq!(config.get_application_name(), Some("x"));
        assert_eq!(config.get_dbname(), Some("arbor"));
    }

    #[test]
    fn key_value_settings_keep_quoting() {
        let (config, tls) = parse_database_url(
            r"host=db port=5432 password='it\'s a \\ x' sslmode = verify-ca sslrootcert='/a b/ca.pem' user=x",
        )
        .unwrap();
        assert_eq!(config.get_password(), Some(r"it's a \ x".as_bytes()));
        assert_eq!(config.get_user(), Some("x"));
        assert_eq!(
            config.get_ssl_mode(),
            tokio_postgres::config::SslMode::Require
        );
        assert_eq!(tls.verify, Verify::Ca);
        assert_eq!(tls.root_cert, Some(RootCert::File("/a b/ca.pem".into())));
    }

    #[test]
    fn a_root_file_makes_require_check_the_chain() {
        let (_, tls) =
            parse_database_url("postgres://h/d?sslmode=require&sslrootcert=/ca.pem").unwrap();
        assert_eq!(tls.effective_verify(), Verify::Ca);
        let (_, tls) =
            parse_database_url("postgres://h/d?sslmode=require&sslrootcert=system").unwrap();
        assert_eq!(tls.effective_verify(), Verify::Encrypt);
        let (config, tls) = parse_database_url("host=/run/pg dbname=d").unwrap();
        assert_eq!(tls, PgTls::default());
        assert_eq!(
            config.get_ssl_mode(),
            tokio_postgres::config::SslMode::Prefer
        );
    }

    #[test]
    fn bad_settings_are_refused() {
        for url in [
            "postgres://h/d?sslmode=verify",
            "postgres://h/d?sslcert=/c.pem",
            "host=h sslkey=/k.pem",
            "host='h",
            "postgres://h/d?bogus=1",
        ] {
            assert!(parse_database_url(url).is_err(), "{url}");
        }
        let missing = PgTls {
            verify: Verify::Full,
            root_cert: Some(RootCert::File("/nonexistent/ca.pem".into())),
            client_cert: None,
        };
        let e = missing.client_config().unwrap_err().to_string();
        assert!(e.contains("sslrootcert /nonexistent/ca.pem"), "{e}");
    }
}
