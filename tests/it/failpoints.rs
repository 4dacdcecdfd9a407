//! The commit steps, each interrupted by a failpoint (issue 12; built only
//! with `--features failpoints`): the real binary crashes (SIGKILL) or
//! fails at the step, and the kill -9 loop's invariants hold: only complete
//! backups are listed, every listed object matches its hash, the next run
//! succeeds, and a prune leaves no temp bytes, no manifest without its data
//! and no data without its manifest. `FAILPOINT_ROUNDS` repeats each case
//! (CI: 1; `bench/reliability.sh`: more).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::harness::*;
use crate::reliability::check_listed;

const ENV: [(&str, &str); 1] = [("TEST_PGPASSWORD", PASSWORD)];

struct Setup {
    dir: tempfile::TempDir,
    repo: PathBuf,
    config: PathBuf,
    _source: TestDb,
    _catalog: TestDb,
}

impl Setup {
    /// A postgres job `orders` on an fs repository; the shipped defaults
    /// but for `retention` (the job's retention table, may be empty).
    fn new(retention: &str) -> Setup {
        let source = fresh_db();
        // About 4 MB of text: several writes per object.
        source
            .psql("CREATE TABLE t AS SELECT g, md5(g::text) || md5((g * 5)::text) AS v FROM generate_series(1, 60000) g")
            .unwrap();
        let catalog = fresh_catalog();
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("repo");
        let extra = format!(
            "[repositories.local]\nscheme = \"fs\"\noptions = {{ root = \"{}\" }}\n\
             [jobs.orders]\nkind = \"postgres\"\nsource = \"{}\"\npassword = \"${{TEST_PGPASSWORD}}\"\n\
             databases = [\"{}\"]\nrepository = \"local\"\nevery = \"1h\"\n\
             [jobs.orders.retention]\n{retention}",
            repo.display(),
            source.url(),
            source.name
        );
        let config = dir.path().join("config.toml");
        std::fs::write(&config, config_text(dir.path(), &catalog.url(), &extra)).unwrap();
        Setup {
            dir,
            repo,
            config,
            _source: source,
            _catalog: catalog,
        }
    }

    fn vigil(&self, args: &[&str], failpoints: &str) -> (i32, String, String) {
        let mut env = ENV.to_vec();
        env.push(("VIGIL_FAILPOINTS", failpoints));
        vigil_cli(&self.config, args, &env)
    }

    fn backup(&self) {
        let (code, stdout, stderr) = self.vigil(&["backup", "orders"], "");
        assert_eq!(code, 0, "the next backup failed:\n{stdout}\n{stderr}");
    }

    fn backups_dir(&self) -> PathBuf {
        self.repo.join("orders/backups")
    }
}

fn rounds() -> usize {
    std::env::var("FAILPOINT_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(1)
}

/// Runs `args` with `point` armed as `action`, and checks the step was
/// reached and ended the run the way the action says.
fn interrupted(s: &Setup, args: &[&str], point: &str, action: &str) {
    let (code, stdout, stderr) = s.vigil(args, &format!("{point}={action}"));
    assert!(
        stderr.contains(&format!("failpoint {point}:")),
        "`vigil {}` never reached failpoint {point}:\n{stdout}\n{stderr}",
        args.join(" ")
    );
    match action {
        // Killed by SIGKILL: no exit code.
        "crash" => assert_eq!(code, -1, "{stdout}\n{stderr}"),
        _ => {
            assert_eq!(code, 1, "{stdout}\n{stderr}");
            assert!(
                stderr.contains(&format!("failpoint `{point}` injected a failure")),
                "{stderr}"
            );
        }
    }
}

/// Sets every file under `dir` back three days: past `temp_grace` and
/// `orphan_grace` (shipped: 1day each), so prune may collect leftovers.
fn age_everything(dir: &Path) {
    let old = SystemTime::now() - Duration::from_secs(3 * 24 * 3600);
    for entry in walk(dir) {
        if entry.is_file() {
            let file = std::fs::File::options().write(true).open(&entry).unwrap();
            file.set_modified(old).unwrap();
        }
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        }
        out.push(path);
    }
    out
}

