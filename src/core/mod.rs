//! The pure core: the decisions and data shapes every floor above shares.
//! No I/O (no tokio, hyper, opendal, postgres, std::fs, std::process,
//! std::net) and nothing of ours outside `core/`, so each piece can be
//! tested with plain values and read without knowing the daemon.

pub mod health;
pub mod journal_record;
pub mod manifest;
pub mod redact;
pub mod retention;
pub mod schedule;
