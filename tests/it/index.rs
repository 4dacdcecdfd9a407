//! The per-job listing index (`<job>/index.json.zst`): a backup's commit
//! adds its entry and a prune drops its deleted ones without a listing;
//! listings use it only where it matches the manifests, and a missing,
//! corrupt, newer or stale index is repaired with the listing identical to
//! the manifests'. On fs and on S3 (moto). And a long `list --json` is
//! written as it goes (its peak RSS).

use std::path::PathBuf;
use std::time::Duration;

use crate::harness::{PASSWORD, config_text, fresh_catalog, fresh_db, s3_server, vigil_cli};

const INDEX: &str = "index.json.zst";
/// Committed backups each scenario plants.
const PLANTED: usize = 12;
/// A directory whose manifest is not JSON, and one without a manifest.
const DAMAGED: &str = "20250102T000000Z";
const UNCOMMITTED: &str = "20250102T000100Z";

/// A repository seen from the test (opendal, as vigil sees it) and a
/// config whose job `orders` lists it.
struct Store {
    _dir: tempfile::TempDir,
    config: PathBuf,
    runtime: tokio::runtime::Runtime,
    op: opendal::Operator,
    /// `<prefix>/orders/` (S3) or `orders/` (fs).
    job_dir: String,
    /// S3: the prefix that marks this test's requests in moto's log.
    s3_prefix: Option<String>,
}

const JOB: &str = "[jobs.orders]\nkind = \"postgres\"\nsource = \"postgres://x@127.0.0.1:1/x\"\ndatabases = [\"x\"]\nrepository = \"r\"\nevery = \"1h\"\n";

fn store(
    dir: tempfile::TempDir,
    repository: String,
    op: opendal::Operator,
    job_dir: String,
    s3_prefix: Option<String>,
) -> Store {
    let catalog = "postgres://vigil@127.0.0.1:1/vigil";
    let config = format!("{repository}{JOB}");
    store_with(dir, catalog, config, op, job_dir, s3_prefix)
}

fn store_with(
    dir: tempfile::TempDir,
    catalog: &str,
    repository_and_job: String,
    op: opendal::Operator,
    job_dir: String,
    s3_prefix: Option<String>,
) -> Store {
    let config = dir.path().join("config.toml");
    let text = config_text(dir.path(), catalog, &repository_and_job);
    std::fs::write(&config, text).unwrap();
    Store {
        _dir: dir,
        config,
        runtime: tokio::runtime::Runtime::new().unwrap(),
        op,
        job_dir,
        s3_prefix,
    }
}

fn fs_store() -> Store {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("repo").display().to_string();
    let repository =
        format!("[repositories.r]\nscheme = \"fs\"\noptions = {{ root = \"{root}\" }}\n");
    let op = opendal::Operator::via_iter("fs", [("root".to_owned(), root)]).unwrap();
    store(dir, repository, op, "orders/".into(), None)
}

fn s3_store(test: &str) -> Store {
    let server = s3_server();
    let prefix = server.unique_prefix(test);
    let repository = server.repository_toml("r", &prefix, "");
    store(
        tempfile::tempdir().unwrap(),
        repository,
        server.operator(),
        format!("{prefix}/orders/"),
        Some(prefix),
    )
}

impl Store {
    fn put(&self, relative: &str, bytes: Vec<u8>) {
        let path = format!("{}{relative}", self.job_dir);
        self.runtime.block_on(self.op.write(&path, bytes)).unwrap();
    }

    fn get(&self, relative: &str) -> Option<Vec<u8>> {
        let path = format!("{}{relative}", self.job_dir);
        match self.runtime.block_on(self.op.read(&path)) {
            Ok(b) => Some(b.to_vec()),
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => None,
            Err(e) => panic!("read {path}: {e}"),
        }
    }

    fn delete(&self, relative: &str) {
        let path = format!("{}{relative}", self.job_dir);
        self.runtime
            .block_on(async { self.op.delete_with(&path).recursive(true).await })
            .unwrap();
    }

    /// `vigil list orders --json`: its output (parsed) and stderr.
    fn list(&self) -> (serde_json::Value, String) {
        let (stdout, stderr) = self.vigil(&["list", "orders", "--json"]);
        (serde_json::from_str(&stdout).unwrap(), stderr)
    }

    /// A vigil command that must succeed: its stdout and stderr.
    fn vigil(&self, args: &[&str]) -> (String, String) {
        let env = [
            ("TEST_PGPASSWORD", PASSWORD),
            s3_server_env(self.s3_prefix.is_some()),
        ];
        let (code, stdout, stderr) = vigil_cli(&self.config, args, &env);
        assert_eq!(code, 0, "vigil {args:?} failed:\n{stdout}\n{stderr}");
        (stdout, stderr)
    }

