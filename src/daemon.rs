//! Wires the parts: bind, connect, migrate, start the health runner, mark
//! ready; then serve signals (reload, reopen logs) until shutdown.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::admin::{AdminServer, AdminState, Api, AuthSettings, ReloadRequest};
use crate::config::{self, Config, ProcessEnv};
use crate::health::{
    CatalogMigrationsCheck, CatalogResponseCheck, Check, CheckSpec, DiskUsageCheck, HealthRunner,
    Observation, Phase, RunnerHandle, Shared, Status,
};
use crate::journal::{Actor, Entry, Journal, JournalOptions, JournalWritableCheck};
use crate::logging::Logging;
use crate::notify::Notifier;
use crate::redact::redact_text;
use crate::signals::Control;
use crate::tasks::Tasks;

/// How long the admin port keeps answering (503) while work drains.
const ADMIN_DRAIN: Duration = Duration::from_secs(2);

pub struct Daemon {
    config_path: PathBuf,
    config: watch::Sender<Arc<Config>>,
    shared: Arc<Shared>,
    admin: AdminServer,
    logging: Option<Arc<Logging>>,
    notifier: Notifier,
}

impl Daemon {
    /// Validates nothing more (the config is already valid) and binds the
    /// admin port, so a taken port fails before any work starts.
    pub async fn build(
        config_path: PathBuf,
        config: Config,
        logging: Option<Arc<Logging>>,
    ) -> anyhow::Result<Daemon> {
        let admin = crate::admin::bind(config.admin.listen).await?;
        let service_id = config.daemon.instance.clone().unwrap_or_else(hostname);
        let shared = Shared::new(
            service_id,
            logging.as_ref().and_then(|l| l.dropped_counter()),
        );
        shared.startup_done("config");
        let (config, _) = watch::channel(Arc::new(config));
        Ok(Daemon {
            config_path,
            config,
            shared,
            admin,
            logging,
            notifier: Notifier::from_env(),
        })
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin.local_addr
    }

    /// Runs until a [`Control::Shutdown`] arrives (or the channel closes).
    pub async fn run(self, mut control: mpsc::Receiver<Control>) -> anyhow::Result<()> {
        let Daemon {
            config_path,
            config,
            shared,
            admin,
            logging,
            notifier,
        } = self;
        let admin_addr = admin.local_addr;
        let current = Arc::clone(&config.borrow());
        let root = CancellationToken::new();
        let work = root.child_token();
        let tasks = Tasks::new();

        let admin_cancel = root.child_token();
        let admin_state = Arc::new(AdminState::new(Arc::clone(&shared), &current));
        let admin_task = tokio::spawn(admin.serve(
            Arc::clone(&admin_state),
            crate::admin::ConnectionLimits::from_config(&current.admin),
            admin_cancel.clone(),
            ADMIN_DRAIN,
        ));

        let startup = start(
            &current,
            config.subscribe(),
            &shared,
            &tasks,
            &work,
            &notifier,
        );
        tokio::pin!(startup);
        let started = loop {
            tokio::select! {
                result = &mut startup => break result?,
                message = control.recv() => match message {
                    Some(Control::ReopenLogs) => reopen(&logging),
                    Some(Control::Reload) => tracing::warn!("SIGHUP during start-up ignored; send it again once ready"),
                    Some(Control::Shutdown) | None => {
                        tracing::info!("shutdown requested during start-up");
                        return shutdown(&shared, &notifier, &work, &tasks, &current, &mut control, admin_cancel, admin_task).await;
                    }
                },
            }
        };
        let journal = started.journal.clone();
        let started_pool = started.pool.clone();
        let (reload_tx, mut reload_rx) = mpsc::channel::<ReloadRequest>(4);
        let _ = admin_state.api.set(Arc::new(Api {
            config: config.subscribe(),
            shared: Arc::clone(&shared),
            journal: journal.clone(),
            pool: started.pool.clone(),
            jobs: started
                .jobs
                .iter()
                .map(|c| (c.name.clone(), c.clone()))
                .collect(),
            reload: reload_tx,
            tasks: tasks.tracker().clone(),
            cancel: work.child_token(),
        }));
        shared.set_phase(Phase::Ready);
        notifier.ready("ready");
        tracing::info!(admin = %admin_addr, "vigil is ready");

        let mut reloader = Reloader {
            path: config_path,
            config,
            shared: Arc::clone(&shared),
            runner: started.runner,
            logging: logging.clone(),
            notifier: notifier.clone(),
            journal: journal.clone(),
            admin: Arc::clone(&admin_state),
            jobs: started.jobs.clone(),
        };
        loop {
            tokio::select! {
                message = control.recv() => match message {
                    Some(Control::Reload) => {
                        let _ = reloader.reload(Actor::from("signal"), None).await;
                    }
                    Some(Control::ReopenLogs) => reopen(&logging),
                    Some(Control::Shutdown) | None => break,
                },
                Some(request) = reload_rx.recv() => {
                    let result = reloader.reload(request.actor, Some(request.request_id)).await;
                    let _ = request.answer.send(result);
                }
            }
        }
        let current = Arc::clone(&reloader.config.borrow());
        journal.emit(Entry::now(
            "daemon.stopping",
            Actor::daemon(),
            serde_json::json!({ "pid": std::process::id() }),
        ));
        let result = shutdown(
            &shared,
            &notifier,
            &work,
            &tasks,
            &current,
            &mut control,
            admin_cancel,
            admin_task,
        )
        .await;
        ship_before_exit(&journal, &started_pool).await;
        journal.close().await;
        result
    }
}

