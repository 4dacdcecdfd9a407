//! What a CLI command brings up before it acts: the audit journal and the
//! catalog, opened the same way for every command (through
//! [`crate::journal::open_journal`] and [`crate::catalog::connect`], as the
//! daemon opens them).

use std::time::Duration;

use deadpool_postgres::Pool;

use super::error::CliError;
use super::exit::CommandError;
use crate::catalog::{CatalogError, Wait};
use crate::config::Config;
use crate::core::redact::redact_text;
use crate::jobs::JobContext;
use crate::journal::{Journal, Opener, open_journal};

/// What every CLI command that runs a job brings up, once: the audit
/// journal and the catalog. The catalog is never waited for nor migrated
/// here; when it cannot be used the command goes on without it.
pub struct Session {
    pub journal: Journal,
    /// Closed when the catalog was down or unmigrated: every write to it
    /// is then skipped at once, and the journal keeps the record.
    pub catalog: Pool,
    /// For the webhooks this command may deliver before it exits.
    config: Config,
    /// The journal's head at open: a webhook queue this command starts
    /// begins after it (with this command's own events).
    head_at_open: u64,
    /// The job runs' pings, waited for at close.
    pings: crate::notify::ping::Pinger,
}

impl Session {
    pub async fn open(config: &Config) -> Result<Session, CliError> {
        let journal = journal(config)?;
        let head_at_open = journal.head().map_or(0, |h| h.seq);
        let catalog = catalog(config).await?;
        Ok(Session {
            journal,
            catalog,
            config: config.clone(),
            head_at_open,
            pings: Default::default(),
        })
    }

    /// A job context for one job of this command, acting as the CLI user.
    pub fn context(&self, config: &Config, job: &str) -> Result<JobContext, CliError> {
        config.job(job)?;
        let mut ctx = JobContext::new(
            config,
            job,
            self.catalog.clone(),
            &instance(config),
            self.journal.clone(),
            crate::journal::cli_actor(),
        )
        .map_err(|source| CliError::JobSetup {
            job: job.to_owned(),
            source,
        })?;
        ctx.pings = self.pings.clone();
        Ok(ctx)
    }

    /// Waits (bounded) for the runs' pings and, when no daemon delivers,
    /// for this command's webhook deliveries; then flushes the journal.
    pub async fn close(self) {
        self.pings.wait(self.config.notify.cli_wait).await;
        if !self.config.notify.webhooks.is_empty() {
            self.journal.flush().await;
            crate::notify::deliver_own(
                &self.config,
                &self.journal,
                crate::journal::cli_actor(),
                self.head_at_open,
            )
            .await;
        }
        self.journal.close().await;
    }
}

/// The catalog for a CLI command: one short probe (at most
/// [`crate::catalog::PROBE_TIMEOUT`]); if it fails, or finds the schema
/// behind, one line on stderr and a closed pool. Only `vigil migrate` and
/// the daemon change the schema.
pub async fn catalog(config: &Config) -> Result<Pool, CliError> {
    match probe(config, crate::catalog::PROBE_TIMEOUT).await {
        Ok(pool) => Ok(pool),
        Err(e) => {
            eprintln!(
                "vigil: {e}; the catalog was not updated (this command's journal records reach it through the daemon's journal shipper)"
            );
            let pool = crate::catalog::pool(&config.catalog).map_err(|e| redacted(config, &e))?;
            pool.close();
            Ok(pool)
        }
    }
}

/// The catalog if it answers within `timeout` with the current schema;
/// the error is redacted (its text may hold the catalog password).
pub async fn probe(config: &Config, timeout: Duration) -> Result<Pool, CommandError> {
    crate::catalog::connect(&config.catalog, &config.secrets(), Wait::Probe(timeout))
        .await
        .map_err(|e| redacted(config, &e))
}

/// The catalog once it answers (up to `catalog.connect_timeout`), for
/// `vigil migrate`.
pub async fn wait_for_catalog(config: &Config) -> Result<Pool, CommandError> {
    crate::catalog::connect(&config.catalog, &config.secrets(), Wait::UntilReady)
        .await
        .map_err(|e| redacted(config, &e))
}

/// `error` with the config's secrets masked, keeping its exit status.
pub fn redacted(config: &Config, error: &CatalogError) -> CommandError {
    let secrets = config.secrets();
    CommandError::redacted(error, |text| redact_text(text, &secrets))
}

/// The audit journal for one CLI command (actor: the invoking user).
/// Written under the same lock as the daemon's, so both append safely.
pub fn journal(config: &Config) -> Result<Journal, CliError> {
    Ok(open_journal(config, Opener::Cli, Default::default())?)
}

/// This host's name in the catalog and the journal (`daemon.instance`).
pub fn instance(config: &Config) -> String {
    config
        .daemon
        .instance
        .clone()
        .unwrap_or_else(crate::jobs::host::hostname)
}
