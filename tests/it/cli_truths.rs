//! What scripts and operators rely on: exit codes, a closed stdout, paths
//! relative to the config, keys that can decrypt, and the README's SQL for
//! preparing PostgreSQL.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use age::secrecy::ExposeSecret;

use crate::harness::{
    PASSWORD, VIGIL, Vigil, VigilOptions, config_text, fresh_db, own_cluster, unreachable_config,
    vigil_cli,
};

const ENV: [(&str, &str); 2] = [("TEST_PGPASSWORD", PASSWORD), ("JOB_PGPASSWORD", PASSWORD)];

/// A config in its own directory: the test defaults plus `extra`.
fn config_in(dir: &Path, catalog_url: &str, extra: &str) -> PathBuf {
    let path = dir.join("config.toml");
    std::fs::write(&path, config_text(dir, catalog_url, extra)).unwrap();
    path
}

/// An fs repository at `<dir>/repo` and a job `orders` backing up `source`.
fn repo_and_job(dir: &Path, source_url: &str, database: &str, encryption: &str) -> String {
    format!(
        "[repositories.local]\nscheme = \"fs\"\noptions = {{ root = \"{}\" }}\n{encryption}\
         [jobs.orders]\nkind = \"postgres\"\nsource = \"{source_url}\"\npassword = \"${{JOB_PGPASSWORD}}\"\n\
         databases = [\"{database}\"]\nrepository = \"local\"\nevery = \"1h\"\n",
        dir.join("repo").display()
    )
}

/// Writes an age key file; returns the public key.
fn write_key(path: &Path) -> String {
    let identity = age::x25519::Identity::generate();
    std::fs::write(
        path,
        format!("# test key\n{}\n", identity.to_string().expose_secret()),
    )
    .unwrap();
    identity.to_public().to_string()
}

