//! The job lock without the catalog: repository leases, backups through a
//! catalog outage with two daemons, and runs killed with kill -9 closed
//! out by the next run.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use vigil::repo::Repository;
use vigil::repo::lease::{self, Acquired, LeaseRecord};

use crate::harness::{
    PASSWORD, S3Server, TestDb, VIGIL, Vigil, VigilOptions, config_text, fresh_catalog, fresh_db,
    json_field, own_cluster, s3_server, vigil_cli,
};

const EVERY_SECS: i64 = 3;

fn job_config(
    repo: &std::path::Path,
    source: &TestDb,
    repo_extra: &str,
    job_extra: &str,
) -> String {
    format!(
        "[repositories.local]\nscheme = \"fs\"\n{repo_extra}options = {{ root = \"{}\" }}\n\
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

/// Every committed manifest of `orders` in an fs repository: id → start.
fn manifests(root: &std::path::Path) -> BTreeMap<String, DateTime<Utc>> {
    let Ok(dir) = std::fs::read_dir(root.join("orders/backups")) else {
        return BTreeMap::new();
    };
    dir.flatten()
        .filter_map(|e| {
            let text = std::fs::read_to_string(e.path().join("manifest.json")).ok()?;
            let m: serde_json::Value = serde_json::from_str(&text).ok()?;
            let started = m["startedAt"].as_str()?.parse::<DateTime<Utc>>().ok()?;
            Some((e.file_name().to_string_lossy().into_owned(), started))
        })
        .collect()
}

/// Backup ids a daemon logged as committed.
fn committed_by(vigil: &Vigil) -> Vec<String> {
    vigil
        .logs
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains("backup committed"))
        .filter_map(|l| json_field(l, "backup"))
        .collect()
}

#[test]
fn two_daemons_keep_backing_up_through_a_catalog_outage_without_doubles() {
    let catalog = own_cluster();
    let source = small_source();
    let repo = tempfile::tempdir().unwrap();
    // Shipped defaults for the lease (no lease_ttl set).
    let extra = job_config(
        repo.path(),
        &source,
        "",
        "every = \"3s\"\ncatch_up = false\n",
    );
    let url = catalog.url("postgres");
    let a = Vigil::start_with(&url, &extra, VigilOptions::default());
    let b = Vigil::start_with(&url, &extra, VigilOptions::default());
    a.wait_ready();
    b.wait_ready();
    catalog.stop().unwrap();
    let outage_start = Utc::now();
    let outage = Duration::from_secs(21);
    std::thread::sleep(outage);
    let outage_end = Utc::now();
    let during: BTreeMap<String, DateTime<Utc>> = manifests(repo.path())
        .into_iter()
        .filter(|(_, started)| *started > outage_start && *started < outage_end)
        .collect();
    let (by_a, by_b) = (committed_by(&a), committed_by(&b));
    let count = |ids: &[String]| ids.iter().filter(|id| during.contains_key(*id)).count();
    eprintln!(
        "outage of {}s, every {EVERY_SECS}s: {} backups committed (daemon a: {}, daemon b: {})",
        outage.as_secs(),
        during.len(),
        count(&by_a),
        count(&by_b)
    );
    assert!(
        during.len() >= 4,
        "backups must go on while the catalog is down: {during:?}\n--- a:\n{}\n--- b:\n{}",
        a.log_text(),
        b.log_text()
    );
    assert_eq!(count(&by_a) + count(&by_b), during.len());
    let mut slots: Vec<i64> = during
        .values()
        .map(|t| t.timestamp() / EVERY_SECS)
        .collect();
    let total = slots.len();
    slots.dedup();
    assert_eq!(
        slots.len(),
        total,
        "a scheduled time was backed up twice: {during:?}"
    );
    assert!(
        a.log_text()
            .contains("the job lock is the repository lease alone")
            || b.log_text()
                .contains("the job lock is the repository lease alone")
    );
    // Each run released its lease.
    assert!(!repo.path().join("orders/locks/run").exists());
}

#[test]
fn a_cli_backup_runs_while_the_catalog_is_down() {
    let catalog = own_cluster();
    let source = small_source();
    let repo = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    let extra = job_config(repo.path(), &source, "", "every = \"1h\"\n");
    std::fs::write(
        &config,
        config_text(dir.path(), &catalog.url("postgres"), &extra),
    )
    .unwrap();
    catalog.stop().unwrap();
    let started = Instant::now();
    let (code, _, stderr) = vigil_cli(
        &config,
        &["backup", "orders"],
        &[("TEST_PGPASSWORD", PASSWORD)],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the backup waited for the catalog: {:?}",
        started.elapsed()
    );
    assert_eq!(manifests(repo.path()).len(), 1);
    assert!(stderr.contains("catalog unreachable"), "{stderr}");
    assert!(!repo.path().join("orders/locks/run").exists());
    let journal = journal_text(dir.path());
    assert!(journal.contains("backup.succeeded"), "{journal}");
}

/// Every journal line under `<dir>/state/journal`.
fn journal_text(dir: &std::path::Path) -> String {
    let mut text = String::new();
    for entry in std::fs::read_dir(dir.join("state/journal"))
        .unwrap()
        .flatten()
    {
        if entry.path().is_file() {
            text.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
        }
    }
    text
}

#[test]
fn a_run_killed_with_kill_9_is_closed_out_by_the_next_run() {
    // Migrated, as a daemon leaves it: CLI commands never migrate.
    let catalog = fresh_catalog();
    let source = small_source();
    let repo = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    let extra = job_config(
        repo.path(),
        &source,
        "lease_ttl = \"3s\"\n",
        "every = \"1h\"\n",
    );
    std::fs::write(&config, config_text(dir.path(), &catalog.url(), &extra)).unwrap();
    // pg_dump waits on this lock, so the first run stays in progress.
    let mut locker = crate::scheduler::hold_lock(&source);
    let mut first = Command::new(VIGIL)
        .arg("--config")
        .arg(&config)
        .args(["backup", "orders"])
        .env("TEST_PGPASSWORD", PASSWORD)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while catalog
        .psql("SELECT count(*) FROM vigil.executions WHERE status = 'running'")
        .map(|n| n != "1")
        .unwrap_or(true)
    {
        assert!(Instant::now() < deadline, "the first run never started");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(repo.path().join("orders/locks/run").exists());
    first.kill().unwrap();
    first.wait().unwrap();
    let _ = locker.kill();
    let _ = locker.wait();
    let killed = catalog
        .psql("SELECT id FROM vigil.executions WHERE status = 'running'")
        .unwrap();
    // The dead run left its lease; a run on this machine sees its pid gone (elsewhere: expiry + 5s).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, _, stderr) = vigil_cli(
            &config,
            &["backup", "orders"],
            &[("TEST_PGPASSWORD", PASSWORD)],
        );
        if code == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline && stderr.contains("already running elsewhere"),
            "second run: {stderr}"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    let row = catalog
        .psql(&format!(
            "SELECT status || ' ' || (finished_at IS NOT NULL) FROM vigil.executions WHERE id = {killed}"
        ))
        .unwrap();
    assert_eq!(row, "aborted true");
    let journal = journal_text(dir.path());
    let closed: Vec<serde_json::Value> = journal
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|e: &serde_json::Value| e["event"] == "backup.failed")
        .collect();
    assert_eq!(closed.len(), 1, "{journal}");
    let data = &closed[0]["data"];
    assert_eq!(data["status"], "aborted", "{journal}");
    assert_eq!(data["execution"].to_string(), killed, "{journal}");
    assert_eq!(manifests(repo.path()).len(), 1);
}

