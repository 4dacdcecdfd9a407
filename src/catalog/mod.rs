//! The catalog database: pool, start-up wait, migrations, health events.
//! A queryable mirror and history; never a dependency of restore.

mod connect;
mod events;
mod migrate;

use std::time::{Duration, Instant};

use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use thiserror::Error;

pub use connect::{Wait, connect};
pub use events::{EventRow, Transition, spawn_event_writer};
pub use migrate::{MigrationOutcome, expected_version, migrate};

use crate::config::CatalogConfig;
use crate::core::redact::redact_text;

#[derive(Debug, Error)]
pub enum CatalogError {
    #[error(
        "catalog at {addr} did not accept connections within {waited}: {last_error} (is PostgreSQL running at the address in `catalog.url`?)"
    )]
    Unreachable {
        addr: String,
        waited: String,
        last_error: String,
    },
    /// One attempt failed (a CLI command does not wait).
    #[error("catalog at {addr} is unreachable: {reason}")]
    Down { addr: String, reason: String },
    /// A wrong password, an unknown role or database: retrying cannot help.
    #[error(
        "catalog at {addr} refused vigil: {message} (fix `catalog.url` or the catalog password; this is not retried)"
    )]
    Refused { addr: String, message: String },
    /// Reachable, but the schema is older than this binary's (or absent).
    #[error(
        "catalog not migrated: run `vigil migrate` ({addr} has schema version {}, this vigil needs {expected})",
        found.map_or_else(|| "none".to_owned(), |v| v.to_string())
    )]
    NotMigrated {
        addr: String,
        found: Option<i32>,
        expected: i32,
    },
    #[error("catalog pool: {0}")]
    Pool(String),
    #[error("catalog query failed: {0}")]
    Query(String),
    #[error(
        "catalog migration failed: {0} (the schema is left at the last version that applied; fix the cause and restart)"
    )]
    Migration(String),
}

/// How long a CLI command waits for the catalog before it goes on without it.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Builds the pool (connections are opened lazily).
pub fn pool(config: &CatalogConfig) -> Result<Pool, CatalogError> {
    let info = crate::config::conninfo::parse(config.url.expose())
        .map_err(|e| CatalogError::Pool(format!("`catalog.url`: {e}")))?;
    let tls = crate::pgconn::connector(&info.tls)
        .map_err(|e| CatalogError::Pool(format!("`catalog.url`: {e}")))?;
    let mut pg = info.pg;
    if let Some(password) = &config.password {
        pg.password(password.expose());
    }
    if pg.get_application_name().is_none() {
        pg.application_name("vigil");
    }
    pg.connect_timeout(config.query_timeout);
    let manager = Manager::from_config(
        pg,
        tls,
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

fn pg_config(config: &CatalogConfig) -> Result<tokio_postgres::Config, CatalogError> {
    crate::config::conninfo::parse(config.url.expose())
        .map(|info| info.pg)
        .map_err(|e| CatalogError::Pool(format!("`catalog.url`: {e}")))
}

/// `host:port` of the catalog (every host of a multi-host URL), for messages.
pub fn address(config: &CatalogConfig) -> String {
    let Ok(pg) = pg_config(config) else {
        return "`catalog.url`".to_owned();
    };
    let ports = pg.get_ports();
    let hosts: Vec<String> = pg
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| {
            // libpq: one port for all hosts, or one per host; 5432 by default.
            let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
            match host {
                tokio_postgres::config::Host::Tcp(name) => format!("{name}:{port}"),
                tokio_postgres::config::Host::Unix(dir) => {
                    format!("{}/.s.PGSQL.{port}", dir.display())
                }
            }
        })
        .collect();
    if hosts.is_empty() {
        "localhost:5432".to_owned()
    } else {
        hosts.join(",")
    }
}

/// What a failed attempt to get a catalog connection says, without
/// deadpool's wrapper ("Error occurred while creating a new object"),
/// which names no cause.
pub fn describe(error: &PoolError) -> String {
    match error {
        PoolError::Backend(e) => describe_postgres(e),
        PoolError::Timeout(_) => "no connection within `catalog.query_timeout`".to_owned(),
        other => other.to_string(),
    }
}

/// A PostgreSQL error with its cause: the server's own message when it sent one.
pub fn describe_postgres(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => crate::core::redact::error_chain(error),
    }
}

/// Whether retrying cannot help: the server rejected the password, the
/// role or the database, or vigil rejected the server's certificate
/// (connection refused or a timeout is worth retrying).
pub fn is_permanent(error: &PoolError) -> bool {
    use tokio_postgres::error::SqlState;
    let PoolError::Backend(e) = error else {
        return false;
    };
    crate::pgconn::is_certificate_refusal(e)
        || e.code().is_some_and(|code| {
            [
                SqlState::INVALID_PASSWORD,
                SqlState::INVALID_AUTHORIZATION_SPECIFICATION,
                SqlState::INVALID_CATALOG_NAME,
            ]
            .contains(code)
        })
}

/// Why one attempt to reach the catalog failed.
enum Failure {
    /// The server refused us (password, role, database): do not retry.
    Refused(String),
    /// No connection or no answer (refused port, timeout, reset): retry.
    Unanswered(String),
}

