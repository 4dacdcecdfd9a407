//! `vigil verify` end to end: real backups in real repositories read back,
//! then damaged by hand (a flipped byte, a truncation, an undecodable but
//! rehashed object) and named.

use std::path::{Path, PathBuf};

use crate::harness::{
    PASSWORD, TestDb, config_text, fresh_catalog, fresh_db, unreachable_config, vigil_cli,
};

const ENV: [(&str, &str); 3] = [
    ("TEST_PGPASSWORD", PASSWORD),
    ("JOB_PGPASSWORD", PASSWORD),
    ("PGPASSWORD", PASSWORD),
];

fn run(config: &Path, args: &[&str]) -> (i32, String, String) {
    vigil_cli(config, args, &ENV)
}

fn backup(config: &Path, job: &str) {
    let (code, stdout, stderr) = run(config, &["backup", job]);
    assert_eq!(code, 0, "backup failed:\n{stdout}\n{stderr}");
}

pub(crate) fn newest(config: &Path, job: &str) -> serde_json::Value {
    crate::harness::list_manifests(config, job, &ENV)
        .last()
        .cloned()
        .expect("a backup listed")
}

fn verify_json(config: &Path, args: &[&str]) -> (i32, serde_json::Value, String) {
    let mut all = vec!["verify"];
    all.extend_from_slice(args);
    all.push("--json");
    let (code, stdout, stderr) = run(config, &all);
    let doc = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}):\n{stdout}\n{stderr}"));
    (code, doc, stderr)
}

pub(crate) fn backup_dir(repo: &Path, job: &str, manifest: &serde_json::Value) -> PathBuf {
    repo.join(job)
        .join("backups")
        .join(manifest["backupId"].as_str().unwrap())
}

