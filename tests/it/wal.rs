//! The WAL archive end to end: real clusters with `archive_mode = on` and
//! `archive_command = vigil wal-push`, run by PostgreSQL as the `postgres`
//! OS user; `vigil wal-fetch` as `restore_command`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use sha2::Digest;
use vigil::cli::pgcluster::Cluster;

use crate::harness::*;

/// A cluster that archives into a job `pg` of a config in `dir`.
struct Archiving {
    cluster: Cluster,
    dir: tempfile::TempDir,
    /// The config the archiver uses (and the tests, unless they say).
    config: PathBuf,
    /// The physical job archived into.
    job: &'static str,
}

/// `path`, owned by the `postgres` OS user (the archiver writes there).
fn give_to_postgres(path: &Path) {
    let (uid, gid) = postgres_ids();
    nix::unistd::chown(path, Some(uid), Some(gid)).unwrap();
}

/// An fs repository directory under `dir` that the archiver may write.
fn fs_repo(dir: &Path) -> PathBuf {
    let repo = dir.join("repo");
    std::fs::create_dir(&repo).unwrap();
    give_to_postgres(&repo);
    repo
}

/// A config whose job `pg` is a postgres-physical job on `repository`
/// (its TOML, a repository named `r`); the catalog is never contacted.
fn config_text(dir: &Path, port: u16, repository: &str) -> String {
    format!(
        "[daemon]\nstate_dir = \"{state}\"\n\n[catalog]\nurl = \"postgres://vigil@127.0.0.1:1/vigil\"\n\n\
         {repository}\n\
         [jobs.pg]\nkind = \"postgres-physical\"\nsource = \"postgres://postgres@127.0.0.1:{port}/postgres\"\n\
         repository = \"r\"\nschedule = \"0 0 3 * * *\"\n",
        state = dir.join("state").display(),
    )
}

fn fs_repository(root: &Path, extra: &str) -> String {
    format!(
        "[repositories.r]\nscheme = \"fs\"\n{extra}\n[repositories.r.options]\nroot = \"{}\"\n",
        root.display()
    )
}

/// Writes `text` where the `postgres` user may read it.
fn write_readable(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).unwrap();
}

/// Creates a cluster archiving with `archive_command` (`{config}` in it is
/// replaced by the config's path), the config being `config(dir, port)`.
fn archiving(
    dir: tempfile::TempDir,
    config: impl FnOnce(&Path, u16) -> String,
    archive_command: &str,
) -> Archiving {
    let root = dir.path().join("cluster");
    let mut cluster = Cluster::create(&binaries(), &root, PASSWORD).unwrap();
    // The port is known once the cluster runs; the config names it only as
    // the job's source, which wal-push never contacts.
    let config_path = dir.path().join("config.toml");
    write_readable(&config_path, &config(dir.path(), 5432));
    let command = archive_command.replace("{config}", &config_path.display().to_string());
    let conf = cluster.data_dir().join("postgresql.conf");
    let mut text = std::fs::read_to_string(&conf).unwrap();
    text.push_str(&format!(
        "\nwal_level = replica\narchive_mode = on\narchive_command = '{command}'\n"
    ));
    std::fs::write(&conf, text).unwrap();
    cluster.start().unwrap();
    Archiving {
        cluster,
        dir,
        config: config_path,
        job: "pg",
    }
}

/// The usual archive_command: `vigil --config CONFIG wal-push pg %p`.
fn wal_push_command() -> String {
    format!("{VIGIL} --config {{config}} wal-push pg %p")
}

impl Archiving {
    fn psql(&self, sql: &str) -> String {
        self.cluster.psql("postgres", sql).unwrap()
    }

    /// Writes some WAL, switches segments; the name of the segment closed.
    fn switch(&self) -> String {
        self.psql("CREATE TABLE IF NOT EXISTS filler (x int); INSERT INTO filler SELECT generate_series(1, 1000)");
        let name = self.psql("SELECT pg_walfile_name(pg_current_wal_lsn())");
        self.psql("SELECT pg_switch_wal()");
        name
    }

