//! Rotation with the real `logrotate` and the shipped `logrotate/vigil`
//! (paths and the signal command adapted): no line lost, new lines in the new file.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use crate::harness::{Vigil, VigilOptions, fresh_db, http};

fn logrotate_config(log: &std::path::Path, pid: u32) -> String {
    let shipped =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/logrotate/vigil")).unwrap();
    let user = nix::unistd::User::from_uid(nix::unistd::getuid())
        .unwrap()
        .unwrap()
        .name;
    shipped
        .replace("/var/log/vigil/vigil.log", &log.display().to_string())
        .replace(
            "create 0640 vigil vigil",
            &format!("create 0640 {user} {user}"),
        )
        .replace("su vigil vigil", &format!("su {user} {user}"))
        .replace(
            "systemctl kill --signal=SIGUSR1 --kill-whom=main vigil.service",
            &format!("kill -USR1 {pid}"),
        )
}

#[test]
fn rotation_loses_no_line() {
    let logrotate = which("logrotate")
        .expect("test setup: logrotate is not installed (apt-get install logrotate)");
    let db = fresh_db();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("vigil.log");
    // Each admin request logs one debug line carrying its `seq`.
    let options = VigilOptions {
        log: format!(
            "level = \"info,vigil::admin=debug\"\nfile = \"{}\"",
            log.display()
        ),
        ..Default::default()
    };
    let vigil = Vigil::start_with(&db.url(), "", options);
    vigil.wait_ready();
    let conf = dir.path().join("logrotate.conf");
    std::fs::write(&conf, logrotate_config(&log, vigil.child.id())).unwrap();
    let state = dir.path().join("logrotate.state");

    let total = 1500;
    let rotations = 3;
    for i in 0..total {
        http(vigil.addr, "GET", &format!("/health?seq={i}")).unwrap();
        if i % (total / (rotations + 1)) == total / (rotations + 1) - 1 && i + 1 < total {
            let out = Command::new(&logrotate)
                .arg("-f")
                .arg("-s")
                .arg(&state)
                .arg(&conf)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "logrotate failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    vigil.wait_for_log(&format!("seq={}", total - 1), Duration::from_secs(5));
    // The file writer is asynchronous: wait until the last line reached the file.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains(&format!("seq={}\"", total - 1))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "last line never reached the new file"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let mut seen = BTreeSet::new();
    let mut files = 0;
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.starts_with("vigil.log") {
            continue;
        }
        files += 1;
        let out = Command::new("zcat").arg("-f").arg(&path).output().unwrap();
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if let Some(seq) = line.split("seq=").nth(1) {
                let digits: String = seq.chars().take_while(char::is_ascii_digit).collect();
                let n: u32 = digits.parse().unwrap();
                assert!(seen.insert(n), "line {n} appears twice");
            }
        }
    }
    assert_eq!(
        files,
        1 + rotations as usize,
        "expected the live file and {rotations} rotated ones"
    );
    let missing: Vec<u32> = (0..total).filter(|n| !seen.contains(n)).collect();
    assert!(missing.is_empty(), "lost lines: {missing:?}");
    assert!(
        vigil
            .get("/metrics")
            .body
            .contains("vigil_log_dropped_lines_total 0")
    );
    assert!(
        std::fs::read_to_string(&log)
            .unwrap()
            .contains("log file reopened")
    );
}

fn which(name: &str) -> Option<std::path::PathBuf> {
    ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
        .iter()
        .map(|d| std::path::Path::new(d).join(name))
        .find(|p| p.is_file())
}
