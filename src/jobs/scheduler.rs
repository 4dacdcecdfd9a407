//! Drives each job: catch-up at start, then every scheduled time; a run
//! that overlaps the next time makes it skip (never two runs of one job).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use super::backup::{self, BackupError, Progress};
use super::context::ContextError;
use super::prune::{PruneError, PruneOutcome};
use super::report::Sinks;
use super::{JobContext, Trigger};
use crate::core::schedule::{Schedule, missed_run};
use crate::repo::RepoError;
use crate::state::{Running, Shared};

/// Reads the repository's manifests into the job board (start-up, before ready).
pub async fn restore_state(ctx: &JobContext, shared: &Shared) -> Result<(), RepoError> {
    if ctx.job.kind == crate::config::JobKind::Mirror {
        // A mirror has no backups of its own; its runs fill the board.
        shared.jobs.update(&ctx.name, |s| s.restored = true);
        return Ok(());
    }
    let listing = ctx.repo.list(&ctx.name).await?;
    for (id, why) in &listing.damaged {
        tracing::warn!(job = %ctx.name, backup = %id, error = %why, "damaged manifest: not counted as a backup");
    }
    shared
        .jobs
        .update(&ctx.name, |s| s.restore_listing(&listing));
    tracing::info!(job = %ctx.name, backups = listing.backups.len(), last_success = ?listing.backups.last().map(|m| m.finished_at), "job state restored from the repository");
    Ok(())
}

/// Runs one backup and records it on the board.
pub async fn run_once(
    ctx: &JobContext,
    shared: &Arc<Shared>,
    trigger: Trigger,
    scheduled_for: Option<DateTime<Utc>>,
    cancel: &CancellationToken,
) {
    let progress = Progress::default();
    let running = Running {
        started_at: Utc::now(),
        trigger: trigger.as_str(),
        source_bytes: Arc::clone(&progress.source_bytes),
    };
    shared.jobs.update(&ctx.name, |s| s.running = Some(running));
    let report = Sinks::new(ctx).with_board(&shared.jobs, &ctx.name);
    if ctx.job.kind == crate::config::JobKind::Mirror {
        let _ = super::mirror::run_reported(ctx, trigger, cancel, &report).await;
        shared.jobs.update(&ctx.name, |s| s.running = None);
        return;
    }
    let result =
        backup::run_scheduled(ctx, trigger, scheduled_for, &progress, cancel, &report).await;
    let prune_after =
        result.is_ok() && ctx.job.retention.after_backup && !ctx.job.retention.is_empty();
    shared.jobs.update(&ctx.name, |s| s.running = None);
    // Another replica ran (or is running) this slot: its backup is in the
    // shared repository, and this replica's freshness must see it too.
    match &result {
        Err(BackupError::AlreadyDone { .. }) => {
            let _ = restore_state(ctx, shared).await;
        }
        Err(BackupError::Locked(_)) => {
            let known = shared.jobs.get(&ctx.name).and_then(|s| s.last_success);
            let (ctx, shared, cancel) = (ctx.clone(), Arc::clone(shared), cancel.child_token());
            tokio::spawn(async move { follow_other_run(&ctx, &shared, known, &cancel).await });
        }
        _ => {}
    }
    if prune_after && !cancel.is_cancelled() {
        let _ = prune_and_record(ctx, shared, trigger).await;
    }
}

/// How often a replica that found the job locked looks for the other run's backup.
const FOLLOW_POLL: std::time::Duration = std::time::Duration::from_secs(10);

/// Re-reads the repository until a backup newer than `known` appears (the
/// lock holder's), or the holder's run must have ended (`max_duration`).
async fn follow_other_run(
    ctx: &JobContext,
    shared: &Arc<Shared>,
    known: Option<DateTime<Utc>>,
    cancel: &CancellationToken,
) {
    let deadline = tokio::time::Instant::now() + ctx.job.max_duration + FOLLOW_POLL;
    while tokio::time::Instant::now() < deadline {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(FOLLOW_POLL) => {}
        }
        let Ok(listing) = ctx.repo.list(&ctx.name).await else {
            continue;
        };
        let newest = listing.backups.iter().map(|m| m.finished_at).max();
        if newest > known {
            shared
                .jobs
                .update(&ctx.name, |s| s.restore_listing(&listing));
            return;
        }
    }
}

