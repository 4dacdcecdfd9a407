//! Manifests are cross-checked against their place and the clock, never
//! trusted blindly; a failed backup removes what it wrote. Real pg_dump,
//! real catalog, the real binary, an fs repository; the job keeps the
//! shipped defaults (no max_age, default retention) unless a test says so.

use std::path::PathBuf;
use std::time::Duration;

use crate::harness::{
    PASSWORD, TestDb, Vigil, config_text, files_under, fresh_catalog, fresh_db, vigil_cli,
};

const ENV: [(&str, &str); 1] = [("TEST_PGPASSWORD", PASSWORD)];

struct Setup {
    dir: tempfile::TempDir,
    config: PathBuf,
    repo: PathBuf,
    /// The `[repositories]` and `[jobs]` sections, for a daemon.
    jobs: String,
    catalog: TestDb,
}

fn setup(database: Option<&str>, retention: &str) -> Setup {
    let source = fresh_db();
    source.psql("CREATE TABLE t AS SELECT 1 AS x").unwrap();
    let catalog = fresh_catalog();
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let jobs = format!(
        "[repositories.local]\nscheme = \"fs\"\noptions = {{ root = \"{}\" }}\n\
         [jobs.orders]\nkind = \"postgres\"\nsource = \"{}\"\npassword = \"${{TEST_PGPASSWORD}}\"\ndatabases = [\"{}\"]\nrepository = \"local\"\nevery = \"1h\"\n{retention}",
        repo.display(),
        source.url(),
        database.unwrap_or(&source.name),
    );
    let config = dir.path().join("config.toml");
    std::fs::write(&config, config_text(dir.path(), &catalog.url(), &jobs)).unwrap();
    Setup {
        dir,
        config,
        repo,
        jobs,
        catalog,
    }
}

/// Two committed backups, oldest first.
fn two_backups(s: &Setup) -> (String, String) {
    for _ in 0..2 {
        let (code, _, stderr) = vigil_cli(&s.config, &["backup", "orders"], &ENV);
        assert_eq!(code, 0, "{stderr}");
        // Ids read as start seconds: keep them distinct.
        std::thread::sleep(Duration::from_millis(1100));
    }
    let ids = listed(s).0;
    assert_eq!(ids.len(), 2, "{ids:?}");
    (ids[0].clone(), ids[1].clone())
}

/// `vigil list orders --json`: (committed ids, damaged (id, why)).
fn listed(s: &Setup) -> (Vec<String>, Vec<(String, String)>) {
    let (code, stdout, stderr) = vigil_cli(&s.config, &["list", "orders", "--json"], &ENV);
    assert_eq!(code, 0, "{stderr}");
    let entries: Vec<serde_json::Value> = serde_json::from_str(&stdout).unwrap();
    let id = |e: &serde_json::Value| e["backupId"].as_str().unwrap().to_owned();
    let committed = entries
        .iter()
        .filter(|e| e.get("damaged").is_none())
        .map(id)
        .collect();
    let damaged = entries
        .iter()
        .filter_map(|e| Some((id(e), e.get("damaged")?.as_str()?.to_owned())))
        .collect();
    (committed, damaged)
}

fn backup_dir(s: &Setup, id: &str) -> PathBuf {
    s.repo.join("orders/backups").join(id)
}

/// Rewrites one field's line of a committed manifest in place.
fn edit_manifest(s: &Setup, id: &str, field: &str, edit: impl Fn(&str) -> String) {
    let path = backup_dir(s, id).join("manifest.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let needle = format!("\"{field}\": ");
    let edited: Vec<String> = text
        .lines()
        .map(|l| {
            if l.trim_start().starts_with(&needle) {
                edit(l)
            } else {
                l.to_owned()
            }
        })
        .collect();
    assert_ne!(
        edited.join("\n") + "\n",
        text,
        "{field} not found in {text}"
    );
    std::fs::write(&path, edited.join("\n") + "\n").unwrap();
}

#[test]
fn a_manifest_from_the_future_is_damaged_and_never_fresh() {
    let s = setup(None, "");
    let (older, newer) = two_backups(&s);
    // One flipped bit: 2026 -> 3026 in the older backup's finishedAt.
    edit_manifest(&s, &older, "finishedAt", |l| l.replacen("\"2", "\"3", 1));

    let (committed, damaged) = listed(&s);
    assert_eq!(committed, [newer.as_str()]);
    assert_eq!(damaged.len(), 1, "{damaged:?}");
    assert_eq!(damaged[0].0, older);
    assert!(
        damaged[0].1.contains("finishedAt") && damaged[0].1.contains("future"),
        "{damaged:?}"
    );
    let (code, stdout, stderr) = vigil_cli(&s.config, &["list", "orders"], &ENV);
    assert_eq!(code, 0, "{stderr}");
    let row = stdout
        .lines()
        .find(|l| l.contains(&older))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(row.contains("DAMAGED") && row.contains("3026-"), "{row}");

    // The daemon, with the shipped defaults (no max_age).
    let vigil = Vigil::start(&s.catalog, &s.jobs);
    vigil.wait_ready();
    let newer_finished = {
        let m: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(backup_dir(&s, &newer).join("manifest.json")).unwrap(),
        )
        .unwrap();
        chrono::DateTime::parse_from_rfc3339(m["finishedAt"].as_str().unwrap())
            .unwrap()
            .timestamp()
    };
    vigil.wait_for("the consistency check", Duration::from_secs(20), || {
        vigil.get("/health/detailed").json()["checks"]["orders:consistency"][0]["status"] == "warn"
    });
    let check = vigil.get("/health/detailed").json()["checks"]["orders:consistency"][0].clone();
    let output = check["output"].as_str().unwrap_or_default();
    assert!(
        output.contains(&older) && output.contains("finishedAt"),
        "{check}"
    );
    let metrics = vigil.get("/metrics").body;
    assert!(
        metrics.contains("vigil_backup_damaged_manifests{backup_job=\"orders\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("vigil_backups{backup_job=\"orders\"} 1\n"),
        "{metrics}"
    );
    // Freshness reads the newest good backup, not the year 3026.
    let last_success: f64 = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix("vigil_backup_last_success_timestamp_seconds{backup_job=\"orders\"} ")
        })
        .unwrap_or_else(|| panic!("{metrics}"))
        .parse()
        .unwrap();
    assert_eq!(last_success.floor() as i64, newer_finished, "{metrics}");
}

