//! Streams a child process's stdout through the codec chain into one
//! repository object. Three stages joined by bounded channels: read (with
//! a stall timeout), encode on a blocking thread, upload in parts. An
//! in-process producer (the tar archiver) encodes on its own thread, so
//! it needs only the second channel.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use thiserror::Error;
use tokio::io::AsyncReadExt;
use tokio::process::Child;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::codec::{Compressor, HashingSink, Sealed, Stored};
use super::limits::{PartSizer, UploadLimits};
use super::stderr::Tail;
use crate::config::Compression;
use crate::repo::{PartLimits, RepoError, Repository};

/// Chunks in flight between two stages: memory is bounded by
/// `QUEUE × CHUNK` per channel plus one upload part.
pub(super) const QUEUE: usize = 4;
const READ_CHUNK: usize = 256 * 1024;

#[derive(Debug, Error)]
pub enum PipelineError {
    #[error("{tool} exited with {status}: {stderr}")]
    Source {
        tool: String,
        status: String,
        stderr: String,
    },
    #[error("{tool} sent no data for {}: stalled (jobs.<name>.stall_timeout)", humantime::format_duration(*.after))]
    Stalled { tool: String, after: Duration },
    #[error("reading {tool}'s output: {0}", tool = .1)]
    Read(std::io::Error, String),
    #[error("compressing/encrypting: {0}")]
    Encode(String),
    #[error(transparent)]
    Storage(#[from] RepoError),
    #[error(
        "object {path} would need more than {max_parts} parts (raise the repository's part_size)"
    )]
    TooManyParts { path: String, max_parts: u64 },
    /// The child was started without a stdout pipe (a caller's mistake).
    #[error("{tool} was started without a pipe on its output")]
    NoOutput { tool: String },
    #[error("cancelled (shutdown)")]
    Cancelled,
    /// A failpoint armed to fail this step (test builds only).
    #[cfg(feature = "failpoints")]
    #[error(transparent)]
    Injected(#[from] crate::failpoint::Injected),
}

/// How one object is encoded and uploaded.
#[derive(Clone)]
pub struct EncodeSpec {
    pub compression: Compression,
    pub level: i32,
    pub workers: u32,
    /// zstd's job size per worker.
    pub zstd_job_size: u32,
    pub recipients: Vec<age::x25519::Recipient>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadOutcome {
    pub stored: Stored,
    pub raw_bytes: u64,
}

/// One object to upload from a child process.
pub struct Upload<'a> {
    /// The child's name in messages (`pg_dump`).
    pub tool: &'a str,
    pub repo: &'a Repository,
    pub path: &'a str,
    pub encode: &'a EncodeSpec,
    pub limits: UploadLimits,
    /// Raw bytes read so far, for progress reports.
    pub progress: Arc<AtomicU64>,
}

/// Streams `child`'s stdout into `upload.path`. On any failure the object
/// is aborted (no partial object is left under its name) and the child killed.
pub async fn upload_child(
    mut child: Child,
    upload: Upload<'_>,
    cancel: &CancellationToken,
) -> Result<UploadOutcome, PipelineError> {
    let Upload {
        tool,
        repo,
        path,
        encode,
        limits,
        progress,
    } = upload;
    let Some(stdout) = child.stdout.take() else {
        let _ = child.start_kill();
        return Err(PipelineError::NoOutput {
            tool: tool.to_owned(),
        });
    };
    widen_pipe(&stdout);
    let stderr_tail = Tail::of(&mut child);

    let (raw_tx, raw_rx) = mpsc::channel::<Bytes>(QUEUE);
    let read = async {
        let raw_bytes = read_stage(
            stdout,
            raw_tx,
            tool,
            limits.stall_timeout,
            Arc::clone(&progress),
            cancel,
        )
        .await?;
        let status = child
            .wait()
            .await
            .map_err(|e| PipelineError::Read(e, tool.to_owned()))?;
        if !status.success() {
            // Give the stderr reader a moment to drain the last lines.
            tokio::time::sleep(Duration::from_millis(50)).await;
            return Err(PipelineError::Source {
                tool: tool.to_owned(),
                status: status.to_string(),
                stderr: stderr_tail.text(),
            });
        }
        Ok(raw_bytes)
    };
    let (out_tx, out_rx) = mpsc::channel::<Bytes>(QUEUE);
    let encoder = {
        let encode = encode.clone();
        tokio::task::spawn_blocking(move || encode_stream(raw_rx, out_tx, &encode))
    };
    let encoded = async {
        let raw_bytes = read.await?;
        let stored = encoder
            .await
            .map_err(|e| PipelineError::Encode(e.to_string()))?
            .map_err(|e| PipelineError::Encode(e.to_string()))?;
        Ok((raw_bytes, stored))
    };
    let target = Target { repo, path, limits };
    let result = upload_encoded(out_rx, encoded, target, cancel).await;
    if result.is_err() {
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
    result
}

/// Where one object is stored.
pub(super) struct Target<'a> {
    pub(super) repo: &'a Repository,
    pub(super) path: &'a str,
    pub(super) limits: UploadLimits,
}

