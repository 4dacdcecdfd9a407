//! `kind = "postgres-physical"`: one base backup over the replication
//! protocol. Each tar archive the server sends (already zstd-compressed by
//! the server) streams straight into its object (`base.tar.zst`,
//! `<oid>.tar.zst`, `.age` when encrypted), PostgreSQL's backup_manifest
//! into its own (compressed by vigil); then the run waits until the WAL
//! segment holding the stop position is archived (the backup is useless
//! without it) and commits the vigil manifest last.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use chrono::Utc;
use tokio_util::sync::CancellationToken;

use super::{BackupError, Progress, allocate_id, encode_spec};
use crate::config::Compression;
use crate::core::manifest::{
    CompressionFacts, FORMAT_VERSION, Manifest, ObjectEntry, PhysicalFacts, SourceFacts,
    TablespaceFacts,
};
use crate::core::wal::{Lsn, Segment, WalFile};
use crate::jobs::JobContext;
use crate::pgconn::replication::{
    self, BackupEnd, BackupStart, BaseBackupOptions, Chunk, ReplicationError, Session,
};
use crate::pipeline::feed::{Feed, FeedError, upload_fed};
use crate::pipeline::limits::UploadLimits;
use crate::pipeline::pgtools::describe_host;
use crate::pipeline::upload::{EncodeSpec, Upload};

/// Bytes gathered from CopyData messages (about 32 KiB each) before they
/// wake the encoder thread.
const COALESCE: usize = 256 * 1024;
/// How often the repository is asked for the stop segment.
const ARCHIVE_POLL: Duration = Duration::from_millis(250);
/// The oldest server whose BASE_BACKUP options we speak.
const MIN_SERVER: i32 = 150000;

/// What the server said about itself before the backup.
struct Server {
    system_identifier: String,
    segment_size: u64,
    version: String,
    version_num: i32,
}

pub(super) async fn run(
    ctx: &JobContext,
    progress: &Progress,
    cancel: &CancellationToken,
) -> Result<Manifest, BackupError> {
    let started_at = Utc::now();
    let source = super::source(ctx)?;
    let mut session = replication::connect(&source).await.map_err(unreachable)?;
    session.stall_timeout = ctx.job.stall_timeout;
    let server = server_facts(&mut session).await?;
    let backup_id = allocate_id(ctx, started_at, progress).await?;
    let label = format!("vigil {} {backup_id}", ctx.name);
    let options = BaseBackupOptions {
        label: label.clone(),
        checkpoint: ctx.job.checkpoint,
        compress_level: ctx.job.level(),
        compress_workers: ctx
            .job
            .compression_workers
            .unwrap_or(DEFAULT_SERVER_WORKERS),
    };
    let start = session.start_base_backup(&options).await?;
    tracing::info!(job = %ctx.name, backup = %backup_id, start_lsn = %start.start_lsn, timeline = start.timeline, "base backup started");
    let streamed = {
        let mut stream = Stream {
            ctx,
            session: &mut session,
            backup_id: &backup_id,
            progress,
            cancel,
        };
        stream.archives(&start).await?
    };
    let end = session.finish_base_backup().await?;
    session.terminate().await;
    tracing::info!(job = %ctx.name, backup = %backup_id, stop_lsn = %end.stop_lsn, "base backup streamed; waiting for its last WAL segment");
    wait_for_archive(ctx, &end, server.segment_size, cancel).await?;

    let (_, encryption) = super::codec_facts(ctx);
    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        job: ctx.name.clone().into(),
        backup_id,
        kind: "physical".into(),
        started_at,
        finished_at: Utc::now(),
        source: SourceFacts {
            server_version: server.version,
            server_version_num: server.version_num,
            pg_dump_version: String::new(),
            host: describe_host(&source.pg),
        },
        // Every object is zstd: the tars by the server, backup_manifest by vigil.
        compression: CompressionFacts {
            algorithm: Compression::Zstd.as_str().into(),
            level: ctx.job.level(),
        },
        encryption,
        objects: streamed.objects,
        journal_head: ctx.journal_head(),
        vigil_version: env!("CARGO_PKG_VERSION").into(),
        files: None,
        physical: Some(PhysicalFacts {
            start_lsn: start.start_lsn,
            stop_lsn: end.stop_lsn,
            timeline: start.timeline,
            system_identifier: server.system_identifier,
            wal_segment_size: server.segment_size,
            label,
            tablespaces: streamed.tablespaces,
        }),
    };
    if cancel.is_cancelled() {
        return Err(BackupError::Cancelled);
    }
    ctx.repo.commit_manifest(&manifest).await?;
    Ok(manifest)
}

/// Server-side zstd threads when `compression_workers` is not set.
const DEFAULT_SERVER_WORKERS: u32 = 2;

