//! Restore one object of a backup: a database dump into a PostgreSQL
//! database, or a files backup under a directory. This is the
//! orchestration (which backup, target checks, journal, execution row);
//! the stream itself (download → hash → decode → `pg_restore`) is
//! `pipeline::download`. With `jobs > 1` the dump lands (verified) in a
//! temp file first, for `pg_restore -j`.

pub mod physical;
pub mod recovery;
pub(crate) mod target;

use std::path::PathBuf;

use target::{drop_database, prepare_target};
use thiserror::Error;
use tokio_util::sync::CancellationToken;

use super::report::{Event, Fact, Outcome, Reporter, Run, RunKind, Sinks, Status};
use super::{JobContext, Trigger};
use crate::core::manifest::{Manifest, ObjectEntry};
use crate::pipeline::download::{Download, DownloadError, Tool, staged_to_tool, stream_to_tool};
use crate::pipeline::pgtools::{describe_host, find_tool, libpq_env};
use crate::repo::RepoError;

#[derive(Debug, Clone, Default)]
pub struct RestoreRequest {
    /// A backup id; `None` = the latest.
    pub backup: Option<String>,
    /// Physical jobs: recover to a target (`None`: to the base backup's end
    /// only, no recovery settings written).
    pub recovery: Option<recovery::RecoveryRequest>,
    /// Which database of a multi-database backup.
    pub database: Option<String>,
    /// Target connection string (must name the database).
    pub to: String,
    pub create: bool,
    pub clean: bool,
    /// `pg_restore -j N` (stages the dump in a temp file).
    pub jobs: Option<u32>,
    /// Files backups: the directory to restore the trees under.
    pub to_dir: Option<PathBuf>,
    /// Files backups: write into a non-empty directory.
    pub force: bool,
    /// Physical backups: `--tablespace-map OLD=NEW`.
    pub tablespace_map: physical::TablespaceMap,
}

#[derive(Debug, Error)]
pub enum RestoreError {
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error("restore refused: {0}")]
    Journal(#[from] crate::journal::JournalError),
    /// `--database` does not pick one object of the backup (the manifest
    /// says why).
    #[error("{source}")]
    Choice {
        backup_id: String,
        source: crate::core::manifest::ObjectChoiceError,
    },
    #[error("target: this is a {kind} backup: restore it with {how}")]
    WrongKind {
        kind: &'static str,
        how: &'static str,
    },
    #[error(
        "target: pg_restore not found: install the PostgreSQL client (apt-get install postgresql-client)"
    )]
    NoPgRestore,
    #[error("target: {source}")]
    TargetQuery {
        host: String,
        database: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("target: cannot create database `{database}`: {source}")]
    CreateDatabase {
        host: String,
        database: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("target: cannot connect: {detail}")]
    TargetConnect { host: String, detail: String },
    /// `--to-dir` cannot be used (not empty, unreadable, cannot be made).
    #[error("target: {source}")]
    TargetDir {
        dir: PathBuf,
        source: crate::files::TargetError,
    },
    #[error("--to is not a connection string ({source}): write postgres://USER@HOST:PORT/DBNAME")]
    BadTarget {
        #[source]
        source: crate::config::conninfo::ConnInfoError,
    },
    #[error("--to must name the database (postgres://host/DBNAME)")]
    NoDatabase,
    /// No base backup fits the recovery target (or `--backup` ends after it).
    #[error(transparent)]
    Target(#[from] crate::core::recovery::SelectionError),
    #[error(
        "job `{job}` is a {kind} job: --time, --lsn, --name, --xid and --immediate recover postgres-physical jobs only"
    )]
    NotPhysical { job: String, kind: &'static str },
    #[error("cannot write the recovery settings {}: {source} (the laid-out directory is left as it is)", path.display())]
    RecoverySettings {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "target {host}: cannot connect: {detail} (is PostgreSQL running there, and is the address in --to right?)"
    )]
    TargetUnreachable { host: String, detail: String },
    #[error(
        "target database `{database}` already has {tables} user table(s): refusing to restore over it (use --clean to replace its objects, or restore into a new database with --create)"
    )]
    NotEmpty { database: String, tables: i64 },
    #[error(transparent)]
    Stream(#[from] DownloadError),
    #[error(transparent)]
    Key(#[from] super::context::KeyError),
    #[error("unpacking panicked: {detail}")]
    UnpackPanicked { detail: String },
    #[error("unpacking under {}: {source}", to.display())]
    Unpack {
        to: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("feeding the archive: {source}")]
    FeedArchive {
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    PassFile(#[from] crate::pipeline::pgtools::PassFileError),
    #[error(
        "pg_verifybackup not found: install the PostgreSQL server binaries of the backup's major version (apt-get install postgresql)"
    )]
    NoVerifyBackup,
    #[error("cannot start {}: {source}", tool.display())]
    VerifyStart {
        tool: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "pg_verifybackup found {} inconsistent with its backup_manifest (the directory is left for inspection; do not start PostgreSQL on it): {output}",
        dir.display()
    )]
    VerifyFailed { dir: PathBuf, output: String },
    #[error("cancelled (shutdown)")]
    Cancelled,
}