/// How long shutdown waits for the last records to reach the catalog.
const FINAL_SHIP_WAIT: Duration = Duration::from_secs(5);

/// Ships the records the shipper had not (`daemon.stopping` above all), so
/// the catalog sees the stop; bounded, since the catalog may be down.
async fn ship_before_exit(journal: &Journal, pool: &deadpool_postgres::Pool) {
    journal.flush().await;
    match tokio::time::timeout(
        FINAL_SHIP_WAIT,
        crate::journal::ship::ship_pending(journal, pool),
    )
    .await
    {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "the last audit records were not shipped to the catalog; they ship at the next start")
        }
        Err(_) => tracing::warn!(
            wait = ?FINAL_SHIP_WAIT,
            "the catalog did not take the last audit records in time; they ship at the next start"
        ),
    }
}

fn reopen(logging: &Option<Arc<Logging>>) {
    if let Some(logging) = logging {
        logging.reopen();
    }
}

/// What start-up hands to the running daemon.
struct Started {
    runner: RunnerHandle,
    journal: Journal,
    pool: deadpool_postgres::Pool,
    jobs: Vec<crate::jobs::JobContext>,
}

/// Opens the audit journal (local disk, before anything acts).
fn open_journal(config: &Config, shared: &Shared) -> anyhow::Result<Journal> {
    std::fs::create_dir_all(&config.daemon.state_dir).with_context(|| {
        format!(
            "cannot create `daemon.state_dir` {}",
            config.daemon.state_dir.display()
        )
    })?;
    let mut options = JournalOptions::from_config(config, true);
    if let Some(path) = &config.journal.signing_key_file {
        let key = crate::journal::sign::load_signing_key(path)
            .context("`journal.signing_key_file`: checkpoints cannot be signed")?;
        options.signer = Some(Arc::new(key));
    }
    // Read before the writer opens: whether this start stops the signing.
    let stops_signing = match options.signer {
        Some(_) => None,
        None => crate::journal::sign::signed_head(&config.journal_dir())
            .context("cannot read the audit journal (`journal.dir`)")?,
    };
    let journal = Journal::open(options, Arc::clone(&shared.audit)).with_context(|| {
        format!(
            "cannot open the audit journal in {} (`journal.dir`)",
            config.journal_dir().display()
        )
    })?;
    journal.emit(Entry::now(
        "daemon.started",
        Actor::daemon(),
        serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "pid": std::process::id(),
            "instance": shared.service_id,
        }),
    ));
    if let Some((seq, public_key)) = stops_signing {
        journal.emit(crate::journal::sign::signing_stopped(seq, &public_key));
    }
    Ok(journal)
}