#[test]
fn prune_never_deletes_a_kept_backup_through_a_flipped_backup_id() {
    let s = setup(None, "[jobs.orders.retention]\nkeep_last = 1\n");
    let (older, newer) = two_backups(&s);
    // The older manifest now claims to be the newer backup.
    edit_manifest(&s, &older, "backupId", |l| l.replace(&older, &newer));
    let newer_files = files_under(&backup_dir(&s, &newer));
    assert!(newer_files.len() >= 2, "{newer_files:?}");

    let (code, stdout, stderr) = vigil_cli(&s.config, &["prune", "orders", "--json"], &ENV);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report[0]["deleted"], serde_json::json!([]), "{report}");
    assert_eq!(
        report[0]["damaged"][0]["backupId"],
        older.as_str(),
        "{report}"
    );
    // The kept backup's data is all there, and the damaged one is left for a person.
    assert_eq!(files_under(&backup_dir(&s, &newer)), newer_files);
    assert!(backup_dir(&s, &older).join("manifest.json").exists());
    let (committed, damaged) = listed(&s);
    assert_eq!(committed, [newer.as_str()]);
    assert!(damaged[0].1.contains("backupId"), "{damaged:?}");
    let history = s
        .catalog
        .psql("SELECT count(*) FROM vigil.cleanup_history")
        .unwrap();
    assert_eq!(history, "0");
}

#[test]
fn a_failed_backup_leaves_no_directory_and_no_warnings_behind() {
    let s = setup(Some("no_such_database"), "");
    for _ in 0..2 {
        let (code, _, stderr) = vigil_cli(&s.config, &["backup", "orders"], &ENV);
        assert_eq!(code, 1, "{stderr}");
        assert!(stderr.contains("no_such_database"), "{stderr}");
        // The failure is reported; the not-found answers of allocating an
        // id and checking for a manifest are not warnings.
        assert!(!stderr.contains("NotFound"), "{stderr}");
        std::thread::sleep(Duration::from_millis(1100));
    }
    let backups = s.repo.join("orders/backups");
    let left: Vec<_> = std::fs::read_dir(&backups)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
    // Nothing for list (or a later run) to warn about.
    let (code, stdout, stderr) = vigil_cli(&s.config, &["list", "orders"], &ENV);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stderr, "", "{stdout}");
    let runs = s
        .catalog
        .psql("SELECT string_agg(status, ',') FROM vigil.executions WHERE kind = 'backup'")
        .unwrap();
    assert_eq!(runs, "failed,failed");
}

#[test]
fn a_killed_runs_leftover_is_noted_once_not_warned_per_read() {
    let s = setup(None, "");
    // What a run killed before its commit leaves: data, no manifest.
    let leftover = backup_dir(&s, "20261127T000000Z");
    std::fs::create_dir_all(&leftover).unwrap();
    std::fs::write(leftover.join("orders.dump.zst"), b"partial").unwrap();
    let (code, stdout, stderr) = vigil_cli(&s.config, &["list", "orders"], &ENV);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        stderr.trim(),
        "note: orders: 1 uncommitted leftover(s) (never finished; prune removes them)",
        "{stdout}"
    );
}

#[test]
fn a_mirror_does_not_carry_a_damaged_manifest() {
    let mut s = setup(None, "");
    let remote = s.dir.path().join("remote");
    s.jobs.push_str(&format!(
        "[repositories.remote]\nscheme = \"fs\"\noptions = {{ root = \"{}\" }}\n\
         [jobs.offsite]\nkind = \"mirror\"\nrepository = \"local\"\nmirror_to = \"remote\"\nevery = \"1h\"\n",
        remote.display()
    ));
    std::fs::write(
        &s.config,
        config_text(s.dir.path(), &s.catalog.url(), &s.jobs),
    )
    .unwrap();
    let (older, newer) = two_backups(&s);
    edit_manifest(&s, &older, "backupId", |l| l.replace(&older, &newer));

    let (code, _, stderr) = vigil_cli(&s.config, &["backup", "offsite"], &ENV);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("damaged manifest") && stderr.contains(&older),
        "{stderr}"
    );
    let mirrored = |id: &str| remote.join("orders/backups").join(id).join("manifest.json");
    assert!(mirrored(&newer).exists());
    assert!(
        !mirrored(&older).exists(),
        "the damaged manifest was copied"
    );
}
