//! What a command's exit status says (DESIGN.md, "Interfaces people script
//! against"), chosen by matching typed errors, never their text.

use crate::catalog::CatalogError;
use crate::config::{ConfigError, UnknownJob};
use crate::core::recovery::SelectionError;
use crate::daemon::DaemonError;
use crate::jobs::backup::BackupError;
use crate::jobs::drill::DrillError;
use crate::jobs::mirror::MirrorError;
use crate::jobs::prune::PruneError;
use crate::jobs::restore::RestoreError;
use crate::jobs::verify::VerifyError;
use crate::journal::OpenError;
use crate::journal::sign::KeyError;
use crate::pipeline::download::DownloadError;
use crate::pipeline::upload::PipelineError;
use crate::repo::RepoError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// 0: done.
    Ok,
    /// 1: the operation failed.
    Failed,
    /// 2: the target is unhealthy (`vigil status` when the daemon says `fail`).
    Unhealthy,
    /// 3: a daemon, server or repository could not be reached.
    Unreachable,
    /// 64 (EX_USAGE): bad usage or config; nothing was done.
    Usage,
    /// 0, printing nothing: whoever read stdout went away (`| head -1`).
    StdoutClosed,
}

impl Exit {
    pub fn code(self) -> u8 {
        match self {
            Exit::Ok | Exit::StdoutClosed => 0,
            Exit::Failed => 1,
            Exit::Unhealthy => 2,
            Exit::Unreachable => 3,
            Exit::Usage => 64,
        }
    }
}

/// An error that knows which exit status it means.
pub trait Classify {
    fn exit(&self) -> Exit;
}

/// A command's error after redaction (its text may have held a secret), with
/// the exit status of the typed error it came from.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct CommandError {
    pub exit: Exit,
    pub message: String,
}

impl CommandError {
    pub fn redacted<E>(error: &E, redact: impl FnOnce(&str) -> String) -> Self
    where
        E: Classify + std::fmt::Display,
    {
        CommandError {
            exit: error.exit(),
            message: redact(&error.to_string()),
        }
    }
}

impl Classify for KeyError {
    fn exit(&self) -> Exit {
        match self {
            KeyError::Read { .. }
            | KeyError::Private { .. }
            | KeyError::Public { .. }
            | KeyError::Exists { .. } => Exit::Usage,
            KeyError::Write { .. } | KeyError::Encode(_) => Exit::Failed,
        }
    }
}

impl Classify for DaemonError {
    fn exit(&self) -> Exit {
        match self {
            DaemonError::Journal(OpenError::SigningKey(key)) => key.exit(),
            DaemonError::Catalog { error, .. } => error.exit(),
            DaemonError::Bind(_)
            | DaemonError::StateDir { .. }
            | DaemonError::Journal(OpenError::Open { .. } | OpenError::Read { .. })
            | DaemonError::Jobs { .. } => Exit::Failed,
        }
    }
}

impl Classify for CommandError {
    fn exit(&self) -> Exit {
        self.exit
    }
}

impl Classify for ConfigError {
    fn exit(&self) -> Exit {
        Exit::Usage
    }
}

impl Classify for UnknownJob {
    fn exit(&self) -> Exit {
        Exit::Usage
    }
}

impl Classify for CatalogError {
    fn exit(&self) -> Exit {
        match self {
            CatalogError::Unreachable { .. } | CatalogError::Down { .. } => Exit::Unreachable,
            // Reached, and it said no: retrying or waiting cannot help.
            CatalogError::Refused { .. }
            | CatalogError::NotMigrated { .. }
            | CatalogError::Pool(_)
            | CatalogError::Query(_)
            | CatalogError::Migration(_) => Exit::Failed,
        }
    }
}

impl Classify for RepoError {
    fn exit(&self) -> Exit {
        match self {
            RepoError::Unreachable { .. } => Exit::Unreachable,
            _ => Exit::Failed,
        }
    }
}

impl Classify for PipelineError {
    fn exit(&self) -> Exit {
        match self {
            PipelineError::Storage(e) => e.exit(),
            _ => Exit::Failed,
        }
    }
}

impl Classify for BackupError {
    fn exit(&self) -> Exit {
        match self {
            BackupError::Repo(e) => e.exit(),
            BackupError::Object { error, .. } => error.exit(),
            BackupError::SourceUnreachable { .. } => Exit::Unreachable,
            _ => Exit::Failed,
        }
    }
}

