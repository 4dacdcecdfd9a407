//! The audit journal: hash-chained JSON lines. This module holds the pure
//! core (record encoding, the chain, verification); the writer task,
//! segments, shippers and `vigil audit` build on it.

pub mod record;

pub use record::{Entry, GENESIS, Record, VerifyError, encode_line, verify_chain};
