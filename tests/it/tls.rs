//! TLS to PostgreSQL against a cluster that accepts only `hostssl`
//! (scram, plus one `cert` line), with certificates made here by openssl.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use vigil::cli::pgcluster::Cluster;
use vigil::config::conninfo::parse;
use vigil::pgconn::{ConnectError, HandshakeError};

use crate::harness::*;

/// The role that logs in with a client certificate (its CN).
const CERT_USER: &str = "certuser";

struct TlsServer {
    cluster: Cluster,
    /// CA, client certificate and keys, as a client keeps them.
    certs: PathBuf,
}

static SERVER: OnceLock<TlsServer> = OnceLock::new();

extern "C" fn destroy_tls_cluster() {
    if let Some(server) = SERVER.get() {
        server.cluster.destroy();
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub(crate) fn make_ca(dir: &Path, name: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.crt"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
}

/// A leaf certificate `name.crt`/`name.key` signed by `ca`.
pub(crate) fn make_leaf(dir: &Path, ca: &str, name: &str, cn: &str, san: &str) {
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            &format!("/CN={cn}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
        ],
    );
    let ext = format!(
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\n{san}"
    );
    std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-days",
            "2",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.crt"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-out",
            &format!("{name}.crt"),
            "-extfile",
            &format!("{name}.ext"),
        ],
    );
    set_mode(&dir.join(format!("{name}.key")), 0o600);
}

pub(crate) fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// The server's files belong to the server's user, as PostgreSQL demands.
pub(crate) fn give_to_postgres(path: &Path) {
    if nix::unistd::geteuid().is_root() {
        let user = nix::unistd::User::from_name("postgres").unwrap().unwrap();
        nix::unistd::chown(path, Some(user.uid), Some(user.gid)).unwrap();
    }
}

fn tls_server() -> &'static TlsServer {
    SERVER.get_or_init(|| {
        let certs = tempfile::Builder::new()
            .prefix("vigil-it-tls-")
            .tempdir()
            .unwrap()
            .keep();
        make_ca(&certs, "ca");
        make_ca(&certs, "other-ca");
        make_leaf(
            &certs,
            "ca",
            "server",
            "localhost",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
        );
        make_leaf(&certs, "ca", "client", CERT_USER, "");

        let mut cluster = own_cluster();
        cluster
            .psql(
                "postgres",
                &format!("CREATE ROLE {CERT_USER} LOGIN SUPERUSER"),
            )
            .unwrap();
        cluster.stop().unwrap();
        let data = cluster.data_dir();
        for (from, to) in [
            ("server.crt", "server.crt"),
            ("server.key", "server.key"),
            ("ca.crt", "root.crt"),
        ] {
            std::fs::copy(certs.join(from), data.join(to)).unwrap();
            give_to_postgres(&data.join(to));
        }
        set_mode(&data.join("server.key"), 0o600);
        let mut conf = std::fs::read_to_string(data.join("postgresql.conf")).unwrap();
        conf.push_str(
            "\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\nssl_ca_file = 'root.crt'\nlog_connections = on\n",
        );
        std::fs::write(data.join("postgresql.conf"), conf).unwrap();
        std::fs::write(
            data.join("pg_hba.conf"),
            format!(
                "local all all scram-sha-256\nhostssl all {CERT_USER} 127.0.0.1/32 cert\nhostssl all all 127.0.0.1/32 scram-sha-256\n"
            ),
        )
        .unwrap();
        cluster.start().unwrap();
        unsafe { libc::atexit(destroy_tls_cluster) };
        TlsServer { cluster, certs }
    })
}

impl TlsServer {
    fn port(&self) -> u16 {
        self.cluster.port()
    }

    fn file(&self, name: &str) -> String {
        self.certs.join(name).display().to_string()
    }

    /// A fresh database on the TLS cluster.
    fn database(&self, prefix: &str) -> String {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let name = format!(
            "{prefix}_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        self.cluster
            .psql("postgres", &format!("CREATE DATABASE {name}"))
            .unwrap();
        name
    }

    /// `postgres://postgres@127.0.0.1:PORT/db?query`.
    fn url(&self, db: &str, query: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}?{query}", self.port())
    }

    fn verify_full(&self) -> String {
        format!("sslmode=verify-full&sslrootcert={}", self.file("ca.crt"))
    }

    fn server_log(&self) -> String {
        let root = self.cluster.data_dir();
        std::fs::read_to_string(root.parent().unwrap().join("postgres.log")).unwrap()
    }
}

const ENV: [(&str, &str); 3] = [
    ("TEST_PGPASSWORD", PASSWORD),
    ("JOB_PGPASSWORD", PASSWORD),
    ("PGPASSWORD", PASSWORD),
];

