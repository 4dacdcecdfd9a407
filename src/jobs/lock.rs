//! The job lock: several vigil replicas never run the same job at once,
//! whether or not they can reach the catalog.
//!
//! Two mechanisms compose, taken in this order:
//!
//! 1. **The catalog's advisory lock** (the fast path): a replica that
//!    reaches the catalog and finds the lock held skips at once, without
//!    touching storage. When the catalog cannot be reached within
//!    `catalog.query_timeout`, this step is skipped (logged at warn).
//! 2. **The repository lease** (`repo::lease`, `<prefix>/<job>/locks/run`)
//!    is always taken too. A replica cut off from the catalog cannot see
//!    advisory locks, and one that reaches it cannot know whether another
//!    does; only a lock every replica can see closes the race. Merely
//!    checking for a live lease would leave a window between the check and
//!    another replica's create. The lease lives on the storage the run
//!    writes to anyway, so it adds no point of failure: a create, a delete
//!    and a renewal every third of `lease_ttl` per run.
//!
//! So two replicas never both run: if both reach the catalog the advisory
//! lock decides; otherwise the lease's create-only write does. A run whose
//! lease is lost (taken over after it could not renew in time) is
//! cancelled before it commits.
//!
//! Holding the lock also proves that no other run of the job is alive, so
//! execution rows still `running` were left by a killed process: they are
//! closed out here (`executions::close_orphans`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use deadpool_postgres::{Object, Pool};
use thiserror::Error;
use tokio_util::sync::CancellationToken;

use super::JobContext;
use super::executions::{Session, StepError};
use crate::repo::Repository;
use crate::repo::lease::{self, Acquired, LeaseError, LeaseRecord};

/// The lease's name under `<prefix>/<job>/locks/`.
pub const LEASE_NAME: &str = "run";

#[derive(Debug, Error)]
pub enum LockError {
    #[error("job `{job}`: cannot take the job lock: {source}")]
    Lease {
        job: String,
        #[source]
        source: LeaseError,
    },
}

/// Held until [`JobLock::release`]: the repository lease, renewed in the
/// background, and the catalog's advisory lock when it was reachable.
pub struct JobLock {
    advisory: Option<AdvisoryLock>,
    lease: HeldLease,
    /// A child of the run's cancel token, also cancelled when the lease is
    /// lost: the run uses it so that it stops before committing.
    pub cancel: CancellationToken,
}

struct HeldLease {
    repo: Repository,
    path: String,
    /// The newest record we wrote (renewals move its expiry).
    record: Arc<Mutex<LeaseRecord>>,
    /// Why the lease was lost, once it is.
    lost: Arc<Mutex<Option<String>>>,
    renewal: tokio::task::JoinHandle<()>,
    released: bool,
}

/// Takes the job's lock without waiting; `Ok(None)` if another holder has
/// it. Closes out execution rows left `running` by killed runs.
pub async fn take(
    ctx: &JobContext,
    cancel: &CancellationToken,
) -> Result<Option<JobLock>, LockError> {
    take_named(ctx, LEASE_NAME, cancel).await
}

/// [`take`] for another kind of run of the job (`drill`): its own
/// advisory key and lease `<job>/locks/<name>`, so such runs never
/// overlap each other yet run beside the job's backups.
pub async fn take_named(
    ctx: &JobContext,
    name: &str,
    cancel: &CancellationToken,
) -> Result<Option<JobLock>, LockError> {
    let key = if name == LEASE_NAME {
        ctx.name.clone()
    } else {
        format!("{}/{name}", ctx.name)
    };
    let advisory = match try_advisory(&ctx.catalog, &key).await {
        Ok(Some(held)) => Some(held),
        Ok(None) => {
            tracing::info!(job = %ctx.name, "another vigil holds the job's advisory lock");
            return Ok(None);
        }
        Err(e) => {
            tracing::warn!(job = %ctx.name, error = %ctx.redact(&e.to_string()), "catalog unreachable: the job lock is the repository lease alone");
            None
        }
    };
    let path = lease::lease_path(&ctx.repo, &ctx.name, name);
    let ours = LeaseRecord::new(&ctx.host, ctx.repo.lease_ttl);
    let acquired = lease::acquire(&ctx.repo, &path, &ours).await;
    let record = match acquired {
        Ok(Acquired::Held(record)) => record,
        Ok(Acquired::Busy(holder)) => {
            tracing::info!(job = %ctx.name, holder = %holder.describe(), lease = %path, "another vigil holds the job's lease");
            release_advisory(advisory).await;
            return Ok(None);
        }
        Err(source) => {
            release_advisory(advisory).await;
            return Err(LockError::Lease {
                job: ctx.name.clone(),
                source,
            });
        }
    };
    let cancel = cancel.child_token();
    let lease = HeldLease::start(ctx.repo.clone(), path, record, cancel.clone());
    if advisory.is_some() && name == LEASE_NAME {
        super::executions::close_orphans(ctx).await;
    }
    Ok(Some(JobLock {
        advisory,
        lease,
        cancel,
    }))
}

impl JobLock {
    /// Why the lease was lost during the run, if it was.
    pub fn lost(&self) -> Option<String> {
        self.lease.lost.lock().ok().and_then(|l| l.clone())
    }

    pub async fn release(mut self) {
        self.lease.release().await;
        release_advisory(self.advisory.take()).await;
    }
}

