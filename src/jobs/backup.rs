//! One backup run of a postgres job: lock, source facts, one object per
//! database (plus globals for `all`), then the manifest (the commit point).

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use chrono::Utc;
use thiserror::Error;
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

use super::executions::{self, Finish};
use super::{JobContext, Trigger, lock};
use crate::config::{Compression, Databases};
use crate::pipeline::pgtools::{describe_host, find_tool, libpq_env, tool_version};
use crate::pipeline::upload::{EncodeSpec, PipelineError, Upload, UploadLimits, upload_child};
use crate::repo::RepoError;
use crate::repo::manifest::{
    CompressionFacts, EncryptionFacts, FORMAT_VERSION, Manifest, ObjectEntry, SourceFacts,
    object_name,
};

#[derive(Debug, Error)]
pub enum BackupError {
    #[error("job `{0}` is already running elsewhere (another vigil holds its lock); skipped")]
    Locked(String),
    #[error(transparent)]
    Lock(#[from] lock::LockError),
    #[error("{0}; nothing was committed")]
    LeaseLost(String),
    #[error(
        "the run scheduled for {scheduled} was already taken by another vigil (backup {backup_id}); skipped"
    )]
    AlreadyDone {
        scheduled: String,
        backup_id: String,
    },
    #[error("cannot connect to the source: {0}")]
    Source(String),
    #[error(
        "cannot reach the source {host}: {detail} (is PostgreSQL running there, and is `source` right?)"
    )]
    SourceUnreachable { host: String, detail: String },
    #[error("{0}")]
    Tool(String),
    #[error("database `{database}`: {error}")]
    Object {
        database: String,
        error: PipelineError,
    },
    #[error(transparent)]
    Repo(#[from] crate::repo::RepoError),
    #[error("run exceeded max_duration ({0})")]
    TooLong(String),
    #[error("cancelled (shutdown)")]
    Cancelled,
    #[error("{0}")]
    Files(String),
    #[error(transparent)]
    PassFile(#[from] crate::pipeline::pgtools::PassFileError),
}

impl BackupError {
    /// `executions.status` for this failure.
    pub fn status(&self) -> &'static str {
        match self {
            BackupError::Locked(_) | BackupError::AlreadyDone { .. } => "skipped",
            BackupError::Cancelled
            | BackupError::Object {
                error: PipelineError::Cancelled,
                ..
            } => "aborted",
            _ => "failed",
        }
    }
}

/// Live progress of a run, for status output and metrics.
#[derive(Debug, Default)]
pub struct Progress {
    /// Raw bytes read from the source so far (current object).
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
    run_scheduled(ctx, trigger, None, progress, cancel).await
}

