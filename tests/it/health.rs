//! The health endpoints against a real catalog, including a catalog outage.

use std::time::{Duration, Instant};

use crate::harness::{PASSWORD, Vigil, fresh_db, http, own_cluster};

#[test]
fn endpoints_answer_as_specified() {
    let db = fresh_db();
    let vigil = Vigil::start(&db, "");
    vigil.wait_ready();

    let health = vigil.get("/health");
    assert_eq!(health.status, 200);
    assert_eq!(health.body, r#"{"status":"pass"}"#);
    assert_eq!(
        health.header("content-type").as_deref(),
        Some("application/health+json")
    );
    assert_eq!(health.header("cache-control").as_deref(), Some("no-store"));

    let verbose = vigil.get("/health?verbose");
    assert!(
        verbose.body.contains("[+]catalog:responseTime ok"),
        "{}",
        verbose.body
    );
    assert!(verbose.body.ends_with("health check passed\n"));

    assert_eq!(vigil.get("/health/live").status, 200);
    assert_eq!(vigil.get("/health/ready").status, 200);
    assert!(
        vigil
            .get("/health/ready?verbose")
            .body
            .contains("[+]migrations ok")
    );

    let detailed = vigil.get("/health/detailed");
    assert_eq!(detailed.status, 200);
    let v = detailed.json();
    assert_eq!(v["status"], "pass");
    assert_eq!(v["releaseId"], env!("CARGO_PKG_VERSION"));
    for key in [
        "catalog:responseTime",
        "catalog:migrations",
        "state-dir:utilization",
        "scheduler:heartbeat",
        "config:reload",
    ] {
        let check = &v["checks"][key][0];
        assert_eq!(check["status"], "pass", "{key}: {check}");
        assert!(
            check["time"].is_string() && check["componentId"].is_string(),
            "{key}: {check}"
        );
    }
    assert_eq!(v["checks"]["catalog:responseTime"][0]["observedUnit"], "ms");
    assert_eq!(
        v["checks"]["state-dir:utilization"][0]["observedUnit"],
        "ratio"
    );
    assert!(v["checks"]["catalog:responseTime"][0]["vigil"]["poolMaxSize"].is_number());
    assert_eq!(v["vigil"]["phase"], "ready");

    let head = http(vigil.addr, "HEAD", "/health").unwrap();
    assert_eq!((head.status, head.body.as_str()), (200, ""));
    let post = http(vigil.addr, "POST", "/health").unwrap();
    assert_eq!(post.status, 405);
    assert_eq!(post.header("allow").as_deref(), Some("GET, HEAD"));
    let missing = vigil.get("/no/such/path");
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["error"]["code"], "not_found");
    assert!(missing.json()["error"]["message"].is_string());

    let metrics = vigil.get("/metrics");
    assert_eq!(metrics.status, 200);
    for needle in [
        "vigil_build_info{",
        "vigil_health_status{status=\"pass\"} 1",
        "vigil_health_check_status{check=\"catalog:responseTime\",status=\"pass\"} 1",
        "vigil_health_check_last_observed_timestamp_seconds{check=",
        "vigil_catalog_pool_max_connections 4",
        "vigil_config_last_reload_success_timestamp_seconds ",
        "vigil_config_reload_failures_total 0",
        "process_resident_memory_bytes ",
    ] {
        assert!(
            metrics.body.contains(needle),
            "missing {needle} in\n{}",
            metrics.body
        );
    }
    assert!(
        !metrics.body.contains("job=\""),
        "a `job` label is Prometheus's"
    );

    let page = vigil.get("/");
    assert_eq!(page.status, 200);
    assert!(page.body.contains("data-check=\"catalog:responseTime\""));

    assert!(
        !vigil.log_text().contains(PASSWORD),
        "the catalog password reached the log"
    );
}

/// Seconds from `cluster.start()` until `/health` says `pass` again.
fn recovery_time(vigil: &Vigil, cluster: &mut vigil::cli::pgcluster::Cluster) -> Duration {
    cluster.start().unwrap();
    let restarted = Instant::now();
    vigil.wait_for("/health to pass again", Duration::from_secs(10), || {
        vigil.get("/health").body == r#"{"status":"pass"}"#
    });
    restarted.elapsed()
}