/// The object holding the database (not the globals).
pub(crate) fn data_object(manifest: &serde_json::Value) -> String {
    manifest["objects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["format"] == "pg_dump-custom" || o["format"] == "tar")
        .expect("a data object")["name"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Every journal line under `state` (the journal is the state dir's).
pub(crate) fn journal_text(state: &Path) -> String {
    let mut text = String::new();
    let mut stack = vec![state.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(t) = std::fs::read_to_string(&path) {
                text.push_str(&t);
            }
        }
    }
    text
}

pub(crate) struct Example {
    pub(crate) _catalog: TestDb,
    pub(crate) _source: TestDb,
    pub(crate) dir: tempfile::TempDir,
    pub(crate) config: PathBuf,
}

/// config.toml.example as shipped, with only paths and credentials set.
pub(crate) fn example() -> Example {
    let crate::truth::ShippedExample {
        catalog,
        source,
        dir,
        text,
    } = crate::truth::shipped_example(
        "CREATE TABLE orders AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 20000) g",
    );
    let config = dir.path().join("config.toml");
    std::fs::write(&config, text).unwrap();
    Example {
        _catalog: catalog,
        _source: source,
        dir,
        config,
    }
}

#[test]
fn the_shipped_defaults_verify_a_good_backup_then_name_a_flipped_byte_and_a_truncation() {
    let e = example();
    // As the shipped defaults are used: the job's password from its file.
    for args in [&["migrate"][..], &["backup", "orders"]] {
        let (code, stdout, stderr) = vigil_cli(&e.config, args, &[]);
        assert_eq!(code, 0, "{args:?}:\n{stdout}\n{stderr}");
    }
    let manifest = newest(&e.config, "orders");
    let (code, stdout, stderr) = run(&e.config, &["verify", "orders"]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert_eq!(stderr, "", "quiet on success");
    let id = manifest["backupId"].as_str().unwrap();
    assert!(
        stdout.contains(&format!("orders/{id}: ok")) && stdout.contains("content checked"),
        "{stdout}"
    );
    assert_eq!(stdout.lines().count(), 1, "one line per backup: {stdout}");
    assert!(journal_text(&e.dir.path().join("state")).contains("verify.succeeded"));
    // The run is in the job's verification record too.
    let record_path = e.dir.path().join("repo/orders/proofs/verify.json");
    let record = |path: &Path| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    };
    let r = record(&record_path);
    assert_eq!(r["lastRun"]["trigger"], "cli", "{r:#}");
    assert!(r["lastSuccess"].is_string(), "{r:#}");
    assert_eq!(
        r["verified"].as_object().unwrap().len(),
        manifest["objects"].as_array().unwrap().len(),
        "{r:#}"
    );

    // A flipped byte: exit 1 naming the backup, the object and both hashes.
    let name = data_object(&manifest);
    let object = backup_dir(&e.dir.path().join("repo"), "orders", &manifest).join(&name);
    let good = std::fs::read(&object).unwrap();
    let mut flipped = good.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x01;
    std::fs::write(&object, &flipped).unwrap();
    let (code, doc, stderr) = verify_json(&e.config, &["orders"]);
    assert_eq!(code, 1, "{doc}\n{stderr}");
    let bad = &doc["backups"][0]["bad"][0];
    assert_eq!(bad["backupId"], id);
    assert_eq!(bad["object"], name.as_str());
    let expected = manifest["objects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == name.as_str())
        .unwrap()["sha256"]
        .clone();
    assert_eq!(bad["expectedSha256"], expected);
    let found = bad["foundSha256"].as_str().unwrap();
    assert!(found.len() == 64 && found != expected, "{bad}");
    assert_eq!(doc["ok"], false);
    assert!(journal_text(&e.dir.path().join("state")).contains("verify.failed"));
    let r = record(&record_path);
    assert_eq!(r["bad"][0]["object"], name.as_str(), "{r:#}");
    assert_eq!(r["lastRun"]["ok"], false, "{r:#}");

    // A truncated object: named, in the human output too.
    std::fs::write(&object, &good[..good.len() / 3]).unwrap();
    let (code, stdout, stderr) = run(&e.config, &["verify", "orders"]);
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    assert!(stdout.contains(&format!("orders/{id}: BAD")), "{stdout}");
    assert!(
        stdout.contains(&name)
            && stdout.contains(&format!("{} bytes read", good.len() / 3))
            && stdout.contains(expected.as_str().unwrap()),
        "{stdout}"
    );
    assert!(
        stderr.contains("verification failed: 1 bad object"),
        "{stderr}"
    );

    // A whole zstd frame of something that is not a dump, rehashed: only
    // pg_restore reading the table of contents can tell.
    let payload = zstd::encode_all(&b"not a pg_dump archive\n".repeat(1000)[..], 3).unwrap();
    std::fs::write(&object, &payload).unwrap();
    let dir = backup_dir(&e.dir.path().join("repo"), "orders", &manifest);
    rehash(&dir.join("manifest.json"), &name, &payload);
    let (code, doc, stderr) = verify_json(&e.config, &["orders", "--backup", id]);
    assert_eq!(code, 1, "{doc}\n{stderr}");
    let error = doc["backups"][0]["bad"][0]["error"].as_str().unwrap();
    assert!(error.contains("pg_restore --list"), "{doc}");
}

/// Writes `payload`'s hash and size for object `name` into the manifest.
fn rehash(manifest_path: &Path, name: &str, payload: &[u8]) {
    let mut stored: serde_json::Value =
        serde_json::from_slice(&std::fs::read(manifest_path).unwrap()).unwrap();
    for o in stored["objects"].as_array_mut().unwrap() {
        if o["name"] == name {
            o["sha256"] = sha256_hex(payload).into();
            o["storedBytes"] = payload.len().into();
        }
    }
    std::fs::write(manifest_path, serde_json::to_vec_pretty(&stored).unwrap()).unwrap();
}

/// A repository of `kind` jobs: `orders` (postgres) and `tree` (files).
struct Setup {
    _catalog: TestDb,
    _source: TestDb,
    dir: tempfile::TempDir,
    repo: PathBuf,
    identity: age::x25519::Identity,
}

fn setup() -> Setup {
    let catalog = fresh_catalog();
    let source = fresh_db();
    source
        .psql("CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 5000) g")
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(tree.join("sub")).unwrap();
    std::fs::write(tree.join("a.txt"), "hello").unwrap();
    std::fs::write(tree.join("sub/b.bin"), vec![7u8; 100_000]).unwrap();
    let setup = Setup {
        repo: dir.path().join("repo"),
        identity: age::x25519::Identity::generate(),
        _catalog: catalog,
        _source: source,
        dir,
    };
    let key = setup.dir.path().join("age.key");
    {
        use age::secrecy::ExposeSecret;
        let secret = setup.identity.to_string();
        std::fs::write(&key, format!("{}\n", secret.expose_secret())).unwrap();
    }
    setup
}

impl Setup {
    /// The config, with or without the identity file.
    fn config(&self, with_identity: bool) -> PathBuf {
        let identity = if with_identity {
            format!(
                "identity_file = \"{}\"\n",
                self.dir.path().join("age.key").display()
            )
        } else {
            String::new()
        };
        let extra = format!(
            "[repositories.local]\nscheme = \"fs\"\noptions = {{ root = \"{repo}\" }}\n\
             [repositories.local.encryption]\nrecipients = [\"{recipient}\"]\n{identity}\
             [jobs.orders]\nkind = \"postgres\"\nsource = \"{source}\"\npassword = \"${{JOB_PGPASSWORD}}\"\n\
             databases = [\"{db}\"]\nrepository = \"local\"\nevery = \"1h\"\n\
             [jobs.tree]\nkind = \"files\"\npaths = [\"{tree}\"]\nrepository = \"local\"\nevery = \"1h\"\n",
            repo = self.repo.display(),
            recipient = self.identity.to_public(),
            source = self._source.url(),
            db = self._source.name,
            tree = self.dir.path().join("tree").display(),
        );
        let name = if with_identity {
            "with.toml"
        } else {
            "without.toml"
        };
        let path = self.dir.path().join(name);
        std::fs::write(
            &path,
            config_text(self.dir.path(), &self._catalog.url(), &extra),
        )
        .unwrap();
        path
    }
}

/// `data` age-encrypted to `recipient`: a valid age file.
fn encrypt(recipient: &age::x25519::Recipient, data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let encryptor =
        age::Encryptor::with_recipients(std::iter::once(recipient as &dyn age::Recipient)).unwrap();
    let mut out = Vec::new();
    let mut writer = encryptor.wrap_output(&mut out).unwrap();
    writer.write_all(data).unwrap();
    writer.finish().unwrap();
    out
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

#[test]
fn an_encrypted_repository_without_identity_checks_stored_bytes_and_with_it_finds_an_undecodable_object()
 {
    let s = setup();
    let with = s.config(true);
    let without = s.config(false);
    backup(&with, "orders");

    let (code, stdout, stderr) = run(&without, &["verify", "orders"]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(
        stdout.contains(": ok (") && stdout.contains("stored bytes only"),
        "{stdout}"
    );
    assert!(
        stdout.contains("no encryption.identity_file"),
        "says why: {stdout}"
    );
    let (code, doc, _) = verify_json(&without, &["orders"]);
    assert_eq!(code, 0);
    assert_eq!(doc["contentChecked"], false, "{doc}");
    assert!(doc["note"].as_str().unwrap().contains("stored bytes only"));
    let (code, doc, _) = verify_json(&with, &["orders"]);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(doc["contentChecked"], true, "{doc}");

    // A valid age file around a cut zstd frame, rehashed into the manifest:
    // the stored bytes match, only decoding can tell.
    let manifest = newest(&with, "orders");
    let id = manifest["backupId"].as_str().unwrap().to_owned();
    let name = data_object(&manifest);
    let dir = backup_dir(&s.repo, "orders", &manifest);
    let frame = zstd::encode_all(&vec![42u8; 200_000][..], 3).unwrap();
    let payload = encrypt(&s.identity.to_public(), &frame[..frame.len() - 5]);
    std::fs::write(dir.join(&name), &payload).unwrap();
    rehash(&dir.join("manifest.json"), &name, &payload);

    // Without the key that is invisible (the bytes are as the manifest says) ...
    let (code, stdout, stderr) = run(&without, &["verify", "orders", "--backup", &id]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    // ... with it, the decode error is named.
    let (code, doc, stderr) = verify_json(&with, &["orders", "--backup", &id]);
    assert_eq!(code, 1, "{doc}\n{stderr}");
    let bad = &doc["backups"][0]["bad"][0];
    assert_eq!(bad["object"], name.as_str(), "{doc}");
    assert!(bad.get("expectedSha256").is_none(), "{bad}");
    assert!(
        bad["error"].as_str().unwrap().contains("cannot decode"),
        "{bad}"
    );
}

#[test]
fn a_files_backup_verifies_and_all_reads_every_backup() {
    let s = setup();
    let with = s.config(true);
    backup(&with, "tree");
    backup(&with, "tree");
    let (code, stdout, stderr) = run(&with, &["verify", "tree", "--all"]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert_eq!(
        stdout.lines().filter(|l| l.contains(": ok (")).count(),
        2,
        "{stdout}"
    );

    // A tar cut short inside a valid zstd frame and age file, rehashed:
    // reading the tar stream to its end is what finds it.
    let manifests = crate::harness::list_manifests(&with, "tree", &ENV);
    let oldest = &manifests[0];
    let name = data_object(oldest);
    let dir = backup_dir(&s.repo, "tree", oldest);
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(100_000);
    header.set_mode(0o644);
    header.set_cksum();
    tar.append_data(&mut header, "big", &vec![1u8; 100_000][..])
        .unwrap();
    let whole = tar.into_inner().unwrap();
    let frame = zstd::encode_all(&whole[..50_000], 3).unwrap();
    let payload = encrypt(&s.identity.to_public(), &frame);
    std::fs::write(dir.join(&name), &payload).unwrap();
    rehash(&dir.join("manifest.json"), &name, &payload);

    let (code, doc, _) = verify_json(&with, &["tree", "--all"]);
    assert_eq!(code, 1, "{doc}");
    let backups = doc["backups"].as_array().unwrap();
    assert_eq!(backups.len(), 2, "{doc}");
    assert_eq!(backups[0]["bad"][0]["object"], name.as_str(), "{doc}");
    assert!(backups[1]["bad"].as_array().unwrap().is_empty(), "{doc}");
    // The newest alone (the default) is still good.
    let (code, _, stderr) = run(&with, &["verify", "tree"]);
    assert_eq!(code, 0, "{stderr}");

    // An object deleted from the repository is named too.
    let newest = &manifests[1];
    let name = data_object(newest);
    std::fs::remove_file(backup_dir(&s.repo, "tree", newest).join(&name)).unwrap();
    let (code, stdout, stderr) = run(&with, &["verify", "tree"]);
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    assert!(
        stdout.contains(": BAD (1 of 1 object(s))") && stdout.contains(&name),
        "{stdout}"
    );
    assert!(stdout.contains("missing object"), "{stdout}");
}

#[test]
fn an_unreachable_repository_exits_3_and_bad_usage_64() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens on port 1: neither the repository nor the catalog
    // (which verify never needs) answers.
    let config = unreachable_config(dir.path());
    let (code, _, stderr) = run(&config, &["verify", "orders", "--backup", "x", "--all"]);
    assert_eq!(code, 64, "{stderr}");
    let (code, doc, stderr) = verify_json(&config, &["orders"]);
    assert_eq!(code, 3, "{doc}\n{stderr}");
    assert_eq!(doc["error"]["code"], "unreachable", "{doc}");
    assert!(
        stderr.contains("repository `remote`") && !stderr.contains("s3cret-key-never-shown"),
        "{stderr}"
    );
}
