//! Health never says pass while a job is not protected, on the shipped
//! defaults: config.toml.example as a user runs it, with only the
//! addresses, paths and credentials that must be the user's own.

use std::time::Duration;

use crate::harness::*;

/// The shipped defaults on fresh clusters: a catalog, a source whose
/// `backup_<db>` role may read the tables `tables_sql` creates,
/// and config.toml.example for them in a temp dir (secret files 0600, as
/// the README asks). Nothing optional is set.
pub(crate) struct ShippedExample {
    pub(crate) catalog: TestDb,
    pub(crate) source: TestDb,
    pub(crate) dir: tempfile::TempDir,
    pub(crate) text: String,
}

pub(crate) fn shipped_example(tables_sql: &str) -> ShippedExample {
    use std::os::unix::fs::PermissionsExt;
    let catalog = fresh_db();
    let source = fresh_db();
    let role = format!("backup_{}", source.name);
    source
        .psql(&format!(
            "CREATE ROLE {role} LOGIN PASSWORD 'backup-pw-Kq2'; {tables_sql}; GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role};"
        ))
        .unwrap();
    let url = format!(
        "postgres://{role}@127.0.0.1:{}/{}",
        source.port, source.name
    );
    let dir = tempfile::Builder::new()
        .prefix("vigil-it-")
        .tempdir()
        .unwrap();
    let text = example_config(dir.path(), &catalog, &source, &url);
    for secret in ["catalog.password", "orders.password"] {
        let path = dir.path().join(secret);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    ShippedExample {
        catalog,
        source,
        dir,
        text,
    }
}

/// config.toml.example with the machine-specific values replaced (and
/// nothing else: no optional key is set).
pub(crate) fn example_config(
    dir: &std::path::Path,
    catalog: &TestDb,
    source: &TestDb,
    source_url: &str,
) -> String {
    let example = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml.example"));
    let text = std::fs::read_to_string(example).unwrap();
    std::fs::write(dir.join("catalog.password"), PASSWORD).unwrap();
    std::fs::write(dir.join("orders.password"), "backup-pw-Kq2").unwrap();
    let replacements = [
        (
            "state_dir = \"/var/lib/vigil\"".to_owned(),
            format!("state_dir = \"{}\"", dir.join("state").display()),
        ),
        (
            "listen = \"127.0.0.1:9746\"".to_owned(),
            "listen = \"127.0.0.1:0\"".to_owned(),
        ),
        (
            "url = \"postgres://vigil@127.0.0.1:5432/vigil\"".to_owned(),
            format!("url = \"{}\"", catalog.url()),
        ),
        (
            "password_file = \"/etc/vigil/catalog.password\"".to_owned(),
            format!(
                "password_file = \"{}\"",
                dir.join("catalog.password").display()
            ),
        ),
        (
            "source = \"postgres://backup@127.0.0.1:5432/orders\"".to_owned(),
            format!("source = \"{source_url}\""),
        ),
        (
            "# password_file = \"/etc/vigil/orders.password\"".to_owned(),
            format!(
                "password_file = \"{}\"",
                dir.join("orders.password").display()
            ),
        ),
        (
            "databases = [\"orders\"]".to_owned(),
            format!("databases = [\"{}\"]", source.name),
        ),
        (
            "root = \"/var/lib/vigil/repo\"".to_owned(),
            format!("root = \"{}\"", dir.join("repo").display()),
        ),
    ];
    let mut text = text;
    for (from, to) in replacements {
        assert!(text.contains(&from), "the example no longer has {from}");
        text = text.replacen(&from, &to, 1);
    }
    text
}

/// A source database with a table the `backup` role may not read.
fn unreadable_source() -> (TestDb, String) {
    let source = fresh_db();
    let role = format!("backup_{}", source.name);
    source
        .psql(&format!(
            "CREATE ROLE {role} LOGIN PASSWORD 'backup-pw-Kq2';
             CREATE TABLE pgbench_history (id int); INSERT INTO pgbench_history VALUES (1);
             REVOKE ALL ON pgbench_history FROM PUBLIC;"
        ))
        .unwrap();
    let url = format!(
        "postgres://{role}@127.0.0.1:{}/{}",
        source.port, source.name
    );
    (source, url)
}

#[test]
fn a_job_whose_every_run_fails_fails_health_on_the_example_config() {
    let catalog = fresh_db();
    let (source, source_url) = unreadable_source();
    let tempdir = tempfile::Builder::new()
        .prefix("vigil-it-")
        .tempdir()
        .unwrap();
    let text = example_config(tempdir.path(), &catalog, &source, &source_url);
    let options = VigilOptions {
        env: Default::default(),
        ..VigilOptions::default()
    };
    let vigil = Vigil::start_text(tempdir, &text, options);
    // The shipped schedule is 02:30 daily with catch_up: with no backup
    // yet, the missed run is caught up at once, and it fails.
    vigil.wait_for("the catch-up run to fail", Duration::from_secs(60), || {
        vigil.log_text().contains("backup failed")
    });
    vigil.wait_for("/health to fail", Duration::from_secs(30), || {
        vigil.get("/health").status == 503
    });
    assert_eq!(vigil.get("/health").json()["status"], "fail");

    let detailed = vigil.get("/health/detailed").json();
    let freshness = &detailed["checks"]["orders:freshness"][0];
    assert_eq!(freshness["status"], "fail", "{detailed:#}");
    let output = freshness["output"].as_str().unwrap();
    assert!(
        output.starts_with("last run failed:") && output.contains("permission denied"),
        "the real cause leads: {output}"
    );
    assert_eq!(freshness["vigil"]["critical"], true);

    let page = vigil.get("/").body;
    assert!(page.contains("permission denied"), "{page}");
    assert!(!page.contains("(informational)"), "{page}");

    // The README's alert rules fire for this job on the defaults: the
    // derived threshold (daily: 36h) is exported, the last success is 0.
    let metrics = vigil.get("/metrics").body;
    for line in [
        "vigil_backup_max_age_seconds{backup_job=\"orders\"} 129600",
        "vigil_backup_last_success_timestamp_seconds{backup_job=\"orders\"} 0",
        "vigil_backup_consecutive_failures{backup_job=\"orders\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} missing:\n{metrics}");
    }

    let (code, stdout, _) = vigil_cli(&vigil.config_path_with_addr(), &["status"], &[]);
    assert_ne!(code, 0, "{stdout}");
    assert!(stdout.contains("permission denied"), "{stdout}");
}