/// Uploads the encoded chunks arriving on `out_rx` to the target; `encoded`
/// resolves to the raw byte count and what was stored once the encoder has
/// sent everything. On any failure the object is aborted (no partial object
/// under its name).
pub(super) async fn upload_encoded(
    out_rx: mpsc::Receiver<Bytes>,
    encoded: impl std::future::Future<Output = Result<(u64, Stored), PipelineError>>,
    target: Target<'_>,
    cancel: &CancellationToken,
) -> Result<UploadOutcome, PipelineError> {
    let Target { repo, path, limits } = target;
    let mut writer = repo.writer(path).await?;
    let result = {
        let upload = upload_stage(&mut writer, out_rx, repo, path, limits.parts, cancel);
        tokio::pin!(encoded, upload);
        tokio::select! {
            done = &mut encoded => match done {
                Ok(encoded) => upload.await.map(|()| encoded),
                Err(e) => {
                    // Never drop the upload mid-write: opendal's retrying
                    // writer then refuses the abort ("retry layer is in bad
                    // state"). The encoder has closed the channel, so the
                    // upload stage ends after the write in flight.
                    let _ = upload.await;
                    Err(e)
                }
            },
            uploaded = &mut upload => match uploaded {
                Ok(()) => encoded.await,
                Err(e) => Err(e),
            },
        }
    };
    match result {
        Ok((raw_bytes, stored)) => {
            writer
                .close()
                .await
                .map_err(|e| repo_error(repo, "cannot finish", path, e))?;
            crate::failpoint!("backup.after_data_commit");
            Ok(UploadOutcome { stored, raw_bytes })
        }
        Err(e) => {
            if let Err(abort) = writer.abort().await {
                tracing::warn!(path, error = %abort, "cannot abort the partial upload; prune will collect it");
            }
            Err(e)
        }
    }
}

/// Where an in-process producer writes its raw bytes: the codec chain
/// itself, run on the producer's thread (no copy into chunks and no
/// hand-off to an encoder thread), counting bytes and stopping on cancel.
pub struct EncodingSink {
    encoder: Compressor,
    total: u64,
    progress: Arc<AtomicU64>,
    cancel: CancellationToken,
}

impl EncodingSink {
    /// Raw bytes written so far.
    pub fn total(&self) -> u64 {
        self.total
    }
}

impl std::io::Write for EncodingSink {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if self.cancel.is_cancelled() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::Interrupted,
                "cancelled",
            ));
        }
        let n = self.encoder.write(data)?;
        self.total += n as u64;
        self.progress.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.encoder.flush()
    }
}

/// Streams what `produce` writes (on a blocking thread, which also
/// compresses, encrypts and hashes) into `upload.path`; returns the outcome
/// and what `produce` returned.
pub async fn upload_produced<T: Send + 'static>(
    produce: impl FnOnce(&mut EncodingSink) -> Result<T, PipelineError> + Send + 'static,
    upload: Upload<'_>,
    cancel: &CancellationToken,
) -> Result<(UploadOutcome, T), PipelineError> {
    let Upload {
        tool,
        repo,
        path,
        encode,
        limits,
        progress,
    } = upload;
    let (out_tx, out_rx) = mpsc::channel::<Bytes>(QUEUE);
    let encode = encode.clone();
    let sink_cancel = cancel.clone();
    let producer = tokio::task::spawn_blocking(move || {
        let encode_err = |e: std::io::Error| PipelineError::Encode(e.to_string());
        let encoder = codec_chain(out_tx, &encode).map_err(encode_err)?;
        let mut sink = EncodingSink {
            encoder,
            total: 0,
            progress,
            cancel: sink_cancel,
        };
        let value = produce(&mut sink)?;
        let total = sink.total;
        let stored = sink.encoder.finish().map_err(encode_err)?;
        Ok::<_, PipelineError>((total, stored, value))
    });
    let produced = std::sync::Mutex::new(None);
    let encoded = async {
        let (total, stored, value) = producer
            .await
            .map_err(|e| PipelineError::Encode(format!("{tool} panicked: {e}")))??;
        *produced.lock().unwrap_or_else(|p| p.into_inner()) = Some(value);
        if cancel.is_cancelled() {
            return Err(PipelineError::Cancelled);
        }
        Ok((total, stored))
    };
    let target = Target { repo, path, limits };
    let outcome = upload_encoded(out_rx, encoded, target, cancel).await?;
    let value = produced
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .ok_or_else(|| PipelineError::Encode(format!("{tool} produced nothing")))?;
    Ok((outcome, value))
}