/// A server that cannot be reached at all is reported as such.
fn unreachable(e: ReplicationError) -> BackupError {
    match e {
        ReplicationError::Connect { host, source } => BackupError::SourceUnreachable {
            host,
            detail: source.to_string(),
        },
        other => other.into(),
    }
}

async fn server_facts(session: &mut Session) -> Result<Server, BackupError> {
    let system = session.identify_system().await?;
    let segment_size = session.wal_segment_size().await?;
    let version = session.show("server_version").await?;
    let version_num = session
        .show("server_version_num")
        .await?
        .parse()
        .unwrap_or(0);
    if version_num < MIN_SERVER {
        return Err(BackupError::ServerTooOld {
            host: session.host().to_owned(),
            version,
        });
    }
    Ok(Server {
        system_identifier: system.system_identifier,
        segment_size,
        version,
        version_num,
    })
}

/// The objects one COPY stream became.
struct Streamed {
    objects: Vec<ObjectEntry>,
    tablespaces: Vec<TablespaceFacts>,
}

/// One base backup's COPY stream on its way to the repository.
struct Stream<'a> {
    ctx: &'a JobContext,
    session: &'a mut Session,
    backup_id: &'a str,
    progress: &'a Progress,
    cancel: &'a CancellationToken,
}

impl Stream<'_> {
    /// Every archive, then the backup manifest, each into its object.
    async fn archives(&mut self, start: &BackupStart) -> Result<Streamed, BackupError> {
        let (tar_encode, suffix) = encode_spec(self.ctx);
        // The server compressed the tars: vigil only encrypts and hashes them.
        let tar_encode = EncodeSpec {
            compression: Compression::None,
            ..tar_encode
        };
        let manifest_encode = EncodeSpec {
            compression: Compression::Zstd,
            level: Compression::Zstd.default_level(),
            workers: 1,
            ..tar_encode.clone()
        };
        let age = suffix
            .strip_prefix(Compression::Zstd.extension())
            .unwrap_or("");
        let mut streamed = Streamed {
            objects: Vec::new(),
            tablespaces: Vec::new(),
        };
        let mut next = self.session.next_chunk().await?;
        loop {
            next = match next {
                None => return Ok(streamed),
                Some(Chunk::Archive { name, location }) => {
                    let object = format!("{name}{age}");
                    let (entry, following) = self.store(&object, "tar", &tar_encode).await?;
                    if let Some(location) = location {
                        let oid = tablespace_oid(start, &name, &location);
                        streamed.tablespaces.push(TablespaceFacts {
                            oid,
                            location,
                            object,
                        });
                    }
                    streamed.objects.push(entry);
                    following
                }
                Some(Chunk::Manifest) => {
                    let object = format!("backup_manifest{suffix}");
                    let format = "backup_manifest";
                    let (entry, following) = self.store(&object, format, &manifest_encode).await?;
                    streamed.objects.push(entry);
                    following
                }
                Some(Chunk::Data(_)) => {
                    return Err(ReplicationError::Protocol {
                        host: self.session.host().to_owned(),
                        step: "BASE_BACKUP",
                        what: "data before an archive header".into(),
                    }
                    .into());
                }
            };
        }
    }

    /// Streams the current archive into `object`; returns its entry and
    /// the chunk that ended it.
    async fn store(
        &mut self,
        object: &str,
        format: &str,
        encode: &EncodeSpec,
    ) -> Result<(ObjectEntry, Option<Chunk>), BackupError> {
        let path = self
            .ctx
            .repo
            .object_path(&self.ctx.name, self.backup_id, object);
        let upload = Upload {
            tool: "BASE_BACKUP",
            repo: &self.ctx.repo,
            path: &path,
            encode,
            limits: UploadLimits::for_repo(&self.ctx.repo, self.ctx.job.stall_timeout),
            progress: std::sync::Arc::clone(&self.progress.source_bytes),
        };
        let session = &mut *self.session;
        let fed = upload_fed(|feed| forward(session, feed), upload, self.cancel).await;
        let (outcome, following) = fed.map_err(|e| match e {
            FeedError::Producer(e) => BackupError::Replication(e),
            FeedError::Pipeline(error) => BackupError::Object {
                database: object.to_owned(),
                error,
            },
        })?;
        tracing::debug!(object, raw_bytes = outcome.raw_bytes, "object stored");
        let entry = ObjectEntry {
            name: object.to_owned(),
            database: None,
            format: format.into(),
            stored_bytes: outcome.stored.bytes,
            raw_bytes: outcome.raw_bytes,
            sha256: outcome.stored.sha256,
        };
        Ok((entry, following))
    }
}

