//! Where things live in a repository and what is there: paths of backups,
//! objects and pins under the prefix, and the listings built from them
//! (backups of a job, every object for mirroring).

use futures::StreamExt;
use opendal::ErrorKind;

use super::store::Repository;
use super::{FS_TMP_DIR, RepoError};
use crate::core::manifest::Manifest;

/// Manifests read at once while listing.
const MANIFEST_READS: usize = 16;

/// Committed backups of one job, plus what could not be read.
#[derive(Debug, Default)]
pub struct Listing {
    /// Ordered by finish time, oldest first.
    pub backups: Vec<Manifest>,
    /// Backup directories whose manifest is unreadable or contradicts its
    /// place or the clock: `(directory, why)`. Never backups: not newest,
    /// not fresh, not pruned.
    pub damaged: Vec<(String, String)>,
    /// Directories without a manifest: uncommitted leftovers (garbage).
    pub uncommitted: Vec<String>,
}

/// `<job>/locks/...`: a repository's own coordination, never mirrored.
fn is_lease(relative: &str) -> bool {
    relative.split('/').nth(1) == Some("locks")
}

impl Repository {
    pub(super) fn join(&self, parts: &[&str]) -> String {
        let mut path = self.prefix.clone();
        for p in parts {
            if !path.is_empty() {
                path.push('/');
            }
            path.push_str(p);
        }
        path
    }

    pub fn backups_dir(&self, job: &str) -> String {
        format!("{}/", self.join(&[job, "backups"]))
    }

    pub fn backup_dir(&self, job: &str, backup_id: &str) -> String {
        format!("{}/", self.join(&[job, "backups", backup_id]))
    }

    pub fn object_path(&self, job: &str, backup_id: &str, name: &str) -> String {
        self.join(&[job, "backups", backup_id, name])
    }

    /// The full path of a path relative to the prefix.
    pub fn absolute(&self, relative: &str) -> String {
        self.join(&[relative])
    }

    pub(super) fn pins_dir(&self, job: &str) -> String {
        format!("{}/", self.join(&[job, "pins"]))
    }

    /// Whether anything exists under this backup id (ids must be fresh).
    pub async fn backup_exists(&self, job: &str, backup_id: &str) -> Result<bool, RepoError> {
        let dir = self.backup_dir(job, backup_id);
        let entries = self.op().list(&dir).await;
        match entries {
            Ok(entries) => Ok(entries.iter().any(|e| e.path() != dir)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(self.storage_err("cannot list", &dir, e)),
        }
    }

    /// Every backup of `job`, from the repository alone.
    pub async fn list(&self, job: &str) -> Result<Listing, RepoError> {
        let dir = self.backups_dir(job);
        let entries = match self.op().list(&dir).await {
            Ok(entries) => entries,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Listing::default()),
            Err(e) => return Err(self.storage_err("cannot list", &dir, e)),
        };
        let ids: Vec<String> = entries
            .iter()
            .filter(|e| e.path() != dir && e.path().ends_with('/'))
            .map(|e| {
                e.path()
                    .trim_start_matches(&dir)
                    .trim_end_matches('/')
                    .to_owned()
            })
            .filter(|id| !id.is_empty() && id != FS_TMP_DIR)
            .collect();
        // Object stores answer each GET in milliseconds, so manifests are
        // read a bounded number at a time there; fs reads are CPU-bound
        // (and opendal's fs reader buffers 2 MiB each), so one at a time.
        let concurrency = if self.fs_root.is_some() {
            1
        } else {
            MANIFEST_READS
        };
        let reads: Vec<(String, Result<Manifest, RepoError>)> = futures::stream::iter(ids)
            .map(|id| async move {
                let manifest = self.read_manifest(job, &id).await;
                (id, manifest)
            })
            .buffer_unordered(concurrency)
            .collect()
            .await;
        let mut listing = Listing::default();
        for (id, read) in reads {
            match read {
                Ok(m) => listing.backups.push(m),
                Err(RepoError::NoSuchBackup { .. }) => listing.uncommitted.push(id),
                Err(RepoError::BadManifest { detail, .. }) => listing.damaged.push((id, detail)),
                Err(e) => return Err(e),
            }
        }
        listing.uncommitted.sort();
        listing.damaged.sort();
        listing.backups.sort_by(|a, b| {
            a.finished_at
                .cmp(&b.finished_at)
                .then(a.backup_id.cmp(&b.backup_id))
        });
        Ok(listing)
    }

    /// Pinned backup ids; pins live in the repository, so they survive the
    /// loss of the catalog.
    pub async fn pins(&self, job: &str) -> Result<std::collections::BTreeSet<String>, RepoError> {
        let dir = self.pins_dir(job);
        match self.op().list(&dir).await {
            Ok(entries) => Ok(entries
                .iter()
                .filter(|e| !e.path().ends_with('/'))
                .map(|e| e.name().to_owned())
                .collect()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(Default::default()),
            Err(e) => Err(self.storage_err("cannot list", &dir, e)),
        }
    }

    /// When anything under a backup directory was last written.
    pub async fn last_written(
        &self,
        job: &str,
        backup_id: &str,
    ) -> Result<Option<chrono::DateTime<chrono::Utc>>, RepoError> {
        let dir = self.backup_dir(job, backup_id);
        let entries = self
            .op()
            .list_with(&dir)
            .recursive(true)
            .await
            .map_err(|e| self.storage_err("cannot list", &dir, e))?;
        let mut newest: Option<chrono::DateTime<chrono::Utc>> = None;
        for entry in entries.iter().filter(|e| !e.path().ends_with('/')) {
            let meta = self
                .op()
                .stat(entry.path())
                .await
                .map_err(|e| self.storage_err("cannot stat", entry.path(), e))?;
            if let Some(t) = meta.last_modified() {
                let t = chrono::DateTime::<chrono::Utc>::from(std::time::SystemTime::from(t));
                newest = Some(newest.map_or(t, |n| n.max(t)));
            }
        }
        Ok(newest)
    }

    /// Every object under the prefix, as `(path relative to the prefix,
    /// size)`, vigil's own scratch areas and leases left out. For mirroring.
    pub async fn list_objects(&self) -> Result<Vec<(String, u64)>, RepoError> {
        let root = if self.prefix.is_empty() {
            "/".to_owned()
        } else {
            format!("{}/", self.prefix)
        };
        let entries = match self.op().list_with(&root).recursive(true).await {
            Ok(entries) => entries,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(self.storage_err("cannot list", &root, e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let path = entry.path();
            if path.ends_with('/') {
                continue;
            }
            let relative = path
                .strip_prefix(root.trim_start_matches('/'))
                .unwrap_or(path)
                .trim_start_matches('/')
                .to_owned();
            if relative.starts_with(FS_TMP_DIR)
                || relative.starts_with(".vigil-probe/")
                || is_lease(&relative)
            {
                continue;
            }
            let mut size = entry.metadata().content_length();
            if size == 0 {
                size = self
                    .op()
                    .stat(path)
                    .await
                    .map_err(|e| self.storage_err("cannot stat", path, e))?
                    .content_length();
            }
            out.push((relative, size));
        }
        out.sort();
        Ok(out)
    }
}