impl HeldLease {
    fn start(
        repo: Repository,
        path: String,
        record: LeaseRecord,
        cancel: CancellationToken,
    ) -> HeldLease {
        let record = Arc::new(Mutex::new(record));
        let lost = Arc::new(Mutex::new(None));
        let renewal = tokio::spawn(renew_loop(
            repo.clone(),
            path.clone(),
            Arc::clone(&record),
            Arc::clone(&lost),
            cancel,
        ));
        HeldLease {
            repo,
            path,
            record,
            lost,
            renewal,
            released: false,
        }
    }

    fn current(&self) -> Option<LeaseRecord> {
        self.record.lock().ok().map(|r| r.clone())
    }

    async fn release(&mut self) {
        self.renewal.abort();
        self.released = true;
        let Some(record) = self.current() else { return };
        if let Err(e) = lease::release(&self.repo, &self.path, &record).await {
            // It expires on its own; the next run waits until then.
            tracing::warn!(lease = %self.path, error = %e, "cannot release the job lease");
        }
    }
}

impl Drop for HeldLease {
    fn drop(&mut self) {
        self.renewal.abort();
        if self.released {
            return;
        }
        // A run unwound without releasing: free the lease rather than make
        // the next run wait for its expiry.
        if let (Some(record), Ok(runtime)) = (self.current(), tokio::runtime::Handle::try_current())
        {
            let (repo, path) = (self.repo.clone(), self.path.clone());
            runtime.spawn(async move {
                let _ = lease::release(&repo, &path, &record).await;
            });
        }
    }
}

/// Renews every third of the lease time; on loss records why and cancels
/// the run. A renewal that fails is retried at the next tick unless that
/// tick would come after expiry: then the lease counts as lost already.
async fn renew_loop(
    repo: Repository,
    path: String,
    record: Arc<Mutex<LeaseRecord>>,
    lost: Arc<Mutex<Option<String>>>,
    cancel: CancellationToken,
) {
    let ttl = repo.lease_ttl;
    let tick = ttl / 3;
    loop {
        tokio::time::sleep(tick).await;
        let Some(current) = record.lock().ok().map(|r| r.clone()) else {
            return;
        };
        let renewed = tokio::time::timeout(tick, lease::renew(&repo, &path, &current, ttl)).await;
        let failure = match renewed {
            Ok(Ok(next)) => {
                if let Ok(mut r) = record.lock() {
                    *r = next;
                }
                continue;
            }
            Ok(Err(e @ LeaseError::Lost { .. })) => {
                mark_lost(&lost, &cancel, e.to_string());
                return;
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!(
                "renewing lease {path} on {} took longer than {}",
                repo.location(),
                humantime::format_duration(tick)
            ),
        };
        tracing::warn!(lease = %path, error = %failure, "cannot renew the job lease; retrying");
        if Utc::now() + tick >= current.expires_at {
            mark_lost(
                &lost,
                &cancel,
                format!("lease {path} could not be renewed before it expired: {failure}"),
            );
            return;
        }
    }
}

fn mark_lost(lost: &Mutex<Option<String>>, cancel: &CancellationToken, why: String) {
    tracing::error!(error = %why, "job lease lost; stopping the run");
    if let Ok(mut l) = lost.lock() {
        *l = Some(why);
    }
    cancel.cancel();
}

/// A session advisory lock, held until released (or the session closes).
struct AdvisoryLock {
    client: Option<Object>,
    key: i64,
}

/// A stable lock key per job name.
pub fn lock_key(job: &str) -> i64 {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("vigil:job:{job}").as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(first)
}

/// How long one catalog step of a run may take: the pool's own timeout
/// (`catalog.query_timeout`), so a hung catalog never holds a run up.
pub fn catalog_budget(pool: &Pool) -> Duration {
    pool.timeouts().wait.unwrap_or(Duration::from_secs(5))
}

/// The advisory lock without waiting; `Ok(None)` if held elsewhere, `Err`
/// if the catalog cannot be reached in time.
async fn try_advisory(pool: &Pool, job: &str) -> Result<Option<AdvisoryLock>, AdvisoryError> {
    let key = lock_key(job);
    // Cut off by the timeout, the session is closed (not pooled): a late
    // grant must not stay held in an idle connection.
    let attempt = async {
        let session = Session::open(pool).await.map_err(AdvisoryError::Connect)?;
        let row = session
            .client()?
            .query_one("SELECT pg_try_advisory_lock($1)", &[&key])
            .await
            .map_err(AdvisoryError::Query)?;
        let client = session.finish();
        if !row.get::<_, bool>(0) {
            // Not ours: the connection goes back to the pool as it drops.
            return Ok(None);
        }
        Ok(Some(AdvisoryLock { client, key }))
    };
    let budget = catalog_budget(pool);
    tokio::time::timeout(budget, attempt)
        .await
        .map_err(|_| AdvisoryError::Step(StepError::Timeout { budget }))?
}

/// The catalog's advisory lock could not be asked for (the lease decides).
#[derive(Debug, Error)]
enum AdvisoryError {
    #[error("cannot connect: {0}")]
    Connect(#[source] StepError),
    #[error("pg_try_advisory_lock failed: {0}")]
    Query(#[source] tokio_postgres::Error),
    #[error(transparent)]
    Step(#[from] StepError),
}

async fn release_advisory(advisory: Option<AdvisoryLock>) {
    if let Some(mut held) = advisory
        && let Some(client) = held.client.take()
    {
        let unlock = tokio::time::timeout(
            Duration::from_secs(5),
            client.execute("SELECT pg_advisory_unlock($1)", &[&held.key]),
        )
        .await;
        if !matches!(unlock, Ok(Ok(_))) {
            // Closing the session releases the lock for sure.
            drop(Object::take(client));
        }
    }
}

impl Drop for AdvisoryLock {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            // Never return a locked session to the pool.
            drop(Object::take(client));
        }
    }
}
