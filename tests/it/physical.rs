//! `kind = "postgres-physical"` end to end against real clusters: base
//! backups over the replication protocol, their lay-out with a mapped
//! tablespace, pg_verifybackup, a restored cluster that starts with its
//! data, and the failures a person must be able to act on.
//!
//! Until `vigil wal-push` is merged, the clusters archive with a shell
//! `archive_command` that writes what wal-push writes where the base
//! backup looks for it: `<repo>/<job>/wal/<timeline>/<segment>.zst` (and
//! a `.zst.age` copy of it, which only the encrypted test's wait reads).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use vigil::cli::pgcluster::Cluster;

use crate::harness::{
    PASSWORD, as_postgres, config_text, free_port, fresh_catalog, list_manifests, own_cluster,
    postgres_scratch, vigil_cli,
};
use crate::tls::{give_to_postgres, make_ca, make_leaf, set_mode};

const ENV: [(&str, &str); 1] = [("TEST_PGPASSWORD", PASSWORD)];
const JOB: &str = "cluster";
/// The role that logs in with a client certificate.
const CERT_ROLE: &str = "certrepl";

static CLUSTER: OnceLock<Cluster> = OnceLock::new();
static WAL_ROOT: OnceLock<PathBuf> = OnceLock::new();

extern "C" fn destroy_cluster() {
    if let Some(cluster) = CLUSTER.get() {
        cluster.destroy();
    }
}

/// A directory anyone may write (the cluster runs as `postgres`).
fn open_dir(path: &Path) -> PathBuf {
    std::fs::create_dir_all(path).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777)).unwrap();
    path.to_owned()
}

/// Every test repository the archive_command writes into is under here.
fn wal_root() -> &'static Path {
    WAL_ROOT.get_or_init(|| {
        let root = tempfile::Builder::new()
            .prefix("vigil-it-phys-")
            .tempdir()
            .unwrap()
            .keep();
        open_dir(&root)
    })
}

/// A fresh repository directory the archiver fills.
fn archived_repo(name: &str) -> PathBuf {
    let repo = wal_root().join(format!("{name}-{}", std::process::id()));
    open_dir(&repo.join(JOB).join("wal"));
    open_dir(&repo)
}

/// Each segment, compressed, into every repository under the root.
fn archive_command(root: &Path) -> String {
    format!(
        "for r in {}/*/; do d=\"${{r}}{JOB}/wal/$(echo %f | cut -c1-8)\"; mkdir -p \"$d\" && zstd -q -f %p -o \"$d/%f.zst\" && cp \"$d/%f.zst\" \"$d/%f.zst.age\" || exit 1; done",
        root.display()
    )
}

fn archiving_conf(cluster: &Cluster, root: &Path, extra: &str) {
    let conf = cluster.data_dir().join("postgresql.conf");
    let mut text = std::fs::read_to_string(&conf).unwrap();
    text.push_str(&format!(
        "\narchive_mode = on\narchive_command = '{}'\n{extra}",
        archive_command(root)
    ));
    std::fs::write(&conf, text).unwrap();
}

/// The physical tests' cluster: wal_level replica (the default), WAL archived.
fn cluster() -> &'static Cluster {
    CLUSTER.get_or_init(|| {
        let mut cluster = own_cluster();
        cluster.stop().unwrap();
        archiving_conf(&cluster, wal_root(), "");
        cluster.start().unwrap();
        unsafe { libc::atexit(destroy_cluster) };
        cluster
    })
}

/// config.toml.example's commented postgres-physical job, uncommented
/// (every key at its shipped value), pointed at `source` and the fs
/// repository `repo`.
fn example_job(source: &str, repo: &Path) -> String {
    let example = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml.example"));
    let text = std::fs::read_to_string(example).unwrap();
    let start = text
        .find(&format!("# [jobs.{JOB}]"))
        .expect("config.toml.example has a commented postgres-physical job");
    let tail = &text[start..];
    let block = &tail[..tail.find("\n\n").unwrap_or(tail.len())];
    let mut job: String = block
        .lines()
        .map(|l| format!("{}\n", l.strip_prefix("# ").unwrap_or(l)))
        .collect();
    let shipped = "source = \"postgres://replicator@127.0.0.1:5432/postgres\"";
    assert!(
        job.contains(shipped),
        "the example job no longer has {shipped}"
    );
    job = job.replacen(shipped, &format!("source = \"{source}\""), 1);
    job.push_str("password = \"${TEST_PGPASSWORD}\"\n");
    format!(
        "[repositories.local]\nscheme = \"fs\"\noptions = {{ root = \"{}\" }}\n{job}",
        repo.display()
    )
}

