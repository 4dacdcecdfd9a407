//! Per-repository health checks: `<repo>:reachable`, `<repo>:writable`,
//! and on fs repositories `<repo>:leftovers` and `<repo>:capacity`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::BoxFuture;

use super::Check;
use super::jobs::short;
use crate::config::HealthConfig;
use crate::core::health::{CheckSpec, Observation, Status};
use crate::repo::Repository;
use crate::state::Shared;

/// A repository check's spec: `<repo>:<measurement>`, critical, periodic.
fn repository_spec(
    repo: &Repository,
    measurement: &str,
    interval: Duration,
    timeout: Duration,
) -> CheckSpec {
    CheckSpec {
        key: format!("{}:{measurement}", repo.name),
        component_id: repo.name.clone(),
        component_type: "datastore",
        interval,
        timeout,
        critical: true,
        periodic: true,
    }
}

/// `<repo>:reachable`: one listing round trip, in ms.
pub struct ReachableCheck {
    pub repo: Repository,
}

impl Check for ReachableCheck {
    fn spec(&self, config: &HealthConfig) -> CheckSpec {
        repository_spec(&self.repo, "reachable", config.interval, config.timeout)
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
        repository_spec(
            &self.repo,
            "writable",
            self.repo.writable_interval,
            config.timeout.max(std::time::Duration::from_secs(10)),
        )
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

/// `<repo>:leftovers` (fs): bytes in the repository's temp directory,
/// warning while some are older than `temp_grace` (a killed run's partial
/// uploads, which the next prune of any job on it collects).
pub struct LeftoversCheck {
    pub repo: Repository,
}

impl Check for LeftoversCheck {
    fn spec(&self, config: &HealthConfig) -> CheckSpec {
        repository_spec(
            &self.repo,
            "leftovers",
            self.repo.writable_interval,
            config.timeout.max(std::time::Duration::from_secs(10)),
        )
    }

    fn run<'a>(&'a self, _config: &'a HealthConfig) -> BoxFuture<'a, Observation> {
        async move {
            match self.repo.temp_usage().await {
                Ok(usage) => grade_leftovers(&usage.unwrap_or_default(), self.repo.temp_grace),
                Err(e) => Observation::fail(e.to_string()),
            }
        }
        .boxed()
    }
}

/// Pure verdict on a repository's temp files.
pub fn grade_leftovers(usage: &crate::repo::TempUsage, grace: Duration) -> Observation {
    let observation = Observation::new(Status::Pass, Some(usage.bytes as f64), Some("bytes"))
        .with_detail("files", usage.files)
        .with_detail("staleFiles", usage.stale_files)
        .with_detail("staleBytes", usage.stale_bytes)
        .with_detail("tempGraceSeconds", grace.as_secs());
    if usage.stale_files == 0 {
        return observation;
    }
    Observation {
        status: Status::Warn,
        ..observation
    }
    .with_output(format!(
        "{} bytes in {} temp file(s) older than temp_grace ({}): partial uploads of killed runs; the next prune of a job on this repository collects them",
        usage.stale_bytes,
        usage.stale_files,
        short(grace)
    ))
}

/// Free space wanted on a repository: room for this many backups of the
/// largest last backup of its jobs.
pub const CAPACITY_MARGIN: u64 = 2;

/// `<repo>:capacity` (fs): free bytes where the backups land, warning
/// when they are below [`CAPACITY_MARGIN`] times the largest last backup
/// of the repository's jobs.
pub struct CapacityCheck {
    pub repo: Repository,
    pub shared: Arc<Shared>,
    /// The jobs writing to this repository.
    pub jobs: Vec<String>,
}

impl Check for CapacityCheck {
    fn spec(&self, config: &HealthConfig) -> CheckSpec {
        repository_spec(
            &self.repo,
            "capacity",
            config.disk.interval.unwrap_or(config.interval),
            config.timeout,
        )
    }

    fn run<'a>(&'a self, _config: &'a HealthConfig) -> BoxFuture<'a, Observation> {
        let board = self.shared.jobs.snapshot();
        let largest = self
            .jobs
            .iter()
            .filter_map(|j| board.get(j.as_str()).and_then(|s| s.last_stored_bytes))
            .max();
        async move {
            match self.repo.free_bytes().await {
                Some(free) => grade_capacity(free, largest),
                None => Observation::fail(format!(
                    "cannot tell the free space of repository `{}`",
                    self.repo.name
                )),
            }
        }
        .boxed()
    }
}

/// Pure verdict: `free` bytes against the largest last backup.
pub fn grade_capacity(free: u64, largest: Option<u64>) -> Observation {
    let observation = Observation::new(Status::Pass, Some(free as f64), Some("bytes"))
        .with_detail("largestLastBackupBytes", largest)
        .with_detail("margin", CAPACITY_MARGIN);
    let Some(largest) = largest.filter(|l| free < l.saturating_mul(CAPACITY_MARGIN)) else {
        return observation;
    };
    let verdict = if free < largest {
        "the next backup will not fit"
    } else {
        "room for fewer than two more"
    };
    Observation {
        status: Status::Warn,
        ..observation
    }
    .with_output(format!(
        "{free} bytes free, the largest last backup is {largest} bytes: {verdict} (free space or prune)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_warns_below_the_margin() {
        let mb = 1 << 20;
        assert_eq!(grade_capacity(10 * mb, None).status, Status::Pass);
        assert_eq!(grade_capacity(10 * mb, Some(4 * mb)).status, Status::Pass);
        let tight = grade_capacity(6 * mb, Some(4 * mb));
        assert_eq!(tight.status, Status::Warn);
        assert!(tight.output.unwrap().contains("fewer than two more"));
        let full = grade_capacity(mb, Some(4 * mb));
        assert!(full.output.unwrap().contains("will not fit"));
    }
}
