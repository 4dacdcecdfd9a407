//! Opening the catalog, one way for every process: the daemon and `vigil
//! migrate` wait for it (up to `catalog.connect_timeout`); the other
//! commands probe it once and go on without it.

use std::time::Duration;

use deadpool_postgres::Pool;

use super::{CatalogError, pool, probe, wait_until_ready};
use crate::config::CatalogConfig;

/// How long to wait for the catalog.
#[derive(Debug, Clone, Copy)]
pub enum Wait {
    /// Until it answers, up to `catalog.connect_timeout` (any schema).
    UntilReady,
    /// One attempt within this time; the schema must be current.
    Probe(Duration),
}

/// The catalog's pool once it answers as `wait` asks; `secrets` are kept
/// out of the errors.
pub async fn connect(
    config: &CatalogConfig,
    secrets: &[String],
    wait: Wait,
) -> Result<Pool, CatalogError> {
    match wait {
        Wait::UntilReady => {
            let pool = pool(config)?;
            wait_until_ready(&pool, config, secrets).await?;
            Ok(pool)
        }
        Wait::Probe(timeout) => probe(config, timeout).await,
    }
}
