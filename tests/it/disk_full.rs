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

/// `daemon.state_dir` on a 32 MiB tmpfs, filled (the journal elsewhere, on
/// the shipped default of `<state_dir>/journal` moved by `journal.dir`):
/// `restore --jobs`, which stages the dump in `<state_dir>/restore-tmp`,
/// fails at once naming the path and the bytes free, leaves no staged file
/// and no half-restored database, and works once space returns.
#[test]
fn a_full_state_dir_fails_a_staged_restore_at_once_and_loses_nothing() {
    let source = fresh_db();
    // About 9 MB raw (pg_dump runs with --compress=0).
    source
        .psql("CREATE TABLE t AS SELECT g, md5(g::text) || md5((g * 7)::text) AS v FROM generate_series(1, 120000) g")
        .unwrap();
    let catalog = fresh_catalog();
    let dir = tempfile::tempdir().unwrap();
    let fs = Tmpfs::mount("32m");
    let state = fs.0.path().join("state");
    let extra = format!(
        "[journal]\ndir = \"{}\"\n\
         [repositories.local]\nscheme = \"fs\"\noptions = {{ root = \"{}\" }}\n\
         [jobs.orders]\nkind = \"postgres\"\nsource = \"{}\"\npassword = \"${{TEST_PGPASSWORD}}\"\n\
         databases = [\"{}\"]\nrepository = \"local\"\nevery = \"1h\"\n",
        dir.path().join("journal").display(),
        dir.path().join("repo").display(),
        source.url(),
        source.name
    );
    let text = config_text(dir.path(), &catalog.url(), &extra).replace(
        &format!("state_dir = \"{}\"", dir.path().join("state").display()),
        &format!("state_dir = \"{}\"", state.display()),
    );
    assert!(text.contains(&state.display().to_string()));
    let config = dir.path().join("config.toml");
    std::fs::write(&config, text).unwrap();
    // PGPASSWORD: the restore target's.
    let env = [("TEST_PGPASSWORD", PASSWORD), ("PGPASSWORD", PASSWORD)];
    let (code, _, stderr) = vigil_cli(&config, &["backup", "orders"], &env);
    assert_eq!(code, 0, "{stderr}");
    let listed = list_manifests(&config, "orders", &env);

    // Fill the state dir but for about 1 MiB.
    std::fs::create_dir_all(&state).unwrap();
    let filler = state.join("filler");
    let free = |p: &std::path::Path| {
        let s = nix::sys::statvfs::statvfs(p).unwrap();
        s.blocks_available() as u64 * s.fragment_size() as u64
    };
    std::fs::write(&filler, vec![0u8; (free(&state) - (1 << 20)) as usize]).unwrap();
    let cluster = shared_cluster();
    let target = format!("{}_restored", source.name);
    let url = format!("postgres://postgres@127.0.0.1:{}/{target}", cluster.port());
    let args = [
        "restore", "orders", "--latest", "--to", &url, "--create", "--jobs", "2",
    ];
    let started = Instant::now();
    let (code, stdout, stderr) = vigil_cli(&config, &args, &env);
    let took = started.elapsed();
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    let restore_tmp = state.join("restore-tmp");
    assert!(
        stderr.contains(&format!(
            "cannot stage the dump in {}",
            restore_tmp.display()
        )),
        "{stderr}"
    );
    assert!(stderr.contains("bytes free"), "{stderr}");
    assert!(took < Duration::from_secs(10), "took {took:?}");
    // Nothing staged is left, no half-restored database, the backup intact.
    assert_eq!(std::fs::read_dir(&restore_tmp).unwrap().count(), 0);
    assert!(
        shared_psql(
            "postgres",
            &format!("SELECT 1 FROM pg_database WHERE datname = '{target}'")
        )
        .unwrap()
        .trim()
        .is_empty(),
        "the failed restore left database {target}"
    );
    assert_eq!(list_manifests(&config, "orders", &env), listed);

    // Space returns: the same restore goes through.
    std::fs::remove_file(&filler).unwrap();
    let (code, stdout, stderr) = vigil_cli(&config, &args, &env);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert_eq!(std::fs::read_dir(&restore_tmp).unwrap().count(), 0);
    let rows = shared_psql(&target, "SELECT count(*) FROM t").unwrap();
    assert_eq!(rows.trim(), "120000");
    let _ = shared_psql("postgres", &format!("DROP DATABASE \"{target}\""));
    println!(
        "disk full (state dir): staged restore failed after {took:?} naming {} and the bytes free; nothing left; restored once space returned",
        restore_tmp.display()
    );
}
