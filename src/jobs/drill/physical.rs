//! A physical job's drill: a time picked uniformly inside the
//! recoverability window (so the window is proven, not only the newest
//! backup), the base backup that reaches it laid out into a fresh
//! subdirectory of `target` (tablespaces mapped inside it too) with the
//! recovery settings `vigil restore --time` writes (`restore_command`
//! through `vigil wal-fetch`), a throwaway PostgreSQL started on it until
//! it has promoted, the checks, then the server stopped and the
//! subdirectory removed.

use std::path::{Path, PathBuf};
use std::time::Instant;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use super::server::{RunAs, Server};
use super::{Attempt, DrillError, Invoker, checks};
use crate::config::DrillConfig;
use crate::core::manifest::Manifest;
use crate::core::recovery::{RecoveryTarget, TargetAction};
use crate::jobs::JobContext;
use crate::jobs::restore::physical::{TablespaceMap, lay_out};
use crate::jobs::restore::recovery::{RecoveryRequest, choose_manifest, configure};

/// Why a physical drill could not restore or start its server.
#[derive(Debug, thiserror::Error)]
pub enum PhysicalError {
    #[error(
        "nothing is restorable: no kept base backup has a gap-free WAL chain (see `<job>:wal` and `vigil list`)"
    )]
    NoWindow,
    #[error("scratch directory {}: {source}", dir.display())]
    Scratch {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the laid-out data directory {} is owned by root, and PostgreSQL never runs as root: run vigil as the server's user or restore from a backup taken from a server run by it",
        dir.display()
    )]
    RootOwned { dir: PathBuf },
    #[error(
        "no OS user has uid {uid} (the owner of the laid-out files): the checks need its name as the role to connect as"
    )]
    NoUser { uid: u32 },
    #[error(
        "{} not found: set drill.pg_bin_dir to the server binaries of the backup's major version (apt-get install postgresql)",
        tool.display()
    )]
    NoServer { tool: PathBuf },
    #[error("cannot run {}: {source}", tool.display())]
    Spawn {
        tool: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the throwaway PostgreSQL did not start ({output}); its log ends: {log}")]
    Start { output: String, log: String },
    #[error(
        "the throwaway PostgreSQL stopped while recovering to {target} (the archive cannot reach it?); its log ends: {log}"
    )]
    Died { target: String, log: String },
    #[error(
        "recovery to {target} did not finish within {waited} (the job's max_duration); its log ends: {log}"
    )]
    RecoveryTimeout {
        target: String,
        waited: String,
        log: String,
    },
    #[error("cancelled (shutdown)")]
    Cancelled,
}

/// A time uniformly between `start` and `end` (millisecond steps), from
/// the random `draw`.
pub fn pick(start: DateTime<Utc>, end: DateTime<Utc>, draw: u64) -> DateTime<Utc> {
    let span = (end - start).num_milliseconds();
    if span <= 0 {
        return start;
    }
    start + chrono::Duration::milliseconds((draw % (span as u64 + 1)) as i64)
}

fn random() -> u64 {
    use rand_core::RngCore;
    rand_core::OsRng.next_u64()
}

