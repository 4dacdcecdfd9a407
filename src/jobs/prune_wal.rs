//! Retention of a physical job's WAL archive, in the same plan as its base
//! backups: WAL older than the oldest kept base backup's start goes, after
//! the manifests; gaps in the kept backups' chains are reported.

use super::JobContext;
use crate::core::retention::Plan;
use crate::core::wal_chain::{self, WalPlan};
use crate::repo::{Listing, RepoError};

/// The WAL part of `plan` (`None` for jobs of other kinds). A refused plan
/// deletes no WAL either; its gaps are still reported.
pub async fn plan(
    ctx: &JobContext,
    listing: &Listing,
    plan: &Plan,
) -> Result<Option<WalPlan>, RepoError> {
    if ctx.job.kind != crate::config::JobKind::PostgresPhysical {
        return Ok(None);
    }
    let kept: Vec<_> = listing
        .backups
        .iter()
        .filter(|m| {
            plan.decisions.iter().any(|d| d.id == m.backup_id && d.keep) || plan.refused.is_some()
        })
        .cloned()
        .collect();
    let survey = super::pitr::survey(ctx, &kept).await?;
    let mut wal = wal_chain::plan(&survey.backups, &survey.archive, &survey.histories);
    if plan.refused.is_some() {
        wal.kept += wal.delete.len();
        wal.delete.clear();
    }
    for gap in &wal.gaps {
        tracing::warn!(job = %ctx.name, "{gap}");
    }
    Ok(Some(wal))
}

/// Whether the plan deletes any WAL.
pub fn deletes(plan: &Plan) -> bool {
    plan.wal.as_ref().is_some_and(|w| !w.delete.is_empty())
}

/// Deletes the WAL the plan lets go, oldest first, recording each name in
/// `deleted` (so a failure half-way still reports what went).
pub async fn delete(
    ctx: &JobContext,
    plan: &Plan,
    deleted: &mut Vec<String>,
) -> Result<(), RepoError> {
    let Some(wal) = &plan.wal else {
        return Ok(());
    };
    for d in &wal.delete {
        ctx.repo.delete_wal(&d.path).await?;
        tracing::info!(job = %ctx.name, file = %d.file, reason = %d.reason, "WAL pruned");
        deleted.push(d.file.clone());
    }
    Ok(())
}
