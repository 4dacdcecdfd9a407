//! The daemon's drills: each job's record read into the board at
//! start-up (best effort), then one loop per job with `[drill]`: a drill
//! at once when a scheduled one was missed (as `catch_up` does for
//! backups), then one at every scheduled time, one after another.

use std::path::Path;
use std::sync::Arc;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use super::{DrillError, Invoker};
use crate::core::schedule::{Schedule, missed_run};
use crate::jobs::{JobContext, Trigger};
use crate::state::Shared;
use crate::tasks::Tasks;

/// What `restore_command` of the daemon's physical drills runs: this
/// binary with the daemon's config file.
pub fn invoker(config_path: &Path) -> std::io::Result<Invoker> {
    Ok(Invoker {
        vigil: std::env::current_exe()?,
        config: std::path::absolute(config_path)?,
    })
}

/// Reads each drilled job's record into the board, then arms its loop.
pub async fn arm(
    config_path: &Path,
    jobs: &[JobContext],
    shared: &Arc<Shared>,
    tasks: &Tasks,
    work: &CancellationToken,
) {
    let invoker = match invoker(config_path) {
        Ok(i) => i,
        Err(e) => {
            tracing::error!(config = %config_path.display(), error = %e, "cannot resolve the vigil binary or the config path: no drills scheduled");
            return;
        }
    };
    for ctx in jobs.iter().filter(|c| c.job.drill.is_some()) {
        read_record(ctx, shared).await;
        let (ctx, shared, invoker, cancel) = (
            ctx.clone(),
            Arc::clone(shared),
            invoker.clone(),
            work.child_token(),
        );
        tasks.spawn(format!("drill:{}", ctx.name), async move {
            drill_loop(&ctx, &shared, &invoker, &cancel).await;
        });
    }
}

/// The job's drill record into the board; unreadable, the board says
/// nothing yet and the next drill writes it afresh.
async fn read_record(ctx: &JobContext, shared: &Shared) {
    match ctx.repo.read_drill_record(&ctx.name).await {
        Ok(record) => shared.jobs.update(&ctx.name, |s| s.drill = Some(record)),
        Err(e) => {
            tracing::warn!(job = %ctx.name, error = %ctx.redact(&e.to_string()), "cannot read the drill record at start-up")
        }
    }
}

/// The job's drill schedule (validated at config load).
pub fn schedule(ctx: &JobContext) -> Option<Schedule> {
    let drill = ctx.job.drill.as_ref()?;
    Schedule::required(drill.schedule.as_deref(), drill.every, &ctx.job.timezone).ok()
}

async fn drill_loop(
    ctx: &JobContext,
    shared: &Shared,
    invoker: &Invoker,
    cancel: &CancellationToken,
) {
    let Some(schedule) = schedule(ctx) else {
        tracing::error!(job = %ctx.name, "drill not scheduled: its schedule does not build");
        return;
    };
    let last = shared
        .jobs
        .get(&ctx.name)
        .and_then(|s| s.drill)
        .and_then(|r| r.last_run)
        .map(|r| r.started_at);
    if ctx.job.catch_up && missed_run(&schedule, last, Utc::now()).is_some() {
        drill_and_record(ctx, shared, invoker, Trigger::CatchUp, cancel).await;
    }
    let mut after = Utc::now();
    while let Some(next) = schedule.next_after(after) {
        if !crate::jobs::scheduler::sleep_until(next, cancel).await {
            return;
        }
        drill_and_record(ctx, shared, invoker, Trigger::Schedule, cancel).await;
        if cancel.is_cancelled() {
            return;
        }
        after = Utc::now().max(next);
    }
}

/// One drill; its record reaches the board. One that could not run is
/// logged: no backup yet is the freshness check's to report.
async fn drill_and_record(
    ctx: &JobContext,
    shared: &Shared,
    invoker: &Invoker,
    trigger: Trigger,
    cancel: &CancellationToken,
) {
    match super::run(ctx, trigger, invoker, cancel).await {
        Ok(drilled) => shared
            .jobs
            .update(&ctx.name, |s| s.drill = Some(drilled.record)),
        Err(e @ (DrillError::NoBackups { .. } | DrillError::Busy { .. })) => {
            tracing::info!(job = %ctx.name, reason = %e, "drill skipped")
        }
        Err(e) => {
            tracing::warn!(job = %ctx.name, error = %ctx.redact(&e.to_string()), "drill could not run")
        }
    }
}
