//! `vigil wal-push` and `vigil wal-fetch`: what PostgreSQL's archiver and
//! startup process run. Quiet on success (the server logs stderr); a
//! missing file on fetch exits 1 with nothing on stderr.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use super::error::full_text;
use super::exit::{Classify, Exit};
use super::{Invocation, command_logging, load};
use crate::config::Config;
use crate::core::redact::redact_text;
use crate::jobs::wal::{Archive, Fetched, WalError, fetch, journal_best_effort, push};
use crate::logging::Logging;

impl Classify for WalError {
    fn exit(&self) -> Exit {
        match self {
            WalError::UnknownJob(_)
            | WalError::NotPhysical { .. }
            | WalError::Name(_)
            | WalError::Key(_) => Exit::Usage,
            WalError::Repo(e) => e.exit(),
            WalError::GaveUp { .. } => Exit::Unreachable,
            WalError::ReadFile { .. }
            | WalError::SegmentSize { .. }
            | WalError::Encode { .. }
            | WalError::Conflict { .. }
            | WalError::Foreign { .. }
            | WalError::Damaged { .. }
            | WalError::WriteDest { .. }
            | WalError::Task { .. } => Exit::Failed,
        }
    }
}

pub async fn push_command(invocation: &Invocation, job: String, path: PathBuf) -> ExitCode {
    let Some((config, _logging)) = setup(invocation) else {
        return ExitCode::from(Exit::Usage.code());
    };
    let archive = match Archive::open(&config, &job) {
        Ok(a) => a,
        Err(e) => return fail(&config, &e),
    };
    match push(&archive, &path).await {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            let text = redacted(&config, &e);
            // Usage errors are the operator's to see; they change nothing.
            if e.exit() != Exit::Usage {
                journal_best_effort(&config, archive.push_failure(&path, &e, text));
            }
            fail(&config, &e)
        }
    }
}

pub async fn fetch_command(
    invocation: &Invocation,
    job: String,
    name: String,
    dest: PathBuf,
) -> ExitCode {
    let Some((config, _logging)) = setup(invocation) else {
        return ExitCode::from(Exit::Usage.code());
    };
    let archive = match Archive::open(&config, &job) {
        Ok(a) => a,
        Err(e) => return fail(&config, &e),
    };
    match fetch(&archive, &name, &dest).await {
        Ok(Fetched::Restored { .. }) => ExitCode::SUCCESS,
        // PostgreSQL asks for files past the end of the archive routinely.
        Ok(Fetched::Missing) => ExitCode::from(Exit::Failed.code()),
        Err(e) => {
            if matches!(e, WalError::Damaged { .. }) {
                let text = redacted(&config, &e);
                journal_best_effort(&config, archive.fetch_failure(&name, text));
            }
            fail(&config, &e)
        }
    }
}

/// The config and a command's logging (kept until the command ends);
/// `None` after saying why not.
fn setup(invocation: &Invocation) -> Option<(Config, Arc<Logging>)> {
    let config = load(&invocation.config).ok()?;
    let logging = command_logging(&config, invocation.verbose).ok()?;
    Some((config, logging))
}

/// The error and its sources with the config's secrets masked.
fn redacted(config: &Config, e: &WalError) -> String {
    redact_text(&full_text(e), &config.secrets())
}

fn fail(config: &Config, e: &WalError) -> ExitCode {
    eprintln!("vigil: {}", redacted(config, e));
    ExitCode::from(e.exit().code())
}
