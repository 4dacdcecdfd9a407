//! The audit journal: hash-chained JSON lines in segments under
//! `<state_dir>/journal`. Callers hold a [`Journal`] (`handle`); one
//! writer thread (`writer`) owns the files. Shippers into the catalog and
//! Loki, and the verification behind `vigil audit verify`.

mod handle;
mod open;
pub mod record;
pub mod segment;
pub mod ship;
pub mod sign;
pub mod tail;
pub mod verify;
mod writer;

#[cfg(test)]
mod tests;

pub use handle::{Head, Journal, JournalError, JournalOptions, JournalStatus};
pub use open::{OpenError, Opener, open_journal};
pub use record::{
    Actor, ChainCheck, Entry, GENESIS, Record, VerifyError, encode_line, verify_chain,
};
pub use writer::AuditStats;
