//! `<job>:drill` for jobs with `[drill]`: from the job board only (no
//! I/O). Fails when the last drill failed or the last success is older
//! than twice the drill interval (or, with none yet, once twice the
//! interval has passed since the daemon armed it); warns when the last
//! drill's RTO exceeded `max_rto`. Its value is the last RTO in seconds.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::FutureExt;
use futures::future::BoxFuture;

use super::Check;
use super::jobs::{job_spec, short};
use crate::config::HealthConfig;
use crate::core::health::{CheckSpec, Observation, Status};
use crate::core::proofs::{DrillRecord, DrillRun};
use crate::core::schedule::Schedule;
use crate::jobs::JobContext;
use crate::state::Shared;

/// What the grade is measured against.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DrillPolicy {
    /// The longest wait between two scheduled drills.
    pub interval: Duration,
    pub max_rto: Option<Duration>,
    /// When the daemon armed the drill (a first drill is awaited from then).
    pub armed_at: DateTime<Utc>,
}

fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Grades the job's drill record at `now`.
pub fn grade_drill(
    record: Option<&DrillRecord>,
    policy: &DrillPolicy,
    now: DateTime<Utc>,
) -> Observation {
    let limit = policy.interval * 2;
    let last_run = record.and_then(|r| r.last_run.as_ref());
    let last_success = record.and_then(|r| r.last_success.as_ref());
    let rto = last_run.and_then(|r| r.rto_seconds);
    let (status, output) = verdict(last_run, last_success, policy, now);
    let mut observation =
        Observation::new(status, rto, Some("s")).with_detail("failAfterSeconds", limit.as_secs());
    if let Some(output) = output {
        observation = observation.with_output(output);
    }
    if let Some(max) = policy.max_rto {
        observation = observation.with_detail("maxRtoSeconds", max.as_secs_f64());
    }
    if let Some(run) = last_run {
        observation = observation
            .with_detail("lastRun", stamp(run.finished_at))
            .with_detail("backupId", run.backup_id.clone())
            .with_detail("recoveryTarget", run.recovery_target.clone());
    }
    observation.with_detail("lastSuccess", last_success.map(|r| stamp(r.finished_at)))
}

fn verdict(
    last_run: Option<&DrillRun>,
    last_success: Option<&DrillRun>,
    policy: &DrillPolicy,
    now: DateTime<Utc>,
) -> (Status, Option<String>) {
    let limit = policy.interval * 2;
    let age = |t: DateTime<Utc>| (now - t).to_std().unwrap_or_default();
    if let Some(run) = last_run.filter(|r| !r.ok) {
        let error = run.error.as_deref().unwrap_or("unknown error");
        return (
            Status::Fail,
            Some(format!(
                "the last drill ({}) failed: {error}",
                stamp(run.finished_at)
            )),
        );
    }
    let Some(success) = last_success else {
        let waited = age(policy.armed_at);
        if waited >= limit {
            return (
                Status::Fail,
                Some(format!(
                    "no drill has passed in the {} since the daemon started (fails after twice the drill interval, {})",
                    short(waited),
                    short(limit)
                )),
            );
        }
        return (Status::Warn, Some("no drill has run yet".into()));
    };
    if age(success.finished_at) >= limit {
        return (
            Status::Fail,
            Some(format!(
                "the last successful drill is {} old (fails after twice the drill interval, {})",
                short(age(success.finished_at)),
                short(limit)
            )),
        );
    }
    if let (Some(rto), Some(max)) = (success.rto_seconds, policy.max_rto)
        && rto > max.as_secs_f64()
    {
        return (
            Status::Warn,
            Some(format!(
                "the last drill took {rto:.1}s to a database answering its checks, above max_rto ({})",
                humantime::format_duration(max)
            )),
        );
    }
    (Status::Pass, None)
}

/// `<job>:drill`: critical (an unproven restore is an unprotected job).
pub struct DrillCheck {
    pub job: String,
    pub shared: Arc<Shared>,
    pub schedule: Schedule,
    pub max_rto: Option<Duration>,
    pub armed_at: DateTime<Utc>,
}

