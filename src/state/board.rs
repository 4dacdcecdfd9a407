//! What every job is doing and has done, in memory: read by the health
//! checks, `/health/detailed` and `/metrics` without I/O.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use chrono::{DateTime, Utc};

use crate::core::ids::JobName;
use crate::core::manifest::Manifest;
use crate::core::schedule::Freshness;

#[derive(Debug, Clone)]
pub struct Running {
    pub started_at: DateTime<Utc>,
    pub trigger: &'static str,
    /// Raw bytes read from the source so far.
    pub source_bytes: Arc<AtomicU64>,
}

#[derive(Debug, Clone, Default)]
pub struct JobState {
    /// When the job counts as protected (set when the job is armed).
    pub freshness: Option<Freshness>,
    /// The first scheduled run since the job was armed (start-up): a job
    /// with no backup is failing once this is missed.
    pub first_due: Option<DateTime<Utc>>,
    pub running: Option<Running>,
    /// Finish time of the newest committed backup.
    pub last_success: Option<DateTime<Utc>>,
    pub backups: u64,
    pub oldest: Option<DateTime<Utc>>,
    pub runs_total: u64,
    pub failures_total: u64,
    /// Failed runs since the last success.
    pub consecutive_failures: u32,
    pub last_duration_seconds: Option<f64>,
    pub last_stored_bytes: Option<u64>,
    pub last_source_bytes: Option<u64>,
    pub last_error: Option<String>,
    pub next_run: Option<DateTime<Utc>>,
    /// The repository's manifests have been read since start-up.
    pub restored: bool,
    /// Damaged manifests in the repository, `(directory, why)`: not backups.
    pub damaged: Vec<(String, String)>,
    pub prune: PruneState,
    /// `postgres-physical` jobs: the WAL archive, as `<job>:wal` last read it.
    pub wal: Option<WalState>,
    /// The job's verification record as last read or written.
    pub verify: Option<crate::core::proofs::VerifyRecord>,
    /// The job's drill record as last read or written.
    pub drill: Option<crate::core::proofs::DrillRecord>,
}

/// A physical job's WAL archive and what it makes restorable.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WalState {
    /// The newest archived segment's time in the repository.
    pub last_archived: Option<DateTime<Utc>>,
    /// Earliest and latest restorable time over a gap-free chain.
    pub window: Option<crate::core::wal_chain::Window>,
    /// Gaps in the chains of the kept base backups.
    pub gaps: usize,
}

/// The job's retention runs.
#[derive(Debug, Clone, Default)]
pub struct PruneState {
    pub last_success: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub deleted_total: u64,
    pub freed_bytes_total: u64,
    /// Catalog vs repository disagreements found by the last prune.
    pub missing_from_repository: Vec<String>,
    pub unknown_to_catalog: Vec<String>,
}

impl JobState {
    pub fn running_bytes(&self) -> Option<u64> {
        self.running
            .as_ref()
            .map(|r| r.source_bytes.load(Ordering::Relaxed))
    }

    /// Folds a committed backup in.
    pub fn record_success(&mut self, manifest: &Manifest) {
        self.runs_total += 1;
        self.last_success = Some(
            self.last_success
                .map_or(manifest.finished_at, |t| t.max(manifest.finished_at)),
        );
        self.backups += 1;
        self.oldest = Some(
            self.oldest
                .map_or(manifest.finished_at, |t| t.min(manifest.finished_at)),
        );
        self.last_duration_seconds = (manifest.finished_at - manifest.started_at)
            .to_std()
            .ok()
            .map(|d| d.as_secs_f64());
        self.last_stored_bytes = Some(manifest.stored_bytes());
        self.last_source_bytes = Some(manifest.raw_bytes());
        self.last_error = None;
        self.consecutive_failures = 0;
    }

    /// Folds a successful mirror run in: it copied `copied_bytes`.
    pub fn record_mirror(&mut self, copied_bytes: u64) {
        self.runs_total += 1;
        self.last_success = Some(chrono::Utc::now());
        self.last_stored_bytes = Some(copied_bytes);
        self.last_error = None;
        self.consecutive_failures = 0;
    }

