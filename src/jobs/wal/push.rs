//! `vigil wal-push JOB PATH`: one WAL file into the archive, create-only.

use std::path::Path;

use serde_json::json;

use super::{Archive, WalError};
use crate::core::wal::WalFile;
use crate::repo::wal::{MIN_SEGMENT_SIZE, Pushed as Stored, WalHeader, is_segment_size};

/// What a successful push did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pushed {
    /// Stored under `path`.
    Archived { path: String },
    /// The same content was archived before (PostgreSQL retries after a
    /// crash between our commit and its bookkeeping).
    AlreadyArchived { path: String },
}

/// Archives the WAL file at `file` (as `archive_command`'s `%p` names it,
/// relative to the data directory PostgreSQL runs it in).
pub async fn push(archive: &Archive, file: &Path) -> Result<Pushed, WalError> {
    let raw = tokio::fs::read(file)
        .await
        .map_err(|source| WalError::ReadFile {
            path: file.to_owned(),
            source,
        })?;
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (wal, segment_size) = identify(&name, file, raw.len() as u64)?;
    let path = archive
        .repo
        .wal_object_path(&archive.job, &wal, segment_size, archive.encrypted());
    let (level, recipients) = (archive.level, archive.recipients.clone());
    let (header, object) = tokio::task::spawn_blocking(move || {
        crate::pipeline::wal::encode_hashed(&raw, level, &recipients)
    })
    .await
    .map_err(|e| WalError::Task {
        step: "compression",
        detail: e.to_string(),
    })?
    .map_err(|source| WalError::Encode {
        name: name.clone(),
        source,
    })?;
    match archive.repo.push_wal(&path, object).await? {
        Stored::Created => Ok(Pushed::Archived { path }),
        Stored::Exists => same_as_archived(archive, &name, path, &header).await,
    }
}

/// The file's identity and the segment size its name is read with: a
/// segment's (or `.partial`'s) own length, which must be a segment size;
/// for history and backup files the smallest size, which reads every
/// valid name and prints it back unchanged.
fn identify(name: &str, file: &Path, bytes: u64) -> Result<(WalFile, u64), WalError> {
    let wal = WalFile::parse(name, MIN_SEGMENT_SIZE)?;
    if !matches!(wal, WalFile::Segment(_) | WalFile::Partial(_)) {
        return Ok((wal, MIN_SEGMENT_SIZE));
    }
    if !is_segment_size(bytes) {
        return Err(WalError::SegmentSize {
            path: file.to_owned(),
            bytes,
        });
    }
    Ok((WalFile::parse(name, bytes)?, bytes))
}

/// Something is stored under the name: the same content is success,
/// different content a conflict (journalled by the caller), never an
/// overwrite.
async fn same_as_archived(
    archive: &Archive,
    name: &str,
    path: String,
    local: &WalHeader,
) -> Result<Pushed, WalError> {
    let head = archive.repo.read_wal_head(&path).await?.unwrap_or_default();
    let (stored, _) = WalHeader::decode(&head).map_err(|source| WalError::Foreign {
        path: path.clone(),
        source,
    })?;
    if stored == *local {
        return Ok(Pushed::AlreadyArchived { path });
    }
    Err(WalError::Conflict {
        name: name.to_owned(),
        path,
        archived: stored.sha256,
        archived_bytes: stored.raw_bytes,
        local: local.sha256.clone(),
        local_bytes: local.raw_bytes,
    })
}

impl Archive {
    /// The journal record of a failed push: `wal.conflict` for different
    /// content under the name, else `wal.push_failed`.
    pub fn push_failure(
        &self,
        file: &Path,
        error: &WalError,
        redacted: String,
    ) -> crate::core::journal_record::Entry {
        let file = file.display().to_string();
        match error {
            WalError::Conflict {
                name,
                path,
                archived,
                local,
                ..
            } => self.event(
                "wal.conflict",
                json!({"file": name, "object": path, "archivedSha256": archived, "localSha256": local}),
            ),
            _ => self.event("wal.push_failed", json!({"file": file, "error": redacted})),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_named_with_their_own_size_other_files_with_the_smallest() {
        let p = Path::new("pg_wal/x");
        let (wal, size) = identify("000000010000000000000003", p, 16 << 20).unwrap();
        assert_eq!(
            (wal.file_name(size), size),
            ("000000010000000000000003".into(), 16 << 20)
        );
        // 64 MiB segments: a log holds 64 of them.
        assert!(identify("000000010000000000000040", p, 64 << 20).is_err());
        assert!(matches!(
            identify("000000010000000000000003", p, 5000),
            Err(WalError::SegmentSize { bytes: 5000, .. })
        ));
        // 1 MiB segments: names up to 0xFFF in the last field.
        let (backup, size) = identify("000000010000000000000FFF.00000028.backup", p, 300).unwrap();
        assert_eq!(
            backup.file_name(size),
            "000000010000000000000FFF.00000028.backup"
        );
        assert!(matches!(
            identify("00000002.history", p, 42),
            Ok((WalFile::History(2), _))
        ));
        assert!(matches!(
            identify("RECOVERYXLOG", p, 16 << 20),
            Err(WalError::Name(_))
        ));
    }
}
