//! Where a drill's verdict goes: the job's record in the repository
//! (`proofs/drill.json`), the executions row and journal event (through
//! the run's reporter), the log. The restore inside a drill journals its
//! own `restore.*` events but writes no executions row: the drill's is
//! the one.

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;

use super::Attempt;
use crate::core::proofs::{DrillRecord, DrillRun};
use crate::jobs::report::{Event, Fact, Outcome, Reporter, Run, Status};
use crate::jobs::{JobContext, Trigger};

/// The trigger as the record names it: `manual`, `schedule` or `api`.
pub fn trigger_word(trigger: Trigger) -> &'static str {
    match trigger {
        Trigger::Schedule | Trigger::CatchUp => "schedule",
        Trigger::Cli => "manual",
        Trigger::Api => "api",
    }
}

pub(super) fn drill_run(
    ctx: &JobContext,
    trigger: Trigger,
    started_at: DateTime<Utc>,
    attempt: &Attempt,
) -> DrillRun {
    let error = attempt.result.as_ref().err();
    DrillRun {
        started_at,
        finished_at: Utc::now(),
        trigger: trigger_word(trigger).to_owned(),
        ok: attempt.result.is_ok(),
        backup_id: attempt.backup_id.clone(),
        recovery_target: attempt.recovery_target.clone(),
        rto_seconds: attempt.result.as_ref().ok().copied(),
        failed_query: error.and_then(|e| e.failed_query()).map(str::to_owned),
        error: error.map(|e| ctx.redact(&crate::core::redact::error_chain(e))),
    }
}

/// The drill as the executions row and the journal record it.
pub(super) fn outcome(run: &DrillRun, attempt: &Attempt) -> Outcome {
    let data = serde_json::json!({
        "backup_id": run.backup_id,
        "target": attempt.target,
        "recovery_target": run.recovery_target,
        "rto_seconds": run.rto_seconds,
        "failed_query": run.failed_query,
        "error": run.error,
    });
    let details = serde_json::json!({
        "rtoSeconds": run.rto_seconds,
        "backupId": run.backup_id,
        "target": attempt.target,
        "recoveryTarget": run.recovery_target,
        "failedQuery": run.failed_query,
    });
    let outcome = match (&attempt.result, &run.error) {
        (Ok(_), _) => Outcome::succeeded(Fact::None, Some(Event::emit("drill.succeeded", data))),
        (Err(super::DrillError::Cancelled), error) => Outcome::failed(
            Status::Aborted,
            error.clone().unwrap_or_default(),
            Some(Event::emit("drill.failed", data)),
        ),
        (Err(_), error) => Outcome::failed(
            Status::Failed,
            error.clone().unwrap_or_default(),
            Some(Event::emit("drill.failed", data)),
        ),
    };
    Outcome {
        backup_id: run.backup_id.clone(),
        details: Some(details),
        ..outcome
    }
}

/// Folds `run` into the job's record in the repository. A record that
/// cannot be read starts afresh; one that cannot be written is logged
/// (the journal and the catalog still have the run). Returns the record
/// as it now stands, for the board.
pub(super) async fn save(ctx: &JobContext, run: &DrillRun) -> DrillRecord {
    let mut record = match ctx.repo.read_drill_record(&ctx.name).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(job = %ctx.name, error = %ctx.redact(&e.to_string()), "cannot read the drill record; starting it afresh");
            DrillRecord::default()
        }
    };
    fold(&mut record, run);
    if let Err(e) = ctx.repo.write_drill_record(&ctx.name, &record).await {
        tracing::warn!(job = %ctx.name, error = %ctx.redact(&e.to_string()), "cannot write the drill record");
    }
    record
}

/// The record after `run`: its last run, and its last success if it passed.
pub fn fold(record: &mut DrillRecord, run: &DrillRun) {
    record.last_run = Some(run.clone());
    if run.ok {
        record.last_success = Some(run.clone());
    }
}

pub(super) fn log(ctx: &JobContext, run: &DrillRun, attempt: &Attempt) {
    match &run.error {
        None => {
            tracing::info!(job = %ctx.name, target = %attempt.target, backup = ?run.backup_id, recovery_target = ?run.recovery_target, rto_seconds = ?run.rto_seconds, "restore drill passed")
        }
        Some(error) => {
            tracing::warn!(job = %ctx.name, target = %attempt.target, backup = ?run.backup_id, failed_query = ?run.failed_query, error = %error, "restore drill failed")
        }
    }
}

/// A reporter that only journals: the restore inside a drill.
pub(super) struct JournalOnly<'a>(pub &'a JobContext);

impl JournalOnly<'_> {
    fn write(&self, event: &Event) {
        let entry = self.0.event(event.name, event.data.clone());
        if event.durable {
            self.0.journal.record(entry);
        } else {
            self.0.journal.emit(entry);
        }
    }
}

impl Reporter for JournalOnly<'_> {
    fn started<'a>(&'a self, run: &'a Run) -> BoxFuture<'a, Option<i64>> {
        if let Some(event) = &run.started {
            self.write(event);
        }
        Box::pin(std::future::ready(None))
    }

    fn finished<'a>(&'a self, _run: &'a Run, outcome: &'a Outcome) -> BoxFuture<'a, ()> {
        if let Some(event) = &outcome.event {
            self.write(event);
        }
        Box::pin(std::future::ready(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(ok: bool) -> DrillRun {
        DrillRun {
            started_at: Utc::now(),
            finished_at: Utc::now(),
            trigger: "manual".into(),
            ok,
            backup_id: Some("20261127T030000Z".into()),
            recovery_target: None,
            rto_seconds: ok.then_some(3.5),
            failed_query: (!ok).then(|| "SELECT false".to_owned()),
            error: (!ok).then(|| "check `SELECT false` returned false".to_owned()),
        }
    }

    #[test]
    fn a_failed_drill_keeps_the_last_success() {
        let mut record = DrillRecord::default();
        fold(&mut record, &run(true));
        fold(&mut record, &run(false));
        assert!(!record.last_run.as_ref().unwrap().ok);
        assert_eq!(record.last_success.as_ref().unwrap().rto_seconds, Some(3.5));
        assert_eq!(trigger_word(Trigger::CatchUp), "schedule");
        assert_eq!(trigger_word(Trigger::Cli), "manual");
    }
}
