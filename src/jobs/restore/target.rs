//! The PostgreSQL database a restore writes into: checked empty (or
//! created), and dropped again when a restore that created it fails (or
//! a drill is done with it).

use super::{RestoreError, RestoreRequest};
use crate::config::conninfo::ConnInfo;
use crate::pipeline::pgtools::describe_host;

/// Checks (or creates) the target; returns whether this restore created it.
pub(crate) async fn prepare_target(
    target: &ConnInfo,
    database: &str,
    request: &RestoreRequest,
) -> Result<bool, RestoreError> {
    let query_err = query_error(target, database);
    if request.create {
        let client = connect(target, Some("postgres")).await?;
        let exists = client
            .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&database])
            .await
            .map_err(&query_err)?
            .is_some();
        if !exists {
            client
                .batch_execute(&format!("CREATE DATABASE {}", quote_ident(database)))
                .await
                .map_err(|source| RestoreError::CreateDatabase {
                    host: describe_host(&target.pg),
                    database: database.to_owned(),
                    source,
                })?;
            return Ok(true);
        }
    }
    let client = connect(target, None).await?;
    let tables: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
             AND n.nspname NOT LIKE 'pg\\_toast%'",
            &[],
        )
        .await
        .map_err(&query_err)?
        .get(0);
    if tables > 0 && !request.clean {
        return Err(RestoreError::NotEmpty {
            database: database.to_owned(),
            tables,
        });
    }
    Ok(false)
}

/// A failed query on the target `database`.
fn query_error(
    target: &ConnInfo,
    database: &str,
) -> impl Fn(tokio_postgres::Error) -> RestoreError {
    let (host, database) = (describe_host(&target.pg), database.to_owned());
    move |source| RestoreError::TargetQuery {
        host: host.clone(),
        database: database.clone(),
        source,
    }
}

pub(crate) async fn connect(
    target: &ConnInfo,
    dbname: Option<&str>,
) -> Result<tokio_postgres::Client, RestoreError> {
    let mut info = target.clone();
    if let Some(db) = dbname {
        info.pg.dbname(db);
    }
    if info.pg.get_password().is_none()
        && let Ok(pw) = std::env::var("PGPASSWORD")
    {
        info.pg.password(pw);
    }
    crate::pgconn::connect(&info).await.map_err(|e| {
        let host = describe_host(&info.pg);
        let detail = e.detail();
        if e.is_unreachable() {
            RestoreError::TargetUnreachable { host, detail }
        } else {
            RestoreError::TargetConnect { host, detail }
        }
    })
}

pub(crate) async fn drop_database(target: &ConnInfo, database: &str) -> Result<(), RestoreError> {
    let client = connect(target, Some("postgres")).await?;
    client
        .batch_execute(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            quote_ident(database)
        ))
        .await
        .map_err(query_error(target, database))
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
