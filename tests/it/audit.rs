//! The audit journal and the operator API against a running daemon.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::harness::{
    PASSWORD, Response, TestDb, Vigil, VigilOptions, fresh_catalog, fresh_db, http_with,
    own_cluster, vigil_cli,
};

const ENV: [(&str, &str); 1] = [("TEST_PGPASSWORD", PASSWORD)];
const VIEWER: &str = "viewer-token-0d5c2f8e1a";
const OPERATOR: &str = "operator-token-77b1e0c4d2";
const ADMIN: &str = "admin-token-3fa9c61b05";

fn sha(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Three tokens (the admin's from a file): the `[admin]` lines.
fn admin_lines(dir: &Path) -> String {
    let admin_file = dir.join("admin.token");
    std::fs::write(&admin_file, format!("{ADMIN}\n")).unwrap();
    format!(
        "trusted_proxies = [\"10.0.0.0/8\"]\nauth_failures_per_minute = 20\n\
         [[admin.tokens]]\nname = \"grafana\"\nrole = \"viewer\"\ntoken_sha256 = \"{}\"\n\
         [[admin.tokens]]\nname = \"deployer\"\nrole = \"operator\"\ntoken_sha256 = \"{}\"\n\
         [[admin.tokens]]\nname = \"oncall\"\nrole = \"admin\"\ntoken_file = \"{}\"\n",
        sha(VIEWER),
        sha(OPERATOR),
        admin_file.display(),
    )
}

/// A job `orders` backing up a fresh database into an fs repository.
fn job_config(dir: &Path, source: &TestDb, extra: &str) -> String {
    format!(
        "[repositories.local]\nscheme = \"fs\"\noptions = {{ root = \"{}\" }}\n\
         [jobs.orders]\nkind = \"postgres\"\nsource = \"{}\"\npassword = \"${{TEST_PGPASSWORD}}\"\ndatabases = [\"{}\"]\n\
         repository = \"local\"\nevery = \"1h\"\ncatch_up = false\n{extra}",
        dir.join("repo").display(),
        source.url(),
        source.name,
    )
}

fn start(catalog_url: &str, source: &TestDb, extra: &str) -> Vigil {
    let dir = tempfile::tempdir().unwrap().keep();
    let options = VigilOptions {
        admin: admin_lines(&dir),
        ..Default::default()
    };
    let vigil = Vigil::start_with(catalog_url, &job_config(&dir, source, extra), options);
    vigil.wait_ready();
    vigil
}

fn call(addr: SocketAddr, method: &str, path: &str, token: Option<&str>) -> Response {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("User-Agent", "vigil-it/1")];
    if let Some(a) = &auth {
        headers.push(("Authorization", a.as_str()));
    }
    http_with(addr, method, path, &headers).unwrap()
}

fn journal_dir(vigil: &Vigil) -> std::path::PathBuf {
    vigil.dir.join("state").join("journal")
}

fn journal_text(vigil: &Vigil) -> String {
    let mut text = String::new();
    for entry in std::fs::read_dir(journal_dir(vigil)).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "jsonl") {
            text.push_str(&std::fs::read_to_string(path).unwrap());
        }
    }
    text
}

