//! Webhooks and pings against a real local HTTP receiver that checks
//! every signature and records every request: one delivery per journal
//! event whichever process recorded it, retries that keep the delivery id,
//! no retry on a 400, a queue that outlives a daemon restart, pings in
//! order, and no configured secret in any body.

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hmac::{KeyInit, Mac};
use nix::sys::signal::Signal;

use crate::harness::*;

const HOOK_SECRET: &str = "hook-secret-9f3Kq";
const HEADER_SECRET: &str = "api-key-Zr81wq";

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
struct Request {
    path: String,
    headers: HashMap<String, String>,
    body: String,
}

impl Request {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", String::as_str)
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }

    /// `X-Vigil-Signature` is HMAC-SHA256(secret, "<t>.<body>") in hex.
    fn signed_with(&self, secret: &str) -> bool {
        let header = self.header("x-vigil-signature");
        let mut t = None;
        let mut v1 = None;
        for part in header.split(',') {
            match part.split_once('=') {
                Some(("t", value)) => t = Some(value),
                Some(("v1", value)) => v1 = Some(value),
                _ => {}
            }
        }
        let (Some(t), Some(v1)) = (t, v1) else {
            return false;
        };
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(format!("{t}.{}", self.body).as_bytes());
        hex::encode(mac.finalize().into_bytes()) == v1
    }
}

/// A tiny HTTP/1.1 server: answers each path with its scripted statuses
/// in turn, then 200.
struct Receiver {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<Request>>>,
}

impl Receiver {
    fn start(script: &[(&str, &[u16])]) -> Receiver {
        Self::on(TcpListener::bind("127.0.0.1:0").unwrap(), script)
    }

    fn on(listener: TcpListener, script: &[(&str, &[u16])]) -> Receiver {
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let script: HashMap<String, VecDeque<u16>> = script
            .iter()
            .map(|(p, s)| (p.to_string(), s.iter().copied().collect()))
            .collect();
        let script = Arc::new(Mutex::new(script));
        let seen = Arc::clone(&requests);
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                let (seen, script) = (Arc::clone(&seen), Arc::clone(&script));
                std::thread::spawn(move || serve(stream, &seen, &script));
            }
        });
        Receiver { addr, requests }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }

    fn on_path(&self, path: &str) -> Vec<Request> {
        self.requests()
            .into_iter()
            .filter(|r| r.path.starts_with(path))
            .collect()
    }

    fn wait_for(&self, what: &str, timeout: Duration, condition: impl Fn(&[Request]) -> bool) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if condition(&self.requests()) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "timed out waiting for {what}; received: {:#?}",
            self.requests()
        );
    }
}

/// Serves keep-alive requests on one connection until it closes.
fn serve(
    stream: TcpStream,
    seen: &Mutex<Vec<Request>>,
    script: &Mutex<HashMap<String, VecDeque<u16>>>,
) {
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
        let mut headers = HashMap::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.insert(k.trim().to_lowercase(), v.trim().to_owned());
            }
        }
        let length: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let status = script
            .lock()
            .unwrap()
            .get_mut(&path)
            .and_then(VecDeque::pop_front)
            .unwrap_or(200);
        seen.lock().unwrap().push(Request {
            path,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        });
        let answer = format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\n\r\n");
        if writer.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}

/// Every journal record in `state`'s journal.
fn journal(state: &Path) -> Vec<serde_json::Value> {
    let mut segments: Vec<PathBuf> = std::fs::read_dir(state.join("journal"))
        .map(|d| d.map_while(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    segments.sort();
    segments
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .flat_map(|p| {
            std::fs::read_to_string(p)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect::<Vec<serde_json::Value>>()
        })
        .collect()
}

fn records<'a>(journal: &'a [serde_json::Value], event: &str) -> Vec<&'a serde_json::Value> {
    journal.iter().filter(|r| r["event"] == event).collect()
}

fn event_id(record: &serde_json::Value) -> String {
    format!("{}:{}", record["journal"].as_str().unwrap(), record["seq"])
}