/// Sends the current archive's data to `feed` in [`COALESCE`]-sized
/// chunks; returns the chunk that ends it (the next header, or `None`).
async fn forward(session: &mut Session, feed: Feed) -> Result<Option<Chunk>, ReplicationError> {
    let mut gathered = BytesMut::with_capacity(COALESCE);
    loop {
        match session.next_chunk().await? {
            Some(Chunk::Data(data)) => {
                gathered.extend_from_slice(&data);
                if gathered.len() >= COALESCE && !send(&feed, &mut gathered).await {
                    // The encoder stopped; the upload reports why.
                    return Ok(None);
                }
            }
            other => {
                send(&feed, &mut gathered).await;
                return Ok(other);
            }
        }
    }
}

/// Hands what was gathered to the encoder; false when it is gone.
async fn send(feed: &Feed, gathered: &mut BytesMut) -> bool {
    if gathered.is_empty() {
        return true;
    }
    let full: Bytes = std::mem::replace(gathered, BytesMut::with_capacity(COALESCE)).freeze();
    feed.send(full).await.is_ok()
}

/// A tablespace archive's oid: from the server's list by location, else
/// from its name (`16385.tar.zst`).
fn tablespace_oid(start: &BackupStart, name: &str, location: &str) -> u32 {
    start
        .tablespaces
        .iter()
        .find(|t| t.location == location)
        .map(|t| t.oid)
        .or_else(|| name.split('.').next().and_then(|oid| oid.parse().ok()))
        .unwrap_or(0)
}

/// Waits until the WAL segment holding the backup's stop position is in
/// the repository (PostgreSQL archives it right after the backup ends),
/// at most `archive_timeout`.
async fn wait_for_archive(
    ctx: &JobContext,
    end: &BackupEnd,
    segment_size: u64,
    cancel: &CancellationToken,
) -> Result<(), BackupError> {
    let segment = WalFile::Segment(stop_segment(end, segment_size));
    let ext = crate::repo::wal::wal_extension(!ctx.recipients.is_empty());
    let path = ctx.repo.wal_path(&ctx.name, &segment, segment_size, ext);
    let deadline = Instant::now() + ctx.job.archive_timeout;
    loop {
        if ctx.repo.wal_stat(&path).await?.is_some() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(BackupError::WalNotArchived {
                job: ctx.name.clone(),
                segment: segment.file_name(segment_size),
                path,
                after: ctx.job.archive_timeout,
                archiver: archiver_status(ctx).await,
            });
        }
        tokio::select! {
            _ = cancel.cancelled() => return Err(BackupError::Cancelled),
            _ = tokio::time::sleep(ARCHIVE_POLL) => {}
        }
    }
}

/// The segment that must be archived for the backup to be consistent:
/// the stop position ends the backup's last record, so the last byte
/// needed is the one before it (PostgreSQL's own wait uses the same).
fn stop_segment(end: &BackupEnd, segment_size: u64) -> Segment {
    let last = Lsn(end.stop_lsn.0.saturating_sub(1));
    Segment::containing(end.timeline, last, segment_size)
}

/// What `pg_stat_archiver` and the archive settings say, for the message
/// of a missing segment (best effort: the role may not log in to a database).
async fn archiver_status(ctx: &JobContext) -> String {
    const SQL: &str = "SELECT current_setting('archive_mode'), current_setting('archive_command'), \
        archived_count, coalesce(last_archived_wal, 'none'), failed_count, coalesce(last_failed_wal, 'none') \
        FROM pg_stat_archiver";
    let client = match ctx.open_source().await {
        Ok(client) => client,
        Err(e) => {
            return format!(
                "pg_stat_archiver could not be read: {}",
                ctx.redact(&e.to_string())
            );
        }
    };
    match client.query_one(SQL, &[]).await {
        Ok(row) => ctx.redact(&format!(
            "archive_mode = {}, archive_command = '{}'; pg_stat_archiver: {} archived (last {}), {} failed (last {})",
            row.get::<_, String>(0),
            row.get::<_, String>(1),
            row.get::<_, i64>(2),
            row.get::<_, String>(3),
            row.get::<_, i64>(4),
            row.get::<_, String>(5),
        )),
        Err(e) => format!(
            "pg_stat_archiver could not be read: {}",
            ctx.redact(&crate::core::redact::error_chain(&e))
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stop_segment_holds_the_last_byte_before_the_stop_position() {
        let size = crate::core::wal::DEFAULT_SEGMENT_SIZE;
        let end = |lsn: &str| BackupEnd {
            stop_lsn: lsn.parse().unwrap(),
            timeline: 2,
        };
        let name = |lsn: &str| stop_segment(&end(lsn), size).file_name(size);
        assert_eq!(name("0/700001B0"), "000000020000000000000070");
        // Exactly at a boundary: the segment before it ends the backup.
        assert_eq!(name("0/71000000"), "000000020000000000000070");
        assert_eq!(name("1/00000028"), "000000020000000100000000");
    }
}
