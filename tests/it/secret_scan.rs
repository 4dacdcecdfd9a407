//! The standing secret scan (issue 12): one daemon and the CLI doing what
//! operators do (backups through the API, a failing run, a reload with a
//! rotated password, status, list, audit, restore), then every log line,
//! response body, journal line and catalog row searched for every secret;
//! and while they run, the environment and command line of every vigil
//! process and of every process it spawned (pg_dump, pg_restore, psql…).

use std::collections::{BTreeSet, HashMap};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::harness::*;

const SOURCE_PW: &str = "src-pw-Zt81qv";
const ROTATED_PW: &str = "src-pw-rot-Lm40wd";
const TOKEN: &str = "scan-token-6d1f8a2c93b7";

fn private(path: &std::path::Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// What the process watcher saw: every NUL-separated environment entry
/// and argument, by pid and command name (a process seen again adds its
/// new strings; an `exec` starts a new entry).
#[derive(Default)]
struct Seen {
    processes: HashMap<(u32, String), BTreeSet<String>>,
}

/// `/proc/<pid>/stat`'s parent pid.
fn parent(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(1)?.parse().ok()
}

/// This test's vigil processes (the daemon and the CLI runs: their
/// command line names a config under `dir`) and all their descendants,
/// now; other tests' vigils are not this test's business.
fn vigil_tree(dir: &str) -> Vec<u32> {
    let vigil = PathBuf::from(VIGIL).canonicalize().unwrap();
    let parents: HashMap<u32, u32> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter_map(|pid| Some((pid, parent(pid)?)))
        .collect();
    let is_ours = |pid: u32| {
        std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|exe| exe == vigil)
            && std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(dir))
    };
    parents
        .keys()
        .copied()
        .filter(|&pid| {
            let mut at = pid;
            for _ in 0..32 {
                if is_ours(at) {
                    return true;
                }
                match parents.get(&at) {
                    Some(&p) if p > 1 => at = p,
                    _ => return false,
                }
            }
            false
        })
        .collect()
}

