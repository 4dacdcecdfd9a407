//! `vigil verify`: reads every object of the chosen backups back through
//! the download stream and checks its stored SHA-256; with the key (or in
//! a plaintext repository) it also decodes the object and reads its
//! content to the end; for physical jobs it checks the WAL chain from each
//! chosen backup to the newest archived segment. Nothing is written to
//! disk; the verdict is journaled (`verify.succeeded` / `verify.failed`).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::Serialize;
use thiserror::Error;
use tokio_util::sync::CancellationToken;

use super::context::KeyError;
use super::report::{Reporter, Sinks};
use super::{JobContext, Trigger};
use crate::core::backup_manifest::BackupFiles;
use crate::core::manifest::{Manifest, ObjectEntry};
use crate::core::proofs::object_key;
use crate::core::verification::Budget;
use crate::core::wal_chain::WalGap;
use crate::pipeline::download::{Download, DownloadError};
use crate::pipeline::pgtools::find_tool;
use crate::pipeline::verify::{Content, TarFiles, check_content, read_decoded};
use crate::repo::{Listing, RepoError};

pub use super::verify_select::stored_objects;

/// Which backups to read.
#[derive(Debug, Clone, Default)]
pub struct VerifyRequest {
    /// One backup by id; `None` with `all` false: the newest committed.
    pub backup: Option<String>,
    pub all: bool,
    /// Scheduled verification: the objects due, within this budget,
    /// planned from the job's verification record (`backup`/`all` unused).
    pub budget: Option<Budget>,
}

/// Why verification could not be carried out (as opposed to a bad object,
/// which is a finding in the [`VerifyReport`]).
#[derive(Debug, Error)]
pub enum VerifyError {
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("job `{job}` has no committed backups in repository `{repo}`: nothing to verify")]
    NoBackups { job: String, repo: String },
    #[error(
        "pg_restore not found: install the PostgreSQL client (apt-get install postgresql-client) to check dumps' contents"
    )]
    NoPgRestore,
    #[error("cancelled (shutdown)")]
    Cancelled,
    #[error(
        "the verification ran but its record {path} could not be read, so it was not updated: {source}"
    )]
    Record {
        path: String,
        #[source]
        source: RepoError,
    },
}

pub use crate::core::proofs::BadObject;

/// One backup's verdict.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupVerdict {
    pub backup_id: String,
    pub kind: String,
    /// Objects read.
    pub objects: usize,
    /// Stored bytes read.
    pub bytes_read: u64,
    pub bad: Vec<BadObject>,
    /// The names of the objects read (all of the backup's unless a
    /// scheduled run chose some).
    #[serde(skip)]
    pub read: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifyReport {
    pub job: String,
    /// Whether objects were decoded and their content read, or only their
    /// stored bytes hashed (an encrypted repository without its identity).
    pub content_checked: bool,
    pub backups: Vec<BackupVerdict>,
    pub wal_gaps: Vec<WalGap>,
    /// Physical jobs (`vigil verify`): the archived WAL the chosen
    /// backups' chains use, read back and checked by hash.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wal: Option<super::verify_wal::WalVerdict>,
    pub ok: bool,
}

impl VerifyReport {
    pub fn bad_objects(&self) -> impl Iterator<Item = &BadObject> {
        let wal = self.wal.iter().flat_map(|w| &w.bad);
        self.backups.iter().flat_map(|b| &b.bad).chain(wal)
    }

    /// Stored bytes read, the WAL's included.
    pub fn bytes_read(&self) -> u64 {
        let wal = self.wal.as_ref().map_or(0, |w| w.bytes_read);
        self.backups.iter().map(|b| b.bytes_read).sum::<u64>() + wal
    }

    /// Keys (`<backup id>/<object>`) of the backup objects that read good.
    pub fn good_objects(&self) -> Vec<String> {
        self.backups
            .iter()
            .flat_map(|b| {
                b.read
                    .iter()
                    .filter(|o| !b.bad.iter().any(|bad| &bad.object == *o))
                    .map(|o| object_key(&b.backup_id, o))
            })
            .collect()
    }
}

/// One verification, its outcome recorded in the journal, the catalog
/// and the job's verification record.
pub async fn run(
    ctx: &JobContext,
    request: &VerifyRequest,
    cancel: &CancellationToken,
) -> Result<VerifyReport, VerifyError> {
    run_reported(ctx, request, Trigger::Cli, cancel, &Sinks::new(ctx)).await
}