fn job_config(repo: &Path, source_url: &str, database: &str) -> String {
    format!(
        "[repositories.local]\nscheme = \"fs\"\noptions = {{ root = \"{}\" }}\n\
         [jobs.orders]\nkind = \"postgres\"\nsource = \"{source_url}\"\npassword = \"${{JOB_PGPASSWORD}}\"\n\
         databases = [\"{database}\"]\nrepository = \"local\"\nevery = \"1h\"\ncatch_up = false\n",
        repo.display()
    )
}

/// Every session the server authorized on `database` was encrypted (the
/// server logs "SSL enabled" in the line of each TLS session), and there
/// was at least one.
fn all_sessions_encrypted(server: &TlsServer, database: &str) -> usize {
    let log = server.server_log();
    let needle = format!("database={database} ");
    let sessions: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("connection authorized") && l.contains(&needle))
        .collect();
    assert!(!sessions.is_empty(), "no session on {database}:\n{log}");
    for line in &sessions {
        assert!(line.contains("SSL enabled"), "clear text session: {line}");
    }
    sessions.len()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn connect(conninfo: &str) -> Result<tokio_postgres::Client, ConnectError> {
    let mut info = parse(conninfo).unwrap();
    if info.pg.get_password().is_none() {
        info.pg.password(PASSWORD);
    }
    runtime().block_on(async {
        let client = vigil::pgconn::connect(&info).await?;
        let encrypted = vigil::pgconn::is_encrypted(&client).await.unwrap();
        assert!(encrypted, "pg_stat_ssl says this session is clear text");
        Ok(client)
    })
}

#[test]
fn verify_full_carries_catalog_backup_restore_and_health() {
    let server = tls_server();
    let catalog = server.database("cat");
    let source = server.database("src");
    server
        .cluster
        .psql(
            &source,
            "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 1000);",
        )
        .unwrap();
    let catalog_url = server.url(&catalog, &server.verify_full());
    let dir = tempfile::tempdir().unwrap();
    let extra = job_config(
        &dir.path().join("repo"),
        &server.url(&source, &server.verify_full()),
        &source,
    );
    let config = dir.path().join("config.toml");
    std::fs::write(&config, config_text(dir.path(), &catalog_url, &extra)).unwrap();

    let (code, out, err) = vigil_cli(&config, &["migrate"], &ENV);
    assert_eq!(code, 0, "migrate over TLS:\n{out}\n{err}");
    let (code, out, err) = vigil_cli(&config, &["backup", "orders"], &ENV);
    assert_eq!(code, 0, "backup over TLS:\n{out}\n{err}");
    assert!(out.contains("committed"), "{out}");
    all_sessions_encrypted(server, &source);

    let target = format!("{source}_restored");
    let to = server.url(&target, &server.verify_full());
    let (code, out, err) = vigil_cli(
        &config,
        &["restore", "orders", "--latest", "--to", &to, "--create"],
        &ENV,
    );
    assert_eq!(code, 0, "restore over TLS:\n{out}\n{err}");
    assert_eq!(
        server
            .cluster
            .psql(&target, "SELECT count(*) FROM t")
            .unwrap(),
        "1000"
    );
    all_sessions_encrypted(server, &target);

    let options = VigilOptions {
        env: ENV
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..VigilOptions::default()
    };
    let vigil = Vigil::start_with(&catalog_url, &extra, options);
    vigil.wait_ready();
    vigil.wait_for("both checks", Duration::from_secs(30), || {
        let detailed = vigil.get("/health/detailed").json();
        detailed["checks"]["orders:source"][0]["vigil"]["encrypted"].is_boolean()
            && detailed["checks"]["catalog:responseTime"][0]["vigil"]["encrypted"].is_boolean()
    });
    let detailed = vigil.get("/health/detailed").json();
    for check in ["orders:source", "catalog:responseTime"] {
        assert_eq!(
            detailed["checks"][check][0]["vigil"]["encrypted"], true,
            "{check}: {detailed:#}"
        );
    }
    // The daemon's pool, seen by the server.
    let sessions = server
        .cluster
        .psql(
            "postgres",
            &format!(
                "SELECT count(*) FILTER (WHERE s.ssl) || ' ' || count(*) FILTER (WHERE NOT s.ssl) \
                 FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) WHERE a.datname = '{catalog}'"
            ),
        )
        .unwrap();
    let (encrypted, clear) = sessions.split_once(' ').unwrap();
    assert!(encrypted.parse::<u32>().unwrap() >= 1, "{sessions}");
    assert_eq!(clear, "0", "clear-text catalog sessions: {sessions}");
    all_sessions_encrypted(server, &catalog);
}

