//! Logical backups and restores end to end on a filesystem repository:
//! real pg_dump, real pg_restore, the real binary.

use std::path::PathBuf;
use std::process::Command;

use crate::harness::{
    PASSWORD, TestDb, config_text, files_under, fresh_catalog, fresh_db, vigil_cli,
};

/// A source database with several schemas, large objects, sequences, an
/// extension and non-ASCII data.
pub(crate) fn rich_source() -> TestDb {
    let db = fresh_db();
    db.psql(
        "CREATE EXTENSION hstore;
         CREATE SCHEMA sales; CREATE SCHEMA \"Ünïcode schema\";
         CREATE TABLE sales.orders (id bigserial PRIMARY KEY, customer text NOT NULL, attrs hstore, placed timestamptz DEFAULT now());
         INSERT INTO sales.orders (customer, attrs) SELECT 'Kunde Nr. ' || g || ' — Müller/Straße/東京', ('n=>' || g)::hstore FROM generate_series(1, 20000) g;
         CREATE TABLE \"Ünïcode schema\".\"Tabelle ✓\" (k int PRIMARY KEY, v text);
         INSERT INTO \"Ünïcode schema\".\"Tabelle ✓\" SELECT g, repeat('ß', g % 50) FROM generate_series(1, 500) g;
         CREATE SEQUENCE public.invoice_no START 1000; SELECT setval('public.invoice_no', 4242);
         CREATE TABLE public.docs (id int PRIMARY KEY, body oid);
         INSERT INTO public.docs SELECT g, lo_from_bytea(0, convert_to(repeat('large object ' || g, 1000), 'UTF8')) FROM generate_series(1, 5) g;",
    )
    .unwrap();
    db
}

/// What must survive a round trip, as one comparable string.
pub(crate) fn fingerprint(db: &TestDb) -> String {
    db.psql(
        "SELECT string_agg(x, E'\\n' ORDER BY x) FROM (
           SELECT 'orders ' || count(*) || ' ' || md5(string_agg(id || customer || attrs::text, ',' ORDER BY id)) AS x FROM sales.orders
           UNION ALL SELECT 'unicode ' || count(*) || ' ' || md5(string_agg(k || v, ',' ORDER BY k)) FROM \"Ünïcode schema\".\"Tabelle ✓\"
           UNION ALL SELECT 'seq ' || last_value FROM public.invoice_no
           UNION ALL SELECT 'orders_seq ' || last_value FROM sales.orders_id_seq
           UNION ALL SELECT 'lo ' || count(*) || ' ' || md5(string_agg(encode(lo_get(body), 'hex'), ',' ORDER BY id)) FROM public.docs
           UNION ALL SELECT 'ext ' || extname FROM pg_extension WHERE extname = 'hstore'
         ) t",
    )
    .unwrap()
}

struct Setup {
    dir: tempfile::TempDir,
    config: PathBuf,
    repo: PathBuf,
    key: Option<PathBuf>,
}

fn setup(source: &TestDb, catalog: &TestDb, encrypted: bool, job_extra: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let mut extra = format!(
        "[repositories.local]\nscheme = \"fs\"\noptions = {{ root = \"{}\" }}\n",
        repo.display()
    );
    let mut key = None;
    if encrypted {
        let identity = age::x25519::Identity::generate();
        let path = dir.path().join("age.key");
        use age::secrecy::ExposeSecret;
        std::fs::write(&path, format!("{}\n", identity.to_string().expose_secret())).unwrap();
        extra.push_str(&format!(
            "[repositories.local.encryption]\nrecipients = [\"{}\"]\nidentity_file = \"{}\"\n",
            identity.to_public(),
            path.display()
        ));
        key = Some(path);
    }
    extra.push_str(&format!(
        "[jobs.orders]\nkind = \"postgres\"\nsource = \"{}\"\npassword = \"${{JOB_PGPASSWORD}}\"\ndatabases = [\"{}\"]\nrepository = \"local\"\nevery = \"1h\"\n{job_extra}",
        source.url(),
        source.name
    ));
    let config = dir.path().join("config.toml");
    std::fs::write(&config, config_text(dir.path(), &catalog.url(), &extra)).unwrap();
    Setup {
        dir,
        config,
        repo,
        key,
    }
}

const ENV: [(&str, &str); 3] = [
    ("TEST_PGPASSWORD", PASSWORD),
    ("JOB_PGPASSWORD", PASSWORD),
    ("PGPASSWORD", PASSWORD),
];