#[test]
fn one_failure_warns_and_two_in_a_row_fail_after_a_success() {
    let db = fresh_db();
    db.psql("CREATE TABLE t (id int); INSERT INTO t VALUES (1);")
        .unwrap();
    let source = format!(
        "[repositories.local]\nscheme = \"fs\"\n[repositories.local.options]\nroot = \"{{REPO}}\"\n\
         [jobs.orders]\nkind = \"postgres\"\nsource = \"{}\"\npassword = \"${{TEST_PGPASSWORD}}\"\n\
         databases = [\"{}\", \"gone_{}\"]\nrepository = \"local\"\nevery = \"3s\"\ncatch_up = false\n",
        db.url(),
        db.name,
        db.name
    );
    let repo = tempfile::tempdir().unwrap();
    let extra = source.replace("{REPO}", &repo.path().display().to_string());
    // First a good run: the job's second database exists for it.
    db.psql(&format!("CREATE DATABASE gone_{}", db.name))
        .unwrap();
    let vigil = Vigil::start(&db, &extra);
    let freshness =
        |v: &Vigil| v.get("/health/detailed").json()["checks"]["orders:freshness"][0].clone();
    vigil.wait_for("a good backup", Duration::from_secs(30), || {
        freshness(&vigil)["status"] == "pass"
    });
    db.psql(&format!("DROP DATABASE gone_{} WITH (FORCE)", db.name))
        .unwrap();
    vigil.wait_for("one failure to warn", Duration::from_secs(30), || {
        freshness(&vigil)["status"] == "warn"
    });
    let first = freshness(&vigil);
    assert!(
        first["output"]
            .as_str()
            .unwrap()
            .starts_with("last run failed:"),
        "{first:#}"
    );
    assert_eq!(vigil.get("/health").status, 200);
    vigil.wait_for("two failures to fail", Duration::from_secs(30), || {
        freshness(&vigil)["status"] == "fail"
    });
    let second = freshness(&vigil);
    assert!(
        second["output"]
            .as_str()
            .unwrap()
            .contains("the last 2 runs failed"),
        "{second:#}"
    );
    assert_eq!(vigil.get("/health").status, 503);
}
