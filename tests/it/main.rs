//! Integration tests against real PostgreSQL clusters and the real binary.
//! One binary, so it links once.

mod aborts;
mod admin_truths;
mod alerts;
mod audit;
mod backends;
mod backup;
mod catalog;
mod catalog_down;
mod cli;
mod cli_truths;
mod daemon;
mod disk_full;
mod drill;
// Needs the failpoints compiled in: `cargo test --features failpoints`.
#[cfg(feature = "failpoints")]
mod failpoints;
mod files;
mod fuzz_regressions;
mod harness;
mod health;
mod hostile;
mod hot_path;
mod index;
mod json_shapes;
mod lease;
mod leftovers;
mod logrotate;
mod manifests;
mod mirror;
mod notify;
mod page;
mod physical;
mod pitr;
mod prune;
mod quiet;
mod reliability;
mod s3;
mod scheduler;
mod secret_scan;
mod secrets;
mod server_kill;
mod signals;
mod tls;
mod truth;
mod verify;
mod verify_schedule;
mod wal;
