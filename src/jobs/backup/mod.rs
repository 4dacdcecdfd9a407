//! One backup run, whatever its kind: the job lock, the scheduled-slot
//! check, the execution row and journal events, then the kind's own run
//! (`pg`: logical dumps, `files`: a tar of file trees), and on failure the
//! removal of what it wrote. A new kind is one more file beside these.

mod files;
mod pg;
mod physical;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use chrono::Utc;
use thiserror::Error;
use tokio_util::sync::CancellationToken;

use super::report::{Event, Fact, Outcome, Reporter, Run, RunKind, Sinks, Status};
use super::{JobContext, Trigger, lock};
use crate::config::{Compression, JobKind};
use crate::core::manifest::{CompressionFacts, EncryptionFacts, Manifest};
use crate::pipeline::upload::{EncodeSpec, PipelineError};
use crate::repo::RepoError;

#[derive(Debug, Error)]
pub enum BackupError {
    #[error("job `{0}` is already running elsewhere (another vigil holds its lock); skipped")]
    Locked(String),
    #[error(transparent)]
    Lock(#[from] lock::LockError),
    /// Another vigil took the job's lease over; `why` says how.
    #[error("{why}; nothing was committed")]
    LeaseLost { job: String, why: String },
    #[error(
        "the run scheduled for {scheduled} was already taken by another vigil (backup {backup_id}); skipped"
    )]
    AlreadyDone {
        scheduled: String,
        backup_id: String,
    },
    /// `detail` is redacted.
    #[error("cannot connect to the source: {detail}")]
    Source { job: String, detail: String },
    #[error(
        "cannot reach the source {host}: {detail} (is PostgreSQL running there, and is `source` right?)"
    )]
    SourceUnreachable { host: String, detail: String },
    #[error(
        "{tool} not found: install the PostgreSQL client (apt-get install postgresql-client) or set `{tool}`"
    )]
    ToolMissing { tool: &'static str },
    #[error(transparent)]
    ToolVersion(#[from] crate::pipeline::pgtools::ToolError),
    #[error(
        "{} is version {version}, older than the server ({server_version}): install postgresql-client-{server_major} or point `jobs.{job}.pg_dump` at a newer one",
        tool.display()
    )]
    ToolTooOld {
        tool: std::path::PathBuf,
        version: String,
        server_version: String,
        server_major: u32,
        job: String,
    },
    #[error("cannot start {tool}: {source}")]
    ToolStart {
        tool: String,
        #[source]
        source: std::io::Error,
    },
    #[error("database `{database}`: {error}")]
    Object {
        database: String,
        error: PipelineError,
    },
    #[error(transparent)]
    Repo(#[from] crate::repo::RepoError),
    #[error("run exceeded max_duration ({})", humantime::format_duration(*.max))]
    TooLong { max: std::time::Duration },
    #[error("cancelled (shutdown)")]
    Cancelled,
    /// The file archiver's stream failed.
    #[error("{0}")]
    Files(PipelineError),
    #[error(
        "`strict = true` and {changed} file(s) changed, {vanished} vanished while read (e.g. {examples})"
    )]
    Strict {
        changed: u64,
        vanished: u64,
        examples: String,
    },
    #[error(transparent)]
    PassFile(#[from] crate::pipeline::pgtools::PassFileError),
    /// The replication session (postgres-physical) failed.
    #[error(transparent)]
    Replication(#[from] crate::pgconn::replication::ReplicationError),
    #[error(
        "{host} runs PostgreSQL {version}: postgres-physical needs 15 or newer (use kind = \"postgres\" for older servers)"
    )]
    ServerTooOld { host: String, version: String },
    /// The base backup ended but its last WAL segment never reached the repository.
    #[error(
        "the base backup's last WAL segment {segment} did not reach the repository within {} ({path}): nothing was committed. Is archive_command = 'vigil --config FILE wal-push {job} %p' set (with archive_mode = on) and working? {archiver}",
        humantime::format_duration(*.after)
    )]
    WalNotArchived {
        job: String,
        segment: String,
        path: String,
        after: std::time::Duration,
        archiver: String,
    },
}

impl BackupError {
    /// `executions.status` for this failure.
    pub fn status(&self) -> Status {
        match self {
            BackupError::Locked(_) | BackupError::AlreadyDone { .. } => Status::Skipped,
            BackupError::Cancelled
            | BackupError::Object {
                error: PipelineError::Cancelled,
                ..
            } => Status::Aborted,
            _ => Status::Failed,
        }
    }
}

/// Live progress of a run, for status output and metrics.
#[derive(Debug, Default)]
pub struct Progress {
    /// Raw bytes read from the source so far in this run, over all its
    /// objects (a progress line's rate must not fall back at each object).
    pub source_bytes: Arc<AtomicU64>,
    /// The backup id this run writes under, once allocated: kept outside
    /// the run so its leftovers can be removed even when the run is
    /// dropped (max_duration).
    backup_id: std::sync::Mutex<Option<String>>,
}

impl Progress {
    fn set_backup_id(&self, id: &str) {
        *self.backup_id.lock().unwrap_or_else(|p| p.into_inner()) = Some(id.to_owned());
    }

