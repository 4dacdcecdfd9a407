//! What a CLI command brings up before it acts: the audit journal and the
//! catalog, opened the same way for every command.

use anyhow::Context;

use super::exit::CommandError;
use crate::config::Config;
use crate::jobs::JobContext;
use crate::journal::{Actor, Journal, JournalOptions};

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
            Actor::cli(),
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
        CommandError::redacted(&e, |text| crate::redact::redact_text(text, &secrets))
    };
    match crate::catalog::probe(&config.catalog, crate::catalog::PROBE_TIMEOUT).await {
        Ok(pool) => Ok(pool),
        Err(e) => {
            eprintln!(
                "vigil: {}; the catalog was not updated (this command's journal records reach it through the daemon's journal shipper)",
                crate::redact::redact_text(&e.to_string(), &secrets)
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