fn records(vigil: &Vigil, event: &str) -> Vec<serde_json::Value> {
    let (code, stdout, stderr) = vigil_cli(
        &vigil.config_path_with_addr(),
        &["audit", "show", "--event", event, "--json"],
        &ENV,
    );
    assert_eq!(code, 0, "{stderr}");
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn verify(vigil: &Vigil) -> (i32, String) {
    let (code, stdout, stderr) =
        vigil_cli(&vigil.config_path_with_addr(), &["audit", "verify"], &ENV);
    (code, format!("{stdout}{stderr}"))
}

#[test]
fn roles_hold_for_every_endpoint_and_every_call_is_journalled() {
    let source = fresh_db();
    source.psql("CREATE TABLE t AS SELECT 1 AS x").unwrap();
    let catalog = fresh_catalog();
    let vigil = start(
        &catalog.url(),
        &source,
        "[jobs.orders.retention]\nkeep_last = 5\n",
    );
    let addr = vigil.addr;

    // (method, path, least role: 0 viewer, 1 operator, 2 admin)
    let endpoints = [
        ("GET", "/api/v1/jobs", 0),
        ("GET", "/api/v1/jobs/orders", 0),
        ("GET", "/api/v1/jobs/orders/backups", 0),
        ("GET", "/api/v1/executions?job=orders&limit=5", 0),
        ("POST", "/api/v1/jobs/orders/prune?dry_run=true", 1),
        ("POST", "/api/v1/jobs/orders/backup", 1),
        ("POST", "/api/v1/reload", 2),
        ("GET", "/api/v1/audit?since_seq=0&limit=10", 2),
    ];
    let tokens = [(VIEWER, 0), (OPERATOR, 1), (ADMIN, 2)];
    let mut bodies = String::new();
    for (method, path, least) in endpoints {
        for token in [None, Some("not-a-token")] {
            let r = call(addr, method, path, token);
            assert_eq!(r.status, 401, "{method} {path} with {token:?}: {}", r.body);
            assert!(
                r.headers
                    .to_lowercase()
                    .contains("www-authenticate: bearer")
            );
            bodies.push_str(&r.body);
        }
        for (token, rank) in tokens {
            let r = call(addr, method, path, Some(token));
            bodies.push_str(&r.body);
            if rank < least {
                assert_eq!(r.status, 403, "{method} {path} as rank {rank}: {}", r.body);
                let error = &r.json()["error"];
                assert_eq!(error["code"], "forbidden");
                assert!(error["requestId"].as_str().is_some_and(|id| !id.is_empty()));
            } else {
                // A second backup request may find the first still running.
                let ok = (200..300).contains(&r.status)
                    || (path.ends_with("/backup") && r.status == 409);
                assert!(
                    ok,
                    "{method} {path} as rank {rank}: {} {}",
                    r.status, r.body
                );
            }
        }
    }
    let jobs = call(addr, "GET", "/api/v1/jobs", Some(VIEWER)).json();
    assert_eq!(jobs["jobs"][0]["name"], "orders");
    let unknown = call(addr, "GET", "/api/v1/jobs/nope", Some(VIEWER));
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.json()["error"]["code"], "no_such_job");
    let wrong_method = call(addr, "GET", "/api/v1/reload", Some(ADMIN));
    assert_eq!(wrong_method.status, 405);

    // Request ids: a well-formed one is echoed, anything else replaced.
    let r = http_with(
        addr,
        "GET",
        "/api/v1/jobs",
        &[
            ("Authorization", &format!("Bearer {VIEWER}")),
            ("X-Request-Id", "it-req-42"),
            ("X-Forwarded-For", "203.0.113.9"),
        ],
    )
    .unwrap();
    assert!(
        r.headers.contains("x-request-id: it-req-42"),
        "{}",
        r.headers
    );
    let r = http_with(
        addr,
        "GET",
        "/api/v1/jobs",
        &[
            ("Authorization", &format!("Bearer {VIEWER}")),
            ("X-Request-Id", "bad id;drop"),
        ],
    )
    .unwrap();
    assert!(!r.headers.contains("bad id"), "{}", r.headers);

    // The backup the operator started finishes and is journalled with its actor.
    vigil.wait_for("the API-triggered backup", Duration::from_secs(30), || {
        call(addr, "GET", "/api/v1/jobs/orders", Some(VIEWER)).json()["backups"] == 1
    });
    let backups = call(addr, "GET", "/api/v1/jobs/orders/backups", Some(VIEWER)).json();
    let head = &backups["backups"][0]["journalHead"];
    assert!(
        head["seq"].as_u64().unwrap() > 0,
        "manifest anchors the journal head: {backups}"
    );
    let executions = call(
        addr,
        "GET",
        "/api/v1/executions?job=orders&kind=backup",
        Some(VIEWER),
    )
    .json();
    assert_eq!(executions["executions"][0]["trigger"], "api");

    // Every call, allowed or denied, is an `api.request` event.
    let calls = records(&vigil, "api.request");
    let denied: Vec<_> = calls
        .iter()
        .filter(|r| r["data"]["outcome"] == "forbidden")
        .collect();
    assert_eq!(denied.len(), 3 + 2 + 1, "viewer×4 read-only… {denied:?}");
    let unauthenticated = calls
        .iter()
        .filter(|r| r["data"]["outcome"] == "unauthenticated")
        .count();
    // Refusals from one address are journalled once a minute (the next
    // record carries the count of those that were not).
    assert_eq!(unauthenticated, 1, "{calls:?}");
    let reload_denied = denied
        .iter()
        .find(|r| r["data"]["path"] == "/api/v1/reload" && r["actor"]["name"] == "deployer")
        .expect("the operator's reload attempt is journalled");
    assert_eq!(reload_denied["actor"]["role"], "operator");
    assert_eq!(reload_denied["data"]["permission"], "config:reload");
    assert_eq!(reload_denied["data"]["user_agent"], "vigil-it/1");
    // A forged X-Forwarded-For from an untrusted peer is ignored.
    let tagged = calls
        .iter()
        .find(|r| r["request_id"] == "it-req-42")
        .expect("the request id is journalled");
    assert_eq!(tagged["data"]["ip"], "127.0.0.1");
    let started = records(&vigil, "backup.started");
    assert_eq!(started[0]["actor"]["name"], "deployer");
    assert_eq!(
        records(&vigil, "config.reloaded")[0]["actor"]["name"],
        "oncall"
    );

    // Brute force: wrong tokens per IP are limited (20 a minute here; the 8
    // `not-a-token` calls above count, the 8 without a header do not).
    let statuses: Vec<u16> = (0..13)
        .map(|_| call(addr, "GET", "/api/v1/jobs", Some("guess")).status)
        .collect();
    assert_eq!(statuses[..12], [401; 12], "{statuses:?}");
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");

    // Tokens and passwords reach no log line, journal line or API body.
    let journal = journal_text(&vigil);
    for secret in [VIEWER, OPERATOR, ADMIN, PASSWORD] {
        assert!(!vigil.log_text().contains(secret), "{secret} in the log");
        assert!(!journal.contains(secret), "{secret} in the journal");
        assert!(!bodies.contains(secret), "{secret} in an API body");
    }

    // The catalog receives every record once, and the whole thing verifies.
    let lines = journal.lines().count();
    vigil.wait_for(
        "the catalog to hold the journal",
        Duration::from_secs(10),
        || {
            catalog
                .psql("SELECT count(*) FROM vigil.audit_log")
                .is_ok_and(|n| n.trim().parse::<usize>().unwrap_or(0) >= lines)
        },
    );
    let (code, out) = verify(&vigil);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("OK"), "{out}");
}

