//! The last runs this daemon finished, newest first, for the status page:
//! the executions table lives in the catalog, which the page never reads
//! (it may be the database that died).

use std::collections::VecDeque;
use std::sync::Mutex;

use chrono::{DateTime, Utc};

/// Runs kept: a screenful on a phone.
pub const KEPT_RUNS: usize = 20;

/// One finished run, as the job reporters saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct RecentRun {
    pub job: String,
    /// `backup`, `prune`, `mirror`, `restore`, ...
    pub kind: &'static str,
    pub trigger: &'static str,
    /// `succeeded`, `failed`, `skipped`, `aborted`.
    pub status: &'static str,
    /// None for a run refused before it started (its lock).
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: DateTime<Utc>,
    pub backup_id: Option<String>,
    pub stored_bytes: Option<u64>,
    /// Already redacted.
    pub error: Option<String>,
}

/// A bounded ring of [`RecentRun`]s; the lock is held for a push or a copy,
/// never across an await.
#[derive(Debug, Default)]
pub struct RecentRuns {
    runs: Mutex<VecDeque<RecentRun>>,
}

impl RecentRuns {
    pub fn push(&self, run: RecentRun) {
        let mut runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        runs.push_front(run);
        runs.truncate(KEPT_RUNS);
    }

    /// Newest first.
    pub fn list(&self) -> Vec<RecentRun> {
        let runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        runs.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_runs_first() {
        let ring = RecentRuns::default();
        for n in 0..KEPT_RUNS + 5 {
            ring.push(RecentRun {
                job: format!("job{n}"),
                kind: "backup",
                trigger: "schedule",
                status: "succeeded",
                started_at: None,
                finished_at: Utc::now(),
                backup_id: None,
                stored_bytes: None,
                error: None,
            });
        }
        let runs = ring.list();
        assert_eq!(runs.len(), KEPT_RUNS);
        assert_eq!(runs[0].job, format!("job{}", KEPT_RUNS + 4));
        assert_eq!(runs[KEPT_RUNS - 1].job, "job5");
    }
}
