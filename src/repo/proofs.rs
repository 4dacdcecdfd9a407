//! Each job's proof records, `<job>/proofs/verify.json` and
//! `<job>/proofs/drill.json` (see [`crate::core::proofs`]): small JSON
//! objects rewritten after every verification or drill. Each repository
//! keeps its own (what was read back is that repository's objects), so a
//! mirror never copies them. One object per kind, so a verification and
//! a drill finishing together never overwrite each other's record.

use opendal::ErrorKind;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::RepoError;
use super::store::Repository;
use crate::core::proofs::{DrillRecord, PROOFS_FORMAT, VerifyRecord};

/// The folder under `<job>/` holding the records.
pub const PROOFS_DIR: &str = "proofs";
const VERIFY: &str = "verify.json";
const DRILL: &str = "drill.json";

/// `<job>/proofs/...`: never mirrored.
pub(super) fn is_proof(relative: &str) -> bool {
    relative.split('/').nth(1) == Some(PROOFS_DIR)
}

/// What a record exposes to the generic read.
trait Versioned: DeserializeOwned + Serialize + Default {
    fn format_version(&self) -> u32;
}

impl Versioned for VerifyRecord {
    fn format_version(&self) -> u32 {
        self.format_version
    }
}

impl Versioned for DrillRecord {
    fn format_version(&self) -> u32 {
        self.format_version
    }
}

impl Repository {
    pub fn proof_path(&self, job: &str, name: &str) -> String {
        self.join(&[job, PROOFS_DIR, name])
    }

    /// The job's verification record; missing reads as empty.
    pub async fn read_verify_record(&self, job: &str) -> Result<VerifyRecord, RepoError> {
        self.read_record(&self.proof_path(job, VERIFY)).await
    }

    pub async fn write_verify_record(
        &self,
        job: &str,
        record: &VerifyRecord,
    ) -> Result<(), RepoError> {
        self.write_record(&self.proof_path(job, VERIFY), record)
            .await
    }

    /// The job's drill record; missing reads as empty.
    pub async fn read_drill_record(&self, job: &str) -> Result<DrillRecord, RepoError> {
        self.read_record(&self.proof_path(job, DRILL)).await
    }

    pub async fn write_drill_record(
        &self,
        job: &str,
        record: &DrillRecord,
    ) -> Result<(), RepoError> {
        self.write_record(&self.proof_path(job, DRILL), record)
            .await
    }

    /// A missing record or one in a newer format reads as empty (this
    /// binary cannot tell what it says); a corrupt one is an error naming it.
    async fn read_record<R: Versioned>(&self, path: &str) -> Result<R, RepoError> {
        let bytes = match self.op().read(path).await {
            Ok(b) => b.to_bytes(),
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(R::default()),
            Err(e) => return Err(self.storage_err("cannot read", path, e)),
        };
        let record: R = serde_json::from_slice(&bytes).map_err(|e| RepoError::BadManifest {
            repo: self.name.clone(),
            path: path.to_owned(),
            detail: format!("not a proof record ({e}); delete it to start the record afresh"),
        })?;
        if record.format_version() > PROOFS_FORMAT {
            return Ok(R::default());
        }
        Ok(record)
    }

    async fn write_record<R: Versioned>(&self, path: &str, record: &R) -> Result<(), RepoError> {
        let bytes = serde_json::to_vec_pretty(record).map_err(|e| RepoError::BadManifest {
            repo: self.name.clone(),
            path: path.to_owned(),
            detail: format!("cannot encode the record: {e}"),
        })?;
        self.op()
            .write(path, bytes)
            .await
            .map(|_| ())
            .map_err(|e| self.storage_err("cannot write", path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::proofs::DrillRun;

    #[tokio::test]
    async fn records_round_trip_and_start_empty() {
        let dir = tempfile::tempdir().unwrap();
        let repo = super::super::fs_for_tests(dir.path());
        assert_eq!(
            repo.read_verify_record("orders").await.unwrap(),
            VerifyRecord::default()
        );
        let mut drill = DrillRecord::default();
        let now = chrono::Utc::now();
        drill.last_run = Some(DrillRun {
            started_at: now,
            finished_at: now,
            trigger: "manual".into(),
            ok: true,
            backup_id: Some("20261127T030000Z".into()),
            recovery_target: None,
            rto_seconds: Some(12.5),
            failed_query: None,
            error: None,
        });
        repo.write_drill_record("orders", &drill).await.unwrap();
        assert_eq!(repo.read_drill_record("orders").await.unwrap(), drill);
        assert!(is_proof("orders/proofs/drill.json"));
        assert!(!is_proof("orders/backups/x/manifest.json"));
    }

    #[tokio::test]
    async fn a_corrupt_record_is_named_and_a_newer_one_reads_as_empty() {
        let dir = tempfile::tempdir().unwrap();
        let repo = super::super::fs_for_tests(dir.path());
        let path = repo.proof_path("orders", VERIFY);
        repo.op().write(&path, "{not json").await.unwrap();
        let e = repo.read_verify_record("orders").await.unwrap_err();
        assert!(e.to_string().contains("proofs/verify.json"), "{e}");
        repo.op()
            .write(&path, "{\"formatVersion\": 99, \"bad\": []}")
            .await
            .unwrap();
        assert_eq!(
            repo.read_verify_record("orders").await.unwrap(),
            VerifyRecord::default()
        );
    }
}