/// After a prune past the grace periods: no temp bytes, and every backup
/// directory holds a manifest (no data without manifest); `check_listed`
/// proves no manifest is without its data.
fn prune_leaves_nothing_half_done(s: &Setup) {
    age_everything(&s.repo);
    let (code, stdout, stderr) = s.vigil(&["prune", "orders"], "");
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let temp: u64 = walk(&s.repo.join(".vigil-tmp"))
        .iter()
        .map(|p| p.metadata().unwrap().len())
        .sum();
    assert_eq!(temp, 0, "temp bytes left after prune");
    for dir in std::fs::read_dir(s.backups_dir()).unwrap() {
        let dir = dir.unwrap().path();
        assert!(
            dir.join("manifest.json").is_file(),
            "{} holds data without a manifest after prune: {:?}",
            dir.display(),
            walk(&dir)
        );
    }
    let mut checked = Default::default();
    check_listed(&s.config, &s.repo, &mut checked);
}

/// One backup interrupted at `point` per action and round, each followed by
/// the invariants; returns how many backups are listed at the end.
fn backup_interrupted_at(point: &str) -> usize {
    let s = Setup::new("");
    let mut checked = Default::default();
    for _ in 0..rounds() {
        for action in ["crash", "error"] {
            interrupted(&s, &["backup", "orders"], point, action);
            check_listed(&s.config, &s.repo, &mut checked);
            s.backup();
            check_listed(&s.config, &s.repo, &mut checked);
        }
    }
    prune_leaves_nothing_half_done(&s);
    let listed = check_listed(&s.config, &s.repo, &mut checked);
    println!(
        "failpoint {point}: {} rounds of crash and error; {listed} backups listed, all complete and matching their hashes; every next run succeeded; prune left no temp bytes and no half backup",
        rounds()
    );
    drop(s.dir);
    listed
}

#[test]
fn a_crash_or_failure_before_the_data_commit_lists_nothing_new() {
    // Only the clean runs' backups: the interrupted ones never committed.
    assert_eq!(
        backup_interrupted_at("backup.before_data_commit"),
        2 * rounds()
    );
}

#[test]
fn a_crash_or_failure_after_the_data_commit_lists_nothing_new() {
    assert_eq!(
        backup_interrupted_at("backup.after_data_commit"),
        2 * rounds()
    );
}

#[test]
fn a_crash_or_failure_before_the_manifest_write_lists_nothing_new() {
    assert_eq!(
        backup_interrupted_at("backup.before_manifest"),
        2 * rounds()
    );
}

#[test]
fn a_crash_or_failure_after_the_manifest_write_lists_a_complete_backup() {
    // The manifest is the commit point: the interrupted runs' backups are
    // committed, complete, and listed.
    assert_eq!(backup_interrupted_at("backup.after_manifest"), 4 * rounds());
}

#[test]
fn a_prune_interrupted_between_manifest_and_data_leaves_garbage_never_a_half_backup() {
    let s = Setup::new("keep_last = 1\n");
    let mut checked = Default::default();
    for _ in 0..rounds() {
        for action in ["crash", "error"] {
            s.backup();
            s.backup();
            interrupted(
                &s,
                &["prune", "orders"],
                "prune.between_manifest_and_data",
                action,
            );
            // The manifest went first: its data is garbage, never listed.
            let listed = check_listed(&s.config, &s.repo, &mut checked);
            assert!(listed >= 1, "the newest backup must stay listed");
            let garbage = std::fs::read_dir(s.backups_dir())
                .unwrap()
                .filter(|d| !d.as_ref().unwrap().path().join("manifest.json").exists())
                .count();
            assert!(garbage >= 1, "the interrupted deletion left no garbage?");
            prune_leaves_nothing_half_done(&s);
            assert_eq!(check_listed(&s.config, &s.repo, &mut checked), 1);
        }
    }
    println!(
        "failpoint prune.between_manifest_and_data: {} rounds of crash and error; the deleted backup's data was garbage (never listed) and the next prune collected it",
        rounds()
    );
}
