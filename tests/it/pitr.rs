//! Point-in-time recovery end to end: a real cluster archiving with
//! `archive_command = vigil wal-push` (run by PostgreSQL as the `postgres`
//! user), a `postgres-physical` base backup, and `vigil restore` to a
//! time, an xid, a restore point, an LSN, `--immediate`, the latest point
//! and, after a promoted restore kept archiving into the same job, a time
//! on the new timeline; each restored cluster started as `postgres` on a
//! free port. Then retention of the WAL and a gap that must be reported.
//! One cluster and one base backup serve every assertion (each cluster
//! start costs about a second).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use vigil::cli::pgcluster::Cluster;

use crate::harness::{
    PASSWORD, VIGIL, Vigil, as_postgres, free_port, fresh_catalog, own_cluster, postgres_ids,
    postgres_scratch, vigil_cli,
};

pub(crate) const JOB: &str = "pg";

/// The fs repository and the physical job (keep_last = 1, pruned on demand).
fn job_text(repo: &Path, port: u16) -> String {
    format!(
        "[repositories.local]\nscheme = \"fs\"\noptions = {{ root = \"{}\" }}\n\
         [jobs.{JOB}]\nkind = \"postgres-physical\"\n\
         source = \"postgres://postgres:{PASSWORD}@127.0.0.1:{port}/postgres\"\n\
         repository = \"local\"\nevery = \"1h\"\ncatch_up = false\n\
         [jobs.{JOB}.retention]\nkeep_last = 1\nafter_backup = false\n",
        repo.display()
    )
}

/// The source cluster archiving into the job, and the config both use
/// (drill.rs drills it too).
pub(crate) struct Setup {
    pub(crate) cluster: Cluster,
    pub(crate) dir: tempfile::TempDir,
    pub(crate) config: PathBuf,
    pub(crate) repo: PathBuf,
    catalog_url: String,
    catalog: crate::harness::TestDb,
}