impl Classify for RestoreError {
    fn exit(&self) -> Exit {
        match self {
            RestoreError::Repo(e) | RestoreError::Stream(DownloadError::Repo(e)) => e.exit(),
            RestoreError::Choice { .. }
            | RestoreError::BadTarget { .. }
            | RestoreError::NoDatabase
            | RestoreError::NotPhysical { .. } => Exit::Usage,
            RestoreError::Target(SelectionError::NoBackups) => Exit::Failed,
            RestoreError::Target(_) => Exit::Usage,
            RestoreError::TargetUnreachable { .. } => Exit::Unreachable,
            _ => Exit::Failed,
        }
    }
}

impl Classify for VerifyError {
    fn exit(&self) -> Exit {
        match self {
            VerifyError::Repo(e) | VerifyError::Record { source: e, .. } => e.exit(),
            VerifyError::Key(_) => Exit::Usage,
            VerifyError::NoBackups { .. } | VerifyError::NoPgRestore | VerifyError::Cancelled => {
                Exit::Failed
            }
        }
    }
}

impl Classify for DrillError {
    fn exit(&self) -> Exit {
        match self {
            DrillError::NotConfigured { .. } => Exit::Usage,
            DrillError::Repo(e) => e.exit(),
            DrillError::Restore(e) => e.exit(),
            DrillError::NoBackups { .. }
            | DrillError::Busy { .. }
            | DrillError::Lock(_)
            | DrillError::TargetNotEmpty { .. }
            | DrillError::Check { .. }
            | DrillError::Drop { .. }
            | DrillError::Physical(_)
            | DrillError::Cancelled => Exit::Failed,
        }
    }
}

impl Classify for PruneError {
    fn exit(&self) -> Exit {
        match self {
            PruneError::Repo(e) => e.exit(),
            _ => Exit::Failed,
        }
    }
}

impl Classify for MirrorError {
    fn exit(&self) -> Exit {
        match self {
            MirrorError::Repo(e) => e.exit(),
            _ => Exit::Failed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_daemons_start_up_error_is_classified_by_its_variant() {
        let unknown = UnknownJob {
            job: "x".into(),
            known: "none".into(),
        };
        assert_eq!(unknown.exit(), Exit::Usage);
        let down = CatalogError::Unreachable {
            addr: "127.0.0.1:5432".into(),
            waited: "1s".into(),
            last_error: "refused".into(),
        };
        let daemon = DaemonError::Catalog {
            error: down,
            redacted: "refused".into(),
        };
        assert_eq!(daemon.exit(), Exit::Unreachable);
        let journal = DaemonError::from(OpenError::Open {
            dir: "/var/lib/vigil/journal".into(),
            opener: crate::journal::Opener::Daemon,
            source: std::io::Error::from_raw_os_error(13),
        });
        assert_eq!(journal.exit(), Exit::Failed);
    }

    #[test]
    fn redaction_keeps_the_class() {
        let e = RepoError::Unreachable {
            repo: "r".into(),
            action: "cannot list",
            path: "p/".into(),
            detail: "connect refused for s3cret".into(),
        };
        let redacted = CommandError::redacted(&e, |t| t.replace("s3cret", "***"));
        assert_eq!(redacted.exit, Exit::Unreachable);
        assert!(!redacted.to_string().contains("s3cret"));
        let nested = BackupError::Object {
            database: "d".into(),
            error: PipelineError::Storage(e),
        };
        assert_eq!(nested.exit().code(), 3);
        assert_eq!(RestoreError::NoDatabase.exit(), Exit::Usage);
    }

    #[test]
    fn a_drill_exits_by_why_it_failed() {
        let job = || "orders".to_owned();
        assert_eq!(DrillError::NotConfigured { job: job() }.exit(), Exit::Usage);
        let check = DrillError::Check {
            query: "SELECT false".into(),
            found: "returned false".into(),
        };
        assert_eq!(check.exit(), Exit::Failed);
        let unreachable = DrillError::Restore(RestoreError::TargetUnreachable {
            host: "127.0.0.1:1".into(),
            detail: "refused".into(),
        });
        assert_eq!(unreachable.exit(), Exit::Unreachable);
        assert_eq!(DrillError::Busy { job: job() }.exit(), Exit::Failed);
    }
}
