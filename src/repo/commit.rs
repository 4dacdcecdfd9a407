//! The manifests' protocol: `manifest.json` is the commit point (written
//! create-only, last), read back with its place checked, and removed first
//! when a backup is deleted; pins beside them.

use opendal::ErrorKind;

use super::store::Repository;
use super::{MANIFEST, RepoError};
use crate::core::manifest::Manifest;

/// What [`Repository::delete_planned`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deletion {
    Deleted,
    /// Left alone: the manifest no longer matches the plan (why).
    Skipped(String),
}

impl Repository {
    /// The commit point (see [`Self::write_manifest`]), then its entry in
    /// the job's listing index, best effort (callers hold the job's lock).
    pub async fn commit_manifest(&self, manifest: &Manifest) -> Result<(), RepoError> {
        self.write_manifest(manifest).await?;
        self.index_committed(manifest).await;
        Ok(())
    }

    /// `manifest.json`, create-only, in one write; on fs also the directory
    /// entry is made durable.
    async fn write_manifest(&self, manifest: &Manifest) -> Result<(), RepoError> {
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
                    backup_id: manifest.backup_id.to_string(),
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
                        backup_id: manifest.backup_id.to_string(),
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
                    backup_id: manifest.backup_id.to_string(),
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
        let bad = |e: crate::core::manifest::ManifestError| RepoError::BadManifest {
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

    /// Removes everything under a backup directory (garbage collection).
    pub async fn delete_leftovers(&self, job: &str, backup_id: &str) -> Result<(), RepoError> {
        let dir = self.backup_dir(job, backup_id);
        self.op()
            .delete_with(&dir)
            .recursive(true)
            .await
            .map_err(|e| self.storage_err("cannot delete", &dir, e))
    }
}
