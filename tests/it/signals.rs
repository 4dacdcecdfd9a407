//! SIGHUP reloads, SIGTERM shutdown, and the systemd notify protocol.

use std::os::unix::net::UnixDatagram;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::harness::{Vigil, VigilOptions, fresh_db, http};

#[test]
fn sighup_with_a_broken_config_keeps_the_old_one() {
    let db = fresh_db();
    let vigil = Vigil::start(&db, "");
    vigil.wait_ready();
    std::fs::write(
        &vigil.config_path,
        "[catalog]\nurl = \"postgres://x\"\nbogus_key = 1\n",
    )
    .unwrap();
    vigil.signal(Signal::SIGHUP);
    vigil.wait_for_log("config reload refused", Duration::from_secs(10));
    assert!(
        vigil.log_text().contains("bogus_key"),
        "the refusal names the key"
    );

    vigil.wait_for("config:reload to warn", Duration::from_secs(5), || {
        vigil.get("/health/detailed").json()["checks"]["config:reload"][0]["status"] == "warn"
    });
    let health = vigil.get("/health");
    assert_eq!(
        (health.status, health.body.as_str()),
        (200, r#"{"status":"warn"}"#)
    );
    assert!(
        vigil
            .get("/metrics")
            .body
            .contains("vigil_config_reload_failures_total 1")
    );
    // Still running on the old config: the catalog check still passes.
    let detailed = vigil.get("/health/detailed").json();
    assert_eq!(
        detailed["checks"]["catalog:responseTime"][0]["status"],
        "pass"
    );

    // A good config afterwards clears the warning.
    vigil.write_config(&db.url(), "");
    vigil.signal(Signal::SIGHUP);
    vigil.wait_for("config:reload to pass", Duration::from_secs(10), || {
        vigil.get("/health/detailed").json()["checks"]["config:reload"][0]["status"] == "pass"
    });
}

#[test]
fn sighup_applies_a_new_log_level() {
    let db = fresh_db();
    let vigil = Vigil::start(&db, "");
    vigil.wait_ready();
    vigil.get("/health?marker=before");
    let text = std::fs::read_to_string(&vigil.config_path).unwrap();
    std::fs::write(
        &vigil.config_path,
        text.replace("level = \"info\"", "level = \"debug\""),
    )
    .unwrap();
    vigil.signal(Signal::SIGHUP);
    vigil.wait_for_log("config reloaded", Duration::from_secs(10));
    assert!(
        vigil.log_text().contains("log.level"),
        "the changed key is logged"
    );
    vigil.get("/health?marker=after");
    vigil.wait_for_log("marker=after", Duration::from_secs(5));
    assert!(
        !vigil.log_text().contains("marker=before"),
        "debug lines appeared before the reload"
    );
}

#[test]
fn sigterm_exits_zero_within_the_timeout() {
    let db = fresh_db();
    let mut vigil = Vigil::start(&db, "");
    vigil.wait_ready();
    vigil.signal(Signal::SIGTERM);
    let status = vigil.wait_exit(Duration::from_secs(7));
    assert_eq!(status.code(), Some(0), "log:\n{}", vigil.log_text());
    assert!(vigil.log_text().contains("vigil stopped"));
}

#[test]
fn notify_protocol_sequence() {
    let db = fresh_db();
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let messages: Arc<Mutex<Vec<String>>> = Arc::default();
    let addr: Arc<Mutex<Option<std::net::SocketAddr>>> = Arc::default();
    // Records each message; on READY=1 also whether /health/ready was already 200.
    let (sink, addr_seen) = (Arc::clone(&messages), Arc::clone(&addr));
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let idle_limit = 100; // 20 s without any message ends the reader
        let mut idle = 0;
        while idle < idle_limit {
            match socket.recv(&mut buf) {
                Ok(n) => {
                    idle = 0;
                    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                    let mut entry = text.clone();
                    if text.lines().any(|l| l == "READY=1") {
                        let ready = addr_seen
                            .lock()
                            .unwrap()
                            .map(|a| http(a, "GET", "/health/ready").map(|r| r.status));
                        entry.push_str(&format!("(ready={ready:?})"));
                    }
                    let stopping = text.contains("STOPPING=1");
                    sink.lock().unwrap().push(entry);
                    if stopping {
                        break;
                    }
                }
                Err(_) => idle += 1,
            }
        }
    });
    let mut options = VigilOptions::default();
    options
        .env
        .insert("NOTIFY_SOCKET".into(), socket_path.display().to_string());
    options.env.insert("WATCHDOG_USEC".into(), "1000000".into());
    let mut vigil = Vigil::start_with(&db.url(), "", options);
    *addr.lock().unwrap() = Some(vigil.addr);
    vigil.wait_ready();
    std::thread::sleep(Duration::from_millis(1500));
    vigil.signal(Signal::SIGHUP);
    vigil.wait_for_log("config reloaded", Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(300));
    vigil.signal(Signal::SIGTERM);
    assert_eq!(vigil.wait_exit(Duration::from_secs(7)).code(), Some(0));
    reader.join().unwrap();

    let messages = messages.lock().unwrap().clone();
    let kinds: Vec<&str> = messages
        .iter()
        .filter_map(|m| {
            m.lines()
                .find(|l| ["READY=1", "RELOADING=1", "STOPPING=1", "WATCHDOG=1"].contains(l))
        })
        .collect();
    let first_ready = kinds
        .iter()
        .position(|k| *k == "READY=1")
        .expect("READY=1 sent");
    let ready_message = messages.iter().find(|m| m.contains("READY=1")).unwrap();
    assert!(
        ready_message.contains("(ready=Some(Ok(200)))"),
        "READY=1 before /health/ready was 200: {ready_message}"
    );
    let reloading = kinds
        .iter()
        .position(|k| *k == "RELOADING=1")
        .expect("RELOADING=1 sent");
    assert!(reloading > first_ready);
    assert_eq!(
        kinds[reloading + 1..].iter().find(|k| **k != "WATCHDOG=1"),
        Some(&"READY=1"),
        "{kinds:?}"
    );
    assert_eq!(kinds.last(), Some(&"STOPPING=1"), "{kinds:?}");
    // WATCHDOG_USEC=1s: a ping at least every 0.5 s while running.
    let pings = kinds.iter().filter(|k| **k == "WATCHDOG=1").count();
    assert!(pings >= 3, "only {pings} watchdog pings: {kinds:?}");
}