/// A prune run whose outcome lands on the board (metrics, `<job>:retention`).
pub async fn prune_and_record(
    ctx: &JobContext,
    shared: &Shared,
    trigger: Trigger,
) -> Result<PruneOutcome, PruneError> {
    let report = Sinks::new(ctx).with_board(&shared.jobs, &ctx.name);
    let result = super::prune::run_reported(ctx, trigger, false, &report).await;
    // The prune's plan already lists every committed backup: what it kept is
    // what the repository now holds.
    let known = result.as_ref().ok().map(|o| {
        o.plan
            .decisions
            .iter()
            .filter(|d| d.keep)
            .map(|d| d.id.to_string())
            .collect()
    });
    let consistency = super::prune::cross_check(ctx, known).await;
    if let Ok((missing, unknown)) = &consistency {
        shared.jobs.update(&ctx.name, |s| {
            s.prune.missing_from_repository = missing.clone();
            s.prune.unknown_to_catalog = unknown.clone();
        });
    }
    match result {
        Ok(outcome) => {
            tracing::info!(job = %ctx.name, deleted = outcome.deleted.len(), collected = outcome.collected.len(), "prune finished");
            Ok(outcome)
        }
        Err(e) => {
            tracing::warn!(job = %ctx.name, error = %ctx.redact(&e.to_string()), "prune failed");
            Err(e)
        }
    }
}

/// The job's loop until `cancel`.
pub async fn job_loop(ctx: JobContext, shared: Arc<Shared>, cancel: CancellationToken) {
    let schedule = match ctx.job.schedule() {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(job = %ctx.name, error = %e, "job not scheduled");
            return;
        }
    };
    if ctx.job.catch_up {
        let last = shared.jobs.get(&ctx.name).and_then(|s| s.last_success);
        if let Some(missed) = missed_run(&schedule, last, Utc::now()) {
            tracing::info!(job = %ctx.name, missed = %missed, "catching up a missed run");
            run_once(&ctx, &shared, Trigger::CatchUp, Some(missed), &cancel).await;
        }
    }
    let mut after = Utc::now();
    loop {
        let Some(next) = schedule.next_after(after) else {
            tracing::warn!(job = %ctx.name, "the schedule has no future run");
            return;
        };
        shared.jobs.update(&ctx.name, |s| s.next_run = Some(next));
        if !sleep_until(next, &cancel).await {
            return;
        }
        run_once(&ctx, &shared, Trigger::Schedule, Some(next), &cancel).await;
        if cancel.is_cancelled() {
            return;
        }
        let now = Utc::now();
        let skipped = count_between(&schedule, next, now);
        if skipped > 0 {
            tracing::warn!(job = %ctx.name, skipped, "the run outlasted later scheduled times; those were skipped");
        }
        after = now.max(next);
    }
}

/// Scheduled prunes (`[jobs.<name>.retention] schedule`/`every`), besides
/// the prune after each backup.
pub async fn prune_loop(ctx: JobContext, shared: Arc<Shared>, cancel: CancellationToken) {
    let retention = &ctx.job.retention;
    let schedule = match Schedule::from_parts(
        retention.schedule.as_deref(),
        retention.every,
        &ctx.job.timezone,
    ) {
        Ok(Some(s)) => s,
        Ok(None) => return,
        Err(e) => {
            tracing::error!(job = %ctx.name, error = %e, "prune not scheduled");
            return;
        }
    };
    let mut after = Utc::now();
    while let Some(next) = schedule.next_after(after) {
        if !sleep_until(next, &cancel).await {
            return;
        }
        let _ = prune_and_record(&ctx, &shared, Trigger::Schedule).await;
        after = Utc::now().max(next);
    }
}

/// Sleeps until `next`; false when `cancel` fired first.
pub(super) async fn sleep_until(next: DateTime<Utc>, cancel: &CancellationToken) -> bool {
    let wait = (next - Utc::now()).to_std().unwrap_or_default();
    tokio::select! {
        _ = cancel.cancelled() => false,
        _ = tokio::time::sleep(wait) => true,
    }
}