impl Setup {
    pub(crate) fn new() -> Setup {
        let dir = postgres_scratch("vigil-it-pitr-");
        let repo = dir.path().join("repo");
        // README "Permissions": a root shared by group, setgid. vigil's own
        // runs (root here) open it first and create `.vigil-tmp` and the
        // job's directories; the archiver (postgres) must still write there.
        std::fs::create_dir(&repo).unwrap();
        nix::unistd::chown(&repo, None, Some(postgres_ids().1)).unwrap();
        std::fs::set_permissions(&repo, std::fs::Permissions::from_mode(0o2770)).unwrap();
        let cluster = own_cluster();
        let catalog = fresh_catalog();
        // Passwords sit in the URLs: the archiver (the postgres user,
        // without the test's environment) loads this config too.
        let catalog_url = catalog
            .url()
            .replacen("postgres@", &format!("postgres:{PASSWORD}@"), 1);
        let text = format!(
            "[daemon]\nstate_dir = \"{state}\"\n[catalog]\nurl = \"{catalog_url}\"\n{}",
            job_text(&repo, cluster.port()),
            state = dir.path().join("state").display(),
        );
        let config = dir.path().join("config.toml");
        std::fs::write(&config, text).unwrap();
        std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
        let (code, _, stderr) = vigil_cli(&config, &["list", JOB], &[]);
        assert_eq!(code, 0, "{stderr}");
        assert!(
            repo.join(".vigil-tmp").is_dir(),
            "vigil opened the root first"
        );
        let conf = cluster.data_dir().join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf).unwrap();
        text.push_str(&format!(
            "\nwal_level = replica\narchive_mode = on\narchive_command = '{VIGIL} --config {} wal-push {JOB} %p'\n",
            config.display()
        ));
        std::fs::write(&conf, text).unwrap();
        let mut setup = Setup {
            cluster,
            dir,
            config,
            repo,
            catalog_url,
            catalog,
        };
        setup.cluster.stop().unwrap();
        setup.cluster.start().unwrap();
        setup
    }

    pub(crate) fn psql(&self, sql: &str) -> String {
        self.cluster.psql("postgres", sql).unwrap()
    }

    /// The source server's log, for failure messages.
    pub(crate) fn server_log(&self) -> String {
        let log = self
            .cluster
            .data_dir()
            .parent()
            .unwrap()
            .join("postgres.log");
        std::fs::read_to_string(log).unwrap_or_default()
    }

    pub(crate) fn vigil(&self, args: &[&str]) -> (i32, String, String) {
        vigil_cli(&self.config, args, &[])
    }

    /// Closes the current segment and waits until it is archived.
    pub(crate) fn switch_and_wait(&self) {
        let name = self.psql("SELECT pg_walfile_name(pg_current_wal_lsn())");
        self.psql("SELECT pg_switch_wal()");
        wait_archived(&|sql| self.psql(sql), &name);
    }

    pub(crate) fn dir(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// Waits until `pg_stat_archiver` (through `psql`) reports `name` archived.
fn wait_archived(psql: &dyn Fn(&str) -> String, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let last = psql("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver");
        if !last.is_empty() && last.as_str() >= name {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} not archived: {}",
            psql("SELECT failed_count, last_failed_wal FROM pg_stat_archiver")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A restored cluster, started as `postgres` on a free port.
struct Restored<'a> {
    bins: &'a Cluster,
    data: PathBuf,
    port: u16,
}

impl Restored<'_> {
    /// Starts `data` (laid out with recovery settings by `vigil restore`)
    /// and waits until recovery has promoted it. `archive` keeps the
    /// restored server archiving into the job (off: a restore for reading).
    fn start<'a>(bins: &'a Cluster, data: &Path, archive: bool) -> Restored<'a> {
        let port = free_port();
        let log = data.join("recovery.log");
        let mut options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c max_connections=200",
            data.display()
        );
        if !archive {
            options.push_str(" -c archive_mode=off");
        }
        let out = as_postgres(&bins.bin("pg_ctl"))
            .arg("-D")
            .arg(data)
            .args(["-w", "-t", "120", "-o", &options, "-l"])
            .arg(&log)
            .arg("start")
            .output()
            .unwrap();
        let restored = Restored {
            bins,
            data: data.to_owned(),
            port,
        };
        assert!(
            out.status.success(),
            "restored cluster did not start: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            restored.log()
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        while restored.query("postgres", "SELECT pg_is_in_recovery()") != "f" {
            assert!(
                Instant::now() < deadline,
                "not promoted: {}",
                restored.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        restored
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.data.join("recovery.log")).unwrap_or_default()
    }

    fn query(&self, database: &str, sql: &str) -> String {
        let out = Command::new(self.bins.bin("psql"))
            .env("PGPASSWORD", PASSWORD)
            .args(["-X", "-q", "-A", "-t", "-h", "127.0.0.1", "-U", "postgres"])
            .args(["-p", &self.port.to_string(), "-d", database, "-c", sql])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    fn rows(&self) -> String {
        self.query(
            "postgres",
            "SELECT string_agg(id::text, ',' ORDER BY id) FROM t",
        )
    }
}

impl Drop for Restored<'_> {
    fn drop(&mut self) {
        let _ = as_postgres(&self.bins.bin("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .args(["-w", "-m", "immediate", "stop"])
            .output();
    }
}

/// What each user table holds, digested, as `psql` answers it.
const DIGESTS: &str = "SELECT (SELECT md5(string_agg(t::text, ',' ORDER BY id)) FROM t) || ' ' || \
     (SELECT md5(string_agg(u::text, ',' ORDER BY i)) FROM u)";

/// `vigil restore pg --to-dir DIR ARGS` must succeed; its stdout.
fn restore(s: &Setup, dir: &Path, args: &[&str]) -> String {
    let to = dir.display().to_string();
    let mut all = vec!["restore", JOB, "--to-dir", &to];
    all.extend_from_slice(args);
    let (code, stdout, stderr) = s.vigil(&all);
    assert_eq!(code, 0, "restore {args:?}: {stderr}");
    stdout
}

/// Restores to `args`, starts the result for reading, answers `rows`.
fn rows_at(s: &Setup, name: &str, args: &[&str]) -> String {
    let dir = s.dir(name);
    restore(s, &dir, args);
    let restored = Restored::start(&s.cluster, &dir, false);
    restored.rows()
}

fn sleep_past_a_second() {
    std::thread::sleep(Duration::from_millis(1100));
}

#[test]
fn restores_reach_each_target_follow_a_timeline_switch_and_prune_keeps_what_they_need() {
    let s = Setup::new();
    s.psql(
        "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1); \
         CREATE TABLE u AS SELECT i, md5(i::text) AS h FROM generate_series(1, 2000) i",
    );
    let (code, _, stderr) = s.vigil(&["backup", JOB]);
    assert_eq!(code, 0, "{stderr}\n{}", s.server_log());

    // t1 (row 1, in the base backup) < t2 (row 2) < T < t3 (row 3).
    s.psql("INSERT INTO t VALUES (2); UPDATE u SET h = 'changed' WHERE i <= 10");
    sleep_past_a_second();
    let between = s.psql(
        "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
    );
    let digests_at_target = s.psql(DIGESTS);
    sleep_past_a_second();
    let xid = s.psql("INSERT INTO t VALUES (3) RETURNING txid_current()");
    s.psql("DELETE FROM u WHERE i > 1900");
    s.psql("SELECT pg_create_restore_point('before_four')");
    s.psql("INSERT INTO t VALUES (4)");
    let lsn = s.psql("SELECT pg_current_wal_insert_lsn()");
    s.psql("INSERT INTO t VALUES (5)");
    s.switch_and_wait();

    // A time between t2 and t3: t1 and t2, not t3; every table as the
    // source had it then; pg_amcheck clean.
    let dir = s.dir("at-time");
    let printed = restore(&s, &dir, &["--time", &between]);
    assert!(
        printed.contains(&format!("pg_ctl -D {}", dir.display())),
        "{printed}"
    );
    let auto = std::fs::read_to_string(dir.join("postgresql.auto.conf")).unwrap();
    assert!(
        auto.contains(&format!(
            "restore_command = '{VIGIL} --config {} wal-fetch pg %f %p'",
            s.config.display()
        )),
        "{auto}"
    );
    assert!(dir.join("recovery.signal").is_file());
    {
        let restored = Restored::start(&s.cluster, &dir, false);
        assert_eq!(restored.rows(), "1,2", "{}", restored.log());
        assert_eq!(restored.query("postgres", DIGESTS), digests_at_target);
        let amcheck = Command::new(s.cluster.bin("pg_amcheck"))
            .env("PGPASSWORD", PASSWORD)
            .args([
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-p",
                &restored.port.to_string(),
            ])
            .args(["--install-missing", "--heapallindexed", "-d", "postgres"])
            .output()
            .unwrap();
        assert!(
            amcheck.status.success() && amcheck.stdout.is_empty(),
            "pg_amcheck: {}{}",
            String::from_utf8_lossy(&amcheck.stdout),
            String::from_utf8_lossy(&amcheck.stderr)
        );
    }
    assert_eq!(rows_at(&s, "at-xid", &["--xid", &xid]), "1,2,3");
    assert_eq!(rows_at(&s, "at-name", &["--name", "before_four"]), "1,2,3");
    assert_eq!(rows_at(&s, "at-lsn", &["--lsn", &lsn]), "1,2,3,4");
    assert_eq!(rows_at(&s, "immediate", &["--immediate"]), "1");

    // The catalog holds the recovery as a restore execution with its target.
    let catalog_rows = fresh_catalog_rows(&s);
    assert!(
        catalog_rows.contains(&format!("xid {xid}")),
        "{catalog_rows}"
    );

    timeline_switch(&s);
    retention_and_gap(&s);
    the_daemon_reports_the_archive(&s);
}

/// A daemon on the same job: `<job>:wal` warns about the injected gap and
/// carries the window; /metrics exports it.
fn the_daemon_reports_the_archive(s: &Setup) {
    let vigil = Vigil::start(&s.catalog, &job_text(&s.repo, s.cluster.port()));
    let mut check = serde_json::Value::Null;
    vigil.wait_for("pg:wal", Duration::from_secs(30), || {
        let body = vigil.get("/health/detailed").json();
        check = body["checks"]["pg:wal"][0].clone();
        check.get("status").is_some()
    });
    assert_eq!(check["status"], "warn", "{check:#}");
    let output = check["output"].as_str().unwrap_or_default();
    assert!(output.contains("WAL gap after base backup"), "{check:#}");
    assert!(check["vigil"]["windowStart"].is_string(), "{check:#}");
    assert!(check["vigil"]["lastArchived"].is_string(), "{check:#}");
    let metrics = vigil.get("/metrics").body;
    for family in [
        "vigil_wal_last_archived_timestamp_seconds{backup_job=\"pg\"}",
        "vigil_pitr_window_start_timestamp_seconds{backup_job=\"pg\"}",
        "vigil_wal_gaps{backup_job=\"pg\"} 1",
    ] {
        assert!(metrics.contains(family), "{family} not in\n{metrics}");
    }
    // The status page's row for the job: its window, the gap, the archive's age.
    let page = vigil.get("/").body;
    let row = &page[page.find("data-job=\"pg\"").expect("a row for pg")..];
    let row = &row[..row.find("</tr>").unwrap()];
    for needle in [
        "restorable",
        "1 gap(s) in the WAL chain",
        "last WAL archived",
    ] {
        assert!(
            row.contains(needle),
            "{needle} not in the page's row:\n{row}"
        );
    }
}

/// The restore executions in the catalog: their recovery targets.
fn fresh_catalog_rows(s: &Setup) -> String {
    let out = Command::new(s.cluster.bin("psql"))
        .args(["-X", "-A", "-t", &s.catalog_url, "-c"])
        .arg("SELECT string_agg(details->>'recoveryTarget', ';') FROM vigil.executions WHERE kind = 'restore' AND status = 'succeeded'")
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Restore to the latest point, promote (timeline 2), keep archiving into
/// the same job, then restore to a time on timeline 2.
fn timeline_switch(s: &Setup) {
    let dir = s.dir("latest");
    restore(s, &dir, &[]);
    let promoted = Restored::start(&s.cluster, &dir, true);
    assert_eq!(promoted.rows(), "1,2,3,4,5", "{}", promoted.log());
    assert_eq!(
        promoted.query(
            "postgres",
            "SELECT timeline_id FROM pg_control_checkpoint()"
        ),
        "2"
    );
    promoted.query("postgres", "INSERT INTO t VALUES (100)");
    sleep_past_a_second();
    let between = promoted.query(
        "postgres",
        "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
    );
    sleep_past_a_second();
    promoted.query("postgres", "INSERT INTO t VALUES (101)");
    let name = promoted.query("postgres", "SELECT pg_walfile_name(pg_current_wal_lsn())");
    promoted.query("postgres", "SELECT pg_switch_wal()");
    wait_archived(&|sql| promoted.query("postgres", sql), &name);
    assert!(
        s.repo
            .join(format!("{JOB}/wal/00000002/00000002.history.zst"))
            .is_file()
    );

    let dir = s.dir("on-timeline-2");
    restore(s, &dir, &["--time", &between]);
    let restored = Restored::start(&s.cluster, &dir, false);
    assert_eq!(restored.rows(), "1,2,3,4,5,100", "{}", restored.log());
    assert_eq!(
        restored.query(
            "postgres",
            "SELECT timeline_id FROM pg_control_checkpoint()"
        ),
        "3"
    );
}

/// A second base backup with keep_last = 1: prune deletes the first and
/// the WAL before the second's start, with reasons; a deleted segment
/// after it is a gap that prune and `vigil list` report.
fn retention_and_gap(s: &Setup) {
    let (code, _, stderr) = s.vigil(&["backup", JOB]);
    assert_eq!(code, 0, "{stderr}");
    s.psql("INSERT INTO t VALUES (6)");
    s.switch_and_wait();
    s.psql("INSERT INTO t VALUES (7)");
    s.switch_and_wait();

    let (code, stdout, stderr) = s.vigil(&["prune", JOB, "--dry-run", "--json"]);
    assert_eq!(code, 0, "{stderr}");
    let plan: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let wal = &plan[0]["plan"]["wal"];
    let deletes = wal["delete"].as_array().unwrap();
    assert!(!deletes.is_empty(), "{plan:#}");
    let reason = deletes[0]["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("older than the oldest kept base backup"),
        "{reason}"
    );
    assert!(
        deletes
            .iter()
            .all(|d| !d["file"].as_str().unwrap().ends_with(".history"))
    );
    let first = deletes[0]["file"].as_str().unwrap().to_owned();

    let (code, stdout, stderr) = s.vigil(&["prune", JOB]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("WAL file(s)"), "{stdout}");
    assert!(
        !s.repo
            .join(format!("{JOB}/wal/00000001/{first}.zst"))
            .exists()
    );
    assert!(
        s.repo
            .join(format!("{JOB}/wal/00000002/00000002.history.zst"))
            .is_file()
    );

    // Delete the newest-but-one segment of timeline 1: a gap after the kept backup.
    let mut segments: Vec<PathBuf> = std::fs::read_dir(s.repo.join(format!("{JOB}/wal/00000001")))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().len() == "000000010000000000000001.zst".len())
        .collect();
    segments.sort();
    let victim = segments[segments.len() - 2].clone();
    std::fs::remove_file(&victim).unwrap();
    let (code, stdout, _) = s.vigil(&["prune", JOB, "--dry-run"]);
    assert_eq!(code, 0);
    let missing = victim
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .trim_end_matches(".zst")
        .to_owned();
    assert!(
        stdout.contains("WAL gap after base backup") && stdout.contains(&missing),
        "{stdout}"
    );
    // The human listing names the gap; `--json` stays one object per backup.
    let (code, stdout, stderr) = s.vigil(&["list", JOB]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains(&missing), "{stdout}");
    let (code, stdout, stderr) = s.vigil(&["list", JOB, "--json"]);
    assert_eq!(code, 0, "{stderr}");
    let entries: Vec<serde_json::Value> = serde_json::from_str(&stdout).unwrap();
    assert!(
        entries.iter().all(|e| e.get("backupId").is_some()),
        "{stdout}"
    );
}

/// Usage errors exit 64 before anything is contacted: two targets, an
/// action without a target, a target for a job that is not physical.
#[test]
fn recovery_flags_are_checked_before_anything_is_contacted() {
    let dir = postgres_scratch("vigil-it-pitr-");
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[daemon]\nstate_dir = \"{state}\"\n[catalog]\nurl = \"postgres://vigil@127.0.0.1:1/vigil\"\n\
             [repositories.local]\nscheme = \"fs\"\noptions = {{ root = \"{repo}\" }}\n\
             [jobs.dump]\nkind = \"postgres\"\nsource = \"postgres://u@127.0.0.1:1/db\"\ndatabases = [\"db\"]\n\
             repository = \"local\"\nevery = \"1h\"\n",
            state = dir.path().join("state").display(),
            repo = dir.path().join("repo").display(),
        ),
    )
    .unwrap();
    let to = dir.path().join("restored").display().to_string();
    let run = |args: &[&str]| {
        let mut all = vec!["restore", "dump", "--to-dir", &to];
        all.extend_from_slice(args);
        vigil_cli(&config, &all, &[])
    };
    let (code, _, stderr) = run(&["--time", "2026-11-27T09:00:00Z", "--lsn", "0/3000060"]);
    assert_eq!(code, 64, "{stderr}");
    let (code, _, stderr) = run(&["--target-action", "pause"]);
    assert_eq!(code, 64, "{stderr}");
    let (code, _, stderr) = run(&["--lsn", "3000060"]);
    assert_eq!(code, 64, "{stderr}");
    assert!(stderr.contains("is not an LSN"), "{stderr}");
    let (code, stdout, stderr) = run(&["--xid", "745", "--json"]);
    assert_eq!(code, 64, "{stderr}");
    assert!(
        stderr.contains("job `dump` is a postgres job: --time, --lsn, --name, --xid and --immediate recover postgres-physical jobs only"),
        "{stderr}"
    );
    let error: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(error["error"]["code"], "usage", "{stdout}");
    assert!(!dir.path().join("restored").exists());
}