/// Runs the CLI with stdout already closed by its reader.
fn with_stdout_closed(config: &Path, args: &[&str]) -> (i32, String) {
    let mut child = Command::new(VIGIL)
        .arg("--config")
        .arg(config)
        .args(args)
        .envs(ENV)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn status_exits_2_on_fail_and_3_when_the_daemon_is_down() {
    // A catalog of the test's own, so stopping it fails `catalog:responseTime`
    // (an outage warns; this one fails after 2 s).
    let cluster = own_cluster();
    cluster.psql("postgres", "CREATE DATABASE vigil").unwrap();
    let vigil = Vigil::start_with(
        &cluster.url("vigil"),
        "[health.catalog]\noutage_fail_after = \"2s\"\n",
        VigilOptions::default(),
    );
    vigil.wait_ready();
    let client = vigil.config_path_with_addr();
    let (code, stdout, stderr) = vigil_cli(&client, &["status"], &ENV);
    assert_eq!(code, 0, "{stdout}{stderr}");

    // A closed stdout ends `audit show` quietly (the daemon journalled its start).
    let (code, stderr) = with_stdout_closed(&client, &["audit", "show"]);
    assert_eq!((code, stderr.as_str()), (0, ""), "no panic, nothing said");

    cluster.stop().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let (code, stdout) = loop {
        let (code, stdout, _) = vigil_cli(&client, &["status"], &ENV);
        if stdout.contains(": FAIL") || Instant::now() > deadline {
            break (code, stdout);
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    assert!(stdout.contains("catalog:responseTime"), "{stdout}");
    assert_eq!(code, 2, "unhealthy: {stdout}");

    // The client config outlives the daemon's directory.
    let kept = tempfile::tempdir().unwrap();
    let client = {
        let path = kept.path().join("config.toml");
        std::fs::copy(&client, &path).unwrap();
        path
    };
    let addr = vigil.addr;
    drop(vigil);
    let (code, stdout, stderr) = vigil_cli(&client, &["status"], &ENV);
    assert_eq!(code, 3, "{stderr}");
    assert!(stdout.is_empty());
    assert!(
        stderr.contains(&addr.to_string()) && stderr.contains("admin.listen"),
        "names where and what to check: {stderr}"
    );
}

#[test]
fn usage_errors_exit_64_before_anything_is_contacted() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens on port 1: reaching out would be exit 3, not 64.
    let extra = repo_and_job(
        dir.path(),
        "postgres://postgres@127.0.0.1:1/orders",
        "orders",
        "",
    );
    let config = config_in(dir.path(), "postgres://postgres@127.0.0.1:1/vigil", &extra);
    for args in [
        &["backup", "nope"][..],
        &["list", "nope"],
        &["prune", "nope", "--dry-run"],
        &["pin", "nope", "20261123T073244Z"],
        &["restore", "nope", "--to", "postgres://127.0.0.1:1/x"],
        &["restore", "orders", "--to", "postgres://127.0.0.1:1/"],
        &["restore", "orders", "--to", "host=127.0.0.1 port=nope"],
    ] {
        let (code, stdout, stderr) = vigil_cli(&config, args, &ENV);
        assert_eq!(code, 64, "{args:?}: {stderr}");
        assert!(stdout.is_empty(), "{args:?}: {stdout}");
        if args[1] == "nope" {
            assert!(
                stderr.contains("no job `nope`") && stderr.contains("configured: orders"),
                "{args:?}: {stderr}"
            );
        } else {
            assert!(stderr.contains("--to"), "{args:?}: {stderr}");
        }
    }
}

#[test]
fn an_unreachable_catalog_or_repository_exits_3() {
    let dir = tempfile::tempdir().unwrap();
    let config = unreachable_config(dir.path());

    let (code, _, stderr) = vigil_cli(&config, &["migrate"], &ENV);
    assert_eq!(code, 3, "{stderr}");
    let (code, stdout, stderr) = vigil_cli(&config, &["list", "orders"], &ENV);
    assert_eq!(code, 3, "{stderr}");
    assert!(stdout.is_empty());
    assert!(
        stderr.contains("repository `remote`") && stderr.contains("cannot reach"),
        "{stderr}"
    );
    assert!(!stderr.contains("s3cret-key-never-shown"));
}

#[test]
fn an_unreachable_source_exits_3_and_a_refusing_one_1() {
    let catalog = fresh_db();
    let source = fresh_db();
    let dir = tempfile::tempdir().unwrap();
    let extra = repo_and_job(
        dir.path(),
        "postgres://postgres@127.0.0.1:1/orders",
        "orders",
        "",
    );
    let config = config_in(dir.path(), &catalog.url(), &extra);
    let (code, _, stderr) = vigil_cli(&config, &["backup", "orders"], &ENV);
    assert_eq!(code, 3, "{stderr}");
    assert!(
        stderr.contains("cannot reach the source 127.0.0.1:1"),
        "names host:port: {stderr}"
    );

    // A server that answers and refuses the password is a failed run, not an outage.
    let extra = repo_and_job(dir.path(), &source.url(), &source.name, "");
    let config = config_in(dir.path(), &catalog.url(), &extra);
    let env = [
        ("TEST_PGPASSWORD", PASSWORD),
        ("JOB_PGPASSWORD", "wrong-pw-77"),
    ];
    let (code, _, stderr) = vigil_cli(&config, &["backup", "orders"], &env);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("password authentication failed"),
        "{stderr}"
    );
    assert!(!stderr.contains("wrong-pw-77"));
}

#[test]
fn a_closed_stdout_ends_list_quietly() {
    let source = fresh_db();
    let catalog = fresh_db();
    source
        .psql("CREATE TABLE t (x int); INSERT INTO t VALUES (1)")
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let extra = repo_and_job(dir.path(), &source.url(), &source.name, "");
    let config = config_in(dir.path(), &catalog.url(), &extra);
    let (code, _, stderr) = vigil_cli(&config, &["backup", "orders"], &ENV);
    assert_eq!(code, 0, "{stderr}");
    // A restore target nobody listens on cannot be reached: 3.
    let to = "postgres://postgres@127.0.0.1:1/copy";
    let (code, _, stderr) = vigil_cli(&config, &["restore", "orders", "--to", to], &ENV);
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains("target 127.0.0.1:1"), "{stderr}");
    for args in [
        &["list"][..],
        &["list", "orders", "--json"],
        &["check-config"],
    ] {
        let (code, stderr) = with_stdout_closed(&config, args);
        assert_eq!(code, 0, "{args:?}: {stderr}");
        assert!(stderr.is_empty(), "{args:?}: {stderr}");
    }
    // `| head -1` as a shell runs it.
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "set -o pipefail; \"{VIGIL}\" --config \"{}\" list | head -1",
            config.display()
        ))
        .envs(ENV)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("job "));
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn an_identity_that_cannot_decrypt_is_refused_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let mine = write_key(&dir.path().join("age.key"));
    let theirs = write_key(&dir.path().join("other.key"));
    // Relative, as in the demo: read from the config's directory.
    let encryption = format!(
        "[repositories.local.encryption]\nrecipients = [\"{theirs}\"]\nidentity_file = \"age.key\"\n"
    );
    let extra = repo_and_job(dir.path(), "postgres://127.0.0.1:1/o", "o", &encryption);
    let config = config_in(dir.path(), "postgres://postgres@127.0.0.1:1/vigil", &extra);
    for args in [&["check-config"][..], &["run"], &["backup", "orders"]] {
        let (code, stdout, stderr) = vigil_cli(&config, args, &ENV);
        assert_eq!(code, 64, "{args:?}: {stdout}{stderr}");
        let key_file = dir.path().join("age.key").display().to_string();
        assert!(
            stderr.contains("`repositories.local.encryption.identity_file`")
                && stderr.contains(&key_file)
                && stderr.contains(&mine)
                && stderr.contains(&theirs),
            "{args:?}: {stderr}"
        );
        assert!(!stderr.contains("AGE-SECRET-KEY"), "never the secret key");
    }
    // The matching key (by its path relative to the config) is accepted from any directory.
    std::fs::write(
        &config,
        std::fs::read_to_string(&config)
            .unwrap()
            .replace("age.key", "other.key"),
    )
    .unwrap();
    let out = Command::new(VIGIL)
        .arg("--config")
        .arg(&config)
        .arg("check-config")
        .envs(ENV)
        .current_dir("/")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8_lossy(&out.stdout);
    let resolved = dir.path().join("other.key").display().to_string();
    assert!(printed.contains(&resolved), "{printed}");
}

