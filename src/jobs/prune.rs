//! One prune run: plan over the repository's committed backups, log the
//! plan, then delete what it forgets (manifest first, then data), recording
//! every deletion in `cleanup_history`.

use chrono::Utc;
use chrono_tz::Tz;
use std::str::FromStr;
use thiserror::Error;

use super::executions::StepError;
use super::prune_wal::deletes;
use super::report::{Event, Fact, Outcome, Reporter, Run, RunKind, Sinks, Status};
use super::{JobContext, Trigger, lock};
use crate::core::retention::{Candidate, JobFacts, LastRun, Plan, plan};
use crate::repo::{Deletion, RepoError, TempCollected};

/// The catalog and the repository could not be compared.
#[derive(Debug, Error)]
pub enum CrossCheckError {
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error(transparent)]
    Catalog(#[from] StepError),
}

#[derive(Debug, Error)]
pub enum PruneError {
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error("job `{0}` is running elsewhere (another vigil holds its lock); prune skipped")]
    Locked(String),
    #[error(transparent)]
    Lock(#[from] lock::LockError),
    #[error("plan refused: {0}")]
    Refused(String),
    #[error("prune refused: {0}")]
    Journal(#[from] crate::journal::JournalError),
}

/// The plan as journalled: what goes and why, and how much stays.
fn plan_event(plan: &Plan, trigger: Trigger, dry_run: bool) -> serde_json::Value {
    let forget: Vec<_> = plan
        .forget()
        .map(|d| serde_json::json!({ "backup_id": d.id, "stored_bytes": d.stored_bytes, "reasons": d.reasons }))
        .collect();
    serde_json::json!({
        "trigger": trigger.as_str(),
        "dry_run": dry_run,
        "keep": plan.decisions.iter().filter(|d| d.keep).count(),
        "forget": forget,
        "refused": plan.refused,
        "wal": plan.wal,
    })
}

#[derive(Debug, Clone)]
pub struct PruneOutcome {
    pub plan: Plan,
    /// `(backup id, freed bytes)` actually deleted.
    pub deleted: Vec<(String, u64)>,
    /// Uncommitted leftovers removed (older than `orphan_grace`).
    pub collected: Vec<String>,
    /// Leftovers still inside their grace period.
    pub young_leftovers: Vec<String>,
    /// `(backup id, why)`: planned for deletion but left alone because the
    /// manifest changed between planning and deleting.
    pub skipped: Vec<(String, String)>,
    /// `(directory, why)`: damaged manifests seen while planning (never pruned).
    pub damaged: Vec<(String, String)>,
    /// The repository's temp files older than `temp_grace` (a killed
    /// run's partial uploads): removed, or on a dry run, found.
    pub temp: TempCollected,
    pub dry_run: bool,
    /// WAL files deleted (physical jobs).
    pub wal_deleted: Vec<String>,
}

async fn plan_for(
    ctx: &JobContext,
    listing: &crate::repo::Listing,
    facts: JobFacts,
) -> Result<Plan, PruneError> {
    let pins = ctx.repo.pins(&ctx.name).await?;
    let candidates: Vec<Candidate> = listing
        .backups
        .iter()
        .map(|m| Candidate {
            id: m.backup_id.clone(),
            finished_at: m.finished_at,
            stored_bytes: m.stored_bytes(),
            pinned: pins.contains(m.backup_id.as_str()),
        })
        .collect();
    let tz = Tz::from_str(&ctx.job.timezone).unwrap_or(Tz::UTC);
    let mut plan = plan(&ctx.job.retention, &candidates, tz, facts, Utc::now());
    plan.wal = super::prune_wal::plan(ctx, listing, &plan).await?;
    Ok(plan)
}

/// Whether the job's most recent backup run failed, from the catalog.
pub async fn last_run_failed(ctx: &JobContext) -> Result<bool, StepError> {
    let client = ctx.catalog.get().await.map_err(StepError::Pool)?;
    let row = client
        .query_opt(
            "SELECT status FROM vigil.executions WHERE job = $1 AND kind = 'backup' \
             AND status IN ('succeeded', 'failed') ORDER BY id DESC LIMIT 1",
            &[&ctx.name],
        )
        .await?;
    Ok(row.is_some_and(|r| r.get::<_, String>(0) == "failed"))
}

/// What a prune would collect from the repository's temp files.
async fn stale_temp(ctx: &JobContext) -> Result<TempCollected, RepoError> {
    Ok(ctx
        .repo
        .temp_usage()
        .await?
        .map(|u| TempCollected {
            files: u.stale_files,
            bytes: u.stale_bytes,
        })
        .unwrap_or_default())
}

/// Plans and (unless `dry_run`) applies, under the job's lock.
pub async fn run(
    ctx: &JobContext,
    trigger: Trigger,
    dry_run: bool,
) -> Result<PruneOutcome, PruneError> {
    run_reported(ctx, trigger, dry_run, &Sinks::new(ctx)).await
}

/// Like [`run`], its start and outcome going to `report`. A dry run
/// reports nothing (its plan is journalled as `prune.planned`); a run
/// that deletes reports its start once the plan is on disk.
pub async fn run_reported(
    ctx: &JobContext,
    trigger: Trigger,
    dry_run: bool,
    report: &dyn Reporter,
) -> Result<PruneOutcome, PruneError> {
    let facts = JobFacts {
        last_run: match last_run_failed(ctx).await {
            Ok(true) => LastRun::Failed,
            Ok(false) => LastRun::Succeeded,
            Err(_) => LastRun::Unknown,
        },
    };
    if dry_run {
        let listing = ctx.repo.list(&ctx.name).await?;
        let plan = plan_for(ctx, &listing, facts).await?;
        ctx.journal
            .emit(ctx.event("prune.planned", plan_event(&plan, trigger, true)));
        return Ok(PruneOutcome {
            plan,
            deleted: vec![],
            collected: vec![],
            young_leftovers: vec![],
            skipped: vec![],
            damaged: listing.damaged,
            temp: stale_temp(ctx).await?,
            dry_run,
            wal_deleted: vec![],
        });
    }
    let run = Run {
        kind: RunKind::Prune,
        trigger,
        repository: ctx.repo.name.clone(),
        started: None,
    };
    // Prune deletes between quick steps and takes no cancel token of its own.
    let held = match lock::take(ctx, &tokio_util::sync::CancellationToken::new()).await {
        Ok(Some(held)) => Ok(held),
        Ok(None) => Err(PruneError::Locked(ctx.name.clone())),
        Err(e) => Err(e.into()),
    };
    let (result, deleted_event, freed) = match held {
        Ok(held) => {
            let applied = apply(ctx, &run, facts, report).await;
            held.release().await;
            applied
        }
        Err(e) => (Err(e), None, 0),
    };
    report
        .finished(&run, &outcome(ctx, &result, deleted_event, freed))
        .await;
    result
}

/// What one applied prune did: its result, its `prune.deleted` record (when
/// anything was deleted or failed) and the bytes it freed.
type Applied = (Result<PruneOutcome, PruneError>, Option<Event>, u64);

/// A finished prune, as every sink records it.
fn outcome(
    ctx: &JobContext,
    result: &Result<PruneOutcome, PruneError>,
    event: Option<Event>,
    freed: u64,
) -> Outcome {
    let base = match result {
        Ok(done) => Outcome::succeeded(Fact::Prune(Box::new(done.clone())), event),
        Err(e) => Outcome::failed(Status::Failed, ctx.redact(&e.to_string()), event),
    };
    Outcome {
        stored_bytes: Some(freed),
        ..base
    }
}

async fn apply(ctx: &JobContext, run: &Run, facts: JobFacts, report: &dyn Reporter) -> Applied {
    let (listing, plan) = match plan_locked(ctx, run.trigger, facts).await {
        Ok(planned) => planned,
        Err(refusal) => return (Err(refusal.error), refusal.event, 0),
    };
    let execution = report.started(run).await;
    let mut done = Deleted::default();
    let mut failure = delete_forgotten(ctx, &listing, &plan, execution, &mut done)
        .await
        .err();
    if !done.deleted.is_empty() {
        // Still under the job's lock: the index drops what was deleted.
        let ids: Vec<&str> = done.deleted.iter().map(|(id, _)| id.as_str()).collect();
        ctx.repo.index_forget(&ctx.name, &ids).await;
    }
    if failure.is_none() {
        failure = collect_leftovers(ctx, &listing, execution, &mut done)
            .await
            .err();
    }
    // The repository's temp files: shared by its jobs, so any job's prune
    // collects them; a live run's file is younger than temp_grace.
    let mut temp = TempCollected::default();
    if failure.is_none() {
        match ctx.repo.collect_temp().await {
            Ok(collected) => {
                if collected.files > 0 {
                    tracing::info!(job = %ctx.name, repository = %ctx.repo.name, files = collected.files, bytes = collected.bytes, "stale temp files collected");
                }
                temp = collected;
            }
            Err(e) => failure = Some(e),
        }
    }
    let freed: u64 = done.deleted.iter().map(|(_, b)| b).sum();
    let event = deleted_event(&done, &temp, freed, failure.as_ref());
    let result = match failure {
        Some(e) => Err(e.into()),
        None => Ok(PruneOutcome {
            plan,
            deleted: done.deleted,
            collected: done.collected,
            young_leftovers: done.young_leftovers,
            skipped: done.skipped,
            damaged: listing.damaged,
            temp,
            dry_run: false,
            wal_deleted: done.wal,
        }),
    };
    (result, event, freed)
}

/// A prune that stopped before deleting anything, with the record of the
/// temp files a refused plan still collected.
struct Refusal {
    error: PruneError,
    event: Option<Event>,
}

impl From<RepoError> for Refusal {
    fn from(e: RepoError) -> Self {
        Refusal {
            error: e.into(),
            event: None,
        }
    }
}

impl From<crate::journal::JournalError> for Refusal {
    fn from(e: crate::journal::JournalError) -> Self {
        Refusal {
            error: e.into(),
            event: None,
        }
    }
}

/// Lists and plans under the lock; a plan that deletes is on disk (the
/// journal) before it returns. A refused plan still collects temp files.
async fn plan_locked(
    ctx: &JobContext,
    trigger: Trigger,
    facts: JobFacts,
) -> Result<(crate::repo::Listing, Plan), Refusal> {
    let listing = ctx.repo.list(&ctx.name).await?;
    let plan = plan_for(ctx, &listing, facts)
        .await
        .map_err(|error| Refusal { error, event: None })?;
    for d in &plan.decisions {
        tracing::info!(job = %ctx.name, backup = %d.id, keep = d.keep, reasons = %d.reasons.join(", "), "retention plan");
    }
    if let Some(why) = &plan.refused {
        tracing::warn!(job = %ctx.name, reason = %why, "prune refused");
        ctx.journal
            .emit(ctx.event("prune.planned", plan_event(&plan, trigger, false)));
        // Temp files are no backup: a refused plan still collects them (a
        // month of failing runs must not fill the disk with partial uploads).
        let temp = ctx.repo.collect_temp().await?;
        if temp.files > 0 {
            tracing::info!(job = %ctx.name, repository = %ctx.repo.name, files = temp.files, bytes = temp.bytes, "stale temp files collected");
        }
        return Err(Refusal {
            error: PruneError::Refused(why.clone()),
            event: deleted_event(&Deleted::default(), &temp, 0, None),
        });
    }
    if plan.forget().next().is_some() || !listing.uncommitted.is_empty() || deletes(&plan) {
        // Fail closed: nothing is deleted unless the plan is on disk first.
        ctx.journal
            .commit(ctx.event("prune.planned", plan_event(&plan, trigger, false)))
            .await?;
    }
    Ok((listing, plan))
}

/// What a prune removed so far.
#[derive(Default)]
struct Deleted {
    /// `(backup id, freed bytes)`.
    deleted: Vec<(String, u64)>,
    collected: Vec<String>,
    young_leftovers: Vec<String>,
    skipped: Vec<(String, String)>,
    wal: Vec<String>,
}

/// Deletes the backups the plan forgets (each re-read first), then WAL.
async fn delete_forgotten(
    ctx: &JobContext,
    listing: &crate::repo::Listing,
    plan: &Plan,
    execution: Option<i64>,
    done: &mut Deleted,
) -> Result<(), RepoError> {
    for d in plan.forget() {
        // The listing only holds manifests whose id is their directory, so
        // the plan's id names the directory; the deletion re-reads it first.
        let Some(planned) = listing.backups.iter().find(|m| m.backup_id == d.id) else {
            continue;
        };
        match ctx.repo.delete_planned(&ctx.name, &d.id, planned).await? {
            Deletion::Skipped(why) => {
                tracing::warn!(job = %ctx.name, backup = %d.id, reason = %why, "not pruned: the backup changed since the plan; the next prune plans again");
                done.skipped.push((d.id.to_string(), why));
            }
            Deletion::Deleted => {
                tracing::info!(job = %ctx.name, backup = %d.id, freed_bytes = d.stored_bytes, "backup pruned");
                record(
                    ctx,
                    execution,
                    &d.id,
                    d.stored_bytes,
                    "forgotten by the retention policy",
                )
                .await;
                done.deleted.push((d.id.to_string(), d.stored_bytes));
            }
        }
    }
    // After the manifests: a kept backup never loses its WAL first.
    super::prune_wal::delete(ctx, plan, &mut done.wal).await
}

/// Garbage: directories without a manifest. We hold the job's lock, so
/// no backup of this job is being written by any replica; the grace
/// period covers clock skew and crashed writers alike.
async fn collect_leftovers(
    ctx: &JobContext,
    listing: &crate::repo::Listing,
    execution: Option<i64>,
    done: &mut Deleted,
) -> Result<(), RepoError> {
    let grace =
        chrono::Duration::from_std(ctx.job.retention.orphan_grace).unwrap_or(chrono::Duration::MAX);
    for id in &listing.uncommitted {
        let written = ctx.repo.last_written(&ctx.name, id).await?;
        if written.is_some_and(|t| Utc::now() - t < grace) {
            done.young_leftovers.push(id.clone());
            continue;
        }
        ctx.repo.delete_leftovers(&ctx.name, id).await?;
        tracing::info!(job = %ctx.name, leftover = %id, "uncommitted leftover collected");
        record(
            ctx,
            execution,
            id,
            0,
            "uncommitted leftover (no manifest) older than orphan_grace",
        )
        .await;
        done.collected.push(id.clone());
    }
    Ok(())
}

/// `prune.deleted`, when anything was removed, skipped or failed. What was
/// deleted is recorded whatever the journal's state: held until it can be
/// written, synced then.
fn deleted_event(
    done: &Deleted,
    temp: &TempCollected,
    freed: u64,
    failure: Option<&RepoError>,
) -> Option<Event> {
    let quiet = done.deleted.is_empty()
        && done.collected.is_empty()
        && done.skipped.is_empty()
        && done.wal.is_empty()
        && temp.files == 0
        && failure.is_none();
    if quiet {
        return None;
    }
    let ids: Vec<&str> = done.deleted.iter().map(|(id, _)| id.as_str()).collect();
    let message = failure.map(|e| e.to_string());
    Some(Event::record(
        "prune.deleted",
        serde_json::json!({ "deleted": ids, "collected": done.collected, "skipped": done.skipped, "freed_bytes": freed, "wal_deleted": done.wal,
            "temp_files": temp.files, "temp_bytes": temp.bytes, "error": message }),
    ))
}

async fn record(
    ctx: &JobContext,
    execution: Option<i64>,
    backup_id: &str,
    freed: u64,
    reason: &str,
) {
    if ctx.catalog.is_closed() {
        return;
    }
    let result = async {
        let client = ctx.catalog.get().await.map_err(|e| crate::catalog::describe(&e))?;
        client
            .execute(
                "INSERT INTO vigil.cleanup_history (execution_id, job, repository, backup_id, action, reasons, freed_bytes) \
                 VALUES ($1, $2, $3, $4, 'delete', jsonb_build_array($6::text), $5)",
                &[&execution, &ctx.name, &ctx.repo.name, &backup_id, &(freed as i64), &reason],
            )
            .await
            .map_err(|e| e.to_string())
    }
    .await;
    if let Err(e) = result {
        tracing::warn!(job = %ctx.name, backup = backup_id, error = %e, "cannot record the deletion in cleanup_history");
    }
}

/// Compares the catalog's record of committed backups with the repository:
/// `(recorded but missing from the repository, in the repository but
/// unknown to the catalog)`. Pruned backups count as gone on both sides.
/// `known` is the repository's backup ids when the caller already has them
/// (after a prune); otherwise the repository is listed.
pub async fn cross_check(
    ctx: &JobContext,
    known: Option<std::collections::BTreeSet<String>>,
) -> Result<(Vec<String>, Vec<String>), CrossCheckError> {
    let repository = match known {
        Some(ids) => ids,
        None => {
            let listing = ctx.repo.list(&ctx.name).await?;
            listing
                .backups
                .into_iter()
                .map(|m| m.backup_id.into())
                .collect()
        }
    };
    let client = ctx.catalog.get().await.map_err(StepError::Pool)?;
    let rows = client
        .query(
            "SELECT backup_id FROM vigil.executions e WHERE job = $1 AND kind = 'backup' AND status = 'succeeded' \
             AND backup_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM vigil.cleanup_history c \
             WHERE c.job = e.job AND c.backup_id = e.backup_id AND c.action = 'delete')",
            &[&ctx.name],
        )
        .await
        .map_err(StepError::from)?;
    let catalog: std::collections::BTreeSet<String> = rows.iter().map(|r| r.get(0)).collect();
    Ok((
        catalog.difference(&repository).cloned().collect(),
        repository.difference(&catalog).cloned().collect(),
    ))
}
