//! Per-job health checks: `<job>:freshness` (from the job board, no
//! I/O), `<job>:source`, `<job>:retention` and `<job>:consistency`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::FutureExt;
use futures::future::BoxFuture;

use super::Check;
use crate::config::HealthConfig;
use crate::core::health::{CheckSpec, Observation, Status};
use crate::core::schedule::Freshness;
use crate::jobs::JobContext;
use crate::state::{JobState, Shared};

/// Grades whether the job is protected: its newest good backup is fresh
/// (thresholds always set, derived from the schedule when `max_age` is
/// not) and its runs succeed (one failure warns, `fail_after_failures` in
/// a row fail; a job that never succeeded fails on its first failure or
/// once its first scheduled run is missed). The output names the cause.
pub fn grade_freshness(state: &JobState, now: DateTime<Utc>) -> Observation {
    let age = state
        .last_success
        .map(|t| (now - t).to_std().unwrap_or_default());
    let mut observation = match (state.restored, state.freshness) {
        (false, _) => Observation::new(Status::Warn, None, Some("s"))
            .with_output("the repository has not been read yet"),
        (true, None) => Observation::new(Status::Warn, None, Some("s"))
            .with_output("the job is not scheduled yet"),
        (true, Some(freshness)) => {
            let by_age = match age {
                Some(age) => grade_age(age, &freshness),
                None => grade_first_backup(state, &freshness, now),
            };
            let by_runs = grade_runs(state, &freshness);
            let mut parts = [by_runs, by_age];
            // The worst verdict leads the output; at equal rank, the failed
            // run's cause comes before its consequence.
            parts.sort_by_key(|(status, _)| std::cmp::Reverse(*status));
            let status = parts[0].0;
            let output: Vec<String> = parts.into_iter().filter_map(|(_, o)| o).collect();
            let observation = Observation::new(status, age.map(|a| a.as_secs_f64()), Some("s"))
                .with_detail("warnAfterSeconds", freshness.warn_after.as_secs())
                .with_detail("failAfterSeconds", freshness.fail_after.as_secs())
                .with_detail("consecutiveFailures", state.consecutive_failures);
            if output.is_empty() {
                observation
            } else {
                observation.with_output(output.join("; "))
            }
        }
    };
    if let Some(error) = &state.last_error {
        observation = observation.with_detail("lastError", error.clone());
    }
    let stamp =
        |t: Option<DateTime<Utc>>| t.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    observation = observation
        .with_detail("backups", state.backups)
        .with_detail("lastSuccess", stamp(state.last_success))
        .with_detail("oldest", stamp(state.oldest))
        .with_detail("nextRun", stamp(state.next_run))
        .with_detail("runs", state.runs_total)
        .with_detail("failures", state.failures_total);
    if let Some(running) = &state.running {
        let elapsed = (now - running.started_at).num_milliseconds() as f64 / 1000.0;
        observation = observation.with_detail(
            "running",
            serde_json::json!({
                "startedAt": stamp(Some(running.started_at)),
                "trigger": running.trigger,
                "elapsedSeconds": elapsed,
                "sourceBytes": state.running_bytes(),
            }),
        );
    }
    observation
}

type Verdict = (Status, Option<String>);

/// The newest backup's age against the thresholds.
fn grade_age(age: Duration, freshness: &Freshness) -> Verdict {
    if age >= freshness.fail_after {
        (
            Status::Fail,
            Some(format!(
                "newest backup is {} old (fails after {})",
                short(age),
                short(freshness.fail_after)
            )),
        )
    } else if age >= freshness.warn_after {
        (
            Status::Warn,
            Some(format!(
                "newest backup is {} old (warns after {})",
                short(age),
                short(freshness.warn_after)
            )),
        )
    } else {
        (Status::Pass, None)
    }
}

/// A job with no backup at all: waiting for its first run is a warning;
/// a first run that was due and did not happen is a failure (a failed one
/// is graded by [`grade_runs`]).
fn grade_first_backup(state: &JobState, freshness: &Freshness, now: DateTime<Utc>) -> Verdict {
    let at = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    if state.running.is_some() {
        return (
            Status::Warn,
            Some("no backup yet; the first one is running".into()),
        );
    }
    match state.first_due {
        _ if state.consecutive_failures > 0 => (Status::Fail, Some("no backup yet".into())),
        Some(due) if now >= due + freshness.grace => (
            Status::Fail,
            Some(format!(
                "no backup yet: the run due at {} did not happen",
                at(due)
            )),
        ),
        Some(due) => (
            Status::Warn,
            Some(format!(
                "no backup yet; the first run is due at {}",
                at(due)
            )),
        ),
        None => (Status::Warn, Some("no backup yet".into())),
    }
}