#[test]
fn a_wrong_ca_and_a_wrong_host_name_are_refused_in_libpq_words() {
    let server = tls_server();
    let other_ca = server.file("other-ca.crt");
    let wrong_ca = format!(
        "host=127.0.0.1 port={} user=postgres dbname=postgres sslmode=verify-ca sslrootcert={other_ca}",
        server.port()
    );
    let err = connect(&wrong_ca).expect_err("refused");
    assert!(
        matches!(
            err.handshake(),
            Some(HandshakeError::UnknownAuthority { .. })
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!("certificate signed by an unknown authority (sslrootcert {other_ca})")
    );
    // require with a root certificate checks the chain, as libpq does.
    let err = connect(&wrong_ca.replace("verify-ca", "require")).expect_err("refused");
    assert!(
        matches!(
            err.handshake(),
            Some(HandshakeError::UnknownAuthority { .. })
        ),
        "{err:?}"
    );
    // The certificate names localhost and 127.0.0.1; reach it as db.internal.
    let wrong_host = format!(
        "host=db.internal hostaddr=127.0.0.1 port={} user=postgres dbname=postgres sslmode=verify-full sslrootcert={}",
        server.port(),
        server.file("ca.crt")
    );
    let err = connect(&wrong_host).expect_err("refused");
    assert!(
        matches!(err.handshake(), Some(HandshakeError::WrongHost { .. })),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "certificate for localhost, 127.0.0.1 not valid for host db.internal"
    );
    // verify-ca checks the chain only: the same name passes.
    connect(&wrong_host.replace("verify-full", "verify-ca")).unwrap();

    // Through the binary: a backup names the CA it could not trust.
    let dir = tempfile::tempdir().unwrap();
    let source = server.database("src");
    let catalog = fresh_catalog();
    let query = format!("sslmode=verify-full&sslrootcert={other_ca}");
    let extra = job_config(
        &dir.path().join("repo"),
        &server.url(&source, &query),
        &source,
    );
    let config = dir.path().join("config.toml");
    std::fs::write(&config, config_text(dir.path(), &catalog.url(), &extra)).unwrap();
    let (code, out, err) = vigil_cli(&config, &["backup", "orders"], &ENV);
    assert_ne!(code, 0, "{out}");
    assert!(
        err.contains(&format!(
            "certificate signed by an unknown authority (sslrootcert {other_ca})"
        )),
        "{err}"
    );
    assert!(!err.contains(PASSWORD) && !out.contains(PASSWORD));
}

#[test]
fn a_client_certificate_logs_in_without_a_password() {
    let server = tls_server();
    let conninfo = format!(
        "host=127.0.0.1 port={} user={CERT_USER} dbname=postgres sslmode=verify-full sslrootcert={} sslcert={} sslkey={}",
        server.port(),
        server.file("ca.crt"),
        server.file("client.crt"),
        server.file("client.key"),
    );
    let mut info = parse(&conninfo).unwrap();
    assert!(info.pg.get_password().is_none());
    let user: String = runtime().block_on(async {
        let client = vigil::pgconn::connect(&info).await.unwrap();
        assert!(vigil::pgconn::is_encrypted(&client).await.unwrap());
        client
            .query_one("SELECT current_user::text", &[])
            .await
            .unwrap()
            .get(0)
    });
    assert_eq!(user, CERT_USER);
    // Without the certificate the `cert` line refuses the same role.
    info.tls.cert = None;
    info.tls.key = None;
    let refused = runtime().block_on(vigil::pgconn::connect(&info)).err();
    assert!(
        matches!(refused, Some(ConnectError::Postgres(_))),
        "{refused:?}"
    );

    // pg_dump gets the same certificate (PGSSLCERT/PGSSLKEY).
    let source = server.database("cert");
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "postgres://{CERT_USER}@127.0.0.1:{}/{source}?sslmode=verify-full&sslrootcert={}&sslcert={}&sslkey={}",
        server.port(),
        server.file("ca.crt"),
        server.file("client.crt"),
        server.file("client.key"),
    );
    let extra = job_config(&dir.path().join("repo"), &url, &source)
        .replace("password = \"${JOB_PGPASSWORD}\"\n", "");
    let catalog = fresh_catalog();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, config_text(dir.path(), &catalog.url(), &extra)).unwrap();
    let (code, out, err) = vigil_cli(
        &config,
        &["backup", "orders"],
        &[("TEST_PGPASSWORD", PASSWORD)],
    );
    assert_eq!(code, 0, "backup with a client certificate:\n{out}\n{err}");
    all_sessions_encrypted(server, &source);
}