fn backup(setup: &Setup) -> serde_json::Value {
    let (code, stdout, stderr) = vigil_cli(&setup.config, &["backup", "orders"], &ENV);
    assert_eq!(code, 0, "backup failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("committed"), "{stdout}");
    assert!(!stderr.contains(PASSWORD) && !stdout.contains(PASSWORD));
    let (code, stdout, stderr) = vigil_cli(&setup.config, &["list", "orders", "--json"], &ENV);
    assert_eq!(code, 0, "{stderr}");
    let list: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    list.as_array()
        .unwrap()
        .last()
        .cloned()
        .expect("one backup listed")
}

fn target_url(name: &str) -> String {
    let cluster = crate::harness::shared_cluster();
    format!("postgres://postgres@127.0.0.1:{}/{name}", cluster.port())
}

fn round_trip(encrypted: bool, jobs: Option<&str>) {
    let source = rich_source();
    let catalog = fresh_catalog();
    let setup = setup(&source, &catalog, encrypted, "");
    let manifest = backup(&setup);
    assert_eq!(manifest["job"], "orders");
    assert_eq!(manifest["encryption"].is_null(), !encrypted);
    let object = &manifest["objects"][0];
    let suffix = if encrypted {
        ".dump.zst.age"
    } else {
        ".dump.zst"
    };
    assert!(
        object["name"].as_str().unwrap().ends_with(suffix),
        "{object}"
    );

    let target = format!("{}_restored", source.name);
    let url = target_url(&target);
    let mut args = vec!["restore", "orders", "--latest", "--to", &url, "--create"];
    if let Some(j) = jobs {
        args.extend(["--jobs", j]);
    }
    let (code, stdout, stderr) = vigil_cli(&setup.config, &args, &ENV);
    assert_eq!(code, 0, "restore failed:\n{stdout}\n{stderr}");
    let restored = TestDb {
        name: target,
        port: source.port,
    };
    assert_eq!(fingerprint(&restored), fingerprint(&source));
    let rows = catalog
        .psql("SELECT kind || ':' || status FROM vigil.executions ORDER BY id")
        .unwrap();
    assert_eq!(rows, "backup:succeeded\nrestore:succeeded");
}

#[test]
fn backup_then_restore_plain() {
    round_trip(false, None);
}

#[test]
fn backup_then_restore_encrypted() {
    round_trip(true, None);
}

#[test]
fn backup_then_parallel_restore() {
    round_trip(true, Some("2"));
}

fn object_file(setup: &Setup, manifest: &serde_json::Value) -> PathBuf {
    setup
        .repo
        .join("orders/backups")
        .join(manifest["backupId"].as_str().unwrap())
        .join(manifest["objects"][0]["name"].as_str().unwrap())
}

#[test]
fn restore_by_hand_with_standard_tools() {
    let source = rich_source();
    let catalog = fresh_catalog();
    let setup = setup(&source, &catalog, true, "");
    let manifest = backup(&setup);
    let object = object_file(&setup, &manifest);
    // 1. sha256sum matches the manifest.
    let out = Command::new("sha256sum").arg(&object).output().unwrap();
    let sum = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    assert_eq!(sum, manifest["objects"][0]["sha256"].as_str().unwrap());
    // 2. age -d | zstd -d | pg_restore, exactly as the README shows.
    let target = format!("{}_byhand", source.name);
    source.psql(&format!("CREATE DATABASE {target}")).unwrap();
    let script = format!(
        "set -euo pipefail; age -d -i '{}' '{}' | zstd -d | pg_restore --single-transaction --exit-on-error -h 127.0.0.1 -p {} -U postgres -d {target}",
        setup.key.as_ref().unwrap().display(),
        object.display(),
        source.port
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .env("PGPASSWORD", PASSWORD)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        fingerprint(&TestDb {
            name: target,
            port: source.port
        }),
        fingerprint(&source)
    );
}

#[test]
fn a_flipped_byte_fails_the_restore_and_writes_nothing() {
    let source = rich_source();
    let catalog = fresh_catalog();
    let setup = setup(&source, &catalog, false, "");
    let manifest = backup(&setup);
    let object = object_file(&setup, &manifest);
    let mut bytes = std::fs::read(&object).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&object, &bytes).unwrap();

    // A non-empty target: restoring with --clean must not touch it on a bad object.
    let target = fresh_db();
    target
        .psql("CREATE TABLE keep (x int); INSERT INTO keep VALUES (1), (2), (3);")
        .unwrap();
    let (code, _, stderr) = vigil_cli(
        &setup.config,
        &["restore", "orders", "--to", &target.url(), "--clean"],
        &ENV,
    );
    assert_eq!(code, 1);
    let expected = manifest["objects"][0]["sha256"].as_str().unwrap();
    assert!(
        stderr.contains("SHA-256 mismatch") && stderr.contains(expected),
        "{stderr}"
    );
    assert!(
        stderr.contains(manifest["objects"][0]["name"].as_str().unwrap()),
        "names the object: {stderr}"
    );
    assert_eq!(target.psql("SELECT count(*) FROM keep").unwrap(), "3");
    let tables = target.psql("SELECT count(*) FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')").unwrap();
    assert_eq!(tables, "1", "nothing restored into the target");

    // Without --clean a non-empty target is refused before anything is read.
    let fresh = fresh_db();
    fresh.psql("CREATE TABLE t (x int)").unwrap();
    let (code, _, stderr) = vigil_cli(
        &setup.config,
        &["restore", "orders", "--to", &fresh.url()],
        &ENV,
    );
    assert_eq!(code, 1);
    assert!(stderr.contains("refusing to restore over it"), "{stderr}");
}

