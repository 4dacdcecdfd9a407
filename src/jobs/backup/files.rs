//! `kind = "files"`: the job's trees as one tar object, through the same
//! codec chain, hashing and commit as a database dump.

use std::sync::Arc;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use super::{BackupError, Progress, allocate_id, codec_facts, encode_spec};
use crate::core::manifest::{FORMAT_VERSION, FilesFacts, Manifest, ObjectEntry, SourceFacts};
use crate::files::{ArchiveOptions, ArchiveReport, archive};
use crate::jobs::JobContext;
use crate::pipeline::limits::UploadLimits;
use crate::pipeline::upload::{PipelineError, Upload, upload_produced};

/// The object's name: `files.tar` plus the codec's extensions.
pub fn object_name(suffix: &str) -> String {
    format!("files.tar{suffix}")
}

pub(super) async fn run(
    ctx: &JobContext,
    progress: &Progress,
    cancel: &CancellationToken,
) -> Result<Manifest, BackupError> {
    let started_at = Utc::now();
    let job = &ctx.job;
    let options = ArchiveOptions {
        paths: job.paths.clone(),
        exclude: job.exclude.clone(),
        one_file_system: job.one_file_system,
        follow_symlinks: job.follow_symlinks,
    };
    let backup_id = allocate_id(ctx, started_at, progress).await?;
    let (encode, suffix) = encode_spec(ctx);
    let name = object_name(&suffix);
    let path = ctx.repo.object_path(&ctx.name, &backup_id, &name);
    let upload = Upload {
        tool: "the file archiver",
        repo: &ctx.repo,
        path: &path,
        encode: &encode,
        limits: UploadLimits::for_repo(&ctx.repo, job.stall_timeout),
        progress: Arc::clone(&progress.source_bytes),
    };
    let produce = move |sink: &mut crate::pipeline::upload::EncodingSink| {
        archive(&options, sink).map_err(|e| PipelineError::Encode(e.to_string()))
    };
    let (outcome, report) = upload_produced(produce, upload, cancel)
        .await
        .map_err(|error| match error {
            PipelineError::Cancelled => BackupError::Cancelled,
            other => BackupError::Files(other),
        })?;
    if job.strict && (report.changed_count > 0 || report.vanished_count > 0) {
        return Err(strict_failure(&report));
    }
    if report.changed_count + report.vanished_count > 0 {
        tracing::warn!(job = %ctx.name, changed = report.changed_count, vanished = report.vanished_count, first_changed = ?report.changed.first(), "files changed or vanished while they were read; stored as read");
    }
    let (compression, encryption) = codec_facts(ctx);
    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        job: ctx.name.as_str().into(),
        backup_id,
        kind: "files".into(),
        started_at,
        finished_at: Utc::now(),
        source: SourceFacts {
            server_version: String::new(),
            server_version_num: 0,
            pg_dump_version: String::new(),
            host: crate::jobs::host::hostname(),
        },
        compression,
        encryption,
        objects: vec![ObjectEntry {
            name,
            database: None,
            format: "tar".into(),
            stored_bytes: outcome.stored.bytes,
            raw_bytes: outcome.raw_bytes,
            sha256: outcome.stored.sha256,
        }],
        journal_head: ctx.journal_head(),
        vigil_version: env!("CARGO_PKG_VERSION").into(),
        files: Some(FilesFacts {
            paths: job.paths.iter().map(|p| p.display().to_string()).collect(),
            exclude: job.exclude.clone(),
            report: serde_json::to_value(&report).unwrap_or_default(),
        }),
        physical: None,
    };
    if cancel.is_cancelled() {
        return Err(BackupError::Cancelled);
    }
    ctx.repo.commit_manifest(&manifest).await?;
    Ok(manifest)
}

/// `strict = true` and files changed or vanished while read.
fn strict_failure(report: &ArchiveReport) -> BackupError {
    BackupError::Strict {
        changed: report.changed_count,
        vanished: report.vanished_count,
        examples: report
            .changed
            .iter()
            .chain(&report.vanished)
            .take(3)
            .cloned()
            .collect::<Vec<_>>()
            .join(", "),
    }
}
