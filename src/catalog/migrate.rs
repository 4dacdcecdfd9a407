//! Embedded SQL migrations, applied under an advisory lock so replicas
//! starting together cannot race. Forward-only and idempotent.

use deadpool_postgres::Pool;

use super::CatalogError;

refinery::embed_migrations!("migrations");

/// Where refinery records applied versions (inside our own schema).
pub const HISTORY_TABLE: &str = "vigil.schema_history";
/// Session advisory lock key for migrations: "vigilmig" in ASCII.
const MIGRATION_LOCK: i64 = 0x7669_6769_6c6d_6967;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationOutcome {
    pub applied: Vec<String>,
    pub version: i32,
}

/// The schema version this binary expects.
pub fn expected_version() -> i32 {
    migrations::runner()
        .get_migrations()
        .iter()
        .map(|m| m.version())
        .max()
        .unwrap_or(0)
}

pub async fn migrate(pool: &Pool) -> Result<MigrationOutcome, CatalogError> {
    let mut client = pool
        .get()
        .await
        .map_err(|e| CatalogError::Pool(super::describe(&e)))?;
    let err = |e: tokio_postgres::Error| CatalogError::Migration(e.to_string());
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(err)?;
    let result = async {
        // Quiet "already exists" notices; the history table lives in our schema.
        client
            .batch_execute("SET client_min_messages = warning; CREATE SCHEMA IF NOT EXISTS vigil")
            .await
            .map_err(err)?;
        let client: &mut tokio_postgres::Client = &mut client;
        migrations::runner()
            .set_migration_table_name(HISTORY_TABLE)
            .run_async(client)
            .await
            .map_err(|e| CatalogError::Migration(e.to_string()))
    }
    .await;
    // Unlock even after a failure; the session would release it on close anyway.
    let unlocked = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await;
    let report = result?;
    unlocked.map_err(err)?;
    let applied: Vec<String> = report
        .applied_migrations()
        .iter()
        .map(|m| format!("V{}__{}", m.version(), m.name()))
        .collect();
    let version = super::schema_version(pool).await?.unwrap_or(0);
    Ok(MigrationOutcome { applied, version })
}
