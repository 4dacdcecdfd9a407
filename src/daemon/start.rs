//! Start-up after the admin port is up: the journal (before anything
//! acts), the catalog and its migrations, the jobs, the shippers and the
//! health runner's first round.

use std::sync::Arc;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::error::DaemonError;
use crate::config::Config;
use crate::core::health::{Observation, Status};
use crate::core::journal_record::{Actor, Entry};
use crate::core::redact::redact_text;
use crate::health::{HealthRunner, RunnerHandle, reload_spec};
use crate::journal::{Journal, Opener, open_journal as open_journal_as};
use crate::sd_notify::Notifier;
use crate::state::Shared;
use crate::tasks::Tasks;

/// What start-up hands to the running daemon.
pub(super) struct Started {
    pub runner: RunnerHandle,
    pub journal: Journal,
    pub pool: deadpool_postgres::Pool,
    pub jobs: Vec<crate::jobs::JobContext>,
}

/// Opens the audit journal (local disk, before anything acts).
fn open_journal(config: &Config, shared: &Shared) -> Result<Journal, DaemonError> {
    std::fs::create_dir_all(&config.daemon.state_dir).map_err(|source| DaemonError::StateDir {
        path: config.daemon.state_dir.clone(),
        source,
    })?;
    let journal = open_journal_as(config, Opener::Daemon, Arc::clone(&shared.audit))?;
    journal.emit(Entry::at(
        chrono::Utc::now(),
        "daemon.started",
        Actor::daemon(),
        serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "pid": std::process::id(),
            "instance": shared.service_id,
        }),
    ));
    Ok(journal)
}

/// A catalog error as the daemon reports it: its text without secrets.
fn catalog_error(error: crate::catalog::CatalogError, secrets: &[String]) -> DaemonError {
    let redacted = redact_text(&error.to_string(), secrets);
    DaemonError::Catalog { error, redacted }
}

/// Connects to the catalog (waiting for it) and brings its schema current.
async fn open_catalog(
    config: &Config,
    shared: &Shared,
    notifier: &Notifier,
    secrets: &[String],
) -> Result<deadpool_postgres::Pool, DaemonError> {
    notifier.status("waiting for the catalog");
    let pool = crate::catalog::connect(&config.catalog, secrets, crate::catalog::Wait::UntilReady)
        .await
        .map_err(|e| catalog_error(e, secrets))?;
    shared.startup_done("catalog");

    notifier.status("migrating the catalog");
    let outcome = crate::catalog::migrate(&pool)
        .await
        .map_err(|e| catalog_error(e, secrets))?;
    tracing::info!(version = outcome.version, applied = ?outcome.applied, "catalog schema is current");
    shared.startup_done("migrations");
    Ok(pool)
}

/// Ships the journal to the catalog, and to Loki when `journal.loki_url` is set.
fn spawn_shippers(
    config: &Config,
    journal: &Journal,
    pool: &deadpool_postgres::Pool,
    shared: &Shared,
    tasks: &Tasks,
    work: &CancellationToken,
) {
    tasks.spawn(
        "journal:catalog".to_owned(),
        crate::journal::ship::ship_to_catalog(
            journal.clone(),
            pool.clone(),
            shared.service_id.clone(),
            config.journal.retention,
            work.child_token(),
        ),
    );
    if let Some(url) = &config.journal.loki_url {
        let mut labels = config.journal.loki_labels.clone();
        labels
            .entry("instance".into())
            .or_insert_with(|| shared.service_id.clone());
        tasks.spawn(
            "journal:loki".to_owned(),
            crate::journal::ship::ship_to_loki(
                journal.clone(),
                url.clone(),
                labels,
                work.child_token(),
            ),
        );
    }
}

/// Start-up after the admin port is up: journal, catalog, migrations, checks.
pub(super) async fn start(
    config: &Config,
    config_path: &std::path::Path,
    config_rx: watch::Receiver<Arc<Config>>,
    shared: &Arc<Shared>,
    tasks: &Tasks,
    work: &CancellationToken,
    notifier: &Notifier,
) -> Result<Started, DaemonError> {
    let journal = open_journal(config, shared)?;
    let secrets = config.secrets();
    let pool = open_catalog(config, shared, notifier, &secrets).await?;

    notifier.status("reading the repositories");
    let jobs = crate::jobs::scheduler::arm_all(config, &pool, shared, tasks, work, &journal)
        .await
        .map_err(|e| DaemonError::Jobs {
            redacted: redact_text(&e.to_string(), &secrets),
        })?;
    crate::jobs::drill::schedule::arm(config_path, &jobs, shared, tasks, work).await;
    spawn_shippers(config, &journal, &pool, shared, tasks, work);
    crate::notify::spawn_webhooks(config, &journal, shared, tasks, work);
    let events = crate::catalog::spawn_event_writer(
        pool.clone(),
        shared.service_id.clone(),
        tasks.tracker(),
        work.child_token(),
    );
    let runner = HealthRunner {
        checks: crate::health::daemon_checks(config, &pool, shared, &journal, &jobs),
        config: config_rx,
        shared: Arc::clone(shared),
        events: Some(events),
        pool: Some(pool.clone()),
        notifier: notifier.clone(),
    }
    .spawn(tasks.tracker(), work.child_token());
    runner
        .set(reload_spec(), Observation::new(Status::Pass, None, None))
        .await;
    notifier.status("running the first health checks");
    runner.first_round_done().await;
    shared.startup_done("first-checks");
    Ok(Started {
        runner,
        journal,
        pool,
        jobs,
    })
}
