//! Logical backups and restores on an S3 repository (moto, see
//! tests/s3/README.md): real pg_dump, real pg_restore, the real binary,
//! multipart uploads whose part size grows, create-only manifests.

use std::path::PathBuf;

use sha2::{Digest, Sha256};

use crate::backup::{fingerprint, rich_source};
use crate::harness::{
    PASSWORD, S3Server, TestDb, config_text, fresh_catalog, fresh_db, s3_server, vigil_cli,
};

const MIB: u64 = 1024 * 1024;

struct Setup {
    _dir: tempfile::TempDir,
    config: PathBuf,
    /// The repository's prefix inside the bucket (the test's own).
    prefix: String,
}

/// A config with one S3 repository `remote` (its own prefix) and one job
/// `orders` backing up `source`; `repo_extra` goes into the repository's
/// table, `job_extra` into the job's.
fn setup(
    test: &str,
    source: &TestDb,
    catalog: &TestDb,
    encrypted: bool,
    repo_extra: &str,
    job_extra: &str,
) -> Setup {
    let server = s3_server();
    let dir = tempfile::tempdir().unwrap();
    let prefix = server.unique_prefix(test);
    let mut extra = server.repository_toml("remote", &prefix, repo_extra);
    if encrypted {
        let identity = age::x25519::Identity::generate();
        let path = dir.path().join("age.key");
        use age::secrecy::ExposeSecret;
        std::fs::write(&path, format!("{}\n", identity.to_string().expose_secret())).unwrap();
        extra.push_str(&format!(
            "[repositories.remote.encryption]\nrecipients = [\"{}\"]\nidentity_file = \"{}\"\n",
            identity.to_public(),
            path.display()
        ));
    }
    extra.push_str(&format!(
        "[jobs.orders]\nkind = \"postgres\"\nsource = \"{}\"\npassword = \"${{JOB_PGPASSWORD}}\"\ndatabases = [\"{}\"]\nrepository = \"remote\"\nevery = \"1h\"\n{job_extra}",
        source.url(),
        source.name
    ));
    let config = dir.path().join("config.toml");
    std::fs::write(&config, config_text(dir.path(), &catalog.url(), &extra)).unwrap();
    Setup {
        _dir: dir,
        config,
        prefix,
    }
}

fn env() -> [(&'static str, &'static str); 4] {
    let server = s3_server();
    [
        ("TEST_PGPASSWORD", PASSWORD),
        ("JOB_PGPASSWORD", PASSWORD),
        ("PGPASSWORD", PASSWORD),
        server.env(),
    ]
}

/// Runs the CLI and checks that neither password nor S3 secret is shown.
fn cli(setup: &Setup, args: &[&str]) -> (i32, String, String) {
    let (code, stdout, stderr) = vigil_cli(&setup.config, args, &env());
    let secret = &s3_server().secret_access_key;
    for (what, text) in [("stdout", &stdout), ("stderr", &stderr)] {
        assert!(
            !text.contains(PASSWORD) && !text.contains(secret.as_str()),
            "`vigil {}` shows a secret on {what}:\n{text}",
            args.join(" ")
        );
    }
    (code, stdout, stderr)
}