/// Makes the journal unwritable for everyone, root included.
fn freeze(dir: &Path, frozen: bool) {
    let mut paths = vec![dir.to_owned()];
    for entry in std::fs::read_dir(dir).unwrap() {
        paths.push(entry.unwrap().path());
    }
    let flag = if frozen { "+i" } else { "-i" };
    let status = std::process::Command::new("chattr")
        .arg(flag)
        .args(&paths)
        .status()
        .expect("chattr (e2fsprogs) is installed by tests/run.sh");
    assert!(status.success(), "chattr {flag} failed");
}

#[test]
fn an_unwritable_journal_refuses_prune_but_backups_go_on() {
    let source = fresh_db();
    source.psql("CREATE TABLE t AS SELECT 1 AS x").unwrap();
    let catalog = fresh_catalog();
    let vigil = start(
        &catalog.url(),
        &source,
        "[jobs.orders.retention]\nkeep_last = 1\nafter_backup = false\n[journal]\nqueue_capacity = 2\n",
    );
    let addr = vigil.addr;
    let backups = || {
        call(addr, "GET", "/api/v1/jobs/orders", Some(VIEWER)).json()["backups"]
            .as_u64()
            .unwrap()
    };
    for n in 1..=2 {
        assert_eq!(
            call(addr, "POST", "/api/v1/jobs/orders/backup", Some(OPERATOR)).status,
            202
        );
        vigil.wait_for("a backup", Duration::from_secs(30), || backups() == n);
        std::thread::sleep(Duration::from_millis(1100));
    }

    let dir = journal_dir(&vigil);
    freeze(&dir, true);
    let unfreeze = scopeguard(|| freeze(&dir, false));
    // The next event finds the journal unwritable.
    call(addr, "GET", "/api/v1/jobs", Some(VIEWER));
    vigil.wait_for("journal:writable to fail", Duration::from_secs(5), || {
        vigil.get("/health/detailed").json()["checks"]["journal:writable"][0]["status"] == "fail"
    });
    let refused = call(
        addr,
        "POST",
        "/api/v1/jobs/orders/prune?dry_run=false",
        Some(OPERATOR),
    );
    assert_eq!(refused.status, 503, "{}", refused.body);
    let message = refused.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        message.contains("audit journal cannot be written"),
        "{message}"
    );
    assert_eq!(backups(), 2, "nothing was deleted");

    // Backups go on, their events held (and some lost to the small queue).
    assert_eq!(
        call(addr, "POST", "/api/v1/jobs/orders/backup", Some(OPERATOR)).status,
        202
    );
    vigil.wait_for(
        "a backup while the journal is frozen",
        Duration::from_secs(30),
        || backups() == 3,
    );
    let metrics = vigil.get("/metrics").body;
    let failures = metrics
        .lines()
        .find_map(|l| l.strip_prefix("vigil_audit_write_failures_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap();
    assert!(failures >= 1.0, "{metrics}");

    drop(unfreeze);
    vigil.wait_for(
        "journal:writable to pass again",
        Duration::from_secs(5),
        || {
            vigil.get("/health/detailed").json()["checks"]["journal:writable"][0]["status"]
                == "pass"
        },
    );
    let outage = records(&vigil, "journal.unwritable");
    assert_eq!(
        outage.len(),
        1,
        "the outage itself is journalled: {outage:?}"
    );
    let gaps = records(&vigil, "journal.gap");
    assert_eq!(gaps.len(), 1, "{gaps:?}");
    assert!(gaps[0]["data"]["lost"].as_u64().unwrap() >= 1);
    let succeeded = records(&vigil, "backup.succeeded");
    assert!(!succeeded.is_empty());

    // Writable again: the prune goes through, and the journal verifies.
    let pruned = call(
        addr,
        "POST",
        "/api/v1/jobs/orders/prune?dry_run=false",
        Some(OPERATOR),
    );
    assert_eq!(pruned.status, 200, "{}", pruned.body);
    assert_eq!(pruned.json()["deleted"].as_array().unwrap().len(), 2);
    let planned = records(&vigil, "prune.planned");
    assert!(planned.iter().any(|r| r["data"]["dry_run"] == false));
    assert_eq!(records(&vigil, "prune.deleted").len(), 1);
    let (code, out) = verify(&vigil);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn the_catalog_catches_up_after_an_outage_with_every_record_once() {
    let mut cluster = own_cluster();
    cluster.psql("postgres", "CREATE DATABASE audit").unwrap();
    let source = fresh_db();
    let vigil = start(
        &cluster.url("audit"),
        &source,
        "[journal]\ncheckpoint_interval = \"1s\"\n",
    );
    fn count(cluster: &vigil::cli::pgcluster::Cluster, sql: &str) -> Option<usize> {
        cluster
            .psql("audit", sql)
            .ok()
            .and_then(|n| n.trim().parse().ok())
    }
    cluster.stop().unwrap();
    // Events while the catalog is down: API calls and checkpoints.
    for _ in 0..20 {
        assert_eq!(
            call(vigil.addr, "GET", "/api/v1/jobs", Some(VIEWER)).status,
            200
        );
    }
    std::thread::sleep(Duration::from_secs(3));
    cluster.start().unwrap();
    let restarted = std::time::Instant::now();
    let lines = journal_text(&vigil).lines().count();
    vigil.wait_for("the catalog to catch up", Duration::from_secs(40), || {
        count(&cluster, "SELECT count(*) FROM vigil.audit_log").is_some_and(|n| n >= lines)
    });
    let rows = count(&cluster, "SELECT count(*) FROM vigil.audit_log").unwrap();
    // bench/RELIABILITY.md quotes this line.
    println!(
        "audit catch-up: {rows} journal records in the catalog {:?} after it restarted",
        restarted.elapsed()
    );
    let distinct = count(
        &cluster,
        "SELECT count(DISTINCT (journal, seq)) FROM vigil.audit_log",
    )
    .unwrap();
    assert_eq!(rows, distinct, "every record once");
    let shipped_calls = count(
        &cluster,
        "SELECT count(*) FROM vigil.audit_log WHERE action = 'api.request'",
    )
    .unwrap();
    assert!(shipped_calls >= 20, "{shipped_calls}");
    let (code, out) = verify(&vigil);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("catalog rows compared"), "{out}");
}

#[test]
fn a_full_journal_disk_refuses_prune_but_backups_go_on() {
    let source = fresh_db();
    source.psql("CREATE TABLE t AS SELECT 1 AS x").unwrap();
    let catalog = fresh_catalog();
    let disk = crate::disk_full::Tmpfs::mount("1m");
    let journal = disk.0.path().join("journal");
    let vigil = start(
        &catalog.url(),
        &source,
        &format!(
            "[jobs.orders.retention]\nkeep_last = 1\nafter_backup = false\n[journal]\ndir = \"{}\"\n",
            journal.display()
        ),
    );
    let addr = vigil.addr;
    let backups = || {
        call(addr, "GET", "/api/v1/jobs/orders", Some(VIEWER)).json()["backups"]
            .as_u64()
            .unwrap()
    };
    let backup = |n: u64| {
        assert_eq!(
            call(addr, "POST", "/api/v1/jobs/orders/backup", Some(OPERATOR)).status,
            202
        );
        vigil.wait_for("a backup", Duration::from_secs(30), || backups() == n);
    };
    backup(1);
    std::thread::sleep(Duration::from_millis(1100));
    backup(2);
    // Fill the journal's filesystem.
    let filler = disk.0.path().join("filler");
    let _ = std::fs::write(&filler, vec![0u8; 2 << 20]);
    // Calls are journalled: once the segment's last page is full, ENOSPC.
    vigil.wait_for("journal:writable to fail", Duration::from_secs(10), || {
        call(addr, "GET", "/api/v1/jobs", Some(VIEWER));
        vigil.get("/health/detailed").json()["checks"]["journal:writable"][0]["status"] == "fail"
    });
    let output = vigil.get("/health/detailed").json()["checks"]["journal:writable"][0]["output"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        output.contains("No space left") || output.contains("bytes free on the filesystem of"),
        "{output}"
    );
    let refused = call(
        addr,
        "POST",
        "/api/v1/jobs/orders/prune?dry_run=false",
        Some(OPERATOR),
    );
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert_eq!(backups(), 2, "nothing was deleted");
    // Backups go on.
    std::thread::sleep(Duration::from_millis(1100));
    backup(3);
    // Space again: the journal catches up and the prune goes through.
    std::fs::remove_file(&filler).unwrap();
    vigil.wait_for(
        "journal:writable to pass again",
        Duration::from_secs(10),
        || {
            vigil.get("/health/detailed").json()["checks"]["journal:writable"][0]["status"]
                == "pass"
        },
    );
    assert_eq!(records(&vigil, "journal.unwritable").len(), 1);
    assert!(!records(&vigil, "backup.succeeded").is_empty());
    let pruned = call(
        addr,
        "POST",
        "/api/v1/jobs/orders/prune?dry_run=false",
        Some(OPERATOR),
    );
    assert!(pruned.status < 300, "{}", pruned.body);
}

/// Runs `f` on drop, so a failing assertion still unfreezes the journal.
fn scopeguard(f: impl FnOnce()) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(f))
}

