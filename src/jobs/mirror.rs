//! `kind = "mirror"`: copies a repository to another. Objects missing or
//! different at the destination are streamed across and verified by
//! SHA-256 against their manifest (or, for other objects, by reading the
//! copy back) before they count; a backup's manifest is copied only after
//! all its data, so the destination never lists a backup it cannot restore.

use std::collections::{BTreeMap, BTreeSet};

use chrono::Utc;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::report::{Event, Fact, Outcome, Reporter, Run, RunKind, Sinks, Status};
use super::{JobContext, Trigger, lock};
use crate::core::manifest::Manifest;
use crate::repo::{MANIFEST, RepoError, Repository};

/// What one mirror run did.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct MirrorReport {
    pub copied: u64,
    pub copied_bytes: u64,
    pub skipped: u64,
    pub skipped_bytes: u64,
    /// `(object, why)`: refused (damaged at the source) or failed copies.
    pub failed: Vec<(String, String)>,
    /// Backups whose manifest was copied in this run.
    pub backups_completed: u64,
    pub deleted: u64,
}

/// `<job>/backups/<id>/<name>` → `(job/backups/id, name)`.
fn split_backup(relative: &str) -> Option<(&str, &str)> {
    let (dir, name) = relative.rsplit_once('/')?;
    let mut segments = dir.split('/');
    let (_job, backups, _id) = (segments.next()?, segments.next()?, segments.next()?);
    (backups == "backups" && segments.next().is_none()).then_some((dir, name))
}

/// `<job>/backups/<id>` → `(job, id)`.
fn backup_place(dir: &str) -> (&str, &str) {
    let job = dir.split('/').next().unwrap_or_default();
    let id = dir.rsplit('/').next().unwrap_or_default();
    (job, id)
}

/// One mirror pass from `source` to `dest`.
pub async fn mirror(
    source: &Repository,
    dest: &Repository,
    delete_extraneous: bool,
    cancel: &CancellationToken,
) -> Result<MirrorReport, RepoError> {
    let source_objects = source.list_objects().await?;
    let dest_objects: BTreeMap<String, u64> = dest.list_objects().await?.into_iter().collect();
    let committed: BTreeSet<&str> = source_objects
        .iter()
        .filter_map(|(rel, _)| {
            split_backup(rel)
                .filter(|(_, n)| *n == MANIFEST)
                .map(|(d, _)| d)
        })
        .collect();
    let mut report = MirrorReport::default();
    let mut backups: BTreeMap<&str, Vec<(&str, u64)>> = BTreeMap::new();
    let mut others = Vec::new();
    for (rel, size) in &source_objects {
        match split_backup(rel) {
            Some((dir, name)) if committed.contains(dir) => {
                if name != MANIFEST {
                    backups.entry(dir).or_default().push((rel, *size));
                }
            }
            // Uncommitted leftovers are garbage: never copied.
            Some(_) => {}
            None => others.push((rel.as_str(), *size)),
        }
    }
    for dir in &committed {
        if cancel.is_cancelled() {
            return Ok(report);
        }
        mirror_backup(source, dest, dir, &dest_objects, &mut report).await?;
    }
    for (rel, size) in others {
        if cancel.is_cancelled() {
            return Ok(report);
        }
        mirror_other(source, dest, rel, size, &dest_objects, &mut report).await;
    }
    if delete_extraneous {
        let wanted: BTreeSet<&str> = source_objects.iter().map(|(r, _)| r.as_str()).collect();
        // Manifests first: a backup stops being listed before its data goes.
        let mut extraneous: Vec<&String> = dest_objects
            .keys()
            .filter(|r| !wanted.contains(r.as_str()))
            .collect();
        extraneous.sort_by_key(|r| (!r.ends_with(MANIFEST), (*r).clone()));
        for rel in extraneous {
            dest.delete_object(rel).await?;
            report.deleted += 1;
        }
    }
    // Indexes are never copied (their stamps are the source's): each
    // destination job's own is brought up to date from its manifests.
    let jobs: BTreeSet<&str> = committed.iter().map(|d| backup_place(d).0).collect();
    for job in jobs {
        dest.refresh_index(job).await;
    }
    Ok(report)
}