    /// The index's entries: `(backup id, manifest)`; `None` when absent.
    fn index(&self) -> Option<Vec<(String, serde_json::Value)>> {
        let bytes = self.get(INDEX)?;
        let json = zstd::decode_all(bytes.as_slice()).expect("the index is zstd");
        let index: serde_json::Value = serde_json::from_slice(&json).expect("the index is JSON");
        assert_eq!(index["formatVersion"], 1);
        assert_eq!(index["job"], "orders");
        Some(
            index["entries"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| {
                    (
                        e["manifest"]["backupId"].as_str().unwrap().to_owned(),
                        e["manifest"].clone(),
                    )
                })
                .collect(),
        )
    }

    /// Backups 0..count, a damaged manifest and an uncommitted directory.
    fn plant(&self, count: usize) {
        for i in 0..count {
            let (id, manifest) = manifest(i, "0.0.0-test");
            self.put(&format!("backups/{id}/x.dump.zst"), vec![b'x'; 1024]);
            self.put(&format!("backups/{id}/manifest.json"), manifest);
        }
        self.put(&format!("backups/{DAMAGED}/x.dump.zst"), b"x".to_vec());
        self.put(
            &format!("backups/{DAMAGED}/manifest.json"),
            b"{ not json".to_vec(),
        );
        self.put(&format!("backups/{UNCOMMITTED}/x.dump.zst"), b"x".to_vec());
    }
}

/// The S3 secret's variable when the config reads it (a harmless one otherwise).
fn s3_server_env(s3: bool) -> (&'static str, &'static str) {
    if s3 {
        let server = s3_server();
        (
            crate::harness::S3Server::SECRET_ENV,
            server.secret_access_key.as_str(),
        )
    } else {
        ("VIGIL_IT_UNUSED", "")
    }
}

/// Backup `i` of job `orders` (minute `i` of 2025-01-01) as a manifest.
fn manifest(i: usize, version: &str) -> (String, Vec<u8>) {
    let (h, m) = (i / 60, i % 60);
    let id = format!("20250101T{h:02}{m:02}00Z");
    let body = serde_json::json!({
        "formatVersion": 1,
        "job": "orders",
        "backupId": id,
        "kind": "logical",
        "startedAt": format!("2025-01-01T{h:02}:{m:02}:00Z"),
        "finishedAt": format!("2025-01-01T{h:02}:{m:02}:05Z"),
        "source": {
            "serverVersion": "15.18",
            "serverVersionNum": 150018,
            "pgDumpVersion": "pg_dump (PostgreSQL) 15.18",
            "host": "127.0.0.1:1",
        },
        "compression": { "algorithm": "zstd", "level": 3 },
        "encryption": null,
        "objects": [{
            "name": "x.dump.zst",
            "database": "x",
            "format": "pg_dump-custom",
            "storedBytes": 1024,
            "rawBytes": 9216,
            "sha256": "ab".repeat(32),
        }],
        "journalHead": null,
        "vigilVersion": version,
    });
    let mut bytes = serde_json::to_vec_pretty(&body).unwrap();
    bytes.push(b'\n');
    (id, bytes)
}

fn ids(list: &serde_json::Value) -> Vec<String> {
    list.as_array()
        .unwrap()
        .iter()
        .filter(|e| e.get("damaged").is_none())
        .map(|e| e["backupId"].as_str().unwrap().to_owned())
        .collect()
}

fn index_ids(s: &Store) -> Vec<String> {
    let mut ids: Vec<String> = s
        .index()
        .expect("an index")
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    ids.sort();
    ids
}

/// moto's log lines so far, once it stops growing (it logs after answering).
fn moto_log() -> Vec<String> {
    let path = s3_server().dir.join("server.log");
    let mut last = String::new();
    for _ in 0..30 {
        std::thread::sleep(Duration::from_millis(200));
        let now = std::fs::read_to_string(&path).unwrap();
        if now.len() == last.len() {
            break;
        }
        last = now;
    }
    last.lines().map(str::to_owned).collect()
}

/// `(list requests, manifest GETs, index GETs)` of this test's prefix in
/// moto's log lines after `from` (werkzeug colours 404 lines: no anchor
/// on the quote).
fn requests(prefix: &str, from: usize) -> (usize, usize, usize) {
    let lines: Vec<String> = moto_log()
        .into_iter()
        .skip(from)
        .filter(|l| l.contains(prefix))
        .collect();
    let count = |f: &dyn Fn(&str) -> bool| lines.iter().filter(|l| f(l)).count();
    (
        count(&|l| l.contains("GET /") && l.contains("list-type=2")),
        count(&|l| l.contains("GET /") && l.contains("/manifest.json ")),
        count(&|l| l.contains("GET /") && l.contains(&format!("/{INDEX} "))),
    )
}

