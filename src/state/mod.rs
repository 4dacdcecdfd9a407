//! What the daemon knows in memory: the status snapshot, the job board and
//! the journal's counters, behind [`Shared`]. Health checks and jobs write
//! it; the admin port reads it without I/O. Below health and jobs, above
//! the storage layers (it holds their facts, never their handles).

pub mod board;
mod notify;
pub mod runs;
mod snapshot;

pub use board::{JobBoard, JobState, PruneState, Running, WalState};
pub use notify::{NotifyBoard, WebhookState};
pub use runs::{RecentRun, RecentRuns};
pub use snapshot::{Phase, PoolStats, ProcessStats, Shared, StatusSnapshot};
