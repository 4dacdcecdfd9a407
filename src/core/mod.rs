//! The pure core: the decisions and data shapes every floor above shares.
//! No I/O (no runtime, sockets, files, processes, clock reads or storage
//! clients) and nothing of ours outside `core/`, so each piece can be
//! tested with plain values and read without knowing the daemon. The
//! floors above (config, then repo/journal/catalog/files, pipeline, ...)
//! import from here, never the other way round.

pub mod auth;
pub mod backup_manifest;
pub mod health;
pub mod ids;
pub mod journal_record;
pub mod manifest;
pub mod output;
pub mod proofs;
pub mod reach;
pub mod recovery;
pub mod redact;
pub mod retention;
pub mod schedule;
pub mod units;
pub mod verification;
pub mod wal;
pub mod wal_chain;