#[test]
fn clear_text_is_refused_by_a_hostssl_server_and_require_by_a_plain_one() {
    let server = tls_server();
    let err = connect(&format!(
        "host=127.0.0.1 port={} user=postgres dbname=postgres sslmode=disable",
        server.port()
    ))
    .expect_err("refused");
    assert!(
        matches!(err, ConnectError::ClearTextRefused { .. }),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("no pg_hba.conf entry") && text.contains("use sslmode=require or stricter"),
        "{text}"
    );

    // prefer (libpq's default) takes TLS when the server offers it, and
    // require encrypts without checking the certificate (no root given).
    let base = format!(
        "host=127.0.0.1 port={} user=postgres dbname=postgres",
        server.port()
    );
    connect(&base).unwrap();
    connect(&format!("{base} sslmode=require")).unwrap();

    // The shared cluster has no TLS at all: prefer goes on in clear text.
    let plain = shared_cluster();
    let mut info = parse(&format!(
        "host=127.0.0.1 port={} user=postgres dbname=postgres",
        plain.port()
    ))
    .unwrap();
    info.pg.password(PASSWORD);
    let encrypted = runtime().block_on(async {
        let client = vigil::pgconn::connect(&info).await.unwrap();
        vigil::pgconn::is_encrypted(&client).await.unwrap()
    });
    assert!(!encrypted);
    let err = connect(&format!(
        "host=127.0.0.1 port={} user=postgres dbname=postgres sslmode=require",
        plain.port()
    ))
    .expect_err("refused");
    assert_eq!(
        err.to_string(),
        "server does not support SSL but sslmode=require"
    );
}

#[test]
fn config_load_names_missing_tls_files_and_open_keys() {
    let server = tls_server();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("client.key");
    std::fs::copy(server.file("client.key"), &key).unwrap();
    set_mode(&key, 0o644);
    let missing = dir.path().join("nope.crt");
    let catalog = format!(
        "postgres://vigil@127.0.0.1:5432/vigil?sslmode=verify-full&sslrootcert={}",
        missing.display()
    );
    let source = format!(
        "postgres://backup@127.0.0.1:5432/orders?sslmode=require&sslcert={}&sslkey={}",
        server.file("client.crt"),
        key.display()
    );
    let extra = job_config(&dir.path().join("repo"), &source, "orders");
    let config = dir.path().join("config.toml");
    std::fs::write(&config, config_text(dir.path(), &catalog, &extra)).unwrap();
    let (code, out, err) = vigil_cli(&config, &["check-config"], &ENV);
    assert_eq!(code, 64, "a config error: {out}\n{err}");
    let text = format!("{out}{err}");
    assert!(
        text.contains(&format!(
            "root certificate file {} does not exist",
            missing.display()
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "sslkey file {} has group or world access (mode 0644)",
            key.display()
        )),
        "{text}"
    );
}

