//! Why a CLI command failed: one typed error per way, each carrying its
//! facts; the exit status is chosen by matching the variant
//! ([`Classify`]), the text printed is the error and its sources.

use std::path::PathBuf;

use super::exit::{Classify, CommandError, Exit};
use super::notify::NotifyError;
use super::out::OutputError;
use super::status::StatusError;
use crate::config::UnknownJob;
use crate::jobs::restore::RestoreError;
use crate::journal::sign::KeyError;
use crate::journal::{JournalError, OpenError};
use crate::repo::RepoError;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    UnknownJob(#[from] UnknownJob),
    /// A lower layer's error, already redacted, with its exit status.
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error(transparent)]
    Notify(#[from] super::notify::NotifyError),
    #[error(transparent)]
    Repo(#[from] RepoError),
    /// `--to` is not a connection string (found before anything is contacted).
    #[error(transparent)]
    Restore(#[from] RestoreError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Status(#[from] StatusError),
    #[error(transparent)]
    Output(#[from] OutputError),
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Man(#[from] super::docs::ManError),
    #[error(transparent)]
    JournalOpen(#[from] OpenError),
    /// The job's context could not be built (its repository or sources);
    /// The job's context (repository, source, keys) could not be built.
    #[error("{source}")]
    JobSetup {
        job: String,
        source: crate::jobs::context::ContextError,
    },
    /// `vigil verify` found bad objects or WAL gaps (its report names them).
    #[error("verification failed: {bad} bad object(s), {gaps} WAL gap(s)")]
    VerifyFailed { bad: usize, gaps: usize },
    #[error("no jobs are configured")]
    NoJobs,
    /// A path `restore_command` names could not be made absolute.
    #[error("cannot resolve {}", path.display())]
    Path {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("prune failed: {}", failures.join("; "))]
    PruneFailed { failures: Vec<String> },
    /// `vigil drill` of a job without `[drill]`.
    #[error(transparent)]
    Drill(#[from] crate::jobs::drill::DrillError),
    /// A drill ran and failed (its printed result says how); `exit` is
    /// its error's class, `error` its redacted text.
    #[error("drill of {job} failed: {error}")]
    DrillFailed {
        job: String,
        exit: Exit,
        error: String,
    },
}

/// Why the journal could not be read or did not verify (all exit 1).
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("cannot lock {}", dir.display())]
    Lock {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot list {}", dir.display())]
    List {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read the journal in {}", dir.display())]
    Tail {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "no journal segments in {} (`journal.dir`); use --from-catalog to verify the catalog's copy",
        dir.display()
    )]
    NoSegments { dir: PathBuf },
    /// Its text is the copy error's own, as one line.
    #[error("cannot read the journal from the catalog: {0}")]
    FromCatalog(CopyError),
    #[error("the audit journal failed verification")]
    Failed,
}

/// Why the catalog's copy of the journal was not read.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error(transparent)]
    Catalog(#[from] CommandError),
    #[error("catalog at {addr}: {}", crate::catalog::describe(source))]
    Connect {
        addr: String,
        source: deadpool_postgres::PoolError,
    },
    /// The pin could not be read; the shipper's error says why.
    #[error("{source}")]
    Pin {
        instance: String,
        source: crate::journal::ship::ShipError,
    },
    #[error(
        "the catalog at {addr} pins no journal for instance `{instance}` (`daemon.instance`, else the host name) and there are no local journal files: nothing to verify"
    )]
    NothingToVerify { addr: String, instance: String },
    #[error("{}", crate::core::redact::error_chain(source))]
    Query { source: tokio_postgres::Error },
}

impl Classify for CliError {
    fn exit(&self) -> Exit {
        match self {
            CliError::UnknownJob(_) => Exit::Usage,
            CliError::Command(e) => e.exit(),
            CliError::Notify(e) => notify_exit(e),
            CliError::Repo(e) => e.exit(),
            CliError::Restore(e) => e.exit(),
            CliError::Key(e) => e.exit(),
            CliError::Status(e) => e.exit(),
            CliError::Output(e) => e.exit(),
            CliError::Drill(e) => e.exit(),
            CliError::DrillFailed { exit, .. } => *exit,
            CliError::Journal(_)
            | CliError::Audit(_)
            | CliError::Json(_)
            | CliError::Man(_)
            | CliError::JournalOpen(_)
            | CliError::JobSetup { .. }
            | CliError::NoJobs
            | CliError::VerifyFailed { .. }
            | CliError::Path { .. }
            | CliError::PruneFailed { .. } => Exit::Failed,
        }
    }
}

impl CliError {
    /// The stable `code` of the one error shape (`--json` failures), by
    /// variant: scripts match on it, never on the message.
    pub fn code(&self) -> &'static str {
        match self {
            CliError::UnknownJob(_) => "unknown_job",
            CliError::Notify(NotifyError::NoWebhooks | NotifyError::UnknownWebhook { .. }) => {
                "unknown_webhook"
            }
            CliError::Notify(NotifyError::NotDelivered { refused: 0, .. }) => "webhook_unreachable",
            CliError::Notify(NotifyError::NotDelivered { .. }) => "webhook_refused",
            CliError::Command(e) => exit_code_name(e.exit),
            CliError::Repo(RepoError::Unreachable { .. }) => "repository_unreachable",
            CliError::Repo(_) => "repository_failed",
            CliError::Restore(_) => "bad_target",
            CliError::Key(_) => "bad_key",
            CliError::Status(StatusError::Unreachable { .. } | StatusError::Timeout { .. }) => {
                "daemon_unreachable"
            }
            CliError::Status(StatusError::Protected { .. }) => "unauthenticated",
            CliError::Status(_) => "bad_answer",
            CliError::Output(_) => "output_failed",
            CliError::Journal(_) | CliError::JournalOpen(_) => "journal_unavailable",
            CliError::Audit(AuditError::Failed) => "audit_failed",
            CliError::Audit(_) => "journal_unreadable",
            CliError::Json(_) => "internal",
            CliError::JobSetup { .. } => "job_setup_failed",
            CliError::NoJobs => "no_jobs",
            CliError::VerifyFailed { .. } => "verify_failed",
            CliError::Path { .. } => "failed",
            CliError::PruneFailed { .. } => "prune_failed",
            CliError::Drill(crate::jobs::drill::DrillError::NotConfigured { .. }) => "usage",
            CliError::Drill(_) => "drill_failed",
            CliError::DrillFailed { .. } => "drill_failed",
            CliError::Man(_) => "output_failed",
        }
    }

    /// Whether the `--json` document already printed tells this failure
    /// (each failed job in prune's array, the problems in audit verify's
    /// report), so no second document follows it on stdout.
    pub fn told_in_output(&self) -> bool {
        matches!(
            self,
            CliError::PruneFailed { .. }
                | CliError::Audit(AuditError::Failed)
                | CliError::VerifyFailed { .. }
                | CliError::DrillFailed { .. }
        )
    }
}

/// `vigil notify test`: a refusal (1) outranks an unreachable receiver (3).
fn notify_exit(e: &NotifyError) -> Exit {
    match e {
        NotifyError::NoWebhooks | NotifyError::UnknownWebhook { .. } => Exit::Usage,
        NotifyError::NotDelivered { refused: 0, .. } => Exit::Unreachable,
        NotifyError::NotDelivered { .. } => Exit::Failed,
    }
}

/// A code for an error known only by its exit status.
fn exit_code_name(exit: Exit) -> &'static str {
    match exit {
        Exit::Unreachable => "unreachable",
        Exit::Usage => "usage",
        Exit::Unhealthy => "unhealthy",
        Exit::Ok | Exit::StdoutClosed | Exit::Failed => "failed",
    }
}

/// The error and each of its sources, `: `-separated: what a person sees.
pub fn full_text(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use std::io::{Error, ErrorKind};

    use super::*;
    use crate::journal::Opener;

    #[test]
    fn the_variant_decides_the_exit_status() {
        let unknown = UnknownJob {
            job: "x".into(),
            known: "none".into(),
        };
        assert_eq!(CliError::from(unknown).exit().code(), 64);
        let down = CommandError {
            exit: Exit::Unreachable,
            message: "catalog at 127.0.0.1:1 is unreachable".into(),
        };
        assert_eq!(CliError::from(down).exit().code(), 3);
        let closed = OutputError::from(Error::from(ErrorKind::BrokenPipe));
        assert_eq!(CliError::from(closed).exit(), Exit::StdoutClosed);
        let failures = vec!["a: boom".to_owned()];
        assert_eq!(CliError::PruneFailed { failures }.exit().code(), 1);
        assert_eq!(CliError::from(AuditError::Failed).exit().code(), 1);
    }

    #[test]
    fn the_printed_text_is_the_error_and_its_sources() {
        let open = OpenError::Open {
            dir: "/var/lib/vigil/journal".into(),
            opener: Opener::Cli,
            source: Error::from(ErrorKind::PermissionDenied),
        };
        assert_eq!(
            full_text(&CliError::from(open)),
            "cannot open the audit journal in /var/lib/vigil/journal (`journal.dir`); run the command as vigil's user: permission denied"
        );
        let failures = vec!["a: boom".to_owned(), "b: bang".to_owned()];
        assert_eq!(
            full_text(&CliError::PruneFailed { failures }),
            "prune failed: a: boom; b: bang"
        );
    }

    #[test]
    fn the_json_error_code_is_chosen_by_variant() {
        let unknown = UnknownJob {
            job: "x".into(),
            known: "none".into(),
        };
        assert_eq!(CliError::from(unknown).code(), "unknown_job");
        let down = CommandError {
            exit: Exit::Unreachable,
            message: "catalog at 127.0.0.1:1 is unreachable".into(),
        };
        assert_eq!(CliError::from(down).code(), "unreachable");
        let daemon = StatusError::Unreachable {
            addr: "127.0.0.1:9746".parse().unwrap(),
            source: Error::from(ErrorKind::ConnectionRefused),
        };
        assert_eq!(CliError::from(daemon).code(), "daemon_unreachable");
        // What the printed document already tells is not printed twice.
        let failures = vec!["a: boom".to_owned()];
        assert!(CliError::PruneFailed { failures }.told_in_output());
        assert!(CliError::from(AuditError::Failed).told_in_output());
        assert!(!CliError::NoJobs.told_in_output());
    }
}