/// `vigil verify` of a physical job: the base backup's tars read to the
/// end and the WAL chain to the newest segment; a removed segment is a gap.
#[test]
fn verify_reads_a_physical_backup_and_names_a_wal_gap() {
    let s = Setup::new();
    s.psql("CREATE TABLE t AS SELECT i, md5(i::text) AS h FROM generate_series(1, 2000) i");
    let (code, _, stderr) = s.vigil(&["backup", JOB]);
    assert_eq!(code, 0, "{stderr}\n{}", s.server_log());
    for _ in 0..3 {
        s.psql("INSERT INTO t VALUES (0, 'x')");
        s.switch_and_wait();
    }
    let (code, stdout, stderr) = s.vigil(&["verify", JOB]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(
        stdout.contains(": ok (") && stdout.contains("content checked"),
        "{stdout}"
    );
    // The WAL from the backup's start on is read back and hashed too.
    assert!(
        stdout.contains(&format!("{JOB}/wal: ok (")) && stdout.contains("hashes checked"),
        "{stdout}"
    );
    wal_and_backup_manifest_damage_is_named(&s);

    // PG_VERSION changed in the base tar (same size), rehashed into the
    // manifest: only backup_manifest's CRC-32C can tell.
    let listed = crate::harness::list_manifests(&s.config, JOB, &[]);
    let id = listed[0]["backupId"].as_str().unwrap().to_owned();
    let backup = s.repo.join(format!("{JOB}/backups/{id}"));
    let base = backup.join("base.tar.zst");
    let good = std::fs::read(&base).unwrap();
    let tar = zstd::decode_all(&good[..]).unwrap();
    let mut rebuilt = tar::Builder::new(Vec::new());
    for entry in tar::Archive::new(&tar[..]).entries().unwrap() {
        let mut entry = entry.unwrap();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut data).unwrap();
        if entry.path_bytes().as_ref() == b"PG_VERSION" {
            data[0] ^= 0x01;
        }
        let header = entry.header().clone();
        rebuilt.append(&header, &data[..]).unwrap();
    }
    let payload = zstd::encode_all(&rebuilt.into_inner().unwrap()[..], 3).unwrap();
    std::fs::write(&base, &payload).unwrap();
    let manifest_path = backup.join("manifest.json");
    let original = std::fs::read(&manifest_path).unwrap();
    let mut stored: serde_json::Value = serde_json::from_slice(&original).unwrap();
    for o in stored["objects"].as_array_mut().unwrap() {
        if o["name"] == "base.tar.zst" {
            use sha2::Digest;
            o["sha256"] = hex::encode(sha2::Sha256::digest(&payload)).into();
            o["storedBytes"] = payload.len().into();
        }
    }
    std::fs::write(&manifest_path, serde_json::to_vec(&stored).unwrap()).unwrap();
    let (code, stdout, stderr) = s.vigil(&["verify", JOB, "--backup", &id]);
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    assert!(
        stdout.contains("base.tar.zst") && stdout.contains("PG_VERSION: CRC-32C"),
        "{stdout}"
    );
    std::fs::write(&base, &good).unwrap();
    std::fs::write(&manifest_path, &original).unwrap();

    let mut segments: Vec<PathBuf> = std::fs::read_dir(s.repo.join(format!("{JOB}/wal/00000001")))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().len() == "000000010000000000000001.zst".len())
        .collect();
    segments.sort();
    let victim = segments[segments.len() - 2].clone();
    std::fs::remove_file(&victim).unwrap();
    let missing = victim.file_stem().unwrap().to_str().unwrap().to_owned();
    let (code, stdout, stderr) = s.vigil(&["verify", JOB, "--json"]);
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    let doc: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(doc["walGaps"][0]["first"], missing.as_str(), "{doc}");
    assert!(
        doc["backups"][0]["bad"].as_array().unwrap().is_empty(),
        "{doc}"
    );
    assert!(stderr.contains("1 WAL gap"), "{stderr}");
}

