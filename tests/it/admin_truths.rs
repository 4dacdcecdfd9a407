//! The admin port tells the truth: status codes that match the status,
//! verbose lines that show a warn as a warn, an auth limit that locks out
//! guesses but not valid tokens, and metrics in the format the scraper asked
//! for (the classic one checked by promtool).

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::harness::{
    PASSWORD, Response, TestDb, Vigil, VigilOptions, fresh_db, http_with, vigil_cli,
};

const ENV: [(&str, &str); 1] = [("TEST_PGPASSWORD", PASSWORD)];
const OPERATOR: &str = "operator-token-5e0a91c3d7";
/// What Prometheus 2.42 sends when it scrapes.
const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

const JOBS: &str = "/api/v1/jobs";

/// One operator token and nothing else: the auth limit is the shipped default.
fn token_lines() -> String {
    format!(
        "[[admin.tokens]]\nname = \"deployer\"\nrole = \"operator\"\ntoken_sha256 = \"{}\"\n",
        hex::encode(Sha256::digest(OPERATOR.as_bytes()))
    )
}

fn job_config(repo: &Path, source: &TestDb) -> String {
    format!(
        "[repositories.local]\nscheme = \"fs\"\noptions = {{ root = \"{}\" }}\n\
         [jobs.orders]\nkind = \"postgres\"\nsource = \"{}\"\npassword = \"${{TEST_PGPASSWORD}}\"\ndatabases = [\"{}\"]\n\
         repository = \"local\"\nevery = \"1h\"\ncatch_up = false\n",
        repo.display(),
        source.url(),
        source.name,
    )
}

fn with_tokens(catalog: &TestDb, extra: &str) -> Vigil {
    let options = VigilOptions {
        admin: token_lines(),
        ..Default::default()
    };
    let vigil = Vigil::start_with(&catalog.url(), extra, options);
    vigil.wait_ready();
    vigil
}

fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Response {
    http_with(addr, "GET", path, headers).unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

fn check_status(vigil: &Vigil, key: &str) -> String {
    vigil.get("/health/detailed").json()["checks"][key][0]["status"]
        .as_str()
        .unwrap_or("")
        .to_owned()
}

#[test]
fn a_warn_is_200_and_reads_warn_in_verbose() {
    let catalog = fresh_db();
    // Every round trip is slower than a microsecond: the catalog check warns.
    let vigil = Vigil::start(&catalog, "[health.catalog]\nwarn_after = \"1us\"\n");
    vigil.wait_ready();
    vigil.wait_for(
        "catalog:responseTime to warn",
        Duration::from_secs(10),
        || check_status(&vigil, "catalog:responseTime") == "warn",
    );
    let detailed = vigil.get("/health/detailed");
    assert_eq!(detailed.status, 200, "{}", detailed.body);
    assert_eq!(detailed.json()["status"], "warn");
    let health = vigil.get("/health");
    assert_eq!(
        (health.status, health.body.as_str()),
        (200, r#"{"status":"warn"}"#)
    );
    let verbose = vigil.get("/health?verbose");
    assert_eq!(verbose.status, 200);
    assert!(
        verbose.body.contains("[!]catalog:responseTime warn\n"),
        "{}",
        verbose.body
    );
    assert!(
        !verbose.body.contains("catalog:responseTime ok"),
        "a warn printed as ok:\n{}",
        verbose.body
    );
    assert!(
        verbose
            .body
            .ends_with("health check passed with warnings\n"),
        "{}",
        verbose.body
    );
}

#[test]
fn a_failing_detailed_is_503_and_vigil_status_still_prints_it() {
    let catalog = fresh_db();
    // Every round trip is slower than two nanoseconds: the catalog check fails.
    let vigil = Vigil::start(
        &catalog,
        "[health.catalog]\nwarn_after = \"1ns\"\nfail_after = \"2ns\"\n",
    );
    vigil.wait_ready();
    vigil.wait_for(
        "catalog:responseTime to fail",
        Duration::from_secs(10),
        || check_status(&vigil, "catalog:responseTime") == "fail",
    );
    let detailed = vigil.get("/health/detailed");
    assert_eq!(detailed.status, 503, "{}", detailed.body);
    let v = detailed.json();
    assert_eq!(v["status"], "fail");
    assert_eq!(v["checks"]["catalog:responseTime"][0]["status"], "fail");
    assert_eq!(
        detailed.header("content-type").as_deref(),
        Some("application/health+json")
    );
    let verbose = vigil.get("/health?verbose");
    assert_eq!(verbose.status, 503);
    assert!(
        verbose.body.contains("[-]catalog:responseTime failed\n"),
        "{}",
        verbose.body
    );

    let config = vigil.config_path_with_addr();
    let (code, stdout, stderr) = vigil_cli(&config, &["status"], &ENV);
    assert!(stdout.contains(": FAIL (phase ready"), "{stdout}{stderr}");
    assert!(stdout.contains("fail  catalog:responseTime"), "{stdout}");
    assert!(
        code != 0 && code != 3,
        "unhealthy, not unreachable: {code} {stderr}"
    );
    let (_, json, stderr) = vigil_cli(&config, &["status", "--json"], &ENV);
    let printed: serde_json::Value =
        serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}{stderr}"));
    assert_eq!(printed["status"], "fail");
}

#[test]
fn requests_without_a_token_are_not_counted_as_failed_authentications() {
    let catalog = fresh_db();
    let vigil = with_tokens(&catalog, "");
    // No header is no guess: far past the default limit (10), still 401.
    for n in 0..25 {
        let r = get(vigil.addr, JOBS, &[]);
        assert_eq!(r.status, 401, "request {n} without a token: {}", r.body);
        assert!(r.header("www-authenticate").is_some(), "{}", r.headers);
    }
    let bearer = format!("Bearer {OPERATOR}");
    assert_eq!(
        get(vigil.addr, JOBS, &[("Authorization", &bearer)]).status,
        200
    );
}

#[test]
fn wrong_tokens_get_429_but_a_valid_token_from_the_same_address_is_served() {
    let catalog = fresh_db();
    let vigil = with_tokens(&catalog, "");
    let addr = vigil.addr;
    // The shipped default limit: ten wrong tokens a minute are counted...
    for n in 0..10 {
        let r = get(addr, JOBS, &[("Authorization", "Bearer guess")]);
        assert_eq!(r.status, 401, "guess {n}: {}", r.body);
    }
    // ...and the eleventh is refused, as is a malformed header.
    let limited = get(addr, JOBS, &[("Authorization", "Bearer guess")]);
    assert_eq!(limited.status, 429, "{}", limited.body);
    assert_eq!(limited.json()["error"]["code"], "rate_limited");
    let retry: u64 = limited.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    let malformed = get(addr, JOBS, &[("Authorization", "Basic Z3Vlc3M=")]);
    assert_eq!(malformed.status, 429, "a malformed header is a guess too");

    // The same address, over the limit: the valid token is served, a
    // request without one is told what it lacks.
    let bearer = format!("Bearer {OPERATOR}");
    let served = get(addr, JOBS, &[("Authorization", &bearer)]);
    assert_eq!(served.status, 200, "{}", served.body);
    assert_eq!(served.json()["jobs"], serde_json::json!([]));
    let missing = get(addr, JOBS, &[]);
    assert_eq!(missing.status, 401, "{}", missing.body);
}

#[test]
fn protected_details_serve_a_valid_token_while_its_address_is_over_the_limit() {
    let catalog = fresh_db();
    let options = VigilOptions {
        admin: format!("protect_detailed = true\n{}", token_lines()),
        ..Default::default()
    };
    let vigil = Vigil::start_with(&catalog.url(), "", options);
    vigil.wait_ready();
    let guess = [("Authorization", "Bearer guess")];
    for n in 0..10 {
        let r = get(vigil.addr, "/health/detailed", &guess);
        assert_eq!(r.status, 401, "guess {n}: {}", r.body);
    }
    let limited = get(vigil.addr, "/", &guess);
    assert_eq!(limited.status, 429, "{}", limited.body);
    assert!(
        limited.header("retry-after").is_some(),
        "{}",
        limited.headers
    );
    assert_eq!(get(vigil.addr, "/health/detailed", &[]).status, 401);
    assert_eq!(
        get(vigil.addr, JOBS, &[("Authorization", "Bearer guess")]).status,
        429,
        "guesses at the details count against the API's limit"
    );
    let bearer = format!("Bearer {OPERATOR}");
    for path in ["/health/detailed", "/"] {
        let r = get(vigil.addr, path, &[("Authorization", &bearer)]);
        assert_eq!(r.status, 200, "{path}: {}", r.body);
    }
}

pub(crate) fn promtool_check(text: &str) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("test setup: promtool (Debian's `prometheus` package, installed by tests/run.sh): {e}")
        });
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success() && said.trim().is_empty(), said)
}