/// Like [`run`], for the run standing for `scheduled_for`: skipped when a
/// replica has already backed up at or after that time.
pub async fn run_scheduled(
    ctx: &JobContext,
    trigger: Trigger,
    scheduled_for: Option<chrono::DateTime<Utc>>,
    progress: &Progress,
    cancel: &CancellationToken,
) -> Result<Manifest, BackupError> {
    let lock = match lock::take(ctx, cancel).await {
        Ok(lock) => lock,
        Err(e) => {
            let error = BackupError::Lock(e);
            ctx.journal.emit(ctx.event(
                "backup.failed",
                serde_json::json!({ "trigger": trigger.as_str(), "status": "failed", "error": ctx.redact(&error.to_string()) }),
            ));
            return Err(error);
        }
    };
    let Some(lock) = lock else {
        tracing::info!(job = %ctx.name, "another vigil holds the job lock; run skipped");
        return Err(BackupError::Locked(ctx.name.clone()));
    };
    if let Some(scheduled) = scheduled_for {
        let newest = ctx
            .repo
            .list(&ctx.name)
            .await
            .map(|l| l.backups.into_iter().max_by_key(|m| m.started_at));
        if let Ok(Some(newest)) = newest
            && newest.started_at >= scheduled
        {
            lock.release().await;
            tracing::info!(job = %ctx.name, backup = %newest.backup_id, "scheduled run already taken by another vigil; skipped");
            return Err(BackupError::AlreadyDone {
                scheduled: scheduled.to_rfc3339(),
                backup_id: newest.backup_id,
            });
        }
    }
    let execution = executions::start(
        &ctx.catalog,
        &ctx.name,
        "backup",
        trigger,
        &ctx.host,
        &ctx.repo.name,
    )
    .await;
    tracing::info!(job = %ctx.name, trigger = trigger.as_str(), "backup started");
    ctx.journal.emit(ctx.event(
        "backup.started",
        serde_json::json!({ "trigger": trigger.as_str(), "repository": ctx.repo.name, "host": ctx.host }),
    ));
    // The lock's token also fires when its lease is lost.
    let run = tokio::time::timeout(
        ctx.job.max_duration,
        run_locked(ctx, progress, &lock.cancel),
    )
    .await;
    let result = match (run, lock.lost()) {
        (Err(_), _) => Err(BackupError::TooLong(
            humantime::format_duration(ctx.job.max_duration).to_string(),
        )),
        (Ok(Err(_)), Some(why)) => Err(BackupError::LeaseLost(why)),
        (Ok(result), _) => result,
    };
    let written = progress.take_backup_id();
    match &result {
        Ok(m) => {
            tracing::info!(job = %ctx.name, backup = %m.backup_id, stored_bytes = m.stored_bytes(), source_bytes = m.raw_bytes(), "backup committed");
            ctx.journal.emit(ctx.event(
                "backup.succeeded",
                serde_json::json!({
                    "backup_id": m.backup_id,
                    "trigger": trigger.as_str(),
                    "stored_bytes": m.stored_bytes(),
                    "source_bytes": m.raw_bytes(),
                    "seconds": (m.finished_at - m.started_at).num_milliseconds() as f64 / 1000.0,
                }),
            ));
            let end = Finish {
                status: "succeeded",
                backup_id: Some(&m.backup_id),
                source_bytes: Some(m.raw_bytes()),
                stored_bytes: Some(m.stored_bytes()),
                error: None,
                details: m.files.as_ref().map(|f| f.report.clone()),
            };
            executions::finish(&ctx.catalog, &execution, end).await;
        }
        Err(e) => {
            let message = ctx.redact(&e.to_string());
            tracing::warn!(job = %ctx.name, error = %message, "backup failed");
            if let Some(id) = &written {
                discard_leftovers(ctx, id).await;
            }
            ctx.journal.emit(ctx.event(
                "backup.failed",
                serde_json::json!({ "trigger": trigger.as_str(), "status": e.status(), "error": message }),
            ));
            let end = Finish {
                status: e.status(),
                backup_id: None,
                source_bytes: None,
                stored_bytes: None,
                error: Some(&message),
                details: None,
            };
            executions::finish(&ctx.catalog, &execution, end).await;
        }
    }
    lock.release().await;
    result
}

async fn run_locked(
    ctx: &JobContext,
    progress: &Progress,
    cancel: &CancellationToken,
) -> Result<Manifest, BackupError> {
    if ctx.job.kind == crate::config::JobKind::Files {
        return super::files_backup::run(ctx, progress, cancel).await;
    }
    let started_at = Utc::now();
    let source = ctx.source_config().map_err(BackupError::Source)?;
    let facts = source_facts(ctx).await?;
    let pg_dump = ctx.job.pg_dump.clone().or_else(|| find_tool("pg_dump")).ok_or_else(|| {
        BackupError::Tool("pg_dump not found: install the PostgreSQL client (apt-get install postgresql-client) or set `pg_dump`".into())
    })?;
    let (dump_major, dump_version) = tool_version(&pg_dump).await.map_err(BackupError::Tool)?;
    let server_major = (facts.version_num / 10000) as u32;
    if dump_major < server_major {
        return Err(BackupError::Tool(format!(
            "{} is version {dump_version}, older than the server ({}): install postgresql-client-{server_major} or point `jobs.{}.pg_dump` at a newer one",
            pg_dump.display(),
            facts.version,
            ctx.name
        )));
    }

    let backup_id = allocate_id(ctx, started_at, progress).await?;
    let job = &ctx.job;
    let (encode, suffix) = encode_spec(ctx);
    let limits = ctx.repo.upload_limits(job.stall_timeout);
    let env = libpq_env(&source, None)?;
    let mut objects = Vec::new();
    let run = DumpRun {
        ctx,
        backup_id: &backup_id,
        env: &env,
        encode: &encode,
        limits,
        progress,
        cancel,
    };

    if matches!(job.databases, Databases::All) {
        let pg_dumpall = pg_dump.with_file_name("pg_dumpall");
        let mut command = Command::new(&pg_dumpall);
        command.arg("--globals-only");
        let name = format!("globals.sql{suffix}");
        let spec = ObjectSpec {
            tool: "pg_dumpall",
            name: &name,
            database: None,
            format: "sql",
        };
        let entry = dump_object(&run, command, spec).await?;
        objects.push(entry);
    }
    for database in &facts.databases {
        let mut command = Command::new(&pg_dump);
        // Custom format so pg_restore can select and parallelise; compression is ours.
        command
            .args(["--format=custom", "--compress=0", "--dbname"])
            .arg(database);
        let name = object_name(database, &format!(".dump{suffix}"));
        let spec = ObjectSpec {
            tool: "pg_dump",
            name: &name,
            database: Some(database),
            format: "pg_dump-custom",
        };
        let entry = dump_object(&run, command, spec).await?;
        objects.push(entry);
    }

    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        job: ctx.name.clone(),
        backup_id,
        kind: "logical".into(),
        started_at,
        finished_at: Utc::now(),
        source: SourceFacts {
            server_version: facts.version,
            server_version_num: facts.version_num,
            pg_dump_version: dump_version,
            host: describe_host(&source.pg),
        },
        compression: codec_facts(ctx).0,
        encryption: codec_facts(ctx).1,
        objects,
        journal_head: ctx.journal_head(),
        vigil_version: env!("CARGO_PKG_VERSION").into(),
        files: None,
    };
    if cancel.is_cancelled() {
        return Err(BackupError::Cancelled);
    }
    ctx.repo.commit_manifest(&manifest).await?;
    Ok(manifest)
}

