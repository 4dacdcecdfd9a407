//! The page as a function of plain values: what the on-call person must
//! see, in which order, and nothing they must not.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::render::{View, page};
use crate::core::health::tests::state as check;
use crate::core::health::{CheckState, Status};
use crate::core::ids::JobName;
use crate::core::proofs::{BadFinding, BadObject, DrillRecord, DrillRun, VerifyRecord, VerifyRun};
use crate::core::schedule::Freshness;
use crate::state::{JobState, Phase, RecentRun, WalState};

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&Utc)
}

const NOW: &str = "2026-11-27T12:00:00Z";

fn freshness() -> Freshness {
    Freshness {
        warn_after: Duration::from_secs(36 * 3600),
        fail_after: Duration::from_secs(60 * 3600),
        grace: Duration::from_secs(3600),
        fail_after_failures: 2,
    }
}

/// A job with one good backup two hours old, nothing verified or drilled.
fn healthy_job() -> JobState {
    JobState {
        freshness: Some(freshness()),
        last_success: Some(at("2026-11-27T10:00:00Z")),
        backups: 1,
        last_stored_bytes: Some(3 * 1024 * 1024 / 2),
        last_source_bytes: Some(10 * 1024 * 1024),
        next_run: Some(at("2026-11-28T02:30:00Z")),
        restored: true,
        ..JobState::default()
    }
}

fn render(checks: &[CheckState], jobs: &BTreeMap<JobName, JobState>, secrets: &[String]) -> String {
    render_with(checks, jobs, &[], secrets)
}

fn render_with(
    checks: &[CheckState],
    jobs: &BTreeMap<JobName, JobState>,
    runs: &[RecentRun],
    secrets: &[String],
) -> String {
    let now = at(NOW);
    let overall = crate::core::health::aggregate(checks, now);
    page(&View {
        service: "db-backup-1",
        version: "9.9.9",
        phase: Phase::Ready,
        overall,
        now,
        started_at: at("2026-11-27T09:00:00Z"),
        checks,
        jobs,
        runs,
        events: &[],
        secrets,
    })
}

fn with_output(mut c: CheckState, output: &str) -> CheckState {
    c.observation.output = Some(output.into());
    c
}

#[test]
fn a_healthy_job_row_shows_its_backup_age_size_and_never_for_proofs() {
    let now = at(NOW);
    let checks = [
        check("catalog:responseTime", Status::Pass, true, now),
        check("orders:freshness", Status::Pass, true, now),
    ];
    let jobs = BTreeMap::from([(JobName::from("orders"), healthy_job())]);
    let html = render(&checks, &jobs, &[]);
    assert!(
        html.contains("<meta http-equiv=\"refresh\" content=\"30\">"),
        "{html}"
    );
    assert!(
        html.contains("data-job=\"orders\" data-state=\"pass\""),
        "{html}"
    );
    assert!(html.contains("2h old"), "{html}");
    assert!(html.contains("warns at 1d 12h, fails at 2d 12h"), "{html}");
    assert!(html.contains("1.5 MiB"), "{html}");
    assert!(html.contains("from 10.0 MiB of source"), "{html}");
    assert!(html.contains("in 14h 30m"), "{html}");
    assert_eq!(html.matches("badge never\">never<").count(), 2, "{html}");
    assert!(html.contains("All 2 checks pass."), "{html}");
    assert!(
        html.contains("db-backup-1") && html.contains("9.9.9"),
        "{html}"
    );
    assert!(
        !html.contains("<script"),
        "usable without JavaScript: {html}"
    );
}

#[test]
fn failing_checks_come_first_worst_first_with_their_output() {
    let now = at(NOW);
    let checks = [
        check("catalog:responseTime", Status::Pass, true, now),
        with_output(
            check("orders:freshness", Status::Warn, true, now),
            "last run failed: boom",
        ),
        with_output(
            check("orders:source", Status::Fail, true, now),
            "cannot connect to 127.0.0.1:1: connection refused",
        ),
    ];
    let mut job = healthy_job();
    job.consecutive_failures = 1;
    let jobs = BTreeMap::from([(JobName::from("orders"), job)]);
    let html = render(&checks, &jobs, &[]);
    let pos = |needle: &str| {
        html.find(needle)
            .unwrap_or_else(|| panic!("{needle}: {html}"))
    };
    assert!(pos("data-check=\"orders:source\"") < pos("data-check=\"orders:freshness\""));
    assert!(pos("data-check=\"orders:freshness\"") < pos("id=\"jobs\""));
    assert!(pos("id=\"jobs\"") < pos("data-check=\"catalog:responseTime\""));
    assert!(pos("connection refused") < pos("id=\"jobs\""));
    assert!(
        html.contains("data-job=\"orders\" data-state=\"fail\""),
        "{html}"
    );
    assert!(html.contains("last run failed"), "{html}");
    assert!(
        html.contains("id=\"overall\" data-status=\"fail\""),
        "{html}"
    );
}

