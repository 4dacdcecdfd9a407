//! The audit journal: hash-chained JSON lines in segments under
//! `<state_dir>/journal`. Callers hold a [`Journal`] (`handle`); one
//! writer thread (`writer`) owns the files. Shippers into the catalog and
//! Loki, and the verification behind `vigil audit verify`.

mod actor;
mod handle;
mod open;
pub mod recent;
pub mod segment;
pub mod ship;
pub mod sign;
pub mod signing;
pub mod tail;
pub mod verify;
mod writer;

#[cfg(test)]
mod tests;

pub use actor::cli_actor;
pub use handle::{Head, Journal, JournalError, JournalOptions, JournalStatus};
pub use open::{OpenError, Opener, open_journal};
pub use recent::RecentEvent;
pub use writer::AuditStats;
