//! `vigil run`, `vigil check-config` and `vigil migrate`: the commands that
//! bring up (or check) what the daemon needs.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use super::error::CliError;
use super::exit::{Classify, CommandError, Exit};
use super::session::{redacted, wait_for_catalog};
use super::{Invocation, command_logging, finish, init_logging, load};
use crate::config::{self, Config};
use crate::daemon::Daemon;
use crate::logging::Logging;
use crate::{out, outln};

/// The log target these lines had when they were written from `main.rs`
/// (the binary's crate root), kept so log filters and readers see no change.
const LOG_TARGET: &str = "vigil";

/// `vigil check-config`: validate, then print the effective config redacted.
pub fn check_config(path: &Path) -> ExitCode {
    let config = match load(path) {
        Ok(config) => config,
        Err(code) => return code,
    };
    if let Err(code) = refuse_exposed_secrets(path, &config, |m| eprintln!("vigil: warning: {m}")) {
        return code;
    }
    let printed = outln!(
        "# {} is valid; effective config, secrets redacted:",
        path.display()
    )
    .and_then(|()| out!("{}", config.to_redacted_toml()));
    finish(printed.map_err(CliError::from))
}

/// `vigil run`: the daemon, until a shutdown signal.
pub async fn daemon(path: &Path) -> ExitCode {
    let config = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let Some(logging) = init_logging(&config) else {
        return ExitCode::FAILURE;
    };
    if let Err(code) = refuse_exposed_secrets(
        path,
        &config,
        |m| tracing::warn!(target: LOG_TARGET, problem = %m, "a secret is readable by group or others"),
    ) {
        return code;
    }
    serve(path.to_owned(), config, logging, None).await
}

/// `vigil migrate`: apply the catalog migrations and print the version.
pub async fn migrate(invocation: &Invocation) -> ExitCode {
    let config = match load(&invocation.config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let _logging = match command_logging(&config, invocation.verbose) {
        Ok(logging) => logging,
        Err(code) => return code,
    };
    match apply_migrations(&config).await {
        Ok(outcome) => finish(
            outln!(
                "catalog schema at version {} (applied now: {})",
                outcome.version,
                if outcome.applied.is_empty() {
                    "none".into()
                } else {
                    outcome.applied.join(", ")
                }
            )
            .map_err(CliError::from),
        ),
        Err(e) => {
            tracing::error!(target: LOG_TARGET, error = %e, "migration failed");
            ExitCode::from(e.exit().code())
        }
    }
}

/// Reports every secret others can read through `warn`; in production
/// they refuse the start (exit 64).
fn refuse_exposed_secrets(
    path: &Path,
    config: &Config,
    warn: impl Fn(&str),
) -> Result<(), ExitCode> {
    let exposed = config::exposure::exposures(path, config);
    for e in &exposed {
        warn(&e.message);
    }
    if !exposed.is_empty() && config.daemon.environment == config::Environment::Production {
        eprintln!(
            "vigil: refusing to start in production with secrets readable by group or others (above)"
        );
        return Err(ExitCode::from(Exit::Usage.code()));
    }
    Ok(())
}

async fn apply_migrations(
    config: &Config,
) -> Result<crate::catalog::MigrationOutcome, CommandError> {
    let pool = wait_for_catalog(config).await?;
    crate::catalog::migrate(&pool)
        .await
        .map_err(|e| redacted(config, &e))
}

/// Builds and runs the daemon until a shutdown signal; `banner` is printed once bound.
pub(super) async fn serve(
    path: PathBuf,
    config: Config,
    logging: Arc<Logging>,
    banner: Option<&dyn Fn(SocketAddr) -> String>,
) -> ExitCode {
    let daemon = match Daemon::build(path, config, Some(logging)).await {
        Ok(d) => d,
        Err(e) => {
            tracing::error!(target: LOG_TARGET, error = %format!("{e:#}"), "vigil cannot start");
            return ExitCode::from(super::exit::Classify::exit(&e).code());
        }
    };
    if let Some(banner) = banner {
        eprintln!("{}", banner(daemon.admin_addr()));
    }
    let control = match crate::daemon::signals::listen() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(target: LOG_TARGET, error = %e, "cannot install signal handlers");
            return ExitCode::FAILURE;
        }
    };
    match daemon.run(control).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(target: LOG_TARGET, error = %format!("{e:#}"), "vigil failed");
            ExitCode::FAILURE
        }
    }
}
