//! A repository's connection: the opendal operator with its layers
//! (throttle, limits, timeouts, retries), what the service guarantees, how
//! a failed request is classified, and the streaming reads and writes the
//! pipelines use. The layout and listings are in [`super::layout`], the
//! manifests' commit protocol in [`super::commit`], mirroring in
//! [`super::copy`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;

use bytes::Bytes;
use futures::TryStreamExt;
use opendal::{ErrorKind, Operator};

use super::{RepoError, fs_tmp_dir};
use crate::config::RepositoryConfig;

#[derive(Clone, Debug)]
pub struct Repository {
    pub name: String,
    pub scheme: String,
    /// Shared by every clone, so a reload's rotated credentials
    /// ([`Repository::rekey`]) reach every holder at once.
    operator: Arc<ArcSwap<Operator>>,
    pub(super) prefix: String,
    /// For fs repositories: the root directory, for directory fsyncs.
    pub(super) fs_root: Option<PathBuf>,
    pub(super) part_size: usize,
    pub(super) max_parts: u64,
    /// With `max_upload_rate`: parts stay within the throttle's burst.
    pub(super) max_part_size: usize,
    pub guarantees: Guarantees,
    pub writable_interval: std::time::Duration,
    /// How long a job lease stays valid without renewal.
    pub lease_ttl: std::time::Duration,
    /// fs: temp files older than this belong to no live run.
    pub temp_grace: std::time::Duration,
    /// The service's `endpoint` option (userinfo masked), named in errors.
    endpoint: Option<String>,
}

/// A service's upload parts, for the upload pipeline's limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartLimits {
    /// First multipart part size (object stores); doubles as needed.
    pub part_size: usize,
    pub max_parts: u64,
    /// Whether the service uploads each write as one part.
    pub multipart: bool,
    /// Parts never grow beyond this (a bandwidth cap's burst).
    pub max_part_size: usize,
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
            super::fs_share::keep_group_access(Path::new(&root));
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
                .map(|e| crate::core::redact::redact_text(e, &[])),
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

    /// Classifies a failed request: unreachable, out of space, or other.
    pub fn storage_err(&self, action: &'static str, path: &str, e: opendal::Error) -> RepoError {
        if super::is_out_of_space(&e) {
            return RepoError::Full {
                repo: self.name.clone(),
                action,
                path: path.to_owned(),
                free: self.fs_root.as_deref().and_then(crate::fsinfo::available),
            };
        }
        if crate::core::reach::is_unreachable(&e) {
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

    /// The stored bytes of an object as a stream of chunks.
    pub async fn read_stream(
        &self,
        path: &str,
    ) -> Result<
        impl futures::Stream<Item = Result<Bytes, RepoError>> + Unpin + Send + 'static,
        RepoError,
    > {
        // A lazy reader (fs) finds the object missing only when it starts.
        let missing_or = |action: &'static str| {
            move |e: opendal::Error| match e.kind() {
                ErrorKind::NotFound => RepoError::Storage {
                    repo: self.name.clone(),
                    action: "missing object",
                    path: path.to_owned(),
                    detail: "not found (the backup is damaged)".into(),
                    retryable: false,
                },
                _ => self.storage_err(action, path, e),
            }
        };
        let reader = self
            .op()
            .reader_with(path)
            .chunk(1 << 20)
            .await
            .map_err(missing_or("cannot open"))?;
        let stream = reader
            .into_bytes_stream(..)
            .await
            .map_err(missing_or("cannot read"))?;
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
    pub(super) fn writes_are_parts(&self) -> bool {
        self.guarantees.multipart && !self.resumable_data_writes()
    }

    /// GCS: data objects are written create-only, which takes the resumable
    /// upload (its XML multipart API is not universally served); ids are
    /// fresh anyway.
    pub(super) fn resumable_data_writes(&self) -> bool {
        self.scheme == "gcs"
    }

    /// How uploads to this service go in parts: fs appends every chunk;
    /// object stores upload each write as one multipart part.
    pub fn part_limits(&self) -> PartLimits {
        PartLimits {
            part_size: self.part_size,
            max_parts: self.max_parts,
            multipart: self.writes_are_parts(),
            max_part_size: self.max_part_size,
        }
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
    use crate::core::manifest::Manifest;
    use crate::core::manifest::tests::sample;
    use crate::repo::{Deletion, MANIFEST};

    use crate::repo::fs_for_tests as fs_repo;

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