#[test]
fn metrics_pass_promtool_as_served_and_openmetrics_on_request() {
    let source = fresh_db();
    source
        .psql("CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 100) g")
        .unwrap();
    let catalog = fresh_db();
    let repo = tempfile::tempdir().unwrap();
    // With scheduled verification, so its families are linted too.
    let jobs = format!(
        "{}[jobs.orders.verify]\nevery = \"1h\"\n",
        job_config(repo.path(), &source)
    );
    let vigil = with_tokens(&catalog, &jobs);
    let bearer = format!("Bearer {OPERATOR}");
    let started = http_with(
        vigil.addr,
        "POST",
        "/api/v1/jobs/orders/backup",
        &[("Authorization", &bearer)],
    )
    .unwrap();
    assert_eq!(started.status, 202, "{}", started.body);
    vigil.wait_for("the backup in the metrics", Duration::from_secs(30), || {
        vigil
            .get("/metrics")
            .body
            .contains("vigil_backups{backup_job=\"orders\"} 1\n")
    });

    // As curl, a browser or an old scraper gets it: classic text, which promtool lints.
    for accept in [None, Some("*/*"), Some("text/plain;version=0.0.4")] {
        let headers: Vec<(&str, &str)> = accept.iter().map(|a| ("Accept", *a)).collect();
        let classic = get(vigil.addr, "/metrics", &headers);
        assert_eq!(classic.status, 200);
        assert_eq!(
            classic.header("content-type").as_deref(),
            Some("text/plain; version=0.0.4; charset=utf-8"),
            "Accept {accept:?}"
        );
        assert_eq!(classic.header("vary").as_deref(), Some("Accept"));
        let (clean, said) = promtool_check(&classic.body);
        assert!(
            clean,
            "promtool check metrics (Accept {accept:?}):\n{said}\n{}",
            classic.body
        );
        for needle in [
            "# TYPE vigil_build_info gauge\n",
            "# TYPE vigil_backup_runs_total counter\n",
            "vigil_backup_runs_total{backup_job=\"orders\"} 1\n",
            "vigil_backup_last_success_timestamp_seconds{backup_job=\"orders\"} ",
            "# TYPE process_cpu_seconds_total counter\n",
            "vigil_catalog_pool_connections{state=\"idle\"} ",
            "# TYPE vigil_verify_last_success_timestamp_seconds gauge\n",
            "vigil_verify_bad_objects{backup_job=\"orders\"} 0\n",
        ] {
            assert!(
                classic.body.contains(needle),
                "missing {needle:?} in\n{}",
                classic.body
            );
        }
        assert!(!classic.body.contains("# EOF"), "{}", classic.body);
    }

    // As Prometheus asks for it: OpenMetrics.
    let om = get(vigil.addr, "/metrics", &[("Accept", PROMETHEUS_ACCEPT)]);
    assert_eq!(om.status, 200);
    assert_eq!(
        om.header("content-type").as_deref(),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    assert!(om.body.ends_with("# EOF\n"), "{}", om.body);
    assert!(om.body.contains("# TYPE vigil_build info\n"), "{}", om.body);
    assert!(
        om.body.contains("# TYPE vigil_backup_runs counter\n"),
        "{}",
        om.body
    );
    assert!(
        om.body
            .contains("vigil_backup_runs_total{backup_job=\"orders\"} 1\n"),
        "{}",
        om.body
    );
}
