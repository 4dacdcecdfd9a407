//! `vigil verify JOB [--backup ID | --all] [--json]`: what it prints and
//! how it exits (1 when any object is bad or the WAL chain has a gap).

use std::process::ExitCode;

use super::commands::{human_bytes, run_job};
use super::error::CliError;
use super::{Invocation, cancel_on_signal, with_config_as};
use crate::jobs::verify::{VerifyReport, VerifyRequest};
use crate::outln;

/// Said when only the stored bytes could be read.
const STORED_ONLY: &str = "stored bytes only: the repository is encrypted and no encryption.identity_file is configured, so objects were hashed but not decrypted or decoded";

pub async fn command(
    invocation: &Invocation,
    job: String,
    backup: Option<String>,
    all: bool,
    json: bool,
) -> ExitCode {
    with_config_as(invocation, json, |config| async move {
        config.job(&job)?;
        let request = VerifyRequest {
            backup,
            all,
            budget: None,
        };
        let cancel = cancel_on_signal();
        let report = run_job(&config, &job, async |ctx| {
            crate::jobs::verify::run(ctx, &request, &cancel).await
        })
        .await?;
        print(&report, json)?;
        verdict(&report)
    })
    .await
}

fn verdict(report: &VerifyReport) -> Result<(), CliError> {
    if report.ok {
        return Ok(());
    }
    Err(CliError::VerifyFailed {
        bad: report.bad_objects().count(),
        gaps: report.wal_gaps.len(),
    })
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Printed<'a> {
    #[serde(flatten)]
    report: &'a VerifyReport,
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<&'static str>,
}

fn print(report: &VerifyReport, json: bool) -> Result<(), CliError> {
    let note = (!report.content_checked).then_some(STORED_ONLY);
    if json {
        let printed = Printed { report, note };
        outln!("{}", serde_json::to_string_pretty(&printed)?)?;
        return Ok(());
    }
    let checked = if report.content_checked {
        "content checked"
    } else {
        "stored bytes only"
    };
    for b in &report.backups {
        let read = human_bytes(b.bytes_read);
        if b.bad.is_empty() {
            outln!(
                "{}/{}: ok ({} object(s), {read} read, {checked})",
                report.job,
                b.backup_id,
                b.objects
            )?;
            continue;
        }
        outln!(
            "{}/{}: BAD ({} of {} object(s))",
            report.job,
            b.backup_id,
            b.bad.len(),
            b.objects
        )?;
        for bad in &b.bad {
            outln!("  {}: {}", bad.object, bad.error)?;
        }
    }
    if let Some(wal) = &report.wal {
        print_wal(&report.job, wal)?;
    }
    for gap in &report.wal_gaps {
        outln!("{}: {gap}", report.job)?;
    }
    if let Some(note) = note {
        outln!("{}: {note}", report.job)?;
    }
    Ok(())
}

fn print_wal(job: &str, wal: &crate::jobs::verify_wal::WalVerdict) -> Result<(), CliError> {
    let checked = if wal.content_checked {
        "hashes checked"
    } else {
        "headers only"
    };
    if wal.bad.is_empty() {
        outln!(
            "{job}/wal: ok ({} object(s), {} read, {checked})",
            wal.objects,
            human_bytes(wal.bytes_read)
        )?;
        return Ok(());
    }
    outln!(
        "{job}/wal: BAD ({} of {} object(s))",
        wal.bad.len(),
        wal.objects
    )?;
    for bad in &wal.bad {
        outln!(
            "  {} (needed by {}): {}",
            bad.object,
            bad.backup_id,
            bad.error
        )?;
    }
    Ok(())
}