/// Consecutive failed runs: one warns, `fail_after_failures` fail, and a
/// job that never succeeded fails on its first.
fn grade_runs(state: &JobState, freshness: &Freshness) -> Verdict {
    let failed = state.consecutive_failures;
    let error = state.last_error.as_deref().unwrap_or("unknown error");
    let output = match failed {
        0 => return (Status::Pass, None),
        1 => format!("last run failed: {error}"),
        n => format!("the last {n} runs failed, the latest with: {error}"),
    };
    let status = if failed >= freshness.fail_after_failures || state.last_success.is_none() {
        Status::Fail
    } else {
        Status::Warn
    };
    (status, Some(output))
}

pub(super) fn short(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
}

/// A job's board-read check `<job>:<measurement>`: critical, at most 15 s
/// apart (it reads memory only).
pub(super) fn job_spec(job: &str, measurement: &str, config: &HealthConfig) -> CheckSpec {
    CheckSpec {
        key: format!("{job}:{measurement}"),
        component_id: job.to_owned(),
        component_type: "component",
        interval: config.interval.min(Duration::from_secs(15)),
        timeout: config.timeout,
        critical: true,
        periodic: true,
    }
}

/// `<job>:freshness`: critical for every job (a job is protected only
/// while it is fresh and its runs succeed).
pub struct FreshnessCheck {
    pub job: String,
    pub shared: Arc<Shared>,
}

impl Check for FreshnessCheck {
    fn spec(&self, config: &HealthConfig) -> CheckSpec {
        job_spec(&self.job, "freshness", config)
    }

    fn run<'a>(&'a self, _config: &'a HealthConfig) -> BoxFuture<'a, Observation> {
        let state = self.shared.jobs.get(&self.job).unwrap_or_default();
        async move { grade_freshness(&state, Utc::now()) }.boxed()
    }
}

/// `<job>:source`: connect and `SELECT version()`, in ms; for a files job,
/// every path exists and its top level can be read.
pub struct SourceCheck {
    pub ctx: JobContext,
}

impl Check for SourceCheck {
    fn spec(&self, config: &HealthConfig) -> CheckSpec {
        CheckSpec {
            key: format!("{}:source", self.ctx.name),
            component_id: self.ctx.name.clone(),
            component_type: "datastore",
            interval: config.interval,
            timeout: config.timeout,
            critical: true,
            periodic: true,
        }
    }

    fn run<'a>(&'a self, _config: &'a HealthConfig) -> BoxFuture<'a, Observation> {
        if self.ctx.job.kind == crate::config::JobKind::Files {
            let paths = self.ctx.job.paths.clone();
            return async move {
                let started = Instant::now();
                let checked = tokio::task::spawn_blocking(move || {
                    paths.iter().try_for_each(|p| {
                        let meta =
                            std::fs::metadata(p).map_err(|e| format!("{}: {e}", p.display()))?;
                        if meta.is_dir() {
                            std::fs::read_dir(p).map_err(|e| format!("{}: {e}", p.display()))?;
                        }
                        Ok::<(), String>(())
                    })
                })
                .await
                .unwrap_or_else(|e| Err(e.to_string()));
                match checked {
                    Ok(()) => Observation::new(
                        Status::Pass,
                        Some(started.elapsed().as_secs_f64() * 1000.0),
                        Some("ms"),
                    ),
                    Err(e) => Observation::fail(format!("cannot read the job's paths: {e}")),
                }
            }
            .boxed();
        }
        async move {
            let started = Instant::now();
            let result = async {
                let client = self.ctx.open_source().await.map_err(|e| e.to_string())?;
                let sql = format!(
                    "SELECT version(), ({})",
                    crate::pgconn::SESSION_ENCRYPTED_SQL
                );
                let row = client
                    .query_one(&sql, &[])
                    .await
                    .map_err(|e| crate::core::redact::error_chain(&e))?;
                Ok::<(String, bool), String>((row.get(0), row.get(1)))
            }
            .await;
            match result {
                Ok((version, encrypted)) => Observation::new(
                    Status::Pass,
                    Some(started.elapsed().as_secs_f64() * 1000.0),
                    Some("ms"),
                )
                .with_detail("serverVersion", version)
                .with_detail("encrypted", encrypted),
                Err(e) => Observation::fail(format!("source unreachable: {e}")),
            }
        }
        .boxed()
    }
}

