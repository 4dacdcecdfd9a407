//! Restore one database object of a backup into a PostgreSQL database.
//!
//! The stored bytes are hashed as they stream in; `pg_restore` runs in a
//! single transaction and never gets the last chunk before the hash is
//! verified, so a damaged object writes nothing. With `jobs > 1` the dump
//! lands (verified) in a temp file first, for `pg_restore -j`.

use std::collections::VecDeque;
use std::io::Read;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::StreamExt;
use sha2::{Digest, Sha256};
use thiserror::Error;
use tokio::io::{AsyncBufReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::process::Command;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::executions::{self, Finish};
use super::{JobContext, Trigger};
use crate::config::Compression;
use crate::pipeline::codec::decoder;
use crate::pipeline::pgtools::{find_tool, libpq_env};
use crate::repo::{Manifest, ObjectEntry, RepoError};

#[derive(Debug, Clone, Default)]
pub struct RestoreRequest {
    /// A backup id; `None` = the latest.
    pub backup: Option<String>,
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
}

#[derive(Debug, Error)]
pub enum RestoreError {
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error("restore refused: {0}")]
    Journal(#[from] crate::journal::JournalError),
    #[error("{0}")]
    Choice(String),
    #[error("target: {0}")]
    Target(String),
    #[error("{0}")]
    BadTarget(String),
    #[error(
        "target {host}: cannot connect: {detail} (is PostgreSQL running there, and is the address in --to right?)"
    )]
    TargetUnreachable { host: String, detail: String },
    #[error(
        "target database `{database}` already has {tables} user table(s): refusing to restore over it (use --clean to replace its objects, or restore into a new database with --create)"
    )]
    NotEmpty { database: String, tables: i64 },
    #[error(
        "object {object}: SHA-256 mismatch (expected {expected}, got {actual}; {bytes} bytes read, {expected_bytes} expected): the stored object is damaged; nothing was restored"
    )]
    HashMismatch {
        object: String,
        expected: String,
        actual: String,
        bytes: u64,
        expected_bytes: u64,
    },
    #[error("object {object}: cannot decode: {detail}")]
    Decode { object: String, detail: String },
    #[error("{0}")]
    Key(String),
    #[error("pg_restore exited with {status}: {stderr}")]
    PgRestore { status: String, stderr: String },
    #[error("{0}")]
    Io(String),
    #[error("writing the dump: {0}")]
    Write(std::io::Error),
    /// ENOSPC/EDQUOT staging a dump for `--jobs`: retrying cannot help.
    #[error(
        "cannot stage the dump in {}: it needs {needed} bytes, {} (free space under daemon.state_dir, or restore without --jobs, which streams)",
        path.display(),
        free.map_or_else(|| "free space unknown".to_owned(), |f| format!("{f} bytes free"))
    )]
    StateDirFull {
        path: PathBuf,
        needed: u64,
        free: Option<u64>,
    },
    #[error(transparent)]
    PassFile(#[from] crate::pipeline::pgtools::PassFileError),
    #[error("cancelled (shutdown)")]
    Cancelled,
}

#[derive(Debug, Clone)]
pub struct RestoreOutcome {
    pub backup_id: String,
    pub object: String,
    pub database: String,
    pub stored_bytes: u64,
}

