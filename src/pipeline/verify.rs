//! Reading a stored object back without restoring it (`vigil verify`):
//! the download stream (hash → decrypt → decompress) into a reader that
//! checks the content and writes nothing to disk.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use super::download::{Download, DownloadError};
use crate::core::backup_manifest::BackupFiles;

/// How an object's decoded content is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// A `pg_dump` custom archive: its table of contents through
    /// `pg_restore --list` (the tool at this path).
    DumpToc(PathBuf),
    /// A tar stream: every header and entry read to the end (and, for a
    /// physical backup's tars, each file checked against backup_manifest).
    Tar(Option<TarFiles>),
    /// Anything else (`sql`, a backup_manifest): decoded to the end.
    Decoded,
}

/// What a physical backup's tar must hold: the files of backup_manifest
/// under `prefix` (`""` for the data directory, `pg_tblspc/OID/` for a
/// tablespace); `matched` counts the files found, across tars.
#[derive(Debug, Clone)]
pub struct TarFiles {
    pub files: Arc<BackupFiles>,
    pub prefix: String,
    pub matched: Arc<AtomicUsize>,
}

impl PartialEq for TarFiles {
    fn eq(&self, other: &Self) -> bool {
        self.prefix == other.prefix && Arc::ptr_eq(&self.files, &other.files)
    }
}

impl Eq for TarFiles {}

/// Downloads, verifies and decodes a small object (a backup_manifest)
/// into memory.
pub async fn read_decoded(
    download: &Download<'_>,
    cancel: &CancellationToken,
) -> Result<Vec<u8>, DownloadError> {
    let mut bytes = Vec::new();
    if let Some(last) = download.decode_into(&mut bytes, cancel).await? {
        bytes.extend_from_slice(&last);
    }
    Ok(bytes)
}

/// Streams the object through the decoder into the `content` check;
/// returns the decoded bytes. A hash mismatch is reported before any
/// content complaint (the content of a damaged object means nothing).
pub async fn check_content(
    download: &Download<'_>,
    object: &str,
    content: Content,
    cancel: &CancellationToken,
) -> Result<u64, DownloadError> {
    let (mut writer, reader) = tokio::io::duplex(1 << 20);
    let handle = tokio::runtime::Handle::current();
    let check = tokio::task::spawn_blocking(move || {
        let mut reader = Counted {
            inner: tokio_util::io::SyncIoBridge::new_with_handle(reader, handle),
            bytes: 0,
        };
        let checked = match &content {
            Content::DumpToc(tool) => read_toc(tool, &mut reader),
            Content::Tar(files) => read_tar(&mut reader, files.as_ref()),
            Content::Decoded => Ok(()),
        };
        // Whatever the check left unread is still decoded (a corrupt frame
        // past the end of the archive is an error too).
        let drained = std::io::copy(&mut reader, &mut std::io::sink());
        checked.and(drained.map(|_| ())).map(|()| reader.bytes)
    });
    let held = download.decode_into(&mut writer, cancel).await;
    let fed = match held {
        Ok(Some(last)) => writer.write_all(&last).await,
        Ok(None) => Ok(()),
        Err(e) => {
            drop(writer);
            let _ = check.await;
            return Err(e);
        }
    };
    let _ = writer.shutdown().await;
    drop(writer);
    let detail = |detail: String| DownloadError::Decode {
        object: object.to_owned(),
        detail,
    };
    let checked = check.await.map_err(|e| detail(e.to_string()))?;
    let bytes = checked.map_err(|e| detail(e.to_string()))?;
    fed.map_err(|source| DownloadError::Feed { source })?;
    Ok(bytes)
}

/// Reads every tar header and every entry's data; with `files`, checks
/// each regular file's size and CRC-32C against backup_manifest.
fn read_tar(reader: &mut impl Read, files: Option<&TarFiles>) -> std::io::Result<()> {
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries()? {
        let mut entry = entry?;
        let regular = entry.header().entry_type().is_file();
        let (size, crc) = read_entry(&mut entry)?;
        let Some(files) = files.filter(|_| regular) else {
            continue;
        };
        let mut path = files.prefix.clone().into_bytes();
        path.extend_from_slice(&entry.path_bytes());
        files
            .files
            .check(&path, size, crc)
            .map_err(std::io::Error::other)?;
        files.matched.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

/// An entry's data read to its end: its length and CRC-32C.
fn read_entry(entry: &mut impl Read) -> std::io::Result<(u64, u32)> {
    let mut buf = vec![0u8; 1 << 16];
    let (mut size, mut crc) = (0u64, 0u32);
    loop {
        let n = entry.read(&mut buf)?;
        if n == 0 {
            return Ok((size, crc));
        }
        crc = crc32c::crc32c_append(crc, &buf[..n]);
        size += n as u64;
    }
}

/// `pg_restore --list` on the stream. It stops reading after the table of
/// contents (a pipe cannot seek to the data), so a closed input is not an
/// error: the caller drains the rest through the decoder.
fn read_toc(tool: &Path, reader: &mut impl Read) -> std::io::Result<()> {
    let mut child = std::process::Command::new(tool)
        .arg("--list")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            std::io::Error::new(e.kind(), format!("cannot start {}: {e}", tool.display()))
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = reader.read(&mut buf)?;
            if n == 0 || stdin.write_all(&buf[..n]).is_err() {
                break;
            }
        }
    }
    let output = child.wait_with_output()?;
    if output.status.success() {
        return Ok(());
    }
    Err(std::io::Error::other(format!(
        "pg_restore --list exited with {}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    )))
}

/// A reader that counts what passes through it.
struct Counted<R> {
    inner: R,
    bytes: u64,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (name, data) in files {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder.append_data(&mut header, name, *data).unwrap();
        }
        builder.into_inner().unwrap()
    }

    #[test]
    fn a_whole_tar_reads() {
        let tar = tar_of(&[("a", b"hello"), ("b", &[7u8; 3000])]);
        read_tar(&mut tar.as_slice(), None).unwrap();
    }

    #[test]
    fn a_truncated_tar_is_an_error() {
        let tar = tar_of(&[("a", b"hello"), ("b", &[7u8; 3000])]);
        let cut = &tar[..1024 + 512 + 100];
        assert!(read_tar(&mut &cut[..], None).is_err());
    }

    #[test]
    fn a_tar_with_a_corrupt_header_is_an_error() {
        let mut tar = tar_of(&[("a", b"hello")]);
        tar[100] ^= 0xff; // inside the mode field: the checksum no longer matches
        assert!(read_tar(&mut tar.as_slice(), None).is_err());
    }
}
