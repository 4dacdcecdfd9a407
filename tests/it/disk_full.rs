//! A repository whose filesystem fills up (a 4 MiB tmpfs): the backup
//! fails naming the space left, commits nothing, and `<repo>:capacity`
//! warns (issue 12).

use std::process::Command;
use std::time::{Duration, Instant};

use crate::harness::*;

/// A tmpfs of `size` mounted on a fresh directory, unmounted on drop.
pub struct Tmpfs(pub tempfile::TempDir);

impl Tmpfs {
    pub fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(
            status.success(),
            "test setup: cannot mount a tmpfs (run as root)"
        );
        Tmpfs(dir)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

#[test]
fn a_full_repository_fails_the_backup_naming_the_space_left() {
    let source = fresh_db();
    // About 9 MB of hex text: 4+ MiB after zstd, more than the tmpfs holds.
    source
        .psql("CREATE TABLE t AS SELECT g, md5(g::text) || md5((g * 7)::text) AS v FROM generate_series(1, 120000) g")
        .unwrap();
    let catalog = fresh_catalog();
    let fs = Tmpfs::mount("4m");
    let repo = fs.0.path().join("repo");
    let extra = format!(
        "[repositories.local]\nscheme = \"fs\"\noptions = {{ root = \"{}\" }}\n\
         [jobs.orders]\nkind = \"postgres\"\nsource = \"{}\"\npassword = \"${{TEST_PGPASSWORD}}\"\n\
         databases = [\"{}\"]\nrepository = \"local\"\nevery = \"1h\"\ncatch_up = false\n",
        repo.display(),
        source.url(),
        source.name
    );
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, config_text(dir.path(), &catalog.url(), &extra)).unwrap();
    let started = Instant::now();
    let (code, stdout, stderr) = vigil_cli(
        &config,
        &["backup", "orders"],
        &[("TEST_PGPASSWORD", PASSWORD)],
    );
    println!("disk full: backup failed after {:?}", started.elapsed());
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    assert!(stderr.contains("no space left"), "{stderr}");
    assert!(stderr.contains("bytes free"), "{stderr}");
    assert!(!stderr.contains("stack backtrace"), "{stderr}");
    // Nothing committed, nothing left behind by the failed run.
    let (code, stdout, _) = vigil_cli(
        &config,
        &["list", "orders"],
        &[("TEST_PGPASSWORD", PASSWORD)],
    );
    assert_eq!(code, 0);
    assert!(!stdout.contains("orders "), "{stdout}");

    // A daemon on the same repository: a small earlier backup makes the
    // tmpfs look too small for the next one.
    source.psql("TRUNCATE t; INSERT INTO t SELECT g, md5(g::text) || md5((g * 7)::text) FROM generate_series(1, 40000) g").unwrap();
    let (code, _, stderr) = vigil_cli(
        &config,
        &["backup", "orders"],
        &[("TEST_PGPASSWORD", PASSWORD)],
    );
    assert_eq!(code, 0, "{stderr}");
    let vigil = Vigil::start(&catalog, &extra);
    vigil.wait_ready();
    let capacity =
        |v: &Vigil| v.get("/health/detailed").json()["checks"]["local:capacity"][0].clone();
    vigil.wait_for("the capacity check", Duration::from_secs(10), || {
        capacity(&vigil)["status"] == "warn"
    });
    let check = capacity(&vigil);
    assert!(
        check["output"]
            .as_str()
            .unwrap()
            .contains("bytes free, the largest last backup is"),
        "{check:#}"
    );
}