#[test]
fn encryption_check_warns_about_backups_the_identity_cannot_decrypt() {
    let source = fresh_db();
    let catalog = fresh_db();
    source
        .psql("CREATE TABLE t (x int); INSERT INTO t VALUES (1)")
        .unwrap();
    let keys = tempfile::tempdir().unwrap();
    let old_key = keys.path().join("old.key");
    let new_key = keys.path().join("new.key");
    let old = write_key(&old_key);
    let new = write_key(&new_key);
    let encryption = |recipient: &str, key: &Path| {
        format!(
            "[repositories.local.encryption]\nrecipients = [\"{recipient}\"]\nidentity_file = \"{}\"\n",
            key.display()
        )
    };
    // Backed up under the old key…
    let extra = repo_and_job(
        keys.path(),
        &source.url(),
        &source.name,
        &encryption(&old, &old_key),
    );
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(dir.path(), &catalog.url(), &extra);
    let (code, stdout, stderr) = vigil_cli(&config, &["backup", "orders"], &ENV);
    assert_eq!(code, 0, "{stderr}");
    let backup_id = stdout.split_whitespace().nth(1).unwrap().to_owned();

    // …then the key is rotated: the shipped defaults (no writable_interval
    // set) still check at start-up.
    let extra = repo_and_job(
        keys.path(),
        &source.url(),
        &source.name,
        &encryption(&new, &new_key),
    );
    let mut options = VigilOptions::default();
    options.env.insert("JOB_PGPASSWORD".into(), PASSWORD.into());
    let vigil = Vigil::start_with(&catalog.url(), &extra, options);
    vigil.wait_ready();
    let mut check = serde_json::Value::Null;
    vigil.wait_for("the encryption check", Duration::from_secs(30), || {
        let body = vigil.get("/health/detailed").json();
        check = body["checks"]["local:encryption"][0].clone();
        !check.is_null()
    });
    assert_eq!(check["status"], "warn", "{check}");
    assert_eq!(check["observedValue"], 1.0, "{check}");
    let output = check["output"].as_str().unwrap();
    assert!(
        output.contains(&format!("orders/{backup_id}"))
            && output.contains(&old)
            && output.contains(&new)
            && output.contains(&new_key.display().to_string()),
        "{output}"
    );
    assert!(!output.contains("AGE-SECRET-KEY"));
}

