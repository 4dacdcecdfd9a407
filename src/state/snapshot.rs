//! The immutable status snapshot and the shared state every admin handler
//! reads without I/O or locks held across awaits.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU8, AtomicU64, Ordering};

use arc_swap::ArcSwap;
use chrono::{DateTime, Utc};

use crate::core::health::{CheckState, Status, aggregate};

/// Where the daemon is in its life; `/health/ready` is 200 only in `Ready`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    Starting = 0,
    Ready = 1,
    ShuttingDown = 2,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::Ready => "ready",
            Phase::ShuttingDown => "shutting-down",
        }
    }
}

/// Process facts sampled by the runner (the handlers never read /proc).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProcessStats {
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
    pub virtual_bytes: u64,
    pub open_fds: u64,
    pub max_fds: u64,
    pub threads: u64,
}

/// The catalog pool's gauges at the last heartbeat.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PoolStats {
    pub max_size: usize,
    pub size: usize,
    pub available: usize,
    pub waiting: usize,
}

/// Everything the health handlers serve, replaced wholesale on change.
#[derive(Clone, Debug, Default)]
pub struct StatusSnapshot {
    /// Sorted by key.
    pub checks: Vec<CheckState>,
    pub published_at: Option<DateTime<Utc>>,
    /// Every registered periodic check has reported at least once.
    pub first_round_done: bool,
    pub process: ProcessStats,
    pub pool: Option<PoolStats>,
}

impl StatusSnapshot {
    pub fn check(&self, key: &str) -> Option<&CheckState> {
        self.checks.iter().find(|c| c.spec.key == key)
    }

    pub fn overall(&self, now: DateTime<Utc>) -> Status {
        aggregate(&self.checks, now)
    }
}

/// State shared between the daemon's parts and the admin handlers.
pub struct Shared {
    snapshot: ArcSwap<StatusSnapshot>,
    phase: AtomicU8,
    pub started_at: DateTime<Utc>,
    /// `serviceId` in `/health/detailed`.
    pub service_id: String,
    /// Unix seconds of the last successful config (re)load.
    last_reload_ok: AtomicI64,
    reload_failures: AtomicU64,
    /// Lines the non-blocking file writer dropped.
    log_dropped: Option<tracing_appender::non_blocking::ErrorCounter>,
    /// Step reached during start-up, for `/health/ready?verbose`.
    startup_step: AtomicU8,
    /// Every job's state (runs, freshness, progress).
    pub jobs: super::board::JobBoard,
    /// The audit journal's counters: the journal defines and updates them
    /// (it is handed this `Arc` at open), state only holds them, so the
    /// journal never imports state.
    pub audit: Arc<crate::journal::AuditStats>,
    /// Every webhook's queue and circuit.
    pub notify: super::NotifyBoard,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("service_id", &self.service_id)
            .field("phase", &self.phase())
            .finish_non_exhaustive()
    }
}

/// Start-up steps in order; ready needs all of them.
pub const STARTUP_STEPS: [&str; 6] = [
    "config",
    "catalog",
    "migrations",
    "state",
    "schedules",
    "first-checks",
];

impl Shared {
    pub fn new(
        service_id: String,
        log_dropped: Option<tracing_appender::non_blocking::ErrorCounter>,
    ) -> Arc<Self> {
        let now = Utc::now();
        Arc::new(Shared {
            snapshot: ArcSwap::from_pointee(StatusSnapshot::default()),
            phase: AtomicU8::new(Phase::Starting as u8),
            started_at: now,
            service_id,
            last_reload_ok: AtomicI64::new(now.timestamp()),
            reload_failures: AtomicU64::new(0),
            log_dropped,
            startup_step: AtomicU8::new(0),
            jobs: Default::default(),
            audit: Default::default(),
            notify: Default::default(),
        })
    }

    pub fn snapshot(&self) -> arc_swap::Guard<Arc<StatusSnapshot>> {
        self.snapshot.load()
    }

    pub fn publish(&self, snapshot: StatusSnapshot) {
        self.snapshot.store(Arc::new(snapshot));
    }

    pub fn phase(&self) -> Phase {
        match self.phase.load(Ordering::Acquire) {
            0 => Phase::Starting,
            1 => Phase::Ready,
            _ => Phase::ShuttingDown,
        }
    }

    pub fn set_phase(&self, phase: Phase) {
        self.phase.store(phase as u8, Ordering::Release);
    }

    /// Records that start-up finished `step` (an entry of [`STARTUP_STEPS`]).
    pub fn startup_done(&self, step: &str) {
        if let Some(i) = STARTUP_STEPS.iter().position(|s| *s == step) {
            self.startup_step.fetch_max(i as u8 + 1, Ordering::AcqRel);
        }
    }

    /// Start-up steps with whether each is done.
    pub fn startup_steps(&self) -> impl Iterator<Item = (&'static str, bool)> {
        let reached = self.startup_step.load(Ordering::Acquire) as usize;
        STARTUP_STEPS
            .iter()
            .enumerate()
            .map(move |(i, s)| (*s, i < reached))
    }

    pub fn record_reload(&self, ok: bool) {
        if ok {
            self.last_reload_ok
                .store(Utc::now().timestamp(), Ordering::Release);
        } else {
            self.reload_failures.fetch_add(1, Ordering::AcqRel);
        }
    }

    pub fn last_reload_ok(&self) -> i64 {
        self.last_reload_ok.load(Ordering::Acquire)
    }

    pub fn reload_failures(&self) -> u64 {
        self.reload_failures.load(Ordering::Acquire)
    }

    pub fn log_dropped_lines(&self) -> u64 {
        self.log_dropped
            .as_ref()
            .map_or(0, |c| c.dropped_lines() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn startup_steps_latch_in_order() {
        let shared = Shared::new("t".into(), None);
        shared.startup_done("catalog");
        let steps: Vec<_> = shared.startup_steps().collect();
        assert_eq!(
            steps,
            [
                ("config", true),
                ("catalog", true),
                ("migrations", false),
                ("state", false),
                ("schedules", false),
                ("first-checks", false)
            ]
        );
    }
}
