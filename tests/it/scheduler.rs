//! The daemon's job loops: scheduled runs, state after restart, replicas,
//! shutdown in the middle of a backup, stalled sources.

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::harness::{PASSWORD, TestDb, Vigil, VigilOptions, fresh_db, vigil_cli};

fn job_config(repo: &std::path::Path, source: &TestDb, job_extra: &str) -> String {
    format!(
        "[repositories.local]\nscheme = \"fs\"\noptions = {{ root = \"{}\" }}\n\
         [jobs.orders]\nkind = \"postgres\"\nsource = \"{}\"\npassword = \"${{TEST_PGPASSWORD}}\"\ndatabases = [\"{}\"]\nrepository = \"local\"\n{job_extra}",
        repo.display(),
        source.url(),
        source.name
    )
}

fn small_source() -> TestDb {
    let db = fresh_db();
    db.psql("CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 1000) g")
        .unwrap();
    db
}

fn freshness(vigil: &Vigil) -> serde_json::Value {
    vigil.get("/health/detailed").json()["checks"]["orders:freshness"][0].clone()
}

#[test]
fn scheduled_backups_show_in_health_and_metrics() {
    let source = small_source();
    let catalog = fresh_db();
    let repo = tempfile::tempdir().unwrap();
    let extra = job_config(
        repo.path(),
        &source,
        "every = \"2s\"\ncatch_up = false\nmax_age = \"1h\"\n",
    );
    let vigil = Vigil::start(&catalog, &extra);
    vigil.wait_ready();
    let detailed = vigil.get("/health/detailed").json();
    for key in ["orders:source", "local:reachable"] {
        assert_eq!(
            detailed["checks"][key][0]["status"], "pass",
            "{key}: {}",
            detailed["checks"][key]
        );
    }
    vigil.wait_for("a scheduled backup", Duration::from_secs(20), || {
        freshness(&vigil)["vigil"]["backups"].as_u64().unwrap_or(0) >= 1
    });
    let f = freshness(&vigil);
    assert_eq!(f["status"], "pass", "{f}");
    assert!(
        f["vigil"]["nextRun"].is_string() && f["vigil"]["lastSuccess"].is_string(),
        "{f}"
    );
    let metrics = vigil.get("/metrics").body;
    for needle in [
        "vigil_backup_runs_total{backup_job=\"orders\"}",
        "vigil_backup_failures_total{backup_job=\"orders\"} 0",
        "vigil_backup_max_age_seconds{backup_job=\"orders\"} 3600",
        "vigil_backup_last_success_timestamp_seconds{backup_job=\"orders\"}",
        "vigil_backup_next_run_timestamp_seconds{backup_job=\"orders\"}",
        "vigil_backup_in_progress{backup_job=\"orders\"}",
        "vigil_backup_last_stored_bytes{backup_job=\"orders\"}",
    ] {
        assert!(metrics.contains(needle), "missing {needle}:\n{metrics}");
    }
    assert!(
        !metrics.contains("vigil_backups{backup_job=\"orders\"} 0"),
        "{metrics}"
    );
}

#[test]
fn a_restart_restores_job_state_before_ready() {
    let source = small_source();
    let catalog = fresh_db();
    let repo = tempfile::tempdir().unwrap();
    let extra = job_config(
        repo.path(),
        &source,
        "schedule = \"0 0 3 1 1 *\"\ncatch_up = false\nmax_age = \"1h\"\n",
    );
    let vigil = Vigil::start(&catalog, &extra);
    vigil.wait_ready();
    // Never backed up, and the first scheduled run is months away: not
    // protected (warn), not yet failing (nothing was due).
    let f = freshness(&vigil);
    assert_eq!(f["status"], "warn", "{f}");
    assert!(
        f["output"]
            .as_str()
            .unwrap()
            .starts_with("no backup yet; the first run is due at 20"),
        "{f}"
    );
    let (code, _, stderr) = vigil_cli(
        &vigil.config_path,
        &["backup", "orders"],
        &[("TEST_PGPASSWORD", PASSWORD)],
    );
    assert_eq!(code, 0, "{stderr}");
    drop(vigil);

    let vigil = Vigil::start(&catalog, &extra);
    vigil.wait_ready();
    // The first snapshot after ready already knows the backup.
    let f = freshness(&vigil);
    assert_eq!(f["status"], "pass", "{f}");
    assert_eq!(f["vigil"]["backups"], 1);
    assert!(
        vigil
            .get("/metrics")
            .body
            .contains("vigil_backups{backup_job=\"orders\"} 1")
    );
}

