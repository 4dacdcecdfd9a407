//! Repository I/O over opendal: objects, manifests, listings.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use opendal::{ErrorKind, Operator};

use super::{FS_TMP_DIR, MANIFEST, Manifest, RepoError, fs_tmp_dir};
use crate::config::RepositoryConfig;

/// Manifests read at once while listing.
const MANIFEST_READS: usize = 16;

#[derive(Clone, Debug)]
pub struct Repository {
    pub name: String,
    pub scheme: String,
    /// Shared by every clone, so a reload's rotated credentials
    /// ([`Repository::rekey`]) reach every holder at once.
    operator: Arc<ArcSwap<Operator>>,
    prefix: String,
    /// For fs repositories: the root directory, for directory fsyncs.
    pub(super) fs_root: Option<PathBuf>,
    part_size: usize,
    max_parts: u64,
    /// With `max_upload_rate`: parts stay within the throttle's burst.
    max_part_size: usize,
    pub guarantees: Guarantees,
    pub writable_interval: std::time::Duration,
    /// How long a job lease stays valid without renewal.
    pub lease_ttl: std::time::Duration,
    /// fs: temp files older than this belong to no live run.
    pub temp_grace: std::time::Duration,
    /// The service's `endpoint` option (userinfo masked), named in errors.
    endpoint: Option<String>,
}

/// What a repository's service guarantees, from opendal's capability
/// report and the scheme; shown by `<repo>:writable` in `/health/detailed`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Guarantees {
    /// The manifest is written create-only, so no two writers can commit
    /// one backup id; otherwise checked, then written, under the job lock.
    pub create_only_commit: bool,
    /// An object appears whole or not at all (fs: temp file and rename;
    /// object stores: on upload completion). Otherwise it is written in
    /// place and an interrupted manifest reads as damaged, never committed.
    pub atomic_objects: bool,
    /// Uploads go in managed parts (multipart, blocks, resumable).
    pub multipart: bool,
    /// The service lists recursively itself (else opendal walks directories).
    pub native_recursive_list: bool,
}

impl Guarantees {
    fn of(scheme: &str, capability: &opendal::Capability) -> Guarantees {
        let object_store = matches!(scheme, "s3" | "gcs" | "azblob");
        Guarantees {
            create_only_commit: capability.write_with_if_not_exists,
            atomic_objects: object_store || scheme == "fs",
            multipart: object_store,
            native_recursive_list: capability.list_with_recursive,
        }
    }

    /// One line for logs and check output.
    pub fn describe(&self) -> String {
        format!(
            "commit: {}; objects: {}; uploads: {}",
            if self.create_only_commit {
                "create-only"
            } else {
                "check-then-write under the job lock"
            },
            if self.atomic_objects {
                "atomic"
            } else {
                "written in place (an interrupted one is garbage or a damaged manifest)"
            },
            if self.multipart {
                "multipart"
            } else {
                "streamed"
            },
        )
    }
}

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

/// What [`Repository::delete_planned`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deletion {
    Deleted,
    /// Left alone: the manifest no longer matches the plan (why).
    Skipped(String),
}

/// `<job>/locks/...`: a repository's own coordination, never mirrored.
fn is_lease(relative: &str) -> bool {
    relative.split('/').nth(1) == Some("locks")
}