    fn take_backup_id(&self) -> Option<String> {
        self.backup_id
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }
}

/// Runs one backup of `ctx` now. Holds the job's lock for the whole run.
pub async fn run(
    ctx: &JobContext,
    trigger: Trigger,
    progress: &Progress,
    cancel: &CancellationToken,
) -> Result<Manifest, BackupError> {
    run_scheduled(ctx, trigger, None, progress, cancel, &Sinks::new(ctx)).await
}

/// Like [`run`], for the run standing for `scheduled_for`: skipped when a
/// replica has already backed up at or after that time. The start and the
/// outcome go to `report` (a skipped run reports nothing: it is another
/// vigil's).
pub async fn run_scheduled(
    ctx: &JobContext,
    trigger: Trigger,
    scheduled_for: Option<chrono::DateTime<Utc>>,
    progress: &Progress,
    cancel: &CancellationToken,
    report: &dyn Reporter,
) -> Result<Manifest, BackupError> {
    let run = Run {
        kind: RunKind::Backup,
        trigger,
        repository: ctx.repo.name.clone(),
        started: Some(Event::emit(
            "backup.started",
            serde_json::json!({ "trigger": trigger.as_str(), "repository": ctx.repo.name, "host": ctx.host }),
        )),
    };
    let lock = match lock::take(ctx, cancel).await {
        Ok(lock) => lock,
        Err(e) => {
            let error = BackupError::Lock(e);
            report.finished(&run, &failure(ctx, trigger, &error)).await;
            return Err(error);
        }
    };
    let Some(lock) = lock else {
        tracing::info!(job = %ctx.name, "another vigil holds the job lock; run skipped");
        return Err(BackupError::Locked(ctx.name.clone()));
    };
    if let Some(scheduled) = scheduled_for
        && let Some(done) = already_done(ctx, scheduled).await
    {
        lock.release().await;
        return Err(done);
    }
    tracing::info!(job = %ctx.name, trigger = trigger.as_str(), "backup started");
    // Recording the start (the executions row: round trips to the
    // catalog) goes on beside the run instead of before it: a fixed cost
    // of every backup. Both are done before the outcome is reported.
    // The lock's token also fires when its lease is lost.
    let (_, locked) = tokio::join!(
        report.started(&run),
        tokio::time::timeout(
            ctx.job.max_duration,
            run_locked(ctx, progress, &lock.cancel),
        )
    );
    let result = match (locked, lock.lost()) {
        (Err(_), _) => Err(BackupError::TooLong {
            max: ctx.job.max_duration,
        }),
        (Ok(Err(_)), Some(why)) => Err(BackupError::LeaseLost {
            job: ctx.name.clone(),
            why,
        }),
        (Ok(result), _) => result,
    };
    let written = progress.take_backup_id();
    let outcome = match &result {
        Ok(m) => success(ctx, trigger, m),
        Err(e) => {
            let outcome = failure(ctx, trigger, e);
            if let Some(id) = &written {
                discard_leftovers(ctx, id).await;
            }
            outcome
        }
    };
    report.finished(&run, &outcome).await;
    lock.release().await;
    result
}

/// When a replica has already backed up at or after `scheduled`, the
/// error that says so (the slot is taken).
async fn already_done(ctx: &JobContext, scheduled: chrono::DateTime<Utc>) -> Option<BackupError> {
    let newest = ctx
        .repo
        .list(&ctx.name)
        .await
        .map(|l| l.backups.into_iter().max_by_key(|m| m.started_at));
    let newest = newest.ok().flatten()?;
    if newest.started_at < scheduled {
        return None;
    }
    tracing::info!(job = %ctx.name, backup = %newest.backup_id, "scheduled run already taken by another vigil; skipped");
    Some(BackupError::AlreadyDone {
        scheduled: scheduled.to_rfc3339(),
        backup_id: newest.backup_id.into(),
    })
}

/// A committed backup, as every sink records it.
fn success(ctx: &JobContext, trigger: Trigger, m: &Manifest) -> Outcome {
    tracing::info!(job = %ctx.name, backup = %m.backup_id, stored_bytes = m.stored_bytes(), source_bytes = m.raw_bytes(), "backup committed");
    let event = Event::emit(
        "backup.succeeded",
        serde_json::json!({
            "backup_id": m.backup_id,
            "trigger": trigger.as_str(),
            "stored_bytes": m.stored_bytes(),
            "source_bytes": m.raw_bytes(),
            "seconds": (m.finished_at - m.started_at).num_milliseconds() as f64 / 1000.0,
        }),
    );
    Outcome {
        backup_id: Some(m.backup_id.to_string()),
        source_bytes: Some(m.raw_bytes()),
        stored_bytes: Some(m.stored_bytes()),
        details: m.files.as_ref().map(|f| f.report.clone()),
        ..Outcome::succeeded(Fact::Backup(Box::new(m.clone())), Some(event))
    }
}

