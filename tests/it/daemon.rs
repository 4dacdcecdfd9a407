//! The daemon's typed errors, end to end: a start-up that cannot bind or
//! cannot create its state directory says which key and why, and exits 1;
//! a reload of a broken config through the API is refused with its reason.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::*;

/// Runs `vigil run` on `config` until it exits (30 s at most): its exit
/// code and its stderr.
fn run_until_exit(config: &Path, env: &[(&str, &str)]) -> (i32, String) {
    let log = config.with_extension("stderr");
    let mut child = Command::new(VIGIL)
        .arg("--config")
        .arg(config)
        .arg("run")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "vigil did not exit; log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (
        status.code().unwrap_or(-1),
        std::fs::read_to_string(&log).unwrap(),
    )
}

/// Holds `addr` (or finds it already held by someone else): either way
/// vigil cannot bind it.
fn hold(addr: &str) -> Option<TcpListener> {
    TcpListener::bind(addr).ok()
}

#[test]
fn the_example_config_on_a_taken_port_fails_naming_admin_listen() {
    let dir = tempfile::tempdir().unwrap();
    let example = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml.example"));
    let password = dir.path().join("catalog.password");
    std::fs::write(&password, PASSWORD).unwrap();
    // Only the machine's own paths change; `admin.listen` stays the shipped
    // 127.0.0.1:9746, which this test holds.
    let text = std::fs::read_to_string(example)
        .unwrap()
        .replace(
            "state_dir = \"/var/lib/vigil\"",
            &format!("state_dir = \"{}\"", dir.path().join("state").display()),
        )
        .replace(
            "password_file = \"/etc/vigil/catalog.password\"",
            &format!("password_file = \"{}\"", password.display()),
        );
    assert!(text.contains("listen = \"127.0.0.1:9746\""));
    let config = dir.path().join("config.toml");
    std::fs::write(&config, text).unwrap();
    let _held = hold("127.0.0.1:9746");

    let (code, log) = run_until_exit(&config, &[]);
    assert_eq!(code, 1, "{log}");
    assert!(log.contains("vigil cannot start"), "{log}");
    assert!(
        log.contains(
            "cannot listen on 127.0.0.1:9746 (`admin.listen`): Address already in use (os error 98); \
             is another vigil running, or is the port taken?"
        ),
        "{log}"
    );
    assert!(!log.contains(PASSWORD), "{log}");
}

#[test]
fn a_state_dir_that_is_a_file_fails_start_up_naming_the_key() {
    let db = fresh_catalog();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::write(&state, "not a directory").unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, config_text(dir.path(), &db.url(), "")).unwrap();

    let (code, log) = run_until_exit(&config, &[("TEST_PGPASSWORD", PASSWORD)]);
    assert_eq!(code, 1, "{log}");
    assert!(log.contains("vigil failed"), "{log}");
    let expected = format!(
        "cannot create `daemon.state_dir` {}: File exists (os error 17)",
        state.display()
    );
    assert!(log.contains(&expected), "{expected} not in:\n{log}");
}

#[test]
fn an_api_reload_of_a_broken_config_is_refused_with_its_reason() {
    const ADMIN: &str = "admin-token-5be1c09d2a";
    let db = fresh_catalog();
    let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(ADMIN.as_bytes()));
    let options = VigilOptions {
        admin: format!(
            "[[admin.tokens]]\nname = \"oncall\"\nrole = \"admin\"\ntoken_sha256 = \"{sha}\"\n"
        ),
        ..VigilOptions::default()
    };
    let vigil = Vigil::start_with(&db.url(), "", options);
    vigil.wait_ready();
    std::fs::write(&vigil.config_path, "[daemon\nbroken").unwrap();

    let auth = format!("Bearer {ADMIN}");
    let refused = http_with(
        vigil.addr,
        "POST",
        "/api/v1/reload",
        &[("Authorization", auth.as_str())],
    )
    .unwrap();
    assert_eq!(refused.status, 422, "{}", refused.body);
    let error = &refused.json()["error"];
    assert_eq!(error["code"], "reload_refused", "{}", refused.body);
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains(&vigil.config_path.display().to_string()),
        "the reason names the file: {message}"
    );
    assert!(!refused.body.contains(PASSWORD));
    // Still running on the previous config, and says so.
    let check = &vigil.get("/health/detailed").json()["checks"]["config:reload"][0];
    assert_eq!(check["status"], "warn", "{check}");
    let addr: SocketAddr = vigil.addr;
    assert_eq!(http(addr, "GET", "/health/ready").unwrap().status, 200);
}
