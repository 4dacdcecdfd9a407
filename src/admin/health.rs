//! `/health`, `/health/live`, `/health/ready`, `/health/detailed`:
//! plain functions of the snapshot and the clock.

use std::fmt::Write as _;

use chrono::{DateTime, SecondsFormat, Utc};
use hyper::{Response, StatusCode};
use serde_json::{Map, Value, json};

use super::response::{Body, HEALTH_JSON, TEXT, respond};
use crate::core::health::{CheckState, Status};
use crate::state::{Phase, Shared, StatusSnapshot};

const HEARTBEAT: &str = crate::health::HEARTBEAT_KEY;

fn status_code(ok: bool) -> StatusCode {
    if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

/// Body for the short answers; static so the hot path allocates nothing.
fn short_body(status: Status) -> &'static str {
    match status {
        Status::Pass => r#"{"status":"pass"}"#,
        Status::Warn => r#"{"status":"warn"}"#,
        Status::Fail => r#"{"status":"fail"}"#,
    }
}

/// "Is what vigil protects OK?" 503 while starting, shutting down, or failing.
pub fn overall(
    shared: &Shared,
    snapshot: &StatusSnapshot,
    now: DateTime<Utc>,
    verbose: bool,
) -> Response<Body> {
    let serving = shared.phase() == Phase::Ready && snapshot.published_at.is_some();
    let status = if serving {
        snapshot.overall(now)
    } else {
        Status::Fail
    };
    let code = status_code(status != Status::Fail);
    if !verbose {
        return respond(code, HEALTH_JSON, short_body(status));
    }
    let mut text = String::new();
    if !serving {
        let _ = writeln!(text, "[-]phase {} failed", shared.phase().as_str());
    }
    for check in snapshot.checks.iter().filter(|c| c.spec.critical) {
        verbose_line(&mut text, &check.spec.key, check.status_at(now));
    }
    finish_verbose(text, status)
}

/// Liveness: the runtime answers and the health runner's heartbeat is fresh.
pub fn live(snapshot: &StatusSnapshot, now: DateTime<Utc>, verbose: bool) -> Response<Body> {
    // Before the runner starts (catalog wait at start-up) the runtime alone decides.
    let heartbeat = snapshot
        .check(HEARTBEAT)
        .map_or(Status::Pass, |c| c.status_at(now));
    let ok = heartbeat != Status::Fail;
    let code = status_code(ok);
    if !verbose {
        return respond(
            code,
            HEALTH_JSON,
            short_body(if ok { Status::Pass } else { Status::Fail }),
        );
    }
    let mut text = String::new();
    verbose_line(&mut text, "runtime", Status::Pass);
    verbose_line(&mut text, HEARTBEAT, heartbeat);
    finish_verbose(text, heartbeat)
}

/// Readiness: start-up complete and not shutting down. Backup health is
/// deliberately not part of it.
pub fn ready(shared: &Shared, verbose: bool) -> Response<Body> {
    let phase = shared.phase();
    let ok = phase == Phase::Ready;
    let code = status_code(ok);
    if !verbose {
        return respond(
            code,
            HEALTH_JSON,
            short_body(if ok { Status::Pass } else { Status::Fail }),
        );
    }
    let mut text = String::new();
    for (step, done) in shared.startup_steps() {
        verbose_line(
            &mut text,
            step,
            if done { Status::Pass } else { Status::Fail },
        );
    }
    let stopping = phase == Phase::ShuttingDown;
    verbose_line(
        &mut text,
        "not-shutting-down",
        if stopping { Status::Fail } else { Status::Pass },
    );
    finish_verbose(text, if ok { Status::Pass } else { Status::Fail })
}

/// One line per check, kube-apiserver style; a warn is its own mark so a
/// degraded check never reads as ok.
fn verbose_line(text: &mut String, name: &str, status: Status) {
    let _ = match status {
        Status::Pass => writeln!(text, "[+]{name} ok"),
        Status::Warn => writeln!(text, "[!]{name} warn"),
        Status::Fail => writeln!(text, "[-]{name} failed"),
    };
}

