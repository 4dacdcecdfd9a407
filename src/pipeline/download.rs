//! The restore stream, beside the upload stream: download → hash → decrypt
//! → decompress → a tool's stdin (or a staging file for it).
//!
//! The stored bytes are hashed as they stream in, and the consumer never
//! gets the last decoded chunk before the hash is verified: `pg_restore`
//! in a single transaction (or a tar unpacker) then writes nothing from a
//! damaged object.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};

use bytes::Bytes;
use futures::StreamExt;
use sha2::{Digest, Sha256};
use thiserror::Error;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::codec::decoder;

mod pipe;
use super::stderr::Tail;
use crate::config::Compression;
use crate::core::manifest::{Manifest, ObjectEntry};
use crate::repo::{RepoError, Repository};

#[derive(Debug, Error)]
pub enum DownloadError {
    #[error(transparent)]
    Repo(#[from] RepoError),
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
    /// The consumer (a tool's stdin, a staging file) refused a write.
    #[error("writing the dump: {source}")]
    Feed {
        #[source]
        source: std::io::Error,
    },
    #[error("writing to {tool}: {source}")]
    ToolInput {
        tool: String,
        #[source]
        source: std::io::Error,
    },
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
    #[error("cannot create {}: {source}", path.display())]
    Stage {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Writing the staged dump: the text is the I/O error's, as before.
    #[error("{source}")]
    StageWrite {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start {}: {source}", tool.display())]
    ToolStart {
        tool: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Waiting for the tool failed: the text is the I/O error's, as before.
    #[error("{source}")]
    ToolWait {
        tool: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{tool} exited with {status}: {stderr}")]
    ToolFailed {
        tool: String,
        status: String,
        stderr: String,
    },
    #[error("cancelled (shutdown)")]
    Cancelled,
}

/// One stored object to download, verify and decode.
pub struct Download<'a> {
    repo: &'a Repository,
    path: &'a str,
    object: &'a ObjectEntry,
    compression: Compression,
    identities: Vec<age::x25519::Identity>,
}

impl<'a> Download<'a> {
    /// The object of `manifest` at `path` in `repo`, decrypted with
    /// `identities` (empty when the backup is not encrypted).
    pub fn new(
        repo: &'a Repository,
        manifest: &Manifest,
        object: &'a ObjectEntry,
        path: &'a str,
        identities: Vec<age::x25519::Identity>,
    ) -> Result<Download<'a>, DownloadError> {
        let compression = Compression::parse(&manifest.compression.algorithm).ok_or_else(|| {
            DownloadError::Decode {
                object: object.name.clone(),
                detail: format!(
                    "unknown compression `{}` (written by a newer vigil?)",
                    manifest.compression.algorithm
                ),
            }
        })?;
        Ok(Download {
            repo,
            path,
            object,
            compression,
            identities,
        })
    }

    /// Download + hash → decode (blocking thread) → `sink`, holding back
    /// the last decoded chunk. Returns that chunk once the hash is verified.
    pub async fn decode_into<W: AsyncWrite + Unpin>(
        &self,
        sink: &mut W,
        cancel: &CancellationToken,
    ) -> Result<Option<Bytes>, DownloadError> {
        let stream = self.repo.read_stream(self.path).await?;
        let (stored_tx, stored_rx) = mpsc::channel::<Bytes>(4);
        let (plain_tx, plain_rx) = mpsc::channel::<Bytes>(4);
        let decode = spawn_decoder(stored_rx, plain_tx, self.compression, &self.identities);
        let download = download_hashed(stream, stored_tx);
        let joined = async { tokio::join!(download, feed(plain_rx, sink)) };
        let (downloaded, (held, failed)) = tokio::select! {
            _ = cancel.cancelled() => return Err(DownloadError::Cancelled),
            joined = joined => joined,
        };
        let (actual, bytes) = downloaded?;
        self.verify(actual, bytes)?;
        let decoded = match decode.await {
            Ok(result) => result.map_err(|e| e.to_string()),
            Err(panicked) => Err(panicked.to_string()),
        };
        if let Err(detail) = decoded {
            return Err(DownloadError::Decode {
                object: self.path.to_owned(),
                detail,
            });
        }
        if let Some(source) = failed {
            return Err(DownloadError::Feed { source });
        }
        Ok(held)
    }

    /// Reads the stored bytes and checks their SHA-256 only (no key needed,
    /// nothing decoded); returns the bytes read.
    pub async fn check_stored(&self, cancel: &CancellationToken) -> Result<u64, DownloadError> {
        let mut stream = self.repo.read_stream(self.path).await?;
        let mut hasher = Sha256::new();
        let mut bytes = 0u64;
        loop {
            let chunk = tokio::select! {
                _ = cancel.cancelled() => return Err(DownloadError::Cancelled),
                chunk = stream.next() => chunk,
            };
            let Some(chunk) = chunk else { break };
            let chunk = chunk?;
            hasher.update(&chunk);
            bytes += chunk.len() as u64;
        }
        self.verify(hex::encode(hasher.finalize()), bytes)?;
        Ok(bytes)
    }

    fn verify(&self, actual: String, bytes: u64) -> Result<(), DownloadError> {
        if actual == self.object.sha256 && bytes == self.object.stored_bytes {
            return Ok(());
        }
        Err(DownloadError::HashMismatch {
            object: self.path.to_owned(),
            expected: self.object.sha256.clone(),
            actual,
            bytes,
            expected_bytes: self.object.stored_bytes,
        })
    }
}

/// Downloads and hashes the stored bytes, passing each chunk on to `tx`;
/// returns the SHA-256 and the byte count.
async fn download_hashed(
    mut stream: impl futures::Stream<Item = Result<Bytes, RepoError>> + Unpin,
    stored_tx: mpsc::Sender<Bytes>,
) -> Result<(String, u64), DownloadError> {
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
    Ok((hex::encode(hasher.finalize()), bytes))
}

/// A decoded chunk: under main.rs's 1 MiB mmap threshold, so chunks come
/// from (and return to) the heap instead of an mmap and a page fault per
/// 4 KiB each (a 1 GiB dump was 0.6 s of system time at 1 MiB).
const DECODED_CHUNK: usize = 256 << 10;

/// Decrypts and decompresses on a blocking thread, chunk by chunk.
fn spawn_decoder(
    stored_rx: mpsc::Receiver<Bytes>,
    plain_tx: mpsc::Sender<Bytes>,
    compression: Compression,
    identities: &[age::x25519::Identity],
) -> tokio::task::JoinHandle<std::io::Result<()>> {
    let identities = identities.to_vec();
    tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        let mut reader = decoder(ChannelReader::new(stored_rx), compression, &identities)?;
        loop {
            let mut buf = vec![0u8; DECODED_CHUNK];
            let n = reader.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            buf.truncate(n);
            if plain_tx.blocking_send(Bytes::from(buf)).is_err() {
                return Ok(());
            }
        }
    })
}

/// Writes every decoded chunk but the last to `sink`; returns the last one
/// and the first write error (the channel is drained either way).
async fn feed<W: AsyncWrite + Unpin>(
    mut plain_rx: mpsc::Receiver<Bytes>,
    sink: &mut W,
) -> (Option<Bytes>, Option<std::io::Error>) {
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
}

/// A tool that reads the decoded object (`pg_restore`).
pub struct Tool<'a> {
    pub path: &'a Path,
    pub args: &'a [String],
    pub env: &'a [(String, String)],
}

