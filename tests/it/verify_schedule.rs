//! Scheduled verification end to end: a daemon with `[jobs.NAME.verify]`
//! reads a little each run until every object was read, names a flipped
//! byte on /health/detailed and /metrics, and keeps failing until the bad
//! backup is pinned as evidence behind a newer good one; the shipped
//! example's job with only `every` set verifies and passes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::harness::{
    PASSWORD, Vigil, VigilOptions, config_text, fresh_catalog, fresh_db, vigil_cli,
};
use crate::verify::{backup_dir, data_object, example, journal_text};

const ENV: [(&str, &str); 2] = [("TEST_PGPASSWORD", PASSWORD), ("JOB_PGPASSWORD", PASSWORD)];

fn cli(config: &Path, args: &[&str]) -> (i32, String, String) {
    vigil_cli(config, args, &ENV)
}

fn record(repo: &Path) -> Value {
    std::fs::read(repo.join("orders/proofs/verify.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null)
}

fn check(vigil: &Vigil) -> Value {
    vigil.get("/health/detailed").json()["checks"]["orders:verify"][0].clone()
}

fn verified_count(repo: &Path) -> usize {
    record(repo)["verified"].as_object().map_or(0, |m| m.len())
}

fn options() -> VigilOptions {
    let mut options = VigilOptions::default();
    options
        .env
        .insert("JOB_PGPASSWORD".to_owned(), PASSWORD.to_owned());
    options
}

#[test]
fn a_scheduled_verify_with_a_small_budget_reads_everything_and_a_flipped_byte_fails_until_pinned() {
    let catalog = fresh_catalog();
    let source = fresh_db();
    source
        .psql("CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 5000) g")
        .unwrap();
    let tempdir = tempfile::Builder::new()
        .prefix("vigil-it-")
        .tempdir()
        .unwrap();
    let dir = tempdir.path().to_owned();
    let repo = dir.join("repo");
    // One byte per run: each scheduled run reads exactly one object.
    let extra = format!(
        "[repositories.local]\nscheme = \"fs\"\noptions = {{ root = \"{repo}\" }}\n\
         [jobs.orders]\nkind = \"postgres\"\nsource = \"{source}\"\npassword = \"${{JOB_PGPASSWORD}}\"\n\
         databases = [\"{db}\"]\nrepository = \"local\"\nevery = \"24h\"\n\
         [jobs.orders.verify]\nevery = \"1s\"\nmax_bytes_per_run = 1\n",
        repo = repo.display(),
        source = source.url(),
        db = source.name,
    );
    let text = config_text(&dir, &catalog.url(), &extra);
    let config: PathBuf = dir.join("cli.toml");
    std::fs::write(&config, &text).unwrap();
    for _ in 0..3 {
        let (code, stdout, stderr) = cli(&config, &["backup", "orders"]);
        assert_eq!(code, 0, "{stdout}\n{stderr}");
        std::thread::sleep(Duration::from_millis(1100));
    }
    let manifests = crate::harness::list_manifests(&config, "orders", &ENV);
    let objects: usize = manifests
        .iter()
        .map(|m| m["objects"].as_array().unwrap().len())
        .sum();
    assert!(objects >= 3, "{manifests:?}");
    // A flipped byte in the oldest backup's dump.
    let oldest = &manifests[0];
    let oldest_id = oldest["backupId"].as_str().unwrap().to_owned();
    let bad_name = data_object(oldest);
    let bad_path = backup_dir(&repo, "orders", oldest).join(&bad_name);
    let mut bytes = std::fs::read(&bad_path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&bad_path, &bytes).unwrap();

    let vigil = Vigil::start_text(tempdir, &text, options());
    vigil.wait_ready();
    vigil.wait_for("every object read once", Duration::from_secs(60), || {
        verified_count(&repo) + record(&repo)["bad"].as_array().map_or(0, Vec::len) >= objects
    });
    let r = record(&repo);
    assert_eq!(r["bad"].as_array().unwrap().len(), 1, "{r:#}");
    assert_eq!(r["bad"][0]["backupId"], oldest_id.as_str(), "{r:#}");
    assert_eq!(r["bad"][0]["object"], bad_name.as_str(), "{r:#}");
    // One object per run, oldest backups first: the good reads' times are
    // all different and follow the backups' order.
    let mut reads: Vec<(String, String)> = r["verified"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, t)| (t.as_str().unwrap().to_owned(), k.clone()))
        .collect();
    reads.sort();
    let times: std::collections::BTreeSet<&String> = reads.iter().map(|(t, _)| t).collect();
    assert_eq!(times.len(), objects - 1, "one object per run: {reads:?}");
    let order: Vec<&str> = reads
        .iter()
        .map(|(_, k)| k.split('/').next().unwrap())
        .collect();
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(order, sorted, "oldest backups first: {reads:?}");

    // Found by a scheduled run: the check fails naming it, the metric counts it.
    vigil.wait_for("orders:verify to fail", Duration::from_secs(20), || {
        check(&vigil)["status"] == "fail"
    });
    let output = check(&vigil)["output"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        output.contains(&format!("{oldest_id}/{bad_name}")),
        "{output}"
    );
    let metrics = vigil.get("/metrics").body;
    assert!(
        metrics.contains("vigil_verify_bad_objects{backup_job=\"orders\"} 1"),
        "{metrics}"
    );
    let journal = journal_text(&dir.join("state"));
    assert!(journal.contains("verify.failed") && journal.contains("verify.succeeded"));
    assert!(
        journal
            .lines()
            .any(|l| l.contains("verify.succeeded") && l.contains("\"trigger\":\"schedule\"")),
        "scheduled runs are journalled as such"
    );
    let rows = catalog
        .psql("SELECT count(*) FROM vigil.executions WHERE kind = 'verify' AND job = 'orders'")
        .unwrap();
    assert!(
        rows.trim().parse::<u32>().unwrap() >= objects as u32,
        "{rows}"
    );

    // A newer backup, read good by the next runs: still failing, the bad
    // one is neither pinned nor removed.
    let (code, stdout, stderr) = cli(&config, &["backup", "orders"]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let newest = crate::verify::newest(&config, "orders");
    let newest_id = newest["backupId"].as_str().unwrap().to_owned();
    vigil.wait_for("the newest backup read", Duration::from_secs(30), || {
        record(&repo)["verified"].as_object().is_some_and(|m| {
            newest["objects"]
                .as_array()
                .unwrap()
                .iter()
                .all(|o| m.contains_key(&format!("{newest_id}/{}", o["name"].as_str().unwrap())))
        })
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        check(&vigil)["status"],
        "fail",
        "unpinned: {:#}",
        check(&vigil)
    );

    // Pinned as evidence: resolved at the next run.
    let (code, _, stderr) = cli(&config, &["pin", "orders", &oldest_id]);
    assert_eq!(code, 0, "{stderr}");
    vigil.wait_for("orders:verify to pass", Duration::from_secs(30), || {
        check(&vigil)["status"] == "pass"
    });
    let metrics = vigil.get("/metrics").body;
    assert!(
        metrics.contains("vigil_verify_bad_objects{backup_job=\"orders\"} 0"),
        "{metrics}"
    );

    // `vigil list` and `vigil status` show the last verify and drill.
    let (code, stdout, stderr) = cli(&config, &["list", "orders"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("orders: last verify: ok ") && stdout.contains("last drill: never"),
        "{stdout}"
    );
    let with_addr = vigil.config_path_with_addr();
    let (_, stdout, stderr) = cli(&with_addr, &["status"]);
    assert!(
        stdout.contains("proofs:\n  orders: last verify: ok "),
        "{stdout}\n{stderr}\n{:#}\n{}",
        record(&repo),
        journal_text(&dir.join("state"))
    );
    let (_, stdout, _) = cli(&with_addr, &["status", "--json"]);
    let status: Value = serde_json::from_str(&stdout).unwrap();
    let proofs = &status["vigil"]["proofs"]["orders"];
    assert_eq!(proofs["verify"]["badObjects"], 0, "{status:#}");
    assert!(proofs["verify"]["lastSuccess"].is_string(), "{proofs}");
    assert!(proofs["drill"]["lastRun"].is_null(), "{proofs}");
}

#[test]
fn the_example_job_with_only_every_set_verifies_on_the_shipped_defaults() {
    let e = example();
    for args in [&["migrate"][..], &["backup", "orders"]] {
        let (code, stdout, stderr) = vigil_cli(&e.config, args, &[]);
        assert_eq!(code, 0, "{args:?}:\n{stdout}\n{stderr}");
    }
    let text = std::fs::read_to_string(&e.config).unwrap();
    let commented = "# [jobs.orders.verify]\n# every = \"1d\"\n";
    assert!(
        text.contains(commented),
        "the example's verify section moved"
    );
    let text = text.replacen(commented, "[jobs.orders.verify]\nevery = \"1s\"\n", 1);
    let tempdir = tempfile::Builder::new()
        .prefix("vigil-it-")
        .tempdir()
        .unwrap();
    let options = VigilOptions {
        env: Default::default(),
        ..VigilOptions::default()
    };
    let vigil = Vigil::start_text(tempdir, &text, options);
    vigil.wait_ready();
    vigil.wait_for("orders:verify to pass", Duration::from_secs(60), || {
        check(&vigil)["status"] == "pass"
    });
    let c = check(&vigil);
    assert!(c["observedValue"].as_f64().is_some(), "{c:#}");
    assert_eq!(c["vigil"]["critical"], true, "{c:#}");
    let r = record(&e.dir.path().join("repo"));
    assert!(r["lastSuccess"].is_string(), "{r:#}");
    assert_eq!(r["lastRun"]["contentChecked"], true, "{r:#}");
    let metrics = vigil.get("/metrics").body;
    let line = metrics
        .lines()
        .find(|l| {
            l.starts_with("vigil_verify_last_success_timestamp_seconds{backup_job=\"orders\"}")
        })
        .unwrap_or_else(|| panic!("{metrics}"));
    let value: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(value > 1.7e9, "{line}");

    // A run that cannot be carried out (its record unreadable) warns at
    // once, saying why and what to do; the record deleted, runs start
    // afresh and pass.
    let path = e.dir.path().join("repo/orders/proofs/verify.json");
    std::fs::write(&path, b"{not json").unwrap();
    vigil.wait_for("orders:verify to warn", Duration::from_secs(30), || {
        let c = check(&vigil);
        c["status"] == "warn"
            && c["output"].as_str().is_some_and(|o| {
                o.contains("the last verification could not run") && o.contains("delete it")
            })
    });
    std::fs::remove_file(&path).unwrap();
    vigil.wait_for(
        "orders:verify to pass again",
        Duration::from_secs(30),
        || check(&vigil)["status"] == "pass",
    );
}