/// Like [`run`], its start and outcome going to `report`.
pub async fn run_reported(
    ctx: &JobContext,
    request: &VerifyRequest,
    trigger: Trigger,
    cancel: &CancellationToken,
    report: &dyn Reporter,
) -> Result<VerifyReport, VerifyError> {
    let run = super::verify_record::run_of(ctx, trigger);
    report.started(&run).await;
    let started_at = chrono::Utc::now();
    let result = inspect(ctx, request, cancel).await;
    let (result, outcome) = super::verify_record::settle(ctx, trigger, started_at, result).await;
    report.finished(&run, &outcome).await;
    result
}

/// Reads what `request` chooses; returns the report and the listing it
/// chose from (what the repository holds, for the record's upkeep).
async fn inspect(
    ctx: &JobContext,
    request: &VerifyRequest,
    cancel: &CancellationToken,
) -> Result<(VerifyReport, Listing), VerifyError> {
    let listing = ctx.repo.list(&ctx.name).await?;
    let (manifests, only) = super::verify_select::chosen(ctx, request, &listing).await?;
    // Without the identity the stored bytes are all that can be read.
    let identities = match &ctx.identity_file {
        Some(_) => Some(ctx.identities()?),
        None => None,
    };
    let mut backups = Vec::with_capacity(manifests.len());
    for manifest in &manifests {
        let reading = Reading {
            identities: identities.as_deref(),
            pg_restore: pg_restore(manifest, identities.is_some())?,
            only: only.as_ref(),
            cancel,
        };
        backups.push(verify_backup(ctx, manifest, &reading).await?);
    }
    let physical = ctx.job.kind == crate::config::JobKind::PostgresPhysical;
    let (wal_gaps, wal) = if !physical {
        (Vec::new(), None)
    } else if request.budget.is_some() {
        // Scheduled runs check the chains of every kept backup (a listing).
        (
            super::pitr::survey(ctx, &listing.backups).await?.gaps(),
            None,
        )
    } else {
        let survey = super::pitr::survey(ctx, &manifests).await?;
        let keys = identities.as_deref().unwrap_or_default();
        let wal =
            super::verify_wal::check(ctx, &survey, keys, identities.is_some(), cancel).await?;
        (survey.gaps(), Some(wal))
    };
    let content_checked = identities.is_some() || manifests.iter().all(|m| m.encryption.is_none());
    let mut report = VerifyReport {
        job: ctx.name.clone(),
        content_checked,
        backups,
        wal_gaps,
        wal,
        ok: false,
    };
    report.ok = report.wal_gaps.is_empty() && report.bad_objects().next().is_none();
    Ok((report, listing))
}

/// How one backup is read: with which keys (`None`: stored bytes only)
/// and which `pg_restore` (for dumps, when their content is checked).
struct Reading<'a> {
    identities: Option<&'a [age::x25519::Identity]>,
    pg_restore: Option<PathBuf>,
    /// Scheduled runs: the keys of the objects to read; `None`: all.
    only: Option<&'a BTreeSet<String>>,
    cancel: &'a CancellationToken,
}

impl Reading<'_> {
    fn wants(&self, manifest: &Manifest, object: &ObjectEntry) -> bool {
        self.only.is_none_or(|keys| {
            keys.contains(&object_key(manifest.backup_id.as_str(), &object.name))
        })
    }
}

/// The `pg_restore` that reads `manifest`'s dumps, when their content is
/// read: a dump's table of contents cannot be checked without it.
fn pg_restore(manifest: &Manifest, with_keys: bool) -> Result<Option<PathBuf>, VerifyError> {
    let decoded = with_keys || manifest.encryption.is_none();
    let dumps = manifest
        .objects
        .iter()
        .any(|o| o.format == "pg_dump-custom");
    if !(decoded && dumps) {
        return Ok(None);
    }
    find_tool("pg_restore")
        .map(Some)
        .ok_or(VerifyError::NoPgRestore)
}