/// A WAL object whose header hash no longer matches its content, and a
/// backup_manifest whose own Manifest-Checksum was altered (rehashed into
/// manifest.json, so only the checksum can tell): each named by `vigil
/// verify`, then put back.
fn wal_and_backup_manifest_damage_is_named(s: &Setup) {
    let dir = s.repo.join(format!("{JOB}/wal/00000001"));
    let mut segments: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().len() == "000000010000000000000001.zst".len())
        .collect();
    segments.sort();
    let victim = segments.last().unwrap().clone();
    let good = std::fs::read(&victim).unwrap();
    let text = String::from_utf8_lossy(&good[..80]).into_owned();
    let at = text.find("sha256=").unwrap() + "sha256=".len();
    let mut lying = good.clone();
    lying[at] = if lying[at] == b'0' { b'1' } else { b'0' };
    std::fs::write(&victim, &lying).unwrap();
    let name = victim.file_stem().unwrap().to_str().unwrap().to_owned();
    let (code, stdout, stderr) = s.vigil(&["verify", JOB]);
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!("wal/{name}")) && stdout.contains("SHA-256 mismatch"),
        "{stdout}"
    );
    std::fs::write(&victim, &good).unwrap();

    let listed = crate::harness::list_manifests(&s.config, JOB, &[]);
    let id = listed[0]["backupId"].as_str().unwrap().to_owned();
    let backup = s.repo.join(format!("{JOB}/backups/{id}"));
    let manifest_path = backup.join("manifest.json");
    let original = std::fs::read(&manifest_path).unwrap();
    let mut stored: serde_json::Value = serde_json::from_slice(&original).unwrap();
    let object = stored["objects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["format"] == "backup_manifest")
        .unwrap()["name"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = backup.join(&object);
    let kept = std::fs::read(&path).unwrap();
    let text = String::from_utf8(zstd::decode_all(&kept[..]).unwrap()).unwrap();
    let at = text.find("\"Manifest-Checksum\": \"").unwrap() + "\"Manifest-Checksum\": \"".len();
    let mut altered = text.into_bytes();
    altered[at] = if altered[at] == b'0' { b'1' } else { b'0' };
    let payload = zstd::encode_all(&altered[..], 3).unwrap();
    std::fs::write(&path, &payload).unwrap();
    for o in stored["objects"].as_array_mut().unwrap() {
        if o["name"] == object.as_str() {
            use sha2::Digest;
            o["sha256"] = hex::encode(sha2::Sha256::digest(&payload)).into();
            o["storedBytes"] = payload.len().into();
        }
    }
    std::fs::write(&manifest_path, serde_json::to_vec(&stored).unwrap()).unwrap();
    let (code, stdout, stderr) = s.vigil(&["verify", JOB, "--backup", &id]);
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&object) && stdout.contains("Manifest-Checksum"),
        "{stdout}"
    );
    std::fs::write(&path, &kept).unwrap();
    std::fs::write(&manifest_path, &original).unwrap();
}

