//! The shipped Prometheus rules and Grafana dashboard: promtool accepts the
//! rules and passes their unit tests, every alert is documented and tested
//! both ways, the dashboard is valid and its PromQL parses, both name only
//! metrics vigil serves, and a real Prometheus scraping real daemons on the
//! shipped example config fires the rules for a failing job and a stopped
//! daemon, and not for a healthy one.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{TestDb, Vigil, VigilOptions, free_port, fresh_db};

const RULES: &str = "deploy/prometheus/vigil-rules.yml";
const RULE_TESTS: &str = "deploy/prometheus/vigil-rules.test.yml";
const DASHBOARD: &str = "deploy/grafana/vigil.json";

/// Families a daemon serves only once they are configured and have run:
/// verification and drills (issue 16's contract) and webhooks (issue 17's
/// notify metrics, labelled `webhook`).
const CONFIGURED_METRICS: [&str; 8] = [
    "vigil_verify_last_success_timestamp_seconds",
    "vigil_verify_bad_objects",
    "vigil_drill_last_success_timestamp_seconds",
    "vigil_drill_duration_seconds",
    "vigil_drill_last_run_success",
    "vigil_notify_circuit_open",
    "vigil_notify_deliveries_total",
    "vigil_notify_queue_depth",
];

fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// A YAML file as JSON, through PyYAML (Debian's python3-yaml; tests/run.sh
/// installs it): the crate has no YAML parser and needs none.
fn yaml(rel: &str) -> Value {
    let out = Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml; json.dump(yaml.safe_load(open(sys.argv[1])), sys.stdout)",
        ])
        .arg(repo_path(rel))
        .output()
        .unwrap_or_else(|e| panic!("test setup: python3 with PyYAML (python3-yaml): {e}"));
    assert!(
        out.status.success(),
        "{rel} is not YAML: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn promtool(args: &[&str]) -> (bool, String) {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap_or_else(|e| {
            panic!("test setup: promtool (Debian's `prometheus` package, installed by tests/run.sh): {e}")
        });
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}

/// Every alerting rule of the rules file.
fn alert_rules() -> Vec<Value> {
    yaml(RULES)["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().expect("rules").clone())
        .collect()
}

/// Metric names in PromQL or series text: `vigil_*` and `process_*` identifiers.
fn metric_names(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|w| w.starts_with("vigil_") || w.starts_with("process_"))
        .map(str::to_owned)
        .collect()
}

/// Every string under an `expr` key, anywhere in `v`.
fn exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("expr", Value::String(s)) => out.push(s.clone()),
                    _ => exprs(value, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| exprs(i, out)),
        _ => {}
    }
}

fn dashboard() -> Value {
    let text = std::fs::read_to_string(repo_path(DASHBOARD)).unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{DASHBOARD} is not JSON: {e}"))
}

fn dashboard_exprs() -> Vec<String> {
    let mut out = Vec::new();
    exprs(&dashboard()["panels"], &mut out);
    out
}

