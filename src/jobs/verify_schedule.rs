//! Scheduled verification (`[jobs.<name>.verify]`): a loop per job that
//! reads the objects due within the run's byte budget (planned from the
//! job's verification record, see `core::verification`), so every object
//! of every kept backup is re-read within `reverify_after` without
//! re-reading everything each time. A run takes no job lock (it must not
//! hold a backup up for hours); a backup pruned while it is read is not a
//! finding (see `verify::bad_object`).

use std::sync::Arc;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use super::report::Sinks;
use super::verify::{VerifyError, VerifyReport, VerifyRequest};
use super::{JobContext, Trigger};
use crate::config::VerifySchedule;
use crate::core::proofs::VerifyRun;
use crate::core::schedule::{Schedule, missed_run};
use crate::core::verification::Budget;
use crate::state::Shared;

/// The job's verification record onto the board (start-up, best effort:
/// `<job>:verify` says "not read yet" until a run writes one).
pub async fn restore_record(ctx: &JobContext, shared: &Shared) {
    match ctx.repo.read_verify_record(&ctx.name).await {
        Ok(record) => {
            if ctx.job.verify.is_some() || record.last_run.is_some() {
                shared.jobs.update(&ctx.name, |s| s.verify = Some(record));
            }
        }
        Err(e) => {
            tracing::warn!(job = %ctx.name, error = %e, "cannot read the verification record at start-up")
        }
    }
}

/// The budget of one scheduled run.
pub fn budget(verify: &VerifySchedule) -> Budget {
    Budget {
        max_bytes: verify.max_bytes_per_run,
        reverify_after: verify.reverify_after,
    }
}

/// One scheduled run, recorded everywhere (the board included).
pub async fn run_scheduled(
    ctx: &JobContext,
    shared: &Shared,
    verify: &VerifySchedule,
    trigger: Trigger,
    cancel: &CancellationToken,
) -> Result<VerifyReport, VerifyError> {
    let request = VerifyRequest {
        budget: Some(budget(verify)),
        ..VerifyRequest::default()
    };
    let report = Sinks::new(ctx).with_board(&shared.jobs, &ctx.name);
    let started_at = Utc::now();
    let result = super::verify::run_reported(ctx, &request, trigger, cancel, &report).await;
    match &result {
        Ok(r) => {
            tracing::info!(job = %ctx.name, ok = r.ok, objects = r.backups.iter().map(|b| b.objects).sum::<usize>(), bytes_read = r.bytes_read(), "scheduled verification finished")
        }
        Err(VerifyError::Cancelled) => {}
        Err(e) => {
            let error = ctx.redact(&e.to_string());
            tracing::warn!(job = %ctx.name, error = %error, "scheduled verification could not run");
            note_failure(shared, &ctx.name, trigger, started_at, error);
        }
    }
    result
}

/// A run that could not be carried out, on the board even when the record
/// could not be read or written (an unreachable repository): the findings
/// the board holds stay, `<job>:verify` says the run failed.
fn note_failure(
    shared: &Shared,
    job: &str,
    trigger: Trigger,
    started_at: chrono::DateTime<Utc>,
    error: String,
) {
    shared.jobs.update(job, |s| {
        let record = s.verify.get_or_insert_with(Default::default);
        record.last_run = Some(VerifyRun {
            started_at,
            finished_at: Utc::now(),
            trigger: trigger.as_str().to_owned(),
            ok: false,
            content_checked: false,
            objects: 0,
            bytes_read: 0,
            bad_objects: 0,
            error: Some(error),
            wal_gaps: 0,
        });
    });
}

/// The job's verification loop until `cancel`: a run at once when the
/// last one is older than the latest scheduled time (or there was none),
/// then one at every scheduled time.
pub async fn verify_loop(ctx: JobContext, shared: Arc<Shared>, cancel: CancellationToken) {
    let Some(verify) = ctx.job.verify.clone() else {
        return;
    };
    let schedule =
        match Schedule::from_parts(verify.schedule.as_deref(), verify.every, &ctx.job.timezone) {
            Ok(Some(s)) => s,
            Ok(None) => return,
            Err(e) => {
                tracing::error!(job = %ctx.name, error = %e, "verification not scheduled");
                return;
            }
        };
    let last = shared
        .jobs
        .get(&ctx.name)
        .and_then(|s| s.verify?.last_run.map(|r| r.finished_at));
    if missed_run(&schedule, last, Utc::now()).is_some() {
        let _ = run_scheduled(&ctx, &shared, &verify, Trigger::CatchUp, &cancel).await;
    }
    let mut after = Utc::now();
    while let Some(next) = schedule.next_after(after) {
        if !super::scheduler::sleep_until(next, &cancel).await {
            return;
        }
        let _ = run_scheduled(&ctx, &shared, &verify, Trigger::Schedule, &cancel).await;
        if cancel.is_cancelled() {
            return;
        }
        after = Utc::now().max(next);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::proofs::{BadFinding, BadObject, VerifyRecord};

    #[test]
    fn a_run_that_could_not_run_reaches_the_board_keeping_its_findings() {
        let shared = Shared::new("t".into(), None);
        let bad = BadFinding {
            object: BadObject {
                backup_id: "b".into(),
                object: "o".into(),
                expected_sha256: None,
                found_sha256: None,
                error: "damaged".into(),
            },
            found_at: Utc::now(),
        };
        shared.jobs.update("orders", |s| {
            s.verify = Some(VerifyRecord {
                bad: vec![bad.clone()],
                ..Default::default()
            })
        });
        note_failure(
            &shared,
            "orders",
            Trigger::Schedule,
            Utc::now(),
            "unreachable".into(),
        );
        let record = shared.jobs.get("orders").unwrap().verify.unwrap();
        assert_eq!(record.bad, vec![bad]);
        let run = record.last_run.unwrap();
        assert_eq!((run.ok, run.error.as_deref()), (false, Some("unreachable")));
    }
}
