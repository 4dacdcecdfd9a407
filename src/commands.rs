//! The job commands of the CLI: `backup`, `list`, `restore`.

use std::io::IsTerminal;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::core::journal_record::Entry;
use crate::core::manifest::Manifest;
use crate::exit::CommandError;
use crate::jobs::backup::Progress;
use crate::jobs::restore::RestoreRequest;
use crate::jobs::{JobContext, Trigger};
use crate::journal::{Journal, JournalOptions};
use crate::repo::Repository;

/// What every CLI command that runs a job brings up, once: the audit
/// journal and the catalog. The catalog is never waited for nor migrated
/// here; when it cannot be used the command goes on without it.
pub struct Session {
    pub journal: Journal,
    /// Closed when the catalog was down or unmigrated: every write to it
    /// is then skipped at once, and the journal keeps the record.
    pub catalog: deadpool_postgres::Pool,
}

impl Session {
    pub async fn open(config: &Config) -> anyhow::Result<Session> {
        let journal = journal(config)?;
        let catalog = catalog(config).await?;
        Ok(Session { journal, catalog })
    }

    /// A job context for one job of this command, acting as the CLI user.
    pub fn context(&self, config: &Config, job: &str) -> anyhow::Result<JobContext> {
        config.job(job)?;
        JobContext::new(
            config,
            job,
            self.catalog.clone(),
            &instance(config),
            self.journal.clone(),
            crate::journal::cli_actor(),
        )
        .map_err(anyhow::Error::msg)
    }

    /// Flushes the journal.
    pub async fn close(self) {
        self.journal.close().await;
    }
}

/// The catalog for a CLI command: one short probe (at most
/// [`crate::catalog::PROBE_TIMEOUT`]); if it fails, or finds the schema
/// behind, one line on stderr and a closed pool. Only `vigil migrate` and
/// the daemon change the schema.
pub async fn catalog(config: &Config) -> anyhow::Result<deadpool_postgres::Pool> {
    let secrets = config.secrets();
    let redact = |e: crate::catalog::CatalogError| {
        CommandError::redacted(&e, |text| crate::core::redact::redact_text(text, &secrets))
    };
    match crate::catalog::probe(&config.catalog, crate::catalog::PROBE_TIMEOUT).await {
        Ok(pool) => Ok(pool),
        Err(e) => {
            eprintln!(
                "vigil: {}; the catalog was not updated (this command's journal records reach it through the daemon's journal shipper)",
                crate::core::redact::redact_text(&e.to_string(), &secrets)
            );
            let pool = crate::catalog::pool(&config.catalog).map_err(redact)?;
            pool.close();
            Ok(pool)
        }
    }
}

/// The audit journal for one CLI command (actor: the invoking user).
/// Written under the same lock as the daemon's, so both append safely.
pub fn journal(config: &Config) -> anyhow::Result<Journal> {
    let options = JournalOptions::from_config(config, false);
    Journal::open(options, Default::default()).with_context(|| {
        format!(
            "cannot open the audit journal in {} (`journal.dir`); run the command as vigil's user",
            config.journal_dir().display()
        )
    })
}

pub fn instance(config: &Config) -> String {
    config
        .daemon
        .instance
        .clone()
        .unwrap_or_else(crate::daemon::hostname)
}

/// `vigil backup JOB`: one run now, through the same step and lock as the scheduler.
pub async fn backup(
    config: &Config,
    job: &str,
    cancel: CancellationToken,
) -> anyhow::Result<Manifest> {
    let session = Session::open(config).await?;
    let ctx = session.context(config, job)?;
    let progress = Progress::default();
    let bytes = std::sync::Arc::clone(&progress.source_bytes);
    let reporter = tokio::spawn(async move {
        let terminal = std::io::stderr().is_terminal();
        let started = Instant::now();
        let period = if terminal {
            Duration::from_millis(500)
        } else {
            Duration::from_secs(10)
        };
        loop {
            tokio::time::sleep(period).await;
            let done = bytes.load(Ordering::Relaxed);
            let rate = done as f64 / started.elapsed().as_secs_f64().max(0.001);
            let line = format!(
                "{} read from the source, {}/s",
                human_bytes(done),
                human_bytes(rate as u64)
            );
            if terminal {
                eprint!("\r\x1b[2K{line}");
            } else {
                eprintln!("{line}");
            }
        }
    });
    let result = crate::jobs::backup::run(&ctx, Trigger::Cli, &progress, &cancel).await;
    session.close().await;
    reporter.abort();
    if std::io::stderr().is_terminal() {
        eprint!("\r\x1b[2K");
    }
    result.map_err(|e| CommandError::redacted(&e, |text| ctx.redact(text)).into())
}