/// The dashboard's template queries (`label_values(...)`).
fn dashboard_queries() -> Vec<String> {
    dashboard()["templating"]["list"]
        .as_array()
        .expect("templating.list")
        .iter()
        .filter_map(|v| v["query"]["query"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn the_rules_pass_promtool_and_every_alert_is_tested_firing_and_silent() {
    let alerts = alert_rules();
    let (ok, said) = promtool(&["check", "rules", RULES]);
    assert!(ok, "promtool check rules:\n{said}");
    assert!(
        said.contains(&format!("SUCCESS: {} rules found", alerts.len())),
        "{said}"
    );
    let (ok, said) = promtool(&["test", "rules", RULE_TESTS]);
    assert!(ok, "promtool test rules:\n{said}");
    assert!(said.contains("SUCCESS"), "{said}");

    let readme = std::fs::read_to_string(repo_path("README.md")).unwrap();
    let tests = yaml(RULE_TESTS);
    let cases: Vec<&Value> = tests["tests"]
        .as_array()
        .expect("tests")
        .iter()
        .flat_map(|t| t["alert_rule_test"].as_array().into_iter().flatten())
        .collect();
    for rule in &alerts {
        let name = rule["alert"].as_str().expect("alert name");
        let severity = rule["labels"]["severity"].as_str().unwrap_or("");
        assert!(
            ["critical", "warning"].contains(&severity),
            "{name}: severity {severity:?}"
        );
        assert!(rule["for"].is_string(), "{name}: no `for:` (it would flap)");
        let notes = &rule["annotations"];
        for key in ["summary", "description"] {
            assert!(notes[key].is_string(), "{name}: no {key}");
        }
        let anchor = name.to_lowercase();
        assert_eq!(
            notes["runbook"].as_str(),
            Some(format!("README.md#{anchor}").as_str()),
            "{name}"
        );
        assert!(
            readme.contains(&format!("<a id=\"{anchor}\"></a>**{name}**")),
            "README.md documents no {name}"
        );
        let fires = |c: &Value| c["exp_alerts"].as_array().is_some_and(|a| !a.is_empty());
        let (firing, silent): (Vec<&Value>, Vec<&Value>) = cases
            .iter()
            .copied()
            .filter(|c| c["alertname"] == name)
            .partition(|c| fires(c));
        assert!(!firing.is_empty(), "{name}: no test where it fires");
        assert!(!silent.is_empty(), "{name}: no test where it stays silent");
    }
}

#[test]
fn the_dashboard_is_valid_and_its_promql_parses() {
    let d = dashboard();
    assert!(d["schemaVersion"].as_u64() >= Some(36), "schemaVersion");
    let vars: Vec<(&str, &str)> = d["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["name"].as_str().unwrap(), v["type"].as_str().unwrap()))
        .collect();
    for var in [
        ("DS_PROMETHEUS", "datasource"),
        ("instance", "query"),
        ("backup_job", "query"),
    ] {
        assert!(vars.contains(&var), "no variable {var:?} in {vars:?}");
    }
    // Every panel and query reads the chosen data source, none a fixed uid.
    let panels = d["panels"].as_array().unwrap();
    let mut targets = 0;
    for panel in panels.iter().filter(|p| p["type"] != "row") {
        let title = panel["title"].as_str().unwrap_or("?");
        assert_eq!(panel["datasource"]["uid"], "${DS_PROMETHEUS}", "{title}");
        for t in panel["targets"].as_array().expect("targets") {
            assert_eq!(t["datasource"]["uid"], "${DS_PROMETHEUS}", "{title}");
            targets += 1;
        }
    }
    let exprs = dashboard_exprs();
    assert_eq!(exprs.len(), targets);
    assert!(exprs.len() > 30, "{} expressions", exprs.len());

    // Each expression (variables filled in) as a recording rule: promtool
    // parses it as Prometheus would. JSON is YAML.
    let fill = |e: &str| {
        e.replace("$__rate_interval", "5m")
            .replace("$instance", ".*")
            .replace("$backup_job", ".*")
    };
    let rules: Vec<Value> = exprs
        .iter()
        .enumerate()
        .map(|(i, e)| serde_json::json!({"record": format!("dashboard:expr{i}"), "expr": fill(e)}))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dashboard-exprs.yml");
    let doc = serde_json::json!({"groups": [{"name": "dashboard", "rules": rules}]});
    std::fs::write(&file, doc.to_string()).unwrap();
    let (ok, said) = promtool(&["check", "rules", file.to_str().unwrap()]);
    assert!(
        ok,
        "promtool check rules on the dashboard's expressions:\n{said}"
    );
    assert!(
        said.contains(&format!("SUCCESS: {} rules found", exprs.len())),
        "{said}"
    );
}

/// Sample names of a classic-text scrape.
fn served_names(scrape: &str) -> BTreeSet<String> {
    scrape
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

/// Names `text` uses that are not in `served`.
fn unserved(text: &str, served: &BTreeSet<String>) -> BTreeSet<String> {
    metric_names(text)
        .into_iter()
        .filter(|n| !served.contains(n) && !CONFIGURED_METRICS.contains(&n.as_str()))
        .collect()
}

/// The shipped example's `orders` job on a source its `backup` role can
/// read (`readable`) or not (a table it has no grant on: every run fails).
fn example_source(readable: bool) -> (TestDb, String) {
    let source = fresh_db();
    let role = format!("backup_{}", source.name);
    // Without the grant, pg_dump's read of `orders` is refused.
    let grant = if readable {
        format!("GRANT SELECT ON orders TO {role};")
    } else {
        String::new()
    };
    source
        .psql(&format!(
            "CREATE ROLE {role} LOGIN PASSWORD 'backup-pw-Kq2';
             CREATE TABLE orders AS SELECT g AS id FROM generate_series(1, 100) g; {grant}"
        ))
        .unwrap();
    let url = format!(
        "postgres://{role}@127.0.0.1:{}/{}",
        source.port, source.name
    );
    (source, url)
}

/// A daemon on config.toml.example as shipped (only addresses, paths and
/// credentials set); `physical` also switches on its commented
/// postgres-physical job `cluster`.
fn example_daemon(catalog: &TestDb, source: &TestDb, url: &str, physical: bool) -> Vigil {
    let dir = tempfile::Builder::new()
        .prefix("vigil-it-")
        .tempdir()
        .unwrap();
    let text = crate::truth::example_config(dir.path(), catalog, source, url);
    let text = if physical {
        crate::wal::with_physical_job(text)
    } else {
        text
    };
    // The example reads its passwords from files: no environment needed.
    let options = VigilOptions {
        env: Default::default(),
        ..VigilOptions::default()
    };
    let vigil = Vigil::start_text(dir, &text, options);
    vigil.wait_ready();
    vigil
}

/// A Prometheus server scraping `targets` every second (scrape job
/// "vigil") with the shipped rules evaluated every second; killed on drop.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(targets: &[SocketAddr]) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let targets: Vec<String> = targets.iter().map(|a| format!("\"{a}\"")).collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - \"{}\"\n\
             scrape_configs:\n  - job_name: vigil\n    static_configs:\n      - targets: [{}]\n",
            repo_path(RULES).display(),
            targets.join(", ")
        );
        let config_file = dir.path().join("prometheus.yml");
        std::fs::write(&config_file, config).unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("test setup: prometheus (Debian's `prometheus` package): {e}")
            });
        let p = Prometheus {
            child,
            addr,
            _dir: dir,
        };
        p.wait_for("Prometheus to be ready", Duration::from_secs(60), || {
            get(p.addr, "/-/ready").is_some_and(|(status, _)| status == 200)
        });
        p
    }

    /// Active alerts (pending or firing), as `/api/v1/alerts` lists them.
    fn alerts(&self) -> Vec<Value> {
        let Some((200, body)) = get(self.addr, "/api/v1/alerts") else {
            return Vec::new();
        };
        let v: Value = serde_json::from_str(&body).unwrap_or_default();
        v["data"]["alerts"].as_array().cloned().unwrap_or_default()
    }

    fn wait_for(&self, what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if done() {
                return;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        panic!(
            "timed out waiting for {what}; active alerts: {:#?}",
            self.alerts()
        );
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GET over HTTP/1.0 (no chunked encoding to undo): status and body.
fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut raw = String::new();
    stream.read_to_string(&mut raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}

/// `text` as a URL query value.
fn query_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Whether an expression keeps every series it selects: no comparison or
/// set operator outside its label matchers (those may rightly select none).
fn unfiltered(expr: &str) -> bool {
    let mut depth = 0;
    let outside: String = expr
        .chars()
        .filter(|c| {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                _ => return depth == 0,
            }
            false
        })
        .collect();
    !["==", ">", "<", " and ", " unless ", " or "]
        .iter()
        .any(|op| outside.contains(op))
}

/// Every dashboard query, its variables set to all, succeeds on a real
/// Prometheus; those that filter nothing and read only what these daemons
/// serve return series; the variables list both daemons and their jobs.
fn the_dashboard_reads_real_series(prometheus: &Prometheus, instances: &[&str]) {
    let query = |q: &str| -> Value {
        let path = format!("/api/v1/query?query={}", query_encode(q));
        let (status, body) = get(prometheus.addr, &path).expect("Prometheus answers");
        assert_eq!(status, 200, "{q}: {body}");
        serde_json::from_str(&body).unwrap()
    };
    let mut empty = Vec::new();
    for expr in dashboard_exprs() {
        let filled = expr
            .replace("$__rate_interval", "1m")
            .replace("$instance", ".*")
            .replace("$backup_job", ".*");
        let answer = query(&filled);
        assert_eq!(answer["status"], "success", "{filled}: {answer}");
        let configured_only = metric_names(&expr)
            .iter()
            .any(|n| CONFIGURED_METRICS.contains(&n.as_str()));
        let series = answer["data"]["result"].as_array().map_or(0, Vec::len);
        if unfiltered(&expr) && !configured_only && series == 0 {
            empty.push(filled);
        }
    }
    assert!(
        empty.is_empty(),
        "dashboard queries with no series: {empty:#?}"
    );
    let values = |label: &str, metric: &str| -> Value {
        let path = format!(
            "/api/v1/label/{label}/values?match[]={}",
            query_encode(metric)
        );
        let (_, body) = get(prometheus.addr, &path).expect("Prometheus answers");
        serde_json::from_str::<Value>(&body).unwrap()["data"].clone()
    };
    let found = values("instance", "vigil_build_info");
    for instance in instances {
        assert!(
            found.as_array().unwrap().contains(&Value::from(*instance)),
            "{found}"
        );
    }
    let jobs = values("backup_job", "vigil_backup_last_success_timestamp_seconds");
    assert_eq!(jobs, serde_json::json!(["cluster", "orders"]));
}

/// Whether `alerts` holds `name` with every label of `labels`.
fn has(alerts: &[Value], name: &str, labels: &[(&str, &str)]) -> bool {
    alerts.iter().any(|a| {
        a["labels"]["alertname"] == name && labels.iter().all(|(k, v)| a["labels"][*k] == *v)
    })
}

/// The alerts about a healthy job or daemon: none may be active for it.
const BACKUP_ALERTS: [&str; 5] = [
    "VigilBackupStale",
    "VigilBackupFailing",
    "VigilBackupLastRunFailed",
    "VigilJobUnprotected",
    "VigilBackupDamagedManifests",
];
const DAEMON_ALERTS: [&str; 3] = ["VigilDown", "VigilNotReady", "VigilJournalFailing"];

#[test]
fn a_real_prometheus_fires_the_rules_on_failing_daemons_and_not_on_a_healthy_one() {
    // Two catalogs: one would lock `orders` for both daemons, and a run
    // that finds the job locked is skipped.
    let (bad_catalog, good_catalog) = (fresh_db(), fresh_db());
    let (bad_source, bad_url) = example_source(false);
    let (good_source, good_url) = example_source(true);
    // The shipped defaults: the daily job catches up at once; on `failing`
    // its run fails, and the physical job's source is not there.
    let mut failing = example_daemon(&bad_catalog, &bad_source, &bad_url, true);
    let healthy = example_daemon(&good_catalog, &good_source, &good_url, false);

    // Every metric the rules, their tests and the dashboard name is served.
    failing.wait_for("the cluster's WAL metrics", Duration::from_secs(90), || {
        failing
            .get("/metrics")
            .body
            .contains("vigil_wal_last_archived_timestamp_seconds{backup_job=\"cluster\"}")
    });
    let served = served_names(&failing.get("/metrics").body);
    for family in [
        "vigil_pitr_window_end_timestamp_seconds",
        "vigil_catalog_pool_connections",
        "vigil_health_check_status",
        "process_cpu_seconds_total",
    ] {
        assert!(served.contains(family), "{family} not in {served:?}");
    }
    let mut rule_text: Vec<String> = alert_rules()
        .iter()
        .map(|r| r["expr"].as_str().unwrap().to_owned())
        .collect();
    let tests = yaml(RULE_TESTS);
    for t in tests["tests"].as_array().unwrap() {
        for s in t["input_series"].as_array().unwrap() {
            rule_text.push(s["series"].as_str().unwrap().to_owned());
        }
    }
    for (what, text) in [
        ("the rules and their tests", rule_text.join("\n")),
        ("the dashboard", dashboard_exprs().join("\n")),
        ("the dashboard's variables", dashboard_queries().join("\n")),
    ] {
        let missing = unserved(&text, &served);
        assert!(
            missing.is_empty(),
            "{what} use metrics vigil does not serve: {missing:?}"
        );
    }

    let prometheus = Prometheus::start(&[failing.addr, healthy.addr]);
    let (bad, good) = (failing.addr.to_string(), healthy.addr.to_string());
    // Pending is enough: the expression matched; `for:` is promtool's to test.
    let expected = [
        ("VigilBackupStale", "orders"),
        ("VigilBackupFailing", "orders"),
        ("VigilJobUnprotected", "orders"),
        ("VigilWalArchivingFailing", "cluster"),
        ("VigilWalArchiveStale", "cluster"),
    ];
    prometheus.wait_for(
        "the failing daemon's alerts",
        Duration::from_secs(120),
        || {
            let alerts = prometheus.alerts();
            expected.iter().all(|(name, job)| {
                has(
                    &alerts,
                    name,
                    &[("instance", bad.as_str()), ("backup_job", job)],
                )
            })
        },
    );

    the_dashboard_reads_real_series(&prometheus, &[&bad, &good]);

    // The healthy daemon's job backed up: nothing about it stays active.
    healthy.wait_for("the healthy job's backup", Duration::from_secs(60), || {
        healthy
            .get("/metrics")
            .body
            .contains("vigil_backups{backup_job=\"orders\"} 1\n")
    });
    let quiet = || {
        let alerts = prometheus.alerts();
        BACKUP_ALERTS
            .iter()
            .chain(&DAEMON_ALERTS)
            .all(|name| !has(&alerts, name, &[("instance", good.as_str())]))
    };
    prometheus.wait_for(
        "the healthy daemon's alerts to clear",
        Duration::from_secs(30),
        quiet,
    );
    std::thread::sleep(Duration::from_secs(5));
    assert!(quiet(), "{:#?}", prometheus.alerts());

    // A stopped daemon: VigilDown for it, and only for it.
    failing.signal(nix::sys::signal::Signal::SIGTERM);
    failing.wait_exit(Duration::from_secs(30));
    prometheus.wait_for("VigilDown", Duration::from_secs(30), || {
        has(
            &prometheus.alerts(),
            "VigilDown",
            &[("instance", bad.as_str())],
        )
    });
    assert!(
        !has(
            &prometheus.alerts(),
            "VigilDown",
            &[("instance", good.as_str())]
        ),
        "{:#?}",
        prometheus.alerts()
    );
}
