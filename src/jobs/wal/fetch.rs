//! `vigil wal-fetch JOB NAME DEST`: one archived WAL file back, verified,
//! written atomically where `restore_command`'s `%p` says.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::json;

use super::{Archive, WalError};
use crate::core::wal::WalFile;
use crate::repo::RepoError;
use crate::repo::wal::MIN_SEGMENT_SIZE;

/// How long transient storage errors are retried before giving up
/// (PostgreSQL waits on the command; it retries a failed fetch itself).
const RETRY_FOR: Duration = Duration::from_secs(10);
const FIRST_BACKOFF: Duration = Duration::from_millis(500);

/// What a fetch found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    /// Written to DEST: the object it came from.
    Restored { path: String },
    /// Not archived: PostgreSQL's end-of-archive signal.
    Missing,
}

/// Fetches `name` into `dest`: the object under the repository's
/// extension first, then the other (encryption switched on or off since).
pub async fn fetch(archive: &Archive, name: &str, dest: &Path) -> Result<Fetched, WalError> {
    let wal = WalFile::parse(name, MIN_SEGMENT_SIZE)?;
    let Some((path, stored)) = find_with_retries(archive, &wal).await? else {
        return Ok(Fetched::Missing);
    };
    let encrypted = path.ends_with(".age");
    let identities = if encrypted {
        archive.identities()?
    } else {
        Vec::new()
    };
    let raw = tokio::task::spawn_blocking(move || {
        crate::pipeline::wal::decode(&stored, encrypted, &identities)
    })
    .await
    .map_err(|e| WalError::Task {
        step: "decompression",
        detail: e.to_string(),
    })?
    .map_err(|source| WalError::Damaged {
        path: path.clone(),
        source,
    })?;
    let dest = dest.to_owned();
    tokio::task::spawn_blocking(move || write_atomically(&dest, &raw))
        .await
        .map_err(|e| WalError::Task {
            step: "write",
            detail: e.to_string(),
        })??;
    Ok(Fetched::Restored { path })
}

/// [`find`], retrying transient storage errors with back-off for up to
/// [`RETRY_FOR`] in all.
async fn find_with_retries(
    archive: &Archive,
    wal: &WalFile,
) -> Result<Option<(String, Bytes)>, WalError> {
    let deadline = Instant::now() + RETRY_FOR;
    let mut backoff = FIRST_BACKOFF;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let error = match tokio::time::timeout(left, find(archive, wal)).await {
            Ok(Ok(found)) => return Ok(found),
            Ok(Err(e)) if !transient(&e) => return Err(e.into()),
            Ok(Err(e)) => Some(Box::new(e)),
            Err(_) => None,
        };
        if Instant::now() + backoff >= deadline {
            return Err(WalError::GaveUp {
                name: wal.file_name(MIN_SEGMENT_SIZE),
                repo: archive.repo.location(),
                seconds: RETRY_FOR.as_secs(),
                last: error,
            });
        }
        tokio::time::sleep(backoff).await;
        backoff *= 2;
    }
}

/// The stored object of `wal` and its path, `None` if neither name exists.
async fn find(archive: &Archive, wal: &WalFile) -> Result<Option<(String, Bytes)>, RepoError> {
    for encrypted in [archive.encrypted(), !archive.encrypted()] {
        let path = archive
            .repo
            .wal_object_path(&archive.job, wal, MIN_SEGMENT_SIZE, encrypted);
        if let Some(stored) = archive.repo.read_wal(&path).await? {
            return Ok(Some((path, stored)));
        }
    }
    Ok(None)
}

/// Worth another try: the service was not reached or said "try again".
fn transient(e: &RepoError) -> bool {
    matches!(
        e,
        RepoError::Unreachable { .. }
            | RepoError::Storage {
                retryable: true,
                ..
            }
    )
}

/// A temp file beside `dest`, fsync, rename over `dest`, fsync of the
/// directory: PostgreSQL never reads a partial segment.
fn write_atomically(dest: &Path, raw: &[u8]) -> Result<(), WalError> {
    let dir = match dest.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.vigil-{}.tmp", std::process::id()));
    let fail = |path: &Path| {
        let path = path.to_owned();
        move |source| WalError::WriteDest { path, source }
    };
    let written = std::fs::File::create(&tmp)
        .and_then(|mut f| f.write_all(raw).and_then(|()| f.sync_all()))
        .and_then(|()| std::fs::rename(&tmp, dest));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(fail(dest)(e));
    }
    std::fs::File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(fail(&dir))
}

impl Archive {
    /// The journal record of a failed fetch (a missing file is no failure).
    pub fn fetch_failure(
        &self,
        name: &str,
        redacted: String,
    ) -> crate::core::journal_record::Entry {
        self.event("wal.fetch_failed", json!({"file": name, "error": redacted}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dest_is_replaced_whole_and_no_temp_file_stays() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("RECOVERYXLOG");
        std::fs::write(&dest, "old").unwrap();
        write_atomically(&dest, b"segment").unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"segment");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
        let missing = dir.path().join("no/such/dir/x");
        assert!(matches!(
            write_atomically(&missing, b"x"),
            Err(WalError::WriteDest { .. })
        ));
    }
}
