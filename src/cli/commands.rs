//! The job commands of the CLI: `backup`, `list`, `restore`, `prune`, `pin`.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::error::CliError;
use super::exit::{Classify, CommandError};
use super::session::{Session, journal};
use super::{Invocation, cancel_on_signal, with_config, with_config_as};
use crate::config::{Config, JobKind};
use crate::core::journal_record::Entry;
use crate::core::manifest::Manifest;
use crate::jobs::backup::Progress;
use crate::jobs::restore::RestoreRequest;
use crate::jobs::{JobContext, Trigger};
use crate::journal::Journal;
use crate::outln;
use crate::repo::Repository;

/// `vigil backup JOB`.
pub async fn backup_command(invocation: &Invocation, job: String) -> ExitCode {
    with_config(invocation, |c| backup_or_mirror(c, job)).await
}

/// `vigil list [JOB] [--json]`.
pub async fn list_command(invocation: &Invocation, job: Option<String>, json: bool) -> ExitCode {
    with_config_as(invocation, json, |c| async move {
        list(&c, job.as_deref(), json).await
    })
    .await
}

/// `vigil restore JOB …`.
pub async fn restore_command(
    invocation: &Invocation,
    job: String,
    mut request: RestoreRequest,
    recovery: super::pitr::Recovery,
) -> ExitCode {
    let json = recovery.json;
    with_config_as(invocation, json, |config| async move {
        let job_config = config.job(&job)?;
        request.recovery = super::pitr::request(job_config, &recovery, &invocation.config)?;
        restore(&config, &job, request, cancel_on_signal(), json).await
    })
    .await
}

/// `vigil prune JOB|--all [--dry-run] [--json]`.
pub async fn prune_command(
    invocation: &Invocation,
    job: Option<String>,
    dry_run: bool,
    json: bool,
) -> ExitCode {
    with_config_as(invocation, json, |config| async move {
        if let Some(job) = &job {
            config.job(job)?;
        }
        super::prune::prune(&config, job.as_deref(), dry_run, json).await
    })
    .await
}

/// `vigil pin JOB ID` (`pinned`) or `vigil unpin JOB ID`.
pub async fn pin_command(
    invocation: &Invocation,
    job: String,
    backup_id: String,
    pinned: bool,
) -> ExitCode {
    with_config(invocation, |c| async move {
        pin(&c, &job, &backup_id, pinned).await
    })
    .await
}

/// `vigil backup JOB`: a mirror job copies; any other backs up.
async fn backup_or_mirror(config: Config, job: String) -> Result<(), CliError> {
    // A usage error is told before the catalog is waited for.
    if config.job(&job)?.kind == JobKind::Mirror {
        let report = mirror(&config, &job, cancel_on_signal()).await?;
        outln!(
            "mirror {job}: {} object(s) copied ({}), {} already there ({}), {} backup(s) completed, {} deleted",
            report.copied,
            human_bytes(report.copied_bytes),
            report.skipped,
            human_bytes(report.skipped_bytes),
            report.backups_completed,
            report.deleted
        )?;
        return Ok(());
    }
    let manifest = backup(&config, &job, cancel_on_signal()).await?;
    outln!(
        "backup {} of {} committed: {} stored ({} from the source)",
        manifest.backup_id,
        job,
        human_bytes(manifest.stored_bytes()),
        human_bytes(manifest.raw_bytes())
    )?;
    Ok(())
}

/// `vigil backup JOB`: one run now, through the same step and lock as the scheduler.
pub async fn backup(
    config: &Config,
    job: &str,
    cancel: CancellationToken,
) -> Result<Manifest, CliError> {
    run_job(config, job, async |ctx| {
        let progress = Progress::default();
        let reporter = tokio::spawn(report_progress(Arc::clone(&progress.source_bytes)));
        let result = crate::jobs::backup::run(ctx, Trigger::Cli, &progress, &cancel).await;
        reporter.abort();
        if std::io::stderr().is_terminal() {
            eprint!("\r\x1b[2K");
        }
        result
    })
    .await
}

/// Prints the bytes read so far and the rate: on a terminal one line
/// rewritten twice a second, else a line every 10 s. Runs until aborted.
async fn report_progress(bytes: Arc<AtomicU64>) {
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
}

/// `vigil backup MIRROR-JOB`: one mirror run now, under the job's lock.
pub async fn mirror(
    config: &Config,
    job: &str,
    cancel: CancellationToken,
) -> Result<crate::jobs::mirror::MirrorReport, CliError> {
    run_job(config, job, async |ctx| {
        crate::jobs::mirror::run(ctx, Trigger::Cli, &cancel).await
    })
    .await
}

