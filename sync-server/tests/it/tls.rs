//! Postgres over TLS (issue 18): a cluster with `ssl=on` and a CA made here
//! with `openssl`; each `sslmode` connects or is refused as libpq would, and
//! a whole server runs on a `verify-full` URL.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use arbor_shared::auth::Role;
use arbor_sync_server::Config;
use arbor_sync_server::db::{Db, parse_database_url};
use arbor_testkit::{PgCluster, PgOptions, USER};

use crate::http::{Server, key, token};

/// The cluster and the folder of its certificates: `ca.crt` (signed the
/// server's), `other-ca.crt` (did not), `server.crt` (names `localhost`
/// and 127.0.0.1), `client.crt`/`client.key` (signed by `ca`).
struct Tls {
    cluster: PgCluster,
    certs: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl (scripts/ensure-postgres.sh installs it)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA (`{name}.crt`, `{name}.key`).
fn make_ca(dir: &Path, name: &str) {
    let (key, crt) = (format!("{name}.key"), format!("{name}.crt"));
    let subject = format!("/CN=arbor test {name}");
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &crt,
            "-days",
            "2",
            "-subj",
            &subject,
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
}

/// A leaf `{name}.crt`/`{name}.key` signed by `ca` with these extensions.
fn make_leaf(dir: &Path, ca: &str, name: &str, cn: &str, ext: &str) {
    let (key, csr, crt, ext_file) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.crt"),
        format!("{name}.ext"),
    );
    std::fs::write(dir.join(&ext_file), ext).unwrap();
    let subject = format!("/CN={cn}");
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            &subject,
        ],
    );
    let (ca_crt, ca_key) = (format!("{ca}.crt"), format!("{ca}.key"));
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca_crt,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-out",
            &crt,
            "-days",
            "2",
            "-extfile",
            &ext_file,
        ],
    );
}

fn tls() -> &'static Tls {
    static TLS: OnceLock<Tls> = OnceLock::new();
    TLS.get_or_init(|| {
        let certs = std::env::temp_dir().join(format!("arbor-tls-{}", std::process::id()));
        std::fs::create_dir_all(&certs).unwrap();
        make_ca(&certs, "ca");
        make_ca(&certs, "other-ca");
        make_leaf(
            &certs,
            "ca",
            "server",
            "localhost",
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
             keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
        );
        make_leaf(
            &certs,
            "ca",
            "client",
            USER,
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n\
             extendedKeyUsage=clientAuth\n",
        );
        let cluster = PgCluster::start_tls(
            PgOptions::default(),
            &certs.join("server.crt"),
            &certs.join("server.key"),
            &certs.join("ca.crt"),
        )
        .unwrap();
        Tls { cluster, certs }
    })
}

impl Tls {
    fn url(&self, host: &str, params: &str) -> String {
        let port = self.cluster.tcp_port().unwrap();
        format!("postgres://{USER}@{host}:{port}/postgres?{params}")
    }

    fn path(&self, file: &str) -> String {
        self.certs.join(file).display().to_string()
    }
}

/// Connects with `url` through the server's own pool; `Ok(encrypted)`, or
/// the error's text.
async fn connect(url: &str) -> Result<bool, String> {
    let (config, tls) = parse_database_url(url).map_err(|e| e.to_string())?;
    let db = Db::with_tls(config, &tls, 1).map_err(|e| e.to_string())?;
    let client = db.client().await.map_err(|e| e.to_string())?;
    let row = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .map_err(|e| e.to_string())?;
    Ok(row.get(0))
}

