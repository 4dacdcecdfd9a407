//! The daemon, top of the stack below the CLI: bind, start (journal,
//! catalog, jobs, health), mark ready; then serve signals (reload, reopen
//! logs) and API reloads until shutdown.

mod error;
mod reload;
mod shutdown;
pub mod signals;
mod start;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

pub use error::DaemonError;

use self::reload::Reloader;
use self::shutdown::{AdminTask, ship_before_exit, shutdown};
use self::signals::Control;
use self::start::{Started, start};
use crate::admin::{AdminServer, AdminState, Api, ReloadRequest};
use crate::config::Config;
use crate::core::journal_record::{Actor, Entry};
use crate::logging::Logging;
use crate::sd_notify::Notifier;
use crate::state::{Phase, Shared};
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
    ) -> Result<Daemon, DaemonError> {
        let admin = crate::admin::bind(config.admin.listen).await?;
        let service_id = config
            .daemon
            .instance
            .clone()
            .unwrap_or_else(crate::jobs::host::hostname);
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
    pub async fn run(self, mut control: mpsc::Receiver<Control>) -> Result<(), DaemonError> {
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
        let admin_task = AdminTask {
            cancel: admin_cancel.clone(),
            task: tokio::spawn(admin.serve(
                Arc::clone(&admin_state),
                crate::admin::ConnectionLimits::from_config(&current.admin),
                admin_cancel,
                ADMIN_DRAIN,
            )),
        };

        // Physical drills' restore_command names the config file.
        let drill_config = config_path.clone();
        let startup = start(
            &current,
            &drill_config,
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
                        shutdown(&shared, &notifier, &work, &tasks, &current, &mut control, admin_task).await;
                        return Ok(());
                    }
                },
            }
        };
        let (reload_tx, reload_rx) = mpsc::channel::<ReloadRequest>(4);
        publish_api(
            &admin_state,
            &config,
            &shared,
            &started,
            reload_tx,
            &tasks,
            &work,
        );
        shared.set_phase(Phase::Ready);
        notifier.ready("ready");
        tracing::info!(admin = %admin_addr, "vigil is ready");

        let Started {
            runner,
            journal,
            pool,
            jobs,
        } = started;
        let mut reloader = Reloader {
            path: config_path,
            config,
            shared: Arc::clone(&shared),
            runner,
            logging: logging.clone(),
            notifier: notifier.clone(),
            journal: journal.clone(),
            admin: Arc::clone(&admin_state),
            jobs,
        };
        serve_until_shutdown(&mut reloader, &mut control, reload_rx, &logging).await;
        let current = Arc::clone(&reloader.config.borrow());
        journal.emit(Entry::at(
            chrono::Utc::now(),
            "daemon.stopping",
            Actor::daemon(),
            serde_json::json!({ "pid": std::process::id() }),
        ));
        shutdown(
            &shared,
            &notifier,
            &work,
            &tasks,
            &current,
            &mut control,
            admin_task,
        )
        .await;
        ship_before_exit(&journal, &pool).await;
        journal.close().await;
        Ok(())
    }
}

/// Hands the operator API what it acts on, once start-up is done.
fn publish_api(
    admin: &AdminState,
    config: &watch::Sender<Arc<Config>>,
    shared: &Arc<Shared>,
    started: &Started,
    reload: mpsc::Sender<ReloadRequest>,
    tasks: &Tasks,
    work: &CancellationToken,
) {
    let _ = admin.api.set(Arc::new(Api {
        config: config.subscribe(),
        shared: Arc::clone(shared),
        journal: started.journal.clone(),
        pool: started.pool.clone(),
        jobs: started
            .jobs
            .iter()
            .map(|c| (c.name.clone(), c.clone()))
            .collect(),
        reload,
        tasks: tasks.tracker().clone(),
        cancel: work.child_token(),
    }));
}

/// Serves signals and API reloads until a shutdown signal.
async fn serve_until_shutdown(
    reloader: &mut Reloader,
    control: &mut mpsc::Receiver<Control>,
    mut reload_rx: mpsc::Receiver<ReloadRequest>,
    logging: &Option<Arc<Logging>>,
) {
    loop {
        tokio::select! {
            message = control.recv() => match message {
                Some(Control::Reload) => {
                    let _ = reloader.reload(Actor::from("signal"), None).await;
                }
                Some(Control::ReopenLogs) => reopen(logging),
                Some(Control::Shutdown) | None => return,
            },
            Some(request) = reload_rx.recv() => {
                let result = reloader.reload(request.actor, Some(request.request_id)).await;
                let _ = request.answer.send(result);
            }
        }
    }
}

fn reopen(logging: &Option<Arc<Logging>>) {
    if let Some(logging) = logging {
        logging.reopen();
    }
}
