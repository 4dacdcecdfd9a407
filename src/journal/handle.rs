//! The journal handle callers hold: cheap to clone, it queues events for
//! the writer thread ([`super::writer`]) and answers `commit`, `flush` and
//! status without touching the disk itself.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::sync::{oneshot, watch};

use super::writer::{self, AuditStats, Command, Pending};
use crate::core::journal_record::{Actor, Entry};

/// The last record written: what anchors point at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    pub seq: u64,
    pub hash: String,
}

#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum JournalError {
    #[error(
        "the audit journal cannot be written ({0}); destructive operations are refused until it can (see the `journal:writable` check)"
    )]
    Unwritable(String),
    #[error("the audit journal is closed")]
    Closed,
}

#[derive(Debug, Clone)]
pub struct JournalOptions {
    pub dir: PathBuf,
    pub sync_interval: Duration,
    pub segment_max_bytes: u64,
    pub segment_max_age: Duration,
    pub queue_capacity: usize,
    /// The daemon's hourly anchor; CLI commands write none.
    pub checkpoint_interval: Option<Duration>,
    /// Who the journal's own events (segments, gaps, checkpoints) are by.
    pub actor: Actor,
    /// `journal.signing_key_file`: signs every checkpoint (the daemon's).
    pub signer: Option<Arc<ed25519_dalek::SigningKey>>,
}

impl JournalOptions {
    pub fn from_config(config: &crate::config::Config, daemon: bool) -> JournalOptions {
        let j = &config.journal;
        JournalOptions {
            dir: config.journal_dir(),
            sync_interval: j.sync_interval,
            segment_max_bytes: j.segment_max_mib * 1024 * 1024,
            segment_max_age: j.segment_max_age,
            queue_capacity: j.queue_capacity,
            checkpoint_interval: daemon.then_some(j.checkpoint_interval),
            actor: if daemon {
                Actor::daemon()
            } else {
                crate::journal::cli_actor()
            },
            signer: None,
        }
    }
}

/// What the `journal:writable` check shows and `commit` refuses on (the
/// head is [`Journal::head`]).
#[derive(Debug, Clone, Default, Serialize)]
pub struct JournalStatus {
    pub writable: bool,
    pub last_error: Option<String>,
}

/// A handle on the journal; cheap to clone.
#[derive(Clone)]
pub struct Journal {
    inner: Arc<Inner>,
}

struct Inner {
    id: String,
    dir: PathBuf,
    tx: Mutex<Option<SyncSender<Command>>>,
    status: Arc<Mutex<JournalStatus>>,
    stats: Arc<AuditStats>,
    heads: watch::Receiver<Option<Head>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Journal {
    /// Opens (or starts) the journal in `options.dir`, recovering a torn
    /// tail, and starts the writer thread.
    pub fn open(options: JournalOptions, stats: Arc<AuditStats>) -> io::Result<Journal> {
        let (tx, rx) = std::sync::mpsc::sync_channel(options.queue_capacity);
        let (heads_tx, heads) = watch::channel(None);
        let status = Arc::new(Mutex::new(JournalStatus::default()));
        let dir = options.dir.clone();
        let started = writer::start(
            options,
            rx,
            Arc::clone(&status),
            Arc::clone(&stats),
            heads_tx,
        )?;
        Ok(Journal {
            inner: Arc::new(Inner {
                id: started.id,
                dir,
                tx: Mutex::new(Some(tx)),
                status,
                stats,
                heads,
                thread: Mutex::new(Some(started.thread)),
            }),
        })
    }

    /// The journal's identity (uuid).
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    pub fn status(&self) -> JournalStatus {
        self.inner
            .status
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }

    pub fn stats(&self) -> &Arc<AuditStats> {
        &self.inner.stats
    }

    pub fn head(&self) -> Option<Head> {
        self.inner.heads.borrow().clone()
    }

    /// Wakes on every new head (the shippers' cue).
    pub fn heads(&self) -> watch::Receiver<Option<Head>> {
        self.inner.heads.clone()
    }

    /// Records an event without waiting; it is synced within
    /// `journal.sync_interval`. A full queue counts the event as lost (and
    /// the loss is journalled as `journal.gap`).
    pub fn emit(&self, entry: Entry) {
        self.queue(entry, false);
    }

    /// Queues without waiting; a lost event is counted (and becomes a gap).
    fn queue(&self, entry: Entry, keep: bool) {
        let sent = self.sender().map(|tx| {
            tx.try_send(Command::Append(Box::new(Pending {
                entry,
                ack: None,
                sync: keep,
                keep,
            })))
        });
        if !matches!(sent, Some(Ok(()))) {
            if matches!(sent, Some(Err(TrySendError::Full(_)))) {
                tracing::warn!(
                    "audit journal queue full; an event is lost and will be recorded as a gap"
                );
            }
            self.inner.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records an event and waits until it is on disk (`fdatasync`). Every
    /// destructive action calls this first and stops if it fails: fail closed.
    pub async fn commit(&self, entry: Entry) -> Result<Head, JournalError> {
        let status = self.status();
        if !status.writable {
            return Err(JournalError::Unwritable(
                status.last_error.unwrap_or_else(|| "unknown error".into()),
            ));
        }
        let (ack, answer) = oneshot::channel();
        self.send(Command::Append(Box::new(Pending {
            entry,
            ack: Some(ack),
            sync: true,
            keep: false,
        })))
        .await?;
        answer.await.map_err(|_| JournalError::Closed)?
    }

    /// Records what already happened (deletions done): never refused, held
    /// while the journal cannot be written, synced when written.
    pub fn record(&self, entry: Entry) {
        self.queue(entry, true);
    }

    /// Writes and syncs everything queued so far.
    pub async fn flush(&self) {
        let (ack, done) = oneshot::channel();
        if self.send(Command::Flush(ack)).await.is_ok() {
            let _ = done.await;
        }
    }

    /// Flushes, then stops the writer thread.
    pub async fn close(&self) {
        self.flush().await;
        let sender = self.inner.tx.lock().ok().and_then(|mut tx| tx.take());
        drop(sender);
        let thread = self.inner.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(thread) = thread {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }

    fn sender(&self) -> Option<SyncSender<Command>> {
        self.inner.tx.lock().ok().and_then(|tx| tx.clone())
    }

    async fn send(&self, command: Command) -> Result<(), JournalError> {
        let tx = self.sender().ok_or(JournalError::Closed)?;
        match tx.try_send(command) {
            Ok(()) => Ok(()),
            Err(TrySendError::Disconnected(_)) => Err(JournalError::Closed),
            // A full queue: wait for room off the async threads.
            Err(TrySendError::Full(command)) => {
                tokio::task::spawn_blocking(move || tx.send(command))
                    .await
                    .map_err(|_| JournalError::Closed)?
                    .map_err(|_| JournalError::Closed)
            }
        }
    }
}