/// Missing, then fresh, deleted, corrupt, newer, stale (a manifest
/// changed behind its back) and with a backup gone: the listing is the
/// manifests' every time, and the index is (re)written to match.
fn the_index_is_used_and_repaired(s: &Store) {
    s.plant(PLANTED);
    let (without, stderr) = s.list();
    assert_eq!(ids(&without).len(), PLANTED, "{without}");
    assert!(
        stderr.contains("damaged manifest") && stderr.contains("1 uncommitted"),
        "{stderr}"
    );
    assert_eq!(
        index_ids(s),
        ids(&without),
        "the first listing writes the index"
    );

    let (with, stderr_with) = s.list();
    assert_eq!(with, without, "identical with and without the index");
    assert_eq!(
        stderr_with, stderr,
        "damaged and uncommitted stay as they were"
    );

    s.delete(INDEX);
    assert_eq!(s.list().0, without);
    assert_eq!(index_ids(s), ids(&without), "a deleted index is rebuilt");

    s.put(INDEX, b"not an index".to_vec());
    assert_eq!(s.list().0, without, "a corrupt index is not fatal");
    assert_eq!(index_ids(s), ids(&without), "a corrupt index is rebuilt");

    let newer = serde_json::json!({ "formatVersion": 99, "job": "orders", "entries": [] });
    s.put(
        INDEX,
        zstd::encode_all(newer.to_string().as_bytes(), 3).unwrap(),
    );
    assert_eq!(s.list().0, without);
    assert_eq!(index_ids(s), ids(&without), "a newer index is rebuilt");

    // Behind the index's back: a different (longer) manifest for backup 3.
    let (id, changed) = manifest(3, "0.0.0-changed-behind-its-back");
    s.put(&format!("backups/{id}/manifest.json"), changed);
    let (listed, _) = s.list();
    let mut expected = without.clone();
    expected[3]["vigilVersion"] = "0.0.0-changed-behind-its-back".into();
    assert_eq!(listed, expected, "the changed manifest wins over the index");
    let entry = s
        .index()
        .unwrap()
        .into_iter()
        .find(|(i, _)| *i == id)
        .unwrap();
    assert_eq!(entry.1["vigilVersion"], "0.0.0-changed-behind-its-back");

    let (gone, _) = manifest(0, "");
    s.delete(&format!("backups/{gone}/"));
    let (listed, _) = s.list();
    assert_eq!(ids(&listed), ids(&expected)[1..].to_vec());
    assert_eq!(
        index_ids(s),
        ids(&listed),
        "the entry of a backup gone is dropped"
    );
}

#[test]
fn on_fs_the_index_is_used_and_repaired() {
    the_index_is_used_and_repaired(&fs_store());
}

#[test]
fn on_s3_the_index_is_used_and_repaired() {
    the_index_is_used_and_repaired(&s3_store("index-repair"));
}

/// With a fresh index a listing reads no committed manifest: its GETs are
/// the index and the two directories without a good manifest, whatever
/// the number of backups (the listing pages are the rest).
#[test]
fn on_s3_a_fresh_index_leaves_only_list_pages_and_one_get() {
    let s = s3_store("index-gets");
    let prefix = s.s3_prefix.clone().unwrap();
    s.plant(PLANTED);
    let from = moto_log().len();
    let (without, _) = s.list();
    let (lists, manifests, _) = requests(&prefix, from);
    assert_eq!(lists, 1, "one page lists {PLANTED} backups");
    assert_eq!(
        manifests,
        PLANTED + 2,
        "without an index every manifest is read"
    );

    let from = moto_log().len();
    let (with, _) = s.list();
    assert_eq!(with, without);
    let (lists, manifests, index) = requests(&prefix, from);
    assert_eq!(
        (lists, manifests, index),
        (1, 2, 1),
        "only the damaged and the uncommitted directory are read"
    );
}