/// A failed (or aborted) run, as every sink records it.
fn failure(ctx: &JobContext, trigger: Trigger, e: &BackupError) -> Outcome {
    let message = ctx.redact(&e.to_string());
    tracing::warn!(job = %ctx.name, error = %message, "backup failed");
    let event = Event::emit(
        "backup.failed",
        serde_json::json!({ "trigger": trigger.as_str(), "status": e.status().as_str(), "error": message }),
    );
    Outcome::failed(e.status(), message, Some(event))
}

/// The run of its kind, under the lock.
async fn run_locked(
    ctx: &JobContext,
    progress: &Progress,
    cancel: &CancellationToken,
) -> Result<Manifest, BackupError> {
    match ctx.job.kind {
        JobKind::Files => files::run(ctx, progress, cancel).await,
        JobKind::Postgres | JobKind::Mirror => pg::run(ctx, progress, cancel).await,
        JobKind::PostgresPhysical => physical::run(ctx, progress, cancel).await,
    }
}

/// The job's source as a connection config, for a run's first step.
fn source(ctx: &JobContext) -> Result<crate::config::conninfo::ConnInfo, BackupError> {
    ctx.source_config().map_err(|e| BackupError::Source {
        job: ctx.name.clone(),
        detail: ctx.redact(&e.to_string()),
    })
}

/// A fresh backup id for a run started at `started_at`, noted in
/// `progress` so a failed run can remove what it wrote under it.
async fn allocate_id(
    ctx: &JobContext,
    started_at: chrono::DateTime<Utc>,
    progress: &Progress,
) -> Result<crate::core::ids::BackupId, BackupError> {
    let mut attempt = 0;
    loop {
        let id = crate::core::ids::BackupId::at(started_at, attempt);
        if !ctx.repo.backup_exists(&ctx.name, &id).await? {
            progress.set_backup_id(&id);
            return Ok(id);
        }
        attempt += 1;
    }
}

/// Best effort after a failed run: removes what it wrote under its backup
/// directory, so nothing is left for prune to collect (and no leftover is
/// reported run after run). A directory holding a manifest is never
/// touched: that is a committed backup, whatever the run reported.
async fn discard_leftovers(ctx: &JobContext, backup_id: &str) {
    match ctx.repo.read_manifest(&ctx.name, backup_id).await {
        Err(RepoError::NoSuchBackup { .. }) => {}
        Ok(_) => {
            tracing::warn!(job = %ctx.name, backup = %backup_id, "the failed run's manifest exists: left in place as a committed backup");
            return;
        }
        Err(e) => {
            tracing::warn!(job = %ctx.name, backup = %backup_id, error = %ctx.redact(&e.to_string()), "the failed run's leftovers were not removed (its manifest cannot be checked); prune collects them after orphan_grace");
            return;
        }
    }
    match ctx.repo.delete_leftovers(&ctx.name, backup_id).await {
        Ok(()) => {
            tracing::info!(job = %ctx.name, backup = %backup_id, "removed what the failed run wrote")
        }
        Err(e) => {
            tracing::warn!(job = %ctx.name, backup = %backup_id, error = %ctx.redact(&e.to_string()), "the failed run's leftovers were not removed; prune collects them after orphan_grace")
        }
    }
}

/// zstd's job size. Small jobs where the upload sets the pace (multipart
/// object stores) or the input may not compress (file trees hold media and
/// archives): zstd keeps up to seven finished jobs' output buffers, and on
/// incompressible input each is resident at full size (83 MiB peak for 4 MiB
/// jobs, 57 MiB for 2 MiB, at the same speed). Database dumps compress, and
/// keep 4 MiB jobs for their throughput (2 MiB costs 10–15 % there).
fn zstd_job_size(multipart: bool, file_tree: bool) -> u32 {
    if multipart || file_tree {
        crate::pipeline::codec::ZSTD_SMALL_JOB_SIZE
    } else {
        crate::pipeline::codec::ZSTD_JOB_SIZE
    }
}

/// How the job's objects are encoded, and the file-name suffix that says so.
fn encode_spec(ctx: &JobContext) -> (EncodeSpec, String) {
    let job = &ctx.job;
    let encode = EncodeSpec {
        compression: job.compression,
        level: job.level(),
        workers: job
            .compression_workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as u32)),
        recipients: ctx.recipients.clone(),
        zstd_job_size: zstd_job_size(ctx.repo.guarantees.multipart, job.kind == JobKind::Files),
    };
    let suffix = format!(
        "{}{}",
        job.compression.extension(),
        if ctx.recipients.is_empty() {
            ""
        } else {
            ".age"
        }
    );
    (encode, suffix)
}

/// The manifest's compression and encryption facts for this job.
fn codec_facts(ctx: &JobContext) -> (CompressionFacts, Option<EncryptionFacts>) {
    let job = &ctx.job;
    let compression = CompressionFacts {
        algorithm: job.compression.as_str().into(),
        level: if job.compression == Compression::None {
            0
        } else {
            job.level()
        },
    };
    let encryption = (!ctx.recipients.is_empty()).then(|| EncryptionFacts {
        scheme: "age".into(),
        recipients: ctx.recipients.iter().map(|r| r.to_string()).collect(),
    });
    (compression, encryption)
}
