//! `<job>:verify`: what the job's verification record on the board says
//! (no I/O). Fails while a bad object is unresolved or no verification
//! succeeded within twice `reverify_after`; warns on a run that could not
//! be carried out, on WAL gaps, and on objects overdue for re-reading.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::FutureExt;
use futures::future::BoxFuture;

use super::Check;
use super::jobs::{job_spec, short};
use crate::config::HealthConfig;
use crate::core::health::{CheckSpec, Observation, Status};
use crate::core::proofs::VerifyRecord;
use crate::core::verification::overdue;
use crate::state::{JobState, Shared};

/// How the job's verification is judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub reverify_after: Duration,
    /// One scheduling interval: an object falls due between two runs, so
    /// it counts as overdue only when still unread this much later.
    pub grace: Duration,
}

type Verdict = (Status, Option<String>);

fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Bad objects not resolved: each named (the first five).
fn grade_bad(record: &VerifyRecord) -> Verdict {
    if record.bad.is_empty() {
        return (Status::Pass, None);
    }
    let named: Vec<String> = record
        .bad
        .iter()
        .take(5)
        .map(|b| {
            format!(
                "{}/{}: {}",
                b.object.backup_id, b.object.object, b.object.error
            )
        })
        .collect();
    let more = record.bad.len().saturating_sub(named.len());
    let more = if more > 0 {
        format!(" and {more} more")
    } else {
        String::new()
    };
    (
        Status::Fail,
        Some(format!(
            "{} bad object(s): {}{more}; keep them as evidence with `vigil pin JOB ID` once a newer backup verifies good, or delete the damaged backup",
            record.bad.len(),
            named.join("; ")
        )),
    )
}

/// The last run and the last success against `2 × reverify_after`.
fn grade_runs(record: &VerifyRecord, limits: &Limits, now: DateTime<Utc>) -> Verdict {
    let limit = limits.reverify_after * 2;
    let stale = record
        .last_success
        .is_some_and(|t| (now - t).to_std().unwrap_or_default() > limit);
    let last = record.last_run.as_ref();
    if let Some(error) = last.and_then(|r| r.error.as_deref()) {
        let status = if stale { Status::Fail } else { Status::Warn };
        return (
            status,
            Some(format!("the last verification could not run: {error}")),
        );
    }
    if stale {
        let since = record.last_success.map(stamp).unwrap_or_default();
        return (
            Status::Fail,
            Some(format!(
                "no successful verification since {since} (fails after {}, twice reverify_after)",
                short(limit)
            )),
        );
    }
    match last {
        Some(run) if run.wal_gaps > 0 => (
            Status::Warn,
            Some(format!(
                "the last verification found {} WAL gap(s): see the job's wal check",
                run.wal_gaps
            )),
        ),
        _ => (Status::Pass, None),
    }
}

/// Objects not re-read within `reverify_after` (plus one interval).
fn grade_overdue(record: &VerifyRecord, limits: &Limits, now: DateTime<Utc>) -> Verdict {
    let (stale, never) = overdue(record, limits.reverify_after + limits.grace, now);
    if stale == 0 && !never {
        return (Status::Pass, None);
    }
    let never = if never {
        " and objects never read in backups older than that"
    } else {
        ""
    };
    (
        Status::Warn,
        Some(format!(
            "{stale} object(s) not re-read within reverify_after ({}){never}: raise max_bytes_per_run or verify more often",
            short(limits.reverify_after)
        )),
    )
}

/// Grades `<job>:verify`; observed value: seconds since the last success.
pub fn grade_verify(state: &JobState, limits: &Limits, now: DateTime<Utc>) -> Observation {
    let Some(record) = &state.verify else {
        return Observation::new(Status::Warn, None, Some("s"))
            .with_output("the verification record has not been read yet");
    };
    let age = record
        .last_success
        .map(|t| (now - t).num_milliseconds() as f64 / 1000.0);
    if record.last_run.is_none() {
        // Nothing to verify yet is no failure; backups waiting for their
        // first verification are a warning.
        let (status, output) = if state.backups == 0 {
            (Status::Pass, None)
        } else {
            (Status::Warn, Some("no verification has run yet"))
        };
        let o = Observation::new(status, None, Some("s"));
        return output.map_or(o.clone(), |text| o.with_output(text));
    }
    let mut verdicts = vec![
        grade_bad(record),
        grade_runs(record, limits, now),
        grade_overdue(record, limits, now),
    ];
    verdicts.sort_by_key(|(status, _)| std::cmp::Reverse(*status));
    let status = verdicts[0].0;
    let output: Vec<String> = verdicts.into_iter().filter_map(|(_, o)| o).collect();
    let (stale, _) = overdue(record, limits.reverify_after + limits.grace, now);
    let mut observation = Observation::new(status, age, Some("s"))
        .with_detail("lastSuccess", record.last_success.map(stamp))
        .with_detail(
            "lastRun",
            record.last_run.as_ref().map(|r| stamp(r.finished_at)),
        )
        .with_detail("badObjects", record.bad.len())
        .with_detail("verifiedObjects", record.verified.len())
        .with_detail("overdueObjects", stale)
        .with_detail("reverifyAfterSeconds", limits.reverify_after.as_secs());
    if !output.is_empty() {
        observation = observation.with_output(output.join("; "));
    }
    observation
}

