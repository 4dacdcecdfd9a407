//! One backend-agnostic suite, run against every storage service on a real
//! server on loopback: fs, S3 (moto), SFTP (OpenSSH), FTP (pyftpdlib),
//! Azure Blob (Azurite) and GCS (fake-gcs-server).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::harness::{
    PASSWORD, TestDb, VIGIL, config_text, fresh_catalog, fresh_db, s3_server, storage_server,
    vigil_cli,
};

/// Where a test's repository lives, and what its config needs.
struct Store {
    /// `[repositories.store]`, with `extra` lines in its table.
    toml: Box<dyn Fn(&str) -> String>,
    env: Vec<(String, String)>,
    operator: opendal::Operator,
    prefix: String,
    _dir: Option<tempfile::TempDir>,
}

fn store(kind: &str, test: &str) -> Store {
    let prefix = format!("it-{}-{test}-{kind}", std::process::id());
    match kind {
        "fs" => {
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path().display().to_string();
            let operator =
                opendal::Operator::via_iter("fs", [("root".to_owned(), root.clone())]).unwrap();
            let p = prefix.clone();
            Store {
                toml: Box::new(move |extra| {
                    format!(
                        "[repositories.store]\nscheme = \"fs\"\nprefix = \"{p}\"\n{extra}\n[repositories.store.options]\nroot = \"{root}\"\n"
                    )
                }),
                env: vec![],
                operator,
                prefix,
                _dir: Some(dir),
            }
        }
        "s3" => {
            let server = s3_server();
            let (k, v) = server.env();
            let p = prefix.clone();
            Store {
                toml: Box::new(move |extra| server.repository_toml("store", &p, extra)),
                env: vec![(k.to_owned(), v.to_owned())],
                operator: server.operator(),
                prefix,
                _dir: None,
            }
        }
        other => {
            let server = storage_server(other);
            let p = prefix.clone();
            Store {
                toml: Box::new(move |extra| server.repository_toml("store", &p, extra)),
                env: vec![],
                operator: server.operator(),
                prefix,
                _dir: None,
            }
        }
    }
}

/// About 12 MiB that compression cannot shrink much: more than two 5 MiB parts.
fn source() -> TestDb {
    let db = fresh_db();
    db.psql(
        "CREATE TABLE t AS SELECT g AS id, \
         (SELECT string_agg(md5(random()::text || g || s), '') FROM generate_series(1, 100) s) AS v \
         FROM generate_series(1, 4000) g",
    )
    .unwrap();
    db
}

struct Setup {
    dir: tempfile::TempDir,
    store: Store,
    source: TestDb,
    catalog: TestDb,
}

impl Setup {
    /// A config file for the job `orders` on this store.
    fn config(&self, name: &str, repo_extra: &str) -> std::path::PathBuf {
        let extra = format!(
            "{}[jobs.orders]\nkind = \"postgres\"\nsource = \"{}\"\npassword = \"${{TEST_PGPASSWORD}}\"\ndatabases = [\"{}\"]\n\
             repository = \"store\"\nevery = \"1h\"\ncompression = \"none\"\n\
             [jobs.orders.retention]\nkeep_last = 1\norphan_grace = \"0s\"\n",
            (self.store.toml)(repo_extra),
            self.source.url(),
            self.source.name
        );
        let path = self.dir.path().join(name);
        std::fs::write(
            &path,
            config_text(self.dir.path(), &self.catalog.url(), &extra),
        )
        .unwrap();
        path
    }

    fn env(&self) -> Vec<(&str, &str)> {
        let mut env = vec![("TEST_PGPASSWORD", PASSWORD), ("PGPASSWORD", PASSWORD)];
        env.extend(self.store.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        env
    }

    fn cli(&self, config: &std::path::Path, args: &[&str]) -> (i32, String, String) {
        vigil_cli(config, args, &self.env())
    }

    fn backups(&self, config: &std::path::Path) -> Vec<serde_json::Value> {
        crate::harness::list_manifests(config, "orders", &self.env())
    }

    /// Every object stored under the job's backups, by path.
    async fn objects(&self) -> Vec<String> {
        let dir = format!("{}/orders/backups/", self.store.prefix);
        match self.store.operator.list_with(&dir).recursive(true).await {
            Ok(entries) => entries
                .into_iter()
                .filter(|e| !e.path().ends_with('/'))
                .map(|e| e.path().to_owned())
                .collect(),
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => vec![],
            Err(e) => panic!("listing {dir}: {e}"),
        }
    }
}

async fn suite(kind: &str) {
    let setup = Setup {
        dir: tempfile::tempdir().unwrap(),
        store: store(kind, "suite"),
        source: source(),
        catalog: fresh_catalog(),
    };
    let config = setup.config("config.toml", "part_size_mib = 5\n");

    // Backup, list, and the stored bytes' checksum against the manifest.
    let (code, _, stderr) = setup.cli(&config, &["backup", "orders"]);
    assert_eq!(code, 0, "{kind}: {stderr}");
    let backups = setup.backups(&config);
    assert_eq!(backups.len(), 1, "{kind}");
    let manifest = &backups[0];
    let id = manifest["backupId"].as_str().unwrap().to_owned();
    for object in manifest["objects"].as_array().unwrap() {
        let name = object["name"].as_str().unwrap();
        let path = format!("{}/orders/backups/{id}/{name}", setup.store.prefix);
        let bytes = setup.store.operator.read(&path).await.unwrap().to_vec();
        assert_eq!(
            bytes.len() as u64,
            object["storedBytes"].as_u64().unwrap(),
            "{kind}: {name}"
        );
        assert_eq!(
            hex::encode(Sha256::digest(&bytes)),
            object["sha256"].as_str().unwrap(),
            "{kind}: {name}"
        );
    }

    // Restore into a new database: the same rows.
    let target = format!("restored_{}", setup.source.name);
    let url = setup.source.url().replace(&setup.source.name, &target);
    let (code, _, stderr) = setup.cli(
        &config,
        &["restore", "orders", "--latest", "--to", &url, "--create"],
    );
    assert_eq!(code, 0, "{kind}: {stderr}");
    let count = |db: &str| {
        crate::harness::shared_psql(db, "SELECT count(*), sum(length(v)) FROM t").unwrap()
    };
    assert_eq!(count(&target), count(&setup.source.name), "{kind}");

    // An upload cut off mid-stream (SIGKILL while throttled): no manifest.
    let throttled = setup.config(
        "throttled.toml",
        "part_size_mib = 5\nmax_upload_rate = \"2MiB\"\n",
    );
    let mut child = Command::new(VIGIL)
        .arg("--config")
        .arg(&throttled)
        .args(["backup", "orders"])
        .envs(setup.env())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    std::thread::sleep(Duration::from_millis(3500));
    assert!(
        child.try_wait().unwrap().is_none(),
        "{kind}: the throttled backup finished within {:?}",
        started.elapsed()
    );
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        setup.backups(&config).len(),
        1,
        "{kind}: the cut-off run is not a backup"
    );