/// One attempt: a connection and a round trip.
async fn ping(pool: &Pool, config: &CatalogConfig) -> Result<(), Failure> {
    let client = match pool.get().await {
        Ok(client) => client,
        Err(e) if is_permanent(&e) => return Err(Failure::Refused(describe(&e))),
        Err(e) => return Err(unanswered(config, &e).await),
    };
    client
        .simple_query("SELECT 1")
        .await
        .map_err(|e| Failure::Unanswered(describe_postgres(&e)))?;
    Ok(())
}

/// A failure worth retrying, unless the server has no TLS and the URL
/// requires it (which waiting cannot change).
async fn unanswered(config: &CatalogConfig, error: &PoolError) -> Failure {
    let info = crate::config::conninfo::parse(config.url.expose()).ok();
    match info {
        Some(info) => match crate::pgconn::server_without_tls(&info).await {
            Some(no_tls) => Failure::Refused(no_tls.to_string()),
            None => Failure::Unanswered(describe(error)),
        },
        None => Failure::Unanswered(describe(error)),
    }
}

/// Waits until the catalog answers, up to `connect_timeout`, backing off
/// between attempts and logging each one. A refusal (password, role,
/// database) ends the wait at once.
pub async fn wait_until_ready(
    pool: &Pool,
    config: &CatalogConfig,
    secrets: &[String],
) -> Result<(), CatalogError> {
    let started = Instant::now();
    let mut delay = Duration::from_millis(100);
    let mut attempt = 1u32;
    loop {
        let error = match ping(pool, config).await {
            Ok(()) => {
                tracing::info!(
                    attempt,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "catalog is accepting connections"
                );
                return Ok(());
            }
            Err(Failure::Unanswered(error)) => error,
            Err(Failure::Refused(message)) => {
                return Err(CatalogError::Refused {
                    addr: address(config),
                    message: redact_text(&message, secrets),
                });
            }
        };
        let error = redact_text(&error, secrets);
        let remaining = config.connect_timeout.saturating_sub(started.elapsed());
        if remaining.is_zero() {
            return Err(CatalogError::Unreachable {
                addr: address(config),
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

/// For a CLI command: the catalog's pool if it answers within `timeout`
/// and is migrated to this binary's schema. One attempt, no migration:
/// only `vigil migrate` and the daemon change the schema.
pub async fn probe(config: &CatalogConfig, timeout: Duration) -> Result<Pool, CatalogError> {
    let pool = pool(config)?;
    let addr = || address(config);
    let checked = tokio::time::timeout(timeout, async {
        ping(&pool, config).await.map_err(|failure| match failure {
            Failure::Refused(message) => CatalogError::Refused {
                addr: addr(),
                message,
            },
            Failure::Unanswered(reason) => CatalogError::Down {
                addr: addr(),
                reason,
            },
        })?;
        schema_version(&pool).await
    })
    .await;
    let found = checked.map_err(|_| CatalogError::Down {
        addr: addr(),
        reason: format!("no answer within {}", humantime::format_duration(timeout)),
    })??;
    let expected = expected_version();
    if found.is_none_or(|v| v < expected) {
        return Err(CatalogError::NotMigrated {
            addr: address(config),
            found,
            expected,
        });
    }
    Ok(pool)
}

/// The highest applied migration, `None` before the first.
pub async fn schema_version(pool: &Pool) -> Result<Option<i32>, CatalogError> {
    let client = pool
        .get()
        .await
        .map_err(|e| CatalogError::Pool(describe(&e)))?;
    let q = |e: tokio_postgres::Error| CatalogError::Query(describe_postgres(&e));
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::config::{CatalogConfig, Secret};

    fn config(url: &str) -> CatalogConfig {
        CatalogConfig {
            url: Secret::new(url),
            password: None,
            password_file: None,
            pool_size: 1,
            connect_timeout: Duration::from_secs(30),
            query_timeout: Duration::from_secs(5),
        }
    }

    #[test]
    fn the_address_names_every_host_and_port() {
        let address = |url: &str| super::address(&config(url));
        assert_eq!(
            address("postgres://u:pw@db.example:6432/c"),
            "db.example:6432"
        );
        assert_eq!(address("postgres://u@db.example/c"), "db.example:5432");
        assert_eq!(address("postgres://u@a:1,b:2/c"), "a:1,b:2");
        assert_eq!(address("host=a,b port=7 dbname=c"), "a:7,b:7");
        assert_eq!(
            address("host=/run/postgresql dbname=c"),
            "/run/postgresql/.s.PGSQL.5432"
        );
        assert!(!address("postgres://u:secret@h/c").contains("secret"));
    }

    #[test]
    fn an_unmigrated_catalog_says_what_to_run() {
        let e = super::CatalogError::NotMigrated {
            addr: "h:5432".into(),
            found: None,
            expected: 4,
        };
        assert_eq!(
            e.to_string(),
            "catalog not migrated: run `vigil migrate` (h:5432 has schema version none, this vigil needs 4)"
        );
    }
}