impl Repository {
    pub fn open(name: &str, config: &RepositoryConfig) -> Result<Repository, RepoError> {
        let setup = |detail: String| RepoError::Setup {
            repo: name.into(),
            scheme: config.scheme.clone(),
            detail,
        };
        let mut options: BTreeMap<String, String> = config.options.clone();
        let mut fs_root = None;
        if config.scheme == "fs" {
            let root = options.get("root").cloned().unwrap_or_default();
            let tmp = fs_tmp_dir(&root);
            std::fs::create_dir_all(&tmp)
                .map_err(|e| setup(format!("cannot create {}: {e}", tmp.display())))?;
            // Without it opendal fs writes in place (truncate): a crash would leave partial files.
            options.insert("atomic_write_dir".into(), tmp.display().to_string());
            fs_root = Some(PathBuf::from(root));
        }
        let mut op = Operator::via_iter(config.scheme.as_str(), options)
            .map_err(|e| setup(e.to_string()))?;
        let guarantees = Guarantees::of(&config.scheme, &op.info().capability());
        let part_size = config.part_size();
        let mut max_part_size = usize::MAX;
        // Innermost first: every attempt is throttled and counted, each
        // attempt logged and timed out, the whole retried with jitter.
        if let Some(rate) = &config.max_upload_rate {
            let rate = crate::config::parse_rate(rate).map_err(setup)?;
            // One write may not exceed the burst: streamed writes are 256 KiB,
            // multipart parts stay at their first size (so objects are
            // limited to max_parts × part_size_mib while throttled).
            let burst = rate.max(part_size as u64).max(1 << 20).min(u32::MAX as u64);
            max_part_size = burst as usize;
            op = op.layer(opendal::layers::ThrottleLayer::new(
                rate as u32,
                burst as u32,
            ));
        }
        if let Some(limit) = config.max_concurrent_requests {
            op = op.layer(opendal::layers::ConcurrentLimitLayer::new(limit));
        }
        let op = op
            .layer(opendal::layers::LoggingLayer::new(super::oplog::OpLog))
            .layer(
                opendal::layers::TimeoutLayer::new()
                    .with_timeout(config.request_timeout)
                    .with_io_timeout(config.request_timeout),
            );
        // A local filesystem's errors are not transient (opendal would
        // retry ENOSPC four times, 15 s and more, for nothing); services
        // across a network are retried.
        let op = if fs_root.is_some() {
            op
        } else {
            op.layer(
                opendal::layers::RetryLayer::new()
                    .with_max_times(4)
                    .with_jitter(),
            )
        };
        let prefix = config.prefix.trim_matches('/').to_owned();
        Ok(Repository {
            name: name.into(),
            scheme: config.scheme.clone(),
            operator: Arc::new(ArcSwap::from_pointee(op)),
            prefix,
            fs_root,
            part_size,
            max_parts: config.max_parts,
            max_part_size,
            guarantees,
            writable_interval: config.writable_interval,
            lease_ttl: config.lease_ttl,
            temp_grace: config.temp_grace,
            endpoint: config
                .options
                .get("endpoint")
                .map(|e| crate::redact::redact_text(e, &[])),
        })
    }

    /// "repository `name`", with ` at <endpoint>` where it has one.
    pub fn location(&self) -> String {
        match &self.endpoint {
            Some(endpoint) => format!("repository `{}` at {endpoint}", self.name),
            None => format!("repository `{}`", self.name),
        }
    }

    /// An opendal error's text, with the endpoint it came from: opendal's
    /// own text names the service and path but not every service's host.
    fn error_detail(&self, e: &opendal::Error) -> String {
        match &self.endpoint {
            Some(endpoint) => format!("at {endpoint}: {e}"),
            None => e.to_string(),
        }
    }

    /// The service's operator (with the credentials of the moment).
    pub(super) fn op(&self) -> Operator {
        (**self.operator.load()).clone()
    }

    /// Applies rotated credentials (`config`'s secret options) to this
    /// repository and every clone of it; the other settings stay.
    pub fn rekey(&self, config: &RepositoryConfig) -> Result<(), RepoError> {
        let fresh = Repository::open(&self.name, config)?;
        self.operator.store(fresh.operator.load_full());
        Ok(())
    }

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

    /// Classifies a failed request: unreachable, out of space, or other.
    pub fn storage_err(&self, action: &'static str, path: &str, e: opendal::Error) -> RepoError {
        if super::is_out_of_space(&e) {
            return RepoError::Full {
                repo: self.name.clone(),
                action,
                path: path.to_owned(),
                free: self.fs_root.as_deref().and_then(super::free_bytes),
            };
        }
        if crate::reach::is_unreachable(&e) {
            return RepoError::Unreachable {
                repo: self.name.clone(),
                action,
                path: path.to_owned(),
                detail: self.error_detail(&e),
            };
        }
        RepoError::Storage {
            repo: self.name.clone(),
            action,
            path: path.to_owned(),
            retryable: e.is_temporary(),
            detail: self.error_detail(&e),
        }
    }

