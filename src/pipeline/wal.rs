//! A WAL file's object (see [`crate::repo::wal`]): header, then zstd,
//! then age to the repository's recipients. A WAL file is at most one
//! segment (16 MiB by default), so it is encoded in memory in one go: one
//! zstd call on the whole buffer (no worker threads, whose job buffers copy
//! the input and fault in pages: measured slower per segment on a busy
//! 2-core machine), hashed on a second thread meanwhile.

use std::io::{self, Read, Write};

use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::repo::wal::{HeaderError, WalHeader};

/// Why a stored WAL object did not decode to the file it names.
#[derive(Debug, Error)]
pub enum WalDecodeError {
    #[error(transparent)]
    Header(#[from] HeaderError),
    #[error("cannot decrypt: {0} (is `identity_file` the key for this repository's recipients?)")]
    Decrypt(String),
    #[error("cannot decompress: {0}")]
    Decompress(io::Error),
    #[error(
        "SHA-256 mismatch: the header says {expected} ({expected_bytes} bytes), the content is {actual} ({bytes} bytes)"
    )]
    Mismatch {
        expected: String,
        expected_bytes: u64,
        actual: String,
        bytes: u64,
    },
}

/// The raw file's header (hash and length).
pub fn header_of(raw: &[u8]) -> WalHeader {
    WalHeader {
        sha256: hex::encode(Sha256::digest(raw)),
        raw_bytes: raw.len() as u64,
    }
}

/// The raw file's header and its stored object, hashing and compressing
/// at once.
pub fn encode_hashed(
    raw: &[u8],
    level: i32,
    recipients: &[age::x25519::Recipient],
) -> io::Result<(WalHeader, Vec<u8>)> {
    let (header, compressed) = std::thread::scope(|s| {
        let hashing = s.spawn(|| header_of(raw));
        let compressed = compress(raw, level);
        (hashing.join(), compressed)
    });
    let header = header.map_err(|_| io::Error::other("the hashing thread panicked"))?;
    let object = seal(&header, &compressed?, recipients)?;
    Ok((header, object))
}

/// The stored object of `raw`: header line, zstd at `level` (with its
/// content checksum), age-encrypted when there are recipients.
pub fn encode(
    raw: &[u8],
    header: &WalHeader,
    level: i32,
    recipients: &[age::x25519::Recipient],
) -> io::Result<Vec<u8>> {
    seal(header, &compress(raw, level)?, recipients)
}

/// One zstd frame of `raw`, with its size and content checksum.
fn compress(raw: &[u8], level: i32) -> io::Result<Vec<u8>> {
    let mut compressor = zstd::bulk::Compressor::new(level)?;
    compressor.include_checksum(true)?;
    compressor.compress(raw)
}

/// The header line, then `compressed`, encrypted when there are recipients.
fn seal(
    header: &WalHeader,
    compressed: &[u8],
    recipients: &[age::x25519::Recipient],
) -> io::Result<Vec<u8>> {
    let mut out = header.encode().into_bytes();
    out.reserve(compressed.len() + 1024);
    if recipients.is_empty() {
        out.extend_from_slice(compressed);
        return Ok(out);
    }
    let encryptor =
        age::Encryptor::with_recipients(recipients.iter().map(|r| r as &dyn age::Recipient))
            .map_err(|e| io::Error::other(format!("age: {e}")))?;
    let mut sealed = encryptor.wrap_output(out)?;
    sealed.write_all(compressed)?;
    sealed.finish()
}

/// The raw file in `stored`, checked against its header: decrypted with
/// `identities` when the object is encrypted, decompressed, then its
/// SHA-256 and length compared with the header's.
pub fn decode(
    stored: &[u8],
    encrypted: bool,
    identities: &[age::x25519::Identity],
) -> Result<Vec<u8>, WalDecodeError> {
    let (header, start) = WalHeader::decode(stored)?;
    let payload = &stored[start..];
    let plain: Box<dyn Read + '_> = if encrypted {
        let decryptor =
            age::Decryptor::new(payload).map_err(|e| WalDecodeError::Decrypt(e.to_string()))?;
        let reader = decryptor
            .decrypt(identities.iter().map(|i| i as &dyn age::Identity))
            .map_err(|e| WalDecodeError::Decrypt(e.to_string()))?;
        Box::new(reader)
    } else {
        Box::new(payload)
    };
    let mut raw = Vec::with_capacity(usize::try_from(header.raw_bytes).unwrap_or(0).min(1 << 30));
    zstd::stream::read::Decoder::new(plain)
        .and_then(|mut d| d.read_to_end(&mut raw))
        .map_err(WalDecodeError::Decompress)?;
    let actual = header_of(&raw);
    if actual != header {
        return Err(WalDecodeError::Mismatch {
            expected: header.sha256,
            expected_bytes: header.raw_bytes,
            actual: actual.sha256,
            bytes: actual.raw_bytes,
        });
    }
    Ok(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment() -> Vec<u8> {
        (0..(1u32 << 20))
            .map(|i| (i % 251) as u8 ^ (i >> 13) as u8)
            .collect()
    }

    #[test]
    fn a_wal_file_round_trips_plain_and_encrypted() {
        let raw = segment();
        let (hashed, object) = encode_hashed(&raw, 3, &[]).unwrap();
        assert_eq!(hashed, header_of(&raw));
        assert_eq!(decode(&object, false, &[]).unwrap(), raw);
        let identity = age::x25519::Identity::generate();
        let header = header_of(&raw);
        let plain = encode(&raw, &header, 3, &[]).unwrap();
        assert!(plain.starts_with(header.encode().as_bytes()));
        assert!(plain.len() < raw.len() / 2);
        assert_eq!(decode(&plain, false, &[]).unwrap(), raw);

        let sealed = encode(&raw, &header, 3, &[identity.to_public()]).unwrap();
        assert!(sealed.starts_with(header.encode().as_bytes()));
        assert_eq!(decode(&sealed, true, &[identity]).unwrap(), raw);
        let stranger = age::x25519::Identity::generate();
        assert!(matches!(
            decode(&sealed, true, &[stranger]),
            Err(WalDecodeError::Decrypt(_))
        ));
    }

    #[test]
    fn a_header_that_does_not_match_the_content_is_refused() {
        let raw = segment();
        let mut lying = header_of(&raw);
        lying.sha256 = "0".repeat(64);
        let stored = encode(&raw, &lying, 3, &[]).unwrap();
        let err = decode(&stored, false, &[]).unwrap_err();
        assert!(matches!(err, WalDecodeError::Mismatch { .. }), "{err}");
        assert!(err.to_string().contains(&"0".repeat(64)), "{err}");
    }

    #[test]
    fn a_flipped_payload_byte_is_caught() {
        let raw = segment();
        let mut stored = encode(&raw, &header_of(&raw), 3, &[]).unwrap();
        let middle = stored.len() / 2;
        stored[middle] ^= 0x40;
        assert!(decode(&stored, false, &[]).is_err());
    }
}
