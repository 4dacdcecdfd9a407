//! Which checks the daemon runs: built here from the config, the catalog
//! pool, the journal and the armed jobs, so that jobs never know about
//! health (health reads the jobs and the state they write).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;

use super::Check;
use super::catalog::{CatalogMigrationsCheck, CatalogResponseCheck};
use super::disk::DiskUsageCheck;
use super::jobs::{
    BoardCheck, FreshnessCheck, SourceCheck, StaleEdge, grade_consistency, grade_retention,
};
use super::journal::JournalWritableCheck;
use super::repo::{CapacityCheck, LeftoversCheck, ReachableCheck, WritableCheck};
use crate::config::Config;
use crate::core::health::CheckSpec;
use crate::jobs::JobContext;
use crate::journal::Journal;
use crate::state::Shared;

/// Every periodic check of a running daemon: the catalog's, the state
/// directory's disk, each job's and repository's, the journal's, and the
/// log directory's disk when logs go to a file.
pub fn daemon_checks(
    config: &Config,
    pool: &Pool,
    shared: &Arc<Shared>,
    journal: &Journal,
    jobs: &[JobContext],
) -> Vec<Arc<dyn Check>> {
    let mut checks: Vec<Arc<dyn Check>> = vec![
        Arc::new(CatalogResponseCheck::new(
            pool.clone(),
            Arc::clone(&shared.audit),
        )),
        Arc::new(CatalogMigrationsCheck {
            pool: pool.clone(),
            expected: crate::catalog::expected_version(),
        }),
        Arc::new(DiskUsageCheck {
            name: "state-dir".into(),
            path: config.daemon.state_dir.clone(),
        }),
    ];
    checks.extend(job_checks(config, shared, jobs));
    checks.push(Arc::new(JournalWritableCheck {
        journal: journal.clone(),
    }));
    for hook in &config.notify.webhooks {
        checks.push(Arc::new(super::notify::WebhookCheck {
            hook: hook.clone(),
            shared: Arc::clone(shared),
        }));
    }
    if let Some(dir) = log_dir(config) {
        checks.push(Arc::new(DiskUsageCheck {
            name: "log-dir".into(),
            path: dir,
        }));
    }
    checks
}

/// The directory of `log.file`, if logs go to a file (`.` for a bare name).
fn log_dir(config: &Config) -> Option<PathBuf> {
    let dir = config.log.file.as_ref()?.parent()?;
    Some(if dir.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        dir.to_owned()
    })
}

/// Each job's checks, then its repository's the first time that
/// repository appears.
pub fn job_checks(
    config: &Config,
    shared: &Arc<Shared>,
    jobs: &[JobContext],
) -> Vec<Arc<dyn Check>> {
    let mut checks: Vec<Arc<dyn Check>> = Vec::new();
    let mut repos = BTreeSet::new();
    for ctx in jobs {
        checks.push(Arc::new(FreshnessCheck {
            job: ctx.name.clone(),
            shared: Arc::clone(shared),
            stale: StaleEdge {
                journal: ctx.journal.clone(),
                state_dir: ctx.state_dir.clone(),
            },
        }));
        checks.push(Arc::new(SourceCheck { ctx: ctx.clone() }));
        for (measurement, grade) in [
            ("retention", grade_retention as fn(&_) -> _),
            ("consistency", grade_consistency),
        ] {
            checks.push(Arc::new(BoardCheck {
                job: ctx.name.clone(),
                shared: Arc::clone(shared),
                measurement,
                grade,
            }));
        }
        if let Some(check) = super::verify::for_job(ctx, shared) {
            checks.push(Arc::new(check));
        }
        if ctx.job.kind == crate::config::JobKind::PostgresPhysical {
            checks.push(Arc::new(super::wal::WalCheck {
                ctx: ctx.clone(),
                shared: Arc::clone(shared),
            }));
        }
        if let Some(drill) = super::drill::DrillCheck::for_job(ctx, shared) {
            checks.push(Arc::new(drill));
        }
        if repos.insert(ctx.repo.name.clone()) {
            checks.extend(repository_checks(config, shared, ctx));
        }
    }
    checks
}

/// `ctx`'s repository's checks: reachable, writable, and on fs leftovers
/// and capacity; encryption when an identity is configured.
fn repository_checks(
    config: &Config,
    shared: &Arc<Shared>,
    ctx: &JobContext,
) -> Vec<Arc<dyn Check>> {
    let mut checks: Vec<Arc<dyn Check>> = vec![
        Arc::new(ReachableCheck {
            repo: ctx.repo.clone(),
        }),
        Arc::new(WritableCheck {
            repo: ctx.repo.clone(),
            host: shared.service_id.clone(),
        }),
    ];
    if ctx.repo.is_fs() {
        checks.push(Arc::new(LeftoversCheck {
            repo: ctx.repo.clone(),
        }));
        checks.push(Arc::new(CapacityCheck {
            repo: ctx.repo.clone(),
            shared: Arc::clone(shared),
            jobs: config
                .jobs
                .iter()
                .filter(|(_, j)| j.repository == ctx.repo.name)
                .map(|(n, _)| n.clone())
                .collect(),
        }));
    }
    checks.extend(super::encryption::for_repository(config, ctx));
    checks
}

/// `config:reload`: not run periodically; the daemon sets it after each
/// reload (pass, or warn while running on the previous config).
pub fn reload_spec() -> CheckSpec {
    CheckSpec {
        key: "config:reload".into(),
        component_id: "config".into(),
        component_type: "component",
        interval: Duration::ZERO,
        timeout: Duration::ZERO,
        critical: true,
        periodic: false,
    }
}
