//! Per-job and per-repository health checks: `<job>:freshness` (from the
//! job board, no I/O), `<job>:source`, `<repo>:reachable`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::FutureExt;
use futures::future::BoxFuture;

use super::JobContext;
use super::board::JobState;
use crate::config::HealthConfig;
use crate::health::{Check, CheckSpec, Observation, Shared, Status};
use crate::repo::Repository;

/// Grades the age of the newest backup against `max_age`.
pub fn grade_freshness(state: &JobState, now: DateTime<Utc>) -> Observation {
    let age = state
        .last_success
        .map(|t| (now - t).to_std().unwrap_or_default());
    let mut observation = match (age, state.max_age) {
        (None, _) if !state.restored => Observation::new(Status::Warn, None, Some("s"))
            .with_output("the repository has not been read yet"),
        // A first deploy should not page while its first backup is running.
        (None, Some(_)) if state.running.is_some() => {
            Observation::new(Status::Warn, None, Some("s"))
                .with_output("no backup yet; the first one is running")
        }
        (None, Some(_)) => Observation::fail("no backup yet"),
        (None, None) => Observation::new(Status::Pass, None, Some("s")),
        (Some(age), Some((warn, fail))) => {
            let observation = Observation::new(Status::Pass, Some(age.as_secs_f64()), Some("s"));
            if age >= fail {
                Observation {
                    status: Status::Fail,
                    ..observation
                }
                .with_output(format!(
                    "newest backup is {} old (fail after {})",
                    short(age),
                    short(fail)
                ))
            } else if age >= warn {
                Observation {
                    status: Status::Warn,
                    ..observation
                }
                .with_output(format!(
                    "newest backup is {} old (max_age {})",
                    short(age),
                    short(warn)
                ))
            } else {
                observation
            }
        }
        (Some(age), None) => Observation::new(Status::Pass, Some(age.as_secs_f64()), Some("s")),
    };
    if let Some(error) = &state.last_error {
        observation = observation.with_detail("lastError", error.clone());
        if observation.status == Status::Pass {
            // Still fresh, but the last attempt failed: say so without failing.
            observation.status = Status::Warn;
            observation.output = Some(format!("last run failed: {error}"));
        }
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

fn short(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
}

pub struct FreshnessCheck {
    pub job: String,
    pub shared: Arc<Shared>,
    pub critical: bool,
}

impl Check for FreshnessCheck {
    fn spec(&self, config: &HealthConfig) -> CheckSpec {
        CheckSpec {
            key: format!("{}:freshness", self.job),
            component_id: self.job.clone(),
            component_type: "component",
            interval: config.interval.min(Duration::from_secs(15)),
            timeout: config.timeout,
            critical: self.critical,
            periodic: true,
        }
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
                let client = self.ctx.connect_source().await?;
                let row = client
                    .query_one("SELECT version()", &[])
                    .await
                    .map_err(|e| crate::redact::error_chain(&e))?;
                Ok::<String, String>(row.get(0))
            }
            .await;
            match result {
                Ok(version) => Observation::new(
                    Status::Pass,
                    Some(started.elapsed().as_secs_f64() * 1000.0),
                    Some("ms"),
                )
                .with_detail("serverVersion", version),
                Err(e) => Observation::fail(format!("source unreachable: {e}")),
            }
        }
        .boxed()
    }
}

/// `<repo>:reachable`: one listing round trip, in ms.
pub struct ReachableCheck {
    pub repo: Repository,
}

impl Check for ReachableCheck {
    fn spec(&self, config: &HealthConfig) -> CheckSpec {
        CheckSpec {
            key: format!("{}:reachable", self.repo.name),
            component_id: self.repo.name.clone(),
            component_type: "datastore",
            interval: config.interval,
            timeout: config.timeout,
            critical: true,
            periodic: true,
        }
    }

    fn run<'a>(&'a self, _config: &'a HealthConfig) -> BoxFuture<'a, Observation> {
        async move {
            let started = Instant::now();
            match self.repo.probe().await {
                Ok(()) => Observation::new(
                    Status::Pass,
                    Some(started.elapsed().as_secs_f64() * 1000.0),
                    Some("ms"),
                ),
                Err(e) => Observation::fail(e.to_string()),
            }
        }
        .boxed()
    }
}

/// `<repo>:writable`: a probe object written, read back and removed every
/// `writable_interval` (not per health request), with the round trip in ms
/// and the service's guarantees alongside.
pub struct WritableCheck {
    pub repo: Repository,
    pub host: String,
}

impl Check for WritableCheck {
    fn spec(&self, config: &HealthConfig) -> CheckSpec {
        CheckSpec {
            key: format!("{}:writable", self.repo.name),
            component_id: self.repo.name.clone(),
            component_type: "datastore",
            interval: self.repo.writable_interval,
            timeout: config.timeout.max(std::time::Duration::from_secs(10)),
            critical: true,
            periodic: true,
        }
    }

    fn run<'a>(&'a self, _config: &'a HealthConfig) -> BoxFuture<'a, Observation> {
        async move {
            let started = Instant::now();
            let observation = match self.repo.probe_write(&self.host).await {
                Ok(()) => Observation::new(
                    Status::Pass,
                    Some(started.elapsed().as_secs_f64() * 1000.0),
                    Some("ms"),
                ),
                Err(e) => Observation::fail(e.to_string()),
            };
            observation
                .with_detail("scheme", self.repo.scheme.clone())
                .with_detail(
                    "guarantees",
                    serde_json::to_value(&self.repo.guarantees).unwrap_or_default(),
                )
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
        CheckSpec {
            key: format!("{}:{}", self.job, self.measurement),
            component_id: self.job.clone(),
            component_type: "component",
            interval: config.interval.min(Duration::from_secs(15)),
            timeout: config.timeout,
            critical: true,
            periodic: true,
        }
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

    fn state(age_secs: Option<i64>, now: DateTime<Utc>) -> JobState {
        JobState {
            max_age: Some((Duration::from_secs(3600), Duration::from_secs(7200))),
            last_success: age_secs.map(|a| now - chrono::Duration::seconds(a)),
            restored: true,
            ..Default::default()
        }
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
        let never = grade_freshness(&state(None, now), now);
        assert_eq!(
            (never.status, never.output.as_deref()),
            (Status::Fail, Some("no backup yet"))
        );
        let mut first = state(None, now);
        first.running = Some(crate::jobs::board::Running {
            started_at: now,
            trigger: "catch-up",
            source_bytes: Default::default(),
        });
        assert_eq!(grade_freshness(&first, now).status, Status::Warn);
        let mut unread = state(None, now);
        unread.restored = false;
        assert_eq!(grade_freshness(&unread, now).status, Status::Warn);
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

    #[test]
    fn a_failed_last_run_warns_while_still_fresh() {
        let now = Utc::now();
        let mut s = state(Some(60), now);
        s.last_error = Some("pg_dump exited with 1".into());
        let o = grade_freshness(&s, now);
        assert_eq!(o.status, Status::Warn);
        assert!(o.output.unwrap().contains("pg_dump exited"));
    }
}
