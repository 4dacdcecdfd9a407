//! The synchronous write chain of a backup object:
//! raw → compress → (age) encrypt → hash + chunk → channel.
//! Runs on a blocking thread; CPU-heavy work never touches the async workers.

use std::io::{self, Write};

use bytes::{Bytes, BytesMut};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::config::Compression;

/// Size of the chunks handed to the uploader: below the mmap threshold set
/// in `main`, so they come from (and go back to) the heap. At 1 MiB each
/// chunk was a fresh mmap: 340,000 page faults per GiB backed up.
pub const CHUNK: usize = 512 << 10;
/// Bytes per zstd worker job where compression sets the pace (database
/// dumps to fs or SFTP).
pub const ZSTD_JOB_SIZE: u32 = 4 << 20;
/// Where the upload sets the pace (multipart object stores), smaller jobs
/// cost nothing and keep the part buffers plus zstd's within 64 MiB; file
/// trees use them too (see `jobs::backup::zstd_job_size`).
pub const ZSTD_SMALL_JOB_SIZE: u32 = 2 << 20;

/// The end of the chain: hashes and counts the stored bytes, and ships
/// them in [`CHUNK`]-sized pieces over a bounded channel.
pub struct HashingSink {
    tx: mpsc::Sender<Bytes>,
    hasher: Sha256,
    stored: u64,
    buf: BytesMut,
}

/// What the sink saw once the chain is finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub sha256: String,
    pub bytes: u64,
}

impl HashingSink {
    pub fn new(tx: mpsc::Sender<Bytes>) -> Self {
        HashingSink {
            tx,
            hasher: Sha256::new(),
            stored: 0,
            buf: BytesMut::with_capacity(CHUNK),
        }
    }

    fn ship(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, BytesMut::with_capacity(CHUNK)).freeze();
        self.tx
            .blocking_send(chunk)
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the uploader stopped"))
    }

    pub fn finish(mut self) -> io::Result<Stored> {
        self.ship()?;
        Ok(Stored {
            sha256: hex::encode(self.hasher.finalize()),
            bytes: self.stored,
        })
    }
}

impl Write for HashingSink {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        // Never past CHUNK: a larger buffer would be reallocated onto mmap.
        let data = &data[..data.len().min(CHUNK - self.buf.len())];
        self.hasher.update(data);
        self.stored += data.len() as u64;
        self.buf.extend_from_slice(data);
        if self.buf.len() == CHUNK {
            self.ship()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Optional age encryption over the sink.
pub enum Sealed {
    Plain(HashingSink),
    Age(age::stream::StreamWriter<HashingSink>),
}

impl Sealed {
    pub fn new(sink: HashingSink, recipients: &[age::x25519::Recipient]) -> io::Result<Sealed> {
        if recipients.is_empty() {
            return Ok(Sealed::Plain(sink));
        }
        let encryptor =
            age::Encryptor::with_recipients(recipients.iter().map(|r| r as &dyn age::Recipient))
                .map_err(|e| io::Error::other(format!("age: {e}")))?;
        Ok(Sealed::Age(encryptor.wrap_output(sink)?))
    }

    /// age's stream must be finished or the output is truncated.
    pub fn finish(self) -> io::Result<Stored> {
        match self {
            Sealed::Plain(sink) => sink.finish(),
            Sealed::Age(writer) => writer.finish()?.finish(),
        }
    }
}

impl Write for Sealed {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        match self {
            Sealed::Plain(w) => w.write(data),
            Sealed::Age(w) => w.write(data),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sealed::Plain(w) => w.flush(),
            Sealed::Age(w) => w.flush(),
        }
    }
}

/// The compressor in front of the (optional) encryption.
pub enum Compressor {
    Zstd(zstd::stream::write::Encoder<'static, Sealed>),
    Gzip(flate2::write::GzEncoder<Sealed>),
    Lz4(lz4_flex::frame::FrameEncoder<Sealed>),
    None(Sealed),
}

impl Compressor {
    pub fn new(
        inner: Sealed,
        compression: Compression,
        level: i32,
        workers: u32,
        job_size: u32,
    ) -> io::Result<Compressor> {
        Ok(match compression {
            Compression::Zstd => {
                let mut encoder = zstd::stream::write::Encoder::new(inner, level)?;
                // A content checksum lets `zstd -d` (and restore) detect corruption on its own.
                encoder.include_checksum(true)?;
                if workers > 1 {
                    encoder.multithread(workers)?;
                    // zstd's default job is 4× the window (8 MiB at level 3) per
                    // worker, in and out; smaller jobs keep RSS low at the same ratio.
                    encoder.set_parameter(zstd::zstd_safe::CParameter::JobSize(job_size))?;
                }
                Compressor::Zstd(encoder)
            }
            Compression::Gzip => Compressor::Gzip(flate2::write::GzEncoder::new(
                inner,
                flate2::Compression::new(level as u32),
            )),
            Compression::Lz4 => Compressor::Lz4(lz4_flex::frame::FrameEncoder::new(inner)),
            Compression::None => Compressor::None(inner),
        })
    }

