//! Restore drills end to end: `vigil drill` of a logical job into a
//! scratch database of the shared cluster (created, checked, dropped; one
//! holding tables refused and left alone), a target that is the source
//! refused at config load, the daemon's scheduled drill on the shipped
//! defaults making `<job>:drill` pass, and a physical drill to a random
//! point of the recoverability window.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::harness::{
    PASSWORD, TestDb, Vigil, VigilOptions, config_text, fresh_catalog, fresh_db, shared_cluster,
    shared_psql, vigil_cli,
};

const ENV: [(&str, &str); 3] = [
    ("TEST_PGPASSWORD", PASSWORD),
    ("JOB_PGPASSWORD", PASSWORD),
    ("PGPASSWORD", PASSWORD),
];

/// A source of 100 orders.
fn source() -> TestDb {
    let db = fresh_db();
    db.psql("CREATE TABLE orders (id int PRIMARY KEY, total numeric); INSERT INTO orders SELECT g, g * 1.5 FROM generate_series(1, 100) g")
        .unwrap();
    db
}

/// A scratch database name of the test's own (not created).
fn scratch_name(source: &TestDb) -> String {
    format!("{}_drill", source.name)
}

/// The drill target: the scratch database on the shared cluster, its
/// password in the URL (a secret of the config, never printed).
fn target_url(name: &str) -> String {
    format!(
        "postgres://postgres:{PASSWORD}@127.0.0.1:{}/{name}",
        shared_cluster().port()
    )
}

/// `[repositories.local]` and `[jobs.orders]` with `drill` as its
/// `[jobs.orders.drill]` lines.
fn job_text(dir: &Path, source: &TestDb, drill: &str) -> String {
    format!(
        "[repositories.local]\nscheme = \"fs\"\noptions = {{ root = \"{}\" }}\n\
         [jobs.orders]\nkind = \"postgres\"\nsource = \"{}\"\npassword = \"${{JOB_PGPASSWORD}}\"\n\
         databases = [\"{}\"]\nrepository = \"local\"\nevery = \"1h\"\n\
         [jobs.orders.drill]\n{drill}",
        dir.join("repo").display(),
        source.url(),
        source.name
    )
}

struct Setup {
    dir: tempfile::TempDir,
    config: PathBuf,
    source: TestDb,
    catalog: TestDb,
    scratch: String,
}

impl Setup {
    /// A job with one committed backup; `drill` holds the drill's lines
    /// besides `every` and `target`.
    fn new(drill: &str) -> Setup {
        Setup::with_target(None, drill)
    }

    /// [`Setup::new`] with a target of the caller's (default: the
    /// scratch database on the shared cluster).
    fn with_target(target: Option<&str>, drill: &str) -> Setup {
        let source = source();
        let catalog = fresh_catalog();
        let scratch = scratch_name(&source);
        let dir = tempfile::tempdir().unwrap();
        let target = target.map_or_else(|| target_url(&scratch), str::to_owned);
        let lines = format!("every = \"1day\"\ntarget = \"{target}\"\n{drill}");
        let text = config_text(
            dir.path(),
            &catalog.url(),
            &job_text(dir.path(), &source, &lines),
        );
        let config = dir.path().join("config.toml");
        std::fs::write(&config, text).unwrap();
        let setup = Setup {
            dir,
            config,
            source,
            catalog,
            scratch,
        };
        let (code, _, stderr) = setup.vigil(&["backup", "orders"]);
        assert_eq!(code, 0, "backup: {stderr}");
        setup
    }

    fn vigil(&self, args: &[&str]) -> (i32, String, String) {
        let (code, stdout, stderr) = vigil_cli(&self.config, args, &ENV);
        assert!(
            !stdout.contains(PASSWORD) && !stderr.contains(PASSWORD),
            "a secret was printed:\n{stdout}\n{stderr}"
        );
        (code, stdout, stderr)
    }