/// A stand-in for Loki's push endpoint (no Loki server is installable here):
/// answers the first push 503, later ones 204, and keeps the bodies.
fn fake_loki() -> (
    SocketAddr,
    std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let pushes = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = std::sync::Arc::clone(&pushes);
    std::thread::spawn(move || {
        for (n, stream) in listener.incoming().enumerate() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            let _ = reader.read_line(&mut request_line);
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            let status = if n == 0 {
                "503 Service Unavailable"
            } else {
                "204 No Content"
            };
            if n > 0 && request_line.starts_with("POST /loki/api/v1/push ") {
                sink.lock()
                    .unwrap()
                    .push(serde_json::from_slice(&body).unwrap());
            }
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            );
        }
    });
    (addr, pushes)
}

#[test]
fn unauthenticated_floods_cost_no_journal_records() {
    let source = fresh_db();
    let catalog = fresh_db();
    let vigil = start(&catalog.url(), &source, "");
    let addr = vigil.addr;
    let before = journal_text(&vigil).lines().count();
    for n in 0..300 {
        let path = format!("/api/v1/no-such-thing-{n}");
        assert_eq!(call(addr, "GET", &path, None).status, 404);
        assert_eq!(call(addr, "DELETE", "/api/v1/jobs", None).status, 405);
        assert_eq!(call(addr, "GET", "/api/v1/jobs", None).status, 401);
    }
    // The same mistakes by a token holder are journalled, one by one.
    assert_eq!(
        call(addr, "GET", "/api/v1/no-such-thing", Some(VIEWER)).status,
        404
    );
    assert_eq!(
        call(addr, "DELETE", "/api/v1/jobs", Some(VIEWER)).status,
        405
    );
    vigil.wait_for("the token holder's calls", Duration::from_secs(5), || {
        records(&vigil, "api.request")
            .iter()
            .any(|r| r["data"]["outcome"] == "method_not_allowed")
    });
    let calls = records(&vigil, "api.request");
    let by_token = calls
        .iter()
        .filter(|r| r["data"]["token"] == "grafana")
        .count();
    assert_eq!(by_token, 2, "{calls:?}");
    let anonymous: Vec<_> = calls
        .iter()
        .filter(|r| r["data"]["token"].is_null())
        .collect();
    assert_eq!(
        anonymous.len(),
        1,
        "900 refusals, one record: {anonymous:?}"
    );
    assert_eq!(anonymous[0]["data"]["outcome"], "unauthenticated");
    let added = journal_text(&vigil).lines().count() - before;
    assert!(added <= 4, "{added} journal records for a flood");
    assert!(
        !vigil.log_text().contains("no-such-thing-299"),
        "unauthenticated 404s are logged at debug only"
    );
}