async fn mirror_backup(
    source: &Repository,
    dest: &Repository,
    dir: &str,
    dest_objects: &BTreeMap<String, u64>,
    report: &mut MirrorReport,
) -> Result<(), RepoError> {
    let manifest_rel = format!("{dir}/{MANIFEST}");
    let manifest_bytes = source.read_small(&manifest_rel).await?;
    // Checked against its place like any listing does: a damaged manifest
    // at the source is reported, never carried to the destination.
    let (job, id) = backup_place(dir);
    let checked = Manifest::decode(&manifest_bytes)
        .and_then(|m| m.check_place(job, id, Utc::now()).map(|()| m));
    let manifest = match checked {
        Ok(m) => m,
        Err(e) => {
            report.failed.push((
                manifest_rel,
                format!("damaged manifest at the source (not mirrored): {e}"),
            ));
            return Ok(());
        }
    };
    let mut complete = true;
    for object in &manifest.objects {
        let rel = format!("{dir}/{}", object.name);
        let expected = (object.sha256.as_str(), object.stored_bytes);
        if already_there(dest, &rel, expected, dest_objects).await {
            report.skipped += 1;
            report.skipped_bytes += object.stored_bytes;
            continue;
        }
        if dest_objects.contains_key(&rel) {
            // A different or partial copy: replaced (create-only services refuse to overwrite).
            let _ = dest.delete_object(&rel).await;
        }
        match source.copy_to(&rel, dest, Some(expected)).await {
            Ok((_, size)) => {
                report.copied += 1;
                report.copied_bytes += size;
            }
            Err(e) => {
                tracing::warn!(object = %rel, error = %e, "mirror: object not copied");
                report.failed.push((rel, e.to_string()));
                complete = false;
            }
        }
    }
    let manifest_there = dest_objects.contains_key(&manifest_rel)
        && dest.read_small(&manifest_rel).await.ok().as_deref() == Some(manifest_bytes.as_slice());
    if !complete {
        return Ok(());
    }
    if manifest_there {
        report.skipped += 1;
        report.skipped_bytes += manifest_bytes.len() as u64;
        return Ok(());
    }
    if dest_objects.contains_key(&manifest_rel) {
        let _ = dest.delete_object(&manifest_rel).await;
    }
    let size = manifest_bytes.len() as u64;
    dest.write_small(&manifest_rel, manifest_bytes).await?;
    report.copied += 1;
    report.copied_bytes += size;
    report.backups_completed += 1;
    Ok(())
}

/// Whether the destination already holds this exact object: the size must
/// match, and where objects are written in place (a crash can leave a
/// partial one of any size) so must the hash.
async fn already_there(
    dest: &Repository,
    rel: &str,
    (sha, size): (&str, u64),
    dest_objects: &BTreeMap<String, u64>,
) -> bool {
    if dest_objects.get(rel) != Some(&size) {
        return false;
    }
    if dest.guarantees.atomic_objects {
        return true;
    }
    dest.hash_object(rel)
        .await
        .is_ok_and(|(h, s)| h == sha && s == size)
}