/// The closing line names the overall status; 503 only on fail.
fn finish_verbose(mut text: String, status: Status) -> Response<Body> {
    text.push_str(match status {
        Status::Pass => "health check passed\n",
        Status::Warn => "health check passed with warnings\n",
        Status::Fail => "health check failed\n",
    });
    respond(status_code(status != Status::Fail), TEXT, text)
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The IETF draft's shape, with vigil's own fields under `vigil`.
pub fn detailed(shared: &Shared, snapshot: &StatusSnapshot, now: DateTime<Utc>) -> Response<Body> {
    let Some(published) = snapshot.published_at else {
        let body = json!({
            "status": "fail",
            "output": "no health snapshot yet: vigil is starting",
            "serviceId": shared.service_id,
            "vigil": { "phase": shared.phase().as_str() },
        });
        return respond(
            StatusCode::SERVICE_UNAVAILABLE,
            HEALTH_JSON,
            body.to_string(),
        );
    };
    let body = detailed_body(shared, snapshot, published, now);
    // The draft: 503 when the status is fail; the body is the same either way.
    let code = status_code(snapshot.overall(now) != Status::Fail);
    respond(code, HEALTH_JSON, body.to_string())
}

pub fn detailed_body(
    shared: &Shared,
    snapshot: &StatusSnapshot,
    published: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Value {
    let overall = snapshot.overall(now);
    let mut checks = Map::new();
    for check in &snapshot.checks {
        checks.insert(check.spec.key.clone(), json!([check_json(check, now)]));
    }
    let uptime = (now - shared.started_at).num_milliseconds() as f64 / 1000.0;
    let last_reload = DateTime::<Utc>::from_timestamp(shared.last_reload_ok(), 0);
    json!({
        "status": overall.as_str(),
        "version": env!("CARGO_PKG_VERSION_MAJOR"),
        "releaseId": env!("CARGO_PKG_VERSION"),
        "serviceId": shared.service_id,
        "description": "vigil: PostgreSQL and file-tree backups, verified",
        "checks": checks,
        "vigil": {
            "phase": shared.phase().as_str(),
            "startup": shared.startup_steps().map(|(s, done)| (s.to_owned(), Value::Bool(done))).collect::<Map<_, _>>(),
            "startedAt": rfc3339(shared.started_at),
            "uptimeSeconds": uptime,
            "snapshotAt": rfc3339(published),
            "lastConfigReload": last_reload.map(rfc3339),
            "configReloadFailures": shared.reload_failures(),
        },
    })
}

fn check_json(check: &CheckState, now: DateTime<Utc>) -> Value {
    let (status, output) = check.effective(now);
    let mut object = Map::new();
    object.insert("componentId".into(), check.spec.component_id.clone().into());
    object.insert("componentType".into(), check.spec.component_type.into());
    object.insert("status".into(), status.as_str().into());
    if let Some(value) = check.observation.value {
        object.insert("observedValue".into(), json!(value));
    }
    if let Some(unit) = check.observation.unit {
        object.insert("observedUnit".into(), unit.into());
    }
    object.insert("time".into(), rfc3339(check.observed_at).into());
    if status != Status::Pass
        && let Some(output) = output
    {
        object.insert("output".into(), output.into());
    }
    let mut own = Map::new();
    own.insert("critical".into(), check.spec.critical.into());
    own.insert("changedAt".into(), rfc3339(check.changed_at).into());
    if check.spec.periodic {
        own.insert(
            "intervalSeconds".into(),
            check.effective_interval.as_secs_f64().into(),
        );
        own.insert(
            "durationSeconds".into(),
            check.duration.as_secs_f64().into(),
        );
    }
    if check.consecutive_failures > 0 {
        own.insert(
            "consecutiveFailures".into(),
            check.consecutive_failures.into(),
        );
    }
    for (k, v) in &check.observation.details {
        own.insert(k.clone(), v.clone());
    }
    object.insert("vigil".into(), Value::Object(own));
    Value::Object(object)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use http_body_util::BodyExt;

    use super::*;
    use crate::core::health::tests::state;

    fn shared_with(checks: Vec<CheckState>, phase: Phase) -> Arc<Shared> {
        let shared = Shared::new("test".into(), None);
        shared.publish(StatusSnapshot {
            checks,
            published_at: Some(Utc::now()),
            ..Default::default()
        });
        shared.set_phase(phase);
        shared
    }

    fn body(r: Response<Body>) -> String {
        let bytes = futures::executor::block_on(r.into_body().collect())
            .unwrap()
            .to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[test]
    fn overall_follows_the_worst_critical_check() {
        let now = Utc::now();
        let shared = shared_with(vec![state("a:x", Status::Warn, true, now)], Phase::Ready);
        let r = overall(&shared, &shared.snapshot(), now, false);
        assert_eq!(r.status(), 200);
        assert_eq!(body(r), r#"{"status":"warn"}"#);

        let shared = shared_with(
            vec![
                state("a:x", Status::Pass, true, now),
                state("b:y", Status::Fail, true, now),
            ],
            Phase::Ready,
        );
        let r = overall(&shared, &shared.snapshot(), now, true);
        assert_eq!(r.status(), 503);
        assert_eq!(body(r), "[+]a:x ok\n[-]b:y failed\nhealth check failed\n");
    }

    #[test]
    fn overall_is_503_while_starting_or_stopping() {
        let now = Utc::now();
        for phase in [Phase::Starting, Phase::ShuttingDown] {
            let shared = shared_with(vec![state("a:x", Status::Pass, true, now)], phase);
            assert_eq!(
                overall(&shared, &shared.snapshot(), now, false).status(),
                503
            );
        }
    }

    #[test]
    fn live_fails_only_when_heartbeat_is_stale() {
        let now = Utc::now();
        let snap = StatusSnapshot::default();
        assert_eq!(live(&snap, now, false).status(), 200);
        let beat = state(HEARTBEAT, Status::Pass, true, now);
        let snap = StatusSnapshot {
            checks: vec![beat],
            ..Default::default()
        };
        assert_eq!(live(&snap, now, false).status(), 200);
        let later = now + chrono::Duration::seconds(120);
        let r = live(&snap, later, true);
        assert_eq!(r.status(), 503);
        assert!(body(r).contains("[-]scheduler:heartbeat failed"));
    }

    #[test]
    fn ready_lists_startup_steps() {
        let shared = shared_with(vec![], Phase::Starting);
        shared.startup_done("migrations");
        let r = ready(&shared, true);
        assert_eq!(r.status(), 503);
        assert_eq!(
            body(r),
            "[+]config ok\n[+]catalog ok\n[+]migrations ok\n[-]state failed\n[-]schedules failed\n[-]first-checks failed\n[+]not-shutting-down ok\nhealth check failed\n"
        );
        shared.set_phase(Phase::Ready);
        assert_eq!(ready(&shared, false).status(), 200);
    }

    #[test]
    fn detailed_has_the_draft_shape() {
        let now = Utc::now();
        let mut failing = state("catalog:responseTime", Status::Fail, true, now);
        failing.observation.output = Some("catalog unreachable".into());
        failing.observation.unit = Some("ms");
        failing.observation.value = Some(3.5);
        let shared = shared_with(vec![failing], Phase::Ready);
        let r = detailed(&shared, &shared.snapshot(), now);
        assert_eq!(r.status(), 503, "the draft: fail is 503");
        assert_eq!(r.headers()["content-type"], HEALTH_JSON);
        let v: Value = serde_json::from_str(&body(r)).unwrap();
        assert_eq!(v["status"], "fail");
        let c = &v["checks"]["catalog:responseTime"][0];
        assert_eq!(c["componentId"], "catalog");
        assert_eq!(c["observedValue"], 3.5);
        assert_eq!(c["observedUnit"], "ms");
        assert_eq!(c["output"], "catalog unreachable");
        assert_eq!(c["vigil"]["critical"], true);
        assert_eq!(v["vigil"]["phase"], "ready");
    }

    #[test]
    fn detailed_is_200_on_pass_and_warn() {
        let now = Utc::now();
        for status in [Status::Pass, Status::Warn] {
            let shared = shared_with(vec![state("a:x", status, true, now)], Phase::Ready);
            let r = detailed(&shared, &shared.snapshot(), now);
            assert_eq!(r.status(), 200, "{status:?}");
            let v: Value = serde_json::from_str(&body(r)).unwrap();
            assert_eq!(v["status"], status.as_str());
        }
    }

    #[test]
    fn verbose_prints_a_warn_as_a_warn() {
        let now = Utc::now();
        let shared = shared_with(
            vec![
                state("a:x", Status::Pass, true, now),
                state("b:y", Status::Warn, true, now),
            ],
            Phase::Ready,
        );
        let r = overall(&shared, &shared.snapshot(), now, true);
        assert_eq!(r.status(), 200);
        assert_eq!(
            body(r),
            "[+]a:x ok\n[!]b:y warn\nhealth check passed with warnings\n"
        );
        let snap = StatusSnapshot {
            checks: vec![state(HEARTBEAT, Status::Warn, true, now)],
            ..Default::default()
        };
        let r = live(&snap, now, true);
        assert_eq!(r.status(), 200);
        assert_eq!(
            body(r),
            "[+]runtime ok\n[!]scheduler:heartbeat warn\nhealth check passed with warnings\n"
        );
    }

    #[test]
    fn detailed_is_503_before_the_first_snapshot() {
        let shared = Shared::new("t".into(), None);
        assert_eq!(
            detailed(&shared, &shared.snapshot(), Utc::now()).status(),
            503
        );
    }
}