impl Tool<'_> {
    fn name(&self) -> String {
        self.path.file_name().map_or_else(
            || self.path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        )
    }
}

/// Streams the object into the tool's stdin. The tool never sees the end of
/// its input unless the hash matched, so it can roll back on any failure.
pub async fn stream_to_tool(
    download: &Download<'_>,
    tool: &Tool<'_>,
    cancel: &CancellationToken,
) -> Result<(), DownloadError> {
    let (mut child, tail) = spawn_tool(tool, tool.args, true)?;
    let stdin = child.stdin.take().map(|stdin| {
        super::upload::widen_pipe(&stdin);
        stdin.into_owned_fd()
    });
    let Some(Ok(stdin)) = stdin else {
        let _ = child.start_kill();
        return Err(tool_error(tool, None, &tail));
    };
    let (stdin, last) = match download
        .decode_into_file(std::fs::File::from(stdin), cancel)
        .await
    {
        Ok(done) => done,
        Err(e) => {
            // The tool never saw the end of the archive: its transaction rolls back.
            let _ = child.start_kill();
            let _ = child.wait().await;
            if matches!(e, DownloadError::Feed { .. }) {
                // It stopped reading: its own complaint says why.
                return Err(tool_error(tool, None, &tail));
            }
            return Err(e);
        }
    };
    // The hash matched: the tool may see the end of its input now.
    pipe::finish(stdin, last)
        .await
        .map_err(|source| DownloadError::ToolInput {
            tool: tool.name(),
            source,
        })?;
    let status = child
        .wait()
        .await
        .map_err(|source| DownloadError::ToolWait {
            tool: tool.path.to_owned(),
            source,
        })?;
    checked(tool, status, &tail)
}

