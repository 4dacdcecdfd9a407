//! `vigil drill JOB [--json]`: one restore drill now, with the daemon's
//! code and records. Exit 0 when it passed; 1 when it failed (naming the
//! check query or the error); 3 when the target server or the repository
//! could not be reached; 64 for a job without `[drill]`.

use std::path::PathBuf;
use std::process::ExitCode;

use super::commands::run_job;
use super::error::CliError;
use super::exit::Classify;
use super::{Invocation, cancel_on_signal, with_config_as};
use crate::core::proofs::DrillRun;
use crate::jobs::Trigger;
use crate::jobs::drill::{DrillError, Drilled, Invoker};
use crate::outln;

pub async fn command(invocation: &Invocation, job: String, json: bool) -> ExitCode {
    with_config_as(invocation, json, |config| async move {
        if config.job(&job)?.drill.is_none() {
            return Err(CliError::Drill(DrillError::NotConfigured { job }));
        }
        let invoker = invoker(&invocation.config)?;
        let cancel = cancel_on_signal();
        let drilled = run_job(&config, &job, async |ctx| {
            crate::jobs::drill::run(ctx, Trigger::Cli, &invoker, &cancel).await
        })
        .await?;
        print(&job, &drilled, json)?;
        match &drilled.failure {
            None => Ok(()),
            Some(failure) => Err(CliError::DrillFailed {
                job,
                exit: failure.exit(),
                error: drilled.run.error.clone().unwrap_or_default(),
            }),
        }
    })
    .await
}

/// This binary and the config, absolute: a physical drill's server runs
/// `restore_command` from its data directory.
fn invoker(config: &std::path::Path) -> Result<Invoker, CliError> {
    let vigil = std::env::current_exe().map_err(|source| CliError::Path {
        path: PathBuf::from("/proc/self/exe"),
        source,
    })?;
    let config = std::path::absolute(config).map_err(|source| CliError::Path {
        path: config.to_owned(),
        source,
    })?;
    Ok(Invoker { vigil, config })
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Printed<'a> {
    job: &'a str,
    target: &'a str,
    #[serde(flatten)]
    run: &'a DrillRun,
}

fn print(job: &str, drilled: &Drilled, json: bool) -> Result<(), CliError> {
    let run = &drilled.run;
    if json {
        let printed = Printed {
            job,
            target: &drilled.target,
            run,
        };
        outln!("{}", serde_json::to_string_pretty(&printed)?)?;
        return Ok(());
    }
    let backup = run.backup_id.as_deref().unwrap_or("-");
    let point = run
        .recovery_target
        .as_deref()
        .map(|t| format!(" to {t}"))
        .unwrap_or_default();
    match (run.ok, run.rto_seconds) {
        (true, Some(rto)) => outln!(
            "drill {job}: passed: backup {backup}{point} restored into {}, every check true, RTO {rto:.1}s",
            drilled.target
        )?,
        _ => outln!(
            "drill {job}: FAILED: backup {backup}{point} into {}: {}",
            drilled.target,
            run.error.as_deref().unwrap_or("unknown error")
        )?,
    }
    Ok(())
}