pub async fn run(
    ctx: &JobContext,
    request: &RestoreRequest,
    cancel: &CancellationToken,
) -> Result<RestoreOutcome, RestoreError> {
    let manifest = match &request.backup {
        Some(id) => ctx.repo.read_manifest(&ctx.name, id).await?,
        None => ctx
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
    let object = manifest
        .database_object(request.database.as_deref())
        .map_err(RestoreError::Choice)?
        .clone();
    let execution = executions::start(
        &ctx.catalog,
        &ctx.name,
        "restore",
        Trigger::Cli,
        &ctx.host,
        &ctx.repo.name,
    )
    .await;
    let mut announced = false;
    let result = restore(ctx, &manifest, &object, request, cancel, &mut announced).await;
    let end = match &result {
        Ok(_) => Finish {
            status: "succeeded",
            backup_id: Some(&manifest.backup_id),
            source_bytes: Some(object.raw_bytes),
            stored_bytes: Some(object.stored_bytes),
            error: None,
            details: None,
        },
        Err(e) => Finish {
            status: if matches!(e, RestoreError::Cancelled) {
                "aborted"
            } else {
                "failed"
            },
            backup_id: Some(&manifest.backup_id),
            source_bytes: None,
            stored_bytes: None,
            error: None,
            details: None,
        },
    };
    let message = result.as_ref().err().map(|e| ctx.redact(&e.to_string()));
    let (event, data) = match &result {
        Ok(o) => (
            "restore.succeeded",
            serde_json::json!({ "backup_id": o.backup_id, "object": o.object, "database": o.database }),
        ),
        // A restore refused before `restore.started` (bad target, missing
        // key, not empty) did not fail: it never began.
        Err(_) => (
            if announced {
                "restore.failed"
            } else {
                "restore.refused"
            },
            serde_json::json!({ "backup_id": manifest.backup_id, "error": message }),
        ),
    };
    ctx.journal.emit(ctx.event(event, data));
    executions::finish(
        &ctx.catalog,
        &execution,
        Finish {
            error: message.as_deref(),
            ..end
        },
    )
    .await;
    result
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
        return Err(RestoreError::Target(
            "this is a database backup: restore it with --to postgres://HOST/DBNAME".into(),
        ));
    }
    let (target, database) = parse_target(&request.to)?;
    let path = ctx
        .repo
        .object_path(&manifest.job, &manifest.backup_id, &object.name);
    let download = Download::new(ctx, manifest, object, &path)?;
    let pg_restore = find_tool("pg_restore")
        .ok_or_else(|| RestoreError::Target("pg_restore not found: install the PostgreSQL client (apt-get install postgresql-client)".into()))?;

    let started = serde_json::json!({
        "backup_id": manifest.backup_id,
        "object": object.name,
        "database": database,
        "target": crate::pipeline::pgtools::describe_host(&target),
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
    let io = RestoreIo {
        download,
        pg_restore: &pg_restore,
        args: &args,
        env: &env,
    };
    let result = match parallel {
        None => stream_restore(io, cancel).await,
        Some(_) => staged_restore(io, cancel).await,
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
        backup_id: manifest.backup_id.clone(),
        object: object.name.clone(),
        database,
        stored_bytes: object.stored_bytes,
    })
}

/// `--to`: a connection string that names the database; returns it and the name.
pub fn parse_target(to: &str) -> Result<(tokio_postgres::Config, String), RestoreError> {
    let target: tokio_postgres::Config = to.parse().map_err(|e| {
        RestoreError::BadTarget(format!(
            "--to is not a connection string ({e}): write postgres://USER@HOST:PORT/DBNAME"
        ))
    })?;
    let database = target
        .get_dbname()
        .ok_or_else(|| {
            RestoreError::BadTarget("--to must name the database (postgres://host/DBNAME)".into())
        })?
        .to_owned();
    Ok((target, database))
}

/// Checks (or creates) the target; returns whether this restore created it.
async fn prepare_target(
    target: &tokio_postgres::Config,
    database: &str,
    request: &RestoreRequest,
) -> Result<bool, RestoreError> {
    if request.create {
        let client = connect(target, Some("postgres")).await?;
        let exists = client
            .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&database])
            .await
            .map_err(|e| RestoreError::Target(e.to_string()))?
            .is_some();
        if !exists {
            client
                .batch_execute(&format!("CREATE DATABASE {}", quote_ident(database)))
                .await
                .map_err(|e| {
                    RestoreError::Target(format!("cannot create database `{database}`: {e}"))
                })?;
            return Ok(true);
        }
    }
    let client = connect(target, None).await?;
    let tables: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
             AND n.nspname NOT LIKE 'pg\\_toast%'",
            &[],
        )
        .await
        .map_err(|e| RestoreError::Target(e.to_string()))?
        .get(0);
    if tables > 0 && !request.clean {
        return Err(RestoreError::NotEmpty {
            database: database.to_owned(),
            tables,
        });
    }
    Ok(false)
}