#[tokio::test]
async fn each_sslmode_connects_or_is_refused_as_libpq_would() {
    let t = tls();
    let ca = t.path("ca.crt");
    let other = t.path("other-ca.crt");
    // The right CA, the right name (a DNS name and an IP address).
    for host in ["localhost", "127.0.0.1"] {
        let url = t.url(host, &format!("sslmode=verify-full&sslrootcert={ca}"));
        assert_eq!(connect(&url).await, Ok(true), "{url}");
    }
    // The right CA, reached by a name the certificate does not hold:
    // verify-full refuses it, verify-ca accepts it.
    let port = t.cluster.tcp_port().unwrap();
    let wrong_name = |mode: &str| {
        format!(
            "host=db.invalid hostaddr=127.0.0.1 port={port} user={USER} dbname=postgres \
             sslmode={mode} sslrootcert='{ca}'"
        )
    };
    let refused = connect(&wrong_name("verify-full")).await.unwrap_err();
    assert!(
        refused.contains("certificate not valid for name \"db.invalid\""),
        "{refused}"
    );
    assert_eq!(connect(&wrong_name("verify-ca")).await, Ok(true));
    // Another CA: refused by verify-ca and verify-full, and by require when
    // the root file is given (libpq's rule).
    for mode in ["verify-full", "verify-ca", "require"] {
        let url = t.url("localhost", &format!("sslmode={mode}&sslrootcert={other}"));
        let refused = connect(&url).await.unwrap_err();
        assert!(refused.contains("UnknownIssuer"), "{mode}: {refused}");
    }
    // The system store does not hold the test CA.
    let url = t.url("localhost", "sslmode=verify-full&sslrootcert=system");
    match connect(&url).await {
        Err(e) => assert!(
            e.contains("UnknownIssuer") || e.contains("no CA certificates"),
            "{e}"
        ),
        Ok(_) => panic!("a test CA verified against the system store"),
    }
    // Encryption without a check; and no TLS at all when disabled.
    assert_eq!(
        connect(&t.url("localhost", "sslmode=require")).await,
        Ok(true)
    );
    assert_eq!(
        connect(&t.url("localhost", "sslmode=prefer")).await,
        Ok(true)
    );
    assert_eq!(
        connect(&t.url("localhost", "sslmode=disable")).await,
        Ok(false)
    );
    // A client certificate is presented when asked for (Postgres shows it).
    let url = t.url(
        "localhost",
        &format!(
            "sslmode=verify-full&sslrootcert={ca}&sslcert={}&sslkey={}",
            t.path("client.crt"),
            t.path("client.key")
        ),
    );
    let (config, settings) = parse_database_url(&url).unwrap();
    let db = Db::with_tls(config, &settings, 1).unwrap();
    let row = db
        .client()
        .await
        .unwrap()
        .query_one(
            "SELECT client_dn FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, Option<String>>(0), Some(format!("/CN={USER}")));
    // The unix socket of the same cluster: never TLS, whatever the mode.
    let socket = format!(
        "host={} port={port} user={USER} dbname=postgres",
        t.cluster.socket_dir().display()
    );
    assert_eq!(connect(&socket).await, Ok(false));
    // A root file that is not there fails before any connection, saying which.
    let url = t.url(
        "localhost",
        "sslmode=verify-full&sslrootcert=/nonexistent/ca.pem",
    );
    let e = connect(&url).await.unwrap_err();
    assert!(e.contains("sslrootcert /nonexistent/ca.pem"), "{e}");
}

#[tokio::test]
async fn a_server_runs_on_a_verify_full_url_and_every_connection_is_encrypted() {
    let t = tls();
    let admin = t.cluster.connect("postgres").await.unwrap();
    admin
        .batch_execute("CREATE DATABASE tls_server")
        .await
        .unwrap();
    let url = format!(
        "postgres://{USER}@localhost:{}/tls_server?sslmode=verify-full&sslrootcert={}",
        t.cluster.tcp_port().unwrap(),
        t.path("ca.crt")
    );
    let (database, database_tls) = parse_database_url(&url).unwrap();
    let s = Server::start_config(Config {
        db_pool: 2,
        horizon_keep: None,
        database_tls,
        ..Config::new(database, key())
    })
    .await;
    s.create_space("tls", &token("tls", Role::Admin, None, 60))
        .await;
    let row = admin
        .query_one(
            "SELECT count(*) FILTER (WHERE s.ssl), count(*) FILTER (WHERE NOT s.ssl) \
             FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) WHERE a.datname = 'tls_server'",
            &[],
        )
        .await
        .unwrap();
    let (encrypted, plain): (i64, i64) = (row.get(0), row.get(1));
    assert!(encrypted >= 1, "no connection of the server seen");
    assert_eq!(plain, 0);
    s.stop().await;
}