/// Grades the last prune: `warn` after a failed one.
pub fn grade_retention(state: &JobState) -> Observation {
    let p = &state.prune;
    let stamp = p
        .last_success
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    let observation = match &p.last_error {
        Some(error) => Observation::new(Status::Warn, None, None)
            .with_output(format!("last prune failed: {error}")),
        None => Observation::new(Status::Pass, None, None),
    };
    observation
        .with_detail("lastPrune", stamp)
        .with_detail("deletedBackups", p.deleted_total)
        .with_detail("freedBytes", p.freed_bytes_total)
}

/// Grades the catalog/repository cross-check of the last prune and the
/// repository's damaged manifests.
pub fn grade_consistency(state: &JobState) -> Observation {
    let p = &state.prune;
    let disagreements =
        p.missing_from_repository.len() + p.unknown_to_catalog.len() + state.damaged.len();
    let damaged: Vec<String> = state
        .damaged
        .iter()
        .map(|(id, why)| format!("{id} ({why})"))
        .collect();
    let observation = Observation::new(Status::Pass, Some(disagreements as f64), None)
        .with_detail("missingFromRepository", p.missing_from_repository.clone())
        .with_detail("unknownToCatalog", p.unknown_to_catalog.clone())
        .with_detail("damagedManifests", damaged.clone());
    if disagreements == 0 {
        return observation;
    }
    let mut parts = Vec::new();
    if !damaged.is_empty() {
        parts.push(format!(
            "damaged manifests, not counted as backups (inspect them; prune leaves them alone): {}",
            damaged.join("; ")
        ));
    }
    if !p.missing_from_repository.is_empty() {
        parts.push(format!(
            "recorded in the catalog but missing from the repository: {}",
            p.missing_from_repository.join(", ")
        ));
    }
    if !p.unknown_to_catalog.is_empty() {
        parts.push(format!(
            "in the repository but unknown to the catalog: {}",
            p.unknown_to_catalog.join(", ")
        ));
    }
    Observation {
        status: Status::Warn,
        ..observation
    }
    .with_output(parts.join("; "))
}

/// `<job>:retention` or `<job>:consistency`, read from the job board.
pub struct BoardCheck {
    pub job: String,
    pub shared: Arc<Shared>,
    /// `retention` or `consistency`.
    pub measurement: &'static str,
    pub grade: fn(&JobState) -> Observation,
}

impl Check for BoardCheck {
    fn spec(&self, config: &HealthConfig) -> CheckSpec {
        job_spec(&self.job, self.measurement, config)
    }