/// Runs `step` for `job` in a session of its own: the journal is flushed
/// whether it succeeds or not, and its error is redacted with the job's
/// secrets (keeping its exit status).
pub(super) async fn run_job<T, E>(
    config: &Config,
    job: &str,
    step: impl AsyncFnOnce(&JobContext) -> Result<T, E>,
) -> Result<T, CliError>
where
    E: Classify + std::fmt::Display,
{
    let session = Session::open(config).await?;
    let ctx = session.context(config, job)?;
    let result = step(&ctx).await;
    session.close().await;
    Ok(result.map_err(|e| CommandError::redacted(&e, |text| ctx.redact(text)))?)
}

/// `vigil list --json`: the backups, then the damaged ones, marked by a
/// `damaged` key that committed backups never have. Each backup becomes a
/// JSON value (sorted keys, as ever) only while it is written, so 10,000
/// of them never sit in memory as values or as one string.
struct ListJson<'a> {
    backups: &'a [Manifest],
    damaged: &'a [(&'a str, String, String)],
}

impl serde::Serialize for ListJson<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{Error, SerializeSeq};
        let mut seq = s.serialize_seq(Some(self.backups.len() + self.damaged.len()))?;
        for m in self.backups {
            seq.serialize_element(&serde_json::to_value(m).map_err(S::Error::custom)?)?;
        }
        for (job, id, why) in self.damaged {
            seq.serialize_element(
                &serde_json::json!({ "job": job, "backupId": id, "damaged": why }),
            )?;
        }
        seq.end()
    }
}

/// `vigil list [JOB] [--json]`: from the repository alone (no catalog needed).
pub async fn list(config: &Config, job: Option<&str>, json: bool) -> Result<(), CliError> {
    let jobs: Vec<&str> = match job {
        Some(name) => {
            config.job(name)?;
            vec![name]
        }
        None => config.jobs.keys().map(String::as_str).collect(),
    };
    if jobs.is_empty() {
        return Err(CliError::NoJobs);
    }
    let mut all = Vec::new();
    let mut damaged = Vec::new();
    let mut windows = Vec::new();
    for name in jobs.iter().copied() {
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
        if job.kind == JobKind::PostgresPhysical && !json {
            // Per-job facts stay out of the JSON array (one object per
            // backup); scripts read the window from `status`.
            windows.push(super::pitr::window(&repo, name, &listing.backups).await?);
        }
        if all.is_empty() {
            // One job (the usual case): its backups, not a copy of them.
            all = listing.backups;
        } else {
            all.extend(listing.backups);
        }
        damaged.extend(listing.damaged.into_iter().map(|(id, why)| (name, id, why)));
    }
    if json {
        let listing = ListJson {
            backups: &all,
            damaged: &damaged,
        };
        crate::cli::out::write_json_pretty(&listing)?;
        return Ok(());
    }
    outln!(
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
        outln!(
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
        outln!("{job:<12} {id:<22} DAMAGED (not a backup): {why}")?;
    }
    windows.iter().try_for_each(super::pitr::print_window)?;
    // Per-job facts stay out of the JSON array (one object per backup).
    let proofs = super::proofs::read(config, &jobs).await;
    for line in super::proofs::lines(&proofs, chrono::Utc::now()) {
        outln!("{line}")?;
    }
    Ok(())
}

/// `vigil restore JOB …`.
pub async fn restore(
    config: &Config,
    job: &str,
    request: RestoreRequest,
    cancel: CancellationToken,
    json: bool,
) -> Result<(), CliError> {
    // A malformed --to is a usage error, found before anything is contacted.
    if request.to_dir.is_none() {
        crate::jobs::restore::parse_target(&request.to)?;
    }
    let outcome = run_job(config, job, async |ctx| {
        crate::jobs::restore::run(ctx, &request, &cancel).await
    })
    .await?;
    super::pitr::print(job, &outcome, json)
}

pub use crate::core::units::human_bytes;

/// `vigil pin JOB ID` / `vigil unpin JOB ID`: stored in the repository.
/// Journals only what happened: a missing backup fails before any record.
pub async fn pin(
    config: &Config,
    job: &str,
    backup_id: &str,
    pinned: bool,
) -> Result<(), CliError> {
    let job_config = config.job(job)?;
    let repo = Repository::open(
        &job_config.repository,
        &config.repositories[&job_config.repository],
    )?;
    repo.read_manifest(job, backup_id).await?;
    if !pinned && !repo.pins(job).await?.contains(backup_id) {
        outln!("{job}/{backup_id} was not pinned")?;
        return Ok(());
    }
    let journal = journal(config)?;
    let result = set_pin(&repo, &journal, job, backup_id, pinned).await;
    journal.close().await;
    result?;
    outln!(
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
) -> Result<(), CliError> {
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
