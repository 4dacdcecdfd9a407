//! A storage repository: an opendal operator plus a prefix (`store`), the
//! layout inside it and its listings (`layout`), manifests and the commit
//! protocol (`commit`), mirroring (`copy`) and job leases ([`lease`]).
//! Below the pipelines: imports only config (and leaf helpers).
//!
//! ```text
//! <prefix>/<job>/backups/<backup-id>/<object>          data, written first
//! <prefix>/<job>/backups/<backup-id>/manifest.json     written last, create-only
//! <prefix>/<job>/locks/<name>                          leases (see [`lease`])
//! <prefix>/<job>/index.json.zst                        listing cache (see `index`)
//! <prefix>/<job>/wal/<timeline>/<wal file>.zst[.age]   WAL archive (see [`wal`])
//! <prefix>/<job>/proofs/{verify,drill}.json            proof records (see [`proofs`])
//! ```

mod commit;
mod copy;
mod fs_create;
mod fs_share;
mod index;
mod layout;
pub mod lease;
mod oplog;
pub mod proofs;

mod store;
mod temp;
pub mod wal;

use std::path::PathBuf;

use thiserror::Error;

pub use commit::Deletion;
pub use index::{INDEX, IndexError};
pub use layout::Listing;
pub use store::{PartLimits, Repository};
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

/// Where an fs repository keeps temp files (same filesystem as its root).
pub fn fs_tmp_dir(root: &str) -> PathBuf {
    PathBuf::from(root).join(FS_TMP_DIR)
}

/// An fs repository named `local` at `root`, for unit tests.
#[cfg(test)]
pub(crate) fn fs_for_tests(root: &std::path::Path) -> Repository {
    let config: crate::config::RepositoryConfig = toml::from_str(&format!(
        "scheme = \"fs\"\noptions = {{ root = \"{}\" }}\n",
        root.display()
    ))
    .unwrap();
    Repository::open("local", &config).unwrap()
}