/// Reads the environment and command line of every process in
/// [`vigil_tree`] of the directory in `dir` (once set) every 2 ms until `stop`.
fn watch_processes(stop: Arc<AtomicBool>, dir: Arc<Mutex<Option<String>>>, seen: Arc<Mutex<Seen>>) {
    while !stop.load(Ordering::Relaxed) {
        let Some(dir) = dir.lock().unwrap().clone() else {
            std::thread::sleep(Duration::from_millis(2));
            continue;
        };
        for pid in vigil_tree(&dir) {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            // Gone already (its pid may come back as someone else's).
            if comm.is_empty() {
                continue;
            }
            let mut strings = BTreeSet::new();
            for file in ["environ", "cmdline"] {
                // A process that just ended reads as nothing.
                let bytes = std::fs::read(format!("/proc/{pid}/{file}")).unwrap_or_default();
                strings.extend(
                    bytes
                        .split(|b| *b == 0)
                        .filter(|s| !s.is_empty())
                        .map(|s| String::from_utf8_lossy(s).into_owned()),
                );
            }
            let mut seen = seen.lock().unwrap();
            seen.processes
                .entry((pid, comm.trim().to_owned()))
                .or_default()
                .extend(strings);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn no_secret_reaches_a_log_body_journal_line_or_catalog_row() {
    use age::secrecy::ExposeSecret;
    let source = fresh_db();
    let role = format!("scan_{}", source.name);
    source
        .psql(&format!(
            "CREATE ROLE {role} LOGIN PASSWORD '{SOURCE_PW}'; GRANT pg_read_all_data TO {role};
             CREATE TABLE t AS SELECT g FROM generate_series(1, 100) g;"
        ))
        .unwrap();
    let catalog = fresh_db();
    let dir = tempfile::tempdir().unwrap();
    let identity = age::x25519::Identity::generate();
    let identity_text = identity.to_string().expose_secret().to_owned();
    let key = dir.path().join("age.key");
    private(&key, &format!("{identity_text}\n"));
    let password_file = dir.path().join("orders.password");
    private(&password_file, SOURCE_PW);
    let token_file = dir.path().join("scan.token");
    private(&token_file, TOKEN);
    let extra = format!(
        "[repositories.local]\nscheme = \"fs\"\noptions = {{ root = \"{repo}\" }}\n\
         [repositories.local.encryption]\nrecipients = [\"{recipient}\"]\nidentity_file = \"{key}\"\n\
         [jobs.orders]\nkind = \"postgres\"\nsource = \"postgres://{role}@127.0.0.1:{port}/{db}\"\n\
         password_file = \"{pw}\"\ndatabases = [\"{db}\"]\nrepository = \"local\"\nevery = \"1h\"\ncatch_up = false\n\
         [jobs.broken]\nkind = \"postgres\"\nsource = \"postgres://{role}:{SOURCE_PW}@127.0.0.1:{port}/{db}\"\n\
         databases = [\"no_such_db\"]\nrepository = \"local\"\nevery = \"1h\"\n",
        repo = dir.path().join("repo").display(),
        recipient = identity.to_public(),
        key = key.display(),
        port = source.port,
        db = source.name,
        pw = password_file.display(),
    );
    let options = VigilOptions {
        admin: format!(
            "[[admin.tokens]]\nname = \"scan\"\nrole = \"admin\"\ntoken_file = \"{}\"\n",
            token_file.display()
        ),
        ..Default::default()
    };
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let watched = Arc::new(Mutex::new(None));
    let watcher = {
        let (stop, watched, seen) = (Arc::clone(&stop), Arc::clone(&watched), Arc::clone(&seen));
        std::thread::spawn(move || watch_processes(stop, watched, seen))
    };
    let vigil = Vigil::start_with(&catalog.url(), &extra, options);
    *watched.lock().unwrap() = Some(vigil.dir.display().to_string());
    vigil.wait_ready();
    let auth = format!("Bearer {TOKEN}");
    let api = |method: &str, path: &str| {
        http_with(
            vigil.addr,
            method,
            path,
            &[("Authorization", auth.as_str())],
        )
        .unwrap()
    };
    let mut bodies = Vec::new();
    bodies.push(api("POST", "/api/v1/jobs/orders/backup").body);
    vigil.wait_for("the API's backup", Duration::from_secs(30), || {
        api("GET", "/api/v1/jobs/orders").json()["backups"] == 1
    });
    // A failing run (its error text passes through redaction).
    vigil.wait_for("the broken job to fail", Duration::from_secs(30), || {
        vigil.log_text().contains("backup failed")
    });
    // A rotated source password, applied by a reload.
    source
        .psql(&format!("ALTER ROLE {role} PASSWORD '{ROTATED_PW}'"))
        .unwrap();
    private(&password_file, ROTATED_PW);
    bodies.push(api("POST", "/api/v1/reload").body);
    bodies.push(api("POST", "/api/v1/jobs/orders/backup").body);
    vigil.wait_for("the second backup", Duration::from_secs(30), || {
        api("GET", "/api/v1/jobs/orders").json()["backups"] == 2
    });
    for path in [
        "/api/v1/jobs",
        "/api/v1/jobs/orders/backups",
        "/api/v1/executions",
        "/api/v1/audit",
        "/health/detailed",
        "/health?verbose",
        "/metrics",
        "/",
    ] {
        bodies.push(api("GET", path).body);
    }
    let client = vigil.config_path_with_addr();
    let env = [("TEST_PGPASSWORD", PASSWORD)];
    let target = format!("{}_scan", source.name);
    let to = format!(
        "postgres://postgres:{PASSWORD}@127.0.0.1:{}/{target}",
        source.port
    );
    for args in [
        &["status"][..],
        &["list"],
        &["check-config"],
        &["audit", "show"],
        &["audit", "verify"],
        &["prune", "orders", "--dry-run"],
        &["restore", "orders", "--latest", "--to", &to, "--create"],
        &["backup", "broken"],
    ] {
        let (_, stdout, stderr) = vigil_cli(&client, args, &env);
        bodies.push(stdout);
        bodies.push(stderr);
    }
    stop.store(true, Ordering::Relaxed);
    watcher.join().unwrap();
    let mut journal = String::new();
    for entry in std::fs::read_dir(vigil.dir.join("state/journal")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "jsonl") {
            journal.push_str(&std::fs::read_to_string(path).unwrap());
        }
    }
    let dump = std::process::Command::new(binaries().bin_dir.join("pg_dump"))
        .args(["--data-only", "--schema=vigil", &catalog.url()])
        .env("PGPASSWORD", PASSWORD)
        .output()
        .unwrap();
    assert!(dump.status.success());
    let catalog_rows = String::from_utf8_lossy(&dump.stdout).into_owned();
    assert!(
        catalog_rows.contains("backup.succeeded"),
        "the catalog holds the journal"
    );
    let places = [
        ("daemon log", vigil.log_text()),
        ("journal", journal),
        ("catalog rows", catalog_rows),
        ("bodies and CLI output", bodies.join("\n")),
    ];
    // A short token's digest can be guessed offline: it counts too.
    let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(TOKEN.as_bytes()));
    let secrets = [
        PASSWORD,
        SOURCE_PW,
        ROTATED_PW,
        TOKEN,
        identity_text.as_str(),
        digest.as_str(),
    ];
    let mut scanned = 0;
    for (place, text) in &places {
        scanned += text.len();
        for secret in secrets {
            assert!(!text.contains(secret), "a secret reached the {place}");
        }
    }
    let seen = seen.lock().unwrap();
    let mut commands = BTreeSet::new();
    for ((pid, comm), strings) in &seen.processes {
        commands.insert(comm.as_str());
        for text in strings {
            // The test hands vigil the catalog password in this variable
            // and the restore target's in `--to`: the operator's choice,
            // inherited or passed, never vigil's doing.
            if text == &format!("TEST_PGPASSWORD={PASSWORD}") || (comm == "vigil" && text == &to) {
                continue;
            }
            for secret in secrets {
                assert!(
                    !text.contains(secret),
                    "a secret reached the environment or command line of {comm} (pid {pid})"
                );
            }
        }
    }
    // The tools live for milliseconds here: a loaded host may hide some.
    assert!(
        ["pg_dump", "pg_restore", "psql"]
            .iter()
            .any(|tool| commands.contains(tool)),
        "the watcher never saw a tool vigil ran: {commands:?}"
    );
    println!(
        "secret scan: {scanned} bytes in {} places, {} secrets, 0 hits",
        places.len(),
        secrets.len()
    );
    println!(
        "process scan: {} processes ({}), environment and command line, 0 hits",
        seen.processes.len(),
        commands.into_iter().collect::<Vec<_>>().join(", ")
    );
}
