//! `vigil restore` of a physical job: the recovery target from the flags,
//! the recovery request (which binary and config `restore_command` runs),
//! and what is printed afterwards: how to start the server, what to check.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::error::CliError;
use crate::config::{JobConfig, JobKind};
use crate::core::recovery::{RecoveryTarget, TargetAction};
use crate::core::wal::Lsn;
use crate::jobs::restore::RestoreOutcome;
use crate::jobs::restore::recovery::RecoveryRequest;
use crate::outln;

/// The recovery flags of `vigil restore`.
#[derive(Debug, Clone, Default)]
pub struct Recovery {
    pub target: Option<RecoveryTarget>,
    pub action: TargetAction,
    pub json: bool,
}

/// At most one target (clap's `target` group allows one).
pub fn target(
    time: Option<DateTime<Utc>>,
    lsn: Option<Lsn>,
    name: Option<String>,
    xid: Option<u64>,
    immediate: bool,
) -> Option<RecoveryTarget> {
    time.map(RecoveryTarget::Time)
        .or(lsn.map(RecoveryTarget::Lsn))
        .or(name.map(RecoveryTarget::Name))
        .or(xid.map(RecoveryTarget::Xid))
        .or(immediate.then_some(RecoveryTarget::Immediate))
}

/// `--target-action` (clap admits only the three words).
pub fn action(word: Option<&str>) -> TargetAction {
    match word {
        Some("pause") => TargetAction::Pause,
        Some("shutdown") => TargetAction::Shutdown,
        _ => TargetAction::Promote,
    }
}

/// The recovery request for `job`: physical jobs always get one (no
/// target: replay every archived segment); a target on another kind is
/// refused by the restore itself.
pub fn request(
    job: &JobConfig,
    recovery: &Recovery,
    config: &Path,
) -> Result<Option<RecoveryRequest>, CliError> {
    if job.kind != JobKind::PostgresPhysical && recovery.target.is_none() {
        return Ok(None);
    }
    let absolute = |p: &Path| -> Result<PathBuf, CliError> {
        std::path::absolute(p).map_err(|source| CliError::Path {
            path: p.to_owned(),
            source,
        })
    };
    let vigil = std::env::current_exe().map_err(|source| CliError::Path {
        path: PathBuf::from("/proc/self/exe"),
        source,
    })?;
    Ok(Some(RecoveryRequest {
        target: recovery.target.clone().unwrap_or(RecoveryTarget::Latest),
        action: recovery.action,
        vigil,
        config: absolute(config)?,
    }))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Printed<'a> {
    job: &'a str,
    backup_id: &'a str,
    /// Physical: the data directory; logical: the database.
    restored_to: &'a str,
    stored_bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    recovery: Option<&'a crate::jobs::restore::recovery::Configured>,
}

/// Prints a finished restore; for a physical one, how to start it.
pub fn print(job: &str, o: &RestoreOutcome, json: bool) -> Result<(), CliError> {
    if json {
        let printed = Printed {
            job,
            backup_id: &o.backup_id,
            restored_to: &o.database,
            stored_bytes: o.stored_bytes,
            recovery: o.recovery.as_ref(),
        };
        outln!("{}", serde_json::to_string_pretty(&printed)?)?;
        return Ok(());
    }
    let size = super::commands::human_bytes(o.stored_bytes);
    let Some(r) = &o.recovery else {
        outln!(
            "restored {} of {} ({size}) into {}",
            o.object,
            o.backup_id,
            o.database
        )?;
        return Ok(());
    };
    outln!(
        "laid out base backup {} ({size}) into {}",
        o.backup_id,
        o.database
    )?;
    outln!(
        "recovery target: {} (then {})",
        r.target,
        r.target_action.as_str()
    )?;
    outln!("restore_command: {}", r.restore_command)?;
    outln!(
        "start it as the directory's owner (the postgres user), on a free port if the source runs here:"
    )?;
    outln!("  {}", r.start)?;
    outln!(
        "then check {}/recovery.log for \"recovery stopping\" (or \"archive recovery complete\") and \"database system is ready\";",
        o.database
    )?;
    outln!(
        "the server reads the WAL with `vigil wal-fetch`, so that user needs this config and, for an encrypted repository, its identity_file"
    )?;
    Ok(())
}

/// A physical job's recoverability, as `vigil list` prints it after the
/// backups (not in `--json`, which holds one object per backup).
#[derive(Debug, Clone)]
pub struct JobWindow {
    pub job: String,
    pub pitr_window: Option<crate::core::wal_chain::Window>,
    pub wal_last_archived: Option<DateTime<Utc>>,
    pub wal_files: usize,
    pub wal_gaps: Vec<crate::core::wal_chain::WalGap>,
}

/// Reads `job`'s WAL archive against its committed `manifests`.
pub async fn window(
    repo: &crate::repo::Repository,
    job: &str,
    manifests: &[crate::core::manifest::Manifest],
) -> Result<JobWindow, CliError> {
    let survey = crate::jobs::pitr::survey_in(repo, job, manifests, &[]).await?;
    Ok(JobWindow {
        job: job.to_owned(),
        pitr_window: survey.window(),
        wal_last_archived: survey.last_archived(),
        wal_files: survey.archive.len(),
        wal_gaps: survey.gaps(),
    })
}

pub fn print_window(w: &JobWindow) -> Result<(), CliError> {
    let at = |t: DateTime<Utc>| t.format("%Y-%m-%d %H:%M:%S").to_string();
    match &w.pitr_window {
        Some(window) => outln!(
            "{}: restorable to any moment from {} to about {} UTC (base backup {} onward; {} WAL file(s))",
            w.job,
            at(window.start),
            at(window.end),
            window.oldest_backup,
            w.wal_files
        )?,
        None => outln!(
            "{}: no point-in-time restore possible yet ({} WAL file(s); a base backup and its WAL up to its end are needed)",
            w.job,
            w.wal_files
        )?,
    }
    if let Some(last) = w.wal_last_archived {
        outln!("{}: newest archived WAL stored at {} UTC", w.job, at(last))?;
    }
    for gap in &w.wal_gaps {
        outln!("{}: {gap}", w.job)?;
    }
    Ok(())
}