#[test]
fn demo_files_are_private_and_its_restore_works_from_any_directory() {
    let dir = tempfile::tempdir().unwrap();
    let demo_dir = dir.path().join("demo");
    let mut child = Command::new(VIGIL)
        .args(["demo", "--listen", "127.0.0.1:0", "--dir"])
        .arg(&demo_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut port = None;
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(60)) {
        if let Some(rest) = line.split("throwaway cluster on 127.0.0.1:").nth(1) {
            port = rest.trim().parse::<u16>().ok();
        }
        if line.contains("vigil is ready") {
            break;
        }
    }
    let port = port.expect("the demo names its cluster's port");
    let config = demo_dir.join("vigil.toml");

    use std::os::unix::fs::PermissionsExt;
    for entry in std::fs::read_dir(&demo_dir).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            let mode = entry.metadata().unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", entry.path().display());
        }
    }

    let deadline = Instant::now() + Duration::from_secs(60);
    while crate::harness::list_manifests(&config, "sample", &[]).is_empty() {
        assert!(Instant::now() < deadline, "no demo backup within a minute");
        std::thread::sleep(Duration::from_millis(500));
    }
    // The quick start's restore, run from another directory.
    let password = std::fs::read_to_string(demo_dir.join("catalog.password")).unwrap();
    let out = Command::new(VIGIL)
        .arg("--config")
        .arg(&config)
        .args(["restore", "sample", "--latest", "--create", "--to"])
        .arg(format!("postgres://postgres@127.0.0.1:{port}/restored"))
        .env("PGPASSWORD", password.trim())
        .current_dir("/")
        .output()
        .unwrap();
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    );
    let status = child.wait().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("into restored"));
    assert_eq!(status.code(), Some(0));
}

/// Runs a file of SQL with psql as the superuser, with `-v` variables.
fn psql_file(cluster: &vigil::cli::pgcluster::Cluster, file: &Path, vars: &[(&str, &str)]) {
    let mut command = Command::new(cluster.bin("psql"));
    command
        .env("PGPASSWORD", PASSWORD)
        .args([
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
        ])
        .arg("-p")
        .arg(cluster.port().to_string())
        .args(["-d", "postgres", "-f"])
        .arg(file);
    for (name, value) in vars {
        command.arg("-v").arg(format!("{name}={value}"));
    }
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_readme_sql_prepares_roles_that_migrate_and_back_up() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let sql = |name: &str| {
        let path = root.join("deploy/postgres").join(name);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            readme.contains(&format!("```sql\n{text}```")),
            "README.md does not show {name} verbatim"
        );
        path
    };
    let cluster = own_cluster();
    cluster.psql("postgres", "CREATE DATABASE shop").unwrap();
    cluster
        .psql(
            "shop",
            "CREATE TABLE items (id serial PRIMARY KEY, name text); INSERT INTO items (name) VALUES ('a'), ('b')",
        )
        .unwrap();
    psql_file(
        &cluster,
        &sql("catalog.sql"),
        &[("catalog_password", "catalog-pw-1")],
    );
    psql_file(
        &cluster,
        &sql("backup-role.sql"),
        &[("backup_password", "backup-pw-2")],
    );

    let dir = tempfile::tempdir().unwrap();
    let url = |role: &str, db: &str| format!("postgres://{role}@127.0.0.1:{}/{db}", cluster.port());
    let job = |name: &str, databases: &str| {
        format!(
            "[jobs.{name}]\nkind = \"postgres\"\nsource = \"{}\"\npassword = \"backup-pw-2\"\n\
             databases = {databases}\nrepository = \"local\"\nevery = \"1h\"\n",
            url("vigil_backup", "postgres")
        )
    };
    let extra = format!(
        "[repositories.local]\nscheme = \"fs\"\noptions = {{ root = \"{}\" }}\n{}{}",
        dir.path().join("repo").display(),
        job("everything", "\"all\""),
        job("shop", "[\"shop\"]"),
    );
    let config = config_in(dir.path(), &url("vigil", "vigil"), &extra);
    let env = [("TEST_PGPASSWORD", "catalog-pw-1")];
    let (code, stdout, stderr) = vigil_cli(&config, &["migrate"], &env);
    assert_eq!(code, 0, "migrations as the catalog role: {stdout}{stderr}");
    let (code, _, stderr) = vigil_cli(&config, &["backup", "everything"], &env);
    assert_eq!(
        code, 0,
        "databases = \"all\" as vigil_backup (PG 14+): {stderr}"
    );
    let manifests = crate::harness::list_manifests(&config, "everything", &env);
    let names: Vec<&str> = manifests[0]["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap())
        .collect();
    assert!(
        names.iter().any(|n| n.starts_with("globals.sql"))
            && names.iter().any(|n| n.starts_with("shop.dump")),
        "{names:?}"
    );

    // The pre-14 grants, on a role made afresh.
    cluster
        .psql(
            "postgres",
            "DROP OWNED BY vigil_backup; DROP ROLE vigil_backup",
        )
        .unwrap();
    psql_file(
        &cluster,
        &sql("backup-role-pg13.sql"),
        &[("backup_password", "backup-pw-2")],
    );
    let (code, _, stderr) = vigil_cli(&config, &["backup", "shop"], &env);
    assert_eq!(code, 0, "listed databases with per-schema grants: {stderr}");
}
