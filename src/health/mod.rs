//! Health: check results, the status snapshot the admin port serves, and
//! the background runner that keeps it fresh.

mod check;
mod checks;
mod runner;
mod snapshot;

pub use check::Check;
pub use checks::{CatalogMigrationsCheck, CatalogResponseCheck, DiskUsageCheck};
pub use runner::{HEARTBEAT_KEY, HealthEvent, HealthRunner, RunnerHandle, apply, backoff};
pub use snapshot::{Phase, PoolStats, ProcessStats, Shared, StatusSnapshot};
