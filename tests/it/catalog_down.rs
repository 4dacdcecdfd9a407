//! The catalog is a mirror, never on the critical path: commands with the
//! catalog down, unmigrated or refusing us, and journaling only what happened.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::harness::{
    PASSWORD, TestDb, Vigil, VigilOptions, config_text, fresh_catalog, fresh_db, own_cluster,
    vigil_cli,
};

const ENV: [(&str, &str); 2] = [("TEST_PGPASSWORD", PASSWORD), ("PGPASSWORD", PASSWORD)];
const NOT_UPDATED: &str = "the catalog was not updated";
/// Far below the shipped `catalog.connect_timeout` (30 s) the old code waited.
const QUICK: Duration = Duration::from_secs(10);

struct Setup {
    dir: tempfile::TempDir,
    config: PathBuf,
    source: TestDb,
}

/// A job `orders` over a small source into an fs repository, with the
/// shipped catalog timeouts (config.toml.example's defaults: 30 s, 5 s).
fn setup(catalog_url: &str) -> Setup {
    let source = fresh_db();
    source
        .psql("CREATE TABLE t AS SELECT g AS x FROM generate_series(1, 1000) g")
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    let setup = Setup {
        dir,
        config,
        source,
    };
    setup.point_at(catalog_url);
    setup
}

impl Setup {
    fn point_at(&self, catalog_url: &str) {
        let extra = format!(
            "[repositories.local]\nscheme = \"fs\"\noptions = {{ root = \"{}\" }}\n\
             [jobs.orders]\nkind = \"postgres\"\nsource = \"{}\"\npassword = \"${{TEST_PGPASSWORD}}\"\n\
             databases = [\"{}\"]\nrepository = \"local\"\nevery = \"1h\"\n\
             [jobs.orders.retention]\nkeep_last = 1\n",
            self.dir.path().join("repo").display(),
            self.source.url(),
            self.source.name,
        );
        let text = config_text(self.dir.path(), catalog_url, &extra)
            .replace("connect_timeout = \"20s\"\nquery_timeout = \"1s\"\n", "");
        assert!(!text.contains("connect_timeout"), "shipped defaults");
        std::fs::write(&self.config, text).unwrap();
    }

    /// Runs a command; returns its exit code, stdout, stderr and duration.
    fn run(&self, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String, Duration) {
        let started = Instant::now();
        let (code, stdout, stderr) = vigil_cli(&self.config, args, env);
        (code, stdout, stderr, started.elapsed())
    }