async fn connect(
    target: &tokio_postgres::Config,
    dbname: Option<&str>,
) -> Result<tokio_postgres::Client, RestoreError> {
    let mut config = target.clone();
    if let Some(db) = dbname {
        config.dbname(db);
    }
    if config.get_password().is_none()
        && let Ok(pw) = std::env::var("PGPASSWORD")
    {
        config.password(pw);
    }
    let (client, connection) = config.connect(tokio_postgres::NoTls).await.map_err(|e| {
        let detail = crate::redact::error_chain(&e);
        if crate::reach::is_unreachable(&e) {
            RestoreError::TargetUnreachable {
                host: crate::pipeline::pgtools::describe_host(&config),
                detail,
            }
        } else {
            RestoreError::Target(format!("cannot connect: {detail}"))
        }
    })?;
    tokio::spawn(connection);
    Ok(client)
}

async fn drop_database(
    target: &tokio_postgres::Config,
    database: &str,
) -> Result<(), RestoreError> {
    let client = connect(target, Some("postgres")).await?;
    client
        .batch_execute(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            quote_ident(database)
        ))
        .await
        .map_err(|e| RestoreError::Target(e.to_string()))
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
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
    use tokio::io::AsyncWriteExt;
    let to = request.to_dir.clone().ok_or_else(|| {
        RestoreError::Target("this is a files backup: restore it with --to-dir DIR".into())
    })?;
    crate::files::check_target(&to, request.force).map_err(RestoreError::Target)?;
    let path = ctx
        .repo
        .object_path(&manifest.job, &manifest.backup_id, &object.name);
    let download = Download::new(ctx, manifest, object, &path)?;
    let started = serde_json::json!({ "backup_id": manifest.backup_id, "object": object.name, "to_dir": to, "force": request.force });
    announce(ctx, started, request.force, announced).await?;
    let (mut writer, reader) = tokio::io::duplex(1 << 20);
    let handle = tokio::runtime::Handle::current();
    let target = to.clone();
    let owners = nix::unistd::geteuid().is_root();
    let unpack = tokio::task::spawn_blocking(move || {
        let reader = tokio_util::io::SyncIoBridge::new_with_handle(reader, handle);
        crate::files::extract(reader, &target, owners)
    });
    let held = download_decode(&download, &mut writer, cancel).await;
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
            return Err(e);
        }
    };
    drop(writer);
    let unpacked = unpack
        .await
        .map_err(|e| RestoreError::Io(format!("unpacking panicked: {e}")))?;
    unpacked.map_err(|e| RestoreError::Io(format!("unpacking under {}: {e}", to.display())))?;
    fed.map_err(|e| RestoreError::Io(format!("feeding the archive: {e}")))?;
    tracing::info!(job = %ctx.name, backup = %manifest.backup_id, to = %to.display(), "files restored");
    Ok(RestoreOutcome {
        backup_id: manifest.backup_id.clone(),
        object: object.name.clone(),
        database: to.display().to_string(),
        stored_bytes: object.stored_bytes,
    })
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

/// One stored object to download, verify and decode.
struct Download<'a> {
    ctx: &'a JobContext,
    path: &'a str,
    object: &'a ObjectEntry,
    compression: Compression,
    identities: Vec<age::x25519::Identity>,
}

impl<'a> Download<'a> {
    /// The object of `manifest` at `path`, with its codec and keys.
    fn new(
        ctx: &'a JobContext,
        manifest: &Manifest,
        object: &'a ObjectEntry,
        path: &'a str,
    ) -> Result<Download<'a>, RestoreError> {
        let compression = Compression::parse(&manifest.compression.algorithm).ok_or_else(|| {
            RestoreError::Decode {
                object: object.name.clone(),
                detail: format!(
                    "unknown compression `{}` (written by a newer vigil?)",
                    manifest.compression.algorithm
                ),
            }
        })?;
        let identities = if manifest.encryption.is_some() {
            ctx.identities().map_err(RestoreError::Key)?
        } else {
            vec![]
        };
        Ok(Download {
            ctx,
            path,
            object,
            compression,
            identities,
        })
    }
}

