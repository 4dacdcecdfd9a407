//! The WAL archive of `postgres-physical` jobs: `vigil wal-push` (run by
//! PostgreSQL's `archive_command`) and `vigil wal-fetch` (its
//! `restore_command`). One-shot and catalog-free: a push reads the config,
//! encodes the file and commits one object; nothing else starts.

mod fetch;
mod push;

use std::path::PathBuf;
use std::time::Duration;

use thiserror::Error;

use crate::config::{Config, EncryptionConfig, JobKind, UnknownJob};
use crate::core::journal_record::Entry;
use crate::core::wal::WalNameError;
use crate::pipeline::wal::WalDecodeError;
use crate::repo::wal::HeaderError;
use crate::repo::{RepoError, Repository};

pub use fetch::{Fetched, fetch};
pub use push::{Pushed, push};

/// How long a failing command waits for its journal record to be written:
/// PostgreSQL waits for the command, and the journal is best effort here.
const JOURNAL_WAIT: Duration = Duration::from_secs(2);

#[derive(Debug, Error)]
pub enum WalError {
    #[error(transparent)]
    UnknownJob(#[from] UnknownJob),
    #[error(
        "job `{job}` is a `{kind}` job; wal-push and wal-fetch archive WAL for `postgres-physical` jobs only"
    )]
    NotPhysical { job: String, kind: &'static str },
    #[error(transparent)]
    Name(#[from] WalNameError),
    #[error("cannot read {}: {source}", path.display())]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{}: {bytes} bytes is not a WAL segment size (a power of two from 1 MiB to 1 GiB): is it a whole segment?",
        path.display()
    )]
    SegmentSize { path: PathBuf, bytes: u64 },
    #[error("cannot compress or encrypt {name}: {source}")]
    Encode {
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error(
        "{name} is already archived with different content at {path}: archived sha256 {archived} ({archived_bytes} bytes), this file sha256 {local} ({local_bytes} bytes); nothing was overwritten (two clusters archiving into one job? check `archive_command` and the job's repository)"
    )]
    Conflict {
        name: String,
        path: String,
        archived: String,
        archived_bytes: u64,
        local: String,
        local_bytes: u64,
    },
    #[error(
        "{path} already exists and is not a vigil WAL object; nothing was overwritten (remove it if it is garbage)"
    )]
    Foreign {
        path: String,
        #[source]
        source: HeaderError,
    },
    #[error("{path}: the archived object is damaged or unreadable; nothing was written")]
    Damaged {
        path: String,
        #[source]
        source: WalDecodeError,
    },
    #[error(transparent)]
    Key(#[from] crate::jobs::context::KeyError),
    #[error("cannot write {}: {source}", path.display())]
    WriteDest {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Transient storage errors (or a silent service) outlasted the retries.
    #[error(
        "cannot fetch {name} from {repo}: the storage did not answer successfully within {seconds}s{}",
        last.as_ref().map_or_else(String::new, |e| format!(": {e}"))
    )]
    GaveUp {
        name: String,
        repo: String,
        seconds: u64,
        last: Option<Box<RepoError>>,
    },
    #[error("the {step} step stopped: {detail}")]
    Task { step: &'static str, detail: String },
}

/// One physical job's WAL archive: its repository and keys.
pub struct Archive {
    pub job: String,
    pub repo: Repository,
    recipients: Vec<age::x25519::Recipient>,
    identity_file: Option<PathBuf>,
    level: i32,
}

impl Archive {
    /// The archive of `job`, which must be a `postgres-physical` job.
    pub fn open(config: &Config, job: &str) -> Result<Archive, WalError> {
        let spec = config.job(job)?;
        if spec.kind != JobKind::PostgresPhysical {
            return Err(WalError::NotPhysical {
                job: job.to_owned(),
                kind: spec.kind.as_str(),
            });
        }
        let repo_config = &config.repositories[&spec.repository];
        let encryption = repo_config.encryption.as_ref();
        let recipients = encryption
            .map(EncryptionConfig::age_recipients)
            .unwrap_or_default();
        Ok(Archive {
            job: job.to_owned(),
            repo: Repository::open(&spec.repository, repo_config)?,
            recipients,
            identity_file: encryption.and_then(|e| e.identity_file.clone()),
            level: spec.level(),
        })
    }

    fn encrypted(&self) -> bool {
        !self.recipients.is_empty()
    }

    /// The identities that read this repository (only fetch needs them).
    fn identities(&self) -> Result<Vec<age::x25519::Identity>, WalError> {
        let path = self.identity_file.as_ref().ok_or_else(|| {
            crate::jobs::context::KeyError::NoIdentityFile {
                repo: self.repo.name.clone(),
            }
        })?;
        crate::config::identity::read_identities(path)
            .map_err(|e| WalError::Key(crate::jobs::context::KeyError::Identity(e)))
    }

    /// A journal entry about this archive (`data` gets the job's name).
    fn event(&self, event: &str, mut data: serde_json::Value) -> Entry {
        if let Some(map) = data.as_object_mut() {
            map.insert("job".into(), self.job.clone().into());
        }
        Entry::at(chrono::Utc::now(), event, crate::journal::cli_actor(), data)
    }
}

/// Journals `entry` if the journal opens and writes within
/// [`JOURNAL_WAIT`]; otherwise says on stderr why it was not. PostgreSQL's
/// user usually cannot write vigil's journal: the `<job>:wal` check and the
/// server log still show the failure.
pub fn journal_best_effort(config: &Config, entry: Entry) {
    let config = config.clone();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    // A plain thread, not the runtime's blocking pool: the runtime waits
    // for those at exit, and this must not outlive the wait.
    std::thread::spawn(move || {
        let written =
            crate::journal::open_journal(&config, crate::journal::Opener::Cli, Default::default())
                .map_err(|e| crate::core::redact::error_chain(&e))
                .and_then(|journal| {
                    journal.record(entry);
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(|e| e.to_string())?;
                    runtime.block_on(journal.close());
                    Ok(())
                });
        let _ = done_tx.send(written);
    });
    match done_rx.recv_timeout(JOURNAL_WAIT) {
        Ok(Ok(())) => {}
        Ok(Err(why)) => eprintln!("vigil: not journalled: {why}"),
        Err(_) => eprintln!(
            "vigil: not journalled: the audit journal did not answer within {}s",
            JOURNAL_WAIT.as_secs()
        ),
    }
}
