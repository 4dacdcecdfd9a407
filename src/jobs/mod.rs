//! Job runs: one step function per kind (`backup/` with one file per
//! backup kind, `restore/`, `prune`, `mirror`), shared by the scheduler,
//! the CLI and the API. Each run says how it went once, through
//! [`report`] (executions table, journal, job board); the streams live
//! below in `pipeline`, the storage in `repo`. Nothing here imports the
//! daemon.

pub mod backup;
pub mod context;
pub mod drill;
pub mod executions;
pub mod host;
pub mod lock;
pub mod mirror;
pub mod pitr;
pub mod prune;
pub mod prune_report;
pub mod prune_wal;
pub mod report;
pub mod restore;
pub mod scheduler;
pub mod tell;
pub mod verify;
pub mod verify_record;
pub mod verify_schedule;
pub mod verify_select;
pub mod verify_wal;
pub mod wal;

pub use context::{JobContext, Trigger};