/// Objects outside committed backups (pins): copied when missing or
/// different, the copy read back and compared.
async fn mirror_other(
    source: &Repository,
    dest: &Repository,
    rel: &str,
    size: u64,
    dest_objects: &BTreeMap<String, u64>,
    report: &mut MirrorReport,
) {
    if dest_objects.contains_key(rel) {
        // Only an object the destination has at this size is hashed on both sides.
        let same = dest_objects.get(rel) == Some(&size)
            && match (source.hash_object(rel).await, dest.hash_object(rel).await) {
                (Ok(a), Ok(b)) => a == b,
                (Err(e), _) => {
                    report.failed.push((rel.to_owned(), e.to_string()));
                    return;
                }
                _ => false,
            };
        if same {
            report.skipped += 1;
            report.skipped_bytes += size;
            return;
        }
        let _ = dest.delete_object(rel).await;
    }
    // The copy hashes the source on the way; the read-back must match it.
    let copied = source.copy_to(rel, dest, None).await;
    let verified = match copied {
        Ok(source_hash) => dest
            .hash_object(rel)
            .await
            .map_err(|e| e.to_string())
            .and_then(|h| {
                (h == source_hash)
                    .then_some(())
                    .ok_or_else(|| "the copy reads back different bytes".to_owned())
            }),
        Err(e) => Err(e.to_string()),
    };
    match verified {
        Ok(()) => {
            report.copied += 1;
            report.copied_bytes += size;
        }
        Err(e) => report.failed.push((rel.to_owned(), e)),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error("job `{0}` is running elsewhere (another vigil holds its lock); skipped")]
    Locked(String),
    #[error("job `{job}` has no `mirror_to`")]
    NoDestination { job: String },
    /// Another vigil took the lease over; `why` says how.
    #[error("{why}")]
    LeaseLost { job: String, why: String },
    #[error(transparent)]
    JobLock(#[from] super::lock::LockError),
    #[error("{failed} object(s) not mirrored, e.g. {first}")]
    Incomplete { failed: usize, first: String },
    #[error("cancelled (shutdown)")]
    Cancelled,
}

/// A scheduled (or CLI/API) mirror run: the job's lock, an execution row,
/// journal events.
pub async fn run(
    ctx: &JobContext,
    trigger: Trigger,
    cancel: &CancellationToken,
) -> Result<MirrorReport, MirrorError> {
    run_reported(ctx, trigger, cancel, &Sinks::new(ctx)).await
}

/// Like [`run`], its start and outcome going to `report` (a run skipped
/// because another vigil holds the lock reports nothing).
pub async fn run_reported(
    ctx: &JobContext,
    trigger: Trigger,
    cancel: &CancellationToken,
    report: &dyn Reporter,
) -> Result<MirrorReport, MirrorError> {
    let dest_name = ctx.mirror_to.as_ref().map(|d| d.name.clone());
    let run = Run {
        kind: RunKind::Mirror,
        trigger,
        repository: dest_name.clone().unwrap_or_default(),
        started: Some(Event::emit(
            "mirror.started",
            serde_json::json!({ "from": ctx.repo.name, "to": dest_name, "trigger": trigger.as_str() }),
        )),
    };
    let held = match take_lock(ctx, cancel).await {
        Ok(held) => held,
        Err(e @ MirrorError::Locked(_)) => return Err(e),
        Err(e) => {
            // Refused before it began: nothing to journal, nothing started.
            let message = ctx.redact(&e.to_string());
            report
                .finished(&run, &Outcome::failed(Status::Failed, message, None))
                .await;
            return Err(e);
        }
    };
    let (dest, held) = held;
    report.started(&run).await;
    let started = Utc::now();
    // The lock's token also fires when its lease is lost.
    let cancel = &held.cancel;
    let result = mirror(&ctx.repo, dest, ctx.job.delete_extraneous, cancel)
        .await
        .map_err(MirrorError::from)
        .and_then(|report| {
            if cancel.is_cancelled() {
                return Err(MirrorError::Cancelled);
            }
            match report.failed.first() {
                Some((object, why)) => Err(MirrorError::Incomplete {
                    failed: report.failed.len(),
                    first: format!("{object}: {why}"),
                }),
                None => Ok(report),
            }
        });
    // Stopped because another vigil took the lease over, not by a shutdown.
    let result = match (result, held.lost()) {
        (Err(_), Some(why)) => Err(MirrorError::LeaseLost {
            job: ctx.name.clone(),
            why,
        }),
        (result, _) => result,
    };
    report.finished(&run, &outcome(ctx, &result)).await;
    held.release().await;
    match &result {
        Ok(r) => {
            tracing::info!(job = %ctx.name, copied = r.copied, skipped = r.skipped, bytes = r.copied_bytes, seconds = (Utc::now() - started).num_milliseconds() as f64 / 1000.0, "mirror finished")
        }
        Err(e) => {
            tracing::warn!(job = %ctx.name, error = %ctx.redact(&e.to_string()), "mirror failed")
        }
    }
    result
}

/// The destination and the job's lock; `Locked` when another vigil has it.
async fn take_lock<'a>(
    ctx: &'a JobContext,
    cancel: &CancellationToken,
) -> Result<(&'a Repository, lock::JobLock), MirrorError> {
    let dest = ctx
        .mirror_to
        .as_ref()
        .ok_or_else(|| MirrorError::NoDestination {
            job: ctx.name.clone(),
        })?;
    match lock::take(ctx, cancel).await? {
        Some(held) => Ok((dest, held)),
        None => Err(MirrorError::Locked(ctx.name.clone())),
    }
}

/// A finished run, as every sink records it.
fn outcome(ctx: &JobContext, result: &Result<MirrorReport, MirrorError>) -> Outcome {
    match result {
        Ok(report) => {
            let json = serde_json::to_value(report).ok();
            let event = Event::emit("mirror.succeeded", json.clone().unwrap_or_default());
            Outcome {
                stored_bytes: Some(report.copied_bytes),
                details: json,
                ..Outcome::succeeded(Fact::Mirror(report.clone()), Some(event))
            }
        }
        Err(e) => {
            let message = ctx.redact(&e.to_string());
            let status = match e {
                MirrorError::Cancelled => Status::Aborted,
                _ => Status::Failed,
            };
            let event = Event::emit("mirror.failed", serde_json::json!({ "error": message }));
            Outcome::failed(status, message, Some(event))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backup_paths_are_recognised() {
        assert_eq!(
            split_backup("orders/backups/20261123T0700Z/orders.dump.zst"),
            Some(("orders/backups/20261123T0700Z", "orders.dump.zst"))
        );
        assert_eq!(split_backup("orders/pins/20261123T0700Z"), None);
        assert_eq!(split_backup("orders/backups/x/y/z"), None);
        assert_eq!(split_backup("manifest.json"), None);
        assert_eq!(
            backup_place("orders/backups/20261123T0700Z"),
            ("orders", "20261123T0700Z")
        );
    }
}