#[test]
fn every_dynamic_string_is_redacted_and_escaped() {
    let now = at(NOW);
    let checks = [with_output(
        check("orders:source", Status::Fail, true, now),
        "<img src=x onerror=alert(1)> postgres://backup:Hunter2pw@db:5432/orders key=AKIAsecretvalue",
    )];
    let mut job = healthy_job();
    job.last_error = Some("token=AKIAsecretvalue".into());
    let jobs = BTreeMap::from([(JobName::from("orders"), job)]);
    let runs = [RecentRun {
        job: "orders".into(),
        kind: "backup",
        trigger: "schedule",
        status: "failed",
        started_at: Some(now),
        finished_at: now,
        backup_id: None,
        stored_bytes: None,
        error: Some("<b>AKIAsecretvalue</b>".into()),
    }];
    let html = render_with(&checks, &jobs, &runs, &["AKIAsecretvalue".to_owned()]);
    assert!(!html.contains("<img"), "{html}");
    assert!(html.contains("&lt;img src=x"), "{html}");
    assert!(!html.contains("Hunter2pw"), "{html}");
    assert!(!html.contains("AKIAsecretvalue"), "{html}");
    assert!(html.contains("&lt;b&gt;***&lt;/b&gt;"), "{html}");
}

#[test]
fn proofs_and_the_recovery_window_are_shown_with_their_verdicts() {
    let now = at(NOW);
    let mut job = healthy_job();
    let bad = BadObject {
        backup_id: "20261126T023000Z".into(),
        object: "data.dump.zst".into(),
        expected_sha256: None,
        found_sha256: None,
        error: "hash mismatch".into(),
    };
    job.verify = Some(VerifyRecord {
        last_run: Some(VerifyRun {
            started_at: at("2026-11-27T08:00:00Z"),
            finished_at: at("2026-11-27T09:00:00Z"),
            trigger: "schedule".into(),
            ok: false,
            content_checked: true,
            objects: 12,
            bytes_read: 2048,
            bad_objects: 1,
            wal_gaps: 0,
            error: None,
        }),
        last_success: Some(at("2026-11-20T09:00:00Z")),
        bad: vec![BadFinding {
            object: bad,
            found_at: at("2026-11-27T09:00:00Z"),
        }],
        ..VerifyRecord::default()
    });
    let drill = DrillRun {
        started_at: at("2026-11-26T03:00:00Z"),
        finished_at: at("2026-11-26T03:01:30Z"),
        trigger: "schedule".into(),
        ok: true,
        backup_id: Some("20261126T023000Z".into()),
        recovery_target: None,
        rto_seconds: Some(83.4),
        failed_query: None,
        error: None,
    };
    job.drill = Some(DrillRecord {
        last_run: Some(drill.clone()),
        last_success: Some(drill),
        ..DrillRecord::default()
    });
    job.wal = Some(WalState {
        last_archived: Some(at("2026-11-27T11:58:00Z")),
        window: Some(crate::core::wal_chain::Window {
            start: at("2026-11-24T02:30:00Z"),
            end: at("2026-11-27T11:58:00Z"),
            oldest_backup: "20261124T023000Z".into(),
        }),
        gaps: 0,
    });
    let jobs = BTreeMap::from([(JobName::from("orders"), job)]);
    let html = render(
        &[check("orders:verify", Status::Fail, true, now)],
        &jobs,
        &[],
    );
    assert!(html.contains("badge fail\">failed</span> 3h ago"), "{html}");
    assert!(html.contains("1 bad object<"), "{html}");
    assert!(html.contains("last clean run 7d 3h ago"), "{html}");
    assert!(html.contains("badge pass\">ok</span> 1d 8h ago"), "{html}");
    assert!(html.contains("RTO 1m 23s"), "{html}");
    assert!(html.contains("3d 9h restorable"), "{html}");
    assert!(html.contains("last WAL archived 2m ago"), "{html}");
    assert!(!html.contains(">never<"), "{html}");
}