    fn drill_json(&self) -> (i32, serde_json::Value, String) {
        let (code, stdout, stderr) = self.vigil(&["drill", "orders", "--json"]);
        let printed = serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}\n{stderr}"));
        (code, printed, stderr)
    }

    fn scratch_exists(&self) -> bool {
        let sql = format!(
            "SELECT count(*) FROM pg_database WHERE datname = '{}'",
            self.scratch
        );
        shared_psql("postgres", &sql).unwrap() == "1"
    }

    fn record(&self) -> serde_json::Value {
        let path = self.dir.path().join("repo/orders/proofs/drill.json");
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
    }

    fn executions(&self) -> String {
        self.catalog
            .psql("SELECT kind || ':' || status FROM vigil.executions ORDER BY id")
            .unwrap()
    }

    /// The journal's records of `event` (`--event` takes a family too).
    fn journaled(&self, event: &str) -> Vec<serde_json::Value> {
        let (code, stdout, stderr) = self.vigil(&["audit", "show", "--event", event, "--json"]);
        assert_eq!(code, 0, "{stderr}");
        stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

#[test]
fn a_passing_drill_records_its_rto_and_leaves_no_scratch_database() {
    let s = Setup::new(
        "check_sql = [\"SELECT count(*) = 100 FROM orders\", \"SELECT sum(total) = 7575 FROM orders\"]\n",
    );
    let (code, printed, stderr) = s.drill_json();
    assert_eq!(code, 0, "{printed}\n{stderr}");
    assert_eq!(printed["ok"], true, "{printed}");
    let rto = printed["rtoSeconds"].as_f64().unwrap();
    assert!(rto > 0.0 && rto < 120.0, "{printed}");
    assert_eq!(printed["trigger"], "manual");
    assert!(
        printed["target"].as_str().unwrap().ends_with(&s.scratch),
        "{printed}"
    );
    assert!(!s.scratch_exists(), "the scratch database was dropped");

    let record = s.record();
    assert_eq!(record["lastRun"], record["lastSuccess"], "{record}");
    assert_eq!(record["lastSuccess"]["rtoSeconds"].as_f64(), Some(rto));
    assert_eq!(record["lastSuccess"]["backupId"], printed["backupId"]);
    let journaled = s.journaled("drill");
    let names: Vec<&str> = journaled
        .iter()
        .map(|r| r["event"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["drill.succeeded"], "{journaled:?}");
    assert_eq!(journaled[0]["data"]["rto_seconds"].as_f64(), Some(rto));
    assert_eq!(s.executions(), "backup:succeeded\ndrill:succeeded");
    let details = s
        .catalog
        .psql("SELECT details->>'backupId' FROM vigil.executions WHERE kind = 'drill'")
        .unwrap();
    assert_eq!(details, printed["backupId"].as_str().unwrap());

    // The drill created the database; an existing empty one is reused (and dropped).
    shared_psql("postgres", &format!("CREATE DATABASE {}", s.scratch)).unwrap();
    let (code, stdout, stderr) = s.vigil(&["drill", "orders"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.starts_with("drill orders: passed: backup "),
        "{stdout}"
    );
    assert!(stdout.contains("RTO "), "{stdout}");
    assert!(stderr.is_empty(), "{stderr}");
    assert!(!s.scratch_exists());
}

#[test]
fn a_check_returning_false_fails_naming_the_query_and_drops_the_scratch() {
    let failing = "SELECT count(*) = 5 FROM orders";
    let s = Setup::new(&format!("check_sql = [\"SELECT true\", \"{failing}\"]\n"));
    let (code, stdout, stderr) = s.vigil(&["drill", "orders"]);
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    let said = format!("check `{failing}` returned false");
    assert!(stderr.contains(&said), "{stderr}");
    assert!(
        stdout.contains("FAILED") && stdout.contains(&said),
        "{stdout}"
    );
    assert!(!s.scratch_exists(), "dropped after a failed check too");

    let record = s.record();
    assert_eq!(record["lastRun"]["ok"], false);
    assert_eq!(record["lastRun"]["failedQuery"], failing);
    assert!(record.get("lastSuccess").is_none(), "{record}");
    let journaled = s.journaled("drill");
    assert_eq!(journaled.len(), 1, "{journaled:?}");
    assert_eq!(journaled[0]["event"], "drill.failed");
    assert_eq!(journaled[0]["data"]["failed_query"], failing);
    assert_eq!(s.executions(), "backup:succeeded\ndrill:failed");
}

#[test]
fn a_scratch_database_holding_a_table_is_refused_and_left_intact() {
    let s = Setup::new("");
    shared_psql("postgres", &format!("CREATE DATABASE {}", s.scratch)).unwrap();
    let precious = TestDb {
        name: s.scratch.clone(),
        port: s.source.port,
    };
    precious
        .psql("CREATE TABLE precious (v text); INSERT INTO precious VALUES ('keep me')")
        .unwrap();
    let (code, printed, stderr) = s.drill_json();
    assert_eq!(code, 1, "{printed}\n{stderr}");
    let error = printed["error"].as_str().unwrap();
    assert!(error.contains("holds 1 table(s)"), "{error}");
    assert!(error.contains("nothing was touched"), "{error}");
    assert_eq!(precious.psql("SELECT v FROM precious").unwrap(), "keep me");
    assert_eq!(
        precious
            .psql("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
            .unwrap(),
        "1",
        "nothing restored into it"
    );
}

#[test]
fn a_target_server_that_cannot_be_reached_fails_the_drill_with_exit_3() {
    let closed = crate::harness::free_port();
    let target = format!("postgres://postgres@127.0.0.1:{closed}/scratch");
    let s = Setup::with_target(Some(&target), "");
    let (code, printed, stderr) = s.drill_json();
    assert_eq!(code, 3, "{printed}\n{stderr}");
    let error = printed["error"].as_str().unwrap();
    assert!(error.contains(&format!("127.0.0.1:{closed}")), "{error}");
    assert_eq!(s.record()["lastRun"]["ok"], false);
    assert_eq!(s.executions(), "backup:succeeded\ndrill:failed");
}

#[test]
fn a_target_that_is_the_source_is_refused_at_config_load() {
    let source = fresh_db();
    let dir = tempfile::tempdir().unwrap();
    // The source's database through the keyword form and `localhost`.
    let target = format!(
        "host=localhost port={} dbname={} user=postgres",
        source.port, source.name
    );
    let lines = format!("every = \"1day\"\ntarget = \"{target}\"\n");
    let text = config_text(
        dir.path(),
        &source.url(),
        &job_text(dir.path(), &source, &lines),
    );
    let config = dir.path().join("config.toml");
    std::fs::write(&config, &text).unwrap();
    let line = text
        .lines()
        .position(|l| l.starts_with("target = "))
        .unwrap()
        + 1;
    let (code, _, stderr) = vigil_cli(&config, &["check-config"], &ENV);
    assert_eq!(code, 64, "{stderr}");
    let at = format!("config.toml:{line}:1: `jobs.orders.drill.target`");
    assert!(stderr.contains(&at), "{at}\n{stderr}");
    assert!(stderr.contains("is the job's source"), "{stderr}");
    assert!(
        stderr.contains(&format!("localhost:{}/{}", source.port, source.name)),
        "{stderr}"
    );
    let (code, _, stderr) = vigil_cli(&config, &["drill", "orders"], &ENV);
    assert_eq!(code, 64, "refused before anything ran: {stderr}");
}

/// Shipped defaults: `[jobs.orders.drill]` with only `every` and `target`
/// (the default check, catch-up on): the daemon drills at start-up,
/// `<job>:drill` passes, and the metrics appear.
#[test]
fn a_scheduled_drill_on_the_defaults_makes_the_drill_check_pass() {
    let source = source();
    let catalog = fresh_catalog();
    let scratch = scratch_name(&source);
    let tempdir = tempfile::tempdir().unwrap();
    let lines = format!("every = \"1h\"\ntarget = \"{}\"\n", target_url(&scratch));
    let text = config_text(
        tempdir.path(),
        &catalog.url(),
        &job_text(tempdir.path(), &source, &lines),
    );
    let config = tempdir.path().join("config.toml");
    std::fs::write(&config, &text).unwrap();
    let (code, _, stderr) = vigil_cli(&config, &["backup", "orders"], &ENV);
    assert_eq!(code, 0, "{stderr}");

    let mut options = VigilOptions::default();
    options.env.insert("JOB_PGPASSWORD".into(), PASSWORD.into());
    let vigil = Vigil::start_text(tempdir, &text, options);
    vigil.wait_ready();
    let status =
        |vigil: &Vigil| vigil.get("/health/detailed").json()["checks"]["orders:drill"][0].clone();
    vigil.wait_for("orders:drill to pass", Duration::from_secs(60), || {
        status(&vigil)["status"] == "pass"
    });
    let check = status(&vigil);
    assert_eq!(check["observedUnit"], "s", "{check}");
    assert!(check["observedValue"].as_f64().unwrap() > 0.0, "{check}");
    let metrics = vigil.get("/metrics").body;
    for family in [
        "vigil_drill_last_success_timestamp_seconds{backup_job=\"orders\"}",
        "vigil_drill_duration_seconds{backup_job=\"orders\"}",
        "vigil_drill_last_run_success{backup_job=\"orders\"} 1",
    ] {
        assert!(metrics.contains(family), "{family}\n{metrics}");
    }
    let (clean, said) = crate::admin_truths::promtool_check(&metrics);
    assert!(clean, "promtool check metrics: {said}");
    let record: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(vigil.dir.join("repo/orders/proofs/drill.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(record["lastSuccess"]["trigger"], "schedule", "{record}");
    let gone = format!("SELECT count(*) FROM pg_database WHERE datname = '{scratch}'");
    assert_eq!(shared_psql("postgres", &gone).unwrap(), "0");
    assert!(!vigil.log_text().contains(PASSWORD));
}

/// Sets the archive time of every WAL object archived after `at` back to
/// `at`, so the window ends where a busy database's archive would: at a
/// time the archived WAL replays past (here the next commit follows it).
fn archived_at(repo: &Path, at: std::time::SystemTime) {
    let mut dirs = vec![repo.join(crate::pitr::JOB).join("wal")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if entry.metadata().unwrap().modified().unwrap() > at {
                let file = std::fs::File::options().write(true).open(&path).unwrap();
                file.set_modified(at).unwrap();
            }
        }
    }
}

/// A physical drill: a random time of the window (between the base
/// backup's end and the archive's last point), laid out under the
/// target, a throwaway server started as `postgres` until it promoted,
/// the check, everything removed.
#[test]
fn a_physical_drill_recovers_to_a_random_point_of_the_window() {
    let s = crate::pitr::Setup::new();
    s.psql("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1)");
    let (code, _, stderr) = s.vigil(&["backup", crate::pitr::JOB]);
    assert_eq!(code, 0, "{stderr}\n{}", s.server_log());
    let listed = crate::harness::list_manifests(&s.config, crate::pitr::JOB, &[]);
    let finished: chrono::DateTime<chrono::Utc> =
        listed[0]["finishedAt"].as_str().unwrap().parse().unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    let window_end = std::time::SystemTime::now();
    std::thread::sleep(Duration::from_millis(200));
    s.psql("INSERT INTO t VALUES (2)");
    s.switch_and_wait();
    archived_at(&s.repo, window_end);

    let target = s.dir("drills");
    let mut config = std::fs::read_to_string(&s.config).unwrap();
    config.push_str(&format!(
        "[jobs.{}.drill]\nevery = \"1day\"\ntarget = \"{}\"\ncheck_sql = [\"SELECT count(*) = 1 FROM t\"]\n",
        crate::pitr::JOB,
        target.display()
    ));
    std::fs::write(&s.config, config).unwrap();
    let (code, stdout, stderr) = s.vigil(&["drill", crate::pitr::JOB, "--json"]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let printed: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(printed["ok"], true, "{printed}");
    let chosen: chrono::DateTime<chrono::Utc> =
        printed["recoveryTarget"].as_str().unwrap().parse().unwrap();
    let end: chrono::DateTime<chrono::Utc> = window_end.into();
    assert!(
        finished <= chosen && chosen <= end,
        "{chosen} outside the window {finished} .. {end}"
    );
    assert_eq!(printed["backupId"], listed[0]["backupId"]);
    assert!(printed["rtoSeconds"].as_f64().unwrap() > 0.0);
    let left: Vec<_> = std::fs::read_dir(&target).unwrap().collect();
    assert!(
        left.is_empty(),
        "the scratch directory was removed: {left:?}"
    );
    let record: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(s.repo.join("pg/proofs/drill.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        record["lastSuccess"]["recoveryTarget"],
        printed["recoveryTarget"]
    );
}