/// Lands the verified object in a file under `staging_dir` (named after
/// `label`), then runs the tool on it (`pg_restore -j` needs a file). The
/// file is removed afterwards, whatever happened.
pub async fn staged_to_tool(
    download: &Download<'_>,
    tool: &Tool<'_>,
    staging_dir: &Path,
    label: &str,
    cancel: &CancellationToken,
) -> Result<(), DownloadError> {
    let stage = |path: &Path| {
        let path = path.to_owned();
        move |source| DownloadError::Stage { path, source }
    };
    tokio::fs::create_dir_all(staging_dir)
        .await
        .map_err(stage(staging_dir))?;
    let file_path = staging_dir.join(format!("{label}-{}.dump", uuid::Uuid::new_v4().simple()));
    let needed = download.object.raw_bytes;
    let full = |path: &Path| DownloadError::StateDirFull {
        path: path.to_owned(),
        needed,
        free: crate::fsinfo::available(staging_dir),
    };
    // Fail before downloading anything when the dump cannot fit.
    if crate::fsinfo::available(staging_dir).is_some_and(|free| free < needed) {
        return Err(full(staging_dir));
    }
    let _cleanup = RemoveOnDrop(file_path.clone());
    let write_err = |source: std::io::Error| {
        if crate::repo::is_out_of_space(&source) {
            full(&file_path)
        } else {
            DownloadError::StageWrite {
                path: file_path.clone(),
                source,
            }
        }
    };
    let file = tokio::fs::File::create(&file_path)
        .await
        .map_err(|source| {
            if crate::repo::is_out_of_space(&source) {
                full(&file_path)
            } else {
                DownloadError::Stage {
                    path: file_path.clone(),
                    source,
                }
            }
        })?;
    let (file, last) = match download
        .decode_into_file(file.into_std().await, cancel)
        .await
    {
        Err(DownloadError::Feed { source }) => return Err(write_err(source)),
        other => other?,
    };
    pipe::finish(file, last).await.map_err(write_err)?;
    let mut args = tool.args.to_vec();
    args.push(file_path.display().to_string());
    let (mut child, tail) = spawn_tool(tool, &args, false)?;
    let status = tokio::select! {
        _ = cancel.cancelled() => {
            let _ = child.start_kill();
            return Err(DownloadError::Cancelled);
        }
        status = child.wait() => status.map_err(|source| DownloadError::ToolWait {
            tool: tool.path.to_owned(),
            source,
        })?,
    };
    checked(tool, status, &tail)
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn spawn_tool(
    tool: &Tool<'_>,
    args: &[String],
    stdin: bool,
) -> Result<(Child, Tail), DownloadError> {
    let mut child = Command::new(tool.path)
        .args(args)
        .envs(tool.env.iter().map(|(k, v)| (k, v)))
        .stdin(if stdin { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| DownloadError::ToolStart {
            tool: tool.path.to_owned(),
            source,
        })?;
    let tail = Tail::of(&mut child);
    Ok((child, tail))
}

fn checked(tool: &Tool<'_>, status: ExitStatus, tail: &Tail) -> Result<(), DownloadError> {
    if status.success() {
        return Ok(());
    }
    Err(tool_error(tool, Some(status), tail))
}

/// The tool failed (or, with no status, stopped reading its input).
fn tool_error(tool: &Tool<'_>, status: Option<ExitStatus>, tail: &Tail) -> DownloadError {
    DownloadError::ToolFailed {
        tool: tool.name(),
        status: status.map_or_else(|| "a closed input".to_owned(), |s| s.to_string()),
        stderr: tail.text(),
    }
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