    pub fn record_failure(&mut self, error: String) {
        self.runs_total += 1;
        self.failures_total += 1;
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        self.last_error = Some(error);
    }

    /// State rebuilt from a listing of the repository: its committed
    /// backups and its damaged manifests.
    pub fn restore_listing(&mut self, listing: &crate::repo::Listing) {
        self.restore_from(&listing.backups);
        self.damaged = listing.damaged.clone();
    }

    /// State rebuilt from the repository's manifests (start-up).
    pub fn restore_from(&mut self, manifests: &[Manifest]) {
        self.backups = manifests.len() as u64;
        self.last_success = manifests.iter().map(|m| m.finished_at).max();
        self.oldest = manifests.iter().map(|m| m.finished_at).min();
        if let Some(newest) = manifests.iter().max_by_key(|m| m.finished_at) {
            self.last_duration_seconds = (newest.finished_at - newest.started_at)
                .to_std()
                .ok()
                .map(|d| d.as_secs_f64());
            self.last_stored_bytes = Some(newest.stored_bytes());
            self.last_source_bytes = Some(newest.raw_bytes());
        }
        self.restored = true;
    }
}

/// Copy-on-write map of job states: readers load a pointer.
#[derive(Default)]
pub struct JobBoard {
    state: ArcSwap<BTreeMap<JobName, JobState>>,
    writer: Mutex<()>,
    /// The last runs finished, for the status page.
    pub runs: super::runs::RecentRuns,
}

impl JobBoard {
    pub fn snapshot(&self) -> Arc<BTreeMap<JobName, JobState>> {
        self.state.load_full()
    }

    pub fn get(&self, job: &str) -> Option<JobState> {
        self.state.load().get(job).cloned()
    }

    pub fn update(&self, job: &str, change: impl FnOnce(&mut JobState)) {
        let _serialised = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = (**self.state.load()).clone();
        change(next.entry(JobName::from(job)).or_default());
        self.state.store(Arc::new(next));
    }

    /// Marks `job` running unless it already is (then the run it found):
    /// check and mark in one step, so two requests arriving together
    /// cannot both start a run.
    pub fn claim_run(&self, job: &str, running: Running) -> Result<(), Running> {
        let _serialised = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = (**self.state.load()).clone();
        let state = next.entry(JobName::from(job)).or_default();
        if let Some(other) = &state.running {
            return Err(other.clone());
        }
        state.running = Some(running);
        self.state.store(Arc::new(next));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_is_claimed_once_until_it_ends() {
        let board = JobBoard::default();
        let running = |trigger| Running {
            started_at: Utc::now(),
            trigger,
            source_bytes: Arc::default(),
        };
        assert!(board.claim_run("orders", running("api")).is_ok());
        let found = board.claim_run("orders", running("schedule")).unwrap_err();
        assert_eq!(found.trigger, "api", "the run that holds it is named");
        board.update("orders", |s| s.running = None);
        assert!(board.claim_run("orders", running("api")).is_ok());
    }
    use crate::core::manifest::tests::sample;

    #[test]
    fn success_failure_and_restore() {
        let board = JobBoard::default();
        let m = sample();
        board.update("orders", |s| s.record_failure("boom".into()));
        board.update("orders", |s| s.record_success(&m));
        let s = board.get("orders").unwrap();
        assert_eq!((s.runs_total, s.failures_total, s.backups), (2, 1, 1));
        assert_eq!(s.consecutive_failures, 0);
        assert_eq!(s.last_success, Some(m.finished_at));
        assert_eq!(s.last_error, None);
        assert_eq!(s.last_duration_seconds, Some(5.0));

        let mut older = sample();
        older.finished_at -= chrono::Duration::days(1);
        let mut restored = JobState::default();
        restored.restore_from(&[older.clone(), m.clone()]);
        assert_eq!(
            (restored.backups, restored.oldest, restored.last_success),
            (2, Some(older.finished_at), Some(m.finished_at))
        );
        assert!(restored.restored);
    }
}
