//! `<name>:utilization`: how full the filesystem holding one of vigil's
//! directories (state dir, log dir) is.

use std::path::{Path, PathBuf};

use futures::FutureExt;
use futures::future::BoxFuture;

use super::Check;
use crate::config::HealthConfig;
use crate::core::health::{CheckSpec, Observation, Status};

/// The filesystem under a watched directory could not be measured.
#[derive(Debug, thiserror::Error)]
#[error("cannot stat {}: {source} (does the directory exist?)", path.display())]
pub struct DiskError {
    pub path: PathBuf,
    #[source]
    pub source: nix::Error,
}

/// `<name>:utilization`: used fraction of the filesystem holding a directory.
pub struct DiskUsageCheck {
    pub name: String,
    pub path: PathBuf,
}

impl Check for DiskUsageCheck {
    fn spec(&self, config: &HealthConfig) -> CheckSpec {
        CheckSpec {
            key: format!("{}:utilization", self.name),
            component_id: self.name.clone(),
            component_type: "system",
            interval: config.disk.interval.unwrap_or(config.interval),
            timeout: config.timeout,
            critical: true,
            periodic: true,
        }
    }

    fn run<'a>(&'a self, config: &'a HealthConfig) -> BoxFuture<'a, Observation> {
        let path = self.path.clone();
        async move {
            // statvfs can block on a hung network filesystem: keep it off the async workers.
            let usage = tokio::task::spawn_blocking(move || disk_usage(&path)).await;
            match usage {
                Ok(Ok(usage)) => grade_disk(usage, config.disk.warn_ratio, config.disk.fail_ratio),
                Ok(Err(e)) => Observation::fail(e.to_string()),
                Err(e) => Observation::fail(format!("disk check panicked: {e}")),
            }
        }
        .boxed()
    }
}

/// Raw usage; graded by [`grade_disk`] with the thresholds of the moment.
fn disk_usage(path: &Path) -> Result<Observation, DiskError> {
    let crate::fsinfo::Space { total, available } =
        crate::fsinfo::space(path).map_err(|source| DiskError {
            path: path.to_owned(),
            source,
        })?;
    let used_ratio = if total == 0 {
        0.0
    } else {
        1.0 - available as f64 / total as f64
    };
    Ok(
        Observation::new(Status::Pass, Some(used_ratio), Some("ratio"))
            .with_detail("path", path.display().to_string())
            .with_detail("availableBytes", available)
            .with_detail("totalBytes", total),
    )
}

pub fn grade_disk(observation: Observation, warn_ratio: f64, fail_ratio: f64) -> Observation {
    let Some(used) = observation
        .value
        .filter(|_| observation.status == Status::Pass)
    else {
        return observation;
    };
    let (status, limit) = if used >= fail_ratio {
        (Status::Fail, fail_ratio)
    } else if used >= warn_ratio {
        (Status::Warn, warn_ratio)
    } else {
        return observation;
    };
    Observation {
        status,
        ..observation
    }
    .with_output(format!(
        "{:.1}% used, over the {:.0}% threshold",
        used * 100.0,
        limit * 100.0
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_grades_and_real_usage() {
        let used = |r| Observation::new(Status::Pass, Some(r), Some("ratio"));
        assert_eq!(grade_disk(used(0.5), 0.85, 0.95).status, Status::Pass);
        assert_eq!(grade_disk(used(0.9), 0.85, 0.95).status, Status::Warn);
        assert_eq!(grade_disk(used(0.99), 0.85, 0.95).status, Status::Fail);
        let real = disk_usage(Path::new("/")).unwrap();
        assert!((0.0..=1.0).contains(&real.value.unwrap()));
        let missing = disk_usage(Path::new("/no/such/dir")).unwrap_err();
        assert_eq!(
            missing.to_string(),
            "cannot stat /no/such/dir: ENOENT: No such file or directory (does the directory exist?)"
        );
    }
}