#[test]
fn records_are_pushed_to_loki_with_retries() {
    let (loki, pushes) = fake_loki();
    let source = fresh_db();
    let catalog = fresh_catalog();
    let vigil = start(
        &catalog.url(),
        &source,
        &format!("[journal]\nloki_url = \"http://{loki}\"\n[journal.loki_labels]\nenv = \"it\"\n"),
    );
    // A first start ships from the head on: this call's event is pushed
    // (after the stand-in refused the first push).
    call(vigil.addr, "GET", "/api/v1/jobs", Some(VIEWER));
    let pushed_call = || {
        pushes.lock().unwrap().iter().find_map(|p| {
            let stream = &p["streams"][0];
            stream["values"].as_array()?.iter().find_map(|v| {
                let record: serde_json::Value = serde_json::from_str(v[1].as_str()?).ok()?;
                (record["event"] == "api.request")
                    .then(|| (stream["stream"].clone(), v[0].clone(), record))
            })
        })
    };
    vigil.wait_for(
        "Loki to receive the API call",
        Duration::from_secs(15),
        || pushed_call().is_some(),
    );
    let (labels, ts, record) = pushed_call().unwrap();
    assert_eq!(labels["job"], "vigil");
    assert_eq!(labels["env"], "it");
    assert!(
        ts.as_str().unwrap().parse::<u128>().is_ok(),
        "nanosecond timestamp: {ts}"
    );
    assert_eq!(record["actor"]["name"], "grafana");
    vigil.wait_for("the Loki lag to reach 0", Duration::from_secs(10), || {
        vigil
            .get("/metrics")
            .body
            .contains("vigil_audit_ship_lag_events{sink=\"loki\"} 0")
    });
    assert!(std::fs::read_to_string(journal_dir(&vigil).join("loki.cursor")).is_ok());
}

#[test]
fn protect_detailed_puts_the_details_behind_a_viewer_token() {
    let source = fresh_db();
    let catalog = fresh_catalog();
    let dir = tempfile::tempdir().unwrap().keep();
    let options = VigilOptions {
        admin: format!("protect_detailed = true\n{}", admin_lines(&dir)),
        ..Default::default()
    };
    let vigil = Vigil::start_with(&catalog.url(), &job_config(&dir, &source, ""), options);
    vigil.wait_ready();
    assert_eq!(vigil.get("/health").status, 200, "probes stay open");
    assert_eq!(vigil.get("/metrics").status, 200);
    for path in ["/health/detailed", "/"] {
        assert_eq!(vigil.get(path).status, 401, "{path}");
        let bearer = format!("Bearer {VIEWER}");
        let r = http_with(vigil.addr, "GET", path, &[("Authorization", &bearer)]).unwrap();
        assert_eq!(r.status, 200, "{path}");
    }
}

/// The journal's lines as records, oldest first (one segment in these tests).
fn journal_records(vigil: &Vigil) -> Vec<vigil::core::journal_record::Record> {
    journal_text(vigil)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// What a forger with write access does: re-chains every record from the
/// first, fixing each checkpoint's `head`, so the chain holds on its own.
fn rechain(records: &mut [vigil::core::journal_record::Record]) {
    let mut prev: Option<(u64, String)> = None;
    for r in records.iter_mut() {
        if let Some((seq, hash)) = &prev {
            r.prev = hash.clone();
            if r.event == "journal.checkpoint" {
                r.data["head"] = serde_json::json!({ "seq": seq, "hash": hash });
            }
        }
        r.hash = r.compute_hash();
        prev = Some((r.seq, r.hash.clone()));
    }
}

/// Replaces the journal files with `records` in one segment.
fn write_journal(vigil: &Vigil, records: &[vigil::core::journal_record::Record]) {
    let dir = journal_dir(vigil);
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "jsonl") {
            std::fs::remove_file(path).unwrap();
        }
    }
    let bytes: Vec<u8> = records
        .iter()
        .flat_map(vigil::core::journal_record::encode_line)
        .collect();
    std::fs::write(dir.join("journal-000001.jsonl"), bytes).unwrap();
}