/// `vigil backup orders`, then the newest manifest from `vigil list --json`.
fn backup(setup: &Setup) -> serde_json::Value {
    let (code, stdout, stderr) = cli(setup, &["backup", "orders"]);
    assert_eq!(code, 0, "backup failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("committed"), "{stdout}");
    let (code, stdout, stderr) = cli(setup, &["list", "orders", "--json"]);
    assert_eq!(code, 0, "{stderr}");
    let list: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    list.as_array()
        .unwrap()
        .last()
        .cloned()
        .expect("one backup listed")
}

/// The bucket key of a manifest's first object.
fn object_key(setup: &Setup, manifest: &serde_json::Value) -> String {
    format!(
        "{}/orders/backups/{}/{}",
        setup.prefix,
        manifest["backupId"].as_str().unwrap(),
        manifest["objects"][0]["name"].as_str().unwrap()
    )
}

/// `vigil restore orders --latest --to <new db> --create`; the restored database.
fn restore(setup: &Setup, source: &TestDb) -> TestDb {
    let target = format!("{}_restored", source.name);
    let url = format!("postgres://postgres@127.0.0.1:{}/{target}", source.port);
    let (code, stdout, stderr) = cli(
        setup,
        &["restore", "orders", "--latest", "--to", &url, "--create"],
    );
    assert_eq!(code, 0, "restore failed:\n{stdout}\n{stderr}");
    TestDb {
        name: target,
        port: source.port,
    }
}

fn executions(catalog: &TestDb) -> String {
    catalog
        .psql("SELECT kind || ':' || status FROM vigil.executions ORDER BY id")
        .unwrap()
}

fn round_trip(test: &str, encrypted: bool) {
    let source = rich_source();
    let catalog = fresh_catalog();
    let setup = setup(test, &source, &catalog, encrypted, "", "");
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

    // What the bucket holds is what the manifest describes.
    let key = object_key(&setup, &manifest);
    let stored = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(s3_server().operator().read(&key))
        .unwrap_or_else(|e| panic!("reading {key} from the bucket: {e}"))
        .to_vec();
    assert_eq!(stored.len() as u64, object["storedBytes"].as_u64().unwrap());
    assert_eq!(
        hex::encode(Sha256::digest(&stored)),
        object["sha256"].as_str().unwrap()
    );

    let restored = restore(&setup, &source);
    assert_eq!(fingerprint(&restored), fingerprint(&source));
    assert_eq!(executions(&catalog), "backup:succeeded\nrestore:succeeded");
}

#[test]
fn backup_then_restore_on_s3_plain() {
    round_trip("plain", false);
}

#[test]
fn backup_then_restore_on_s3_encrypted() {
    round_trip("encrypted", true);
}

/// How many parts an object of `size` bytes takes when parts start at
/// `base` bytes and double after every part (`max_parts = 10`).
fn expected_parts(size: u64, base: u64) -> u64 {
    let (mut parts, mut covered, mut part) = (0, 0, base);
    while covered < size {
        covered += part;
        part *= 2;
        parts += 1;
    }
    parts
}

#[test]
fn multipart_part_size_grows_and_round_trips() {
    // About 40 MiB of pg_dump output: 650,000 rows of 64 random hex digits.
    let source = fresh_db();
    source
        .psql(
            "CREATE TABLE r AS SELECT md5(random()::text) || md5(random()::text) AS v
             FROM generate_series(1, 650000)",
        )
        .unwrap();
    let catalog = fresh_catalog();
    // Parts of 5, 10, 20, 40 MiB … (max_parts / 10 = 1: the size doubles
    // after every part). No compression, so the stored size is the dump's.
    let setup = setup(
        "multipart",
        &source,
        &catalog,
        false,
        "part_size_mib = 5\nmax_parts = 10\n",
        "compression = \"none\"\n",
    );
    let manifest = backup(&setup);
    let object = &manifest["objects"][0];
    let stored = object["storedBytes"].as_u64().unwrap();
    assert!(
        stored > 5 * 3 * MIB,
        "the dump is too small to need three parts: {stored} bytes"
    );
    let parts = expected_parts(stored, 5 * MIB);
    assert!(parts >= 3, "{parts} parts for {stored} bytes");

    // moto keeps no part list after CompleteMultipartUpload, but the ETag of
    // a multipart object is `md5(part md5s)-N`, N the number of parts (as on S3).
    let key = object_key(&setup, &manifest);
    let meta = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(s3_server().operator().stat(&key))
        .unwrap_or_else(|e| panic!("stat {key}: {e}"));
    assert_eq!(meta.content_length(), stored);
    let etag = meta.etag().expect("an ETag").trim_matches('"').to_owned();
    assert_eq!(
        etag.rsplit_once('-').map(|(_, n)| n),
        Some(parts.to_string().as_str()),
        "ETag {etag}: expected a multipart object of {parts} parts ({stored} bytes)"
    );

    let restored = restore(&setup, &source);
    let digest = "SELECT count(*) || ' ' || md5(string_agg(v, '' ORDER BY v)) FROM r";
    assert_eq!(restored.psql(digest).unwrap(), source.psql(digest).unwrap());
    assert_eq!(executions(&catalog), "backup:succeeded\nrestore:succeeded");
}

#[tokio::test]
async fn manifest_is_create_only_on_s3() {
    let source = fresh_db();
    source.psql("CREATE TABLE t AS SELECT 1 AS x").unwrap();
    let catalog = fresh_catalog();
    let setup = setup("create-only", &source, &catalog, false, "", "");
    backup(&setup);

    let server: &S3Server = s3_server();
    let mut config: vigil::config::RepositoryConfig =
        toml::from_str(&format!("scheme = \"s3\"\nprefix = \"{}\"\n", setup.prefix)).unwrap();
    config.options = server.options();
    let repo = vigil::repo::Repository::open("remote", &config).unwrap();
    let listing = repo.list("orders").await.unwrap();
    assert_eq!(listing.backups.len(), 1, "{listing:?}");
    let committed = listing.backups[0].clone();

    // The same manifest again, and a changed one under the same id: both refused.
    let mut changed = committed.clone();
    changed.vigil_version = "0.0.0-overwritten".into();
    for manifest in [&committed, &changed] {
        match repo.commit_manifest(manifest).await {
            Err(vigil::repo::RepoError::AlreadyCommitted { repo, backup_id }) => {
                assert_eq!(repo, "remote");
                assert_eq!(backup_id, committed.backup_id);
            }
            other => panic!("expected AlreadyCommitted, got {other:?}"),
        }
    }
    let stored = repo
        .read_manifest("orders", &committed.backup_id)
        .await
        .unwrap();
    assert_eq!(stored, committed, "the committed manifest is unchanged");

    // A fresh id still commits: the refusal is the existing key, not the write.
    let mut other = committed.clone();
    other.backup_id = format!("{}-9", committed.backup_id).into();
    repo.commit_manifest(&other).await.unwrap();
    let listing = repo.list("orders").await.unwrap();
    let ids: Vec<&str> = listing
        .backups
        .iter()
        .map(|m| m.backup_id.as_str())
        .collect();
    assert_eq!(
        ids,
        [committed.backup_id.as_str(), other.backup_id.as_str()]
    );
}

#[test]
fn list_works_without_a_catalog_on_s3() {
    let source = fresh_db();
    source.psql("CREATE TABLE t AS SELECT 1 AS x").unwrap();
    let catalog = fresh_catalog();
    let setup = setup("no-catalog", &source, &catalog, false, "", "");
    backup(&setup);
    // Point the catalog at a closed port: listing reads the repository alone.
    let text = std::fs::read_to_string(&setup.config).unwrap();
    let cut = text.replace(
        &format!("127.0.0.1:{}/{}", catalog.port, catalog.name),
        "127.0.0.1:1/none",
    );
    std::fs::write(&setup.config, cut).unwrap();
    let (code, stdout, stderr) = cli(&setup, &["list"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("orders") && stdout.contains(&source.name),
        "{stdout}"
    );
}

/// `vigil verify` reads an encrypted backup back from S3 (content checked
/// with the identity) and names an object damaged in the bucket.
#[test]
fn verify_reads_an_s3_backup_and_names_a_damaged_object() {
    let source = fresh_db();
    source
        .psql("CREATE TABLE t AS SELECT g, md5(g::text) FROM generate_series(1, 5000) g")
        .unwrap();
    let catalog = fresh_catalog();
    let setup = setup("verify", &source, &catalog, true, "", "");
    let manifest = backup(&setup);
    let (code, stdout, stderr) = cli(&setup, &["verify", "orders"]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(stdout.contains("content checked"), "{stdout}");

    let key = object_key(&setup, &manifest);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut stored = runtime
        .block_on(s3_server().operator().read(&key))
        .unwrap()
        .to_vec();
    let middle = stored.len() / 2;
    stored[middle] ^= 0x01;
    runtime
        .block_on(s3_server().operator().write(&key, stored))
        .unwrap();
    let (code, stdout, stderr) = cli(&setup, &["verify", "orders"]);
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    let name = manifest["objects"][0]["name"].as_str().unwrap();
    let expected = manifest["objects"][0]["sha256"].as_str().unwrap();
    assert!(
        stdout.contains(name) && stdout.contains(expected),
        "{stdout}"
    );
}
