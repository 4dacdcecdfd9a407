//! The audit journal: hash-chained JSON lines in segments under
//! `<state_dir>/journal`, one writer thread, shippers into the catalog and
//! Loki, and the verification behind `vigil audit verify`.

mod check;
pub mod record;
pub mod segment;
pub mod ship;
pub mod sign;
pub mod signing;
pub mod tail;
pub mod verify;
mod writer;

#[cfg(test)]
mod tests;

pub use check::JournalWritableCheck;
pub use record::{
    Actor, ChainCheck, Entry, GENESIS, Record, VerifyError, encode_line, verify_chain,
};
pub use writer::{AuditStats, Head, Journal, JournalError, JournalOptions, JournalStatus};