    fn backup(&self) -> String {
        let (code, stdout, stderr, _) = self.run(&["backup", "orders"], &ENV);
        assert_eq!(code, 0, "backup failed:\n{stdout}\n{stderr}");
        let manifests = crate::harness::list_manifests(&self.config, "orders", &ENV);
        manifests.last().unwrap()["backupId"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// The journal's records, through `vigil audit show --json`.
    fn journal(&self) -> Vec<serde_json::Value> {
        let (code, stdout, stderr) = vigil_cli(&self.config, &["audit", "show", "--json"], &ENV);
        assert_eq!(code, 0, "{stderr}");
        stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn events(&self, event: &str) -> Vec<serde_json::Value> {
        self.journal()
            .into_iter()
            .filter(|r| r["event"] == event)
            .collect()
    }
}

fn target_url(name: &str) -> String {
    let cluster = crate::harness::shared_cluster();
    format!("postgres://postgres@127.0.0.1:{}/{name}", cluster.port())
}

#[test]
fn with_the_catalog_down_commands_go_on_at_once_and_the_shipper_catches_up() {
    let mut cluster = own_cluster();
    cluster.psql("postgres", "CREATE DATABASE catalog").unwrap();
    let url = cluster.url("catalog");
    let s = setup(&url);
    let (code, _, stderr, _) = s.run(&["migrate"], &ENV);
    assert_eq!(code, 0, "{stderr}");
    s.backup();
    let id = s.backup();
    cluster.stop().unwrap();
    let down = format!("catalog at 127.0.0.1:{} is unreachable", cluster.port());

    let target = format!("{}_restored", s.source.name);
    let to = target_url(&target);
    let commands: [(&[&str], bool); 6] = [
        (&["list", "orders"], false),
        (&["restore", "orders", "--to", &to, "--create"], true),
        (&["prune", "orders", "--dry-run"], true),
        (&["pin", "orders", &id], false),
        (&["unpin", "orders", &id], false),
        (&["audit", "show"], false),
    ];
    for (args, writes_catalog) in commands {
        let (code, stdout, stderr, took) = s.run(args, &ENV);
        println!(
            "{args:?} with the catalog down: {:.2} s",
            took.as_secs_f64()
        );
        assert_eq!(code, 0, "{args:?}:\n{stdout}\n{stderr}");
        assert!(took < QUICK, "{args:?} took {took:?}");
        assert!(!stderr.contains("creating a new object"), "{stderr}");
        if args[0] == "prune" {
            // Two backups, keep_last = 1: the plan says why it deletes nothing.
            assert!(stdout.contains("last run is unknown"), "{stdout}");
        }
        if writes_catalog {
            assert_eq!(
                stderr.matches(NOT_UPDATED).count(),
                1,
                "said once: {stderr}"
            );
            assert!(stderr.contains(&down), "names host:port: {stderr}");
            assert!(
                stderr.contains("Connection refused"),
                "the reason: {stderr}"
            );
        }
    }
    let restored = TestDb {
        name: target,
        port: s.source.port,
    };
    assert_eq!(restored.psql("SELECT count(*) FROM t").unwrap(), "1000");

    // No wait for the catalog before the run, and the job lock falls back
    // to the repository lease: the backup is taken.
    let (code, _, stderr, took) = s.run(&["backup", "orders"], &ENV);
    println!(
        "[\"backup\", \"orders\"] with the catalog down: {:.2} s",
        took.as_secs_f64()
    );
    assert!(took < QUICK, "backup took {took:?}: {stderr}");
    assert_eq!(stderr.matches(NOT_UPDATED).count(), 1, "{stderr}");
    assert_eq!(code, 0, "{stderr}");

    // Back up: the daemon's shipper projects the CLI's records.
    cluster.start().unwrap();
    let extra = format!(
        "[journal]\ndir = \"{}\"\n",
        s.dir.path().join("state/journal").display()
    );
    let vigil = Vigil::start_with(&cluster.url("catalog"), &extra, VigilOptions::default());
    let shipped = |event: &str| {
        cluster
            .psql(
                "catalog",
                &format!("SELECT count(*) FROM vigil.audit_log WHERE action = '{event}'"),
            )
            .ok()
            .and_then(|n| n.trim().parse::<usize>().ok())
            .unwrap_or(0)
    };
    vigil.wait_for("the CLI's records in audit_log", QUICK * 3, || {
        [
            "restore.succeeded",
            "prune.planned",
            "backup.pinned",
            "backup.unpinned",
        ]
        .iter()
        .all(|e| shipped(e) == 1)
            // Two backups before the outage, one during it.
            && shipped("backup.succeeded") == 3
    });
}

#[test]
fn commands_never_migrate_and_say_so() {
    let migrated = fresh_catalog();
    let s = setup(&migrated.url());
    let id = s.backup();
    let bare = fresh_db();
    s.point_at(&bare.url());
    let target = fresh_db();
    let to = target.url();
    for args in [
        &["prune", "orders", "--dry-run"][..],
        &["restore", "orders", "--backup", &id, "--to", &to],
        &["backup", "orders"],
    ] {
        let (code, stdout, stderr, took) = s.run(args, &ENV);
        assert!(took < QUICK, "{args:?} took {took:?}");
        assert!(
            stderr.contains("catalog not migrated: run `vigil migrate`"),
            "{args:?}: {stderr}"
        );
        assert_eq!(stderr.matches(NOT_UPDATED).count(), 1, "{stderr}");
        if args[0] != "backup" {
            assert_eq!(code, 0, "{args:?}:\n{stdout}\n{stderr}");
        }
    }
    assert_eq!(target.psql("SELECT count(*) FROM t").unwrap(), "1000");
    let schema = bare
        .psql("SELECT to_regclass('vigil.schema_history') IS NULL")
        .unwrap();
    assert_eq!(schema, "t", "no command but `migrate` and `run` migrates");
}

#[test]
fn a_refusing_catalog_fails_at_once_with_the_servers_message() {
    let catalog = fresh_catalog();
    let addr = format!("127.0.0.1:{}", catalog.port);

    // The daemon: a wrong password is not worth 30 s of retries.
    let options = VigilOptions {
        env: [(
            "TEST_PGPASSWORD".to_owned(),
            "wrong-password-123".to_owned(),
        )]
        .into(),
        ..Default::default()
    };
    let started = Instant::now();
    let mut vigil = Vigil::start_with(&catalog.url(), "", options);
    let status = vigil.wait_exit(QUICK);
    assert!(started.elapsed() < QUICK);
    assert_eq!(status.code(), Some(1));
    let log = vigil.log_text();
    assert!(log.contains(&addr), "{log}");
    assert!(log.contains("password authentication failed"), "{log}");
    assert!(!log.contains("creating a new object"), "{log}");
    assert!(!log.contains("wrong-password-123"), "{log}");

    // `migrate`: an unknown database, likewise.
    let s = setup(&format!("postgres://postgres@{addr}/no_such_catalog"));
    let (code, _, stderr, took) = s.run(&["migrate"], &ENV);
    assert!(took < QUICK, "migrate took {took:?}");
    assert_eq!(code, 1);
    // The log is JSON, so the server's quotes arrive escaped.
    assert!(stderr.contains(&addr), "{stderr}");
    assert!(
        stderr.contains("no_such_catalog") && stderr.contains("does not exist"),
        "{stderr}"
    );
    assert!(!stderr.contains("creating a new object"), "{stderr}");

    // A job command goes on, naming the refusal once.
    let (code, _, stderr, took) = s.run(&["prune", "orders", "--dry-run"], &ENV);
    assert!(took < QUICK);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stderr.matches(NOT_UPDATED).count(), 1, "{stderr}");
    assert!(
        stderr.contains(&format!("catalog at {addr} refused vigil")),
        "{stderr}"
    );
}

#[test]
fn pin_unpin_and_restore_journal_only_what_happened() {
    let catalog = fresh_catalog();
    let s = setup(&catalog.url());
    let id = s.backup();

    for command in ["pin", "unpin"] {
        let (code, _, stderr, _) = s.run(&[command, "orders", "20000101T000000Z"], &ENV);
        assert_eq!(code, 1, "{command} of a missing backup: {stderr}");
        assert!(
            stderr.contains("has no backup 20000101T000000Z"),
            "{stderr}"
        );
    }
    assert!(s.events("backup.pinned").is_empty());
    assert!(s.events("backup.unpinned").is_empty());

    // The actor is the real user; the environment's name is only a claim.
    let claim = [
        ("USER", "mallory"),
        ("SUDO_USER", "mallory"),
        ("LOGNAME", "mallory"),
    ];
    let env: Vec<(&str, &str)> = ENV.iter().copied().chain(claim).collect();
    let (code, _, stderr, _) = s.run(&["pin", "orders", &id], &env);
    assert_eq!(code, 0, "{stderr}");
    let real = nix::unistd::User::from_uid(nix::unistd::getuid())
        .unwrap()
        .unwrap()
        .name;
    let pinned = s.events("backup.pinned");
    assert_eq!(pinned.len(), 1);
    assert_eq!(pinned[0]["actor"]["name"], real.as_str());
    assert_eq!(pinned[0]["actor"]["claimed"], "mallory");

    let (code, _, stderr, _) = s.run(&["unpin", "orders", &id], &ENV);
    assert_eq!(code, 0, "{stderr}");
    let (code, stdout, stderr, _) = s.run(&["unpin", "orders", &id], &ENV);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("was not pinned"), "{stdout}");
    assert_eq!(s.events("backup.unpinned").len(), 1, "only the real unpin");

    // Refused before it began (a database backup into a directory): not a failure.
    let to_dir = s.dir.path().join("restore-here");
    let (code, _, stderr, _) = s.run(
        &["restore", "orders", "--to-dir", to_dir.to_str().unwrap()],
        &ENV,
    );
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(s.events("restore.refused").len(), 1);
    // Began, then failed (the target is not empty): started and failed.
    let (code, _, stderr, _) = s.run(&["restore", "orders", "--to", &s.source.url()], &ENV);
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(s.events("restore.started").len(), 1);
    assert_eq!(s.events("restore.failed").len(), 1);
}

#[test]
fn a_catalog_that_never_answers_costs_one_short_probe() {
    // Accepted by the kernel's backlog, never served: like a hung server.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    let s = setup(&format!("postgres://postgres@{addr}/catalog"));
    let (code, _, stderr, took) = s.run(&["prune", "orders", "--dry-run"], &ENV);
    println!(
        "prune --dry-run, catalog silent: {:.2} s",
        took.as_secs_f64()
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert!(
        stderr.contains(&format!(
            "catalog at {addr} is unreachable: no answer within 2s"
        )),
        "{stderr}"
    );
    drop(silent);
}
