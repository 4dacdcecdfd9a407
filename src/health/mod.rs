//! Health: check results, the status snapshot the admin port serves, and
//! the background runner that keeps it fresh.

mod checks;
pub(crate) mod model;
mod runner;

pub use checks::{CatalogMigrationsCheck, CatalogResponseCheck, DiskUsageCheck};
pub use model::{Check, CheckSpec, CheckState, Observation, Status};
pub use runner::{HEARTBEAT_KEY, HealthEvent, HealthRunner, RunnerHandle, apply, backoff};