fn verify_with(vigil: &Vigil, args: &[&str]) -> (i32, String) {
    let mut all = vec!["audit", "verify"];
    all.extend_from_slice(args);
    let (code, stdout, stderr) = vigil_cli(&vigil.config_path_with_addr(), &all, &ENV);
    (code, format!("{stdout}{stderr}"))
}

/// Runs one backup through the API and stops the daemon (SIGTERM).
fn backup_and_stop(vigil: &mut Vigil) {
    assert_eq!(
        call(
            vigil.addr,
            "POST",
            "/api/v1/jobs/orders/backup",
            Some(OPERATOR)
        )
        .status,
        202
    );
    vigil.wait_for("the backup", Duration::from_secs(30), || {
        call(vigil.addr, "GET", "/api/v1/jobs/orders", Some(VIEWER)).json()["backups"] == 1
    });
    vigil.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(vigil.wait_exit(Duration::from_secs(30)).success());
}

/// Shipped defaults (no signing key): every way of swapping the journal
/// that the old verify let pass now fails, naming what differs.
#[test]
fn a_swapped_or_rewritten_journal_fails_verify_with_the_shipped_defaults() {
    let catalog = fresh_catalog();
    let source = fresh_db();
    let mut vigil = start(&catalog.url(), &source, "");
    backup_and_stop(&mut vigil);
    let original = journal_records(&vigil);
    let id = original[0].journal.clone();

    // The stop itself reached the catalog before the daemon exited.
    let stopping = catalog
        .psql("SELECT count(*) FROM vigil.audit_log WHERE action = 'daemon.stopping'")
        .unwrap();
    assert_eq!(stopping.trim(), "1", "daemon.stopping shipped at exit");
    let pinned = catalog
        .psql("SELECT journal FROM vigil.journal_pin")
        .unwrap();
    assert_eq!(
        pinned.trim(),
        id,
        "the shipper pins this instance's journal"
    );
    let (code, out) = verify(&vigil);
    assert_eq!(code, 0, "{out}");

    // Every record rewritten under a new id and re-hashed.
    let forged_id = "0badbeef-0000-4000-8000-000000000001";
    let mut forged = original.clone();
    forged.iter_mut().for_each(|r| r.journal = forged_id.into());
    rechain(&mut forged);
    write_journal(&vigil, &forged);
    let (code, out) = verify(&vigil);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(forged_id) && out.contains(&id),
        "names both ids: {out}"
    );
    assert!(out.contains("journal_pin"), "the pin catches it too: {out}");

    // The tail re-hashed (same id): the catalog's copy holds the truth.
    let mut forged = original.clone();
    let last = forged.len() - 1;
    forged[last - 1].data["tampered"] = serde_json::json!(true);
    rechain(&mut forged);
    write_journal(&vigil, &forged);
    let (code, out) = verify(&vigil);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("differs"), "{out}");

    // Local files wiped, and another instance's journal is newer in the
    // catalog: --from-catalog verifies this instance's pinned journal.
    let other = vigil::core::journal_record::Record::next(
        "0badbeef-0000-4000-8000-000000000002",
        None,
        vigil::core::journal_record::Entry::at(
            chrono::Utc::now(),
            "daemon.started",
            vigil::core::journal_record::Actor::daemon(),
            serde_json::json!({}),
        ),
    );
    let line = String::from_utf8(vigil::core::journal_record::encode_line(&other)).unwrap();
    catalog
        .psql(&format!(
            "INSERT INTO vigil.audit_log (journal, seq, ts, actor, action, hash, prev_hash, record) \
             VALUES ('{}', 1, now(), 'daemon:daemon', 'daemon.started', '{}', '{}', '{}')",
            other.journal,
            other.hash,
            other.prev,
            line.trim_end().replace('\'', "''")
        ))
        .unwrap();
    write_journal(&vigil, &[]);
    std::fs::remove_file(journal_dir(&vigil).join("journal-000001.jsonl")).unwrap();
    let (code, out) = verify_with(&vigil, &["--from-catalog"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("journal {id}")), "{out}");

    // A catalog row altered and the catalog re-chained from it: the local
    // files disagree.
    write_journal(&vigil, &original);
    let mut rows = original.clone();
    rows[2].data["tampered"] = serde_json::json!(true);
    rechain(&mut rows);
    let mut sql = String::from("ALTER TABLE vigil.audit_log DISABLE TRIGGER USER;");
    for r in &rows[2..] {
        let line = String::from_utf8(vigil::core::journal_record::encode_line(r)).unwrap();
        sql.push_str(&format!(
            "UPDATE vigil.audit_log SET record = '{}', hash = '{}', prev_hash = '{}' WHERE journal = '{id}' AND seq = {};",
            line.trim_end().replace('\'', "''"),
            r.hash,
            r.prev,
            r.seq
        ));
    }
    catalog.psql(&sql).unwrap();
    let (code, out) = verify_with(&vigil, &["--from-catalog"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("differs from the local journal file"), "{out}");
}

