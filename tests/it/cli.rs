//! The CLI: config errors, production refusals, redaction, status, migrate, demo.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::harness::{PASSWORD, VIGIL, Vigil, config_text, fresh_db, http, vigil_cli};

fn write_config(dir: &tempfile::TempDir, text: &str) -> std::path::PathBuf {
    let path = dir.path().join("config.toml");
    std::fs::write(&path, text).unwrap();
    path
}

const BASE: &str = "[catalog]\nurl = \"postgres://vigil@127.0.0.1:1/vigil\"\n";

#[test]
fn config_errors_name_key_and_line_and_exit_64() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            format!("{BASE}\n[health]\nintervall = \"5s\"\n"),
            "health.intervall",
            ":5:1",
        ),
        (
            format!("{BASE}\n[health]\ninterval = \"5 fortnights\"\n"),
            "health.interval",
            ":5:12",
        ),
        (
            format!("{BASE}password = \"${{VIGIL_TEST_UNSET_VAR}}\"\n"),
            "catalog.password",
            ":3:12",
        ),
    ];
    for (text, key, position) in cases {
        let path = write_config(&dir, &text);
        for command in ["check-config", "run"] {
            let (code, stdout, stderr) = vigil_cli(&path, &[command], &[]);
            assert_eq!(code, 64, "{command} {key}: {stderr}");
            assert!(stdout.is_empty());
            assert!(
                stderr.contains(&format!("`{key}`")),
                "{key} not named: {stderr}"
            );
            assert!(
                stderr.contains(&format!("config.toml{position}")),
                "{position} not given: {stderr}"
            );
        }
    }
    let (code, _, stderr) = vigil_cli(&dir.path().join("missing.toml"), &["check-config"], &[]);
    assert_eq!(code, 64);
    assert!(stderr.contains("cannot read the config file"), "{stderr}");
    let (code, _, _) = vigil_cli(&dir.path().join("c.toml"), &["no-such-command"], &[]);
    assert_eq!(code, 64);
}

#[test]
fn production_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let open = format!(
        "[daemon]\nenvironment = \"production\"\n{BASE}[admin]\nlisten = \"0.0.0.0:9746\"\n"
    );
    let (code, _, stderr) = vigil_cli(&write_config(&dir, &open), &["check-config"], &[]);
    assert_eq!(code, 64);
    assert!(
        stderr.contains("`admin.listen`") && stderr.contains("admin.tokens"),
        "{stderr}"
    );

    let placeholder =
        format!("[daemon]\nenvironment = \"production\"\n{BASE}password = \"change-me\"\n");
    let (code, _, stderr) = vigil_cli(&write_config(&dir, &placeholder), &["check-config"], &[]);
    assert_eq!(code, 64);
    assert!(
        stderr.contains("`catalog.password`") && stderr.contains("placeholder"),
        "{stderr}"
    );

    let fine = format!(
        "[daemon]\nenvironment = \"production\"\n{BASE}[admin]\nlisten = \"0.0.0.0:9746\"\n[[admin.tokens]]\nname = \"ops\"\nrole = \"admin\"\ntoken_sha256 = \"{}\"\n",
        "ab".repeat(32)
    );
    let (code, _, stderr) = vigil_cli(&write_config(&dir, &fine), &["check-config"], &[]);
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn secrets_never_appear_in_check_config() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "tok-from-file-98765\n").unwrap();
    let text = "[catalog]\nurl = \"postgres://vigil:url-secret-4321@db/vigil\"\npassword = \"${PGPW}\"\n[[admin.tokens]]\nname = \"ops\"\nrole = \"admin\"\ntoken_file = \"token\"\n";
    let path = write_config(&dir, text);
    let (code, stdout, stderr) =
        vigil_cli(&path, &["check-config"], &[("PGPW", "env-secret-1234")]);
    assert_eq!(code, 0, "{stderr}");
    for secret in ["url-secret-4321", "env-secret-1234", "tok-from-file-98765"] {
        assert!(
            !stdout.contains(secret) && !stderr.contains(secret),
            "{secret} leaked:\n{stdout}{stderr}"
        );
    }
    assert!(stdout.contains("postgres://vigil:***@db/vigil"), "{stdout}");
    assert!(stdout.contains("password = \"<redacted>\""), "{stdout}");
    // A token file is hashed at load, and not even its digest is shown.
    let hash = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(b"tok-from-file-98765"))
    };
    assert!(!stdout.contains(&hash), "{stdout}");
    assert!(stdout.contains("token_sha256 = \"<redacted>\""), "{stdout}");
    assert!(
        stdout.contains("[health]") && stdout.contains("interval = \"15s\""),
        "defaults shown: {stdout}"
    );
}