fn s3_repo(server: &S3Server, test: &str) -> Repository {
    let text = server
        .repository_toml(
            "remote",
            &server.unique_prefix(test),
            "lease_ttl = \"3s\"\n",
        )
        .replace(
            &format!("${{{}}}", S3Server::SECRET_ENV),
            &server.secret_access_key,
        );
    let config: BTreeMap<String, BTreeMap<String, vigil::config::RepositoryConfig>> =
        toml::from_str(&text).unwrap();
    Repository::open("remote", &config["repositories"]["remote"]).unwrap()
}

fn stale(instance: &str) -> LeaseRecord {
    let mut record = LeaseRecord::new(instance, Duration::from_secs(3));
    record.expires_at = Utc::now() - chrono::Duration::seconds(60);
    record
}

/// Plants a lease object as a dead holder left it.
fn plant(server: &S3Server, path: &str, record: &LeaseRecord) {
    let op = server.operator();
    let bytes = serde_json::to_vec(record).unwrap();
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(op.write(path, bytes))
        .unwrap();
}

#[test]
fn on_s3_a_stale_lease_is_taken_over_and_racers_have_one_winner() {
    let server = s3_server();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    for round in 0..5 {
        let repo = s3_repo(server, "lease");
        let path = lease::lease_path(&repo, "orders", "run");
        let dead = stale("dead");
        plant(server, &path, &dead);
        let outcomes = runtime.block_on(async {
            let racers = (0..6).map(|i| {
                let (repo, path) = (repo.clone(), path.clone());
                tokio::spawn(async move {
                    let ours = LeaseRecord::new(&format!("racer{i}"), Duration::from_secs(30));
                    lease::acquire(&repo, &path, &ours).await.unwrap()
                })
            });
            futures::future::join_all(racers).await
        });
        let winners: Vec<String> = outcomes
            .into_iter()
            .filter_map(|o| match o.unwrap() {
                Acquired::Held(h) => Some(h.token),
                Acquired::Busy(_) => None,
            })
            .collect();
        assert_eq!(winners.len(), 1, "round {round}: {winners:?}");
        let stored = runtime
            .block_on(lease::read(&repo, &path))
            .unwrap()
            .unwrap();
        assert_eq!(stored.token, winners[0], "round {round}");
        assert_ne!(stored.token, dead.token);
    }
}

