//! Retention against a real repository and catalog.

use crate::harness::{PASSWORD, TestDb, config_text, fresh_catalog, fresh_db, vigil_cli};

const ENV: [(&str, &str); 1] = [("TEST_PGPASSWORD", PASSWORD)];

struct Setup {
    _dir: tempfile::TempDir,
    config: std::path::PathBuf,
    repo: std::path::PathBuf,
    catalog: TestDb,
}

fn setup(retention: &str) -> Setup {
    let source = fresh_db();
    source.psql("CREATE TABLE t AS SELECT 1 AS x").unwrap();
    let catalog = fresh_catalog();
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let extra = format!(
        "[repositories.local]\nscheme = \"fs\"\noptions = {{ root = \"{}\" }}\n\
         [jobs.orders]\nkind = \"postgres\"\nsource = \"{}\"\npassword = \"${{TEST_PGPASSWORD}}\"\ndatabases = [\"{}\"]\nrepository = \"local\"\nevery = \"1h\"\n\
         [jobs.orders.retention]\n{retention}",
        repo.display(),
        source.url(),
        source.name
    );
    let config = dir.path().join("config.toml");
    std::fs::write(&config, config_text(dir.path(), &catalog.url(), &extra)).unwrap();
    Setup {
        _dir: dir,
        config,
        repo,
        catalog,
    }
}

fn backups(s: &Setup) -> Vec<String> {
    let (code, stdout, stderr) = vigil_cli(&s.config, &["list", "orders", "--json"], &ENV);
    assert_eq!(code, 0, "{stderr}");
    let list: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    list.as_array()
        .unwrap()
        .iter()
        .map(|m| m["backupId"].as_str().unwrap().to_owned())
        .collect()
}

fn backup(s: &Setup) {
    let (code, _, stderr) = vigil_cli(&s.config, &["backup", "orders"], &ENV);
    assert_eq!(code, 0, "{stderr}");
    // Ids read as start seconds; keep them distinct and ordered.
    std::thread::sleep(std::time::Duration::from_millis(1100));
}

#[test]
fn prune_previews_then_applies_and_respects_pins() {
    let s = setup("keep_last = 2\n");
    for _ in 0..4 {
        backup(&s);
    }
    let ids = backups(&s);
    assert_eq!(ids.len(), 4);
    let (code, stdout, stderr) = vigil_cli(&s.config, &["pin", "orders", &ids[0]], &ENV);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("pinned"));

    let (code, stdout, stderr) = vigil_cli(&s.config, &["prune", "orders", "--dry-run"], &ENV);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("would free"), "{stdout}");
    assert!(
        stdout.contains("pinned") && stdout.contains("newest successful"),
        "{stdout}"
    );
    assert_eq!(backups(&s).len(), 4, "a dry run deletes nothing");

    let (code, stdout, stderr) = vigil_cli(&s.config, &["prune", "orders", "--json"], &ENV);
    assert_eq!(code, 0, "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report[0]["deleted"], serde_json::json!([ids[1]]));
    assert_eq!(
        backups(&s),
        [ids[0].clone(), ids[2].clone(), ids[3].clone()]
    );
    assert!(
        !s.repo.join("orders/backups").join(&ids[1]).exists(),
        "data removed too"
    );
    let history = s.catalog.psql("SELECT backup_id || ' ' || action || ' ' || (freed_bytes > 0) FROM vigil.cleanup_history").unwrap();
    assert_eq!(history, format!("{} delete true", ids[1]));
    let prune_runs = s
        .catalog
        .psql("SELECT status FROM vigil.executions WHERE kind = 'prune'")
        .unwrap();
    assert_eq!(prune_runs, "succeeded");
}

#[test]
fn nothing_is_pruned_after_a_failed_run() {
    let s = setup("keep_last = 1\n");
    backup(&s);
    backup(&s);
    // The job's latest run failed (as after days of failures).
    s.catalog
        .psql("INSERT INTO vigil.executions (job, kind, trigger, status, host, finished_at, error) VALUES ('orders', 'backup', 'schedule', 'failed', 'h', now(), 'boom')")
        .unwrap();
    let (code, stdout, stderr) = vigil_cli(&s.config, &["prune", "orders"], &ENV);
    assert_eq!(code, 1, "{stdout}");
    assert!(stderr.contains("last run failed"), "{stderr}");
    assert_eq!(backups(&s).len(), 2);
}

#[test]
fn a_backup_whose_manifest_is_gone_is_not_listed() {
    // What a prune killed between deleting a manifest and its data leaves:
    // garbage, never a listed backup with missing data.
    let s = setup("keep_last = 5\n");
    backup(&s);
    let ids = backups(&s);
    std::fs::remove_file(
        s.repo
            .join("orders/backups")
            .join(&ids[0])
            .join("manifest.json"),
    )
    .unwrap();
    assert!(backups(&s).is_empty());
    let (code, _, stderr) = vigil_cli(&s.config, &["list", "orders"], &ENV);
    assert_eq!(code, 0);
    assert!(stderr.contains("uncommitted leftover"), "{stderr}");
}

