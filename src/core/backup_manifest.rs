//! PostgreSQL's `backup_manifest` (the server's, stored beside a physical
//! base backup): the size and checksum of every file in the tars, so a
//! verification can check each file without laying the backup out.

use std::collections::HashMap;

use serde::Deserialize;

#[derive(Deserialize)]
struct Raw {
    #[serde(rename = "Files")]
    files: Vec<RawFile>,
}

#[derive(Deserialize)]
struct RawFile {
    #[serde(rename = "Path")]
    path: Option<String>,
    /// Hex of a path that is not valid UTF-8.
    #[serde(rename = "Encoded-Path")]
    encoded_path: Option<String>,
    #[serde(rename = "Size")]
    size: u64,
    #[serde(rename = "Checksum-Algorithm")]
    algorithm: Option<String>,
    #[serde(rename = "Checksum")]
    checksum: Option<String>,
}

/// What the manifest says of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Expected {
    size: u64,
    /// The CRC-32C as PostgreSQL prints it (hex of its little-endian
    /// bytes); `None` when the backup used another algorithm or none.
    crc32c: Option<String>,
}

/// The files of a `backup_manifest`, by path (relative to the data
/// directory; tablespaces under `pg_tblspc/OID/`).
#[derive(Debug, Clone, Default)]
pub struct BackupFiles {
    files: HashMap<Vec<u8>, Expected>,
}

/// One file of a tar that disagrees with the manifest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FileMismatch {
    #[error("{path}: not in backup_manifest")]
    Unlisted { path: String },
    #[error("{path}: {found} bytes, backup_manifest says {expected}")]
    Size {
        path: String,
        expected: u64,
        found: u64,
    },
    #[error("{path}: CRC-32C {found}, backup_manifest says {expected}")]
    Checksum {
        path: String,
        expected: String,
        found: String,
    },
}

/// Why a backup_manifest's own checksum does not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestChecksumError {
    #[error("backup_manifest has fewer than two lines: it is cut short")]
    TooShort,
    #[error("backup_manifest has no Manifest-Checksum: it is cut short or not PostgreSQL's")]
    Missing,
    #[error(
        "backup_manifest's Manifest-Checksum says {expected}, its text hashes to {found}: the manifest was altered"
    )]
    Mismatch { expected: String, found: String },
}

/// Checks `Manifest-Checksum`: the SHA-256 of the text up to and
/// including the newline before the checksum line (what pg_verifybackup
/// checks: everything before the last line).
pub fn check_manifest_checksum(bytes: &[u8]) -> Result<(), ManifestChecksumError> {
    use sha2::{Digest, Sha256};
    let mut newlines = bytes
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b'\n')
        .map(|(i, _)| i);
    let (mut last, mut before) = (None, None);
    for i in &mut newlines {
        before = last;
        last = Some(i);
    }
    let (Some(end), Some(_)) = (before, last) else {
        return Err(ManifestChecksumError::TooShort);
    };
    #[derive(Deserialize)]
    struct Sum {
        #[serde(rename = "Manifest-Checksum")]
        checksum: Option<String>,
    }
    let expected = serde_json::from_slice::<Sum>(bytes)
        .ok()
        .and_then(|s| s.checksum)
        .ok_or(ManifestChecksumError::Missing)?
        .to_ascii_lowercase();
    let found = hex::encode(Sha256::digest(&bytes[..=end]));
    if found == expected {
        Ok(())
    } else {
        Err(ManifestChecksumError::Mismatch { expected, found })
    }
}