/// What both pg_restore modes read and run.
struct RestoreIo<'a> {
    download: Download<'a>,
    pg_restore: &'a std::path::Path,
    args: &'a [String],
    env: &'a [(String, String)],
}

/// Download + hash → decode (blocking thread) → `sink`, holding back the
/// last decoded chunk. Returns that chunk once the hash is verified.
async fn download_decode<W: AsyncWrite + Unpin>(
    io: &Download<'_>,
    sink: &mut W,
    cancel: &CancellationToken,
) -> Result<Option<Bytes>, RestoreError> {
    let Download {
        ctx,
        path,
        object,
        compression,
        ..
    } = *io;
    let identities = io.identities.clone();
    let mut stream = ctx.repo.read_stream(path).await?;
    let (stored_tx, stored_rx) = mpsc::channel::<Bytes>(4);
    let (plain_tx, mut plain_rx) = mpsc::channel::<Bytes>(4);
    let decode = tokio::task::spawn_blocking(move || -> Result<(), String> {
        let mut reader = decoder(ChannelReader::new(stored_rx), compression, &identities)
            .map_err(|e| e.to_string())?;
        loop {
            let mut buf = vec![0u8; 1 << 20];
            let n = reader.read(&mut buf).map_err(|e| e.to_string())?;
            if n == 0 {
                return Ok(());
            }
            buf.truncate(n);
            if plain_tx.blocking_send(Bytes::from(buf)).is_err() {
                return Ok(());
            }
        }
    });
    let download = async {
        let mut hasher = Sha256::new();
        let mut bytes = 0u64;
        let mut tx = Some(stored_tx);
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            hasher.update(&chunk);
            bytes += chunk.len() as u64;
            // If the decoder gave up, keep hashing: the mismatch is the better report.
            if let Some(sender) = &tx
                && sender.send(chunk).await.is_err()
            {
                tx = None;
            }
        }
        drop(tx);
        Ok::<_, RestoreError>((hex::encode(hasher.finalize()), bytes))
    };
    let feed = async {
        let mut held: Option<Bytes> = None;
        let mut failed: Option<std::io::Error> = None;
        while let Some(chunk) = plain_rx.recv().await {
            if let Some(previous) = held.replace(chunk)
                && failed.is_none()
                && let Err(e) = sink.write_all(&previous).await
            {
                failed = Some(e);
            }
        }
        (held, failed)
    };
    let joined = async { tokio::join!(download, feed) };
    let (downloaded, (held, failed)) = tokio::select! {
        _ = cancel.cancelled() => return Err(RestoreError::Cancelled),
        joined = joined => joined,
    };
    let (actual, bytes) = downloaded?;
    if actual != object.sha256 || bytes != object.stored_bytes {
        return Err(RestoreError::HashMismatch {
            object: path.to_owned(),
            expected: object.sha256.clone(),
            actual,
            bytes,
            expected_bytes: object.stored_bytes,
        });
    }
    match decode.await {
        Ok(Ok(())) => {}
        Ok(Err(detail)) => {
            return Err(RestoreError::Decode {
                object: path.to_owned(),
                detail,
            });
        }
        Err(e) => {
            return Err(RestoreError::Decode {
                object: path.to_owned(),
                detail: e.to_string(),
            });
        }
    }
    if let Some(e) = failed {
        return Err(RestoreError::Write(e));
    }
    Ok(held)
}