async fn verify_backup(
    ctx: &JobContext,
    manifest: &Manifest,
    reading: &Reading<'_>,
) -> Result<BackupVerdict, VerifyError> {
    let (identities, cancel) = (reading.identities, reading.cancel);
    let read: Vec<&ObjectEntry> = manifest
        .objects
        .iter()
        .filter(|o| reading.wants(manifest, o))
        .collect();
    let mut verdict = BackupVerdict {
        backup_id: manifest.backup_id.to_string(),
        kind: manifest.kind.clone(),
        objects: read.len(),
        bytes_read: 0,
        bad: Vec::new(),
        read: read.iter().map(|o| o.name.clone()).collect(),
    };
    // Tars are checked against backup_manifest, read whenever one is.
    let needs_files = read.iter().any(|o| o.format == "tar");
    let keys = match (manifest.encryption.is_some(), identities) {
        (false, _) => Some(Vec::new()),
        (true, Some(ids)) => Some(ids.to_vec()),
        (true, None) => None,
    };
    let reader = Reader {
        ctx,
        manifest,
        keys,
        pg_restore: reading.pg_restore.clone(),
        cancel,
    };
    let wants_manifest = read.iter().any(|o| o.format == "backup_manifest");
    let files = if needs_files || wants_manifest {
        match reader.backup_files().await {
            Ok(files) => files,
            Err((object, e)) => {
                verdict
                    .bad
                    .extend(bad_object(ctx, manifest, object, e).await?);
                None
            }
        }
    } else {
        None
    };
    let matched = Arc::new(AtomicUsize::new(0));
    for object in read {
        // Read (or reported) above already.
        if reader.keys.is_some() && object.format == "backup_manifest" {
            if files.is_some() {
                verdict.bytes_read += object.stored_bytes;
            }
            continue;
        }
        let tar_files = files.as_ref().map(|files| TarFiles {
            files: files.clone(),
            prefix: tar_prefix(manifest, &object.name),
            matched: matched.clone(),
        });
        match reader.verify_object(object, tar_files).await {
            Ok(()) => verdict.bytes_read += object.stored_bytes,
            Err(e) => verdict
                .bad
                .extend(bad_object(ctx, manifest, object, e).await?),
        }
    }
    let listed = files.as_ref().map_or(0, |f| f.len());
    // Files in no tar can be told only when every tar was read.
    let whole = verdict.read.len() == manifest.objects.len();
    if verdict.bad.is_empty() && whole {
        verdict
            .bad
            .extend(unmatched(manifest, listed, matched.load(Ordering::Relaxed)));
    }
    Ok(verdict)
}

/// Files of backup_manifest that no tar held (`listed` of them, `matched`
/// found), charged to the backup_manifest object.
fn unmatched(manifest: &Manifest, listed: usize, matched: usize) -> Option<BadObject> {
    let missing = listed.checked_sub(matched).filter(|m| *m > 0)?;
    let object = manifest
        .objects
        .iter()
        .find(|o| o.format == "backup_manifest")?;
    Some(BadObject {
        backup_id: manifest.backup_id.to_string(),
        object: object.name.clone(),
        expected_sha256: None,
        found_sha256: None,
        error: format!("{missing} file(s) listed in backup_manifest are in no tar"),
    })
}

/// Reads a backup's objects: their content with `keys`, their stored
/// bytes only without.
struct Reader<'a> {
    ctx: &'a JobContext,
    manifest: &'a Manifest,
    keys: Option<Vec<age::x25519::Identity>>,
    pg_restore: Option<PathBuf>,
    cancel: &'a CancellationToken,
}

impl<'a> Reader<'a> {
    fn path(&self, object: &ObjectEntry) -> String {
        self.ctx
            .repo
            .object_path(&self.manifest.job, &self.manifest.backup_id, &object.name)
    }

    /// A physical backup's backup_manifest, read when content is checked.
    async fn backup_files(
        &self,
    ) -> Result<Option<Arc<BackupFiles>>, (&'a ObjectEntry, DownloadError)> {
        let manifest = self.manifest;
        let Some(object) = manifest
            .objects
            .iter()
            .find(|o| o.format == "backup_manifest")
        else {
            return Ok(None);
        };
        let Some(keys) = self.keys.clone() else {
            return Ok(None);
        };
        let path = self.path(object);
        let read = async {
            let download = Download::new(&self.ctx.repo, manifest, object, &path, keys)?;
            let bytes = read_decoded(&download, self.cancel).await?;
            let decode = |detail: String| DownloadError::Decode {
                object: path.clone(),
                detail,
            };
            crate::core::backup_manifest::check_manifest_checksum(&bytes)
                .map_err(|e| decode(e.to_string()))?;
            BackupFiles::parse(&bytes)
                .map_err(|e| decode(format!("not a PostgreSQL backup_manifest: {e}")))
        };
        read.await
            .map(|f| Some(Arc::new(f)))
            .map_err(|e| (object, e))
    }