/// Scheduled verification of a physical job, by the daemon: one object a
/// run (tars checked against backup_manifest), then every run checks the
/// WAL chains: a removed segment turns `pg:verify` to warn naming the gap.
#[test]
fn scheduled_verification_reads_a_physical_backup_and_watches_its_wal_chain() {
    let s = Setup::new();
    s.psql("CREATE TABLE t AS SELECT i, md5(i::text) AS h FROM generate_series(1, 2000) i");
    let (code, _, stderr) = s.vigil(&["backup", JOB]);
    assert_eq!(code, 0, "{stderr}\n{}", s.server_log());
    for _ in 0..3 {
        s.psql("INSERT INTO t VALUES (0, 'x')");
        s.switch_and_wait();
    }
    let manifest = crate::harness::list_manifests(&s.config, JOB, &[])[0].clone();
    let objects = manifest["objects"].as_array().unwrap().len();
    let extra = format!(
        "{}[jobs.{JOB}.verify]\nevery = \"1s\"\nmax_bytes_per_run = 1\n",
        job_text(&s.repo, s.cluster.port())
    );
    let daemon_dir = tempfile::Builder::new()
        .prefix("vigil-it-")
        .tempdir()
        .unwrap();
    let text = crate::harness::config_text(daemon_dir.path(), &s.catalog.url(), &extra);
    let vigil = Vigil::start_text(daemon_dir, &text, crate::harness::VigilOptions::default());
    vigil.wait_ready();
    let record = || -> serde_json::Value {
        std::fs::read(s.repo.join(format!("{JOB}/proofs/verify.json")))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    };
    let check =
        || vigil.get("/health/detailed").json()["checks"][format!("{JOB}:verify")][0].clone();
    vigil.wait_for("every object read", Duration::from_secs(60), || {
        record()["verified"]
            .as_object()
            .is_some_and(|m| m.len() == objects)
    });
    let r = record();
    assert!(r["bad"].as_array().unwrap().is_empty(), "{r:#}");
    assert_eq!(r["lastRun"]["contentChecked"], true, "{r:#}");
    vigil.wait_for("pg:verify to pass", Duration::from_secs(20), || {
        check()["status"] == "pass"
    });

    let mut segments: Vec<PathBuf> = std::fs::read_dir(s.repo.join(format!("{JOB}/wal/00000001")))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().len() == "000000010000000000000001.zst".len())
        .collect();
    segments.sort();
    std::fs::remove_file(&segments[segments.len() - 2]).unwrap();
    vigil.wait_for(
        "pg:verify to warn about the gap",
        Duration::from_secs(30),
        || {
            let c = check();
            c["status"] == "warn" && c["output"].as_str().is_some_and(|o| o.contains("WAL gap"))
        },
    );
    assert!(
        record()["lastRun"]["walGaps"].as_u64().unwrap() >= 1,
        "{:#}",
        record()
    );
}