#[test]
fn a_failing_pg_dump_fails_the_run_without_a_manifest() {
    let source = fresh_db();
    let catalog = fresh_catalog();
    let setup = setup(&source, &catalog, false, "");
    let text = std::fs::read_to_string(&setup.config).unwrap();
    let broken = text.replace(
        &format!("databases = [\"{}\"]", source.name),
        "databases = [\"no_such_db\"]",
    );
    std::fs::write(&setup.config, broken).unwrap();
    let (code, _, stderr) = vigil_cli(&setup.config, &["backup", "orders"], &ENV);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("pg_dump exited") && stderr.contains("no_such_db"),
        "{stderr}"
    );
    let (code, stdout, _) = vigil_cli(&setup.config, &["list", "orders", "--json"], &ENV);
    assert_eq!(code, 0);
    assert_eq!(stdout.trim(), "[]");
    let row = catalog
        .psql("SELECT status || ' ' || (error LIKE '%no_such_db%') FROM vigil.executions")
        .unwrap();
    assert_eq!(row, "failed true");
    // No leftovers under the job's directory (the partial object was aborted).
    let leftovers = files_under(&setup.repo.join("orders"));
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // A wrong password fails the same way, and the password is never shown.
    let text = std::fs::read_to_string(&setup.config).unwrap();
    std::fs::write(&setup.config, text.replace("no_such_db", &source.name)).unwrap();
    let (code, _, stderr) = vigil_cli(
        &setup.config,
        &["backup", "orders"],
        &[
            ("TEST_PGPASSWORD", PASSWORD),
            ("JOB_PGPASSWORD", "wrong-password-123"),
        ],
    );
    assert_eq!(code, 1);
    assert!(
        stderr.contains("password authentication failed"),
        "{stderr}"
    );
    assert!(!stderr.contains("wrong-password-123"));
}

#[test]
fn list_works_without_a_catalog() {
    let source = fresh_db();
    source.psql("CREATE TABLE t AS SELECT 1 AS x").unwrap();
    let catalog = fresh_catalog();
    let setup = setup(&source, &catalog, false, "");
    backup(&setup);
    // Point the catalog at a closed port: listing reads the repository alone.
    let text = std::fs::read_to_string(&setup.config).unwrap();
    let cut = text.replace(
        &format!("127.0.0.1:{}/{}", catalog.port, catalog.name),
        "127.0.0.1:1/none",
    );
    std::fs::write(&setup.config, cut).unwrap();
    let (code, stdout, stderr) = vigil_cli(&setup.config, &["list"], &ENV);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("orders") && stdout.contains(&source.name),
        "{stdout}"
    );
    let _ = setup.dir.path();
}

#[test]
fn all_databases_and_globals() {
    let cluster = crate::harness::own_cluster();
    for db in ["alpha", "beta"] {
        cluster
            .psql("postgres", &format!("CREATE DATABASE {db}"))
            .unwrap();
        cluster
            .psql(
                db,
                &format!(
                    "CREATE TABLE t AS SELECT '{db}'::text AS who, g FROM generate_series(1, 100) g"
                ),
            )
            .unwrap();
    }
    cluster
        .psql("postgres", "CREATE ROLE reporting LOGIN")
        .unwrap();
    let catalog = fresh_catalog();
    let source = TestDb {
        name: "postgres".into(),
        port: cluster.port(),
    };
    let setup = setup(&source, &catalog, false, "");
    let text = std::fs::read_to_string(&setup.config).unwrap();
    std::fs::write(
        &setup.config,
        text.replace("databases = [\"postgres\"]", "databases = \"all\""),
    )
    .unwrap();
    let manifest = backup(&setup);
    let mut names: Vec<&str> = manifest["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "alpha.dump.zst",
            "beta.dump.zst",
            "globals.sql.zst",
            "postgres.dump.zst"
        ]
    );
    let globals = setup
        .repo
        .join("orders/backups")
        .join(manifest["backupId"].as_str().unwrap())
        .join("globals.sql.zst");
    let sql = Command::new("zstd")
        .arg("-dc")
        .arg(&globals)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&sql.stdout).contains("CREATE ROLE reporting"));

    // Several databases: restore needs --database.
    let target = target_url(&format!("{}_beta", catalog.name));
    let (code, _, stderr) = vigil_cli(
        &setup.config,
        &["restore", "orders", "--to", &target, "--create"],
        &ENV,
    );
    assert_eq!(code, 64, "choosing the database is usage: {stderr}");
    assert!(stderr.contains("--database"), "{stderr}");
    let (code, _, stderr) = vigil_cli(
        &setup.config,
        &[
            "restore",
            "orders",
            "--database",
            "beta",
            "--to",
            &target,
            "--create",
        ],
        &ENV,
    );
    assert_eq!(code, 0, "{stderr}");
    let restored = TestDb {
        name: format!("{}_beta", catalog.name),
        port: catalog.port,
    };
    assert_eq!(
        restored
            .psql("SELECT who || count(*) FROM t GROUP BY who")
            .unwrap(),
        "beta100"
    );
}