async fn stream_restore(io: RestoreIo<'_>, cancel: &CancellationToken) -> Result<(), RestoreError> {
    let (mut child, tail) = spawn_pg_restore(io.pg_restore, io.args, io.env, true)?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let held = download_decode(&io.download, &mut stdin, cancel).await;
    let held = match held {
        Ok(held) => held,
        Err(e) => {
            // pg_restore never saw the end of the archive: its transaction rolls back.
            let _ = child.start_kill();
            let _ = child.wait().await;
            if matches!(e, RestoreError::Io(_) | RestoreError::Write(_)) {
                return Err(pg_restore_error(None, &tail).unwrap_or(e));
            }
            return Err(e);
        }
    };
    if let Some(last) = held {
        stdin
            .write_all(&last)
            .await
            .map_err(|e| RestoreError::Io(format!("writing to pg_restore: {e}")))?;
    }
    drop(stdin);
    let status = child
        .wait()
        .await
        .map_err(|e| RestoreError::Io(e.to_string()))?;
    match pg_restore_error(Some(status), &tail) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

async fn staged_restore(io: RestoreIo<'_>, cancel: &CancellationToken) -> Result<(), RestoreError> {
    let ctx = io.download.ctx;
    let dir = ctx.state_dir.join("restore-tmp");
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| RestoreError::Io(format!("cannot create {}: {e}", dir.display())))?;
    let file_path: PathBuf = dir.join(format!(
        "{}-{}.dump",
        ctx.name,
        uuid::Uuid::new_v4().simple()
    ));
    let needed = io.download.object.raw_bytes;
    let full = |path: &std::path::Path| RestoreError::StateDirFull {
        path: path.to_owned(),
        needed,
        free: crate::repo::free_bytes(&dir),
    };
    // Fail before downloading anything when the dump cannot fit.
    if crate::repo::free_bytes(&dir).is_some_and(|free| free < needed) {
        return Err(full(&dir));
    }
    let _cleanup = RemoveOnDrop(file_path.clone());
    let staging = |e: std::io::Error| {
        if crate::repo::is_out_of_space(&e) {
            full(&file_path)
        } else {
            RestoreError::Io(format!("writing {}: {e}", file_path.display()))
        }
    };
    let mut file = tokio::fs::File::create(&file_path).await.map_err(staging)?;
    let held = match download_decode(&io.download, &mut file, cancel).await {
        Err(RestoreError::Write(e)) => return Err(staging(e)),
        other => other?,
    };
    if let Some(last) = held {
        file.write_all(&last).await.map_err(staging)?;
    }
    file.flush().await.map_err(staging)?;
    drop(file);
    let mut all_args = io.args.to_vec();
    all_args.push(file_path.display().to_string());
    let (mut child, tail) = spawn_pg_restore(io.pg_restore, &all_args, io.env, false)?;
    let status = tokio::select! {
        _ = cancel.cancelled() => {
            let _ = child.start_kill();
            return Err(RestoreError::Cancelled);
        }
        status = child.wait() => status.map_err(|e| RestoreError::Io(e.to_string()))?,
    };
    match pg_restore_error(Some(status), &tail) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

type Tail = Arc<Mutex<VecDeque<String>>>;

fn spawn_pg_restore(
    pg_restore: &std::path::Path,
    args: &[String],
    env: &[(String, String)],
    stdin: bool,
) -> Result<(tokio::process::Child, Tail), RestoreError> {
    let mut child = Command::new(pg_restore)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(if stdin { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| RestoreError::Io(format!("cannot start {}: {e}", pg_restore.display())))?;
    let tail: Tail = Arc::default();
    if let Some(stderr) = child.stderr.take() {
        let tail = Arc::clone(&tail);
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let mut t = tail.lock().unwrap_or_else(|p| p.into_inner());
                if t.len() == 20 {
                    t.pop_front();
                }
                t.push_back(line);
            }
        });
    }
    Ok((child, tail))
}

fn pg_restore_error(status: Option<std::process::ExitStatus>, tail: &Tail) -> Option<RestoreError> {
    if status.is_some_and(|s| s.success()) {
        return None;
    }
    let stderr: Vec<String> = tail
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .cloned()
        .collect();
    Some(RestoreError::PgRestore {
        status: status.map_or_else(|| "a closed input".to_owned(), |s| s.to_string()),
        stderr: stderr.join(" | "),
    })
}

/// `Read` over a channel of chunks (for the blocking decoder).
struct ChannelReader {
    rx: mpsc::Receiver<Bytes>,
    current: Bytes,
}

impl ChannelReader {
    fn new(rx: mpsc::Receiver<Bytes>) -> Self {
        ChannelReader {
            rx,
            current: Bytes::new(),
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(chunk) => self.current = chunk,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}