impl DrillCheck {
    /// The check for `ctx`, when it has a `[drill]` section.
    pub fn for_job(ctx: &JobContext, shared: &Arc<Shared>) -> Option<DrillCheck> {
        Some(DrillCheck {
            job: ctx.name.clone(),
            shared: Arc::clone(shared),
            schedule: crate::jobs::drill::schedule::schedule(ctx)?,
            max_rto: ctx.job.drill.as_ref()?.max_rto,
            armed_at: Utc::now(),
        })
    }
}

impl Check for DrillCheck {
    fn spec(&self, config: &HealthConfig) -> CheckSpec {
        job_spec(&self.job, "drill", config)
    }

    fn run<'a>(&'a self, _config: &'a HealthConfig) -> BoxFuture<'a, Observation> {
        let record = self.shared.jobs.get(&self.job).and_then(|s| s.drill);
        let now = Utc::now();
        let policy = DrillPolicy {
            interval: self.schedule.longest_gap(now).unwrap_or(Duration::ZERO),
            max_rto: self.max_rto,
            armed_at: self.armed_at,
        };
        async move { grade_drill(record.as_ref(), &policy, now) }.boxed()
    }

    fn backs_off(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn run(finished: &str, ok: bool, rto: f64) -> DrillRun {
        DrillRun {
            started_at: at(finished),
            finished_at: at(finished),
            trigger: "schedule".into(),
            ok,
            backup_id: Some("b1".into()),
            recovery_target: None,
            rto_seconds: ok.then_some(rto),
            failed_query: (!ok).then(|| "SELECT false".into()),
            error: (!ok).then(|| "check `SELECT false` returned false".into()),
        }
    }

    fn record(runs: &[DrillRun]) -> DrillRecord {
        let mut r = DrillRecord::default();
        for run in runs {
            crate::jobs::drill::fold(&mut r, run);
        }
        r
    }

    const DAY: Duration = Duration::from_secs(86_400);

    fn policy(max_rto: Option<Duration>) -> DrillPolicy {
        DrillPolicy {
            interval: DAY,
            max_rto,
            armed_at: at("2026-11-20T00:00:00Z"),
        }
    }

    #[test]
    fn grades_each_case() {
        let now = at("2026-11-27T12:00:00Z");
        let grade = |r: &DrillRecord, p: &DrillPolicy| grade_drill(Some(r), p, now);
        let good = record(&[run("2026-11-27T03:00:00Z", true, 42.0)]);
        let o = grade(&good, &policy(None));
        assert_eq!((o.status, o.value), (Status::Pass, Some(42.0)));
        let o = grade(&good, &policy(Some(Duration::from_secs(30))));
        assert_eq!(o.status, Status::Warn);
        assert!(o.output.unwrap().contains("above max_rto (30s)"));
        let failed = record(&[
            run("2026-11-26T03:00:00Z", true, 40.0),
            run("2026-11-27T03:00:00Z", false, 0.0),
        ]);
        let o = grade(&failed, &policy(None));
        assert_eq!(o.status, Status::Fail);
        assert!(o.output.unwrap().contains("SELECT false"));
        let old = record(&[run("2026-11-25T11:00:00Z", true, 40.0)]);
        let o = grade(&old, &policy(None));
        assert_eq!(o.status, Status::Fail);
        assert!(o.output.unwrap().contains("2days"), "twice the interval");
    }

    #[test]
    fn no_drill_yet_warns_then_fails_after_twice_the_interval() {
        let p = policy(None);
        let o = grade_drill(None, &p, at("2026-11-21T00:00:00Z"));
        assert_eq!(o.status, Status::Warn);
        let o = grade_drill(
            Some(&DrillRecord::default()),
            &p,
            at("2026-11-22T00:00:01Z"),
        );
        assert_eq!(o.status, Status::Fail);
    }
}