#[test]
fn two_daemons_take_one_backup_per_scheduled_time() {
    let source = small_source();
    let catalog = fresh_db();
    let repo = tempfile::tempdir().unwrap();
    let extra = job_config(repo.path(), &source, "every = \"3s\"\ncatch_up = false\n");
    let a = Vigil::start(&catalog, &extra);
    let b = Vigil::start(&catalog, &extra);
    a.wait_ready();
    b.wait_ready();
    std::thread::sleep(Duration::from_secs(10));
    drop(a);
    drop(b);
    let rows = catalog
        .psql("SELECT (extract(epoch FROM started_at)::bigint / 3)::text || ' ' || status FROM vigil.executions WHERE kind = 'backup' ORDER BY id")
        .unwrap();
    let succeeded: Vec<&str> = rows
        .lines()
        .filter(|l| l.ends_with("succeeded"))
        .map(|l| l.split(' ').next().unwrap())
        .collect();
    assert!(
        succeeded.len() >= 2,
        "expected backups in several slots: {rows}"
    );
    let mut slots = succeeded.clone();
    slots.dedup();
    assert_eq!(
        slots.len(),
        succeeded.len(),
        "two backups for one scheduled time: {rows}"
    );
    let listed = walk_manifests(repo.path());
    assert_eq!(listed, succeeded.len(), "manifests vs executions: {rows}");
}

fn walk_manifests(root: &std::path::Path) -> usize {
    std::fs::read_dir(root.join("orders/backups"))
        .map(|d| {
            d.flatten()
                .filter(|e| e.path().join("manifest.json").exists())
                .count()
        })
        .unwrap_or(0)
}

