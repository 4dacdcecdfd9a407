//! `vigil.executions`: one row per run. Every write is bounded by
//! `catalog.query_timeout`: a down or hung catalog never holds a run up
//! (the journal records the run either way).

use std::time::Duration;

use deadpool_postgres::{Object, Pool, PoolError};

use super::{JobContext, Trigger};

/// One bounded catalog step of a run failed (the run goes on: the
/// journal records it either way).
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error("{}", crate::catalog::describe(.0))]
    Pool(#[source] PoolError),
    #[error("{0}")]
    Query(#[from] tokio_postgres::Error),
    #[error("catalog session already handed back")]
    HandedBack,
    #[error("no answer within {} (catalog.query_timeout)", humantime::format_duration(*.budget))]
    Timeout { budget: Duration },
}

/// Kinds that run under the job lock (restores do not take it).
const LOCKED_KINDS: [&str; 3] = ["backup", "prune", "mirror"];

/// A pooled connection for one bounded step. If the step is cut off (its
/// future dropped by the timeout) the connection is closed, not returned to
/// the pool: its statement may still run on the server later (a late
/// `pg_try_advisory_lock` would hold the job's lock in an idle pooled
/// session, a late INSERT leave a row `running`).
pub(super) struct Session(Option<Object>);

impl Session {
    pub(super) async fn open(pool: &Pool) -> Result<Session, StepError> {
        let client = pool.get().await.map_err(StepError::Pool)?;
        Ok(Session(Some(client)))
    }

    pub(super) fn client(&self) -> Result<&Object, StepError> {
        self.0.as_ref().ok_or(StepError::HandedBack)
    }

    /// The step finished: the connection is the caller's again (dropping it
    /// returns it to the pool).
    pub(super) fn finish(mut self) -> Option<Object> {
        self.0.take()
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(client) = self.0.take() {
            drop(Object::take(client));
        }
    }
}

/// Runs one catalog step within the pool's timeout.
async fn bounded<T>(
    pool: &Pool,
    step: impl std::future::Future<Output = Result<T, StepError>>,
) -> Result<T, StepError> {
    let budget = super::lock::catalog_budget(pool);
    tokio::time::timeout(budget, step)
        .await
        .map_err(|_| StepError::Timeout { budget })?
}

pub struct Execution {
    pub id: i64,
}

/// Inserts a `running` row; `None` (logged) when the catalog is unreachable,
/// so a catalog outage never stops a backup that holds no lock. A closed
/// pool (a CLI command that found the catalog unusable and said so once)
/// is skipped silently.
pub async fn start(
    pool: &Pool,
    job: &str,
    kind: &str,
    trigger: Trigger,
    host: &str,
    repository: &str,
) -> Option<Execution> {
    if pool.is_closed() {
        // A CLI command found the catalog down or unmigrated (and said so).
        return None;
    }
    let result = bounded(pool, async {
        let session = Session::open(pool).await?;
        let row = session
            .client()?
            .query_one(
                "INSERT INTO vigil.executions (job, kind, trigger, status, host, repository) \
                 VALUES ($1, $2, $3, 'running', $4, $5) RETURNING id",
                &[&job, &kind, &trigger.as_str(), &host, &repository],
            )
            .await?;
        session.finish();
        Ok(Execution { id: row.get(0) })
    })
    .await;
    match result {
        Ok(e) => Some(e),
        Err(e) => {
            tracing::warn!(job, kind, error = %e, "cannot record the execution in the catalog");
            None
        }
    }
}

/// Final state of a run.
pub struct Finish<'a> {
    pub status: &'a str,
    pub backup_id: Option<&'a str>,
    pub source_bytes: Option<u64>,
    pub stored_bytes: Option<u64>,
    pub error: Option<&'a str>,
    /// Anything else the run found (files: changed and vanished paths).
    pub details: Option<serde_json::Value>,
}

pub async fn finish(pool: &Pool, execution: &Option<Execution>, end: Finish<'_>) {
    let Some(execution) = execution else { return };
    let result = bounded(pool, async {
        let session = Session::open(pool).await?;
        let done = session
            .client()?
            .execute(
                "UPDATE vigil.executions SET status = $2, finished_at = now(), backup_id = $3, \
                 source_bytes = $4, stored_bytes = $5, error = $6, details = $7 WHERE id = $1",
                &[
                    &execution.id,
                    &end.status,
                    &end.backup_id,
                    &end.source_bytes.map(|b| b as i64),
                    &end.stored_bytes.map(|b| b as i64),
                    &end.error,
                    &end.details,
                ],
            )
            .await
            .map_err(StepError::from);
        session.finish();
        done
    })
    .await;
    if let Err(e) = result {
        tracing::warn!(execution = execution.id, error = %e, "cannot record the end of the execution in the catalog");
    }
}

/// At start-up: rows this host left `running` (a crash) become `aborted`.
pub async fn abort_stale(pool: &Pool, host: &str) -> Result<u64, StepError> {
    let client = pool.get().await.map_err(StepError::Pool)?;
    Ok(client
        .execute(
            "UPDATE vigil.executions SET status = 'aborted', finished_at = now(), \
             error = 'vigil stopped while this run was in progress' WHERE host = $1 AND status = 'running'",
            &[&host],
        )
        .await?)
}

/// A run left `running` by a process that died (kill -9, power loss).
#[derive(Debug)]
struct Orphan {
    id: i64,
    kind: String,
    host: String,
    trigger: String,
    started_at: chrono::DateTime<chrono::Utc>,
}

const ORPHAN_ERROR: &str =
    "the vigil running it died (no live lock holder); closed out by the next run";

/// Called while holding the job lock, so no other run of this job is
/// alive: its rows still `running` were left by a killed process. They
/// become `aborted`, and the journal gets the outcome record the dead run
/// never wrote (`<kind>.failed`, status aborted, with the execution id).
pub async fn close_orphans(ctx: &JobContext) {
    let closed = bounded(&ctx.catalog, async {
        let session = Session::open(&ctx.catalog).await?;
        let kinds: Vec<&str> = LOCKED_KINDS.to_vec();
        let rows = session
            .client()?
            .query(
                "UPDATE vigil.executions SET status = 'aborted', finished_at = now(), error = $3 \
                 WHERE job = $1 AND status = 'running' AND kind = ANY($2) \
                 RETURNING id, kind, host, trigger, started_at",
                &[&ctx.name, &kinds, &ORPHAN_ERROR],
            )
            .await?;
        session.finish();
        Ok(rows
            .iter()
            .map(|r| Orphan {
                id: r.get(0),
                kind: r.get(1),
                host: r.get(2),
                trigger: r.get(3),
                started_at: r.get(4),
            })
            .collect::<Vec<_>>())
    })
    .await;
    let orphans = match closed {
        Ok(orphans) => orphans,
        Err(e) => {
            tracing::warn!(job = %ctx.name, error = %e, "cannot close out runs left running in the catalog");
            return;
        }
    };
    for orphan in orphans {
        tracing::warn!(job = %ctx.name, execution = orphan.id, kind = %orphan.kind, host = %orphan.host, "a run left running by a dead vigil is closed out as aborted");
        ctx.journal.emit(ctx.event(
            &format!("{}.failed", orphan.kind),
            serde_json::json!({
                "status": "aborted",
                "execution": orphan.id,
                "host": orphan.host,
                "trigger": orphan.trigger,
                "started_at": orphan.started_at.to_rfc3339(),
                "error": ORPHAN_ERROR,
            }),
        ));
    }
}