/// A minimal physical job (every optional key at its default) plus `keys`.
fn job(source: &str, repo: &Path, keys: &str) -> String {
    format!(
        "[repositories.local]\nscheme = \"fs\"\noptions = {{ root = \"{}\" }}\n\
         [jobs.{JOB}]\nkind = \"postgres-physical\"\nsource = \"{source}\"\npassword = \"${{TEST_PGPASSWORD}}\"\n\
         repository = \"local\"\nevery = \"1h\"\ncatch_up = false\n{keys}",
        repo.display(),
    )
}

fn write_config(dir: &Path, extra: &str) -> PathBuf {
    let catalog = fresh_catalog();
    let config = dir.join("config.toml");
    std::fs::write(&config, config_text(dir, &catalog.url(), extra)).unwrap();
    config
}

fn source_url(port: u16, user: &str, query: &str) -> String {
    format!("postgres://{user}@127.0.0.1:{port}/postgres{query}")
}

/// Starts PostgreSQL on a laid-out directory, recovering from `repo`'s
/// archive; returns its port. Stop it with [`stop`].
fn start_restored(bins: &Cluster, data: &Path, repo: &Path) -> u16 {
    let auto = data.join("postgresql.auto.conf");
    let mut text = std::fs::read_to_string(&auto).unwrap();
    text.push_str(&format!(
        "archive_mode = off\nrestore_command = 'zstd -q -d -f {}/{JOB}/wal/$(echo %f | cut -c1-8)/%f.zst -o %p'\n",
        repo.display()
    ));
    std::fs::write(&auto, text).unwrap();
    std::fs::write(data.join("recovery.signal"), "").unwrap();
    give_to_postgres(&data.join("recovery.signal"));
    let port = free_port();
    let log = data.join("restored.log");
    let out = as_postgres(&bins.bin("pg_ctl"))
        .arg("-D")
        .arg(data)
        .args(["-w", "-t", "120", "-o"])
        .arg(format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c max_connections=200",
            data.display()
        ))
        .arg("-l")
        .arg(&log)
        .arg("start")
        .output()
        .unwrap();
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        out.status.success(),
        "restored cluster did not start: {}\n{log_text}",
        String::from_utf8_lossy(&out.stderr)
    );
    port
}

fn stop(bins: &Cluster, data: &Path) {
    let _ = as_postgres(&bins.bin("pg_ctl"))
        .arg("-D")
        .arg(data)
        .args(["-w", "-m", "immediate", "stop"])
        .output();
}