/// A fresh backup id for a run started at `started_at`, noted in
/// `progress` so a failed run can remove what it wrote under it.
pub(super) async fn allocate_id(
    ctx: &JobContext,
    started_at: chrono::DateTime<Utc>,
    progress: &Progress,
) -> Result<String, BackupError> {
    let mut attempt = 0;
    loop {
        let id = crate::repo::backup_id(started_at, attempt);
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
pub(super) fn encode_spec(ctx: &JobContext) -> (EncodeSpec, String) {
    let job = &ctx.job;
    let encode = EncodeSpec {
        compression: job.compression,
        level: job.level(),
        workers: job
            .compression_workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as u32)),
        recipients: ctx.recipients.clone(),
        zstd_job_size: zstd_job_size(
            ctx.repo.guarantees.multipart,
            job.kind == crate::config::JobKind::Files,
        ),
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
pub(super) fn codec_facts(ctx: &JobContext) -> (CompressionFacts, Option<EncryptionFacts>) {
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

/// What every object of one backup run shares.
struct DumpRun<'a> {
    ctx: &'a JobContext,
    backup_id: &'a str,
    env: &'a [(String, String)],
    encode: &'a EncodeSpec,
    limits: UploadLimits,
    progress: &'a Progress,
    cancel: &'a CancellationToken,
}

/// One object: which tool, its file name, its database and format.
struct ObjectSpec<'a> {
    tool: &'a str,
    name: &'a str,
    database: Option<&'a str>,
    format: &'a str,
}

async fn dump_object(
    run: &DumpRun<'_>,
    mut command: Command,
    spec: ObjectSpec<'_>,
) -> Result<ObjectEntry, BackupError> {
    let DumpRun {
        ctx,
        backup_id,
        env,
        encode,
        limits,
        progress,
        cancel,
    } = *run;
    let ObjectSpec {
        tool,
        name,
        database,
        format,
    } = spec;
    let label = database.unwrap_or("(globals)").to_owned();
    let child = command
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| BackupError::Tool(format!("cannot start {tool}: {e}")))?;
    let path = ctx.repo.object_path(&ctx.name, backup_id, name);
    let upload = Upload {
        tool,
        repo: &ctx.repo,
        path: &path,
        encode,
        limits,
        progress: Arc::clone(&progress.source_bytes),
    };
    let outcome =
        upload_child(child, upload, cancel)
            .await
            .map_err(|error| BackupError::Object {
                database: label,
                error,
            })?;
    Ok(ObjectEntry {
        name: name.to_owned(),
        database: database.map(str::to_owned),
        format: format.into(),
        stored_bytes: outcome.stored.bytes,
        raw_bytes: outcome.raw_bytes,
        sha256: outcome.stored.sha256,
    })
}

struct Facts {
    version: String,
    version_num: i32,
    databases: Vec<String>,
}

/// Server version and, for `all`, every connectable non-template database.
async fn source_facts(ctx: &JobContext) -> Result<Facts, BackupError> {
    let client = ctx.open_source().await.map_err(|e| match e {
        super::context::SourceError::Connect {
            host,
            unreachable: true,
            detail,
        } => BackupError::SourceUnreachable {
            host,
            detail: ctx.redact(&detail),
        },
        other => BackupError::Source(ctx.redact(&other.to_string())),
    })?;
    let chain =
        |e: tokio_postgres::Error| BackupError::Source(ctx.redact(&crate::redact::error_chain(&e)));
    let row = client
        .query_one(
            "SELECT current_setting('server_version'), current_setting('server_version_num')::int",
            &[],
        )
        .await
        .map_err(chain)?;
    let databases = match &ctx.job.databases {
        Databases::List(list) => list.clone(),
        Databases::All => client
            .query("SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY datname", &[])
            .await
            .map_err(chain)?
            .iter()
            .map(|r| r.get(0))
            .collect(),
    };
    Ok(Facts {
        version: row.get(0),
        version_num: row.get(1),
        databases,
    })
}