#[test]
fn status_prints_the_running_daemon() {
    let db = fresh_db();
    let vigil = Vigil::start(&db, "");
    vigil.wait_ready();
    let (code, stdout, stderr) = vigil_cli(
        &vigil.config_path_with_addr(),
        &["status"],
        &[("TEST_PGPASSWORD", PASSWORD)],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains(": PASS (phase ready"), "{stdout}");
    assert!(stdout.contains("catalog:responseTime"), "{stdout}");
    let (code, stdout, _) = vigil_cli(
        &vigil.config_path_with_addr(),
        &["status", "--json"],
        &[("TEST_PGPASSWORD", PASSWORD)],
    );
    assert_eq!(code, 0);
    assert!(serde_json::from_str::<serde_json::Value>(&stdout).is_ok());
}

#[test]
fn migrate_is_idempotent() {
    let db = fresh_db();
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(&dir, &config_text(dir.path(), &db.url(), ""));
    let env = [("TEST_PGPASSWORD", PASSWORD)];
    let (code, stdout, stderr) = vigil_cli(&path, &["migrate"], &env);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains(
            "catalog schema at version 5 (applied now: V1__initial_schema, V2__cleanup_freed_bytes, V3__audit_journal, V4__execution_details, V5__journal_pin)"
        ),
        "{stdout}"
    );
    let (code, stdout, _) = vigil_cli(&path, &["migrate"], &env);
    assert_eq!(code, 0);
    assert!(
        stdout.contains("catalog schema at version 5 (applied now: none)"),
        "{stdout}"
    );
    assert!(!stderr.contains(PASSWORD));
}

#[test]
fn demo_runs_and_cleans_up() {
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
    let mut addr = None;
    let mut seen = Vec::new();
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(60)) {
        if let Some(url) = line.trim().strip_prefix("status page") {
            addr = url
                .trim()
                .trim_start_matches("http://")
                .trim_end_matches('/')
                .parse::<std::net::SocketAddr>()
                .ok();
        }
        let ready = line.contains("vigil is ready");
        seen.push(line);
        if ready {
            break;
        }
    }
    let addr = addr.unwrap_or_else(|| panic!("no status page URL printed:\n{}", seen.join("\n")));
    let config = demo_dir.join("vigil.toml");
    let (code, stdout, _) = vigil_cli(&config, &["status"], &[]);
    assert_eq!(code, 0, "{stdout}");
    // The sample job catches up at once: a committed, encrypted backup appears.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (code, stdout, stderr) = vigil_cli(&config, &["list", "--json"], &[]);
        assert_eq!(code, 0, "{stderr}");
        let list: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        if let Some(first) = list.as_array().and_then(|l| l.first()) {
            assert_eq!(first["job"], "sample");
            assert_eq!(first["encryption"]["scheme"], "age");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no demo backup within a minute"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // With a fresh backup, what the demo protects is fine.
    loop {
        if http(addr, "GET", "/health").unwrap().status == 200 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no demo backup within a minute"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(
        !demo_dir.join("pg").exists(),
        "the demo cluster was not removed"
    );
}

#[test]
fn example_config_is_valid_and_documents_every_key() {
    let example = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml.example"));
    let text = std::fs::read_to_string(example).unwrap();
    // The example points at files that do not exist here; swap the password file for a value.
    let dir = tempfile::tempdir().unwrap();
    let runnable = text.replace(
        "password_file = \"/etc/vigil/catalog.password\"",
        "password = \"x\"",
    );
    let path = write_config(&dir, &runnable);
    let (code, stdout, stderr) = vigil_cli(&path, &["check-config"], &[]);
    assert_eq!(code, 0, "{stderr}");
    // Every key of the effective config appears in the example (set or commented out).
    let mut section = String::new();
    for line in stdout
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        if let Some(name) = line.strip_prefix('[') {
            section = name.trim_end_matches(']').to_owned();
            assert!(
                text.contains(line),
                "section {line} missing from the example"
            );
            continue;
        }
        let key = line.split('=').next().unwrap().trim();
        let section_text = text
            .split(&format!("[{section}]\n"))
            .nth(1)
            .unwrap_or_else(|| panic!("[{section}] missing"));
        let section_text = section_text.split("\n[").next().unwrap();
        assert!(
            section_text
                .lines()
                .any(|l| l.trim_start_matches("# ").starts_with(&format!("{key} ="))),
            "{section}.{key} is not documented in config.toml.example"
        );
    }
    // Optional keys have no default to print; they must be in the example too.
    for key in [
        "instance",
        "file",
        "token_sha256",
        "token_file",
        "password",
        "interval",
    ] {
        assert!(
            text.contains(&format!("# {key} = ")),
            "{key} not documented"
        );
    }
}
