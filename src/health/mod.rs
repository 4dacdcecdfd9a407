//! Health: every check (catalog, disks, jobs, repositories, encryption,
//! journal), the model of their results, and the background runner that
//! runs them and publishes the status snapshot into `state`. Health reads
//! jobs and writes state; jobs never import health.

mod catalog;
mod disk;
mod encryption;
mod jobs;
mod journal;
pub(crate) mod model;
mod process_stats;
mod registry;
mod repo;
mod runner;

pub use model::{Check, CheckSpec, CheckState, Observation, Status};
pub use registry::{daemon_checks, reload_spec};
pub use runner::{HEARTBEAT_KEY, HealthEvent, HealthRunner, RunnerHandle, apply, backoff};
