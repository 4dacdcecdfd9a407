//! `kind = "postgres"`: logical backups, one `pg_dump` object per database
//! (plus the globals for `all`), then the manifest (the commit point).

use std::process::Stdio;
use std::sync::Arc;

use chrono::Utc;
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

use super::{BackupError, Progress, allocate_id, codec_facts, encode_spec};
use crate::config::Databases;
use crate::core::manifest::{FORMAT_VERSION, Manifest, ObjectEntry, SourceFacts, object_name};
use crate::jobs::JobContext;
use crate::pipeline::limits::UploadLimits;
use crate::pipeline::pgtools::{describe_host, find_tool, libpq_env, tool_version};
use crate::pipeline::upload::{EncodeSpec, Upload, upload_child};

/// One logical backup: `pg_dump` per database (and `pg_dumpall --globals-only`
/// for `all`), each object streamed to the repository, then the manifest.
pub(super) async fn run(
    ctx: &JobContext,
    progress: &Progress,
    cancel: &CancellationToken,
) -> Result<Manifest, BackupError> {
    let started_at = Utc::now();
    let source = super::source(ctx)?;
    let pg_dump = ctx.job.pg_dump.clone().or_else(|| find_tool("pg_dump"));
    // A connection and a process start: side by side, not one after the
    // other (a fixed cost of every run). The source's error comes first.
    let version = async {
        match &pg_dump {
            Some(tool) => Some(tool_version(tool).await),
            None => None,
        }
    };
    // The new backup's id (a listing) beside them too.
    let (facts, version, backup_id) = tokio::join!(
        source_facts(ctx),
        version,
        allocate_id(ctx, started_at, progress)
    );
    let facts = facts?;
    let (pg_dump, (dump_major, dump_version)) = match (pg_dump, version) {
        (Some(tool), Some(version)) => (tool, version?),
        _ => return Err(BackupError::ToolMissing { tool: "pg_dump" }),
    };
    let server_major = (facts.version_num / 10000) as u32;
    if dump_major < server_major {
        return Err(BackupError::ToolTooOld {
            tool: pg_dump,
            version: dump_version,
            server_version: facts.version,
            server_major,
            job: ctx.name.clone(),
        });
    }

    let backup_id = backup_id?;
    let job = &ctx.job;
    let (encode, suffix) = encode_spec(ctx);
    let limits = UploadLimits::for_repo(&ctx.repo, job.stall_timeout);
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
        job: ctx.name.clone().into(),
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
        physical: None,
    };
    if cancel.is_cancelled() {
        return Err(BackupError::Cancelled);
    }
    ctx.repo.commit_manifest(&manifest).await?;
    Ok(manifest)
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
        .map_err(|source| BackupError::ToolStart {
            tool: tool.to_owned(),
            source,
        })?;
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
        crate::jobs::context::SourceError::Connect {
            host,
            unreachable: true,
            detail,
        } => BackupError::SourceUnreachable {
            host,
            detail: ctx.redact(&detail),
        },
        other => BackupError::Source {
            job: ctx.name.clone(),
            detail: ctx.redact(&other.to_string()),
        },
    })?;
    let chain = |e: tokio_postgres::Error| BackupError::Source {
        job: ctx.name.clone(),
        detail: ctx.redact(&crate::core::redact::error_chain(&e)),
    };
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
