//! One prune run: plan over the repository's committed backups, log the
//! plan, then delete what it forgets (manifest first, then data), recording
//! every deletion in `cleanup_history`.

use chrono::Utc;
use chrono_tz::Tz;
use std::str::FromStr;
use thiserror::Error;

use super::executions::{self, Finish};
use super::{JobContext, Trigger, lock};
use crate::core::retention::{Candidate, JobFacts, LastRun, Plan, plan};
use crate::repo::{Deletion, RepoError, TempCollected};

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
    Ok(plan(&ctx.job.retention, &candidates, tz, facts, Utc::now()))
}

/// Whether the job's most recent backup run failed, from the catalog.
pub async fn last_run_failed(ctx: &JobContext) -> Result<bool, String> {
    let client = ctx
        .catalog
        .get()
        .await
        .map_err(|e| crate::catalog::describe(&e))?;
    let row = client
        .query_opt(
            "SELECT status FROM vigil.executions WHERE job = $1 AND kind = 'backup' \
             AND status IN ('succeeded', 'failed') ORDER BY id DESC LIMIT 1",
            &[&ctx.name],
        )
        .await
        .map_err(|e| crate::core::redact::error_chain(&e))?;
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
        });
    }
    // Prune deletes between quick steps and takes no cancel token of its own.
    let held = lock::take(ctx, &tokio_util::sync::CancellationToken::new()).await?;
    let Some(held) = held else {
        return Err(PruneError::Locked(ctx.name.clone()));
    };
    let result = apply(ctx, trigger, facts).await;
    held.release().await;
    result
}

async fn apply(
    ctx: &JobContext,
    trigger: Trigger,
    facts: JobFacts,
) -> Result<PruneOutcome, PruneError> {
    let listing = ctx.repo.list(&ctx.name).await?;
    let plan = plan_for(ctx, &listing, facts).await?;
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
            ctx.journal.record(ctx.event(
                "prune.deleted",
                serde_json::json!({ "deleted": [], "collected": [], "skipped": [], "freed_bytes": 0,
                    "temp_files": temp.files, "temp_bytes": temp.bytes, "error": null }),
            ));
        }
        return Err(PruneError::Refused(why.clone()));
    }
    if plan.forget().next().is_some() || !listing.uncommitted.is_empty() {
        // Fail closed: nothing is deleted unless the plan is on disk first.
        ctx.journal
            .commit(ctx.event("prune.planned", plan_event(&plan, trigger, false)))
            .await?;
    }
    let execution = executions::start(
        &ctx.catalog,
        &ctx.name,
        "prune",
        trigger,
        &ctx.host,
        &ctx.repo.name,
    )
    .await;
    let mut deleted = Vec::new();
    let mut skipped = Vec::new();
    let mut failure = None;
    for d in plan.forget() {
        // The listing only holds manifests whose id is their directory, so
        // the plan's id names the directory; the deletion re-reads it first.
        let Some(planned) = listing.backups.iter().find(|m| m.backup_id == d.id) else {
            continue;
        };
        match ctx.repo.delete_planned(&ctx.name, &d.id, planned).await {
            Ok(Deletion::Skipped(why)) => {
                tracing::warn!(job = %ctx.name, backup = %d.id, reason = %why, "not pruned: the backup changed since the plan; the next prune plans again");
                skipped.push((d.id.to_string(), why));
            }
            Ok(Deletion::Deleted) => {
                tracing::info!(job = %ctx.name, backup = %d.id, freed_bytes = d.stored_bytes, "backup pruned");
                record(
                    ctx,
                    &execution,
                    &d.id,
                    d.stored_bytes,
                    "forgotten by the retention policy",
                )
                .await;
                deleted.push((d.id.to_string(), d.stored_bytes));
            }
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    // Garbage: directories without a manifest. We hold the job's lock, so
    // no backup of this job is being written by any replica; the grace
    // period covers clock skew and crashed writers alike.
    let mut collected = Vec::new();
    let mut young_leftovers = Vec::new();
    let grace =
        chrono::Duration::from_std(ctx.job.retention.orphan_grace).unwrap_or(chrono::Duration::MAX);
    for id in &listing.uncommitted {
        if failure.is_some() {
            break;
        }
        let written = match ctx.repo.last_written(&ctx.name, id).await {
            Ok(t) => t,
            Err(e) => {
                failure = Some(e);
                break;
            }
        };
        if written.is_some_and(|t| Utc::now() - t < grace) {
            young_leftovers.push(id.clone());
            continue;
        }
        match ctx.repo.delete_leftovers(&ctx.name, id).await {
            Ok(()) => {
                tracing::info!(job = %ctx.name, leftover = %id, "uncommitted leftover collected");
                record(
                    ctx,
                    &execution,
                    id,
                    0,
                    "uncommitted leftover (no manifest) older than orphan_grace",
                )
                .await;
                collected.push(id.clone());
            }
            Err(e) => failure = Some(e),
        }
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
    let freed: u64 = deleted.iter().map(|(_, b)| b).sum();
    let message = failure.as_ref().map(|e| e.to_string());
    if !deleted.is_empty()
        || !collected.is_empty()
        || !skipped.is_empty()
        || temp.files > 0
        || failure.is_some()
    {
        let ids: Vec<&str> = deleted.iter().map(|(id, _)| id.as_str()).collect();
        // What was deleted is recorded whatever the journal's state: held
        // until it can be written, synced then.
        ctx.journal.record(ctx.event(
            "prune.deleted",
            serde_json::json!({ "deleted": ids, "collected": collected, "skipped": skipped, "freed_bytes": freed,
                "temp_files": temp.files, "temp_bytes": temp.bytes, "error": message }),
        ));
    }
    let end = Finish {
        status: if failure.is_some() {
            "failed"
        } else {
            "succeeded"
        },
        backup_id: None,
        source_bytes: None,
        stored_bytes: Some(freed),
        error: message.as_deref(),
        details: None,
    };
    executions::finish(&ctx.catalog, &execution, end).await;
    match failure {
        Some(e) => Err(e.into()),
        None => Ok(PruneOutcome {
            plan,
            deleted,
            collected,
            young_leftovers,
            skipped,
            damaged: listing.damaged,
            temp,
            dry_run: false,
        }),
    }
}

async fn record(
    ctx: &JobContext,
    execution: &Option<executions::Execution>,
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
                &[&execution.as_ref().map(|e| e.id), &ctx.name, &ctx.repo.name, &backup_id, &(freed as i64), &reason],
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
) -> Result<(Vec<String>, Vec<String>), String> {
    let repository = match known {
        Some(ids) => ids,
        None => {
            let listing = ctx.repo.list(&ctx.name).await.map_err(|e| e.to_string())?;
            listing
                .backups
                .into_iter()
                .map(|m| m.backup_id.into())
                .collect()
        }
    };
    let client = ctx
        .catalog
        .get()
        .await
        .map_err(|e| crate::catalog::describe(&e))?;
    let rows = client
        .query(
            "SELECT backup_id FROM vigil.executions e WHERE job = $1 AND kind = 'backup' AND status = 'succeeded' \
             AND backup_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM vigil.cleanup_history c \
             WHERE c.job = e.job AND c.backup_id = e.backup_id AND c.action = 'delete')",
            &[&ctx.name],
        )
        .await
        .map_err(|e| crate::core::redact::error_chain(&e))?;
    let catalog: std::collections::BTreeSet<String> = rows.iter().map(|r| r.get(0)).collect();
    Ok((
        catalog.difference(&repository).cloned().collect(),
        repository.difference(&catalog).cloned().collect(),
    ))
}