#[test]
fn a_daemon_with_the_catalog_and_one_without_never_both_run() {
    // a keeps its catalog (advisory lock + lease); b loses its own (lease only).
    let catalog_a = fresh_db();
    let catalog_b = own_cluster();
    let source = small_source();
    let repo = tempfile::tempdir().unwrap();
    let extra = job_config(
        repo.path(),
        &source,
        "",
        "every = \"3s\"\ncatch_up = false\n",
    );
    let a = Vigil::start_with(&catalog_a.url(), &extra, VigilOptions::default());
    let b = Vigil::start_with(&catalog_b.url("postgres"), &extra, VigilOptions::default());
    a.wait_ready();
    b.wait_ready();
    catalog_b.stop().unwrap();
    let start = Utc::now();
    std::thread::sleep(Duration::from_secs(15));
    let end = Utc::now();
    let during: BTreeMap<String, DateTime<Utc>> = manifests(repo.path())
        .into_iter()
        .filter(|(_, started)| *started > start && *started < end)
        .collect();
    let (by_a, by_b) = (committed_by(&a), committed_by(&b));
    let count = |ids: &[String]| ids.iter().filter(|id| during.contains_key(*id)).count();
    eprintln!(
        "mixed: {} backups in 15s (a, with catalog: {}; b, lease only: {})",
        during.len(),
        count(&by_a),
        count(&by_b)
    );
    assert!(during.len() >= 3, "{during:?}\n--- b:\n{}", b.log_text());
    let mut slots: Vec<i64> = during
        .values()
        .map(|t| t.timestamp() / EVERY_SECS)
        .collect();
    let total = slots.len();
    slots.dedup();
    assert_eq!(
        slots.len(),
        total,
        "a scheduled time was backed up twice: {during:?}"
    );
    assert!(
        b.log_text()
            .contains("the job lock is the repository lease alone")
    );
}