/// Real backups and a real prune on the shipped defaults (plus the
/// retention that makes the prune delete): the index follows each.
#[test]
fn the_index_is_written_after_each_backup_and_prune() {
    let source = fresh_db();
    source.psql("CREATE TABLE t AS SELECT 1 AS x").unwrap();
    let catalog = fresh_catalog();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("repo");
    let extra = format!(
        "[repositories.local]\nscheme = \"fs\"\noptions = {{ root = \"{}\" }}\n\
         [jobs.orders]\nkind = \"postgres\"\nsource = \"{}\"\npassword = \"${{TEST_PGPASSWORD}}\"\ndatabases = [\"{}\"]\nrepository = \"local\"\nevery = \"1h\"\n\
         [jobs.orders.retention]\nkeep_last = 1\n",
        root.display(),
        source.url(),
        source.name
    );
    let config = dir.path().join("config.toml");
    std::fs::write(&config, config_text(dir.path(), &catalog.url(), &extra)).unwrap();
    let env = [("TEST_PGPASSWORD", PASSWORD)];
    let index_ids = || -> Vec<String> {
        let bytes = std::fs::read(root.join("orders").join(INDEX)).expect("an index");
        let index: serde_json::Value =
            serde_json::from_slice(&zstd::decode_all(bytes.as_slice()).unwrap()).unwrap();
        index["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["manifest"]["backupId"].as_str().unwrap().to_owned())
            .collect()
    };
    let mut committed = Vec::new();
    for _ in 0..2 {
        let (code, stdout, stderr) = vigil_cli(&config, &["backup", "orders"], &env);
        assert_eq!(code, 0, "{stdout}\n{stderr}");
        let listed: Vec<String> = std::fs::read_dir(root.join("orders/backups"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !committed.contains(n))
            .collect();
        committed.extend(listed);
        committed.sort();
        assert_eq!(index_ids(), committed, "after backup {}", committed.len());
        std::thread::sleep(Duration::from_millis(1100));
    }
    let (code, stdout, stderr) = vigil_cli(&config, &["prune", "orders"], &env);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert_eq!(index_ids(), committed[1..].to_vec(), "after the prune");
}

/// This test's request lines in moto's log after `from`.
fn lines_of(prefix: &str, from: usize) -> Vec<String> {
    moto_log()
        .into_iter()
        .skip(from)
        .filter(|l| l.contains(prefix))
        .collect()
}

/// Listings of the whole `orders/backups/` (a full listing's pages, not
/// the look into one backup's directory), manifest GETs, index GETs and
/// index PUTs among `lines`.
fn backup_path_requests(prefix: &str, lines: &[String]) -> (usize, usize, usize, usize) {
    let whole = format!("prefix={prefix}/orders/backups/");
    let count = |f: &dyn Fn(&str) -> bool| lines.iter().filter(|l| f(l)).count();
    (
        count(&|l| {
            l.split_once(&whole)
                .is_some_and(|(_, rest)| rest.starts_with([' ', '&']))
        }),
        count(&|l| l.contains("GET /") && l.contains("/manifest.json ")),
        count(&|l| l.contains("GET /") && l.contains(&format!("/{INDEX} "))),
        count(&|l| l.contains("PUT /") && l.contains(&format!("/{INDEX} "))),
    )
}

/// A real backup and a real prune on S3, on the shipped defaults plus the
/// retention that makes the prune delete: the commit adds its own entry
/// to the index (a stat, one index GET and one PUT, no listing of the
/// backups and no manifest read, whatever their number), the prune drops
/// the deleted entries without listing again, and the listings stay the
/// manifests' (the same bytes with the index deleted).
#[test]
fn on_s3_a_commit_and_a_prune_update_the_index_without_a_listing() {
    let source = fresh_db();
    source.psql("CREATE TABLE t AS SELECT 1 AS x").unwrap();
    let catalog = fresh_catalog();
    let server = s3_server();
    let prefix = server.unique_prefix("index-commit");
    let job = format!(
        "[jobs.orders]\nkind = \"postgres\"\nsource = \"{}\"\npassword = \"${{TEST_PGPASSWORD}}\"\n\
         databases = [\"{}\"]\nrepository = \"r\"\nevery = \"1h\"\n[jobs.orders.retention]\nkeep_last = 1\n",
        source.url(),
        source.name
    );
    let s = store_with(
        tempfile::tempdir().unwrap(),
        &catalog.url(),
        format!("{}{job}", server.repository_toml("r", &prefix, "")),
        server.operator(),
        format!("{prefix}/orders/"),
        Some(prefix.clone()),
    );
    s.plant(PLANTED);
    let (planted, _) = s.list();
    assert_eq!(index_ids(&s), ids(&planted), "the listing wrote the index");

    let from = moto_log().len();
    s.vigil(&["backup", "orders"]);
    let lines = lines_of(&prefix, from);
    assert_eq!(
        backup_path_requests(&prefix, &lines),
        (0, 0, 1, 1),
        "the commit neither lists the backups nor reads a manifest:\n{}",
        lines.join("\n")
    );
    let (listed, _) = s.list();
    let all = ids(&listed);
    assert_eq!(all.len(), PLANTED + 1, "{listed}");
    assert_eq!(index_ids(&s), all, "the new backup's entry is in the index");
    let from = moto_log().len();
    assert_eq!(s.list().0, listed);
    let (_, manifests, _, puts) = backup_path_requests(&prefix, &lines_of(&prefix, from));
    assert_eq!(
        (manifests, puts),
        (2, 0),
        "the entry the commit added stands for its manifest (only the damaged and the uncommitted directory are read)"
    );
    s.delete(INDEX);
    assert_eq!(s.list().0, listed, "identical to the manifests alone");

    let from = moto_log().len();
    s.vigil(&["prune", "orders"]);
    let lines = lines_of(&prefix, from);
    let (lists, _, _, puts) = backup_path_requests(&prefix, &lines);
    assert_eq!(
        (lists, puts),
        (1, 1),
        "the prune's own plan is its only listing:\n{}",
        lines.join("\n")
    );
    let (pruned, _) = s.list();
    assert_eq!(ids(&pruned), all[PLANTED..].to_vec(), "keep_last = 1");
    assert_eq!(
        index_ids(&s),
        ids(&pruned),
        "the prune dropped the deleted entries"
    );
    s.delete(INDEX);
    assert_eq!(s.list().0, pruned, "identical to the manifests alone");
}

/// Runs `vigil ARGS` with stdout to a file: (exit code, peak RSS in KiB,
/// stdout), the RSS from wait4 on that very child.
fn vigil_measured(config: &std::path::Path, args: &[&str]) -> (i32, i64, String) {
    let env = [("TEST_PGPASSWORD", PASSWORD), s3_server_env(false)];
    use std::os::unix::process::ExitStatusExt;
    let out = tempfile::NamedTempFile::new().unwrap();
    // Reaped by wait4 below, which also gives its rusage.
    #[allow(clippy::zombie_processes)]
    let child = std::process::Command::new(crate::harness::VIGIL)
        .arg("--config")
        .arg(config)
        .args(args)
        .envs(env)
        .stdin(std::process::Stdio::null())
        .stdout(out.reopen().unwrap())
        .spawn()
        .unwrap();
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid, and wait4 writes only into it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child, which nothing else waits for.
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as i32, "wait4");
    let code = std::process::ExitStatus::from_raw(status)
        .code()
        .unwrap_or(-1);
    let stdout = std::fs::read_to_string(out.path()).unwrap();
    (code, usage.ru_maxrss, stdout)
}

/// `vigil list --json` over 5,000 backups writes each backup as it goes:
/// its peak RSS stays within a few MiB of the table listing's, which reads
/// the same backups (it used to hold them all as JSON values and then as
/// one string besides: 27 MiB more here).
#[test]
fn a_long_json_listing_is_written_as_it_goes() {
    const COUNT: i64 = 5_000;
    let s = fs_store();
    let backups = s._dir.path().join("repo/orders/backups");
    let (_, template) = manifest(0, "0.0.0-test");
    let template: serde_json::Value = serde_json::from_slice(&template).unwrap();
    let base = chrono::DateTime::parse_from_rfc3339("2025-01-01T00:00:00Z").unwrap();
    for i in 0..COUNT {
        let at = base + chrono::TimeDelta::minutes(i);
        let id = at.format("%Y%m%dT%H%M%SZ").to_string();
        let mut m = template.clone();
        m["backupId"] = id.clone().into();
        m["startedAt"] = at.format("%Y-%m-%dT%H:%M:%SZ").to_string().into();
        m["finishedAt"] = (at + chrono::TimeDelta::seconds(5))
            .format("%Y-%m-%dT%H:%M:%SZ")
            .to_string()
            .into();
        let dir = backups.join(&id);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("x.dump.zst"), [b'x'; 1024]).unwrap();
        std::fs::write(
            dir.join("manifest.json"),
            serde_json::to_vec_pretty(&m).unwrap(),
        )
        .unwrap();
    }
    // The first listing writes the index; both measured ones use it.
    assert_eq!(ids(&s.list().0).len(), COUNT as usize);
    let (code, table_kib, _) = vigil_measured(&s.config, &["list", "orders"]);
    assert_eq!(code, 0, "vigil list orders failed");
    let (code, json_kib, json) = vigil_measured(&s.config, &["list", "orders", "--json"]);
    assert_eq!(code, 0, "{json}");
    let listed: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(ids(&listed).len(), COUNT as usize);
    assert!(
        json_kib <= table_kib + 8 * 1024,
        "peak RSS: --json {json_kib} KiB, table {table_kib} KiB"
    );
}
