//! File-tree backups: the tar stream written from the job's paths, and
//! its extraction on restore.

mod archive;
mod extract;

pub use archive::{ArchiveError, ArchiveOptions, ArchiveReport, archive, exclusions};
pub use extract::{ExtractReport, TargetError, check_target, extract};
