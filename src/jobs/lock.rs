//! Per-job PostgreSQL advisory locks on the catalog, so several vigil
//! replicas never run the same job at once.

use deadpool_postgres::{Object, Pool};

/// Holds a session advisory lock until [`JobLock::release`] (or drop,
/// which closes the session and so frees the lock).
pub struct JobLock {
    client: Option<Object>,
    key: i64,
}

/// A stable lock key per job name.
pub fn lock_key(job: &str) -> i64 {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("vigil:job:{job}").as_bytes());
    i64::from_be_bytes(digest[..8].try_into().expect("8 bytes"))
}

/// Takes the job's lock without waiting; `Ok(None)` if another holder has it.
pub async fn try_lock(pool: &Pool, job: &str) -> Result<Option<JobLock>, String> {
    let client = pool
        .get()
        .await
        .map_err(|e| format!("catalog unreachable, cannot take the job lock: {e}"))?;
    let key = lock_key(job);
    let row = client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&key])
        .await
        .map_err(|e| format!("cannot take the job lock: {e}"))?;
    Ok(row.get::<_, bool>(0).then_some(JobLock {
        client: Some(client),
        key,
    }))
}

impl JobLock {
    pub async fn release(mut self) {
        if let Some(client) = self.client.take()
            && client
                .execute("SELECT pg_advisory_unlock($1)", &[&self.key])
                .await
                .is_err()
        {
            // Closing the session releases the lock for sure.
            drop(Object::take(client));
        }
    }
}

impl Drop for JobLock {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            // Never return a locked session to the pool.
            drop(Object::take(client));
        }
    }
}