    pub fn finish(self) -> io::Result<Stored> {
        let sealed = match self {
            Compressor::Zstd(e) => e.finish()?,
            Compressor::Gzip(e) => e.finish()?,
            Compressor::Lz4(e) => e.finish().map_err(io::Error::other)?,
            Compressor::None(s) => s,
        };
        sealed.finish()
    }
}

impl Write for Compressor {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        match self {
            Compressor::Zstd(w) => w.write(data),
            Compressor::Gzip(w) => w.write(data),
            Compressor::Lz4(w) => w.write(data),
            Compressor::None(w) => w.write(data),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Compressor::Zstd(w) => w.flush(),
            Compressor::Gzip(w) => w.flush(),
            Compressor::Lz4(w) => w.flush(),
            Compressor::None(w) => w.flush(),
        }
    }
}

/// Reads stored bytes back: (age) decrypt → decompress.
pub fn decoder<'a, R: io::Read + 'a>(
    stored: R,
    compression: Compression,
    identities: &[age::x25519::Identity],
) -> io::Result<Box<dyn io::Read + 'a>> {
    let plain: Box<dyn io::Read + 'a> = if identities.is_empty() {
        Box::new(stored)
    } else {
        let decryptor =
            age::Decryptor::new(stored).map_err(|e| io::Error::other(format!("age: {e}")))?;
        let reader = decryptor
            .decrypt(identities.iter().map(|i| i as &dyn age::Identity))
            .map_err(|e| {
                io::Error::other(format!(
                    "age: {e} (is `identity_file` the key for this repository's recipients?)"
                ))
            })?;
        Box::new(reader)
    };
    Ok(match compression {
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(plain)?),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(plain)),
        Compression::Lz4 => Box::new(lz4_flex::frame::FrameDecoder::new(plain)),
        Compression::None => plain,
    })
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use age::secrecy::ExposeSecret;

    use super::*;

    #[test]
    fn the_sink_ships_whole_chunks_of_exactly_chunk_bytes() {
        let data: Vec<u8> = (0..3 * CHUNK + 1234).map(|i| (i * 7) as u8).collect();
        let (tx, mut rx) = mpsc::channel(16);
        let mut sink = HashingSink::new(tx);
        // Writes larger than a chunk are taken in part; write_all goes on.
        for piece in data.chunks(CHUNK * 3 / 4 + 1) {
            sink.write_all(piece).unwrap();
        }
        let stored = sink.finish().unwrap();
        let mut chunks = Vec::new();
        while let Ok(chunk) = rx.try_recv() {
            chunks.push(chunk);
        }
        let sizes: Vec<usize> = chunks.iter().map(|c| c.len()).collect();
        assert_eq!(sizes, [CHUNK, CHUNK, CHUNK, 1234]);
        assert_eq!(chunks.concat(), data);
        assert_eq!(stored.bytes, data.len() as u64);
        assert_eq!(stored.sha256, hex::encode(Sha256::digest(&data)));
    }

    fn encode(
        data: &[u8],
        compression: Compression,
        recipients: &[age::x25519::Recipient],
    ) -> (Vec<u8>, Stored) {
        let (tx, mut rx) = mpsc::channel(1024);
        let sealed = Sealed::new(HashingSink::new(tx), recipients).unwrap();
        let mut c = Compressor::new(
            sealed,
            compression,
            compression.default_level(),
            2,
            ZSTD_JOB_SIZE,
        )
        .unwrap();
        for piece in data.chunks(7919) {
            c.write_all(piece).unwrap();
        }
        let stored = c.finish().unwrap();
        let mut out = Vec::new();
        while let Ok(chunk) = rx.try_recv() {
            out.extend_from_slice(&chunk);
        }
        (out, stored)
    }

    #[test]
    fn every_codec_round_trips_with_and_without_age() {
        let data: Vec<u8> = (0..3_000_000u32)
            .map(|i| (i % 251) as u8 ^ (i / 4096) as u8)
            .collect();
        let identity = age::x25519::Identity::generate();
        let recipient = identity.to_public();
        let _ = identity.to_string().expose_secret().len();
        for compression in [
            Compression::Zstd,
            Compression::Gzip,
            Compression::Lz4,
            Compression::None,
        ] {
            for sealed in [false, true] {
                let recipients = if sealed {
                    vec![recipient.clone()]
                } else {
                    vec![]
                };
                let (stored, facts) = encode(&data, compression, &recipients);
                assert_eq!(facts.bytes, stored.len() as u64);
                assert_eq!(facts.sha256, hex::encode(Sha256::digest(&stored)));
                let identities = if sealed {
                    vec![identity.clone()]
                } else {
                    vec![]
                };
                let mut back = Vec::new();
                decoder(&stored[..], compression, &identities)
                    .unwrap()
                    .read_to_end(&mut back)
                    .unwrap();
                assert!(back == data, "{compression:?} sealed={sealed}");
            }
        }
    }

    #[test]
    fn a_flipped_byte_is_caught_by_zstd_or_age() {
        let data = vec![7u8; 500_000];
        for sealed in [false, true] {
            let identity = age::x25519::Identity::generate();
            let recipients = if sealed {
                vec![identity.to_public()]
            } else {
                vec![]
            };
            let (mut stored, _) = encode(&data, Compression::Zstd, &recipients);
            let middle = stored.len() / 2;
            stored[middle] ^= 0x01;
            let identities = if sealed { vec![identity] } else { vec![] };
            let mut back = Vec::new();
            let result = decoder(&stored[..], Compression::Zstd, &identities)
                .and_then(|mut r| r.read_to_end(&mut back));
            assert!(result.is_err() || back != data, "sealed={sealed}");
        }
    }
}
