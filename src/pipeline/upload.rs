//! Streams a child process's stdout through the codec chain into one
//! repository object. Two stages joined by a bounded channel: one blocking
//! thread reads the pipe in large blocks (with a stall timeout) and
//! compresses, encrypts and hashes them; the upload sends the encoded
//! chunks in parts. An in-process producer (the tar archiver) encodes on
//! its own thread the same way.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use thiserror::Error;
use tokio::process::Child;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::codec::{Compressor, HashingSink, Sealed, Stored};
use super::limits::{PartSizer, UploadLimits};
use super::source::{PipeSource, SourceError};
use super::stderr::Tail;
use crate::config::Compression;
use crate::repo::{PartLimits, RepoError, Repository};

/// Chunks in flight between two stages: memory is bounded by
/// `QUEUE × CHUNK` per channel plus one upload part.
pub(super) const QUEUE: usize = 4;
/// The pump's read buffer: a whole widened pipe (see [`widen_pipe`]).
const BLOCK: usize = 1 << 20;

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
    // Fires on shutdown, and when this call ends or is dropped (max_duration)
    // while the pump still waits on a pipe that a grandchild holds open.
    let stop = cancel.child_token();
    let _stop_on_drop = stop.clone().drop_guard();
    let source = stdout
        .into_owned_fd()
        .and_then(|fd| PipeSource::new(fd, limits.stall_timeout, progress, stop))
        .map_err(|e| PipelineError::Read(e, tool.to_owned()));
    let source = match source {
        Ok(source) => source,
        Err(e) => {
            let _ = child.start_kill();
            let _ = child.wait().await;
            return Err(e);
        }
    };

    let (out_tx, out_rx) = mpsc::channel::<Bytes>(QUEUE);
    let pump = {
        let encode = encode.clone();
        tokio::task::spawn_blocking(move || pump(source, out_tx, &encode))
    };
    let encoded = async {
        let pumped = pump
            .await
            .map_err(|e| PipelineError::Encode(format!("the {tool} reader panicked: {e}")))?;
        let (raw_bytes, stored) = pumped.map_err(|e| e.into_pipeline(tool))?;
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

/// Why the pump (read → compress → encrypt → hash) stopped.
#[derive(Debug)]
enum PumpError {
    Source(SourceError),
    Encode(std::io::Error),
}

impl PumpError {
    fn into_pipeline(self, tool: &str) -> PipelineError {
        match self {
            PumpError::Source(SourceError::Stalled(after)) => PipelineError::Stalled {
                tool: tool.to_owned(),
                after,
            },
            PumpError::Source(SourceError::Cancelled) => PipelineError::Cancelled,
            PumpError::Source(SourceError::Read(e)) => PipelineError::Read(e, tool.to_owned()),
            PumpError::Encode(e) => PipelineError::Encode(e.to_string()),
        }
    }
}

/// Reads `source` in blocks of up to [`BLOCK`] and runs each through the
/// codec chain, all on this (blocking) thread: the only hand-offs are the
/// encoded chunks to the uploader. Returns the raw byte count and what was
/// stored.
fn pump(
    mut source: PipeSource,
    tx: mpsc::Sender<Bytes>,
    spec: &EncodeSpec,
) -> Result<(u64, Stored), PumpError> {
    use std::io::Write;
    let mut chain = codec_chain(tx, spec).map_err(PumpError::Encode)?;
    let mut block = vec![0u8; BLOCK];
    let mut raw_bytes = 0u64;
    loop {
        let n = source.fill(&mut block).map_err(PumpError::Source)?;
        if n == 0 {
            break;
        }
        raw_bytes += n as u64;
        chain.write_all(&block[..n]).map_err(PumpError::Encode)?;
    }
    let stored = chain.finish().map_err(PumpError::Encode)?;
    Ok((raw_bytes, stored))
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
            // Upload first: when both have ended, a failed upload is the
            // cause and the encoder's "the uploader stopped" its effect.
            biased;
            uploaded = &mut upload => match uploaded {
                Ok(()) => encoded.await,
                Err(e) => Err(e),
            },
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
/// Small writes (a tar header, a small file) are gathered into one block
/// first: the codec chain's cost is per call.
pub struct EncodingSink {
    encoder: Compressor,
    staged: Vec<u8>,
    total: u64,
    progress: Arc<AtomicU64>,
    cancel: CancellationToken,
}

/// What [`EncodingSink`] gathers before calling the codec chain; writes of
/// this size or more go straight through.
const STAGED: usize = 256 << 10;

impl EncodingSink {
    fn new(encoder: Compressor, progress: Arc<AtomicU64>, cancel: CancellationToken) -> Self {
        EncodingSink {
            encoder,
            staged: Vec::with_capacity(STAGED),
            total: 0,
            progress,
            cancel,
        }
    }

    /// Raw bytes written so far.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Runs `data` through the codec chain, unless the run was cancelled.
    fn encode(&mut self, data: &[u8]) -> std::io::Result<()> {
        use std::io::Write;
        if self.cancel.is_cancelled() {
            // Not ErrorKind::Interrupted: write_all retries those forever.
            return Err(std::io::Error::other("cancelled (shutdown)"));
        }
        self.encoder.write_all(data)?;
        self.progress
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    fn encode_staged(&mut self) -> std::io::Result<()> {
        if self.staged.is_empty() {
            return Ok(());
        }
        let staged = std::mem::take(&mut self.staged);
        let result = self.encode(&staged);
        self.staged = staged;
        self.staged.clear();
        result
    }

    /// Encodes what is staged and ends the codec chain.
    fn finish(mut self) -> std::io::Result<(u64, Stored)> {
        self.encode_staged()?;
        let total = self.total;
        Ok((total, self.encoder.finish()?))
    }
}

impl std::io::Write for EncodingSink {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if self.staged.len() + data.len() > STAGED {
            self.encode_staged()?;
        }
        if data.len() >= STAGED {
            self.encode(data)?;
        } else {
            self.staged.extend_from_slice(data);
        }
        self.total += data.len() as u64;
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.encode_staged()?;
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
        let mut sink = EncodingSink::new(encoder, progress, sink_cancel);
        let value = produce(&mut sink)?;
        let (total, stored) = sink.finish().map_err(encode_err)?;
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

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::process::Stdio;

    use super::*;
    use crate::repo::fs_for_tests as fs_repo;

    fn spec(compression: Compression) -> EncodeSpec {
        EncodeSpec {
            compression,
            level: 3,
            workers: 2,
            zstd_job_size: super::super::codec::ZSTD_SMALL_JOB_SIZE,
            recipients: vec![],
        }
    }

    fn child(script: &str) -> Child {
        tokio::process::Command::new("sh")
            .args(["-c", script])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap()
    }

    fn upload<'a>(
        repo: &'a Repository,
        path: &'a str,
        encode: &'a EncodeSpec,
        stall: Duration,
        progress: &Arc<AtomicU64>,
    ) -> Upload<'a> {
        Upload {
            tool: "test-dump",
            repo,
            path,
            encode,
            limits: UploadLimits::for_repo(repo, stall),
            progress: Arc::clone(progress),
        }
    }

    #[tokio::test]
    async fn a_child_writing_small_pieces_is_stored_whole_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let repo = fs_repo(dir.path());
        let encode = spec(Compression::Zstd);
        let progress = Arc::new(AtomicU64::new(0));
        // 3,000 writes of 4 KiB with pauses: many partial pipe-fulls.
        let script = "i=0; while [ $i -lt 3000 ]; do head -c 4096 /dev/zero | tr '\\0' x; \
                      i=$((i+1)); [ $((i % 500)) -eq 0 ] && sleep 0.05; done";
        let outcome = upload_child(
            child(script),
            upload(&repo, "obj", &encode, Duration::from_secs(10), &progress),
            &CancellationToken::new(),
        )
        .await
        .unwrap();
        assert_eq!(outcome.raw_bytes, 3000 * 4096);
        assert_eq!(progress.load(Ordering::Relaxed), 3000 * 4096);
        let stored = std::fs::read(dir.path().join("obj")).unwrap();
        assert_eq!(outcome.stored.bytes, stored.len() as u64);
        let mut back = Vec::new();
        super::super::codec::decoder(&stored[..], Compression::Zstd, &[])
            .unwrap()
            .read_to_end(&mut back)
            .unwrap();
        assert!(back.len() == 3000 * 4096 && back.iter().all(|&b| b == b'x'));
    }

    #[tokio::test]
    async fn a_stalled_child_fails_even_when_a_grandchild_holds_the_pipe() {
        let dir = tempfile::tempdir().unwrap();
        let repo = fs_repo(dir.path());
        let encode = spec(Compression::Zstd);
        let progress = Arc::new(AtomicU64::new(0));
        let started = std::time::Instant::now();
        // The background sleep inherits stdout and outlives its parent.
        let result = upload_child(
            child("echo some; sleep 30 & sleep 30"),
            upload(&repo, "obj", &encode, Duration::from_millis(500), &progress),
            &CancellationToken::new(),
        )
        .await;
        assert!(
            matches!(&result, Err(PipelineError::Stalled { tool, after })
                if tool == "test-dump" && *after == Duration::from_millis(500)),
            "{result:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(!dir.path().join("obj").exists(), "no partial object");
    }

    #[tokio::test]
    async fn cancelling_stops_a_child_that_keeps_writing_and_stores_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let repo = fs_repo(dir.path());
        let encode = spec(Compression::Zstd);
        let progress = Arc::new(AtomicU64::new(0));
        let cancel = CancellationToken::new();
        let canceller = {
            let cancel = cancel.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(300)).await;
                cancel.cancel();
            })
        };
        let started = std::time::Instant::now();
        let result = upload_child(
            child("cat /dev/zero"),
            upload(&repo, "obj", &encode, Duration::from_secs(10), &progress),
            &cancel,
        )
        .await;
        canceller.await.unwrap();
        assert!(
            matches!(result, Err(PipelineError::Cancelled)),
            "{result:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(progress.load(Ordering::Relaxed) > 0);
        assert!(!dir.path().join("obj").exists(), "no partial object");
    }

    #[tokio::test]
    async fn a_failing_child_is_reported_with_its_stderr() {
        let dir = tempfile::tempdir().unwrap();
        let repo = fs_repo(dir.path());
        let encode = spec(Compression::Zstd);
        let progress = Arc::new(AtomicU64::new(0));
        let result = upload_child(
            child("echo partial; echo 'no such table' >&2; exit 3"),
            upload(&repo, "obj", &encode, Duration::from_secs(10), &progress),
            &CancellationToken::new(),
        )
        .await;
        match result {
            Err(PipelineError::Source {
                tool,
                status,
                stderr,
            }) => {
                assert_eq!(tool, "test-dump");
                assert!(status.contains('3'), "{status}");
                assert_eq!(stderr, "no such table");
            }
            other => panic!("{other:?}"),
        }
        assert!(!dir.path().join("obj").exists(), "no partial object");
    }

    #[test]
    fn a_cancelled_sink_fails_the_write_instead_of_retrying_it() {
        let (tx, _rx) = mpsc::channel(QUEUE);
        let encoder = codec_chain(tx, &spec(Compression::None)).unwrap();
        let cancel = CancellationToken::new();
        cancel.cancel();
        let mut sink = EncodingSink::new(encoder, Arc::new(AtomicU64::new(0)), cancel);
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // Large enough to bypass the staging buffer.
            let _ = done_tx.send(sink.write_all(&vec![0u8; STAGED]).is_err());
        });
        // ErrorKind::Interrupted made write_all spin here for good.
        let failed = done_rx.recv_timeout(Duration::from_secs(5));
        assert_eq!(failed, Ok(true));
    }

    #[test]
    fn small_writes_are_staged_and_nothing_is_lost() {
        let (tx, mut rx) = mpsc::channel(1024);
        let encoder = codec_chain(tx, &spec(Compression::None)).unwrap();
        let progress = Arc::new(AtomicU64::new(0));
        let mut sink = EncodingSink::new(encoder, Arc::clone(&progress), CancellationToken::new());
        let mut expected = Vec::new();
        for i in 0..5000u32 {
            // tar-like: a 512-byte header, then a little data.
            let piece = vec![(i % 251) as u8; 512 + (i as usize % 300)];
            sink.write_all(&piece).unwrap();
            expected.extend_from_slice(&piece);
        }
        assert!(
            progress.load(Ordering::Relaxed) < expected.len() as u64,
            "the staged tail is not encoded yet"
        );
        assert_eq!(sink.total(), expected.len() as u64);
        sink.write_all(&vec![9u8; STAGED + 1]).unwrap();
        expected.extend_from_slice(&vec![9u8; STAGED + 1]);
        let (total, stored) = sink.finish().unwrap();
        assert_eq!(total, expected.len() as u64);
        assert_eq!(progress.load(Ordering::Relaxed), expected.len() as u64);
        let mut out = Vec::new();
        while let Ok(chunk) = rx.try_recv() {
            out.extend_from_slice(&chunk);
        }
        assert_eq!(stored.bytes, out.len() as u64);
        assert!(out == expected);
    }
}