fn repo_error(
    repo: &Repository,
    action: &'static str,
    path: &str,
    e: opendal::Error,
) -> PipelineError {
    PipelineError::Storage(repo.storage_err(action, path, e))
}

async fn read_stage(
    mut stdout: tokio::process::ChildStdout,
    tx: mpsc::Sender<Bytes>,
    tool: &str,
    stall: Duration,
    progress: Arc<AtomicU64>,
    cancel: &CancellationToken,
) -> Result<u64, PipelineError> {
    let mut total = 0u64;
    let mut eof = false;
    while !eof {
        // A pipe hands over at most its size per read (64 KiB by default):
        // gather a full chunk before waking the encoder thread.
        let mut buf = BytesMut::with_capacity(READ_CHUNK);
        while buf.len() < READ_CHUNK {
            let n = tokio::select! {
                _ = cancel.cancelled() => return Err(PipelineError::Cancelled),
                read = tokio::time::timeout(stall, stdout.read_buf(&mut buf)) => match read {
                    Err(_) => return Err(PipelineError::Stalled { tool: tool.to_owned(), after: stall }),
                    Ok(Err(e)) => return Err(PipelineError::Read(e, tool.to_owned())),
                    Ok(Ok(n)) => n,
                },
            };
            if n == 0 {
                eof = true;
                break;
            }
            total += n as u64;
            progress.fetch_add(n as u64, Ordering::Relaxed);
        }
        if !buf.is_empty() && tx.send(buf.freeze()).await.is_err() {
            // The encoder stopped; its own error is the one to report.
            return Ok(total);
        }
    }
    Ok(total)
}

/// Widens a pipe to 1 MiB (Linux), so the producer blocks less often.
/// Best effort: an unprivileged process may be limited by
/// /proc/sys/fs/pipe-max-size.
pub fn widen_pipe(fd: impl std::os::fd::AsFd) {
    let _ = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETPIPE_SZ(1 << 20));
}

/// The codec chain of `spec` in front of a hashing sink feeding `tx`.
pub(super) fn codec_chain(
    tx: mpsc::Sender<Bytes>,
    spec: &EncodeSpec,
) -> std::io::Result<Compressor> {
    let sealed = Sealed::new(HashingSink::new(tx), &spec.recipients)?;
    Compressor::new(
        sealed,
        spec.compression,
        spec.level,
        spec.workers,
        spec.zstd_job_size,
    )
}

fn encode_stream(
    mut rx: mpsc::Receiver<Bytes>,
    tx: mpsc::Sender<Bytes>,
    spec: &EncodeSpec,
) -> std::io::Result<Stored> {
    use std::io::Write;
    let mut compressor = codec_chain(tx, spec)?;
    while let Some(chunk) = rx.blocking_recv() {
        compressor.write_all(&chunk)?;
    }
    compressor.finish()
}

async fn upload_stage(
    writer: &mut opendal::Writer,
    mut rx: mpsc::Receiver<Bytes>,
    repo: &Repository,
    path: &str,
    limits: PartLimits,
    cancel: &CancellationToken,
) -> Result<(), PipelineError> {
    let mut sizer = PartSizer::new(limits.part_size, limits.max_parts).capped(limits.max_part_size);
    let mut target = if limits.multipart {
        sizer.next_part()
    } else {
        Some(0)
    };
    // Each part is allocated once at its size and handed over whole: no
    // doubling while it fills, no remainder pinning the previous allocation.
    let mut part = BytesMut::with_capacity(if limits.multipart {
        target.unwrap_or(0)
    } else {
        0
    });
    let write_err = |e: opendal::Error| repo_error(repo, "cannot write", path, e);
    loop {
        let chunk = tokio::select! {
            _ = cancel.cancelled() => return Err(PipelineError::Cancelled),
            chunk = rx.recv() => chunk,
        };
        let Some(chunk) = chunk else { break };
        if !limits.multipart {
            writer.write(chunk).await.map_err(write_err)?;
            continue;
        }
        let mut chunk = &chunk[..];
        while !chunk.is_empty() {
            let size = target.ok_or(PipelineError::TooManyParts {
                path: path.to_owned(),
                max_parts: limits.max_parts,
            })?;
            let take = (size - part.len()).min(chunk.len());
            part.extend_from_slice(&chunk[..take]);
            chunk = &chunk[take..];
            if part.len() == size {
                target = sizer.next_part();
                let next = BytesMut::with_capacity(target.unwrap_or(0));
                let full = std::mem::replace(&mut part, next).freeze();
                writer.write(full).await.map_err(write_err)?;
            }
        }
    }
    if !part.is_empty() {
        if target.is_none() {
            return Err(PipelineError::TooManyParts {
                path: path.to_owned(),
                max_parts: limits.max_parts,
            });
        }
        writer.write(part.freeze()).await.map_err(write_err)?;
    }
    crate::failpoint!("backup.before_data_commit");
    Ok(())
}