/// Scheduled times strictly between `from` and `to` (capped).
fn count_between(schedule: &Schedule, from: DateTime<Utc>, to: DateTime<Utc>) -> u32 {
    let mut count = 0;
    let mut t = from;
    while let Some(next) = schedule.next_after(t) {
        if next >= to || count >= 1000 {
            break;
        }
        count += 1;
        t = next;
    }
    count
}

/// Puts the job's freshness policy and its first due run on the board. A
/// catch-up run starts right after this: it shows as running already, so
/// the first health round does not take it for a missed run.
fn arm_freshness(ctx: &JobContext, shared: &Shared) {
    let Ok(schedule) = ctx.job.schedule() else {
        return;
    };
    let now = Utc::now();
    let last_success = shared.jobs.get(&ctx.name).and_then(|s| s.last_success);
    let catch_up = ctx.job.catch_up && missed_run(&schedule, last_success, now).is_some();
    let first_due = if catch_up {
        Some(now)
    } else {
        schedule.next_after(now)
    };
    let freshness = crate::core::schedule::freshness(&ctx.job.freshness_policy(), &schedule, now);
    shared.jobs.update(&ctx.name, |s| {
        s.freshness = Some(freshness);
        s.first_due = first_due;
        if catch_up {
            s.running = Some(Running {
                started_at: now,
                trigger: Trigger::CatchUp.as_str(),
                source_bytes: Default::default(),
            });
        }
    });
}

/// Start-up for every configured job: mark this host's interrupted runs
/// aborted, read each repository's manifests into the board, arm the
/// loops. Returns the jobs' contexts (for the health checks and the
/// operator API).
pub async fn arm_all(
    config: &crate::config::Config,
    pool: &deadpool_postgres::Pool,
    shared: &Arc<Shared>,
    tasks: &crate::tasks::Tasks,
    work: &CancellationToken,
    journal: &crate::journal::Journal,
) -> Result<Vec<JobContext>, ContextError> {
    let host = shared.service_id.clone();
    match super::executions::abort_stale(pool, &host).await {
        Ok(0) => {}
        Ok(n) => tracing::warn!(
            runs = n,
            "runs left `running` by a previous vigil on this host marked aborted"
        ),
        Err(e) => tracing::warn!(error = %e, "cannot mark interrupted runs aborted"),
    }
    let mut contexts = Vec::new();
    for name in config.jobs.keys() {
        let ctx = JobContext::new(
            config,
            name,
            pool.clone(),
            &host,
            journal.clone(),
            crate::core::journal_record::Actor::scheduler(),
        )?;
        if let Err(e) = restore_state(&ctx, shared).await {
            // Not fatal: freshness says "not read yet" and the loop retries.
            tracing::warn!(job = %name, error = %e, "cannot read the repository at start-up");
        }
        super::verify_schedule::restore_record(&ctx, shared).await;
        contexts.push(ctx);
    }
    shared.startup_done("state");

    let mut repos = std::collections::BTreeSet::new();
    let armed = contexts.clone();
    for ctx in contexts {
        arm_freshness(&ctx, shared);
        if repos.insert(ctx.repo.name.clone()) {
            tracing::info!(repository = %ctx.repo.name, scheme = %ctx.repo.scheme, guarantees = %ctx.repo.guarantees.describe(), "repository opened");
        }
        if ctx.job.retention.schedule.is_some() || ctx.job.retention.every.is_some() {
            let (ctx, shared, cancel) = (ctx.clone(), Arc::clone(shared), work.child_token());
            tasks.spawn(
                format!("prune:{}", ctx.name),
                prune_loop(ctx, shared, cancel),
            );
        }
        if ctx.job.verify.is_some() {
            let (ctx, shared, cancel) = (ctx.clone(), Arc::clone(shared), work.child_token());
            let verify = super::verify_schedule::verify_loop(ctx.clone(), shared, cancel);
            tasks.spawn(format!("verify:{}", ctx.name), verify);
        }
        let (shared, cancel) = (Arc::clone(shared), work.child_token());
        tasks.spawn(format!("job:{}", ctx.name), async move {
            if !shared.jobs.get(&ctx.name).is_some_and(|s| s.restored) {
                let _ = restore_state(&ctx, &shared).await;
            }
            job_loop(ctx, shared, cancel).await;
        });
    }
    shared.startup_done("schedules");
    Ok(armed)
}