/// A secret file, mode 0600 as the README asks.
fn secret_file(dir: &Path, name: &str, value: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("{value}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// A files job `tree` backing up `src` into `repo`, plus `more` lines.
fn files_job(src: &Path, repo: &Path, more: &str) -> String {
    format!(
        "[repositories.local]\nscheme = \"fs\"\noptions = {{ root = \"{}\" }}\n\
         [jobs.tree]\nkind = \"files\"\npaths = [\"{}\"]\nrepository = \"local\"\n{more}",
        repo.display(),
        src.display()
    )
}

fn assert_no_secret(requests: &[Request], secrets: &[&str]) {
    for r in requests {
        for secret in secrets {
            assert!(
                !r.body.contains(secret),
                "{secret} in {}: {}",
                r.path,
                r.body
            );
        }
    }
}

#[test]
fn a_failing_job_sends_one_failed_per_failure_then_one_recovered_with_pings_in_order() {
    let catalog = fresh_db();
    let keys = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(&[]);
    let src = keys.path().join("src");
    let repo = keys.path().join("repo");
    let extra = files_job(
        &src,
        &repo,
        &format!(
            "every = \"1s\"\ncatch_up = false\n\
             [jobs.tree.ping]\nurl = \"{}\"\n\
             [[notify.webhooks]]\nname = \"ops\"\nurl = \"{}\"\n\
             events = [\"backup.failed\", \"backup.recovered\"]\nsecret_file = \"{}\"\n\
             header_files = {{ X-Api-Key = \"{}\" }}\nretry_initial = \"100ms\"\n",
            receiver.url("/ping/tree"),
            receiver.url("/hook/ops"),
            secret_file(keys.path(), "hook.key", HOOK_SECRET).display(),
            secret_file(keys.path(), "api.key", HEADER_SECRET).display(),
        ),
    );
    let mut vigil = Vigil::start(&catalog, &extra);
    vigil.wait_ready();
    receiver.wait_for(
        "two backup.failed deliveries",
        Duration::from_secs(30),
        |r| {
            r.iter()
                .filter(|r| r.header("x-vigil-event") == "backup.failed")
                .count()
                >= 2
        },
    );
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a.txt"), "alpha").unwrap();
    receiver.wait_for("backup.recovered", Duration::from_secs(30), |r| {
        r.iter()
            .any(|r| r.header("x-vigil-event") == "backup.recovered")
    });
    // A later success is no second recovery.
    let state = vigil.dir.join("state");
    vigil.wait_for("two more successes", Duration::from_secs(20), || {
        records(&journal(&state), "backup.succeeded").len() >= 3
    });
    vigil.signal(Signal::SIGTERM);
    assert!(vigil.wait_exit(Duration::from_secs(20)).success());

    let journal = journal(&state);
    let failed: Vec<String> = records(&journal, "backup.failed")
        .into_iter()
        .map(event_id)
        .collect();
    let hooks = receiver.on_path("/hook/ops");
    let delivered = |event: &str| -> Vec<String> {
        hooks
            .iter()
            .filter(|r| r.header("x-vigil-event") == event)
            .map(|r| r.header("x-vigil-delivery").to_owned())
            .collect()
    };
    assert_eq!(
        delivered("backup.failed"),
        failed,
        "one delivery per failure, in order"
    );
    let recovered = delivered("backup.recovered");
    assert_eq!(recovered.len(), 1, "{hooks:#?}");
    assert_eq!(records(&journal, "backup.recovered").len(), 1);
    for r in &hooks {
        assert!(r.signed_with(HOOK_SECRET), "bad signature: {r:?}");
        assert_eq!(r.header("x-api-key"), HEADER_SECRET);
        let body = r.json();
        assert_eq!(body["eventId"], r.header("x-vigil-delivery"));
        assert_eq!(body["job"], "tree");
        assert!(
            body["statusPageUrl"]
                .as_str()
                .unwrap()
                .starts_with("http://")
        );
    }
    let last = hooks.last().unwrap().json();
    assert_eq!(last["event"], "backup.recovered");
    assert_eq!(
        last["details"]["failed_runs"],
        failed.len() as u64,
        "{last}"
    );

    // Pings: each run's start, then its success or failure.
    let pings: Vec<Request> = receiver.on_path("/ping/tree");
    let paths: Vec<&str> = pings.iter().map(|p| p.path.as_str()).collect();
    for pair in paths.chunks(2) {
        assert_eq!(pair[0], "/ping/tree/start", "{paths:?}");
        if let Some(end) = pair.get(1) {
            assert!(["/ping/tree", "/ping/tree/fail"].contains(end), "{paths:?}");
        }
    }
    assert!(
        paths.contains(&"/ping/tree/fail") && paths.contains(&"/ping/tree"),
        "{paths:?}"
    );
    let fail = pings.iter().find(|p| p.path.ends_with("/fail")).unwrap();
    assert!(
        fail.body.contains("backup of job `tree` failed"),
        "{}",
        fail.body
    );
    assert_no_secret(
        &receiver.requests(),
        &[HOOK_SECRET, HEADER_SECRET, PASSWORD],
    );
}

#[test]
fn retries_keep_the_delivery_id_and_a_400_is_never_retried() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(&[
        ("/hook/flaky", &[500, 500, 500, 200]),
        ("/hook/strict", &[400]),
    ]);
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a.txt"), "alpha").unwrap();
    let key = secret_file(dir.path(), "hook.key", HOOK_SECRET);
    let hooks: String = ["flaky", "strict"]
        .iter()
        .map(|name| {
            format!(
                "[[notify.webhooks]]\nname = \"{name}\"\nurl = \"{}\"\nevents = [\"backup.succeeded\"]\n\
                 secret_file = \"{}\"\nretry_initial = \"100ms\"\nretry_max_interval = \"200ms\"\n",
                receiver.url(&format!("/hook/{name}")),
                key.display()
            )
        })
        .collect();
    let extra = files_job(
        &src,
        &dir.path().join("repo"),
        &format!(
            "every = \"1h\"\n[jobs.tree.ping]\nurl = \"{}\"\n{hooks}",
            receiver.url("/ping")
        ),
    );
    // No daemon and no catalog: the command delivers its own events.
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        config_text(dir.path(), "postgres://vigil@127.0.0.1:1/vigil", &extra),
    )
    .unwrap();
    let env = [("TEST_PGPASSWORD", PASSWORD)];
    let (code, _, stderr) = vigil_cli(&config, &["backup", "tree"], &env);
    assert_eq!(code, 0, "{stderr}");

    let flaky = receiver.on_path("/hook/flaky");
    assert_eq!(flaky.len(), 4, "{flaky:#?}");
    let id = flaky[0].header("x-vigil-delivery");
    assert!(
        flaky
            .iter()
            .all(|r| r.header("x-vigil-delivery") == id && r.signed_with(HOOK_SECRET))
    );
    assert!(
        flaky.iter().all(|r| r.body == flaky[0].body),
        "the same body on every attempt"
    );
    let strict = receiver.on_path("/hook/strict");
    assert_eq!(strict.len(), 1, "{strict:#?}");
    // The command waited for its run's pings too, in order.
    let pings: Vec<String> = receiver
        .on_path("/ping")
        .into_iter()
        .map(|r| r.path)
        .collect();
    assert_eq!(pings, ["/ping/start", "/ping"]);

    let state = dir.path().join("state");
    let journal = journal(&state);
    let attempts = |event: &str, hook: &str| -> Vec<(u64, bool)> {
        records(&journal, event)
            .into_iter()
            .filter(|r| r["data"]["webhook"] == hook)
            .map(|r| {
                (
                    r["data"]["attempt"].as_u64().unwrap(),
                    r["data"]["final"] == true,
                )
            })
            .collect()
    };
    assert_eq!(
        attempts("notify.failed", "flaky"),
        [(1, false), (2, false), (3, false)]
    );
    assert_eq!(attempts("notify.delivered", "flaky"), [(4, false)]);
    assert_eq!(attempts("notify.failed", "strict"), [(1, true)]);
    let succeeded = records(&journal, "backup.succeeded");
    assert_eq!(id, event_id(succeeded[0]));

    // The next command delivers its own event only: the refused one is gone.
    let (code, _, stderr) = vigil_cli(&config, &["backup", "tree"], &env);
    assert_eq!(code, 0, "{stderr}");
    let strict = receiver.on_path("/hook/strict");
    assert_eq!(strict.len(), 2, "{strict:#?}");
    assert_ne!(
        strict[0].header("x-vigil-delivery"),
        strict[1].header("x-vigil-delivery")
    );
    assert_eq!(receiver.on_path("/hook/flaky").len(), 5);
}