/// config.toml.example as shipped, with only addresses, paths and
/// credentials replaced and `?sslmode=require` added to both URLs.
#[test]
fn the_example_config_backs_up_over_tls_with_sslmode_require() {
    let server = tls_server();
    let catalog = server.database("excat");
    let source = server.database("exsrc");
    server
        .cluster
        .psql(
            &source,
            "CREATE TABLE t (id int); INSERT INTO t VALUES (1);",
        )
        .unwrap();
    let tempdir = tempfile::Builder::new()
        .prefix("vigil-it-")
        .tempdir()
        .unwrap();
    let dir = tempdir.path().to_owned();
    let example = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml.example"));
    let mut text = std::fs::read_to_string(example).unwrap();
    std::fs::write(dir.join("catalog.password"), PASSWORD).unwrap();
    std::fs::write(dir.join("orders.password"), PASSWORD).unwrap();
    let replacements = [
        (
            "state_dir = \"/var/lib/vigil\"".to_owned(),
            format!("state_dir = \"{}\"", dir.join("state").display()),
        ),
        (
            "listen = \"127.0.0.1:9746\"".to_owned(),
            "listen = \"127.0.0.1:0\"".to_owned(),
        ),
        (
            "url = \"postgres://vigil@127.0.0.1:5432/vigil\"".to_owned(),
            format!("url = \"{}\"", server.url(&catalog, "sslmode=require")),
        ),
        (
            "password_file = \"/etc/vigil/catalog.password\"".to_owned(),
            format!(
                "password_file = \"{}\"",
                dir.join("catalog.password").display()
            ),
        ),
        (
            "source = \"postgres://backup@127.0.0.1:5432/orders\"".to_owned(),
            format!("source = \"{}\"", server.url(&source, "sslmode=require")),
        ),
        (
            "# password_file = \"/etc/vigil/orders.password\"".to_owned(),
            format!(
                "password_file = \"{}\"",
                dir.join("orders.password").display()
            ),
        ),
        (
            "databases = [\"orders\"]".to_owned(),
            format!("databases = [\"{source}\"]"),
        ),
        (
            "root = \"/var/lib/vigil/repo\"".to_owned(),
            format!("root = \"{}\"", dir.join("repo").display()),
        ),
    ];
    for (from, to) in replacements {
        assert!(text.contains(&from), "the example no longer has {from}");
        text = text.replacen(&from, &to, 1);
    }
    let config = dir.join("config.toml");
    std::fs::write(&config, &text).unwrap();
    let (code, out, err) = vigil_cli(&config, &["migrate"], &[]);
    assert_eq!(code, 0, "migrate:\n{out}\n{err}");
    let options = VigilOptions {
        env: Default::default(),
        ..VigilOptions::default()
    };
    let vigil = Vigil::start_text(tempdir, &text, options);
    // The shipped schedule catches the missed run up at once.
    vigil.wait_for("the catch-up backup", Duration::from_secs(90), || {
        vigil.get("/health/detailed").json()["checks"]["orders:freshness"][0]["status"] == "pass"
    });
    let detailed = vigil.get("/health/detailed").json();
    for check in ["orders:source", "catalog:responseTime"] {
        assert_eq!(
            detailed["checks"][check][0]["vigil"]["encrypted"], true,
            "{check}: {detailed:#}"
        );
    }
    all_sessions_encrypted(server, &source);
    all_sessions_encrypted(server, &catalog);
}

/// A certificate vigil refuses will not become valid by waiting: the
/// daemon's start-up wait (`catalog.connect_timeout`, 20 s here) ends at once.
#[test]
fn a_refused_catalog_certificate_is_not_retried() {
    let server = tls_server();
    let catalog = server.database("badcat");
    let other_ca = server.file("other-ca.crt");
    let url = server.url(
        &catalog,
        &format!("sslmode=verify-full&sslrootcert={other_ca}"),
    );
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, config_text(dir.path(), &url, "")).unwrap();
    let started = std::time::Instant::now();
    let (code, out, err) = vigil_cli(&config, &["migrate"], &ENV);
    let took = started.elapsed();
    assert_ne!(code, 0, "{out}");
    assert!(
        err.contains(&format!(
            "certificate signed by an unknown authority (sslrootcert {other_ca})"
        )) && err.contains("this is not retried"),
        "{err}"
    );
    assert!(took < Duration::from_secs(10), "waited {took:?}: {err}");
}

/// `sslmode=require` against a server without TLS: libpq's words, at once
/// (waiting for the catalog cannot give the server TLS).
#[test]
fn a_catalog_without_tls_under_require_is_named_and_not_retried() {
    let catalog = fresh_catalog();
    let url = format!("{}?sslmode=require", catalog.url());
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, config_text(dir.path(), &url, "")).unwrap();
    let started = std::time::Instant::now();
    let (code, out, err) = vigil_cli(&config, &["migrate"], &ENV);
    let took = started.elapsed();
    assert_ne!(code, 0, "{out}");
    assert!(
        err.contains("server does not support SSL but sslmode=require")
            && err.contains("this is not retried"),
        "{err}"
    );
    assert!(took < Duration::from_secs(10), "waited {took:?}: {err}");
}

/// `sslrootcert=system`: the platform's store (here `SSL_CERT_FILE`, which
/// both rustls-native-certs and vigil's tool environment read) checks the
/// server for vigil's own session and for pg_dump 15, whose libpq does not
/// know the word `system`.
#[test]
fn system_roots_serve_vigil_and_pg_dump() {
    let server = tls_server();
    let source = server.database("sys");
    let dir = tempfile::tempdir().unwrap();
    let extra = job_config(
        &dir.path().join("repo"),
        &server.url(&source, "sslmode=verify-full&sslrootcert=system"),
        &source,
    );
    let catalog = fresh_catalog();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, config_text(dir.path(), &catalog.url(), &extra)).unwrap();
    let ca = server.file("ca.crt");
    let mut env = ENV.to_vec();
    env.push(("SSL_CERT_FILE", &ca));
    let (code, out, err) = vigil_cli(&config, &["backup", "orders"], &env);
    assert_eq!(code, 0, "backup with system roots:\n{out}\n{err}");
    all_sessions_encrypted(server, &source);
}
