//! Reading a stored object back without restoring it (`vigil verify`):
//! the download stream (hash → decrypt → decompress) into a reader that
//! checks the content and writes nothing to disk.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use super::download::{Download, DownloadError};

/// How an object's decoded content is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// A `pg_dump` custom archive: its table of contents through
    /// `pg_restore --list` (the tool at this path).
    DumpToc(PathBuf),
    /// A tar stream: every header and entry read to the end.
    Tar,
    /// Anything else (`sql`, a backup_manifest): decoded to the end.
    Decoded,
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
            Content::Tar => read_tar(&mut reader),
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

/// Reads every tar header and every entry's data.
fn read_tar(reader: &mut impl Read) -> std::io::Result<()> {
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries()? {
        std::io::copy(&mut entry?, &mut std::io::sink())?;
    }
    Ok(())
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
        read_tar(&mut tar.as_slice()).unwrap();
    }

    #[test]
    fn a_truncated_tar_is_an_error() {
        let tar = tar_of(&[("a", b"hello"), ("b", &[7u8; 3000])]);
        let cut = &tar[..1024 + 512 + 100];
        assert!(read_tar(&mut &cut[..]).is_err());
    }

    #[test]
    fn a_tar_with_a_corrupt_header_is_an_error() {
        let mut tar = tar_of(&[("a", b"hello")]);
        tar[100] ^= 0xff; // inside the mode field: the checksum no longer matches
        assert!(read_tar(&mut tar.as_slice()).is_err());
    }
}
