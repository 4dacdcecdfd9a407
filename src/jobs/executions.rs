//! `vigil.executions`: one row per run.

use deadpool_postgres::Pool;

use super::Trigger;

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
        return None;
    }
    let result = async {
        let client = pool.get().await.map_err(|e| crate::catalog::describe(&e))?;
        let row = client
            .query_one(
                "INSERT INTO vigil.executions (job, kind, trigger, status, host, repository) \
                 VALUES ($1, $2, $3, 'running', $4, $5) RETURNING id",
                &[&job, &kind, &trigger.as_str(), &host, &repository],
            )
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>(Execution { id: row.get(0) })
    }
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
    let result = async {
        let client = pool.get().await.map_err(|e| crate::catalog::describe(&e))?;
        client
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
            .map_err(|e| e.to_string())
    }
    .await;
    if let Err(e) = result {
        tracing::warn!(execution = execution.id, error = %e, "cannot record the end of the execution in the catalog");
    }
}

/// At start-up: rows this host left `running` (a crash) become `aborted`.
pub async fn abort_stale(pool: &Pool, host: &str) -> Result<u64, String> {
    let client = pool.get().await.map_err(|e| crate::catalog::describe(&e))?;
    client
        .execute(
            "UPDATE vigil.executions SET status = 'aborted', finished_at = now(), \
             error = 'vigil stopped while this run was in progress' WHERE host = $1 AND status = 'running'",
            &[&host],
        )
        .await
        .map_err(|e| e.to_string())
}