    async fn verify_object(
        &self,
        object: &ObjectEntry,
        tar_files: Option<TarFiles>,
    ) -> Result<(), DownloadError> {
        let path = self.path(object);
        let keys = self.keys.clone().unwrap_or_default();
        let download = Download::new(&self.ctx.repo, self.manifest, object, &path, keys)?;
        if self.keys.is_none() {
            download.check_stored(self.cancel).await?;
            return Ok(());
        }
        let content = match object.format.as_str() {
            "pg_dump-custom" => match &self.pg_restore {
                Some(tool) => Content::DumpToc(tool.clone()),
                None => Content::Decoded,
            },
            "tar" => Content::Tar(tar_files),
            _ => Content::Decoded,
        };
        check_content(&download, &path, content, self.cancel).await?;
        Ok(())
    }
}

/// Where a physical backup's tar sits in the data directory: a
/// tablespace's under `pg_tblspc/OID/`, the base tar at the top.
fn tar_prefix(manifest: &Manifest, object: &str) -> String {
    manifest
        .physical
        .iter()
        .flat_map(|p| &p.tablespaces)
        .find(|t| t.object == object)
        .map_or_else(String::new, |t| format!("pg_tblspc/{}/", t.oid))
}

/// A failed read as a finding; an unreachable repository or a shutdown
/// stops the whole verification instead. Verification takes no job lock
/// (a long read must not hold backups up), so a prune may delete a backup
/// while it is read: prune deletes the manifest first, so a failed read
/// whose manifest is gone is that prune's doing, not damage (`None`).
async fn bad_object(
    ctx: &JobContext,
    manifest: &Manifest,
    object: &ObjectEntry,
    error: DownloadError,
) -> Result<Option<BadObject>, VerifyError> {
    let error = match error {
        DownloadError::Repo(e @ RepoError::Unreachable { .. }) => return Err(e.into()),
        DownloadError::Cancelled => return Err(VerifyError::Cancelled),
        other => other,
    };
    match ctx
        .repo
        .read_manifest(&ctx.name, manifest.backup_id.as_str())
        .await
    {
        Err(RepoError::NoSuchBackup { .. }) => {
            tracing::info!(job = %ctx.name, backup = %manifest.backup_id, "backup removed (pruned) while it was verified: not a finding");
            return Ok(None);
        }
        Err(e @ RepoError::Unreachable { .. }) => return Err(e.into()),
        _ => {}
    }
    let (expected, found, text) = match &error {
        DownloadError::HashMismatch {
            expected,
            actual,
            bytes,
            expected_bytes,
            ..
        } => (
            Some(expected.clone()),
            Some(actual.clone()),
            format!(
                "SHA-256 mismatch: expected {expected}, found {actual} ({bytes} bytes read, {expected_bytes} in the manifest): the stored object is damaged"
            ),
        ),
        e => (None, None, crate::core::redact::error_chain(e)),
    };
    Ok(Some(BadObject {
        backup_id: manifest.backup_id.to_string(),
        object: object.name.clone(),
        expected_sha256: expected,
        found_sha256: found,
        error: ctx.redact(&text),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::manifest::TablespaceFacts;

    fn physical() -> Manifest {
        let mut m = crate::core::manifest::tests::sample();
        let mut object = m.objects[0].clone();
        object.name = "backup_manifest.zst".into();
        object.format = "backup_manifest".into();
        m.objects.push(object);
        m
    }

    #[test]
    fn files_in_no_tar_are_charged_to_the_backup_manifest_object() {
        let m = physical();
        assert!(unmatched(&m, 10, 10).is_none());
        let bad = unmatched(&m, 10, 7).unwrap();
        assert_eq!(bad.object, "backup_manifest.zst");
        assert!(bad.error.starts_with("3 file(s)"), "{}", bad.error);
    }

    #[test]
    fn a_tablespace_tar_sits_under_pg_tblspc() {
        let mut m = physical();
        m.physical = Some(crate::core::manifest::PhysicalFacts {
            start_lsn: crate::core::wal::Lsn(0x2000028),
            stop_lsn: crate::core::wal::Lsn(0x2000100),
            timeline: 1,
            system_identifier: "7300000000000000000".into(),
            wal_segment_size: crate::core::wal::DEFAULT_SEGMENT_SIZE,
            label: String::new(),
            tablespaces: vec![TablespaceFacts {
                oid: 16385,
                location: "/srv/ts".into(),
                object: "16385.tar.zst".into(),
            }],
        });
        assert_eq!(tar_prefix(&m, "base.tar.zst"), "");
        assert_eq!(tar_prefix(&m, "16385.tar.zst"), "pg_tblspc/16385/");
    }
}
