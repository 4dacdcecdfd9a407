//! The audit journal: hash-chained JSON lines in segments under
//! `<state_dir>/journal`, one writer thread, shippers into the catalog and
//! Loki, and the verification behind `vigil audit verify`.

mod actor;
mod check;
pub mod segment;
pub mod ship;
pub mod sign;
pub mod tail;
pub mod verify;
mod writer;

#[cfg(test)]
mod tests;

pub use actor::cli_actor;
pub use check::JournalWritableCheck;
pub use writer::{AuditStats, Head, Journal, JournalError, JournalOptions, JournalStatus};
