//! What a command's exit status says (DESIGN.md, "Interfaces people script
//! against"), chosen by matching typed errors, never their text.

use crate::catalog::CatalogError;
use crate::config::{ConfigError, UnknownJob};
use crate::jobs::backup::BackupError;
use crate::jobs::mirror::MirrorError;
use crate::jobs::prune::PruneError;
use crate::jobs::restore::RestoreError;
use crate::journal::sign::KeyError;
use crate::out::OutputError;
use crate::pipeline::download::DownloadError;
use crate::pipeline::upload::PipelineError;
use crate::repo::RepoError;
use crate::status_cmd::StatusError;

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

/// The exit status for a command's error: the first error in the chain that
/// has one decides; anything else is a failed operation.
pub fn of(error: &anyhow::Error) -> Exit {
    error.chain().find_map(classify).unwrap_or(Exit::Failed)
}

fn classify(e: &(dyn std::error::Error + 'static)) -> Option<Exit> {
    macro_rules! try_types {
        ($($t:ty),*) => {
            $(if let Some(e) = e.downcast_ref::<$t>() {
                return Some(e.exit());
            })*
        };
    }
    try_types!(
        CommandError,
        ConfigError,
        UnknownJob,
        CatalogError,
        RepoError,
        BackupError,
        PipelineError,
        RestoreError,
        PruneError,
        MirrorError,
        StatusError,
        OutputError,
        KeyError
    );
    None
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
            | RestoreError::NoDatabase => Exit::Usage,
            RestoreError::TargetUnreachable { .. } => Exit::Unreachable,
            _ => Exit::Failed,
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

impl Classify for StatusError {
    fn exit(&self) -> Exit {
        match self {
            StatusError::Unreachable { .. } | StatusError::Timeout { .. } => Exit::Unreachable,
            StatusError::Protected { .. } => Exit::Usage,
            StatusError::Output(e) => e.exit(),
            StatusError::Http { .. } | StatusError::NotHealth { .. } => Exit::Failed,
        }
    }
}

impl Classify for OutputError {
    fn exit(&self) -> Exit {
        match self {
            OutputError::Closed => Exit::StdoutClosed,
            OutputError::Write(_) => Exit::Failed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_typed_error_in_the_chain_decides() {
        let unknown = UnknownJob {
            job: "x".into(),
            known: "none".into(),
        };
        assert_eq!(of(&anyhow::Error::new(unknown)), Exit::Usage);
        let down = CatalogError::Unreachable {
            addr: "127.0.0.1:5432".into(),
            waited: "1s".into(),
            last_error: "refused".into(),
        };
        let wrapped = anyhow::Error::new(down).context("vigil backup");
        assert_eq!(of(&wrapped), Exit::Unreachable);
        assert_eq!(of(&anyhow::anyhow!("something else")), Exit::Failed);
        let closed = anyhow::Error::new(OutputError::from(std::io::Error::from(
            std::io::ErrorKind::BrokenPipe,
        )));
        assert_eq!(of(&closed), Exit::StdoutClosed);
        assert_eq!(of(&closed).code(), 0);
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
}
