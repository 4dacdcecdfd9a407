//! The restore stream into a tool's stdin (pg_restore) or its staging
//! file: the decoding thread writes the file itself, in blocks of
//! [`PIPE_BLOCK`] with blocking writes as `zstd -dc` does, so no decoded
//! chunk crosses into the async runtime (an async pipe writer was woken
//! through epoll each time the tool read 4 KiB; each async file write was
//! a hand-off to a blocking thread). The last block is held back until the
//! hash is verified.

use std::io::{Read, Write};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{ChannelReader, Download, DownloadError, decoder, download_hashed};
use crate::config::Compression;

impl Download<'_> {
    /// Like [`Download::decode_into`], into a tool's stdin (a blocking
    /// pipe) or a staging file. Returns the file and the held-back last
    /// block once the hash is verified.
    pub async fn decode_into_file(
        &self,
        pipe: std::fs::File,
        cancel: &CancellationToken,
    ) -> Result<(std::fs::File, Vec<u8>), DownloadError> {
        let stream = self.repo.read_stream(self.path).await?;
        let (stored_tx, stored_rx) = mpsc::channel::<Bytes>(4);
        let decode = spawn_pipe_decoder(stored_rx, pipe, self.compression, &self.identities);
        let download = download_hashed(stream, stored_tx);
        let (actual, bytes) = tokio::select! {
            _ = cancel.cancelled() => return Err(DownloadError::Cancelled),
            downloaded = download => downloaded?,
        };
        self.verify(actual, bytes)?;
        match decode.await {
            Ok(Ok(done)) => Ok(done),
            Ok(Err(PipeDecodeError::Write(source))) => Err(DownloadError::Feed { source }),
            Ok(Err(PipeDecodeError::Decode(e))) => Err(DownloadError::Decode {
                object: self.path.to_owned(),
                detail: e.to_string(),
            }),
            Err(panicked) => Err(DownloadError::Decode {
                object: self.path.to_owned(),
                detail: panicked.to_string(),
            }),
        }
    }
}

/// The blocks a pipe decoder writes: a whole widened pipe (see
/// `upload::widen_pipe`). Two are allocated per restore and reused.
const PIPE_BLOCK: usize = 1 << 20;

/// Why a pipe decoder stopped.
#[derive(Debug)]
enum PipeDecodeError {
    Decode(std::io::Error),
    /// The tool stopped reading (or the pipe failed).
    Write(std::io::Error),
}

/// Decrypts, decompresses and writes every decoded block but the last to
/// `pipe`, on a blocking thread; returns the pipe and the last block.
fn spawn_pipe_decoder(
    stored_rx: mpsc::Receiver<Bytes>,
    mut pipe: std::fs::File,
    compression: Compression,
    identities: &[age::x25519::Identity],
) -> tokio::task::JoinHandle<Result<(std::fs::File, Vec<u8>), PipeDecodeError>> {
    let identities = identities.to_vec();
    tokio::task::spawn_blocking(move || {
        let mut reader = decoder(ChannelReader::new(stored_rx), compression, &identities)
            .map_err(PipeDecodeError::Decode)?;
        let mut held = vec![0u8; PIPE_BLOCK];
        let mut held_len = read_block(&mut reader, &mut held).map_err(PipeDecodeError::Decode)?;
        let mut next = vec![0u8; PIPE_BLOCK];
        loop {
            let n = read_block(&mut reader, &mut next).map_err(PipeDecodeError::Decode)?;
            if n == 0 {
                held.truncate(held_len);
                return Ok((pipe, held));
            }
            pipe.write_all(&held[..held_len])
                .map_err(PipeDecodeError::Write)?;
            std::mem::swap(&mut held, &mut next);
            held_len = n;
        }
    })
}

/// Writes the last block and closes the file (a blocking write).
pub(super) async fn finish(mut pipe: std::fs::File, last: Vec<u8>) -> std::io::Result<()> {
    match tokio::task::spawn_blocking(move || pipe.write_all(&last)).await {
        Ok(written) => written,
        Err(panicked) => Err(std::io::Error::other(panicked.to_string())),
    }
}

/// Reads until `buf` is full or the stream ends; returns the bytes read.
fn read_block(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut len = 0;
    while len < buf.len() {
        match reader.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::codec::{Compressor, HashingSink, Sealed, ZSTD_JOB_SIZE};

    /// `data` as stored: zstd, age-encrypted to `recipient`, in chunks.
    async fn stored(data: &[u8], recipient: &age::x25519::Recipient) -> Vec<Bytes> {
        let (data, recipient) = (data.to_vec(), recipient.clone());
        // The codec chain blocks on its channel: not on a runtime thread.
        tokio::task::spawn_blocking(move || {
            let (tx, mut rx) = mpsc::channel(4096);
            let sealed = Sealed::new(HashingSink::new(tx), &[recipient]).unwrap();
            let mut chain =
                Compressor::new(sealed, Compression::Zstd, 3, 2, ZSTD_JOB_SIZE).unwrap();
            chain.write_all(&data).unwrap();
            chain.finish().unwrap();
            let mut chunks = Vec::new();
            while let Ok(chunk) = rx.try_recv() {
                chunks.push(chunk);
            }
            chunks
        })
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn the_pipe_gets_whole_blocks_and_never_the_last_one() {
        let data: Vec<u8> = (0..5 * PIPE_BLOCK / 2)
            .map(|i| (i % 253) as u8 ^ (i >> 16) as u8)
            .collect();
        let identity = age::x25519::Identity::generate();
        let (stored_tx, stored_rx) = mpsc::channel(4);
        let (read_end, write_end) = nix::unistd::pipe().unwrap();
        // The tool's side: everything that arrives before the pipe closes.
        let tool = std::thread::spawn(move || {
            let mut got = Vec::new();
            std::fs::File::from(read_end).read_to_end(&mut got).unwrap();
            got
        });
        let decode = spawn_pipe_decoder(
            stored_rx,
            std::fs::File::from(write_end),
            Compression::Zstd,
            std::slice::from_ref(&identity),
        );
        for chunk in stored(&data, &identity.to_public()).await {
            stored_tx.send(chunk).await.unwrap();
        }
        drop(stored_tx);
        let (pipe, last) = decode.await.unwrap().unwrap();
        drop(pipe);
        let written = tool.join().unwrap();
        assert_eq!(written.len(), 2 * PIPE_BLOCK, "two whole blocks written");
        assert_eq!(last.len(), PIPE_BLOCK / 2, "the last block held back");
        assert!([written, last].concat() == data);
    }

    #[tokio::test]
    async fn a_tool_that_stops_reading_is_a_write_error() {
        let identity = age::x25519::Identity::generate();
        let data = vec![3u8; 4 * PIPE_BLOCK];
        let (stored_tx, stored_rx) = mpsc::channel(4);
        let (read_end, write_end) = nix::unistd::pipe().unwrap();
        drop(read_end);
        let decode = spawn_pipe_decoder(
            stored_rx,
            std::fs::File::from(write_end),
            Compression::Zstd,
            std::slice::from_ref(&identity),
        );
        for chunk in stored(&data, &identity.to_public()).await {
            if stored_tx.send(chunk).await.is_err() {
                break;
            }
        }
        drop(stored_tx);
        let result = decode.await.unwrap();
        assert!(
            matches!(&result, Err(PipeDecodeError::Write(e)) if e.kind() == std::io::ErrorKind::BrokenPipe),
            "{result:?}"
        );
    }
}
