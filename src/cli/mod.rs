//! The top floor: every command of the `vigil` binary — its arguments, one
//! small dispatch per command family, and what it prints. Nothing below
//! imports `cli`.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;

use crate::config::{self, Config, ProcessEnv};
use crate::core::output::ErrorBody;
use crate::logging::Logging;

mod args;
pub mod audit;
pub mod commands;
pub mod demo;
pub mod error;
pub mod exit;
pub mod out;
pub mod pgcluster;
mod prune;
mod serve;
pub mod session;
pub mod status;

use args::{Cli, Command};
use error::{CliError, full_text};
use exit::{Classify, Exit};

/// Parses the command line and runs the command; the exit status follows
/// README "Exit codes".
pub async fn run() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(Exit::Usage.code())
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    dispatch(&cli.config, cli.command).await
}

async fn dispatch(path: &Path, command: Command) -> ExitCode {
    match command {
        Command::CheckConfig => serve::check_config(path),
        Command::Run => serve::daemon(path).await,
        Command::Migrate => serve::migrate(path).await,
        Command::Status { json } => status::command(path, json).await,
        Command::Demo { listen, dir } => demo::command(listen, dir).await,
        Command::Audit { command } => audit::dispatch(path, command).await,
        Command::Backup { job } => commands::backup_command(path, job).await,
        Command::List { job, json } => commands::list_command(path, job, json).await,
        Command::Restore {
            job,
            backup,
            latest: _,
            database,
            to,
            to_dir,
            force,
            create,
            clean,
            jobs,
        } => {
            let request = crate::jobs::restore::RestoreRequest {
                backup,
                database,
                to: to.unwrap_or_default(),
                create,
                clean,
                jobs,
                to_dir,
                force,
            };
            commands::restore_command(path, job, request).await
        }
        Command::Prune {
            job,
            all: _,
            dry_run,
            json,
        } => commands::prune_command(path, job, dry_run, json).await,
        Command::Pin { job, backup_id } => commands::pin_command(path, job, backup_id, true).await,
        Command::Unpin { job, backup_id } => {
            commands::pin_command(path, job, backup_id, false).await
        }
    }
}

/// Loads the config, sets up logging and runs a one-shot command.
async fn with_config<F, Fut>(path: &Path, command: F) -> ExitCode
where
    F: FnOnce(Config) -> Fut,
    Fut: std::future::Future<Output = Result<(), CliError>>,
{
    with_config_as(path, false, command).await
}

/// [`with_config`] for a command run with `--json` (`json`): a failure
/// is also printed on stdout in the one error shape.
async fn with_config_as<F, Fut>(path: &Path, json: bool, command: F) -> ExitCode
where
    F: FnOnce(Config) -> Fut,
    Fut: std::future::Future<Output = Result<(), CliError>>,
{
    let config = match load_as(path, json) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let Some(_logging) = init_logging(&config) else {
        return ExitCode::FAILURE;
    };
    finish_as(command(config).await, json)
}

/// A one-shot command's exit status, from its error's type (README "Exit
/// codes"); a closed stdout ends it quietly.
fn finish(result: Result<(), CliError>) -> ExitCode {
    finish_as(result, false)
}

/// [`finish`]; with `json`, the failure also goes to stdout as
/// `{"error": {"code", "message"}}` (README "JSON output"), unless the
/// document printed already tells it.
fn finish_as(result: Result<(), CliError>, json: bool) -> ExitCode {
    let Err(e) = result else {
        return ExitCode::SUCCESS;
    };
    let exit = e.exit();
    if exit != Exit::StdoutClosed {
        let text = full_text(&e);
        eprintln!("vigil: {text}");
        if json && !e.told_in_output() {
            print_json_error(e.code(), &text);
        }
    }
    ExitCode::from(exit.code())
}

/// The one error shape on stdout; a closed stdout has no reader to tell.
fn print_json_error(code: &str, message: &str) {
    let _ = crate::outln!("{}", ErrorBody::new(code, message, None).to_json());
}

/// A token cancelled by SIGINT/SIGTERM, so Ctrl-C aborts a run cleanly.
fn cancel_on_signal() -> tokio_util::sync::CancellationToken {
    let token = tokio_util::sync::CancellationToken::new();
    if let Ok(mut control) = crate::daemon::signals::listen() {
        let token = token.clone();
        tokio::spawn(async move {
            while let Some(message) = control.recv().await {
                if message == crate::daemon::signals::Control::Shutdown {
                    token.cancel();
                }
            }
        });
    }
    token
}

fn load(path: &Path) -> Result<Config, ExitCode> {
    load_as(path, false)
}

/// [`load`]; with `json`, a bad config is also told on stdout.
fn load_as(path: &Path, json: bool) -> Result<Config, ExitCode> {
    config::load(path, &ProcessEnv).map_err(|e| {
        eprint!("vigil: {e}");
        if json {
            print_json_error("config_invalid", e.to_string().trim_end());
        }
        ExitCode::from(Exit::Usage.code())
    })
}

fn init_logging(config: &Config) -> Option<Arc<Logging>> {
    match Logging::init(&config.log) {
        Ok(l) => Some(Arc::new(l)),
        Err(e) => {
            eprintln!("vigil: cannot set up logging: {e} (check `log.file`)");
            None
        }
    }
}
