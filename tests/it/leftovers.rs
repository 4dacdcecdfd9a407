//! Partial uploads that killed runs leave in an fs repository's temp
//! directory are reported and collected by prune (issue 12).

use std::time::{Duration, SystemTime};

use crate::harness::*;

/// A file in `<root>/.vigil-tmp`, last written `age` ago.
fn temp_file(repo: &std::path::Path, name: &str, bytes: usize, age: Duration) {
    let tmp = repo.join(".vigil-tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let path = tmp.join(name);
    std::fs::write(&path, vec![7u8; bytes]).unwrap();
    let file = std::fs::File::options().write(true).open(&path).unwrap();
    file.set_modified(SystemTime::now() - age).unwrap();
}

#[test]
fn stale_temp_files_are_reported_and_collected_by_prune() {
    let source = fresh_db();
    source
        .psql("CREATE TABLE t (id int); INSERT INTO t VALUES (1);")
        .unwrap();
    let catalog = fresh_catalog();
    let repo = tempfile::tempdir().unwrap();
    // Shipped defaults (temp_grace 1day), except how often the check looks.
    let extra = format!(
        "[repositories.local]\nscheme = \"fs\"\nwritable_interval = \"1s\"\n\
         options = {{ root = \"{}\" }}\n\
         [jobs.orders]\nkind = \"postgres\"\nsource = \"{}\"\npassword = \"${{TEST_PGPASSWORD}}\"\n\
         databases = [\"{}\"]\nrepository = \"local\"\nevery = \"1h\"\ncatch_up = false\n",
        repo.path().display(),
        source.url(),
        source.name
    );
    let day = Duration::from_secs(24 * 3600);
    temp_file(repo.path(), "killed-run.part", 300_000, day * 2);
    temp_file(repo.path(), "live-run.part", 1_000, Duration::from_secs(5));
    let vigil = Vigil::start(&catalog, &extra);
    vigil.wait_ready();
    let leftovers =
        |v: &Vigil| v.get("/health/detailed").json()["checks"]["local:leftovers"][0].clone();
    vigil.wait_for("the leftovers check", Duration::from_secs(10), || {
        leftovers(&vigil)["status"] == "warn"
    });
    let check = leftovers(&vigil);
    // Both files, and whatever the probes have in flight at the moment.
    let total = check["observedValue"].as_f64().unwrap();
    assert!((301_000.0..302_000.0).contains(&total), "{check:#}");
    assert_eq!(check["observedUnit"], "bytes");
    assert_eq!(check["vigil"]["staleBytes"], 300_000, "{check:#}");
    assert!(
        check["output"]
            .as_str()
            .unwrap()
            .contains("300000 bytes in 1 temp file(s) older than temp_grace (1day)"),
        "{check:#}"
    );
    let metrics = vigil.get("/metrics").body;
    assert!(
        metrics.contains(
            "vigil_health_check_observed_value{check=\"local:leftovers\",unit=\"bytes\"} 30"
        ),
        "{metrics}"
    );

    let config = vigil.config_path_with_addr();
    let env = [("TEST_PGPASSWORD", PASSWORD)];
    let (code, stdout, stderr) = vigil_cli(&config, &["prune", "orders", "--dry-run"], &env);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("would collect 1 temp file(s)"), "{stdout}");
    assert!(repo.path().join(".vigil-tmp/killed-run.part").exists());

    // Nothing to forget (no keep rule), and no backup yet: the temp file
    // is collected all the same; the live run's is not.
    let (code, stdout, stderr) = vigil_cli(&config, &["prune", "orders"], &env);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("collected 1 temp file(s)"), "{stdout}");
    assert!(!repo.path().join(".vigil-tmp/killed-run.part").exists());
    assert!(repo.path().join(".vigil-tmp/live-run.part").exists());
    vigil.wait_for(
        "the leftovers check to pass",
        Duration::from_secs(10),
        || leftovers(&vigil)["status"] == "pass",
    );
    let (code, stdout, _) = vigil_cli(
        &config,
        &["audit", "show", "--event", "prune.deleted", "--json"],
        &env,
    );
    assert_eq!(code, 0);
    assert!(stdout.contains("\"temp_bytes\":300000"), "{stdout}");
}