fn psql_at(bins: &Cluster, port: u16, database: &str, sql: &str) -> String {
    let out = Command::new(bins.bin("psql"))
        .env("PGPASSWORD", PASSWORD)
        .args(["-X", "-q", "-A", "-t", "-h", "127.0.0.1", "-U", "postgres"])
        .args(["-p", &port.to_string(), "-d", database, "-c", sql])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn the_example_job_backs_up_a_tablespace_that_lays_out_mapped_verifies_and_starts() {
    let cluster = cluster();
    let dir = postgres_scratch("vigil-it-phys-");
    let repo = archived_repo("example");
    let pid = std::process::id();
    let ts_dir = dir.path().join("ts");
    std::fs::create_dir_all(&ts_dir).unwrap();
    give_to_postgres(&ts_dir);
    set_mode(&ts_dir, 0o700);
    let database = format!("phys_{pid}");
    let space = format!("ts_{pid}");
    cluster
        .psql(
            "postgres",
            &format!("CREATE TABLESPACE {space} LOCATION '{}'", ts_dir.display()),
        )
        .unwrap();
    cluster
        .psql("postgres", &format!("CREATE DATABASE {database}"))
        .unwrap();
    cluster
        .psql(
            &database,
            &format!(
                "CREATE TABLE a AS SELECT generate_series(1, 1000) AS i; \
                 CREATE TABLE b (i int) TABLESPACE {space}; INSERT INTO b SELECT generate_series(1, 500);"
            ),
        )
        .unwrap();
    let source = source_url(cluster.port(), "postgres", "");
    let config = write_config(dir.path(), &example_job(&source, &repo));

    let (code, _, stderr) = vigil_cli(&config, &["backup", JOB], &ENV);
    assert_eq!(code, 0, "{stderr}");
    let manifests = list_manifests(&config, JOB, &ENV);
    let m = &manifests[0];
    assert_eq!(m["kind"], "physical", "{m:#}");
    // The example's defaults: server zstd at level 3.
    assert_eq!(m["compression"]["level"], 3, "{m:#}");
    let physical = &m["physical"];
    let system_id = cluster
        .psql(
            "postgres",
            "SELECT system_identifier FROM pg_control_system()",
        )
        .unwrap();
    assert_eq!(physical["systemIdentifier"], system_id.as_str(), "{m:#}");
    assert_eq!(physical["timeline"], 1, "{m:#}");
    assert_eq!(physical["walSegmentSize"], 16 << 20, "{m:#}");
    let (start, stop_lsn) = (
        physical["startLsn"].as_str().unwrap(),
        physical["stopLsn"].as_str().unwrap(),
    );
    let ordered = cluster
        .psql(
            "postgres",
            &format!("SELECT '{start}'::pg_lsn < '{stop_lsn}'::pg_lsn AND '{stop_lsn}'::pg_lsn <= pg_current_wal_lsn()"),
        )
        .unwrap();
    assert_eq!(ordered, "t", "start {start} stop {stop_lsn}");
    let oid = cluster
        .psql(
            "postgres",
            &format!("SELECT oid FROM pg_tablespace WHERE spcname = '{space}'"),
        )
        .unwrap();
    let tablespace = physical["tablespaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["oid"] == oid.parse::<u64>().unwrap())
        .unwrap_or_else(|| panic!("tablespace {oid} missing: {m:#}"));
    assert_eq!(tablespace["location"], ts_dir.display().to_string());
    let names: Vec<&str> = m["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap())
        .collect();
    let ts_object = format!("{oid}.tar.zst");
    for expected in ["base.tar.zst", ts_object.as_str(), "backup_manifest.zst"] {
        assert!(names.contains(&expected), "{expected} not in {names:?}");
    }

    let data = dir.path().join("restored");
    let moved = dir.path().join("ts-moved");
    let mapping = format!("{}={}", ts_dir.display(), moved.display());
    let to = data.display().to_string();
    let args = [
        "restore",
        JOB,
        "--to-dir",
        &to,
        "--tablespace-map",
        &mapping,
    ];
    let (code, _, stderr) = vigil_cli(&config, &args, &ENV);
    assert_eq!(code, 0, "{stderr}");
    let mode = std::fs::metadata(&data).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    assert_eq!(
        std::fs::read_link(data.join("pg_tblspc").join(&oid)).unwrap(),
        moved
    );
    assert!(data.join("backup_manifest").is_file());
    let (code, _, stderr) = vigil_cli(&config, &args, &ENV);
    assert_ne!(code, 0, "a second lay-out into the same directory");
    assert!(stderr.contains("is not empty"), "{stderr}");

    let port = start_restored(cluster, &data, &repo);
    let counts = psql_at(
        cluster,
        port,
        &database,
        "SELECT (SELECT count(*) FROM a) || ' ' || (SELECT count(*) FROM b)",
    );
    let location = psql_at(
        cluster,
        port,
        "postgres",
        &format!("SELECT pg_tablespace_location(oid) FROM pg_tablespace WHERE spcname = '{space}'"),
    );
    stop(cluster, &data);
    assert_eq!(counts, "1000 500");
    assert_eq!(location, moved.display().to_string());
}

#[test]
fn a_role_without_replication_is_told_how_to_grant_it() {
    let cluster = cluster();
    let role = format!("norepl_{}", std::process::id());
    cluster
        .psql(
            "postgres",
            &format!("CREATE ROLE {role} LOGIN PASSWORD '{PASSWORD}'"),
        )
        .unwrap();
    let dir = postgres_scratch("vigil-it-phys-");
    let repo = archived_repo("norepl");
    let source = source_url(cluster.port(), &role, "");
    let config = write_config(dir.path(), &job(&source, &repo, ""));
    let (code, _, stderr) = vigil_cli(&config, &["backup", JOB], &ENV);
    assert_eq!(code, 1, "{stderr}");
    let grant = format!("role {role} lacks REPLICATION: ALTER ROLE {role} REPLICATION");
    assert!(stderr.contains(&grant), "{stderr}");
    assert!(
        stderr.contains(&format!("host replication {role}")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("127.0.0.1:{}", cluster.port())),
        "{stderr}"
    );
    assert!(!stderr.contains(PASSWORD), "{stderr}");
}

#[test]
fn an_encrypted_repository_round_trips() {
    let cluster = cluster();
    let dir = postgres_scratch("vigil-it-phys-");
    let repo = archived_repo("sealed");
    let identity = age::x25519::Identity::generate();
    let key = dir.path().join("age.key");
    {
        use age::secrecy::ExposeSecret;
        std::fs::write(&key, format!("{}\n", identity.to_string().expose_secret())).unwrap();
    }
    let source = source_url(cluster.port(), "postgres", "");
    let mut extra = job(&source, &repo, "");
    extra.push_str(&format!(
        "[repositories.local.encryption]\nrecipients = [\"{}\"]\nidentity_file = \"{}\"\n",
        identity.to_public(),
        key.display()
    ));
    let config = write_config(dir.path(), &extra);
    let (code, _, stderr) = vigil_cli(&config, &["backup", JOB], &ENV);
    assert_eq!(code, 0, "{stderr}");
    let m = &list_manifests(&config, JOB, &ENV)[0];
    for object in m["objects"].as_array().unwrap() {
        let name = object["name"].as_str().unwrap();
        assert!(name.ends_with(".age"), "{name} is not sealed");
        let stored = repo
            .join(JOB)
            .join("backups")
            .join(m["backupId"].as_str().unwrap())
            .join(name);
        let head = std::fs::read(&stored).unwrap();
        assert!(head.starts_with(b"age-encryption.org/v1"), "{name}");
    }
    let data = dir.path().join("restored");
    let to = data.display().to_string();
    let (code, _, stderr) = vigil_cli(&config, &["restore", JOB, "--to-dir", &to], &ENV);
    assert_eq!(code, 0, "{stderr}");
    assert!(data.join("PG_VERSION").is_file());
    assert!(data.join("backup_label").is_file());
}

#[test]
fn a_missing_archive_fails_the_run_after_archive_timeout_naming_the_stop_segment() {
    let cluster = cluster();
    let dir = postgres_scratch("vigil-it-phys-");
    // The archiver never writes here.
    let repo = open_dir(&dir.path().join("repo"));
    let source = source_url(cluster.port(), "postgres", "");
    let config = write_config(
        dir.path(),
        &job(&source, &repo, "archive_timeout = \"2s\"\n"),
    );
    let started = std::time::Instant::now();
    let (code, _, stderr) = vigil_cli(&config, &["backup", JOB], &ENV);
    assert_eq!(code, 1, "{stderr}");
    assert!(started.elapsed() >= std::time::Duration::from_secs(2));
    assert!(
        stderr.contains("did not reach the repository within 2s"),
        "{stderr}"
    );
    let segment = stderr
        .split("last WAL segment ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_default();
    assert!(
        segment.len() == 24 && segment.starts_with("00000001"),
        "no segment named: {stderr}"
    );
    assert!(stderr.contains("wal-push cluster %p"), "{stderr}");
    assert!(stderr.contains("pg_stat_archiver"), "{stderr}");
    assert!(list_manifests(&config, JOB, &ENV).is_empty());
    let backups = repo.join(JOB).join("backups");
    let left: Vec<_> = std::fs::read_dir(&backups)
        .map(|d| d.flatten().collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "leftovers: {left:?}");
}

#[test]
fn verify_full_carries_the_replication_session_to_a_hostssl_only_cluster() {
    let certs = postgres_scratch("vigil-it-phys-");
    make_ca(certs.path(), "ca");
    make_leaf(
        certs.path(),
        "ca",
        "server",
        "localhost",
        "subjectAltName=DNS:localhost,IP:127.0.0.1",
    );
    make_leaf(certs.path(), "ca", "client", CERT_ROLE, "");
    let mut tls = own_cluster();
    tls.psql(
        "postgres",
        &format!("CREATE ROLE {CERT_ROLE} LOGIN REPLICATION"),
    )
    .unwrap();
    tls.stop().unwrap();
    let data = tls.data_dir();
    for (from, to) in [
        ("server.crt", "server.crt"),
        ("server.key", "server.key"),
        ("ca.crt", "root.crt"),
    ] {
        std::fs::copy(certs.path().join(from), data.join(to)).unwrap();
        give_to_postgres(&data.join(to));
    }
    set_mode(&data.join("server.key"), 0o600);
    // Its own archive: its segments must never mix with the shared cluster's.
    let dir = postgres_scratch("vigil-it-phys-");
    let root = open_dir(&dir.path().join("wal-root"));
    archiving_conf(
        &tls,
        &root,
        "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\nssl_ca_file = 'root.crt'\nlog_connections = on\n",
    );
    std::fs::write(
        data.join("pg_hba.conf"),
        format!(
            "local all all scram-sha-256\nhostssl replication {CERT_ROLE} 127.0.0.1/32 cert\n\
             hostssl replication all 127.0.0.1/32 scram-sha-256\nhostssl all all 127.0.0.1/32 scram-sha-256\n"
        ),
    )
    .unwrap();
    tls.start().unwrap();

    let repo = root.join("tls");
    open_dir(&repo.join(JOB).join("wal"));
    let query = format!(
        "?sslmode=verify-full&sslrootcert={}",
        certs.path().join("ca.crt").display()
    );
    let source = source_url(tls.port(), "postgres", &query);
    let config = write_config(dir.path(), &job(&source, &repo, ""));
    let (code, _, stderr) = vigil_cli(&config, &["backup", JOB], &ENV);
    assert_eq!(code, 0, "{stderr}");
    let log = std::fs::read_to_string(data.parent().unwrap().join("postgres.log")).unwrap();
    let sessions: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("replication connection authorized"))
        .collect();
    assert!(!sessions.is_empty(), "{log}");
    assert!(
        sessions.iter().all(|l| l.contains("SSL enabled")),
        "{sessions:?}"
    );

    // A client certificate (pg_hba `cert`: the server asks for no password).
    let with_cert = format!(
        "{query}&sslcert={}&sslkey={}",
        certs.path().join("client.crt").display(),
        certs.path().join("client.key").display()
    );
    let source = source_url(tls.port(), CERT_ROLE, &with_cert);
    let config = write_config(dir.path(), &job(&source, &repo, ""));
    let (code, _, stderr) = vigil_cli(&config, &["backup", JOB], &ENV);
    assert_eq!(code, 0, "{stderr}");
    let log = std::fs::read_to_string(data.parent().unwrap().join("postgres.log")).unwrap();
    assert!(
        log.lines()
            .any(|l| l.contains("replication connection authorized")
                && l.contains(&format!("user={CERT_ROLE}"))
                && l.contains("SSL enabled")),
        "{log}"
    );

    let plain = source_url(tls.port(), "postgres", "?sslmode=disable");
    let config = write_config(dir.path(), &job(&plain, &repo, ""));
    let (code, _, stderr) = vigil_cli(&config, &["backup", JOB], &ENV);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("hostssl"), "{stderr}");
}
