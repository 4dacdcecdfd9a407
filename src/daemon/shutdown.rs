//! The way out: stop new work, drain the running tasks within
//! `daemon.shutdown_timeout` (a second signal stops waiting), ship the
//! last audit records, then close the admin port.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::signals::Control;
use crate::config::Config;
use crate::journal::Journal;
use crate::sd_notify::Notifier;
use crate::state::{Phase, Shared};
use crate::tasks::Tasks;

/// How long shutdown waits for the last records to reach the catalog.
const FINAL_SHIP_WAIT: Duration = Duration::from_secs(5);

/// The admin port's task, closed last so it answers (503) while work drains.
pub(super) struct AdminTask {
    pub cancel: CancellationToken,
    pub task: tokio::task::JoinHandle<()>,
}

pub(super) async fn shutdown(
    shared: &Shared,
    notifier: &Notifier,
    work: &CancellationToken,
    tasks: &Tasks,
    config: &Config,
    control: &mut mpsc::Receiver<Control>,
    admin: AdminTask,
) {
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
    admin.cancel.cancel();
    let _ = admin.task.await;
    tracing::info!("vigil stopped");
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

/// Ships the records the shipper had not (`daemon.stopping` above all), so
/// the catalog sees the stop; bounded, since the catalog may be down.
pub(super) async fn ship_before_exit(journal: &Journal, pool: &deadpool_postgres::Pool) {
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