/// `<job>:verify`: critical (a damaged backup is not a backup).
pub struct VerifyCheck {
    pub job: String,
    pub shared: Arc<Shared>,
    pub limits: Limits,
}

impl Check for VerifyCheck {
    fn spec(&self, config: &HealthConfig) -> CheckSpec {
        job_spec(&self.job, "verify", config)
    }

    fn run<'a>(&'a self, _config: &'a HealthConfig) -> BoxFuture<'a, Observation> {
        let state = self.shared.jobs.get(&self.job).unwrap_or_default();
        let limits = self.limits;
        async move { grade_verify(&state, &limits, Utc::now()) }.boxed()
    }
}

/// `<job>:verify` for a job with `[verify]` or a verification record.
pub fn for_job(ctx: &crate::jobs::JobContext, shared: &Arc<Shared>) -> Option<VerifyCheck> {
    let recorded = shared
        .jobs
        .get(&ctx.name)
        .is_some_and(|s| s.verify.as_ref().is_some_and(|r| r.last_run.is_some()));
    let limits = match &ctx.job.verify {
        Some(v) => Limits {
            reverify_after: v.reverify_after,
            grace: interval(v, &ctx.job.timezone),
        },
        // Verified by hand only: judged by the shipped default.
        None if recorded => Limits {
            reverify_after: Duration::from_secs(7 * 86_400),
            grace: Duration::ZERO,
        },
        None => return None,
    };
    Some(VerifyCheck {
        job: ctx.name.clone(),
        shared: Arc::clone(shared),
        limits,
    })
}

/// The time between two scheduled runs (now).
fn interval(v: &crate::config::VerifySchedule, timezone: &str) -> Duration {
    let schedule =
        crate::core::schedule::Schedule::from_parts(v.schedule.as_deref(), v.every, timezone);
    let now = Utc::now();
    let next = |s: &crate::core::schedule::Schedule| {
        let first = s.next_after(now)?;
        (s.next_after(first)? - first).to_std().ok()
    };
    match schedule {
        Ok(Some(s)) => next(&s).unwrap_or_default(),
        _ => Duration::ZERO,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::proofs::{BadFinding, BadObject, VerifyRun};

    fn at(h: i64) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
            + chrono::Duration::hours(h)
    }

    const LIMITS: Limits = Limits {
        reverify_after: Duration::from_secs(7 * 86_400),
        grace: Duration::from_secs(86_400),
    };

    fn run(h: i64, ok: bool, error: Option<&str>) -> VerifyRun {
        VerifyRun {
            started_at: at(h),
            finished_at: at(h),
            trigger: "schedule".into(),
            ok,
            content_checked: true,
            objects: 1,
            bytes_read: 10,
            bad_objects: 0,
            error: error.map(str::to_owned),
            wal_gaps: 0,
        }
    }

    fn state(record: VerifyRecord) -> JobState {
        JobState {
            backups: 2,
            verify: Some(record),
            ..Default::default()
        }
    }

    fn good() -> VerifyRecord {
        let mut r = VerifyRecord {
            last_run: Some(run(0, true, None)),
            last_success: Some(at(0)),
            ..Default::default()
        };
        r.verified.insert("b1/data".into(), at(0));
        r
    }

    fn grade(record: VerifyRecord, h: i64) -> (Status, String) {
        let o = grade_verify(&state(record), &LIMITS, at(h));
        (o.status, o.output.unwrap_or_default())
    }

    #[test]
    fn a_recent_good_verification_passes_and_overdue_objects_warn() {
        assert_eq!(grade(good(), 1).0, Status::Pass);
        let (status, output) = grade(good(), 24 * 8 + 1);
        assert_eq!(status, Status::Warn, "{output}");
        assert!(output.contains("1 object(s) not re-read"), "{output}");
    }

    #[test]
    fn a_bad_object_fails_naming_it() {
        let mut r = good();
        r.bad.push(BadFinding {
            object: BadObject {
                backup_id: "b0".into(),
                object: "data.dump.zst".into(),
                expected_sha256: None,
                found_sha256: None,
                error: "SHA-256 mismatch".into(),
            },
            found_at: at(0),
        });
        let (status, output) = grade(r, 1);
        assert_eq!(status, Status::Fail);
        assert!(
            output.contains("b0/data.dump.zst: SHA-256 mismatch"),
            "{output}"
        );
    }

    #[test]
    fn a_run_that_could_not_run_warns_then_fails_without_success_for_twice_reverify_after() {
        let mut r = good();
        r.last_run = Some(run(2, false, Some("repository unreachable")));
        let (status, output) = grade(r.clone(), 3);
        assert_eq!(status, Status::Warn);
        assert!(
            output.contains("could not run: repository unreachable"),
            "{output}"
        );
        assert_eq!(grade(r, 24 * 15).0, Status::Fail);
        assert_eq!(
            grade(good(), 24 * 15).0,
            Status::Fail,
            "no success in 14 days"
        );
    }

    #[test]
    fn before_the_first_run_nothing_to_verify_passes_and_backups_waiting_warn() {
        let empty = JobState {
            verify: Some(VerifyRecord::default()),
            ..Default::default()
        };
        assert_eq!(grade_verify(&empty, &LIMITS, at(0)).status, Status::Pass);
        assert_eq!(grade(VerifyRecord::default(), 0).0, Status::Warn);
        let unread = JobState::default();
        assert_eq!(grade_verify(&unread, &LIMITS, at(0)).status, Status::Warn);
    }
}
