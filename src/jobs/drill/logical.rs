//! A logical job's drill: the scratch database is created when missing,
//! reused when it exists with no tables, refused (untouched) when it holds
//! any; the newest backup is restored into it with the restore code, the
//! checks run, and the database is dropped (`WITH (FORCE)`) whether the
//! drill passed or not; only a database the drill created or found empty.

use std::time::Instant;

use tokio_util::sync::CancellationToken;

use super::record::JournalOnly;
use super::{Attempt, DrillError, checks};
use crate::config::DrillConfig;
use crate::config::conninfo::ConnInfo;
use crate::core::manifest::Manifest;
use crate::jobs::JobContext;
use crate::jobs::restore::target::{connect, drop_database, prepare_target};
use crate::jobs::restore::{self, RestoreError, RestoreRequest};
use crate::pipeline::pgtools::describe_host;

pub(super) async fn drill(
    ctx: &JobContext,
    config: &DrillConfig,
    newest: Option<&Manifest>,
    cancel: &CancellationToken,
) -> Attempt {
    let backup_id = newest.map(|m| m.backup_id.to_string());
    let (info, database) = match restore::parse_target(config.target.expose()) {
        Ok(parsed) => parsed,
        Err(e) => {
            return Attempt {
                backup_id,
                recovery_target: None,
                target: "(unparsable drill.target)".into(),
                result: Err(DrillError::Restore(e)),
            };
        }
    };
    let target = format!("{}/{database}", describe_host(&info.pg));
    let result = match &backup_id {
        Some(id) => restore_and_check(ctx, config, id, &info, &database, cancel).await,
        None => Err(DrillError::NoBackups {
            job: ctx.name.clone(),
        }),
    };
    Attempt {
        backup_id,
        recovery_target: None,
        target,
        result,
    }
}

/// Prepares the scratch database, and once it is the drill's, restores,
/// checks and drops it. The RTO runs from the preparation to the last
/// check's answer.
async fn restore_and_check(
    ctx: &JobContext,
    config: &DrillConfig,
    backup_id: &str,
    info: &ConnInfo,
    database: &str,
    cancel: &CancellationToken,
) -> Result<f64, DrillError> {
    let clock = Instant::now();
    let create = RestoreRequest {
        create: true,
        ..RestoreRequest::default()
    };
    prepare_target(info, database, &create)
        .await
        .map_err(|e| refused(info, e))?;
    // From here the database is the drill's: created, or found empty.
    let checked = restore_into(ctx, config, backup_id, info, cancel).await;
    let rto = clock.elapsed().as_secs_f64();
    let dropped = drop_database(info, database).await;
    checked?;
    dropped.map_err(|e| DrillError::Drop {
        host: describe_host(&info.pg),
        database: database.to_owned(),
        detail: ctx.redact(&crate::core::redact::error_chain(&e)),
    })?;
    Ok(rto)
}

/// A scratch database holding tables is the drill's refusal, not a
/// failed restore.
fn refused(info: &ConnInfo, e: RestoreError) -> DrillError {
    match e {
        RestoreError::NotEmpty { database, tables } => DrillError::TargetNotEmpty {
            host: describe_host(&info.pg),
            database,
            tables,
        },
        other => DrillError::Restore(other),
    }
}

async fn restore_into(
    ctx: &JobContext,
    config: &DrillConfig,
    backup_id: &str,
    info: &ConnInfo,
    cancel: &CancellationToken,
) -> Result<(), DrillError> {
    let request = RestoreRequest {
        backup: Some(backup_id.to_owned()),
        database: config.database.clone(),
        to: config.target.expose().to_owned(),
        ..RestoreRequest::default()
    };
    restore::run_reported(ctx, &request, cancel, &JournalOnly(ctx))
        .await
        .map_err(|e| {
            if e.is_cancelled() {
                DrillError::Cancelled
            } else {
                DrillError::Restore(e)
            }
        })?;
    let client = connect(info, None).await.map_err(DrillError::Restore)?;
    checks::run(&client, &checks::queries(&config.check_sql)).await
}