impl RestoreError {
    /// A shutdown stopped it (`executions.status` aborted).
    pub fn is_cancelled(&self) -> bool {
        matches!(
            self,
            RestoreError::Cancelled | RestoreError::Stream(DownloadError::Cancelled)
        )
    }
}

#[derive(Debug, Clone)]
pub struct RestoreOutcome {
    pub backup_id: String,
    pub object: String,
    pub database: String,
    pub stored_bytes: u64,
    /// Physical jobs: the recovery settings written.
    pub recovery: Option<recovery::Configured>,
}

pub async fn run(
    ctx: &JobContext,
    request: &RestoreRequest,
    cancel: &CancellationToken,
) -> Result<RestoreOutcome, RestoreError> {
    run_reported(ctx, request, cancel, &Sinks::new(ctx)).await
}

/// Like [`run`], its start and outcome going to `report`. A restore that
/// cannot pick its backup or object reports nothing: it never began.
pub async fn run_reported(
    ctx: &JobContext,
    request: &RestoreRequest,
    cancel: &CancellationToken,
    report: &dyn Reporter,
) -> Result<RestoreOutcome, RestoreError> {
    let manifest = match (&request.recovery, &request.backup) {
        (Some(_), _) if ctx.job.kind != crate::config::JobKind::PostgresPhysical => {
            return Err(RestoreError::NotPhysical {
                job: ctx.name.clone(),
                kind: ctx.job.kind.as_str(),
            });
        }
        (Some(r), backup) => recovery::choose_manifest(ctx, backup.as_deref(), r).await?,
        (None, Some(id)) => ctx.repo.read_manifest(&ctx.name, id).await?,
        (None, None) => ctx
            .repo
            .list(&ctx.name)
            .await?
            .backups
            .pop()
            .ok_or_else(|| RepoError::NoBackups {
                repo: ctx.repo.name.clone(),
                job: ctx.name.clone(),
            })?,
    };
    if manifest.kind == "physical" {
        return physical::lay_out_reported(ctx, &manifest, request, cancel, report).await;
    }
    let object = manifest
        .database_object(request.database.as_deref())
        .map_err(|source| RestoreError::Choice {
            backup_id: manifest.backup_id.to_string(),
            source,
        })?
        .clone();
    let run = Run {
        kind: RunKind::Restore,
        trigger: Trigger::Cli,
        repository: ctx.repo.name.clone(),
        started: None,
    };
    report.started(&run).await;
    let mut announced = false;
    let result = restore(ctx, &manifest, &object, request, cancel, &mut announced).await;
    let outcome = outcome(ctx, &manifest, &object, &result, announced);
    report.finished(&run, &outcome).await;
    result
}

