//! Restore drills (`[jobs.<name>.drill]`, `vigil drill JOB`): the newest
//! backup (physical jobs: a random point of the recoverability window)
//! restored into a scratch target with the restore code, each `check_sql`
//! query answered with a single true, the time from the start of the
//! restore to the last answer recorded as the RTO, and the scratch target
//! removed. Nothing but the scratch target is ever touched.
//!
//! Each drill is recorded in the job's repository (`proofs/drill.json`),
//! the catalog (an `executions` row of kind `drill`) and the journal
//! (`drill.succeeded` / `drill.failed`); two drills of one job never run
//! at once (their own lease `<job>/locks/drill`), but a drill may run
//! beside the job's backups: it only reads the repository.

mod checks;
mod logical;
mod physical;
mod record;
pub mod schedule;
mod server;

use std::path::PathBuf;

use tokio_util::sync::CancellationToken;

use super::report::{Reporter, Run, RunKind, Sinks};
use super::{JobContext, Trigger};
use crate::config::{DrillConfig, JobKind};
use crate::core::proofs::{DrillRecord, DrillRun};
use crate::repo::RepoError;

pub use checks::queries as check_queries;
pub use physical::PhysicalError;
pub use record::{fold, trigger_word};

/// The lease and advisory lock drills of a job take.
pub const LOCK_NAME: &str = "drill";

/// What a physical drill's `restore_command` runs: this binary and its
/// config file, both absolute (the server runs it from the data directory).
#[derive(Debug, Clone, PartialEq)]
pub struct Invoker {
    pub vigil: PathBuf,
    pub config: PathBuf,
}

/// Why a drill failed, or did not run.
#[derive(Debug, thiserror::Error)]
pub enum DrillError {
    #[error(
        "job `{job}` has no [jobs.{job}.drill] section: add one with `every` (or `schedule`) and `target` (README \"Restore drills\")"
    )]
    NotConfigured { job: String },
    #[error("job `{job}` has no committed backup to drill yet: run `vigil backup {job}` first")]
    NoBackups { job: String },
    #[error(
        "another drill of job `{job}` is running (its lease <job>/locks/drill or advisory lock is held): wait for it to finish"
    )]
    Busy { job: String },
    #[error(transparent)]
    Lock(#[from] super::lock::LockError),
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error(
        "the scratch database `{database}` on {host} holds {tables} table(s): refusing to drill into it (nothing was touched); point drill.target at a missing or empty database"
    )]
    TargetNotEmpty {
        host: String,
        database: String,
        tables: i64,
    },
    #[error("restoring into the scratch target: {0}")]
    Restore(#[source] super::restore::RestoreError),
    #[error("check `{query}` {found}")]
    Check { query: String, found: String },
    #[error(
        "the drill's checks ran but the scratch database `{database}` on {host} could not be dropped ({detail}): drop it by hand before the next drill"
    )]
    Drop {
        host: String,
        database: String,
        detail: String,
    },
    #[error(transparent)]
    Physical(#[from] PhysicalError),
    #[error("cancelled (shutdown)")]
    Cancelled,
}

impl DrillError {
    /// The check query that did not return a single true.
    pub fn failed_query(&self) -> Option<&str> {
        match self {
            DrillError::Check { query, .. } => Some(query),
            _ => None,
        }
    }
}

/// One drill that ran: its record, and why it failed.
#[derive(Debug)]
pub struct Drilled {
    pub run: DrillRun,
    /// The scratch target as recorded (no secrets): `host:port/db` or a
    /// directory.
    pub target: String,
    pub failure: Option<DrillError>,
    /// The job's drill record after this run (what the board shows).
    pub record: DrillRecord,
}

/// What one drill attempt found, whichever its kind.
pub(super) struct Attempt {
    pub backup_id: Option<String>,
    pub recovery_target: Option<String>,
    pub target: String,
    /// The RTO in seconds, or why the drill failed.
    pub result: Result<f64, DrillError>,
}

/// Runs one drill of the job now. `Err` when no drill ran (none
/// configured, no backup yet, another drill running, the repository
/// unreadable): nothing is recorded then.
pub async fn run(
    ctx: &JobContext,
    trigger: Trigger,
    invoker: &Invoker,
    cancel: &CancellationToken,
) -> Result<Drilled, DrillError> {
    let config = ctx
        .job
        .drill
        .clone()
        .ok_or_else(|| DrillError::NotConfigured {
            job: ctx.name.clone(),
        })?;
    let Some(lock) = super::lock::take_named(ctx, LOCK_NAME, cancel).await? else {
        return Err(DrillError::Busy {
            job: ctx.name.clone(),
        });
    };
    let result = locked(ctx, &config, trigger, invoker, &lock.cancel).await;
    lock.release().await;
    result
}

/// The drill under its lock.
async fn locked(
    ctx: &JobContext,
    config: &DrillConfig,
    trigger: Trigger,
    invoker: &Invoker,
    cancel: &CancellationToken,
) -> Result<Drilled, DrillError> {
    let listing = ctx.repo.list(&ctx.name).await?;
    if listing.backups.is_empty() {
        return Err(DrillError::NoBackups {
            job: ctx.name.clone(),
        });
    }
    let report = Sinks::new(ctx);
    let run = Run {
        kind: RunKind::Drill,
        trigger,
        repository: ctx.repo.name.clone(),
        started: None,
    };
    let started_at = chrono::Utc::now();
    report.started(&run).await;
    let attempt = match ctx.job.kind {
        JobKind::PostgresPhysical => {
            physical::drill(ctx, config, &listing.backups, invoker, cancel).await
        }
        _ => logical::drill(ctx, config, listing.backups.last(), cancel).await,
    };
    let drill_run = record::drill_run(ctx, trigger, started_at, &attempt);
    report
        .finished(&run, &record::outcome(&drill_run, &attempt))
        .await;
    let record = record::save(ctx, &drill_run).await;
    record::log(ctx, &drill_run, &attempt);
    Ok(Drilled {
        run: drill_run,
        target: attempt.target,
        failure: attempt.result.err(),
        record,
    })
}