    // A second backup, then prune: keep_last 1 forgets the first and
    // collects whatever the cut-off run left.
    std::thread::sleep(Duration::from_millis(1100));
    let (code, _, stderr) = setup.cli(&config, &["backup", "orders"]);
    assert_eq!(code, 0, "{kind}: {stderr}");
    assert_eq!(setup.backups(&config).len(), 2, "{kind}");
    let (code, stdout, stderr) = setup.cli(&config, &["prune", "orders", "--json"]);
    assert_eq!(code, 0, "{kind}: {stderr}");
    let outcome: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        outcome[0]["deleted"].as_array().unwrap().len(),
        1,
        "{kind}: {stdout}"
    );
    let kept = setup.backups(&config);
    assert_eq!(kept.len(), 1, "{kind}");
    let kept_id = kept[0]["backupId"].as_str().unwrap();
    let objects = setup.objects().await;
    assert!(!objects.is_empty(), "{kind}");
    for path in &objects {
        assert!(
            path.contains(&format!("/{kept_id}/")),
            "{kind}: {path} left after prune"
        );
    }
}

macro_rules! backend_suite {
    ($($name:ident => $kind:literal),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            suite($kind).await;
        }
    )*};
}

backend_suite! {
    suite_on_fs => "fs",
    suite_on_s3 => "s3",
    suite_on_sftp => "sftp",
    suite_on_ftp => "ftp",
    suite_on_azure_blob => "azblob",
    suite_on_gcs => "gcs",
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_reports_each_repository_and_what_it_guarantees() {
    let ftp = store("ftp", "health");
    let s3 = store("s3", "health");
    let source = fresh_db();
    let catalog = fresh_catalog();
    let extra = format!(
        "{}{}[jobs.a]\nkind = \"postgres\"\nsource = \"{}\"\npassword = \"${{TEST_PGPASSWORD}}\"\ndatabases = [\"{}\"]\nrepository = \"store\"\nevery = \"1h\"\ncatch_up = false\n\
         [jobs.b]\nkind = \"postgres\"\nsource = \"{}\"\npassword = \"${{TEST_PGPASSWORD}}\"\ndatabases = [\"{}\"]\nrepository = \"objects\"\nevery = \"1h\"\ncatch_up = false\n",
        (ftp.toml)(""),
        (s3.toml)("").replace("[repositories.store", "[repositories.objects"),
        source.url(),
        source.name,
        source.url(),
        source.name,
    );
    let mut options = crate::harness::VigilOptions::default();
    options.env.extend(s3.env.iter().cloned());
    let vigil = crate::harness::Vigil::start_with(&catalog.url(), &extra, options);
    vigil.wait_ready();
    let detailed = vigil.get("/health/detailed").json();
    let writable = |repo: &str| detailed["checks"][format!("{repo}:writable")][0].clone();
    let ftp_check = writable("store");
    assert_eq!(ftp_check["status"], "pass", "{ftp_check}");
    assert_eq!(ftp_check["observedUnit"], "ms");
    assert_eq!(
        ftp_check["vigil"]["guarantees"]["createOnlyCommit"], false,
        "{ftp_check}"
    );
    assert_eq!(ftp_check["vigil"]["guarantees"]["atomicObjects"], false);
    let s3_check = writable("objects");
    assert_eq!(s3_check["status"], "pass", "{s3_check}");
    assert_eq!(
        s3_check["vigil"]["guarantees"]["createOnlyCommit"], true,
        "{s3_check}"
    );
    assert_eq!(s3_check["vigil"]["guarantees"]["multipart"], true);
    assert_eq!(detailed["checks"]["store:reachable"][0]["status"], "pass");
    // The probe objects are removed again.
    let probes = ftp
        .operator
        .list(&format!("{}/.vigil-probe/", ftp.prefix))
        .await
        .map(|e| e.into_iter().filter(|e| !e.path().ends_with('/')).count())
        .unwrap_or(0);
    assert_eq!(probes, 0);
}
