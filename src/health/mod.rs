//! Health: every check (catalog, disks, jobs, repositories, encryption,
//! journal) and the background runner that runs them and publishes the
//! status snapshot into `state`; the model of their results is
//! `core::health`. Health reads jobs and writes state; jobs never import
//! health.

mod catalog;
mod check;
mod disk;
mod drill;
mod encryption;
mod jobs;
mod journal;
mod notify;
mod process_stats;
mod registry;
mod repo;
mod runner;
mod verify;
mod wal;

pub use check::Check;
pub use registry::{daemon_checks, reload_spec};
pub use runner::{HEARTBEAT_KEY, HealthEvent, HealthRunner, RunnerHandle, apply, backoff};