pub(super) async fn drill(
    ctx: &JobContext,
    config: &DrillConfig,
    manifests: &[Manifest],
    invoker: &Invoker,
    cancel: &CancellationToken,
) -> Attempt {
    let scratch = PathBuf::from(config.target.expose()).join(format!(
        "vigil-drill-{}-{}",
        ctx.name,
        Utc::now().format("%Y%m%dT%H%M%S%.3fZ")
    ));
    let mut attempt = Attempt {
        backup_id: None,
        recovery_target: None,
        target: scratch.display().to_string(),
        result: Err(DrillError::Physical(PhysicalError::NoWindow)),
    };
    let (request, at) = match choose_target(ctx, manifests, invoker).await {
        Ok(chosen) => chosen,
        Err(e) => {
            attempt.result = Err(e);
            return attempt;
        }
    };
    attempt.recovery_target = Some(at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
    let manifest = match choose_manifest(ctx, None, &request).await {
        Ok(m) => m,
        Err(e) => {
            attempt.result = Err(DrillError::Restore(e));
            return attempt;
        }
    };
    attempt.backup_id = Some(manifest.backup_id.to_string());
    attempt.result = in_scratch(ctx, config, &manifest, &request, &scratch, cancel).await;
    attempt
}

/// The recovery request for a random time of the window, and the time.
async fn choose_target(
    ctx: &JobContext,
    manifests: &[Manifest],
    invoker: &Invoker,
) -> Result<(RecoveryRequest, DateTime<Utc>), DrillError> {
    let survey = crate::jobs::pitr::survey(ctx, manifests).await?;
    let window = survey.window().ok_or(PhysicalError::NoWindow)?;
    let at = pick(window.start, window.end, random());
    let request = RecoveryRequest {
        target: RecoveryTarget::Time(at),
        action: TargetAction::Promote,
        vigil: invoker.vigil.clone(),
        config: invoker.config.clone(),
    };
    Ok((request, at))
}

/// Everything under the fresh `scratch` directory, removed afterwards
/// whatever happened (a subdirectory that existed before is refused).
async fn in_scratch(
    ctx: &JobContext,
    config: &DrillConfig,
    manifest: &Manifest,
    request: &RecoveryRequest,
    scratch: &Path,
    cancel: &CancellationToken,
) -> Result<f64, DrillError> {
    let clock = Instant::now();
    make_scratch(scratch)?;
    let result = restore_and_check(ctx, config, manifest, request, scratch, cancel, clock).await;
    let removed = remove(scratch).await;
    let rto = result?;
    removed?;
    Ok(rto)
}

async fn restore_and_check(
    ctx: &JobContext,
    config: &DrillConfig,
    manifest: &Manifest,
    request: &RecoveryRequest,
    scratch: &Path,
    cancel: &CancellationToken,
    clock: Instant,
) -> Result<f64, DrillError> {
    let data = scratch.join("data");
    let map = scratch_tablespaces(manifest, scratch);
    let laid = lay_out(ctx, manifest, &data, &map, cancel)
        .await
        .map_err(|e| restore_error(e, cancel))?;
    configure(ctx, &laid.dir, &manifest.backup_id, request).map_err(DrillError::Restore)?;
    let run_as = RunAs::of(&data)?;
    run_as.own(scratch)?;
    let bin_dir = server_bin_dir(config)?;
    let timeout = ctx.job.max_duration;
    let server = Server::start(&bin_dir, &data, scratch, &run_as, timeout).await?;
    let database = config.database.as_deref().unwrap_or("postgres");
    let target = request.target.describe();
    let checked = async {
        let client = server
            .wait_promoted(database, &target, timeout, cancel)
            .await?;
        checks::run(&client, &checks::queries(&config.check_sql)).await?;
        Ok::<f64, DrillError>(clock.elapsed().as_secs_f64())
    }
    .await;
    server.stop().await;
    checked
}

fn restore_error(e: crate::jobs::restore::RestoreError, cancel: &CancellationToken) -> DrillError {
    if e.is_cancelled() || cancel.is_cancelled() {
        DrillError::Cancelled
    } else {
        DrillError::Restore(e)
    }
}

/// Each tablespace laid out inside the scratch directory, never at the
/// source's own location.
fn scratch_tablespaces(manifest: &Manifest, scratch: &Path) -> TablespaceMap {
    manifest
        .physical
        .iter()
        .flat_map(|p| &p.tablespaces)
        .map(|t| {
            (
                PathBuf::from(&t.location),
                scratch.join(format!("tablespace-{}", t.oid)),
            )
        })
        .collect()
}

/// `pg_bin_dir`, or the newest installed server binaries.
fn server_bin_dir(config: &DrillConfig) -> Result<PathBuf, PhysicalError> {
    if let Some(dir) = &config.pg_bin_dir {
        return Ok(dir.clone());
    }
    crate::pipeline::pgtools::newest_debian_bin_dir(|d| d.join("pg_ctl").is_file())
        .or_else(|| {
            crate::pipeline::pgtools::find_tool("pg_ctl")
                .and_then(|p| p.parent().map(Path::to_owned))
        })
        .ok_or_else(|| PhysicalError::NoServer {
            tool: PathBuf::from("pg_ctl"),
        })
}

/// Creates `target` if missing (traversable: the server's user reaches
/// its subdirectory through it) and the drill's own subdirectory, which
/// must not exist yet.
fn make_scratch(scratch: &Path) -> Result<(), PhysicalError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let failed = |dir: &Path| {
        let dir = dir.to_owned();
        move |source| PhysicalError::Scratch { dir, source }
    };
    if let Some(root) = scratch.parent()
        && !root.exists()
    {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(root)
            .map_err(failed(root))?;
    }
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(scratch)
        .map_err(failed(scratch))?;
    std::fs::set_permissions(scratch, std::fs::Permissions::from_mode(0o700))
        .map_err(failed(scratch))
}

async fn remove(scratch: &Path) -> Result<(), DrillError> {
    let dir = scratch.to_owned();
    tokio::task::spawn_blocking(move || std::fs::remove_dir_all(&dir))
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)))
        .map_err(|source| {
            DrillError::Physical(PhysicalError::Scratch {
                dir: scratch.to_owned(),
                source,
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn the_point_is_inside_the_window_whatever_the_draw() {
        let (start, end) = (at("2026-11-27T03:00:00Z"), at("2026-11-27T04:00:00Z"));
        for draw in [0, 1, 3_600_000, 3_600_001, u64::MAX, 1_234_567] {
            let t = pick(start, end, draw);
            assert!(start <= t && t <= end, "{draw}: {t}");
        }
        assert_eq!(pick(start, end, 3_600_000), end);
        assert_eq!(pick(end, start, 42), end, "an empty window: its start");
    }
}