#[test]
fn a_run_whose_lease_is_taken_over_stops_without_committing() {
    let catalog = fresh_db();
    let source = small_source();
    let repo = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    let extra = job_config(
        repo.path(),
        &source,
        "lease_ttl = \"3s\"\n",
        "every = \"1h\"\n",
    );
    std::fs::write(&config, config_text(dir.path(), &catalog.url(), &extra)).unwrap();
    let mut locker = crate::scheduler::hold_lock(&source);
    let run = Command::new(VIGIL)
        .arg("--config")
        .arg(&config)
        .args(["backup", "orders"])
        .env("TEST_PGPASSWORD", PASSWORD)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lease_file = repo.path().join("orders/locks/run");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !lease_file.exists() {
        assert!(Instant::now() < deadline, "the run never took its lease");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Another vigil's lease where ours was (as after a takeover).
    let other = LeaseRecord::new("other", Duration::from_secs(600));
    std::fs::write(&lease_file, serde_json::to_vec(&other).unwrap()).unwrap();
    let out = run.wait_with_output().unwrap();
    let _ = locker.kill();
    let _ = locker.wait();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("is no longer ours"), "{stderr}");
    assert!(stderr.contains("nothing was committed"), "{stderr}");
    assert_eq!(manifests(repo.path()).len(), 0);
    // The other holder's lease is left alone.
    let stored: LeaseRecord = serde_json::from_slice(&std::fs::read(&lease_file).unwrap()).unwrap();
    assert_eq!(stored.token, other.token);
}

/// The postmaster and every process it started, for SIGSTOP/SIGCONT.
fn cluster_pids(cluster: &vigil::cli::pgcluster::Cluster) -> Vec<i32> {
    let pidfile = std::fs::read_to_string(cluster.data_dir().join("postmaster.pid")).unwrap();
    let postmaster: i32 = pidfile.lines().next().unwrap().trim().parse().unwrap();
    let children = Command::new("pgrep")
        .args(["-P", &postmaster.to_string()])
        .output()
        .unwrap();
    let mut pids = vec![postmaster];
    pids.extend(
        String::from_utf8_lossy(&children.stdout)
            .lines()
            .filter_map(|l| l.trim().parse::<i32>().ok()),
    );
    pids
}

fn signal_all(pids: &[i32], signal: nix::sys::signal::Signal) {
    for pid in pids {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(*pid), signal);
    }
}

#[test]
fn a_hung_catalog_holds_no_run_up() {
    let catalog = own_cluster();
    let source = small_source();
    let repo = tempfile::tempdir().unwrap();
    let extra = job_config(
        repo.path(),
        &source,
        "",
        "every = \"3s\"\ncatch_up = false\n",
    );
    let vigil = Vigil::start_with(&catalog.url("postgres"), &extra, VigilOptions::default());
    vigil.wait_ready();
    // Frozen, not down: connections open but nothing answers (the pool's
    // idle sessions included).
    let pids = cluster_pids(&catalog);
    signal_all(&pids, nix::sys::signal::Signal::SIGSTOP);
    let start = Utc::now();
    std::thread::sleep(Duration::from_secs(15));
    let end = Utc::now();
    signal_all(&pids, nix::sys::signal::Signal::SIGCONT);
    let during = manifests(repo.path())
        .into_values()
        .filter(|started| *started > start && *started < end)
        .count();
    eprintln!("hung catalog: {during} backups in 15s (every 3s, catalog.query_timeout 1s)");
    assert!(
        during >= 2,
        "runs waited on the hung catalog:\n{}",
        vigil.log_text()
    );
    assert!(
        vigil
            .log_text()
            .contains("no answer within 1s (catalog.query_timeout)")
    );
}