    /// Waits until `pg_stat_archiver` reports `name` archived.
    fn wait_archived(&self, name: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let last = self.psql("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver");
            if last.as_str() >= name && !last.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{name} not archived within 60 s; pg_stat_archiver: {}; server log: {}",
                self.psql("SELECT failed_count, last_failed_wal FROM pg_stat_archiver"),
                self.server_log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn server_log(&self) -> String {
        let log = self.dir.path().join("cluster/postgres.log");
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().rev().take(15).collect();
        lines.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    fn pg_wal(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.cluster.data_dir().join("pg_wal").join(name)).unwrap()
    }

    /// `vigil wal-fetch pg NAME DEST` with `config`; (code, stderr, bytes).
    fn fetch(&self, config: &Path, name: &str) -> (i32, String, Option<Vec<u8>>) {
        let dest = self.dir.path().join(format!("fetched-{name}"));
        let _ = std::fs::remove_file(&dest);
        let (code, _, stderr) = vigil_cli(
            config,
            &["wal-fetch", self.job, name, &dest.display().to_string()],
            &[],
        );
        (code, stderr, std::fs::read(&dest).ok())
    }
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

#[test]
fn archived_segments_and_every_wal_file_kind_come_back_byte_identical() {
    let dir = postgres_scratch("vigil-it-wal-");
    let repo = fs_repo(dir.path());
    let a = archiving(
        dir,
        |d, port| config_text(d, port, &fs_repository(&repo, "")),
        &wal_push_command(),
    );
    let name = a.switch();
    a.wait_archived(&name);
    let object = repo.join(format!("pg/wal/00000001/{name}.zst"));
    let stored = std::fs::read(&object).unwrap();
    let original = a.pg_wal(&name);
    let header = format!(
        "vigil-wal 1 sha256={} bytes={}\n",
        sha256(&original),
        original.len()
    );
    assert!(stored.starts_with(header.as_bytes()), "{object:?}");
    assert!(
        stored.len() < original.len() / 4,
        "compressed: {}",
        stored.len()
    );

    let (code, stderr, fetched) = a.fetch(&a.config, &name);
    assert_eq!((code, stderr.as_str()), (0, ""));
    assert!(
        fetched.unwrap() == original,
        "wal-fetch restored other bytes"
    );

    // History, partial and backup files round-trip under their own names.
    let files = a.dir.path().join("files");
    std::fs::create_dir(&files).unwrap();
    let partial: Vec<u8> = original.iter().map(|b| b ^ 0x5a).collect();
    for (file, content) in [
        (
            "00000002.history",
            b"1\t0/3000000\tno recovery target specified\n".to_vec(),
        ),
        ("000000010000000000000007.partial", partial),
        (
            "000000010000000000000007.00000028.backup",
            b"START WAL LOCATION: 0/7000028 (file 000000010000000000000007)\n".to_vec(),
        ),
    ] {
        let path = files.join(file);
        std::fs::write(&path, &content).unwrap();
        let (code, stdout, stderr) = vigil_cli(
            &a.config,
            &["wal-push", "pg", &path.display().to_string()],
            &[],
        );
        assert_eq!(
            (code, stdout.as_str(), stderr.as_str()),
            (0, "", ""),
            "{file}"
        );
        let (code, stderr, fetched) = a.fetch(&a.config, file);
        assert_eq!((code, stderr.as_str()), (0, ""), "{file}");
        assert!(fetched.unwrap() == content, "{file} came back different");
    }
    assert!(repo.join("pg/wal/00000002/00000002.history.zst").exists());

    // Missing files: exit 1, silently, nothing written (end of archive).
    for missing in ["0000000100000000000000FF", "00000009.history"] {
        let (code, stderr, fetched) = a.fetch(&a.config, missing);
        assert_eq!((code, stderr.as_str(), fetched), (1, "", None), "{missing}");
    }

    // A damaged object is refused loudly, naming it; DEST is not written.
    let mut damaged = stored.clone();
    let middle = damaged.len() / 2;
    damaged[middle] ^= 0x01;
    std::fs::write(&object, &damaged).unwrap();
    let (code, stderr, fetched) = a.fetch(&a.config, &name);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(&format!("pg/wal/00000001/{name}.zst")),
        "{stderr}"
    );
    assert!(stderr.contains("damaged"), "{stderr}");
    assert_eq!(fetched, None);
}

#[test]
fn a_repush_of_the_same_file_succeeds_and_different_content_is_refused_and_journalled() {
    let dir = postgres_scratch("vigil-it-wal-");
    let repo = fs_repo(dir.path());
    let a = archiving(
        dir,
        |d, port| config_text(d, port, &fs_repository(&repo, "")),
        &wal_push_command(),
    );
    let name = a.switch();
    a.wait_archived(&name);
    let object = repo.join(format!("pg/wal/00000001/{name}.zst"));
    let stored = std::fs::read(&object).unwrap();
    let original = a.pg_wal(&name);

    // PostgreSQL retries a push after a crash: the same content is success.
    let copy = a.dir.path().join(&name);
    std::fs::write(&copy, &original).unwrap();
    let copy_arg = copy.display().to_string();
    let (code, stdout, stderr) = vigil_cli(&a.config, &["wal-push", "pg", &copy_arg], &[]);
    assert_eq!((code, stdout.as_str(), stderr.as_str()), (0, "", ""));

    // Another cluster's segment under the same name: refused, both hashes named.
    let mut other = original.clone();
    other[100] ^= 0xff;
    std::fs::write(&copy, &other).unwrap();
    let (code, _, stderr) = vigil_cli(&a.config, &["wal-push", "pg", &copy_arg], &[]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains(&sha256(&original)), "{stderr}");
    assert!(stderr.contains(&sha256(&other)), "{stderr}");
    assert!(stderr.contains("nothing was overwritten"), "{stderr}");
    assert!(
        std::fs::read(&object).unwrap() == stored,
        "the archived object changed"
    );
    let (code, journal, stderr) = vigil_cli(
        &a.config,
        &["audit", "show", "--event", "wal.conflict", "--json"],
        &[],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(journal.contains(&sha256(&other)), "{journal}");
    assert!(journal.contains(&name), "{journal}");
}

#[test]
fn wal_commands_refuse_jobs_that_are_not_physical_and_names_that_are_not_wal() {
    let dir = postgres_scratch("vigil-it-wal-");
    let repo = fs_repo(dir.path());
    let text = format!(
        "{}\n[jobs.dump]\nkind = \"postgres\"\nsource = \"postgres://u@127.0.0.1/db\"\ndatabases = [\"db\"]\nrepository = \"r\"\nschedule = \"0 0 3 * * *\"\n",
        config_text(dir.path(), 5432, &fs_repository(&repo, ""))
    );
    let config = dir.path().join("config.toml");
    write_readable(&config, &text);
    let file = dir.path().join("000000010000000000000001");
    std::fs::write(&file, vec![0u8; 16 << 20]).unwrap();
    let file = file.display().to_string();
    let (code, _, stderr) = vigil_cli(&config, &["wal-push", "dump", &file], &[]);
    assert_eq!(code, 64, "{stderr}");
    assert!(stderr.contains("postgres-physical"), "{stderr}");
    let (code, _, stderr) = vigil_cli(
        &config,
        &["wal-fetch", "dump", "00000002.history", "x"],
        &[],
    );
    assert_eq!(code, 64, "{stderr}");
    let notes = dir.path().join("notes.txt");
    std::fs::write(&notes, "x").unwrap();
    let (code, _, stderr) = vigil_cli(
        &config,
        &["wal-push", "pg", &notes.display().to_string()],
        &[],
    );
    assert_eq!(code, 64, "{stderr}");
    assert!(stderr.contains("is not a WAL file name"), "{stderr}");
}

#[test]
fn the_postgres_user_archives_into_an_encrypted_repository_without_the_identity() {
    let dir = postgres_scratch("vigil-it-wal-");
    let repo = fs_repo(dir.path());
    let identity = age::x25519::Identity::generate();
    let recipient = identity.to_public().to_string();
    let key = dir.path().join("age.key");
    use age::secrecy::ExposeSecret;
    std::fs::write(&key, identity.to_string().expose_secret()).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    // The archiver's config names the recipients only; vigil's own (for
    // restores) also the identity file.
    let encrypted = |identity: &str| {
        fs_repository(
            &repo,
            &format!("[repositories.r.encryption]\nrecipients = [\"{recipient}\"]\n{identity}"),
        )
    };
    let archiver_repo = encrypted("");
    let a = archiving(
        dir,
        |d, port| config_text(d, port, &archiver_repo),
        &wal_push_command(),
    );
    let cannot_read = Command::new("runuser")
        .args(["-u", "postgres", "--", "cat"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(
        !cannot_read.status.success(),
        "the postgres user reads the key"
    );

    let name = a.switch();
    a.wait_archived(&name);
    let object = repo.join(format!("pg/wal/00000001/{name}.zst.age"));
    let stored = std::fs::read(&object).unwrap();
    assert!(stored.starts_with(b"vigil-wal 1 sha256="));
    let original = a.pg_wal(&name);
    // No plaintext beyond the header: age's own header follows it.
    let payload = &stored[stored.iter().position(|&b| b == b'\n').unwrap() + 1..];
    assert!(payload.starts_with(b"age-encryption.org/v1"));

    let restorer = a.dir.path().join("vigil.toml");
    let identity_line = format!("identity_file = \"{}\"\n", key.display());
    write_readable(
        &restorer,
        &config_text(a.dir.path(), 5432, &encrypted(&identity_line)),
    );
    let (code, stderr, fetched) = a.fetch(&restorer, &name);
    assert_eq!((code, stderr.as_str()), (0, ""));
    assert!(fetched.unwrap() == original, "decrypted bytes differ");
    // Without the identity the object cannot be read, and says so.
    let (code, stderr, _) = a.fetch(&a.config, &name);
    assert_eq!(code, 64, "{stderr}");
    assert!(stderr.contains("identity_file"), "{stderr}");
}

#[test]
fn segments_reach_the_s3_repository_and_come_back() {
    let s3 = s3_server();
    let prefix = s3.unique_prefix("wal");
    let mut repository = format!(
        "[repositories.r]\nscheme = \"s3\"\nprefix = \"{prefix}\"\n[repositories.r.options]\n"
    );
    // The archiver's environment is the server's: the secret is in the file.
    for (k, v) in s3.options() {
        repository.push_str(&format!("{k} = \"{v}\"\n"));
    }
    let a = archiving(
        postgres_scratch("vigil-it-wal-"),
        |d, port| config_text(d, port, &repository),
        &wal_push_command(),
    );
    let name = a.switch();
    a.wait_archived(&name);
    let path = format!("{prefix}/pg/wal/00000001/{name}.zst");
    let op = s3.operator();
    let stored = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(op.read(&path))
        .unwrap()
        .to_vec();
    let original = a.pg_wal(&name);
    assert!(stored.starts_with(format!("vigil-wal 1 sha256={}", sha256(&original)).as_bytes()));
    let (code, stderr, fetched) = a.fetch(&a.config, &name);
    assert_eq!((code, stderr.as_str()), (0, ""));
    assert!(fetched.unwrap() == original);
    // A re-push on S3 finds the object through the conditional PUT.
    let copy = a.dir.path().join(&name);
    std::fs::write(&copy, &original).unwrap();
    let (code, _, stderr) = vigil_cli(
        &a.config,
        &["wal-push", "pg", &copy.display().to_string()],
        &[],
    );
    assert_eq!((code, stderr.as_str()), (0, ""));
    let (code, stderr, fetched) = a.fetch(&a.config, "0000000100000000000000FF");
    assert_eq!((code, stderr.as_str(), fetched), (1, "", None));
}

/// Waits for `path` to exist.
#[cfg(feature = "failpoints")]
fn wait_for_file(path: &Path, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !path.exists() {
        assert!(Instant::now() < deadline, "{what}: no {}", path.display());
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(feature = "failpoints")]
#[test]
fn a_push_killed_mid_write_leaves_nothing_under_the_name_and_the_retry_archives() {
    let dir = postgres_scratch("vigil-it-wal-");
    let repo = fs_repo(dir.path());
    let marks = dir.path().join("marks");
    std::fs::create_dir(&marks).unwrap();
    give_to_postgres(&marks);
    // The first push dies by SIGKILL with the object written to its temp
    // file, then holds until the test looked; later pushes are plain.
    let script = dir.path().join("archive.sh");
    let m = marks.display();
    write_readable(
        &script,
        &format!(
            "#!/bin/sh\nif [ ! -e {m}/armed ]; then\n  touch {m}/armed\n  \
             VIGIL_FAILPOINTS=create.before_link=crash {VIGIL} --config \"$2\" wal-push pg \"$1\"\n  \
             echo $? > {m}/rc.tmp && mv {m}/rc.tmp {m}/rc\n  \
             while [ ! -e {m}/go ]; do sleep 0.05; done\n  exit 1\nfi\n\
             exec {VIGIL} --config \"$2\" wal-push pg \"$1\"\n"
        ),
    );
    let a = archiving(
        dir,
        |d, port| config_text(d, port, &fs_repository(&repo, "")),
        &format!("sh {} %p {{config}}", script.display()),
    );
    let name = a.switch();
    wait_for_file(&marks.join("rc"), "the armed push");
    let rc = std::fs::read_to_string(marks.join("rc")).unwrap();
    assert_eq!(rc.trim(), "137", "the push was not killed by SIGKILL");
    let object = repo.join(format!("pg/wal/00000001/{name}.zst"));
    assert!(!object.exists(), "a killed push left {}", object.display());
    // It died after writing: the whole object sits in a temp file.
    let leftovers: Vec<u64> = std::fs::read_dir(repo.join(".vigil-tmp"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .collect();
    assert!(leftovers.iter().any(|&len| len > 0), "{leftovers:?}");

    std::fs::write(marks.join("go"), "").unwrap();
    a.wait_archived(&name);
    let failed: u64 = a
        .psql("SELECT failed_count FROM pg_stat_archiver")
        .parse()
        .unwrap();
    assert!(failed > 0, "PostgreSQL saw no failed push");
    let (code, stderr, fetched) = a.fetch(&a.config, &name);
    assert_eq!((code, stderr.as_str()), (0, ""));
    assert!(fetched.unwrap() == a.pg_wal(&name));
}

/// Runs a PostgreSQL binary as the `postgres` user.
fn run_as_postgres(bin: PathBuf, args: &[&str]) -> std::process::Output {
    as_postgres(&bin)
        .args(args)
        .env("PGPASSWORD", PASSWORD)
        .output()
        .unwrap()
}

#[test]
fn a_base_backup_plus_wal_fetch_recovers_a_row_committed_after_it() {
    let dir = postgres_scratch("vigil-it-wal-");
    let repo = fs_repo(dir.path());
    let a = archiving(
        dir,
        |d, port| config_text(d, port, &fs_repository(&repo, "")),
        &wal_push_command(),
    );
    a.psql("CREATE TABLE t (id int); INSERT INTO t VALUES (1)");
    let base = a.dir.path().join("base");
    std::fs::create_dir(&base).unwrap();
    std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o700)).unwrap();
    give_to_postgres(&base);
    let port = a.cluster.port().to_string();
    let out = run_as_postgres(
        a.cluster.bin("pg_basebackup"),
        &[
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-U",
            "postgres",
            "-X",
            "none",
            "-c",
            "fast",
            "-D",
            &base.display().to_string(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    a.psql("INSERT INTO t VALUES (2)");
    let name = a.switch();
    a.wait_archived(&name);

    // Recovery from the archive alone: no WAL came with the base backup.
    let restore = format!(
        "\narchive_mode = off\nrestore_command = '{VIGIL} --config {} wal-fetch pg %f %p'\n",
        a.config.display()
    );
    let auto = base.join("postgresql.auto.conf");
    let mut text = std::fs::read_to_string(&auto).unwrap_or_default();
    text.push_str(&restore);
    std::fs::write(&auto, text).unwrap();
    std::fs::write(base.join("recovery.signal"), "").unwrap();
    give_to_postgres(&auto);
    give_to_postgres(&base.join("recovery.signal"));
    let restored_port = free_port().to_string();
    let log = a.dir.path().join("restored.log");
    std::fs::write(&log, "").unwrap();
    give_to_postgres(&log);
    let options = format!(
        "-p {restored_port} -k {} -c listen_addresses=127.0.0.1 -c max_connections=200",
        base.display()
    );
    let base_arg = base.display().to_string();
    let log_arg = log.display().to_string();
    let started = run_as_postgres(
        a.cluster.bin("pg_ctl"),
        &[
            "-D", &base_arg, "-w", "-t", "60", "-o", &options, "-l", &log_arg, "start",
        ],
    );
    let stop = || {
        run_as_postgres(
            a.cluster.bin("pg_ctl"),
            &["-D", &base_arg, "-m", "immediate", "stop"],
        )
    };
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(started.status.success(), "{}", log_text());
    let query = |sql: &str| {
        Command::new(a.cluster.bin("psql"))
            .env("PGPASSWORD", PASSWORD)
            .args([
                "-X",
                "-A",
                "-t",
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-p",
                &restored_port,
            ])
            .args(["-d", "postgres", "-c", sql])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while query("SELECT pg_is_in_recovery()") != "f" {
        if Instant::now() > deadline {
            stop();
            panic!("the restored server did not promote: {}", log_text());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let rows = query("SELECT string_agg(id::text, ',' ORDER BY id) FROM t");
    stop();
    assert_eq!(rows, "1,2", "{}", log_text());
}

/// config.toml.example as shipped, with its commented postgres-physical
/// job `cluster` switched on and the machine's paths swapped in.
fn physical_example(dir: &Path, catalog: &TestDb, source: &TestDb) -> String {
    with_physical_job(crate::truth::example_config(
        dir,
        catalog,
        source,
        &source.url(),
    ))
}

/// The example config `text` with its commented postgres-physical job
/// `cluster` switched on.
pub(crate) fn with_physical_job(text: String) -> String {
    let start = text
        .find("# [jobs.cluster]")
        .expect("config.toml.example has no postgres-physical job");
    let (head, tail) = text.split_at(start);
    let end = tail.find("\n\n").unwrap_or(tail.len());
    let job: Vec<&str> = tail[..end]
        .lines()
        .map(|l| l.strip_prefix("# ").unwrap_or(l))
        .collect();
    format!("{head}{}\n{}", job.join("\n"), &tail[end..])
}

#[test]
fn the_shipped_example_job_archives_and_fetches_on_its_defaults() {
    let (catalog, source) = (fresh_db(), fresh_db());
    let dir = postgres_scratch("vigil-it-wal-");
    let repo = fs_repo(dir.path());
    let mut a = archiving(
        dir,
        |d, _| physical_example(d, &catalog, &source),
        &format!("{VIGIL} --config {{config}} wal-push cluster %p"),
    );
    a.job = "cluster";
    let name = a.switch();
    a.wait_archived(&name);
    let stored = std::fs::read(repo.join(format!("cluster/wal/00000001/{name}.zst"))).unwrap();
    let original = a.pg_wal(&name);
    assert!(stored.starts_with(format!("vigil-wal 1 sha256={}", sha256(&original)).as_bytes()));
    let (code, stderr, fetched) = a.fetch(&a.config, &name);
    assert_eq!((code, stderr.as_str()), (0, ""));
    assert!(fetched.unwrap() == original);
}

#[test]
fn an_unreachable_repository_exits_3_and_fetch_gives_up_within_its_retry_window() {
    let dir = postgres_scratch("vigil-it-wal-");
    // Nothing listens on port 1: every request is refused at once.
    let repository = "[repositories.r]\nscheme = \"s3\"\n[repositories.r.options]\n\
        endpoint = \"http://127.0.0.1:1\"\nbucket = \"b\"\nregion = \"us-east-1\"\n\
        access_key_id = \"k\"\nsecret_access_key = \"s\"\ndisable_config_load = \"true\"\n\
        disable_ec2_metadata = \"true\"\n";
    let config = dir.path().join("config.toml");
    write_readable(&config, &config_text(dir.path(), 5432, repository));
    let started = Instant::now();
    let dest = dir.path().join("x").display().to_string();
    let (code, _, stderr) = vigil_cli(
        &config,
        &["wal-fetch", "pg", "00000002.history", &dest],
        &[],
    );
    let waited = started.elapsed();
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains("127.0.0.1:1"), "{stderr}");
    assert!(waited < Duration::from_secs(20), "gave up after {waited:?}");

    let file = dir.path().join("00000002.history");
    std::fs::write(&file, "1\t0/3000000\tno recovery target specified\n").unwrap();
    let (code, _, stderr) = vigil_cli(
        &config,
        &["wal-push", "pg", &file.display().to_string()],
        &[],
    );
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains("127.0.0.1:1"), "{stderr}");
}
