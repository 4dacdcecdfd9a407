//! A storage repository: an opendal operator plus a prefix, the layout
//! inside it, manifests and the commit protocol.
//!
//! ```text
//! <prefix>/<job>/backups/<backup-id>/<object>          data, written first
//! <prefix>/<job>/backups/<backup-id>/manifest.json     written last, create-only
//! <prefix>/<job>/locks/<name>                          leases (see [`lease`])
//! ```

mod fs_create;
pub mod lease;
pub mod manifest;
mod oplog;
mod store;
mod temp;

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use thiserror::Error;

pub use manifest::{Manifest, ObjectEntry};
pub use store::{Deletion, Listing, Repository};
pub use temp::{TempCollected, TempUsage};

pub const MANIFEST: &str = "manifest.json";
/// Inside an fs repository's root: opendal's temp files before rename.
pub const FS_TMP_DIR: &str = ".vigil-tmp";

#[derive(Debug, Error)]
pub enum RepoError {
    #[error("repository `{repo}`: cannot set up the {scheme} service: {detail}")]
    Setup {
        repo: String,
        scheme: String,
        detail: String,
    },
    #[error("repository `{repo}`: {action} {path}: {detail}{}", if *retryable { " (transient; a retry may help)" } else { "" })]
    Storage {
        repo: String,
        action: &'static str,
        path: String,
        detail: String,
        retryable: bool,
    },
    #[error(
        "repository `{repo}`: {action} {path}: cannot reach the service: {detail} (check the endpoint, the network and that the service is up; a retry may help)"
    )]
    Unreachable {
        repo: String,
        action: &'static str,
        path: String,
        detail: String,
    },
    /// ENOSPC or EDQUOT: waiting or retrying cannot help.
    #[error(
        "repository `{repo}`: {action} {path}: no space left on the device or quota; {} (free space, prune older backups, or raise the quota)",
        free.map_or_else(|| "the service does not say how much is free".to_owned(), |f| format!("{f} bytes free"))
    )]
    Full {
        repo: String,
        action: &'static str,
        path: String,
        free: Option<u64>,
    },
    #[error(
        "repository `{repo}`: backup {backup_id} already has a manifest; refusing to overwrite a committed backup"
    )]
    AlreadyCommitted { repo: String, backup_id: String },
    #[error("repository `{repo}`: {path}: {detail}")]
    BadManifest {
        repo: String,
        path: String,
        detail: String,
    },
    #[error("repository `{repo}`: job `{job}` has no backup {backup_id}")]
    NoSuchBackup {
        repo: String,
        job: String,
        backup_id: String,
    },
    #[error("repository `{repo}`: job `{job}` has no backups yet")]
    NoBackups { repo: String, job: String },
    /// A failpoint armed to fail this step (test builds only).
    #[cfg(feature = "failpoints")]
    #[error(transparent)]
    Injected(#[from] crate::failpoint::Injected),
}

/// A backup id reads as its start time in UTC; `-N` keeps it unique when
/// two start in the same second. Never parsed for ordering.
pub fn backup_id(started: DateTime<Utc>, attempt: u32) -> String {
    let base = started.format("%Y%m%dT%H%M%SZ").to_string();
    if attempt == 0 {
        base
    } else {
        format!("{base}-{attempt}")
    }
}

/// Whether an error (or one of its sources) is ENOSPC or EDQUOT.
pub fn is_out_of_space(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && matches!(io.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
        {
            return true;
        }
        next = e.source();
    }
    false
}

/// Bytes available to vigil on the filesystem holding `path`.
pub fn free_bytes(path: &std::path::Path) -> Option<u64> {
    let stat = nix::sys::statvfs::statvfs(path).ok()?;
    Some(stat.blocks_available() as u64 * stat.fragment_size() as u64)
}

/// Where an fs repository keeps temp files (same filesystem as its root).
pub fn fs_tmp_dir(root: &str) -> PathBuf {
    PathBuf::from(root).join(FS_TMP_DIR)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_read_as_start_times() {
        let t = DateTime::parse_from_rfc3339("2026-11-23T07:32:44.9Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(backup_id(t, 0), "20261123T073244Z");
        assert_eq!(backup_id(t, 2), "20261123T073244Z-2");
    }
}