fn prune_json(s: &Setup) -> serde_json::Value {
    let (code, stdout, stderr) = vigil_cli(&s.config, &["prune", "orders", "--json"], &ENV);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    serde_json::from_str::<serde_json::Value>(&stdout).unwrap()[0].clone()
}

#[test]
fn uncommitted_leftovers_are_collected_after_the_grace_period_only() {
    let s = setup("keep_last = 5\norphan_grace = \"3s\"\n");
    backup(&s);
    let ids = backups(&s);
    // A half-written backup of a killed run: data, no manifest, written just now.
    let orphan = s.repo.join("orders/backups/20200101T000000Z");
    std::fs::create_dir_all(&orphan).unwrap();
    std::fs::write(orphan.join("db.dump.zst"), b"partial").unwrap();
    let first = prune_json(&s);
    assert_eq!(
        first["youngLeftovers"],
        serde_json::json!(["20200101T000000Z"])
    );
    assert!(orphan.exists(), "collected inside the grace period");
    std::thread::sleep(std::time::Duration::from_millis(3200));
    let second = prune_json(&s);
    assert_eq!(second["collected"], serde_json::json!(["20200101T000000Z"]));
    assert!(!orphan.exists());
    assert_eq!(backups(&s), ids, "committed backups untouched");
    let reason = s
        .catalog
        .psql("SELECT reasons->>0 FROM vigil.cleanup_history WHERE backup_id = '20200101T000000Z'")
        .unwrap();
    assert!(reason.contains("no manifest"), "{reason}");
}

#[test]
fn an_interrupted_prune_leaves_garbage_the_next_prune_collects() {
    let s = setup("keep_last = 5\norphan_grace = \"1s\"\n");
    backup(&s);
    backup(&s);
    let ids = backups(&s);
    // Killed between deleting the manifest and the data.
    let dir = s.repo.join("orders/backups").join(&ids[0]);
    std::fs::remove_file(dir.join("manifest.json")).unwrap();
    assert_eq!(backups(&s), [ids[1].clone()]);
    std::thread::sleep(std::time::Duration::from_millis(1200));
    let report = prune_json(&s);
    assert_eq!(report["collected"], serde_json::json!([ids[0]]));
    assert!(!dir.exists());
}