/// A finished restore, as every sink records it. One refused before
/// `restore.started` (bad target, missing key, not empty) did not fail: it
/// never began.
fn outcome(
    ctx: &JobContext,
    manifest: &Manifest,
    object: &ObjectEntry,
    result: &Result<RestoreOutcome, RestoreError>,
    announced: bool,
) -> Outcome {
    let backup_id = Some(manifest.backup_id.to_string());
    match result {
        Ok(o) => {
            let target = o.recovery.as_ref().map(|r| (&r.target, r.target_action));
            Outcome {
                backup_id,
                source_bytes: Some(object.raw_bytes),
                stored_bytes: Some(object.stored_bytes),
                details: target
                    .map(|(t, a)| serde_json::json!({ "recoveryTarget": t, "targetAction": a })),
                ..Outcome::succeeded(
                    Fact::None,
                    Some(Event::emit(
                        "restore.succeeded",
                        serde_json::json!({ "backup_id": o.backup_id, "object": o.object, "database": o.database,
                            "recovery_target": target.map(|(t, _)| t), "target_action": target.map(|(_, a)| a) }),
                    )),
                )
            }
        }
        Err(e) => {
            let message = ctx.redact(&e.to_string());
            let name = if announced {
                "restore.failed"
            } else {
                "restore.refused"
            };
            let data = serde_json::json!({ "backup_id": manifest.backup_id, "error": message });
            let status = if e.is_cancelled() {
                Status::Aborted
            } else {
                Status::Failed
            };
            Outcome {
                backup_id,
                ..Outcome::failed(status, message, Some(Event::emit(name, data)))
            }
        }
    }
}

/// `announced` becomes true once `restore.started` is journaled.
async fn restore(
    ctx: &JobContext,
    manifest: &Manifest,
    object: &ObjectEntry,
    request: &RestoreRequest,
    cancel: &CancellationToken,
    announced: &mut bool,
) -> Result<RestoreOutcome, RestoreError> {
    if manifest.kind == "files" {
        return restore_files(ctx, manifest, object, request, cancel, announced).await;
    }
    if request.to_dir.is_some() {
        return Err(RestoreError::WrongKind {
            kind: "database",
            how: "--to postgres://HOST/DBNAME",
        });
    }
    let (target, database) = parse_target(&request.to)?;
    let path = ctx
        .repo
        .object_path(&manifest.job, &manifest.backup_id, &object.name);
    let download = open_download(ctx, manifest, object, &path)?;
    let pg_restore = find_tool("pg_restore").ok_or(RestoreError::NoPgRestore)?;

    let started = serde_json::json!({
        "backup_id": manifest.backup_id,
        "object": object.name,
        "database": database,
        "target": describe_host(&target.pg),
        "clean": request.clean,
        "create": request.create,
    });
    announce(ctx, started, request.clean, announced).await?;
    let created = prepare_target(&target, &database, request).await?;
    let mut args: Vec<String> = vec![
        "--exit-on-error".into(),
        "--dbname".into(),
        database.clone(),
    ];
    if request.clean {
        args.extend(["--clean".into(), "--if-exists".into()]);
    }
    let env = libpq_env(&target, None)?;
    let parallel = request.jobs.filter(|j| *j > 1);
    match parallel {
        None => args.push("--single-transaction".into()),
        Some(jobs) => args.push(format!("--jobs={jobs}")),
    }
    let tool = Tool {
        path: &pg_restore,
        args: &args,
        env: &env,
    };
    let result = match parallel {
        None => stream_to_tool(&download, &tool, cancel).await,
        Some(_) => {
            let staging = ctx.state_dir.join("restore-tmp");
            staged_to_tool(&download, &tool, &staging, &ctx.name, cancel).await
        }
    };
    if let Err(e) = &result
        && created
    {
        tracing::warn!(database, error = %e, "restore failed; dropping the database it created");
        let _ = drop_database(&target, &database).await;
    }
    result?;
    tracing::info!(job = %ctx.name, backup = %manifest.backup_id, database, "restore finished");
    Ok(RestoreOutcome {
        backup_id: manifest.backup_id.to_string(),
        object: object.name.clone(),
        database,
        stored_bytes: object.stored_bytes,
        recovery: None,
    })
}

/// `--to`: a connection string that names the database; returns it and the name.
pub fn parse_target(to: &str) -> Result<(crate::config::conninfo::ConnInfo, String), RestoreError> {
    let target =
        crate::config::conninfo::parse(to).map_err(|source| RestoreError::BadTarget { source })?;
    let database = target
        .pg
        .get_dbname()
        .ok_or(RestoreError::NoDatabase)?
        .to_owned();
    Ok((target, database))
}