    /// A streaming writer for a data object (temp file + rename on fs,
    /// multipart on object stores; each `write` call is one part there).
    pub async fn writer(&self, path: &str) -> Result<opendal::Writer, RepoError> {
        self.op()
            .writer_with(path)
            .if_not_exists(self.resumable_data_writes())
            .await
            .map_err(|e| self.storage_err("cannot start writing", path, e))
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

    /// The commit point: `manifest.json`, create-only, in one write; on fs
    /// also the directory entry is made durable.
    pub async fn commit_manifest(&self, manifest: &Manifest) -> Result<(), RepoError> {
        let path = self.object_path(&manifest.job, &manifest.backup_id, MANIFEST);
        crate::failpoint!("backup.before_manifest");
        if let Some(root) = &self.fs_root {
            // link(2): truly create-only, and the directory is fsynced.
            return match self
                .fs_create_new(root, &path, manifest.encode().to_vec())
                .await?
            {
                true => {
                    crate::failpoint!("backup.after_manifest");
                    Ok(())
                }
                false => Err(RepoError::AlreadyCommitted {
                    repo: self.name.clone(),
                    backup_id: manifest.backup_id.clone(),
                }),
            };
        }
        if !self.guarantees.create_only_commit {
            // The strongest this service allows (FTP): look, then write,
            // under the job's lock, so no other vigil writes this id.
            match self.op().exists(&path).await {
                Ok(true) => {
                    return Err(RepoError::AlreadyCommitted {
                        repo: self.name.clone(),
                        backup_id: manifest.backup_id.clone(),
                    });
                }
                Ok(false) => {}
                Err(e) => return Err(self.storage_err("cannot stat", &path, e)),
            }
        }
        let result = self
            .op()
            .write_with(&path, manifest.encode())
            .if_not_exists(self.guarantees.create_only_commit)
            .await;
        match result {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::ConditionNotMatch => {
                return Err(RepoError::AlreadyCommitted {
                    repo: self.name.clone(),
                    backup_id: manifest.backup_id.clone(),
                });
            }
            Err(e) => return Err(self.storage_err("cannot write", &path, e)),
        }
        crate::failpoint!("backup.after_manifest");
        Ok(())
    }

    pub async fn read_manifest(&self, job: &str, backup_id: &str) -> Result<Manifest, RepoError> {
        let path = self.object_path(job, backup_id, MANIFEST);
        let bytes = match self.op().read(&path).await {
            Ok(b) => b.to_bytes(),
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Err(RepoError::NoSuchBackup {
                    repo: self.name.clone(),
                    job: job.into(),
                    backup_id: backup_id.into(),
                });
            }
            Err(e) => return Err(self.storage_err("cannot read", &path, e)),
        };
        let bad = |e: super::manifest::ManifestError| RepoError::BadManifest {
            repo: self.name.clone(),
            path: path.clone(),
            detail: e.to_string(),
        };
        let manifest = Manifest::decode(&bytes).map_err(bad)?;
        manifest
            .check_place(job, backup_id, chrono::Utc::now())
            .map_err(bad)?;
        Ok(manifest)
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

    /// The stored bytes of an object as a stream of chunks.
    pub async fn read_stream(
        &self,
        path: &str,
    ) -> Result<
        impl futures::Stream<Item = Result<Bytes, RepoError>> + Unpin + Send + 'static,
        RepoError,
    > {
        let reader = self
            .op()
            .reader_with(path)
            .chunk(1 << 20)
            .await
            .map_err(|e| match e.kind() {
                ErrorKind::NotFound => RepoError::Storage {
                    repo: self.name.clone(),
                    action: "missing object",
                    path: path.to_owned(),
                    detail: "not found (the backup is damaged)".into(),
                    retryable: false,
                },
                _ => self.storage_err("cannot open", path, e),
            })?;
        let stream = reader
            .into_bytes_stream(..)
            .await
            .map_err(|e| self.storage_err("cannot read", path, e))?;
        let (repo, path) = (self.name.clone(), path.to_owned());
        Ok(stream.map_err(move |e| RepoError::Storage {
            repo: repo.clone(),
            action: "cannot read",
            path: path.clone(),
            retryable: false,
            detail: e.to_string(),
        }))
    }

    /// Whether each `write` on a data writer becomes one upload part, so
    /// callers must hand over whole parts. GCS's create-only writer (the
    /// resumable upload) gathers its own 8 MiB chunks from any writes:
    /// buffering a part here as well is redundant.
    fn writes_are_parts(&self) -> bool {
        self.guarantees.multipart && !self.resumable_data_writes()
    }

    /// GCS: data objects are written create-only, which takes the resumable
    /// upload (its XML multipart API is not universally served); ids are
    /// fresh anyway.
    fn resumable_data_writes(&self) -> bool {
        self.scheme == "gcs"
    }

    /// Upload limits for this service: fs appends every chunk; object
    /// stores upload each write as one multipart part.
    pub fn upload_limits(
        &self,
        stall_timeout: std::time::Duration,
    ) -> crate::pipeline::upload::UploadLimits {
        crate::pipeline::upload::UploadLimits {
            stall_timeout,
            part_size: self.part_size,
            max_parts: self.max_parts,
            multipart: self.writes_are_parts(),
            max_part_size: self.max_part_size,
        }
    }

    fn pins_dir(&self, job: &str) -> String {
        format!("{}/", self.join(&[job, "pins"]))
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

    pub async fn set_pin(&self, job: &str, backup_id: &str, pinned: bool) -> Result<(), RepoError> {
        let path = format!("{}{backup_id}", self.pins_dir(job));
        let result = if pinned {
            self.read_manifest(job, backup_id).await?;
            self.op()
                .write(&path, chrono::Utc::now().to_rfc3339())
                .await
                .map(|_| ())
        } else {
            self.op().delete(&path).await
        };
        result.map_err(|e| {
            self.storage_err(
                if pinned {
                    "cannot write"
                } else {
                    "cannot delete"
                },
                &path,
                e,
            )
        })
    }

    /// Deletes a backup: the manifest first (it stops being a backup), then
    /// its data, so an interrupted prune leaves garbage, never a listed
    /// backup with missing data.
    pub async fn delete_backup(&self, job: &str, backup_id: &str) -> Result<(), RepoError> {
        let manifest = self.object_path(job, backup_id, MANIFEST);
        self.op()
            .delete(&manifest)
            .await
            .map_err(|e| self.storage_err("cannot delete", &manifest, e))?;
        crate::failpoint!("prune.between_manifest_and_data");
        self.delete_leftovers(job, backup_id).await
    }

    /// Deletes the backup in directory `dir` as planned: only while its
    /// manifest still reads exactly as `planned` (what retention decided on).
    pub async fn delete_planned(
        &self,
        job: &str,
        dir: &str,
        planned: &Manifest,
    ) -> Result<Deletion, RepoError> {
        let changed = match self.read_manifest(job, dir).await {
            Ok(current) if current == *planned => None,
            Ok(_) => Some("its manifest changed since the plan was made".to_owned()),
            Err(RepoError::NoSuchBackup { .. }) => Some("its manifest is gone".to_owned()),
            Err(RepoError::BadManifest { detail, .. }) => Some(detail),
            Err(e) => return Err(e),
        };
        if let Some(why) = changed {
            return Ok(Deletion::Skipped(why));
        }
        self.delete_backup(job, dir).await?;
        Ok(Deletion::Deleted)
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

    /// Removes everything under a backup directory (garbage collection).
    pub async fn delete_leftovers(&self, job: &str, backup_id: &str) -> Result<(), RepoError> {
        let dir = self.backup_dir(job, backup_id);
        self.op()
            .delete_with(&dir)
            .recursive(true)
            .await
            .map_err(|e| self.storage_err("cannot delete", &dir, e))
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

    /// The full path of a path relative to the prefix.
    pub fn absolute(&self, relative: &str) -> String {
        self.join(&[relative])
    }

    /// Reads a small object whole (manifests, pins).
    pub async fn read_small(&self, relative: &str) -> Result<Vec<u8>, RepoError> {
        let path = self.absolute(relative);
        self.op()
            .read(&path)
            .await
            .map(|b| b.to_vec())
            .map_err(|e| self.storage_err("cannot read", &path, e))
    }

    /// Writes a small object whole (a mirrored manifest or pin).
    pub async fn write_small(&self, relative: &str, bytes: Vec<u8>) -> Result<(), RepoError> {
        let path = self.absolute(relative);
        self.op()
            .write(&path, bytes)
            .await
            .map(|_| ())
            .map_err(|e| self.storage_err("cannot write", &path, e))
    }

    pub async fn delete_object(&self, relative: &str) -> Result<(), RepoError> {
        let path = self.absolute(relative);
        self.op()
            .delete(&path)
            .await
            .map_err(|e| self.storage_err("cannot delete", &path, e))
    }

    /// SHA-256 and size of a stored object, streamed.
    pub async fn hash_object(&self, relative: &str) -> Result<(String, u64), RepoError> {
        use sha2::Digest;
        let path = self.absolute(relative);
        let mut stream = self.read_stream(&path).await?;
        let mut hasher = sha2::Sha256::new();
        let mut size = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            size += chunk.len() as u64;
            hasher.update(&chunk);
        }
        Ok((hex::encode(hasher.finalize()), size))
    }

    /// Streams `relative` to the same relative path in `dest`, hashing it on
    /// the way. With `expected` `(sha256, size)`, a different object is not
    /// committed: the write is aborted. Returns the hash and size copied.
    pub async fn copy_to(
        &self,
        relative: &str,
        dest: &Repository,
        expected: Option<(&str, u64)>,
    ) -> Result<(String, u64), RepoError> {
        use sha2::Digest;
        let from = self.absolute(relative);
        let to = dest.absolute(relative);
        let mut stream = self.read_stream(&from).await?;
        let mut writer = dest.writer(&to).await?;
        let mut hasher = sha2::Sha256::new();
        let mut size = 0u64;
        // The destination's own part size on multipart services (within a
        // bandwidth cap's burst); 1 MiB writes where it streams.
        let part_size = if dest.writes_are_parts() {
            dest.part_size.min(dest.max_part_size)
        } else {
            1 << 20
        };
        let mut part = bytes::BytesMut::with_capacity(part_size);
        let copied: Result<(), RepoError> = async {
            while let Some(chunk) = stream.next().await {
                let chunk = chunk?;
                size += chunk.len() as u64;
                hasher.update(&chunk);
                let mut rest = &chunk[..];
                while !rest.is_empty() {
                    let take = (part_size - part.len()).min(rest.len());
                    part.extend_from_slice(&rest[..take]);
                    rest = &rest[take..];
                    if part.len() == part_size {
                        let full =
                            std::mem::replace(&mut part, bytes::BytesMut::with_capacity(part_size));
                        writer
                            .write(full.freeze())
                            .await
                            .map_err(|e| dest.storage_err("cannot write", &to, e))?;
                    }
                }
            }
            if !part.is_empty() {
                writer
                    .write(part.split().freeze())
                    .await
                    .map_err(|e| dest.storage_err("cannot write", &to, e))?;
            }
            Ok(())
        }
        .await;
        let sha = hex::encode(hasher.finalize());
        let mismatch = expected.filter(|(want, want_size)| *want != sha || *want_size != size);
        if copied.is_err() || mismatch.is_some() {
            let _ = writer.abort().await;
            copied?;
            let (want, want_size) = mismatch.unwrap_or_default();
            return Err(RepoError::Storage {
                repo: self.name.clone(),
                action: "refusing to copy",
                path: from,
                detail: format!(
                    "its SHA-256 is {sha} ({size} bytes) but the manifest says {want} ({want_size} bytes): the source object is damaged"
                ),
                retryable: false,
            });
        }
        writer
            .close()
            .await
            .map_err(|e| dest.storage_err("cannot finish", &to, e))?;
        Ok((sha, size))
    }

    /// `<repo>:writable`: writes a small object, reads it back, removes it.
    pub async fn probe_write(&self, host: &str) -> Result<(), RepoError> {
        let path = self.join(&[
            ".vigil-probe",
            &format!("{host}-{}", uuid::Uuid::new_v4().simple()),
        ]);
        let body = format!("vigil write probe {}", chrono::Utc::now().to_rfc3339());
        self.op()
            .write(&path, body.clone())
            .await
            .map_err(|e| self.storage_err("cannot write", &path, e))?;
        let read = self.op().read(&path).await.map(|b| b.to_vec());
        let removed = self.op().delete(&path).await;
        match read {
            Ok(bytes) if bytes == body.as_bytes() => {}
            Ok(_) => {
                return Err(RepoError::Storage {
                    repo: self.name.clone(),
                    action: "read back different bytes from",
                    path,
                    detail: "the probe object changed between write and read".into(),
                    retryable: false,
                });
            }
            Err(e) => return Err(self.storage_err("cannot read back", &path, e)),
        }
        removed.map_err(|e| self.storage_err("cannot delete", &path, e))
    }

    /// A cheap round trip for the `<repo>:reachable` check.
    pub async fn probe(&self) -> Result<(), RepoError> {
        let path = format!("{}/", self.prefix);
        let path = if self.prefix.is_empty() {
            "/".to_owned()
        } else {
            path
        };
        match self.op().list_with(&path).limit(1).await {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.storage_err("cannot list", &path, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::manifest::tests::sample;

    fn fs_repo(root: &std::path::Path) -> Repository {
        let config: RepositoryConfig = toml::from_str(&format!(
            "scheme = \"fs\"\noptions = {{ root = \"{}\" }}\n",
            root.display()
        ))
        .unwrap();
        Repository::open("local", &config).unwrap()
    }

    /// A committed backup of `sample()`, finished just now.
    async fn committed(repo: &Repository) -> Manifest {
        let mut m = sample();
        m.finished_at = chrono::Utc::now();
        m.started_at = m.finished_at - chrono::Duration::seconds(5);
        let data = repo.object_path(&m.job, &m.backup_id, &m.objects[0].name);
        repo.op().write(&data, "data").await.unwrap();
        repo.commit_manifest(&m).await.unwrap();
        m
    }

    #[tokio::test]
    async fn a_planned_deletion_is_skipped_when_the_manifest_changed() {
        let dir = tempfile::tempdir().unwrap();
        let repo = fs_repo(dir.path());
        let planned = committed(&repo).await;
        let backup = dir.path().join("orders/backups").join(&planned.backup_id);
        let mut changed = planned.clone();
        changed.objects[0].stored_bytes += 1;
        std::fs::write(backup.join(MANIFEST), changed.encode()).unwrap();

        let outcome = repo
            .delete_planned("orders", &planned.backup_id, &planned)
            .await
            .unwrap();
        assert!(matches!(outcome, Deletion::Skipped(ref why) if why.contains("changed")));
        assert!(backup.join(MANIFEST).exists() && backup.join("orders.dump.zst").exists());

        let outcome = repo
            .delete_planned("orders", &planned.backup_id, &changed)
            .await
            .unwrap();
        assert_eq!(outcome, Deletion::Deleted);
        assert!(!backup.join(MANIFEST).exists());
        assert!(!backup.join("orders.dump.zst").exists());
    }

    #[tokio::test]
    async fn a_manifest_that_contradicts_its_place_is_listed_as_damaged() {
        let dir = tempfile::tempdir().unwrap();
        let repo = fs_repo(dir.path());
        let good = committed(&repo).await;
        let mut other = good.clone();
        other.backup_id = "20261123T073245Z".into();
        let path = dir.path().join("orders/backups").join(&other.backup_id);
        std::fs::create_dir_all(&path).unwrap();
        // Claims the first backup's id from another directory.
        std::fs::write(path.join(MANIFEST), good.encode()).unwrap();

        let listing = repo.list("orders").await.unwrap();
        assert_eq!(listing.backups, vec![good.clone()]);
        assert_eq!(listing.damaged.len(), 1);
        assert_eq!(listing.damaged[0].0, other.backup_id);
        assert!(
            listing.damaged[0].1.contains("backupId"),
            "{:?}",
            listing.damaged
        );
    }
}