#[test]
fn a_running_backup_blocks_the_prune() {
    let s = setup("keep_last = 1\n");
    backup(&s);
    let source_url = std::fs::read_to_string(&s.config).unwrap();
    let name = source_url
        .split("databases = [\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned();
    let source = TestDb {
        name,
        port: s.catalog.port,
    };
    let mut locker = crate::scheduler::hold_lock(&source);
    let mut running = std::process::Command::new(crate::harness::VIGIL)
        .args(["--config", s.config.to_str().unwrap(), "backup", "orders"])
        .env("TEST_PGPASSWORD", PASSWORD)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the backup holds the job lock (its pg_dump is connected).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while source
        .psql(&format!("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'vigil' AND datname = '{}'", source.name))
        .unwrap()
        == "0"
    {
        assert!(std::time::Instant::now() < deadline, "backup never started");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let (code, _, stderr) = vigil_cli(&s.config, &["prune", "orders"], &ENV);
    assert_eq!(code, 1);
    assert!(stderr.contains("holds its lock"), "{stderr}");
    let _ = running.kill();
    let _ = running.wait();
    let _ = locker.kill();
    let _ = locker.wait();
    assert_eq!(backups(&s).len(), 1);
}

#[test]
fn the_daemon_prunes_after_each_backup_and_cross_checks_the_catalog() {
    let source = fresh_db();
    source.psql("CREATE TABLE t AS SELECT 1 AS x").unwrap();
    let catalog = fresh_catalog();
    let repo = tempfile::tempdir().unwrap();
    let extra = format!(
        "[repositories.local]\nscheme = \"fs\"\noptions = {{ root = \"{}\" }}\n\
         [jobs.orders]\nkind = \"postgres\"\nsource = \"{}\"\npassword = \"${{TEST_PGPASSWORD}}\"\ndatabases = [\"{}\"]\nrepository = \"local\"\nevery = \"1s\"\ncatch_up = false\n\
         [jobs.orders.retention]\nkeep_last = 2\n",
        repo.path().display(),
        source.url(),
        source.name
    );
    let vigil = crate::harness::Vigil::start(&catalog, &extra);
    vigil.wait_ready();
    let deleted = |v: &crate::harness::Vigil| {
        v.get("/metrics")
            .body
            .lines()
            .find(|l| l.starts_with("vigil_prune_deleted_backups_total{backup_job=\"orders\"}"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0)
    };
    vigil.wait_for(
        "retention to delete backups",
        std::time::Duration::from_secs(30),
        || deleted(&vigil) >= 2,
    );
    let metrics = vigil.get("/metrics").body;
    assert!(
        metrics.contains("vigil_prune_freed_bytes_total{backup_job=\"orders\"}"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("vigil_prune_last_success_timestamp_seconds{backup_job=\"orders\"} 0\n"),
        "{metrics}"
    );
    let committed = std::fs::read_dir(repo.path().join("orders/backups"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().join("manifest.json").exists())
        .count();
    assert!(
        committed <= 3,
        "keep_last = 2 (plus one being committed): {committed}"
    );
    let detailed = vigil.get("/health/detailed").json();
    assert_eq!(
        detailed["checks"]["orders:retention"][0]["status"], "pass",
        "{}",
        detailed["checks"]["orders:retention"]
    );

    // A backup vanishing behind vigil's back shows as a consistency warning.
    let victim = std::fs::read_dir(repo.path().join("orders/backups"))
        .unwrap()
        .flatten()
        .find(|e| e.path().join("manifest.json").exists())
        .unwrap()
        .path();
    let victim_id = victim.file_name().unwrap().to_string_lossy().into_owned();
    std::fs::remove_dir_all(&victim).unwrap();
    vigil.wait_for(
        "a consistency warning",
        std::time::Duration::from_secs(20),
        || {
            let c = &vigil.get("/health/detailed").json()["checks"]["orders:consistency"][0];
            c["status"] == "warn" && c["output"].as_str().is_some_and(|o| o.contains(&victim_id))
        },
    );
}

#[test]
fn scheduled_prunes_run_in_the_daemon() {
    let s = setup("keep_last = 1\nevery = \"1s\"\nafter_backup = false\n");
    backup(&s);
    backup(&s);
    assert_eq!(backups(&s).len(), 2);
    let text = std::fs::read_to_string(&s.config).unwrap();
    let extra = text.split("[repositories.local]").nth(1).unwrap();
    let vigil = crate::harness::Vigil::start(&s.catalog, &format!("[repositories.local]{extra}"));
    vigil.wait_ready();
    vigil.wait_for(
        "the scheduled prune",
        std::time::Duration::from_secs(15),
        || backups(&s).len() == 1,
    );
}

/// Writes a committed backup that finished `days_ago` days before the newest real one.
fn fake_backup(s: &Setup, template: &str, days_ago: i64) {
    let backups_dir = s.repo.join("orders/backups");
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(backups_dir.join(template).join("manifest.json")).unwrap(),
    )
    .unwrap();
    let finished = chrono::DateTime::parse_from_rfc3339(manifest["finishedAt"].as_str().unwrap())
        .unwrap()
        - chrono::Duration::days(days_ago);
    let id = finished.format("%Y%m%dT%H%M%SZ").to_string();
    let mut m = manifest.clone();
    m["backupId"] = id.clone().into();
    m["startedAt"] = finished.to_rfc3339().into();
    m["finishedAt"] = finished.to_rfc3339().into();
    let dir = backups_dir.join(&id);
    std::fs::create_dir_all(&dir).unwrap();
    for o in manifest["objects"].as_array().unwrap() {
        let name = o["name"].as_str().unwrap();
        std::fs::copy(backups_dir.join(template).join(name), dir.join(name)).unwrap();
    }
    std::fs::write(
        dir.join("manifest.json"),
        serde_json::to_vec_pretty(&m).unwrap(),
    )
    .unwrap();
}

#[test]
fn a_month_of_daily_failures_deletes_nothing() {
    let s = setup("keep_daily = 3\nkeep_within = \"2days\"\n");
    backup(&s);
    let newest = backups(&s).pop().unwrap();
    // Ten good daily backups, then a month of failed runs.
    for day in 1..10 {
        fake_backup(&s, &newest, day);
    }
    let all = backups(&s);
    assert_eq!(all.len(), 10);
    for _ in 0..30 {
        s.catalog
            .psql("INSERT INTO vigil.executions (job, kind, trigger, status, host, finished_at, error) VALUES ('orders', 'backup', 'schedule', 'failed', 'h', now(), 'source down')")
            .unwrap();
    }
    let (code, _, stderr) = vigil_cli(&s.config, &["prune", "orders"], &ENV);
    assert_eq!(code, 1);
    assert!(stderr.contains("last run failed"), "{stderr}");
    assert_eq!(backups(&s), all, "nothing deleted");
    // Once a backup succeeds again, the windows anchor on it: still no surprise.
    let (code, stdout, _) = vigil_cli(&s.config, &["prune", "orders", "--dry-run"], &ENV);
    assert_eq!(code, 0);
    assert!(stdout.contains("nothing deleted"), "{stdout}");
}
