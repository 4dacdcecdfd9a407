//! Job runs: one step function per kind, shared by the scheduler, the CLI
//! and (later) the API.

pub mod backup;
pub mod board;
pub mod checks;
pub mod context;
pub mod encryption_check;
pub mod executions;
pub mod host;
pub mod lock;
pub mod mirror;
pub mod prune;
pub mod report;
pub mod restore;
pub mod scheduler;

pub use context::{JobContext, Trigger};