/// Backup directories of `orders`, committed or not.
fn backup_dirs(root: &std::path::Path) -> usize {
    std::fs::read_dir(root.join("orders/backups"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// A session holding an exclusive lock on `t`, so pg_dump waits (and sends nothing).
pub(crate) fn hold_lock(db: &TestDb) -> Child {
    let mut child = Command::new(
        vigil::cli::pgcluster::PgBinaries::discover()
            .unwrap()
            .bin("psql"),
    )
    .args([
        "-X",
        "-q",
        "-h",
        "127.0.0.1",
        "-U",
        "postgres",
        "-p",
        &db.port.to_string(),
        "-d",
        &db.name,
    ])
    .env("PGPASSWORD", PASSWORD)
    .stdin(Stdio::piped())
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    child
        .stdin
        .as_mut()
        .unwrap()
        .write_all(b"BEGIN; LOCK TABLE t IN ACCESS EXCLUSIVE MODE;\n")
        .unwrap();
    child.stdin.as_mut().unwrap().flush().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while db.psql("SELECT count(*) FROM pg_locks WHERE mode = 'AccessExclusiveLock' AND relation = 't'::regclass").unwrap() != "1" {
        assert!(Instant::now() < deadline, "lock not taken");
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

fn pg_dump_running(db: &TestDb) -> bool {
    db.psql(&format!(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'vigil' AND datname = '{}'",
        db.name
    ))
    .map(|n| n != "0")
    .unwrap_or(false)
}

#[test]
fn sigterm_during_a_backup_aborts_it() {
    let source = small_source();
    let catalog = fresh_db();
    let repo = tempfile::tempdir().unwrap();
    let mut locker = hold_lock(&source);
    // No backup yet and catch_up: the daemon starts a run at once, which waits on the lock.
    let extra = job_config(repo.path(), &source, "every = \"1h\"\ncatch_up = true\n");
    let mut vigil = Vigil::start_with(&catalog.url(), &extra, VigilOptions::default());
    vigil.wait_ready();
    vigil.wait_for("pg_dump to be connected", Duration::from_secs(15), || {
        pg_dump_running(&source)
    });
    vigil.signal(Signal::SIGTERM);
    let status = vigil.wait_exit(Duration::from_secs(7));
    assert_eq!(status.code(), Some(0), "{}", vigil.log_text());
    let _ = locker.kill();
    let _ = locker.wait();
    let deadline = Instant::now() + Duration::from_secs(5);
    while pg_dump_running(&source) {
        assert!(Instant::now() < deadline, "pg_dump outlived vigil");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        catalog.psql("SELECT status FROM vigil.executions").unwrap(),
        "aborted"
    );
    assert_eq!(
        walk_manifests(repo.path()),
        0,
        "no manifest after an aborted run"
    );
    assert_eq!(
        backup_dirs(repo.path()),
        0,
        "the aborted run removed its directory"
    );
}

#[test]
fn a_stalled_source_trips_the_stall_timeout() {
    let source = small_source();
    let catalog = crate::harness::fresh_catalog();
    let dir = tempfile::tempdir().unwrap();
    let extra = job_config(
        &dir.path().join("repo"),
        &source,
        "every = \"1h\"\nstall_timeout = \"2s\"\n",
    );
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        crate::harness::config_text(dir.path(), &catalog.url(), &extra),
    )
    .unwrap();
    let mut locker = hold_lock(&source);
    let started = Instant::now();
    let (code, _, stderr) = vigil_cli(
        &config,
        &["backup", "orders"],
        &[("TEST_PGPASSWORD", PASSWORD)],
    );
    let _ = locker.kill();
    let _ = locker.wait();
    assert_eq!(code, 1);
    assert!(stderr.contains("stalled"), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(20));
    let row = catalog
        .psql("SELECT status || ' ' || (error LIKE '%stalled%') FROM vigil.executions")
        .unwrap();
    assert_eq!(row, "failed true");
    assert_eq!(
        backup_dirs(&dir.path().join("repo")),
        0,
        "the stalled run removed its directory"
    );
}

#[test]
fn a_failing_run_is_counted_and_leaves_freshness_alone() {
    let source = small_source();
    let catalog = fresh_db();
    let repo = tempfile::tempdir().unwrap();
    let extra = job_config(
        repo.path(),
        &source,
        "every = \"2s\"\ncatch_up = false\nmax_age = \"1h\"\n",
    )
    .replace(
        &format!("databases = [\"{}\"]", source.name),
        "databases = [\"no_such_db\"]",
    );
    let vigil = Vigil::start(&catalog, &extra);
    vigil.wait_ready();
    vigil.wait_for(
        "a failed run in the metrics",
        Duration::from_secs(20),
        || {
            vigil
                .get("/metrics")
                .body
                .contains("vigil_backup_failures_total{backup_job=\"orders\"} 1")
        },
    );
    // The freshness check runs every second; wait for it to see the failure.
    vigil.wait_for(
        "freshness to show the failure",
        Duration::from_secs(5),
        || freshness(&vigil)["vigil"]["lastError"].is_string(),
    );
    let f = freshness(&vigil);
    assert_eq!(f["status"], "fail", "{f}");
    assert_eq!(f["vigil"]["backups"], 0);
    let last_error = f["vigil"]["lastError"].as_str().unwrap_or_default();
    assert!(last_error.contains("no_such_db"), "{f}");
    assert!(
        vigil
            .get("/metrics")
            .body
            .contains("vigil_backup_last_success_timestamp_seconds{backup_job=\"orders\"} 0")
    );
    assert_eq!(walk_manifests(repo.path()), 0);
}
