//! The standing kill -9 loop (issue 12): vigil or its pg_dump killed at a
//! random moment of a backup leaves only complete backups listed, every
//! listed object matching its hash, a next run that succeeds, and no temp
//! bytes once prune has run past `temp_grace`. `KILL_ROUNDS` sets the
//! rounds (CI: 4; `bench/reliability.sh`: 50).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use sha2::{Digest, Sha256};

use crate::harness::*;

/// A small deterministic generator, seeded from the clock (printed).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % below
    }
}

/// Every listed backup's objects exist and match their SHA-256 (each
/// backup hashed once: `checked` remembers them).
pub fn check_listed(
    config: &std::path::Path,
    repo: &std::path::Path,
    checked: &mut std::collections::BTreeSet<String>,
) -> usize {
    let listed = list_manifests(config, "orders", &[("TEST_PGPASSWORD", PASSWORD)]);
    for manifest in &listed {
        let id = manifest["backupId"].as_str().unwrap();
        if !checked.insert(id.to_owned()) {
            continue;
        }
        for object in manifest["objects"].as_array().unwrap() {
            let name = object["name"].as_str().unwrap();
            let path = repo.join("orders/backups").join(id).join(name);
            let bytes = std::fs::read(&path)
                .unwrap_or_else(|e| panic!("listed backup {id} lacks {name}: {e}"));
            assert_eq!(
                hex::encode(Sha256::digest(&bytes)),
                object["sha256"].as_str().unwrap(),
                "listed backup {id}: {name} does not match its hash"
            );
        }
    }
    listed.len()
}

#[test]
fn kill_9_at_random_moments_leaves_only_complete_backups() {
    let rounds: u64 = std::env::var("KILL_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(4);
    let seed = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    println!("kill -9 loop: {rounds} rounds, seed {seed}");
    let mut random = Lcg(seed);
    let source = fresh_db();
    // About 25 MB of hex text: a backup lasts a second or two here.
    source
        .psql("CREATE TABLE t AS SELECT g, md5(g::text) || md5((g * 3)::text) AS v FROM generate_series(1, 350000) g")
        .unwrap();
    let catalog = fresh_catalog();
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let extra = format!(
        "[repositories.local]\nscheme = \"fs\"\noptions = {{ root = \"{}\" }}\n\
         [jobs.orders]\nkind = \"postgres\"\nsource = \"{}\"\npassword = \"${{TEST_PGPASSWORD}}\"\n\
         databases = [\"{}\"]\nrepository = \"local\"\nevery = \"1h\"\n",
        repo.display(),
        source.url(),
        source.name
    );
    let config = dir.path().join("config.toml");
    std::fs::write(&config, config_text(dir.path(), &catalog.url(), &extra)).unwrap();
    let env = [("TEST_PGPASSWORD", PASSWORD)];

    let (mut killed_vigil, mut killed_pg_dump, mut completed) = (0, 0, 0);
    let mut checked = std::collections::BTreeSet::new();
    for round in 0..rounds {
        let mut child = Command::new(VIGIL)
            .arg("--config")
            .arg(&config)
            .args(["backup", "orders"])
            .envs(env)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let delay = Duration::from_millis(100 + random.next(1500));
        let started = Instant::now();
        while started.elapsed() < delay {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        if child.try_wait().unwrap().is_some() {
            completed += 1;
        } else if round % 2 == 0 {
            child.kill().unwrap();
            child.wait().unwrap();
            killed_vigil += 1;
        } else {
            let _ = Command::new("pkill")
                .args(["-9", "-P", &child.id().to_string(), "pg_dump"])
                .status();
            child.wait().unwrap();
            killed_pg_dump += 1;
        }
        check_listed(&config, &repo, &mut checked);
        // The next run succeeds (a dead holder's lease is taken over).
        let (code, stdout, stderr) = vigil_cli(&config, &["backup", "orders"], &env);
        assert_eq!(
            code, 0,
            "round {round}: the next run failed:\n{stdout}\n{stderr}"
        );
    }
    let listed = check_listed(&config, &repo, &mut checked);
    // Once temp_grace has passed, prune leaves no temp bytes.
    let tmp = repo.join(".vigil-tmp");
    let mut left = 0;
    for entry in std::fs::read_dir(&tmp).unwrap() {
        let path = entry.unwrap().path();
        let file = std::fs::File::options().write(true).open(&path).unwrap();
        file.set_modified(SystemTime::now() - Duration::from_secs(3 * 24 * 3600))
            .unwrap();
        left += 1;
    }
    let (code, stdout, stderr) = vigil_cli(&config, &["prune", "orders"], &env);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let remaining: u64 = std::fs::read_dir(&tmp)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert_eq!(remaining, 0, "temp bytes left after prune");
    println!(
        "kill -9 loop: {rounds} rounds (vigil killed {killed_vigil}, pg_dump killed {killed_pg_dump}, finished first {completed}); {listed} backups listed, all complete and matching their hashes; every next run succeeded; {left} temp files left by killed runs, 0 bytes after prune"
    );
}