    fn run<'a>(&'a self, _config: &'a HealthConfig) -> BoxFuture<'a, Observation> {
        let state = self.shared.jobs.get(&self.job).unwrap_or_default();
        let grade = self.grade;
        async move { grade(&state) }.boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hours(n: u64) -> Duration {
        Duration::from_secs(n * 3600)
    }

    fn freshness() -> Freshness {
        Freshness {
            warn_after: hours(1),
            fail_after: hours(2),
            grace: Duration::from_secs(600),
            fail_after_failures: 2,
        }
    }

    fn state(age_secs: Option<i64>, now: DateTime<Utc>) -> JobState {
        JobState {
            freshness: Some(freshness()),
            last_success: age_secs.map(|a| now - chrono::Duration::seconds(a)),
            restored: true,
            ..Default::default()
        }
    }

    fn grade(s: &JobState, now: DateTime<Utc>) -> (Status, String) {
        let o = grade_freshness(s, now);
        (o.status, o.output.unwrap_or_default())
    }

    #[test]
    fn freshness_grades() {
        let now = Utc::now();
        assert_eq!(
            grade_freshness(&state(Some(60), now), now).status,
            Status::Pass
        );
        assert_eq!(
            grade_freshness(&state(Some(4000), now), now).status,
            Status::Warn
        );
        assert_eq!(
            grade_freshness(&state(Some(8000), now), now).status,
            Status::Fail
        );
        let mut unread = state(None, now);
        unread.restored = false;
        assert_eq!(grade_freshness(&unread, now).status, Status::Warn);
        let mut unarmed = state(Some(60), now);
        unarmed.freshness = None;
        assert_eq!(grade_freshness(&unarmed, now).status, Status::Warn);
    }

    #[test]
    fn a_job_without_a_backup_fails_once_its_first_run_is_missed() {
        let now = Utc::now();
        let mut waiting = state(None, now);
        waiting.first_due = Some(now + chrono::Duration::hours(3));
        let (status, output) = grade(&waiting, now);
        assert_eq!(status, Status::Warn);
        assert!(output.starts_with("no backup yet; the first run is due at"));

        let mut first = waiting.clone();
        first.first_due = Some(now - chrono::Duration::hours(1));
        first.running = Some(crate::state::Running {
            started_at: now,
            trigger: "catch-up",
            source_bytes: Default::default(),
        });
        assert_eq!(grade(&first, now).0, Status::Warn);

        let mut missed = waiting.clone();
        missed.first_due = Some(now - chrono::Duration::hours(1));
        let (status, output) = grade(&missed, now);
        assert_eq!(status, Status::Fail);
        assert!(output.contains("did not happen"), "{output}");

        let mut within_grace = waiting.clone();
        within_grace.first_due = Some(now - chrono::Duration::seconds(60));
        assert_eq!(grade(&within_grace, now).0, Status::Warn);
    }

    #[test]
    fn a_job_that_never_succeeded_fails_on_its_first_failure() {
        let now = Utc::now();
        let mut s = state(None, now);
        s.first_due = Some(now + chrono::Duration::hours(20));
        s.record_failure("permission denied for table pgbench_history".into());
        let (status, output) = grade(&s, now);
        assert_eq!(status, Status::Fail);
        assert!(
            output.contains("last run failed: permission denied for table pgbench_history"),
            "{output}"
        );
        assert!(
            !output.starts_with("no backup yet"),
            "the cause leads: {output}"
        );
    }

    #[test]
    fn failures_warn_then_fail_whatever_the_age() {
        let now = Utc::now();
        let mut s = state(Some(60), now);
        s.record_failure("pg_dump exited with 1".into());
        let (status, output) = grade(&s, now);
        assert_eq!(status, Status::Warn);
        assert_eq!(output, "last run failed: pg_dump exited with 1");
        s.record_failure("pg_dump exited with 1".into());
        let (status, output) = grade(&s, now);
        assert_eq!(status, Status::Fail);
        assert!(output.contains("the last 2 runs failed"), "{output}");

        // Stale and failing: both causes are named, the worst first.
        let mut old = state(Some(8000), now);
        old.record_failure("boom".into());
        let (status, output) = grade(&old, now);
        assert_eq!(status, Status::Fail);
        assert!(
            output.starts_with("newest backup is 2h 13m 20s old") && output.contains("boom"),
            "{output}"
        );

        let mut once = state(Some(60), now);
        once.freshness = Some(Freshness {
            fail_after_failures: 1,
            ..freshness()
        });
        once.record_failure("boom".into());
        assert_eq!(grade(&once, now).0, Status::Fail);
    }

    #[test]
    fn retention_and_consistency_grades() {
        let mut s = JobState::default();
        assert_eq!(grade_retention(&s).status, Status::Pass);
        s.prune.last_error = Some("plan refused".into());
        assert_eq!(grade_retention(&s).status, Status::Warn);
        assert_eq!(grade_consistency(&s).status, Status::Pass);
        s.damaged = vec![(
            "20261124T000000Z".into(),
            "manifest's finishedAt lies in the future".into(),
        )];
        let c = grade_consistency(&s);
        assert_eq!(c.status, Status::Warn);
        assert!(
            c.output
                .unwrap()
                .contains("20261124T000000Z (manifest's finishedAt lies in the future)")
        );
        s.damaged.clear();
        s.prune.missing_from_repository = vec!["20261123T000000Z".into()];
        let c = grade_consistency(&s);
        assert_eq!(c.status, Status::Warn);
        assert!(
            c.output
                .unwrap()
                .contains("missing from the repository: 20261123T000000Z")
        );
    }
}
