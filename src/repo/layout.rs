//! Where things live in a repository and what is there: paths of backups,
//! objects and pins under the prefix, and the listings built from them
//! (backups of a job, every object for mirroring).

use futures::StreamExt;
use opendal::ErrorKind;

use std::collections::BTreeMap;

use super::index::{Found, INDEX, Stamp};
use super::store::Repository;
use super::{FS_TMP_DIR, MANIFEST, RepoError};
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

/// `<job>/index.json.zst`: each repository's own listing cache, rebuilt
/// from its own manifests (stamps differ between services), never mirrored.
fn is_index(relative: &str) -> bool {
    relative.split_once('/').map(|(_, rest)| rest) == Some(INDEX)
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

    /// `<job>/wal/`: the WAL archive of a physical job.
    pub fn wal_dir(&self, job: &str) -> String {
        format!("{}/", self.join(&[job, "wal"]))
    }

    /// `<job>/wal/<timeline as 8 hex digits>/`: one timeline's WAL files.
    pub fn wal_timeline_dir(&self, job: &str, timeline: crate::core::wal::Timeline) -> String {
        format!("{}/", self.join(&[job, "wal", &format!("{timeline:08X}")]))
    }

    /// `<job>/wal/<timeline>/<file name><ext>` (ext such as `.zst.age`):
    /// a history file lies under its own timeline.
    pub fn wal_path(
        &self,
        job: &str,
        file: &crate::core::wal::WalFile,
        segment_size: u64,
        ext: &str,
    ) -> String {
        let timeline = format!("{:08X}", file.timeline());
        let name = format!("{}{ext}", file.file_name(segment_size));
        self.join(&[job, "wal", &timeline, &name])
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

    /// Every backup of `job`, from the repository alone: the listing says
    /// which backups exist; the index stands in for the manifests it holds
    /// unchanged, every other manifest is read, and a stale index is
    /// written back (see [`super::index`]).
    pub async fn list(&self, job: &str) -> Result<Listing, RepoError> {
        let Some(found) = self.manifest_stamps(job).await? else {
            return Ok(Listing::default());
        };
        let (mut indexed, mut stale) = match self.read_index(job).await {
            Found::Entries(entries) => (entries, false),
            Found::Unusable => (Default::default(), true),
            Found::Unreadable => (Default::default(), false),
        };
        let mut listing = Listing {
            backups: Vec::with_capacity(found.len()),
            ..Listing::default()
        };
        let mut stamps = BTreeMap::new();
        let mut to_read = Vec::new();
        for (id, stamp) in found {
            match (stamp, indexed.remove(&id).map(|e| *e)) {
                (Some(now), Some((then, m))) if now.identifies() && now == then && m.job == job => {
                    stamps.insert(id, now);
                    listing.backups.push(m);
                }
                (stamp, entry) => {
                    // An entry that no longer matches its manifest.
                    stale |= entry.is_some();
                    to_read.push((id, stamp));
                }
            }
        }
        // Entries of backups that are gone.
        stale |= !indexed.is_empty();
        for (id, stamp, read) in self.read_manifests(job, to_read).await {
            match read {
                Ok(m) => {
                    if let Some(s) = stamp.filter(Stamp::identifies) {
                        stamps.insert(id, s);
                        stale = true;
                    }
                    listing.backups.push(m);
                }
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
        if stale {
            let entries = listing
                .backups
                .iter()
                .filter_map(|m| stamps.get(m.backup_id.as_str()).map(|s| (s, m)));
            self.write_index(job, entries).await;
        }
        Ok(listing)
    }

    /// Reads the given manifests, with the stamps they were listed with.
    async fn read_manifests(
        &self,
        job: &str,
        ids: Vec<(String, Option<Stamp>)>,
    ) -> Vec<(String, Option<Stamp>, Result<Manifest, RepoError>)> {
        // Object stores answer each GET in milliseconds, so manifests are
        // read a bounded number at a time there; fs reads are CPU-bound
        // (and opendal's fs reader buffers 2 MiB each), so one at a time.
        let concurrency = if self.fs_root.is_some() {
            1
        } else {
            MANIFEST_READS
        };
        futures::stream::iter(ids)
            .map(|(id, stamp)| async move {
                let manifest = self.read_manifest(job, &id).await;
                (id, stamp, manifest)
            })
            .buffer_unordered(concurrency)
            .collect()
            .await
    }

    /// The job's backup directories, each with its manifest object's stamp
    /// when the service tells it (`None`: no manifest seen, or no stamp);
    /// `None` when the job has no backups directory.
    async fn manifest_stamps(
        &self,
        job: &str,
    ) -> Result<Option<Vec<(String, Option<Stamp>)>>, RepoError> {
        if self.fs_root.is_none() && self.guarantees.native_recursive_list {
            return self.stamps_from_listing(job).await;
        }
        let Some(ids) = self.backup_ids(job).await? else {
            return Ok(None);
        };
        Ok(Some(self.stamps_by_stat(job, ids).await))
    }

    /// Object stores: one recursive listing (a page per 1,000 objects)
    /// carries every manifest's etag, size and time.
    async fn stamps_from_listing(
        &self,
        job: &str,
    ) -> Result<Option<Vec<(String, Option<Stamp>)>>, RepoError> {
        let dir = self.backups_dir(job);
        let entries = match self.op().list_with(&dir).recursive(true).await {
            Ok(entries) => entries,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.storage_err("cannot list", &dir, e)),
        };
        let mut found: BTreeMap<String, Option<Stamp>> = BTreeMap::new();
        for entry in &entries {
            let relative = entry.path().trim_start_matches(&dir);
            let Some((id, rest)) = relative.split_once('/') else {
                continue;
            };
            if id.is_empty() || id == FS_TMP_DIR {
                continue;
            }
            let slot = found.entry(id.to_owned()).or_default();
            if rest == MANIFEST {
                *slot = Some(Stamp::of(entry.metadata()));
            }
        }
        Ok(Some(found.into_iter().collect()))
    }

    /// Services that walk directories (fs, SFTP, FTP): the backup
    /// directories, then a stat of each manifest (cheaper than its read).
    async fn stamps_by_stat(&self, job: &str, ids: Vec<String>) -> Vec<(String, Option<Stamp>)> {
        futures::stream::iter(ids)
            .map(|id| async move {
                let path = self.object_path(job, &id, MANIFEST);
                // A failed stat only means a read: the read reports errors.
                let stamp = self.op().stat(&path).await.ok().map(|m| Stamp::of(&m));
                (id, stamp)
            })
            .buffer_unordered(MANIFEST_READS)
            .collect()
            .await
    }

    /// The backup directories of `job`; `None` when there is no such directory.
    async fn backup_ids(&self, job: &str) -> Result<Option<Vec<String>>, RepoError> {
        let dir = self.backups_dir(job);
        let entries = match self.op().list(&dir).await {
            Ok(entries) => entries,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.storage_err("cannot list", &dir, e)),
        };
        Ok(Some(
            entries
                .iter()
                .filter(|e| e.path() != dir && e.path().ends_with('/'))
                .map(|e| {
                    e.path()
                        .trim_start_matches(&dir)
                        .trim_end_matches('/')
                        .to_owned()
                })
                .filter(|id| !id.is_empty() && id != FS_TMP_DIR)
                .collect(),
        ))
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
                || is_index(&relative)
                || super::proofs::is_proof(&relative)
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