#[test]
fn a_catalog_outage_warns_on_the_defaults_and_recovers_within_an_interval() {
    let mut cluster = own_cluster();
    cluster.psql("postgres", "CREATE DATABASE outage").unwrap();
    let url = cluster.url("outage");
    let vigil = Vigil::start_with(&url, "", Default::default());
    vigil.wait_ready();
    assert_eq!(vigil.get("/health").status, 200);

    cluster.stop().unwrap();
    let stopped = Instant::now();
    // Interval 1s: the outage shows within two intervals, as a warning:
    // nothing depends on the catalog (outage_fail_after defaults to 1h).
    vigil.wait_for(
        "/health to warn",
        Duration::from_secs(2) + Duration::from_millis(500),
        || vigil.get("/health").body == r#"{"status":"warn"}"#,
    );
    println!("warn after {:?}", stopped.elapsed());
    // Liveness never depends on the catalog, and answers stay in memory.
    for _ in 0..20 {
        let started = Instant::now();
        assert_eq!(vigil.get("/health").status, 200);
        assert_eq!(vigil.get("/health/live").status, 200);
        assert!(
            started.elapsed() < Duration::from_millis(250),
            "health answered in {:?}",
            started.elapsed()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let detailed = vigil.get("/health/detailed").json();
    let check = &detailed["checks"]["catalog:responseTime"][0];
    assert_eq!(check["status"], "warn", "{detailed:#}");
    let output = check["output"].as_str().unwrap();
    assert!(output.starts_with("catalog unreachable since"), "{output}");
    assert!(output.contains("fails after 1h"), "{output}");
    assert!(!output.contains(PASSWORD));
    assert_ne!(
        detailed["checks"]["catalog:migrations"][0]["status"], "fail",
        "the outage is graded once: {detailed:#}"
    );
    assert_eq!(
        vigil.get("/health/ready").status,
        200,
        "readiness must not follow the catalog"
    );

    // Back within one catalog interval (1s), plus the probe's own round trip.
    let took = recovery_time(&vigil, &mut cluster);
    println!("pass {took:?} after the catalog restarted");
    assert!(
        took < Duration::from_millis(2500),
        "recovered after {took:?}"
    );
}

#[test]
fn a_catalog_outage_fails_once_it_outlasts_outage_fail_after() {
    let mut cluster = own_cluster();
    cluster.psql("postgres", "CREATE DATABASE outage").unwrap();
    let url = cluster.url("outage");
    let vigil = Vigil::start_with(
        &url,
        "[health.catalog]\noutage_fail_after = \"3s\"\n",
        Default::default(),
    );
    vigil.wait_ready();
    cluster.stop().unwrap();
    let stopped = Instant::now();
    vigil.wait_for("/health to warn", Duration::from_secs(3), || {
        vigil.get("/health").status == 200 && vigil.get("/health").body.contains("warn")
    });
    vigil.wait_for("/health to turn 503", Duration::from_secs(6), || {
        vigil.get("/health").status == 503
    });
    let failed_after = stopped.elapsed();
    assert!(failed_after >= Duration::from_secs(3), "{failed_after:?}");
    let detailed = vigil.get("/health/detailed").json();
    let output = detailed["checks"]["catalog:responseTime"][0]["output"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(output.contains("for longer than 3s"), "{output}");

    // A failing catalog check does not back off: recovery is still prompt.
    let took = recovery_time(&vigil, &mut cluster);
    println!("pass {took:?} after the catalog restarted");
    assert!(
        took < Duration::from_millis(2500),
        "recovered after {took:?}"
    );
    // The outage's transitions reach health_events once the catalog is back.
    vigil.wait_for("health_events to record the outage", Duration::from_secs(10), || {
        cluster
            .psql(
                "outage",
                "SELECT count(*) FROM vigil.health_events WHERE check_key = 'catalog:responseTime' AND to_status = 'fail'",
            )
            .is_ok_and(|n| n.trim() == "1")
    });
}

#[test]
fn slow_clients_are_cut_off_after_the_header_timeout() {
    use std::io::{Read, Write};
    let db = fresh_db();
    let vigil = Vigil::start_with(
        &db.url(),
        "",
        crate::harness::VigilOptions {
            admin: "header_read_timeout = \"500ms\"\n".into(),
            ..Default::default()
        },
    );
    vigil.wait_ready();
    let mut stream = std::net::TcpStream::connect(vigil.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let started = Instant::now();
    let mut buf = Vec::new();
    let _ = stream.read_to_end(&mut buf);
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(3),
        "connection held for {waited:?}"
    );
    let text = String::from_utf8_lossy(&buf);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
    // The server still serves others.
    assert_eq!(http(vigil.addr, "GET", "/health").unwrap().status, 200);
}