/// Start-up after the admin port is up: journal, catalog, migrations, checks.
async fn start(
    config: &Config,
    config_rx: watch::Receiver<Arc<Config>>,
    shared: &Arc<Shared>,
    tasks: &Tasks,
    work: &CancellationToken,
    notifier: &Notifier,
) -> anyhow::Result<Started> {
    let journal = open_journal(config, shared)?;
    let secrets = config.secrets();
    notifier.status("waiting for the catalog");
    let pool = crate::catalog::pool(&config.catalog)?;
    crate::catalog::wait_until_ready(&pool, &config.catalog, &secrets)
        .await
        .map_err(|e| anyhow::anyhow!(redact_text(&e.to_string(), &secrets)))?;
    shared.startup_done("catalog");

    notifier.status("migrating the catalog");
    let outcome = crate::catalog::migrate(&pool)
        .await
        .map_err(|e| anyhow::anyhow!(redact_text(&e.to_string(), &secrets)))?;
    tracing::info!(version = outcome.version, applied = ?outcome.applied, "catalog schema is current");
    shared.startup_done("migrations");

    let mut checks: Vec<Arc<dyn Check>> = vec![
        Arc::new(CatalogResponseCheck::new(
            pool.clone(),
            Arc::clone(&shared.audit),
        )),
        Arc::new(CatalogMigrationsCheck {
            pool: pool.clone(),
            expected: crate::catalog::expected_version(),
        }),
        Arc::new(DiskUsageCheck {
            name: "state-dir".into(),
            path: config.daemon.state_dir.clone(),
        }),
    ];
    notifier.status("reading the repositories");
    let (job_checks, jobs) =
        crate::jobs::scheduler::arm_all(config, &pool, shared, tasks, work, &journal)
            .await
            .map_err(|e| anyhow::anyhow!(redact_text(&e, &secrets)))?;
    checks.extend(job_checks);
    checks.push(Arc::new(JournalWritableCheck {
        journal: journal.clone(),
    }));
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
    if let Some(dir) = config.log.file.as_ref().and_then(|f| f.parent()) {
        let dir = if dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            dir.to_owned()
        };
        checks.push(Arc::new(DiskUsageCheck {
            name: "log-dir".into(),
            path: dir,
        }));
    }
    let events = crate::catalog::spawn_event_writer(
        pool.clone(),
        shared.service_id.clone(),
        tasks.tracker(),
        work.child_token(),
    );
    let runner = HealthRunner {
        checks,
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

#[allow(clippy::too_many_arguments)]
async fn shutdown(
    shared: &Shared,
    notifier: &Notifier,
    work: &CancellationToken,
    tasks: &Tasks,
    config: &Config,
    control: &mut mpsc::Receiver<Control>,
    admin_cancel: CancellationToken,
    admin_task: tokio::task::JoinHandle<()>,
) -> anyhow::Result<()> {
    shared.set_phase(Phase::ShuttingDown);
    notifier.stopping();
    tracing::info!(grace = %humantime::format_duration(config.daemon.shutdown_timeout), "shutting down");
    work.cancel();
    let drained = async {
        tokio::select! {
            _ = tasks.close_and_wait() => true,
            _ = tokio::time::sleep(config.daemon.shutdown_timeout) => false,
            _ = second_shutdown(control) => false,
        }
    }
    .await;
    if !drained {
        tracing::warn!(still_running = ?tasks.running(), "shutdown grace period over; exiting with tasks still running");
    }
    admin_cancel.cancel();
    let _ = admin_task.await;
    tracing::info!("vigil stopped");
    Ok(())
}

/// A second SIGTERM/SIGINT during the drain stops waiting.
async fn second_shutdown(control: &mut mpsc::Receiver<Control>) {
    while let Some(message) = control.recv().await {
        if message == Control::Shutdown {
            tracing::warn!("second shutdown signal: not waiting any longer");
            return;
        }
    }
    std::future::pending::<()>().await;
}

pub fn reload_spec() -> CheckSpec {
    CheckSpec {
        key: "config:reload".into(),
        component_id: "config".into(),
        component_type: "component",
        interval: Duration::ZERO,
        timeout: Duration::ZERO,
        critical: true,
        periodic: false,
    }
}

struct Reloader {
    path: PathBuf,
    config: watch::Sender<Arc<Config>>,
    shared: Arc<Shared>,
    runner: RunnerHandle,
    logging: Option<Arc<Logging>>,
    notifier: Notifier,
    journal: Journal,
    admin: Arc<AdminState>,
    /// The jobs' contexts, shared with the loops, checks and API: rotated
    /// secrets are applied to them in place.
    jobs: Vec<crate::jobs::JobContext>,
}

impl Reloader {
    /// Reloads the config file; returns the changes, or why it was refused.
    async fn reload(
        &mut self,
        actor: Actor,
        request_id: Option<String>,
    ) -> Result<Vec<config::Change>, String> {
        self.notifier.reloading();
        let result = self.try_reload(actor, request_id).await;
        self.notifier.ready("ready");
        result
    }

    async fn try_reload(
        &mut self,
        actor: Actor,
        request_id: Option<String>,
    ) -> Result<Vec<config::Change>, String> {
        let old = Arc::clone(&self.config.borrow());
        let loaded = config::load(&self.path, &ProcessEnv).map_err(|e| e.to_string());
        // A config change is journalled (and synced) before it applies: if
        // the journal cannot be written, the reload is refused.
        let loaded = match loaded {
            Ok(new) => {
                let changes = config::diff(&old, &new);
                let entry = Entry::now(
                    "config.reloaded",
                    actor.clone(),
                    reload_event(&self.path, &changes),
                )
                .with_request_id(request_id.clone());
                match self.journal.commit(entry).await {
                    Ok(_) => Ok((new, changes)),
                    Err(e) => Err(e.to_string()),
                }
            }
            Err(e) => {
                let message = redact_text(&e, &old.secrets());
                self.journal.emit(
                    Entry::now(
                        "config.reload_refused",
                        actor,
                        serde_json::json!({ "path": self.path, "error": message }),
                    )
                    .with_request_id(request_id),
                );
                Err(message)
            }
        };
        match loaded {
            Err(message) => {
                tracing::warn!(error = %message, "config reload refused; still running on the previous config");
                self.shared.record_reload(false);
                let summary = format!(
                    "reload refused, running on the previous config: {}",
                    message.trim()
                );
                self.runner
                    .set(
                        reload_spec(),
                        Observation::new(Status::Warn, None, None).with_output(summary),
                    )
                    .await;
                Err(message)
            }
            Ok((new, changes)) => {
                for change in &changes {
                    if change.live {
                        tracing::info!(key = %change.key, old = %change.old, new = %change.new, "config changed");
                    } else {
                        tracing::warn!(key = %change.key, old = %change.old, new = %change.new, "config changed; takes effect after a restart");
                    }
                }
                if old.log.level != new.log.level
                    && let Some(logging) = &self.logging
                    && let Err(e) = logging.set_level(&new.log.level)
                {
                    tracing::warn!(error = %e, "cannot apply the new log level");
                }
                let keys: Vec<&str> = changes.iter().map(|c| c.key.as_str()).collect();
                tracing::info!(changed = ?keys, "config reloaded");
                self.admin
                    .auth
                    .store(Arc::new(AuthSettings::from_config(&new)));
                // The only live changes under jobs and repositories are their
                // secrets and sources (config::diff): apply those in place.
                if changes.iter().any(|c| {
                    c.live && (c.key.starts_with("jobs.") || c.key.starts_with("repositories."))
                }) {
                    for ctx in &self.jobs {
                        match ctx.rotate(&new) {
                            Ok(()) => tracing::info!(job = %ctx.name, "secrets applied"),
                            Err(e) => {
                                tracing::warn!(job = %ctx.name, error = %redact_text(&e, &new.secrets()), "cannot apply the new secrets; the old ones stay")
                            }
                        }
                    }
                }
                self.config.send_replace(Arc::new(new));
                self.shared.record_reload(true);
                self.runner
                    .set(reload_spec(), Observation::new(Status::Pass, None, None))
                    .await;
                Ok(changes)
            }
        }
    }
}

/// `config.reloaded`'s data: before and after of each changed key (values
/// already redacted by the diff) and which apply at once.
fn reload_event(path: &std::path::Path, changes: &[config::Change]) -> serde_json::Value {
    let before: serde_json::Map<String, serde_json::Value> = changes
        .iter()
        .map(|c| (c.key.clone(), c.old.clone().into()))
        .collect();
    let after: serde_json::Map<String, serde_json::Value> = changes
        .iter()
        .map(|c| (c.key.clone(), c.new.clone().into()))
        .collect();
    let diff: Vec<serde_json::Value> = changes
        .iter()
        .map(|c| serde_json::json!({ "key": c.key, "old": c.old, "new": c.new, "live": c.live }))
        .collect();
    serde_json::json!({ "path": path, "before": before, "after": after, "diff": diff })
}

pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "vigil".into())
}
