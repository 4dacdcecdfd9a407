//! Writes health transitions into `vigil.health_events`. While the catalog
//! is down, transitions wait in a bounded backlog and are written once it
//! is back (they are always in the log already).

use std::collections::VecDeque;
use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::{Pool, PoolError};
use thiserror::Error;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Oldest transitions are dropped beyond this (with a warning).
const BACKLOG_LIMIT: usize = 10_000;

/// One row of `vigil.health_events`, as plain values: the catalog knows
/// nothing of the health model that produces them.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRow<'a> {
    pub key: &'a str,
    pub component_id: &'a str,
    /// `None` for a check's first observation.
    pub from: Option<&'a str>,
    pub to: &'a str,
    pub value: Option<f64>,
    pub output: Option<&'a str>,
    pub at: DateTime<Utc>,
}

/// A status transition the catalog can store.
pub trait Transition: Send + Sync + 'static {
    fn row(&self) -> EventRow<'_>;
}

/// Why a batch of transitions did not reach the catalog (retried).
#[derive(Debug, Error)]
enum WriteError {
    #[error("{}", super::describe(.0))]
    Connect(#[source] PoolError),
    #[error("{0}")]
    Query(#[source] tokio_postgres::Error),
}

pub fn spawn_event_writer<E: Transition>(
    pool: Pool,
    instance: String,
    tracker: &TaskTracker,
    cancel: CancellationToken,
) -> mpsc::Sender<E> {
    let (tx, rx) = mpsc::channel(1024);
    tracker.spawn(run(pool, instance, rx, cancel));
    tx
}

async fn run<E: Transition>(
    pool: Pool,
    instance: String,
    mut rx: mpsc::Receiver<E>,
    cancel: CancellationToken,
) {
    let mut backlog: VecDeque<E> = VecDeque::new();
    let mut retry = Duration::from_secs(1);
    let mut failing = false;
    loop {
        if backlog.is_empty() {
            tokio::select! {
                _ = cancel.cancelled() => return,
                event = rx.recv() => match event {
                    Some(e) => backlog.push_back(e),
                    None => return,
                },
            }
        }
        while let Ok(e) = rx.try_recv() {
            backlog.push_back(e);
        }
        if backlog.len() > BACKLOG_LIMIT {
            let dropped = backlog.len() - BACKLOG_LIMIT;
            backlog.drain(..dropped);
            tracing::warn!(
                dropped,
                "health event backlog full; oldest transitions dropped from the catalog (still in the log)"
            );
        }
        match write(&pool, &instance, backlog.make_contiguous()).await {
            Ok(()) => {
                if failing {
                    tracing::info!(
                        written = backlog.len(),
                        "health events caught up in the catalog"
                    );
                }
                backlog.clear();
                failing = false;
                retry = Duration::from_secs(1);
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, pending = backlog.len(), "cannot write health events; will retry");
                }
                failing = true;
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(retry) => {}
                }
                retry = (retry * 2).min(Duration::from_secs(30));
            }
        }
    }
}

async fn write<E: Transition>(pool: &Pool, instance: &str, events: &[E]) -> Result<(), WriteError> {
    let mut client = pool.get().await.map_err(WriteError::Connect)?;
    let tx = client.transaction().await.map_err(WriteError::Query)?;
    let statement = tx
        .prepare_cached(
            "INSERT INTO vigil.health_events \
             (instance, check_key, component_id, from_status, to_status, observed_value, output, observed_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .await
        .map_err(WriteError::Query)?;
    for e in events {
        let e = e.row();
        tx.execute(
            &statement,
            &[
                &instance,
                &e.key,
                &e.component_id,
                &e.from,
                &e.to,
                &e.value,
                &e.output,
                &e.at,
            ],
        )
        .await
        .map_err(WriteError::Query)?;
    }
    tx.commit().await.map_err(WriteError::Query)
}