#[test]
fn a_receiver_down_across_a_daemon_restart_still_gets_a_cli_runs_event() {
    let catalog = fresh_db();
    let keep = tempfile::tempdir().unwrap();
    let src = keep.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a.txt"), "alpha").unwrap();
    let port = free_port();
    let extra = files_job(
        &src,
        &keep.path().join("repo"),
        &format!(
            "schedule = \"0 0 3 1 1 *\"\ncatch_up = false\n\
             [[notify.webhooks]]\nname = \"ops\"\nurl = \"http://127.0.0.1:{port}/hook\"\n\
             events = [\"backup.succeeded\"]\nretry_initial = \"100ms\"\nretry_max_interval = \"300ms\"\n\
             circuit_after = 3\ncircuit_probe_interval = \"1h\"\n"
        ),
    );
    // The state directory outlives both daemons.
    let text = config_text(keep.path(), &catalog.url(), &extra);
    let state = keep.path().join("state");
    let fresh = || {
        tempfile::Builder::new()
            .prefix("vigil-it-")
            .tempdir()
            .unwrap()
    };
    let mut first = Vigil::start_text(fresh(), &text, VigilOptions::default());
    first.wait_ready();
    // A backup run by hand while the daemon holds the queue: the daemon delivers it.
    let (code, _, stderr) = vigil_cli(
        &first.config_path,
        &["backup", "tree"],
        &[("TEST_PGPASSWORD", PASSWORD)],
    );
    assert_eq!(code, 0, "{stderr}");
    // Three failed attempts open the circuit: the check warns, the metric says so,
    // and the next probe is an hour away.
    let check =
        |vigil: &Vigil| vigil.get("/health/detailed").json()["checks"]["notify:ops"][0].clone();
    first.wait_for("the circuit to open", Duration::from_secs(20), || {
        check(&first)["status"] == "warn"
    });
    let warned = check(&first);
    assert!(
        warned["output"]
            .as_str()
            .unwrap()
            .starts_with("circuit open after 3 failed attempts"),
        "{warned}"
    );
    assert_eq!(warned["observedValue"], 1.0, "{warned}");
    let metrics = first.get("/metrics").body;
    assert!(
        metrics.contains("vigil_notify_circuit_open{webhook=\"ops\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("vigil_notify_queue_depth{webhook=\"ops\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("vigil_notify_deliveries_total{webhook=\"ops\",result=\"failed\"} 3"),
        "{metrics}"
    );
    let (clean, said) = crate::admin_truths::promtool_check(&metrics);
    assert!(clean, "promtool check metrics:\n{said}");
    assert_eq!(records(&journal(&state), "notify.failed").len(), 3);
    first.signal(Signal::SIGTERM);
    assert!(first.wait_exit(Duration::from_secs(20)).success());

    let receiver = Receiver::on(TcpListener::bind(("127.0.0.1", port)).unwrap(), &[]);
    let second = Vigil::start_text(fresh(), &text, VigilOptions::default());
    second.wait_ready();
    receiver.wait_for(
        "the delivery after the restart",
        Duration::from_secs(20),
        |r| !r.is_empty(),
    );
    let journal = journal(&state);
    let succeeded = records(&journal, "backup.succeeded");
    assert_eq!(succeeded.len(), 1);
    std::thread::sleep(Duration::from_millis(500));
    let got = receiver.requests();
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_eq!(got[0].header("x-vigil-delivery"), event_id(succeeded[0]));
    assert_eq!(got[0].json()["event"], "backup.succeeded");
    // The success closed the circuit.
    second.wait_for("the check to pass", Duration::from_secs(10), || {
        check(&second)["status"] == "pass"
    });
    assert!(
        second
            .get("/metrics")
            .body
            .contains("vigil_notify_circuit_open{webhook=\"ops\"} 0")
    );
}

#[test]
fn the_shipped_defaults_with_one_webhook_deliver_a_cli_runs_events_signed_and_quietly() {
    let crate::truth::ShippedExample {
        catalog: _catalog,
        source: _source,
        dir,
        mut text,
    } = crate::truth::shipped_example(
        "CREATE TABLE orders (id int); INSERT INTO orders VALUES (1)",
    );
    let receiver = Receiver::start(&[]);
    text.push_str(&format!(
        "\n[[notify.webhooks]]\nname = \"ops\"\nurl = \"{}\"\nsecret_file = \"{}\"\n",
        receiver.url("/hook"),
        secret_file(dir.path(), "hook.key", HOOK_SECRET).display()
    ));
    let config = dir.path().join("config.toml");
    std::fs::write(&config, &text).unwrap();
    for args in [&["migrate"][..], &["backup", "orders"]] {
        let (code, _, stderr) = vigil_cli(&config, args, &[]);
        assert_eq!(code, 0, "{args:?}: {stderr}");
        assert_eq!(stderr, "", "{args:?} wrote on stderr");
    }
    let got = receiver.requests();
    let events: Vec<&str> = got.iter().map(|r| r.header("x-vigil-event")).collect();
    // Default events = ["*"]: the run's own events (then its prune's), never notify.*.
    assert_eq!(
        &events[..2],
        ["backup.started", "backup.succeeded"],
        "{got:#?}"
    );
    assert!(
        events.iter().all(|e| !e.starts_with("notify.")),
        "{events:?}"
    );
    for r in &got {
        assert!(r.signed_with(HOOK_SECRET), "{r:?}");
        let body = r.json();
        for key in [
            "eventId",
            "event",
            "job",
            "time",
            "summary",
            "details",
            "statusPageUrl",
        ] {
            assert!(body.get(key).is_some(), "{key} missing: {body}");
        }
    }
    assert_no_secret(&got, &[HOOK_SECRET, PASSWORD, "backup-pw-Kq2"]);

    // `vigil notify test`: delivered (0), refused (1), unreachable (3).
    let (code, stdout, stderr) = vigil_cli(&config, &["notify", "test"], &[]);
    assert_eq!((code, stderr.as_str()), (0, ""), "{stdout}");
    assert_eq!(stdout.trim(), "ops: delivered (200)");
    let last = receiver.requests().pop().unwrap();
    assert_eq!(last.header("x-vigil-event"), "notify.test");
    assert!(last.signed_with(HOOK_SECRET));
    let refusing = Receiver::start(&[("/", &[403])]);
    let (code, stdout, _) = vigil_cli(
        &config,
        &["notify", "test", "--url", &refusing.url("/"), "--json"],
        &[],
    );
    assert_eq!(code, 1, "{stdout}");
    assert!(
        stdout.contains("\"result\": \"refused\"") && stdout.contains("403"),
        "{stdout}"
    );
    let closed = format!("http://127.0.0.1:{}/", free_port());
    let (code, stdout, _) = vigil_cli(&config, &["notify", "test", "--webhook", &closed], &[]);
    assert_eq!(code, 3, "{stdout}");
    assert!(stdout.contains("unreachable"), "{stdout}");
}

#[test]
fn job_stale_is_sent_once_per_newest_backup_across_ticks_and_restarts() {
    let catalog = fresh_db();
    let keep = tempfile::tempdir().unwrap();
    let src = keep.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a.txt"), "alpha").unwrap();
    let receiver = Receiver::start(&[]);
    let extra = files_job(
        &src,
        &keep.path().join("repo"),
        &format!(
            "schedule = \"0 0 3 1 1 *\"\ncatch_up = false\nmax_age = \"2s\"\nmax_age_fail = \"3s\"\n\
             [[notify.webhooks]]\nname = \"ops\"\nurl = \"{}\"\nevents = [\"job.stale\"]\n",
            receiver.url("/hook")
        ),
    );
    let text = config_text(keep.path(), &catalog.url(), &extra);
    let state = keep.path().join("state");
    let config = keep.path().join("config.toml");
    std::fs::write(&config, &text).unwrap();
    let env = [("TEST_PGPASSWORD", PASSWORD)];
    let backup = || {
        let (code, _, stderr) = vigil_cli(&config, &["backup", "tree"], &env);
        assert_eq!(code, 0, "{stderr}");
    };
    let stale = || records(&journal(&state), "job.stale").len();
    let fresh = || {
        tempfile::Builder::new()
            .prefix("vigil-it-")
            .tempdir()
            .unwrap()
    };
    backup();

    let mut first = Vigil::start_text(fresh(), &text, VigilOptions::default());
    first.wait_ready();
    receiver.wait_for("job.stale", Duration::from_secs(20), |r| !r.is_empty());
    // Health ticks every second: the level stays, the edge is not repeated.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(stale(), 1);
    first.signal(Signal::SIGTERM);
    assert!(first.wait_exit(Duration::from_secs(20)).success());

    let mut second = Vigil::start_text(fresh(), &text, VigilOptions::default());
    second.wait_ready();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(stale(), 1, "a restart is not a new staleness episode");
    second.signal(Signal::SIGTERM);
    assert!(second.wait_exit(Duration::from_secs(20)).success());
    // A new backup that goes stale in turn is a new episode (the daemon
    // learns of a CLI run's backup when it reads the repository at start).
    backup();
    let third = Vigil::start_text(fresh(), &text, VigilOptions::default());
    third.wait_ready();
    receiver.wait_for("a second job.stale", Duration::from_secs(20), |r| {
        r.len() >= 2
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(stale(), 2);
    let got = receiver.requests();
    assert_eq!(got.len(), 2, "{got:#?}");
    let body = got[1].json();
    assert_eq!(body["event"], "job.stale");
    assert!(
        body["summary"]
            .as_str()
            .unwrap()
            .starts_with("`tree`'s newest backup is"),
        "{body}"
    );
    assert_eq!(body["details"]["threshold_seconds"], 3);
}

#[test]
fn verifications_ping_their_own_url_start_then_success_or_fail() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(&[]);
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a.txt"), "alpha ".repeat(1000)).unwrap();
    let repo = dir.path().join("repo");
    let extra = files_job(
        &src,
        &repo,
        &format!(
            "every = \"1h\"\n[jobs.tree.verify]\nevery = \"1d\"\n[jobs.tree.verify.ping]\nurl = \"{}\"\n",
            receiver.url("/vping")
        ),
    );
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        config_text(dir.path(), "postgres://vigil@127.0.0.1:1/vigil", &extra),
    )
    .unwrap();
    let env = [("TEST_PGPASSWORD", PASSWORD)];
    let (code, _, stderr) = vigil_cli(&config, &["backup", "tree"], &env);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        receiver.requests().is_empty(),
        "a backup is not the verification's to ping: {:#?}",
        receiver.requests()
    );
    let (code, _, stderr) = vigil_cli(&config, &["verify", "tree"], &env);
    assert_eq!(code, 0, "{stderr}");
    let paths =
        |r: &Receiver| -> Vec<String> { r.requests().into_iter().map(|r| r.path).collect() };
    assert_eq!(paths(&receiver), ["/vping/start", "/vping"]);

    // A flipped byte in the data object: the verification fails and says so.
    let data = files_under(&repo)
        .into_iter()
        .find(|p| p.to_string_lossy().contains("/backups/") && !p.ends_with("manifest.json"))
        .expect("a data object");
    let mut bytes = std::fs::read(&data).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&data, bytes).unwrap();
    let (code, _, stderr) = vigil_cli(&config, &["verify", "tree"], &env);
    assert_eq!(code, 1, "{stderr}");
    let requests = receiver.requests();
    let paths: Vec<&str> = requests.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(
        paths,
        ["/vping/start", "/vping", "/vping/start", "/vping/fail"]
    );
    let name = data.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        requests[3].body.contains("verify of job `tree`") && requests[3].body.contains(&name),
        "the fail ping names the run and the object: {}",
        requests[3].body
    );
}
