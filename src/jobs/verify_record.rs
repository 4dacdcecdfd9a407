//! After every verification (`vigil verify` and scheduled runs): the
//! job's verification record (`<job>/proofs/verify.json`) updated, and the
//! outcome said once to the journal (`verify.succeeded`/`verify.failed`),
//! the catalog (an `executions` row of kind `verify`, best effort) and,
//! in the daemon, the job board that `<job>:verify` and the metrics read.

use chrono::{DateTime, Utc};

use super::report::{Event, Fact, Outcome, Run, RunKind, Status};
use super::verify::{VerifyError, VerifyReport};
use super::{JobContext, Trigger};
use crate::core::manifest::Manifest;
use crate::core::proofs::{VerifyRecord, VerifyRun};
use crate::core::verification::{KeptBackup, RunFindings, fold};
use crate::repo::{Listing, RepoError};

/// The run as every sink names it.
pub fn run_of(ctx: &JobContext, trigger: Trigger) -> Run {
    Run {
        kind: RunKind::Verify,
        trigger,
        repository: ctx.repo.name.clone(),
        started: None,
    }
}

/// Records the run in the job's verification record and builds the
/// outcome the sinks get. A run whose record cannot be read is reported
/// failed (its findings are journalled, not lost); one that found
/// nothing to verify or was cancelled leaves the record alone.
pub async fn settle(
    ctx: &JobContext,
    trigger: Trigger,
    started_at: DateTime<Utc>,
    result: Result<(VerifyReport, Listing), VerifyError>,
) -> (Result<VerifyReport, VerifyError>, Outcome) {
    let finished_at = Utc::now();
    let (report, listing) = match result {
        Ok(found) => found,
        Err(e) => {
            let outcome = failed(ctx, trigger, started_at, finished_at, &e).await;
            return (Err(e), outcome);
        }
    };
    let run = VerifyRun {
        started_at,
        finished_at,
        trigger: trigger.as_str().to_owned(),
        ok: report.ok,
        content_checked: report.content_checked,
        objects: report.backups.iter().map(|b| b.objects as u64).sum::<u64>()
            + report.wal.as_ref().map_or(0, |w| w.objects as u64),
        bytes_read: report.bytes_read(),
        bad_objects: report.bad_objects().count() as u64,
        error: None,
        wal_gaps: report.wal_gaps.len() as u64,
    };
    let found = RunFindings {
        run,
        good: report.good_objects(),
        bad: report.bad_objects().cloned().collect(),
    };
    let record = match ctx.repo.read_verify_record(&ctx.name).await {
        Ok(record) => record,
        Err(source) => {
            let e = VerifyError::Record {
                path: ctx.repo.proof_path(&ctx.name, "verify.json"),
                source,
            };
            let mut outcome = outcome(ctx, trigger, &report, None);
            outcome.status = Status::Failed;
            outcome.error = Some(ctx.redact(&e.to_string()));
            return (Err(e), outcome);
        }
    };
    let kept = kept(ctx, &listing, &record).await;
    let mut record = record;
    fold(&mut record, found, &kept);
    write(ctx, &record).await;
    let outcome = outcome(ctx, trigger, &report, Some(record));
    (Ok(report), outcome)
}

/// What the repository holds now, pins included (a pin that cannot be
/// read counts as none: a finding then stays until the next run). A
/// backup with a finding that the listing lacks is looked up by its
/// manifest: a finding is dropped only when its backup is surely gone,
/// never on a listing that came back short.
async fn kept(ctx: &JobContext, listing: &Listing, record: &VerifyRecord) -> Vec<KeptBackup> {
    let pins = ctx.repo.pins(&ctx.name).await.unwrap_or_else(|e| {
        tracing::warn!(job = %ctx.name, error = %e, "cannot read the job's pins; bad objects of pinned backups stay unresolved this run");
        Default::default()
    });
    let backup = |m: &Manifest| KeptBackup {
        id: m.backup_id.to_string(),
        finished_at: m.finished_at,
        objects: m.objects.iter().map(|o| o.name.clone()).collect(),
        pinned: pins.contains(m.backup_id.as_str()),
    };
    let mut kept: Vec<KeptBackup> = listing.backups.iter().map(backup).collect();
    let mut unlisted: Vec<&str> = record
        .bad
        .iter()
        .chain(&record.evidence)
        .map(|f| f.object.backup_id.as_str())
        .filter(|id| !kept.iter().any(|k| k.id == *id))
        .collect();
    unlisted.dedup();
    for id in unlisted {
        match ctx.repo.read_manifest(&ctx.name, id).await {
            Ok(m) => kept.push(backup(&m)),
            Err(RepoError::NoSuchBackup { .. }) => {}
            // Unreadable: kept as it is, its finding stays.
            Err(_) => kept.push(KeptBackup {
                id: id.to_owned(),
                finished_at: DateTime::<Utc>::MIN_UTC,
                objects: Vec::new(),
                pinned: pins.contains(id),
            }),
        }
    }
    kept
}