/// `vigil backup MIRROR-JOB`: one mirror run now, under the job's lock.
pub async fn mirror(
    config: &Config,
    job: &str,
    cancel: CancellationToken,
) -> anyhow::Result<crate::jobs::mirror::MirrorReport> {
    let session = Session::open(config).await?;
    let ctx = session.context(config, job)?;
    let result = crate::jobs::mirror::run(&ctx, Trigger::Cli, &cancel).await;
    session.close().await;
    result.map_err(|e| CommandError::redacted(&e, |text| ctx.redact(text)).into())
}

/// `vigil list [JOB] [--json]`: from the repository alone (no catalog needed).
pub async fn list(config: &Config, job: Option<&str>, json: bool) -> anyhow::Result<()> {
    let jobs: Vec<&str> = match job {
        Some(name) => {
            config.job(name)?;
            vec![name]
        }
        None => config.jobs.keys().map(String::as_str).collect(),
    };
    if jobs.is_empty() {
        bail!("no jobs are configured");
    }
    let mut all = Vec::new();
    let mut damaged = Vec::new();
    for name in jobs {
        let job = &config.jobs[name];
        let repo = Repository::open(&job.repository, &config.repositories[&job.repository])?;
        let listing = repo.list(name).await?;
        for (id, why) in &listing.damaged {
            eprintln!("warning: {name}/{id}: damaged manifest, not a backup: {why}");
        }
        if !listing.uncommitted.is_empty() {
            eprintln!(
                "note: {name}: {} uncommitted leftover(s) (never finished; prune removes them)",
                listing.uncommitted.len()
            );
        }
        all.extend(listing.backups);
        damaged.extend(listing.damaged.into_iter().map(|(id, why)| (name, id, why)));
    }
    if json {
        // Damaged ones follow the backups, marked by a `damaged` key that
        // committed backups never have.
        let mut entries: Vec<serde_json::Value> = all
            .iter()
            .map(serde_json::to_value)
            .collect::<Result<_, _>>()?;
        entries.extend(damaged.iter().map(
            |(job, id, why)| serde_json::json!({ "job": job, "backupId": id, "damaged": why }),
        ));
        crate::outln!("{}", serde_json::to_string_pretty(&entries)?)?;
        return Ok(());
    }
    crate::outln!(
        "{:<12} {:<22} {:<20} {:>9} {:>10} {:>10}  databases",
        "job",
        "backup",
        "finished (UTC)",
        "took",
        "stored",
        "source"
    )?;
    for m in &all {
        let took = (m.finished_at - m.started_at).to_std().unwrap_or_default();
        crate::outln!(
            "{:<12} {:<22} {:<20} {:>9} {:>10} {:>10}  {}{}",
            m.job,
            m.backup_id,
            m.finished_at.format("%Y-%m-%d %H:%M:%S"),
            humantime::format_duration(Duration::from_secs(took.as_secs())).to_string(),
            human_bytes(m.stored_bytes()),
            human_bytes(m.raw_bytes()),
            m.database_names().join(","),
            if m.encryption.is_some() { " (age)" } else { "" },
        )?;
    }
    for (job, id, why) in &damaged {
        crate::outln!("{job:<12} {id:<22} DAMAGED (not a backup): {why}")?;
    }
    Ok(())
}

/// `vigil restore JOB …`.
pub async fn restore(
    config: &Config,
    job: &str,
    request: RestoreRequest,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    // A malformed --to is a usage error, found before anything is contacted.
    if request.to_dir.is_none() {
        crate::jobs::restore::parse_target(&request.to)?;
    }
    let session = Session::open(config).await?;
    let ctx = session.context(config, job)?;
    let result = crate::jobs::restore::run(&ctx, &request, &cancel).await;
    session.close().await;
    let outcome = result.map_err(|e| CommandError::redacted(&e, |text| ctx.redact(text)))?;
    crate::outln!(
        "restored {} of {} ({}) into {}",
        outcome.object,
        outcome.backup_id,
        human_bytes(outcome.stored_bytes),
        outcome.database
    )?;
    Ok(())
}

pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// `vigil prune JOB|--all [--dry-run] [--json]`.
pub async fn prune(
    config: &Config,
    job: Option<&str>,
    dry_run: bool,
    json: bool,
) -> anyhow::Result<()> {
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
            Err(e) => failed.push(format!("{name}: {}", ctx.redact(&e.to_string()))),
        }
    }
    session.close().await;
    if json {
        let value: Vec<serde_json::Value> = outcomes
            .iter()
            .map(|(job, o)| {
                serde_json::json!({ "job": job, "dryRun": o.dry_run, "plan": o.plan, "freedBytes": o.plan.freed_bytes(),
                    "deleted": o.deleted.iter().map(|(id, _)| id).collect::<Vec<_>>(),
                    "collected": o.collected, "youngLeftovers": o.young_leftovers,
                    "tempFiles": o.temp.files, "tempBytes": o.temp.bytes,
                    "skipped": o.skipped.iter().map(|(id, why)| serde_json::json!({ "backupId": id, "reason": why })).collect::<Vec<_>>(),
                    "damaged": o.damaged.iter().map(|(id, why)| serde_json::json!({ "backupId": id, "reason": why })).collect::<Vec<_>>() })
            })
            .collect();
        crate::outln!("{}", serde_json::to_string_pretty(&value)?)?;
    } else {
        for (job, outcome) in &outcomes {
            crate::outln!("{job}:")?;
            crate::outln!(
                "  {:<22} {:<20} {:>10}  {:<7} reasons",
                "backup",
                "finished (UTC)",
                "size",
                "action"
            )?;
            for d in &outcome.plan.decisions {
                crate::outln!(
                    "  {:<22} {:<20} {:>10}  {:<7} {}",
                    d.id,
                    d.finished_at.format("%Y-%m-%d %H:%M:%S"),
                    human_bytes(d.stored_bytes),
                    if d.keep { "keep" } else { "forget" },
                    d.reasons.join(", ")
                )?;
            }
            for (id, why) in &outcome.damaged {
                crate::outln!("  {id:<22} damaged, left alone: {why}")?;
            }
            for (id, why) in &outcome.skipped {
                crate::outln!("  {id:<22} not deleted: {why}; the next prune plans again")?;
            }
            if outcome.temp.files > 0 {
                crate::outln!(
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
                crate::outln!("  nothing deleted: {why}")?;
            } else if outcome.dry_run {
                crate::outln!(
                    "  would free {} ({} backups); run without --dry-run to apply",
                    human_bytes(outcome.plan.freed_bytes()),
                    outcome.plan.forget().count()
                )?;
            } else {
                let freed: u64 = outcome.deleted.iter().map(|(_, b)| b).sum();
                if !outcome.collected.is_empty() {
                    crate::outln!(
                        "  collected {} uncommitted leftover(s): {}",
                        outcome.collected.len(),
                        outcome.collected.join(", ")
                    )?;
                }
                if !outcome.young_leftovers.is_empty() {
                    crate::outln!(
                        "  left {} uncommitted leftover(s) inside orphan_grace: {}",
                        outcome.young_leftovers.len(),
                        outcome.young_leftovers.join(", ")
                    )?;
                }
                crate::outln!(
                    "  deleted {} backups, freed {}",
                    outcome.deleted.len(),
                    human_bytes(freed)
                )?;
            }
        }
    }
    if !failed.is_empty() {
        bail!("prune failed: {}", failed.join("; "));
    }
    Ok(())
}

/// `vigil pin JOB ID` / `vigil unpin JOB ID`: stored in the repository.
/// Journals only what happened: a missing backup fails before any record.
pub async fn pin(config: &Config, job: &str, backup_id: &str, pinned: bool) -> anyhow::Result<()> {
    let job_config = config.job(job)?;
    let repo = Repository::open(
        &job_config.repository,
        &config.repositories[&job_config.repository],
    )?;
    repo.read_manifest(job, backup_id).await?;
    if !pinned && !repo.pins(job).await?.contains(backup_id) {
        crate::outln!("{job}/{backup_id} was not pinned")?;
        return Ok(());
    }
    let journal = journal(config)?;
    let result = set_pin(&repo, &journal, job, backup_id, pinned).await;
    journal.close().await;
    result?;
    crate::outln!(
        "{} {job}/{backup_id}",
        if pinned { "pinned" } else { "unpinned" }
    )?;
    Ok(())
}

/// Changes the pin and journals it: a pin once written; an unpin (which
/// exposes the backup to retention) on disk before, and its failure after.
async fn set_pin(
    repo: &Repository,
    journal: &Journal,
    job: &str,
    backup_id: &str,
    pinned: bool,
) -> anyhow::Result<()> {
    let event = |name: &str, data: serde_json::Value| {
        Entry::at(chrono::Utc::now(), name, crate::journal::cli_actor(), data)
    };
    let data = serde_json::json!({ "job": job, "backup_id": backup_id });
    if pinned {
        repo.set_pin(job, backup_id, true).await?;
        journal.emit(event("backup.pinned", data));
        return Ok(());
    }
    journal.commit(event("backup.unpinned", data)).await?;
    if let Err(e) = repo.set_pin(job, backup_id, false).await {
        journal.emit(event(
            "backup.unpin_failed",
            serde_json::json!({ "job": job, "backup_id": backup_id, "error": e.to_string() }),
        ));
        return Err(e.into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn human_bytes() {
        assert_eq!(super::human_bytes(512), "512 B");
        assert_eq!(super::human_bytes(1536), "1.5 KiB");
        assert_eq!(super::human_bytes(5 << 30), "5.0 GiB");
    }
}
