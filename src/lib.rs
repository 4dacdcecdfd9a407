//! vigil: keeps PostgreSQL databases and file trees recoverable, and says so.
//!
//! The modules are floors, listed top-down; each uses only those below it
//! (README, "Architecture"; `tests/layers.py` checks it).

// Commands, then the daemon they start.
pub mod cli;
pub mod daemon;
// The admin port, health, the job runs and what the daemon knows in memory.
pub mod admin;
pub mod health;
pub mod jobs;
// Webhooks, pings and the delivery queue (between the job runs and state).
pub mod notify;
pub mod state;
// Streams, storage, the audit journal, the catalog, connections.
pub mod catalog;
pub mod files;
pub mod journal;
pub mod pgconn;
pub mod pipeline;
pub mod repo;
// Leaves several floors use.
pub mod failpoint;
pub mod fsinfo;
pub mod logging;
pub mod sd_notify;
pub mod tasks;
// The config, and the pure core beneath everything.
pub mod config;
pub mod core;