/// `journal.signing_key_file`: checkpoints are signed, `--public-key`
/// checks them, and a forger without the private key is caught even where
/// every other check holds.
#[test]
fn signed_checkpoints_catch_forgeries_made_without_the_key() {
    use std::os::unix::fs::PermissionsExt;
    let keys = tempfile::tempdir().unwrap();
    let private = keys.path().join("journal.key");
    let public = keys.path().join("journal.key.pub");
    let nowhere = keys.path().join("none.toml");
    let (code, out, err) = vigil_cli(
        &nowhere,
        &["audit", "keygen", private.to_str().unwrap()],
        &[],
    );
    assert_eq!(code, 0, "{out}{err}");
    let mode = std::fs::metadata(&private).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the private key is created 0600");
    assert!(
        std::fs::read_to_string(&public)
            .unwrap()
            .contains("BEGIN PUBLIC KEY")
    );
    let (code, _, err) = vigil_cli(
        &nowhere,
        &["audit", "keygen", private.to_str().unwrap()],
        &[],
    );
    assert_eq!(code, 64, "a key is never overwritten: {err}");

    let catalog = fresh_catalog();
    let source = fresh_db();
    let mut vigil = start(
        &catalog.url(),
        &source,
        &format!(
            "[journal]\ncheckpoint_interval = \"1s\"\nsigning_key_file = \"{}\"\n",
            private.display()
        ),
    );
    std::thread::sleep(Duration::from_millis(2500));
    backup_and_stop(&mut vigil);
    let public_arg = public.to_str().unwrap();
    let (code, out) = verify_with(&vigil, &["--public-key", public_arg]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("checkpoint signatures verified"), "{out}");
    let (code, out) = verify_with(&vigil, &["--from-catalog", "--public-key", public_arg]);
    assert_eq!(code, 0, "the catalog's copy is signed too: {out}");
    assert!(out.contains("checkpoint signatures verified"), "{out}");
    let (code, out) = verify(&vigil);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("--public-key was not given"), "{out}");

    // Another key does not vouch for these checkpoints.
    let other = keys.path().join("other.key");
    assert_eq!(
        vigil_cli(&nowhere, &["audit", "keygen", other.to_str().unwrap()], &[]).0,
        0
    );
    let other_public = keys.path().join("other.key.pub");
    let (code, out) = verify_with(&vigil, &["--public-key", other_public.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("does not verify"), "{out}");

    // A checkpoint forged after the shipped records: the chain, the
    // catalog (an unshipped tail) and the anchors all hold; only the
    // missing signature gives it away.
    let original = journal_records(&vigil);
    let last = original.last().unwrap();
    let forged_checkpoint = vigil::core::journal_record::Record::next(
        &last.journal,
        Some((last.seq, &last.hash)),
        vigil::core::journal_record::Entry::at(
            chrono::Utc::now(),
            "journal.checkpoint",
            vigil::core::journal_record::Actor::daemon(),
            serde_json::json!({
                "head": { "seq": last.seq, "hash": last.hash },
                "interval_s": 1,
                "segment": "journal-000001.jsonl",
            }),
        ),
    );
    let mut forged = original.clone();
    forged.push(forged_checkpoint);
    write_journal(&vigil, &forged);
    let (code, out) = verify(&vigil);
    assert_eq!(code, 0, "without the key the forgery passes: {out}");
    let (code, out) = verify_with(&vigil, &["--public-key", public_arg]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("no signature"), "{out}");
}

/// The catalog's processes: the postmaster (first line of postmaster.pid)
/// and its children.
fn cluster_pids(cluster: &vigil::cli::pgcluster::Cluster) -> Vec<nix::unistd::Pid> {
    let pidfile = std::fs::read_to_string(cluster.data_dir().join("postmaster.pid")).unwrap();
    let postmaster: i32 = pidfile.lines().next().unwrap().trim().parse().unwrap();
    let mut pids = vec![postmaster];
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        // `pid (comm) state ppid ...`: comm may hold spaces, so split after ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<i32>().ok());
        if ppid == Some(postmaster) {
            pids.push(pid);
        }
    }
    pids.into_iter().map(nix::unistd::Pid::from_raw).collect()
}

/// A hung catalog (its processes stopped) delays the exit by the final
/// ship's bound, not forever.
#[test]
fn a_hung_catalog_delays_the_stop_by_the_final_ships_bound_only() {
    use nix::sys::signal::{Signal, kill};
    let cluster = own_cluster();
    cluster.psql("postgres", "CREATE DATABASE audit").unwrap();
    let source = fresh_db();
    let mut vigil = start(&cluster.url("audit"), &source, "");
    let pids = cluster_pids(&cluster);
    pids.iter().for_each(|p| kill(*p, Signal::SIGSTOP).unwrap());
    let resume = scopeguard(move || {
        pids.iter().for_each(|p| {
            let _ = kill(*p, Signal::SIGCONT);
        })
    });
    let started = std::time::Instant::now();
    vigil.signal(Signal::SIGTERM);
    let status = vigil.wait_exit(Duration::from_secs(30));
    let took = started.elapsed();
    println!("stop with a hung catalog: {:.2} s", took.as_secs_f64());
    assert!(status.success(), "{}", vigil.log_text());
    assert!(took < Duration::from_secs(12), "took {took:?}");
    assert!(
        vigil.log_text().contains("last audit records"),
        "{}",
        vigil.log_text()
    );
    drop(resume);
}

