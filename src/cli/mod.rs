//! The top floor: every command of the `vigil` binary — its arguments, one
//! small dispatch per command family, and what it prints. Nothing below
//! imports `cli`.

use std::path::{Path, PathBuf};
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
mod docs;
mod drill;
pub mod error;
pub mod exit;
mod notify;
pub mod out;
pub mod pgcluster;
mod pitr;
mod proofs;
mod prune;
mod serve;
pub mod session;
pub mod status;
mod verbosity;
mod verify;
mod wal;

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
    let invocation = Invocation {
        config: cli.config,
        verbose: cli.verbose,
    };
    dispatch(&invocation, cli.command).await
}

/// What the global flags give every command.
pub struct Invocation {
    /// `--config`.
    pub config: PathBuf,
    /// How many `-v` flags were given.
    pub verbose: u8,
}

async fn dispatch(invocation: &Invocation, command: Command) -> ExitCode {
    let path = invocation.config.as_path();
    match command {
        Command::CheckConfig => serve::check_config(path),
        Command::Run => serve::daemon(path).await,
        Command::Migrate => serve::migrate(invocation).await,
        Command::Status { json } => status::command(path, json).await,
        Command::Demo { listen, dir } => demo::command(listen, dir).await,
        Command::Audit { command } => audit::dispatch(invocation, command).await,
        Command::Notify {
            command: args::NotifyCommand::Test { webhook, url, json },
        } => notify::test_command(invocation, webhook, url, json).await,
        Command::Backup { job } => commands::backup_command(invocation, job).await,
        Command::List { job, json } => commands::list_command(invocation, job, json).await,
        Command::WalPush { job, path } => wal::push_command(invocation, job, path).await,
        Command::WalFetch { job, name, dest } => {
            wal::fetch_command(invocation, job, name, dest).await
        }
        Command::Completions { shell } => finish(docs::completions(shell).map_err(CliError::from)),
        Command::Man { dir: None } => finish(docs::man_page().map_err(CliError::from)),
        Command::Man { dir: Some(dir) } => {
            finish(docs::man_pages_into(&dir).map_err(CliError::from))
        }
        Command::Restore {
            job,
            time,
            lsn,
            name,
            xid,
            immediate,
            target_action,
            json,
            backup,
            latest: _,
            database,
            to,
            to_dir,
            force,
            create,
            clean,
            jobs,
            tablespace_map,
        } => {
            let recovery = pitr::Recovery {
                target: pitr::target(time, lsn, name, xid, immediate),
                action: pitr::action(target_action.as_deref()),
                json,
            };
            let request = crate::jobs::restore::RestoreRequest {
                backup,
                recovery: None,
                database,
                to: to.unwrap_or_default(),
                create,
                clean,
                jobs,
                to_dir,
                force,
                tablespace_map: tablespace_map.into_iter().collect(),
            };
            commands::restore_command(invocation, job, request, recovery).await
        }
        Command::Prune {
            job,
            all: _,
            dry_run,
            json,
        } => commands::prune_command(invocation, job, dry_run, json).await,
        Command::Verify {
            job,
            backup,
            all,
            json,
        } => verify::command(invocation, job, backup, all, json).await,
        Command::Drill { job, json } => drill::command(invocation, job, json).await,
        Command::Pin { job, backup_id } => {
            commands::pin_command(invocation, job, backup_id, true).await
        }
        Command::Unpin { job, backup_id } => {
            commands::pin_command(invocation, job, backup_id, false).await
        }
    }
}

/// Loads the config, sets up a command's logging and runs a one-shot command.
async fn with_config<F, Fut>(invocation: &Invocation, command: F) -> ExitCode
where
    F: FnOnce(Config) -> Fut,
    Fut: std::future::Future<Output = Result<(), CliError>>,
{
    with_config_as(invocation, false, command).await
}

/// [`with_config`] for a command run with `--json` (`json`): a failure
/// is also printed on stdout in the one error shape.
async fn with_config_as<F, Fut>(invocation: &Invocation, json: bool, command: F) -> ExitCode
where
    F: FnOnce(Config) -> Fut,
    Fut: std::future::Future<Output = Result<(), CliError>>,
{
    let config = match load_as(&invocation.config, json) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let _logging = match command_logging(&config, invocation.verbose) {
        Ok(logging) => logging,
        Err(code) => return code,
    };
    finish_as(command(config).await, json)
}

/// A one-shot command's logging: `[log]`'s format and file at the level
/// `-v` or `VIGIL_LOG` asks for (warn without either), so that on success
/// stdout carries the result and stderr nothing.
fn command_logging(config: &Config, verbose: u8) -> Result<Arc<Logging>, ExitCode> {
    let env = std::env::var(verbosity::VIGIL_LOG).ok();
    let level = verbosity::command_filter(verbose, env.as_deref()).map_err(|e| {
        eprintln!("vigil: {e}");
        ExitCode::from(Exit::Usage.code())
    })?;
    let log = config::LogConfig {
        level,
        ..config.log.clone()
    };
    init_logging_with(&log).ok_or(ExitCode::FAILURE)
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

/// The daemon's logging, as `[log]` says.
fn init_logging(config: &Config) -> Option<Arc<Logging>> {
    init_logging_with(&config.log)
}

fn init_logging_with(log: &config::LogConfig) -> Option<Arc<Logging>> {
    match Logging::init(log) {
        Ok(l) => Some(Arc::new(l)),
        Err(e) => {
            eprintln!("vigil: cannot set up logging: {e} (check `log.file`)");
            None
        }
    }
}
