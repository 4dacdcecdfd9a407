//! The catalog database: pool, start-up wait, migrations, health events.
//! A queryable mirror and history; never a dependency of restore.

mod events;
mod migrate;

use std::time::{Duration, Instant};

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use thiserror::Error;
use tokio_postgres::NoTls;

pub use events::spawn_event_writer;
pub use migrate::{MigrationOutcome, expected_version, migrate};

use crate::config::CatalogConfig;
use crate::redact::redact_text;

#[derive(Debug, Error)]
pub enum CatalogError {
    #[error(
        "catalog did not accept connections within {waited}: {last_error} (is PostgreSQL running at the address in `catalog.url`, and are the credentials right?)"
    )]
    Unreachable { waited: String, last_error: String },
    #[error("catalog pool: {0}")]
    Pool(String),
    #[error("catalog query failed: {0}")]
    Query(String),
    #[error(
        "catalog migration failed: {0} (the schema is left at the last version that applied; fix the cause and restart)"
    )]
    Migration(String),
}

/// Builds the pool (connections are opened lazily).
pub fn pool(config: &CatalogConfig) -> Result<Pool, CatalogError> {
    let mut pg: tokio_postgres::Config = config
        .url
        .expose()
        .parse()
        .map_err(|e: tokio_postgres::Error| CatalogError::Pool(e.to_string()))?;
    if let Some(password) = &config.password {
        pg.password(password.expose());
    }
    if pg.get_application_name().is_none() {
        pg.application_name("vigil");
    }
    pg.connect_timeout(config.query_timeout);
    let manager = Manager::from_config(
        pg,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(config.pool_size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(config.query_timeout))
        .create_timeout(Some(config.query_timeout))
        .recycle_timeout(Some(config.query_timeout))
        .build()
        .map_err(|e| CatalogError::Pool(e.to_string()))
}

/// Waits until the catalog answers, up to `connect_timeout`, backing off
/// between attempts and logging each one.
pub async fn wait_until_ready(
    pool: &Pool,
    config: &CatalogConfig,
    secrets: &[String],
) -> Result<(), CatalogError> {
    let started = Instant::now();
    let mut delay = Duration::from_millis(100);
    let mut attempt = 1u32;
    loop {
        let error = match pool.get().await {
            Ok(client) => match client.simple_query("SELECT 1").await {
                Ok(_) => {
                    tracing::info!(
                        attempt,
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "catalog is accepting connections"
                    );
                    return Ok(());
                }
                Err(e) => crate::redact::error_chain(&e),
            },
            Err(e) => crate::redact::error_chain(&e),
        };
        let error = redact_text(&error, secrets);
        let remaining = config.connect_timeout.saturating_sub(started.elapsed());
        if remaining.is_zero() {
            return Err(CatalogError::Unreachable {
                waited: humantime::format_duration(config.connect_timeout).to_string(),
                last_error: error,
            });
        }
        let wait = delay.min(remaining);
        tracing::warn!(attempt, error = %error, retry_in_ms = wait.as_millis() as u64, "catalog not ready yet");
        tokio::time::sleep(wait).await;
        delay = (delay * 2).min(Duration::from_secs(5));
        attempt += 1;
    }
}

/// The highest applied migration, `None` before the first.
pub async fn schema_version(pool: &Pool) -> Result<Option<i32>, CatalogError> {
    let client = pool
        .get()
        .await
        .map_err(|e| CatalogError::Pool(e.to_string()))?;
    let q = |e: tokio_postgres::Error| CatalogError::Query(e.to_string());
    // Two statements: a missing table would fail the second at parse time.
    let exists: bool = client
        .query_one(
            "SELECT to_regclass($1) IS NOT NULL",
            &[&migrate::HISTORY_TABLE],
        )
        .await
        .map_err(q)?
        .get(0);
    if !exists {
        return Ok(None);
    }
    let row = client
        .query_one("SELECT max(version) FROM vigil.schema_history", &[])
        .await
        .map_err(q)?;
    Ok(row.get(0))
}