/// A pin left by an earlier journal of this instance: the shipper says so
/// at start and `audit verify` fails naming both ids, the daemon goes on.
#[test]
fn a_journal_started_under_another_pin_is_logged_and_fails_verify() {
    let catalog = fresh_catalog();
    let earlier = "0badbeef-0000-4000-8000-000000000003";
    catalog
        .psql(&format!(
            "INSERT INTO vigil.journal_pin (instance, journal) VALUES ('{}', '{earlier}')",
            vigil::jobs::host::hostname().replace('\'', "''")
        ))
        .unwrap();
    let source = fresh_db();
    let vigil = start(&catalog.url(), &source, "");
    vigil.wait_for_log(
        "pins this instance to another audit journal",
        Duration::from_secs(20),
    );
    let (code, out) = verify(&vigil);
    assert_eq!(code, 1, "{out}");
    let id = journal_records(&vigil)[0].journal.clone();
    assert!(out.contains(earlier) && out.contains(&id), "{out}");
    assert_eq!(vigil.get("/health/ready").status, 200, "the daemon goes on");
}

/// A signed journal whose checkpoints stop being signed: caught (a
/// failure with `--public-key`, a warning without) unless a daemon start
/// without the key recorded `journal.signing_stopped`, which verify then
/// reports as a warning naming where signing stopped.
#[test]
fn a_signed_journal_that_stops_being_signed_is_caught_unless_the_stop_is_recorded() {
    let keys = tempfile::tempdir().unwrap();
    let private = keys.path().join("journal.key");
    let nowhere = keys.path().join("none.toml");
    let (code, out, err) = vigil_cli(
        &nowhere,
        &["audit", "keygen", private.to_str().unwrap()],
        &[],
    );
    assert_eq!(code, 0, "{out}{err}");
    let public = keys.path().join("journal.key.pub");
    let public_arg = public.to_str().unwrap();
    let catalog = fresh_catalog();
    let source = fresh_db();
    let signing = format!(
        "[journal]\ncheckpoint_interval = \"1s\"\nsigning_key_file = \"{}\"\n",
        private.display()
    );
    let mut vigil = start(&catalog.url(), &source, &signing);
    std::thread::sleep(Duration::from_millis(2500));
    backup_and_stop(&mut vigil);
    let original = journal_records(&vigil);

    // The tail re-hashed without the key: the newest checkpoint loses its
    // signature (a forger cannot make one), the chain is re-computed.
    let mut forged = original.clone();
    let last_checkpoint = forged
        .iter()
        .rposition(|r| r.event == "journal.checkpoint")
        .unwrap();
    let previous_signed = forged[..last_checkpoint]
        .iter()
        .rev()
        .find(|r| r.event == "journal.checkpoint")
        .unwrap()
        .seq;
    let stripped = forged[last_checkpoint].seq;
    forged[last_checkpoint]
        .data
        .as_object_mut()
        .unwrap()
        .remove("signature");
    rechain(&mut forged);
    write_journal(&vigil, &forged);
    let named = format!(
        "checkpoint seq {stripped} carries no signature although checkpoint seq {previous_signed}"
    );
    let (code, out) = verify_with(&vigil, &["--public-key", public_arg]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&named), "{out}");
    let (_, out) = verify(&vigil);
    assert!(
        out.contains(&format!("warning: {named}")),
        "without the key it warns: {out}"
    );

    // The real journal back; the daemon restarted on it without the key.
    write_journal(&vigil, &original);
    let config = std::fs::read_to_string(&vigil.config_path).unwrap();
    let unsigned = config.replace(
        &format!("signing_key_file = \"{}\"\n", private.display()),
        "",
    );
    assert_ne!(unsigned, config);
    let mut restarted = Vigil::start_text(
        tempfile::tempdir().unwrap(),
        &unsigned,
        VigilOptions::default(),
    );
    restarted.wait_ready();
    std::thread::sleep(Duration::from_millis(2500));
    restarted.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(restarted.wait_exit(Duration::from_secs(30)).success());
    let stops = records(&restarted, "journal.signing_stopped");
    assert_eq!(stops.len(), 1, "{stops:?}");
    let last_signed = original
        .iter()
        .rev()
        .find(|r| r.event == "journal.checkpoint")
        .unwrap()
        .seq;
    assert_eq!(stops[0]["data"]["last_signed_checkpoint"], last_signed);
    let (code, out) = verify_with(&restarted, &["--public-key", public_arg]);
    assert_eq!(code, 0, "a recorded stop is not a forgery: {out}");
    assert!(
        out.contains("signing stopped at seq") && out.contains(&format!("(seq {last_signed})")),
        "{out}"
    );
    let (code, out) = verify(&restarted);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("signing stopped at seq"), "{out}");
}
