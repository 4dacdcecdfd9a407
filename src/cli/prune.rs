//! `vigil prune JOB|--all [--dry-run] [--json]`: plan (and apply) each
//! job's retention, then print the plans.

use super::commands::human_bytes;
use super::error::CliError;
use super::session::Session;
use crate::config::Config;
use crate::core::output::ErrorBody;
use crate::core::wal_chain::WalPlan;
use crate::jobs::Trigger;
use crate::jobs::prune::PruneOutcome;
use crate::jobs::prune_report::PruneReport;
use crate::outln;

/// `vigil prune JOB|--all [--dry-run] [--json]`.
pub async fn prune(
    config: &Config,
    job: Option<&str>,
    dry_run: bool,
    json: bool,
) -> Result<(), CliError> {
    let names: Vec<String> = match job {
        Some(name) => vec![name.to_owned()],
        None => config.jobs.keys().cloned().collect(),
    };
    let mut outcomes = Vec::new();
    let mut failed = Vec::new();
    let session = Session::open(config).await?;
    for name in &names {
        let ctx = session.context(config, name)?;
        match crate::jobs::prune::run(&ctx, Trigger::Cli, dry_run).await {
            Ok(outcome) => outcomes.push((name.clone(), outcome)),
            Err(e) => failed.push((name.clone(), ctx.redact(&e.to_string()))),
        }
    }
    session.close().await;
    if json {
        print_json(&outcomes, &failed)?;
    } else {
        for (job, outcome) in &outcomes {
            print_text(job, outcome)?;
        }
    }
    if !failed.is_empty() {
        let failures = failed
            .iter()
            .map(|(job, why)| format!("{job}: {why}"))
            .collect();
        return Err(CliError::PruneFailed { failures });
    }
    Ok(())
}

/// `--json`: one object per job.
fn print_json(
    outcomes: &[(String, PruneOutcome)],
    failed: &[(String, String)],
) -> Result<(), CliError> {
    let entries = json_entries(outcomes, failed)?;
    outln!("{}", serde_json::to_string_pretty(&entries)?)?;
    Ok(())
}

/// Each job's [`PruneReport`]; a job whose prune failed is
/// `{"job", "error": {"code", "message"}}`, the one error shape.
fn json_entries(
    outcomes: &[(String, PruneOutcome)],
    failed: &[(String, String)],
) -> Result<Vec<serde_json::Value>, serde_json::Error> {
    let mut entries = outcomes
        .iter()
        .map(|(job, o)| serde_json::to_value(PruneReport::new(job, o)))
        .collect::<Result<Vec<_>, _>>()?;
    entries.extend(failed.iter().map(|(job, why)| {
        let body = ErrorBody::new("prune_refused", why.as_str(), None);
        serde_json::json!({ "job": job, "error": body.error })
    }));
    Ok(entries)
}

/// One job's plan as a table, then what was done (or would be).
fn print_text(job: &str, outcome: &PruneOutcome) -> Result<(), CliError> {
    outln!("{job}:")?;
    outln!(
        "  {:<22} {:<20} {:>10}  {:<7} reasons",
        "backup",
        "finished (UTC)",
        "size",
        "action"
    )?;
    for d in &outcome.plan.decisions {
        outln!(
            "  {:<22} {:<20} {:>10}  {:<7} {}",
            d.id,
            d.finished_at.format("%Y-%m-%d %H:%M:%S"),
            human_bytes(d.stored_bytes),
            if d.keep { "keep" } else { "forget" },
            d.reasons.join(", ")
        )?;
    }
    if let Some(wal) = &outcome.plan.wal {
        print_wal(wal, outcome.plan.refused.is_some())?;
    }
    for (id, why) in &outcome.damaged {
        outln!("  {id:<22} damaged, left alone: {why}")?;
    }
    for (id, why) in &outcome.skipped {
        outln!("  {id:<22} not deleted: {why}; the next prune plans again")?;
    }
    if outcome.temp.files > 0 {
        outln!(
            "  {} {} temp file(s) older than temp_grace ({}) from the repository",
            if outcome.dry_run {
                "would collect"
            } else {
                "collected"
            },
            outcome.temp.files,
            human_bytes(outcome.temp.bytes)
        )?;
    }
    if let Some(why) = &outcome.plan.refused {
        outln!("  nothing deleted: {why}")?;
    } else if outcome.dry_run {
        outln!(
            "  would free {} ({} backups); run without --dry-run to apply",
            human_bytes(outcome.plan.freed_bytes()),
            outcome.plan.forget().count()
        )?;
    } else {
        let freed: u64 = outcome.deleted.iter().map(|(_, b)| b).sum();
        if !outcome.collected.is_empty() {
            outln!(
                "  collected {} uncommitted leftover(s): {}",
                outcome.collected.len(),
                outcome.collected.join(", ")
            )?;
        }
        if !outcome.young_leftovers.is_empty() {
            outln!(
                "  left {} uncommitted leftover(s) inside orphan_grace: {}",
                outcome.young_leftovers.len(),
                outcome.young_leftovers.join(", ")
            )?;
        }
        outln!(
            "  deleted {} backups, freed {}",
            outcome.deleted.len(),
            human_bytes(freed)
        )?;
        if outcome.plan.wal.is_some() {
            outln!("  deleted {} WAL file(s)", outcome.wal_deleted.len())?;
        }
    }
    Ok(())
}

/// The WAL part of a physical job's plan: runs of files with one reason
/// (first .. last), then every gap, never hidden.
fn print_wal(wal: &WalPlan, refused: bool) -> Result<(), CliError> {
    let mut runs: Vec<(&str, &str, usize, &str)> = Vec::new();
    for d in &wal.delete {
        match runs.last_mut() {
            Some(run) if run.3 == d.reason => {
                run.1 = &d.file;
                run.2 += 1;
            }
            _ => runs.push((&d.file, &d.file, 1, &d.reason)),
        }
    }
    for (first, last, count, reason) in runs {
        outln!("  WAL {first} .. {last} ({count} file(s)): forget, {reason}")?;
    }
    let note = if refused {
        " (the plan was refused)"
    } else {
        ""
    };
    outln!("  WAL: {} file(s) kept{note}", wal.kept)?;
    for gap in &wal.gaps {
        outln!("  {gap}: a restore cannot replay past it")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_failed_job_is_an_entry_in_the_one_error_shape() {
        let failed = vec![(
            "orders".to_owned(),
            "job `orders` is running elsewhere".to_owned(),
        )];
        let entries = super::json_entries(&[], &failed).unwrap();
        assert_eq!(
            entries,
            vec![serde_json::json!({
                "job": "orders",
                "error": { "code": "prune_refused", "message": "job `orders` is running elsewhere" }
            })]
        );
    }
}