impl BackupFiles {
    pub fn parse(bytes: &[u8]) -> Result<BackupFiles, serde_json::Error> {
        let raw: Raw = serde_json::from_slice(bytes)?;
        let files = raw
            .files
            .into_iter()
            .filter_map(|f| {
                let path = match (f.path, f.encoded_path) {
                    (Some(p), _) => p.into_bytes(),
                    (None, Some(hex_path)) => hex::decode(hex_path).ok()?,
                    (None, None) => return None,
                };
                let crc32c = match f.algorithm.as_deref() {
                    Some("CRC32C") => f.checksum.map(|c| c.to_ascii_lowercase()),
                    _ => None,
                };
                Some((
                    path,
                    Expected {
                        size: f.size,
                        crc32c,
                    },
                ))
            })
            .collect();
        Ok(BackupFiles { files })
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Checks one file read from a tar: its path (with the tar's prefix),
    /// its size and its CRC-32C.
    pub fn check(&self, path: &[u8], size: u64, crc32c: u32) -> Result<(), FileMismatch> {
        let shown = || String::from_utf8_lossy(path).into_owned();
        let expected = self
            .files
            .get(path)
            .ok_or_else(|| FileMismatch::Unlisted { path: shown() })?;
        if expected.size != size {
            return Err(FileMismatch::Size {
                path: shown(),
                expected: expected.size,
                found: size,
            });
        }
        let found = hex::encode(crc32c.to_le_bytes());
        match &expected.crc32c {
            Some(want) if *want != found => Err(FileMismatch::Checksum {
                path: shown(),
                expected: want.clone(),
                found,
            }),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A manifest as PostgreSQL writes it: the checksum over every line
    /// before the last.
    fn with_checksum(body: &str) -> String {
        use sha2::{Digest, Sha256};
        let sum = hex::encode(Sha256::digest(body.as_bytes()));
        format!("{body}\"Manifest-Checksum\": \"{sum}\"}}\n")
    }

    #[test]
    fn the_manifest_checksum_holds_and_an_altered_manifest_is_named() {
        let body = "{ \"PostgreSQL-Backup-Manifest-Version\": 1,\n\"Files\": [\n{ \"Path\": \"PG_VERSION\", \"Size\": 3, \"Last-Modified\": \"2026-11-27 10:00:00 GMT\", \"Checksum-Algorithm\": \"CRC32C\", \"Checksum\": \"5a2b3c4d\" }\n],\n\"WAL-Ranges\": [],\n";
        let good = with_checksum(body);
        assert_eq!(check_manifest_checksum(good.as_bytes()), Ok(()));
        let altered = good.replace("\"Size\": 3", "\"Size\": 4");
        assert!(matches!(
            check_manifest_checksum(altered.as_bytes()),
            Err(ManifestChecksumError::Mismatch { .. })
        ));
        let cut = &good[..good.len() / 2];
        assert!(check_manifest_checksum(cut.as_bytes()).is_err());
        assert_eq!(
            check_manifest_checksum(b"{}"),
            Err(ManifestChecksumError::TooShort)
        );
    }

    const MANIFEST: &str = r#"{ "PostgreSQL-Backup-Manifest-Version": 1,
      "Files": [
        { "Path": "PG_VERSION", "Size": 3, "Last-Modified": "2026-11-27 10:00:00 GMT", "Checksum-Algorithm": "CRC32C", "Checksum": "5A2B3C4D" },
        { "Encoded-Path": "ff00", "Size": 0, "Last-Modified": "2026-11-27 10:00:00 GMT", "Checksum-Algorithm": "NONE" }
      ],
      "WAL-Ranges": [], "Manifest-Checksum": "00" }"#;

    #[test]
    fn a_file_is_checked_by_size_and_crc32c_in_postgres_byte_order() {
        let files = BackupFiles::parse(MANIFEST.as_bytes()).unwrap();
        assert_eq!(files.len(), 2);
        // PostgreSQL prints the CRC's little-endian bytes.
        assert_eq!(files.check(b"PG_VERSION", 3, 0x4d3c2b5a), Ok(()));
        assert!(matches!(
            files.check(b"PG_VERSION", 3, 0x4d3c2b5b),
            Err(FileMismatch::Checksum { .. })
        ));
        assert!(matches!(
            files.check(b"PG_VERSION", 4, 0x4d3c2b5a),
            Err(FileMismatch::Size {
                expected: 3,
                found: 4,
                ..
            })
        ));
        assert!(matches!(
            files.check(b"global/1262", 0, 0),
            Err(FileMismatch::Unlisted { .. })
        ));
        assert_eq!(
            files.check(&[0xff, 0x00], 0, 12345),
            Ok(()),
            "no checksum: size only"
        );
    }
}