/// A files backup: the tar stream, verified by its SHA-256, unpacked under
/// `--to-dir` (an empty directory unless `--force`).
async fn restore_files(
    ctx: &JobContext,
    manifest: &Manifest,
    object: &ObjectEntry,
    request: &RestoreRequest,
    cancel: &CancellationToken,
    announced: &mut bool,
) -> Result<RestoreOutcome, RestoreError> {
    let to = request.to_dir.clone().ok_or(RestoreError::WrongKind {
        kind: "files",
        how: "--to-dir DIR",
    })?;
    crate::files::check_target(&to, request.force).map_err(|source| RestoreError::TargetDir {
        dir: to.clone(),
        source,
    })?;
    let path = ctx
        .repo
        .object_path(&manifest.job, &manifest.backup_id, &object.name);
    let download = open_download(ctx, manifest, object, &path)?;
    let started = serde_json::json!({ "backup_id": manifest.backup_id, "object": object.name, "to_dir": to, "force": request.force });
    announce(ctx, started, request.force, announced).await?;
    unpack(&download, &to, cancel).await?;
    tracing::info!(job = %ctx.name, backup = %manifest.backup_id, to = %to.display(), "files restored");
    Ok(RestoreOutcome {
        backup_id: manifest.backup_id.to_string(),
        object: object.name.clone(),
        database: to.display().to_string(),
        stored_bytes: object.stored_bytes,
        recovery: None,
    })
}

/// Streams one tar object (verified by its SHA-256, decoded) and unpacks
/// it under `to`.
pub(super) async fn unpack(
    download: &Download<'_>,
    to: &std::path::Path,
    cancel: &CancellationToken,
) -> Result<(), RestoreError> {
    use tokio::io::AsyncWriteExt;
    let (mut writer, reader) = tokio::io::duplex(1 << 20);
    let handle = tokio::runtime::Handle::current();
    let target = to.to_owned();
    let owners = nix::unistd::geteuid().is_root();
    let unpack = tokio::task::spawn_blocking(move || {
        let reader = tokio_util::io::SyncIoBridge::new_with_handle(reader, handle);
        crate::files::extract(reader, &target, owners)
    });
    let held = download.decode_into(&mut writer, cancel).await;
    let fed = match held {
        Ok(last) => {
            let mut result = Ok(());
            if let Some(last) = last {
                result = writer.write_all(&last).await;
            }
            result.and(writer.shutdown().await)
        }
        Err(e) => {
            drop(writer);
            let _ = unpack.await;
            return Err(e.into());
        }
    };
    drop(writer);
    let unpacked = unpack.await.map_err(|e| RestoreError::UnpackPanicked {
        detail: e.to_string(),
    })?;
    unpacked.map_err(|source| RestoreError::Unpack {
        to: to.to_owned(),
        source,
    })?;
    fed.map_err(|source| RestoreError::FeedArchive { source })?;
    Ok(())
}

/// Journals `restore.started`; over existing data (`--clean`, `--force`)
/// it is on disk before anything is replaced, or the restore is refused.
async fn announce(
    ctx: &JobContext,
    data: serde_json::Value,
    over_existing: bool,
    announced: &mut bool,
) -> Result<(), RestoreError> {
    let started = ctx.event("restore.started", data);
    if over_existing {
        ctx.journal.commit(started).await?;
    } else {
        ctx.journal.emit(started);
    }
    *announced = true;
    Ok(())
}

/// The object at `path`, with the keys to read it when it is encrypted.
fn open_download<'a>(
    ctx: &'a JobContext,
    manifest: &Manifest,
    object: &'a ObjectEntry,
    path: &'a str,
) -> Result<Download<'a>, RestoreError> {
    let identities = if manifest.encryption.is_some() {
        ctx.identities()?
    } else {
        vec![]
    };
    Ok(Download::new(
        &ctx.repo, manifest, object, path, identities,
    )?)
}