/// Best effort: a record that cannot be written is said in the log; the
/// run's outcome is in the journal either way.
async fn write(ctx: &JobContext, record: &VerifyRecord) {
    if let Err(e) = ctx.repo.write_verify_record(&ctx.name, record).await {
        tracing::warn!(job = %ctx.name, error = %e, "cannot write the verification record");
    }
}

/// A run that could not be carried out: the record notes it (unless
/// there was nothing to verify, or a shutdown stopped it).
async fn failed(
    ctx: &JobContext,
    trigger: Trigger,
    started_at: DateTime<Utc>,
    finished_at: DateTime<Utc>,
    error: &VerifyError,
) -> Outcome {
    let text = ctx.redact(&crate::core::redact::error_chain(error));
    let event = Event::emit(
        "verify.failed",
        serde_json::json!({ "trigger": trigger.as_str(), "error": text }),
    );
    match error {
        VerifyError::Cancelled => return Outcome::failed(Status::Aborted, text, None),
        VerifyError::NoBackups { .. } | VerifyError::Record { .. } => {
            return Outcome::failed(Status::Failed, text, Some(event));
        }
        _ => {}
    }
    let mut outcome = Outcome::failed(Status::Failed, text.clone(), Some(event));
    let Ok(mut record) = ctx.repo.read_verify_record(&ctx.name).await else {
        return outcome;
    };
    record.last_run = Some(VerifyRun {
        started_at,
        finished_at,
        trigger: trigger.as_str().to_owned(),
        ok: false,
        content_checked: false,
        objects: 0,
        bytes_read: 0,
        bad_objects: 0,
        error: Some(text),
        wal_gaps: 0,
    });
    write(ctx, &record).await;
    outcome.fact = Fact::Verify(Box::new(record));
    outcome
}

/// A finished verification as every sink records it.
fn outcome(
    ctx: &JobContext,
    trigger: Trigger,
    report: &VerifyReport,
    record: Option<VerifyRecord>,
) -> Outcome {
    let bad: Vec<serde_json::Value> = report
        .bad_objects()
        .map(|b| {
            serde_json::json!({ "backup_id": b.backup_id, "object": b.object,
                "expected_sha256": b.expected_sha256, "found_sha256": b.found_sha256, "error": b.error })
        })
        .collect();
    let name = if report.ok {
        "verify.succeeded"
    } else {
        "verify.failed"
    };
    let data = serde_json::json!({
        "trigger": trigger.as_str(),
        "backup_ids": report.backups.iter().map(|b| &b.backup_id).collect::<Vec<_>>(),
        "bytes_read": report.bytes_read(),
        "content_checked": report.content_checked,
        "bad_objects": bad,
        "wal_gaps": report.wal_gaps,
        "wal_objects": report.wal.as_ref().map(|w| w.objects),
    });
    let details = serde_json::json!({
        "bytesRead": report.bytes_read(),
        "objects": report.backups.iter().map(|b| b.objects).sum::<usize>(),
        "backups": report.backups.len(),
        "contentChecked": report.content_checked,
        "badObjects": report.bad_objects().collect::<Vec<_>>(),
        "walGaps": report.wal_gaps.len(),
    });
    let single = match report.backups.as_slice() {
        [one] => Some(one.backup_id.clone()),
        _ => None,
    };
    let fact = record.map_or(Fact::None, |r| Fact::Verify(Box::new(r)));
    let event = Some(Event::emit(name, data));
    let mut outcome = if report.ok {
        Outcome::succeeded(fact, event)
    } else {
        let error = failure_summary(report);
        Outcome {
            fact,
            ..Outcome::failed(Status::Failed, ctx.redact(&error), event)
        }
    };
    outcome.backup_id = single;
    outcome.stored_bytes = Some(report.bytes_read());
    outcome.details = Some(details);
    outcome
}

/// One line for a failed run (the executions row, the fail ping): the
/// counts, then the first bad objects by name so the reader knows where
/// to look without opening the journal.
fn failure_summary(report: &VerifyReport) -> String {
    const NAMED: usize = 3;
    let bad: Vec<_> = report.bad_objects().collect();
    let mut line = format!(
        "{} bad object(s), {} WAL gap(s)",
        bad.len(),
        report.wal_gaps.len()
    );
    for object in bad.iter().take(NAMED) {
        line.push_str(&format!(
            "; {}/{}: {}",
            object.backup_id, object.object, object.error
        ));
    }
    if bad.len() > NAMED {
        line.push_str(&format!("; and {} more", bad.len() - NAMED));
    }
    line
}
