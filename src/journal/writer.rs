//! The one append path. A dedicated thread owns the current segment; events
//! arrive over a bounded channel. Each record is one `write` on an
//! `O_APPEND` file, under an exclusive lock on `journal.lock` so a CLI
//! command and the daemon never interleave. The segment is opened per
//! batch, so a file system that turned read-only (or a vanished segment) is
//! noticed at the next event, not at the next restart.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use thiserror::Error;
use tokio::sync::{oneshot, watch};

use super::segment::{self, Fragment, LOCK_FILE, segment_name};
use crate::core::journal_record::{Actor, Entry, Record, encode_line};

/// After a failed write, try again this often.
const RETRY_EVERY: Duration = Duration::from_secs(1);

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

/// Counters for `/metrics`, shared with the status cache.
#[derive(Debug, Default)]
pub struct AuditStats {
    pub appended: AtomicU64,
    pub write_failures: AtomicU64,
    /// Events lost to a full queue (each loss is recorded as `journal.gap`).
    pub dropped: AtomicU64,
    pub held: AtomicU64,
    pub head_seq: AtomicU64,
    pub shipped_catalog: AtomicU64,
    pub shipped_loki: AtomicU64,
    pub loki_enabled: std::sync::atomic::AtomicBool,
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
                super::cli_actor()
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

struct Pending {
    entry: Entry,
    ack: Option<oneshot::Sender<Result<Head, JournalError>>>,
    sync: bool,
    /// Held until written, whatever happens: records of what already took
    /// place (deletions done, gaps, the journal's own events).
    keep: bool,
}

enum Command {
    Append(Box<Pending>),
    /// Write and sync everything queued, then answer.
    Flush(oneshot::Sender<()>),
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
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&options.dir)
            .map_err(|e| with_path(e, "cannot create the journal directory", &options.dir))?;
        let lock_path = options.dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(|e| with_path(e, "cannot open", &lock_path))?;
        let (tx, rx) = std::sync::mpsc::sync_channel(options.queue_capacity);
        let (heads_tx, heads) = watch::channel(None);
        let status = Arc::new(Mutex::new(JournalStatus::default()));
        let mut writer = Writer {
            opts: options.clone(),
            id: String::new(),
            lock,
            segment: 0,
            offset: 0,
            segment_started: Utc::now(),
            head: None,
            head_segment: 0,
            durable: None,
            pending: VecDeque::new(),
            dirty_since: None,
            writable: true,
            last_error: None,
            retry_at: None,
            next_checkpoint: options.checkpoint_interval.map(|i| Instant::now() + i),
            last_checkpoint: None,
            status: Arc::clone(&status),
            stats: Arc::clone(&stats),
            heads: heads_tx,
        };
        writer.lock.lock()?;
        let opened = writer.open_existing();
        let _ = writer.lock.unlock();
        opened?;
        writer.publish();
        let id = writer.id.clone();
        let thread = std::thread::Builder::new()
            .name("vigil-journal".into())
            .spawn(move || writer.run(rx))?;
        Ok(Journal {
            inner: Arc::new(Inner {
                id,
                dir: options.dir,
                tx: Mutex::new(Some(tx)),
                status,
                stats,
                heads,
                thread: Mutex::new(Some(thread)),
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

fn parse_line(path: &Path, line: &segment::Line) -> io::Result<Record> {
    serde_json::from_str(&line.text).map_err(|e| {
        io::Error::other(format!(
            "{} is damaged at byte {}: {e}; run `vigil audit verify` and move the segment aside",
            path.display(),
            line.offset
        ))
    })
}

fn with_path(e: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

/// A waiting `commit` and the head its event got.
type Ack = (oneshot::Sender<Result<Head, JournalError>>, Head);

struct Writer {
    opts: JournalOptions,
    id: String,
    lock: File,
    segment: u32,
    offset: u64,
    segment_started: DateTime<Utc>,
    head: Option<Head>,
    /// The segment holding `head`.
    head_segment: u32,
    /// The last record known to be on disk (fdatasync'd): what anchors,
    /// shippers and waiting callers see.
    durable: Option<Head>,
    pending: VecDeque<Pending>,
    dirty_since: Option<Instant>,
    writable: bool,
    last_error: Option<String>,
    retry_at: Option<Instant>,
    next_checkpoint: Option<Instant>,
    last_checkpoint: Option<Head>,
    status: Arc<Mutex<JournalStatus>>,
    stats: Arc<AuditStats>,
    heads: watch::Sender<Option<Head>>,
}

impl Writer {
    fn path(&self, n: u32) -> PathBuf {
        self.opts.dir.join(segment_name(n))
    }

    /// Finds the head on disk; starts a segment if there is none, or if the
    /// newest ends in a torn write.
    fn open_existing(&mut self) -> io::Result<()> {
        let segments = segment::list(&self.opts.dir)?;
        // The newest non-empty segment and its torn tail, if any.
        let mut newest: Option<(u32, Option<Fragment>)> = None;
        // Identity and head come from the newest segment holding a complete
        // record: the newest may be empty (a crash right after creating it)
        // or hold nothing but a torn write.
        for (n, path) in segments.iter().rev() {
            if std::fs::metadata(path)?.len() == 0 {
                continue;
            }
            let (lines, fragment) = segment::read_from(path, 0)?;
            let is_newest = newest.is_none();
            if is_newest {
                newest = Some((*n, fragment));
            }
            let (Some(first), Some(last)) = (lines.first(), lines.last()) else {
                continue;
            };
            let first = parse_line(path, first)?;
            let last_record = parse_line(path, last)?;
            self.id = first.journal;
            self.head = Some(Head {
                seq: last_record.seq,
                hash: last_record.hash,
            });
            self.head_segment = *n;
            self.durable = self.head.clone();
            if is_newest {
                self.segment = *n;
                self.offset = last.offset + last.text.len() as u64 + 1;
                self.segment_started = first.ts;
            }
            break;
        }
        if self.id.is_empty() {
            // A new journal (or one whose only write was torn).
            self.id = uuid::Uuid::new_v4().to_string();
        }
        match newest {
            None => {
                let first = segments.first().map_or(1, |(n, _)| *n);
                self.start_segment(first, "new journal", None)
            }
            Some((n, Some(fragment))) => {
                // Reuse an empty newer segment left by a crash, else the next number.
                let next = segments
                    .last()
                    .map_or(n + 1, |(last, _)| if *last > n { *last } else { n + 1 });
                tracing::warn!(segment = %segment_name(n), offset = fragment.offset, length = fragment.length, "the journal ends in a torn write; it is kept as it is and recorded in a new segment");
                self.start_segment(next, "recovery", Some((segment_name(n), fragment)))
            }
            Some((_, None)) => Ok(()),
        }
    }

    /// Creates segment `n` with its `journal.segment_started` record (and a
    /// `journal.recovered` one when the previous segment's tail was torn),
    /// synced. On failure the writer stays on the old segment and the new
    /// file is removed, so a retry starts it cleanly.
    fn start_segment(
        &mut self,
        n: u32,
        reason: &str,
        torn: Option<(String, Fragment)>,
    ) -> io::Result<()> {
        let previous = self.head.clone().map(
            |h| json!({ "segment": segment_name(self.head_segment), "seq": h.seq, "hash": h.hash }),
        );
        let path = self.path(n);
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| with_path(e, "cannot create", &path))?;
        if file.metadata()?.len() != 0 {
            return Err(io::Error::other(format!(
                "{} already holds data; another writer is using this journal directory",
                path.display()
            )));
        }
        let saved = (
            self.segment,
            self.offset,
            self.segment_started,
            self.head.clone(),
        );
        self.segment = n;
        self.offset = 0;
        self.segment_started = Utc::now();
        let data = json!({ "segment": segment_name(n), "previous": previous, "reason": reason });
        let written = self.write_opening(&mut file, data, torn);
        match written {
            Ok(()) => {
                self.head_segment = n;
                self.durable = self.head.clone();
                self.dirty_since = None;
                Ok(())
            }
            Err(e) => {
                (self.segment, self.offset, self.segment_started, self.head) = saved;
                drop(file);
                let _ = std::fs::remove_file(&path);
                Err(e)
            }
        }
    }

    fn write_opening(
        &mut self,
        file: &mut File,
        data: serde_json::Value,
        torn: Option<(String, Fragment)>,
    ) -> io::Result<()> {
        let started = self.system_entry("journal.segment_started", data);
        self.write_record(file, started)?;
        if let Some((segment, fragment)) = torn {
            let recovered = self.system_entry(
                "journal.recovered",
                json!({ "segment": segment, "offset": fragment.offset, "length": fragment.length, "sha256": fragment.sha256 }),
            );
            self.write_record(file, recovered)?;
        }
        file.sync_data()?;
        File::open(&self.opts.dir)?.sync_all()
    }

    fn system_entry(&self, event: &str, data: serde_json::Value) -> Entry {
        Entry::at(chrono::Utc::now(), event, self.opts.actor.clone(), data)
    }

    /// One record, one `write`.
    fn write_record(&mut self, file: &mut File, entry: Entry) -> io::Result<Head> {
        let previous = self.head.as_ref().map(|h| (h.seq, h.hash.as_str()));
        let record = Record::next(&self.id, previous, entry);
        let line = encode_line(&record);
        let written = file.write(&line)?;
        if written != line.len() {
            // The partial line stays: the next batch finds the file longer
            // than expected and records it as a torn tail.
            // Almost always a full disk or quota: say how much is left.
            let free = free_bytes(&self.opts.dir);
            let room = match free {
                Ok(free) => format!(
                    "{free} bytes free on the filesystem of {}: free space there",
                    self.opts.dir.display()
                ),
                Err(e) => format!("cannot stat {}: {e}", self.opts.dir.display()),
            };
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("short write ({written} of {} bytes); {room}", line.len()),
            ));
        }
        self.offset += line.len() as u64;
        let head = Head {
            seq: record.seq,
            hash: record.hash,
        };
        self.head = Some(head.clone());
        self.stats.appended.fetch_add(1, Ordering::Relaxed);
        Ok(head)
    }

    fn run(mut self, rx: Receiver<Command>) {
        let mut flushes = Vec::new();
        loop {
            let timeout = self.next_wake().saturating_duration_since(Instant::now());
            match rx.recv_timeout(timeout) {
                Ok(command) => {
                    self.take(command, &mut flushes);
                    // Group what is already queued into this batch.
                    while self.pending.len() < 4096 {
                        match rx.try_recv() {
                            Ok(command) => self.take(command, &mut flushes),
                            Err(_) => break,
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    self.write_pending(true);
                    return;
                }
            }
            let now = Instant::now();
            if self.next_checkpoint.is_some_and(|t| now >= t) {
                self.queue_checkpoint();
            }
            let retry_due = self.retry_at.is_none_or(|t| now >= t);
            let flush = !flushes.is_empty();
            if retry_due || flush {
                let sync_due = flush
                    || self
                        .dirty_since
                        .is_some_and(|t| now.duration_since(t) >= self.opts.sync_interval);
                self.write_pending(sync_due);
            }
            for done in flushes.drain(..) {
                let _ = done.send(());
            }
        }
    }

    fn next_wake(&self) -> Instant {
        let far = Instant::now() + Duration::from_secs(3600);
        [
            self.dirty_since.map(|t| t + self.opts.sync_interval),
            self.retry_at.filter(|_| !self.pending.is_empty()),
            self.next_checkpoint,
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(far)
    }

    fn take(&mut self, command: Command, flushes: &mut Vec<oneshot::Sender<()>>) {
        match command {
            Command::Flush(done) => flushes.push(done),
            Command::Append(p) if !self.writable && p.ack.is_some() => {
                // Fail closed: a destructive action waits on this answer.
                let error = self.last_error.clone().unwrap_or_default();
                let _ = p.ack.map(|a| a.send(Err(JournalError::Unwritable(error))));
            }
            Command::Append(p) if !p.keep && self.pending.len() >= self.opts.queue_capacity => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                drop(p);
            }
            Command::Append(p) => self.pending.push_back(*p),
        }
    }

    fn queue_checkpoint(&mut self) {
        let interval = self.opts.checkpoint_interval.unwrap_or_default();
        self.next_checkpoint = Some(Instant::now() + interval);
        // The head, the previous checkpoint and the segment are filled in
        // when it is written: other records may go first.
        let entry = self.system_entry(
            "journal.checkpoint",
            json!({ "interval_s": interval.as_secs() }),
        );
        self.pending.push_front(Pending {
            entry,
            ack: None,
            sync: true,
            keep: true,
        });
    }

    /// Writes what is queued; on failure keeps it queued and retries later.
    fn write_pending(&mut self, sync: bool) {
        let lost = self.stats.dropped.swap(0, Ordering::Relaxed);
        // One outage, one gap: a gap still queued from an earlier failed
        // attempt takes the new losses.
        let queued_gap = self
            .pending
            .front_mut()
            .filter(|p| p.entry.event == "journal.gap")
            .and_then(|p| p.entry.data.get_mut("lost"));
        if lost > 0
            && let Some(count) = queued_gap
        {
            *count = json!(count.as_u64().unwrap_or(0) + lost);
        } else if lost > 0 {
            let entry = self.system_entry(
                "journal.gap",
                json!({ "lost": lost, "reason": "events arrived while the journal could not be written and the queue was full" }),
            );
            self.pending.push_front(Pending {
                entry,
                ack: None,
                sync: true,
                keep: true,
            });
        }
        if self.pending.is_empty() && !(sync && self.dirty_since.is_some()) {
            return;
        }
        let mut acks = Vec::new();
        let result = match self.lock.lock() {
            Ok(()) => {
                let r = self.append_locked(sync, &mut acks);
                let _ = self.lock.unlock();
                r
            }
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => {
                if !self.writable {
                    tracing::info!("the audit journal is writable again");
                }
                self.writable = true;
                self.last_error = None;
                self.retry_at = None;
                // The head is visible before anyone learns their event is on disk.
                self.publish();
                for (ack, head) in acks {
                    let _ = ack.send(Ok(head));
                }
                return;
            }
            Err(e) => {
                let message = e.to_string();
                if self.writable || self.last_error.as_deref() != Some(&message) {
                    tracing::error!(error = %message, held = self.pending.len(), "cannot write the audit journal; destructive operations are refused until it can");
                }
                self.stats.write_failures.fetch_add(1, Ordering::Relaxed);
                if self.writable {
                    // Recorded once writing works again; also keeps the
                    // writer retrying while nothing else is queued.
                    let entry = self.system_entry(
                        "journal.unwritable",
                        json!({ "error": message, "since": Utc::now() }),
                    );
                    self.pending.push_front(Pending {
                        entry,
                        ack: None,
                        sync: true,
                        keep: true,
                    });
                }
                self.writable = false;
                self.last_error = Some(message);
                self.retry_at = Some(Instant::now() + RETRY_EVERY);
                let error = self.last_error.clone().unwrap_or_default();
                for (ack, _) in acks {
                    let _ = ack.send(Err(JournalError::Unwritable(error.clone())));
                }
                for p in self.pending.iter_mut() {
                    if let Some(ack) = p.ack.take() {
                        let _ = ack.send(Err(JournalError::Unwritable(
                            self.last_error.clone().unwrap_or_default(),
                        )));
                    }
                }
                // A refused action is not going to happen: drop its event.
                self.pending
                    .retain(|p| !p.sync || p.entry.event.starts_with("journal."));
            }
        }
        self.publish();
    }

    fn append_locked(&mut self, sync: bool, acks: &mut Vec<Ack>) -> io::Result<()> {
        self.catch_up_with_disk()?;
        let path = self.path(self.segment);
        let mut file = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|e| with_path(e, "cannot open", &path))?;
        let mut must_sync = sync;
        while !self.pending.is_empty() {
            if self.rotation_due() {
                file.sync_data()?;
                self.dirty_since = None;
                self.durable = self.head.clone();
                let next = self.segment + 1;
                self.start_segment(next, "rotation", None)?;
                let path = self.path(self.segment);
                file = OpenOptions::new()
                    .append(true)
                    .open(&path)
                    .map_err(|e| with_path(e, "cannot open", &path))?;
            }
            let Some(p) = self.pending.front() else {
                break;
            };
            must_sync |= p.sync;
            let mut entry = p.entry.clone();
            if entry.event == "journal.checkpoint" {
                // The head it anchors is the record right before it.
                entry.data["head"] = json!(self.head);
                entry.data["previous_checkpoint"] = json!(self.last_checkpoint);
                entry.data["segment"] = json!(segment_name(self.segment));
                if let Some(key) = &self.opts.signer {
                    entry.data["signature"] =
                        super::sign::sign_checkpoint(key, &self.id, &entry.data);
                }
            }
            let head = self.write_record(&mut file, entry)?;
            if let Some(p) = self.pending.pop_front() {
                if p.entry.event == "journal.checkpoint" {
                    self.last_checkpoint = Some(head.clone());
                }
                acks.extend(p.ack.map(|a| (a, head.clone())));
            }
            self.dirty_since.get_or_insert_with(Instant::now);
        }
        if must_sync && self.dirty_since.is_some() {
            file.sync_data()?;
            self.dirty_since = None;
            self.durable = self.head.clone();
        }
        Ok(())
    }

    fn rotation_due(&self) -> bool {
        // Never rotate a segment that holds only its opening records.
        let opening = self.offset < 1024;
        !opening
            && (self.offset >= self.opts.segment_max_bytes
                || (Utc::now() - self.segment_started)
                    .to_std()
                    .is_ok_and(|age| age >= self.opts.segment_max_age))
    }

    /// Another writer (a CLI command) may have appended or rotated since
    /// our last batch; a crashed one may have left a torn tail. Adopt what
    /// it wrote, recover what it tore.
    fn catch_up_with_disk(&mut self) -> io::Result<()> {
        let mut moved = false;
        // An empty newer segment is a crash right after creating it: not moved into.
        while std::fs::metadata(self.path(self.segment + 1)).is_ok_and(|m| m.len() > 0) {
            self.segment += 1;
            self.offset = 0;
            moved = true;
        }
        let path = self.path(self.segment);
        let size = std::fs::metadata(&path)
            .map_err(|e| with_path(e, "the current segment is gone:", &path))?
            .len();
        if size == self.offset && !moved {
            return Ok(());
        }
        let (lines, fragment) = segment::read_from(&path, self.offset)?;
        for line in &lines {
            let record: Record = serde_json::from_str(&line.text).map_err(|e| {
                io::Error::other(format!(
                    "{} is damaged at byte {}: {e}; run `vigil audit verify`",
                    path.display(),
                    line.offset
                ))
            })?;
            let expected = self.head.as_ref().map_or(1, |h| h.seq + 1);
            if record.journal != self.id || record.seq != expected {
                return Err(io::Error::other(format!(
                    "{} holds seq {} of journal {} where seq {expected} of {} was expected; run `vigil audit verify`",
                    path.display(),
                    record.seq,
                    record.journal,
                    self.id
                )));
            }
            if line.offset == 0 {
                self.segment_started = record.ts;
            }
            self.head = Some(Head {
                seq: record.seq,
                hash: record.hash,
            });
            self.head_segment = self.segment;
            self.offset = line.offset + line.text.len() as u64 + 1;
        }
        if let Some(fragment) = fragment {
            tracing::warn!(segment = %path.display(), offset = fragment.offset, length = fragment.length, "torn write in the journal; kept as it is and recorded in a new segment");
            let torn = segment_name(self.segment);
            self.dirty_since = None;
            self.start_segment(self.segment + 1, "recovery", Some((torn, fragment)))?;
        }
        Ok(())
    }

    fn publish(&self) {
        self.stats
            .held
            .store(self.pending.len() as u64, Ordering::Relaxed);
        if let Some(head) = &self.durable {
            self.stats.head_seq.store(head.seq, Ordering::Relaxed);
        }
        if let Ok(mut status) = self.status.lock() {
            *status = JournalStatus {
                writable: self.writable,
                last_error: self.last_error.clone(),
            };
        }
        self.heads.send_if_modified(|h| {
            let changed = *h != self.durable;
            if changed {
                h.clone_from(&self.durable);
            }
            changed
        });
    }
}

/// Bytes available on the filesystem holding `dir`.
fn free_bytes(dir: &std::path::Path) -> nix::Result<u64> {
    let stat = nix::sys::statvfs::statvfs(dir)?;
    Ok(stat.blocks_available() as u64 * stat.fragment_size() as u64)
}
