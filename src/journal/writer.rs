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
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::json;
use tokio::sync::{oneshot, watch};

use super::handle::{Head, JournalError, JournalOptions, JournalStatus};
use super::segment::{self, LOCK_FILE, segment_name};
use crate::core::journal_record::{Entry, Record, encode_line};

mod disk;

/// After a failed write, try again this often.
const RETRY_EVERY: Duration = Duration::from_secs(1);

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
    /// The last events written, for the status page.
    pub recent: super::recent::RecentEvents,
}

/// One queued event, as the handle hands it to the thread.
pub(super) struct Pending {
    pub(super) entry: Entry,
    pub(super) ack: Option<oneshot::Sender<Result<Head, JournalError>>>,
    pub(super) sync: bool,
    /// Held until written, whatever happens: records of what already took
    /// place (deletions done, gaps, the journal's own events).
    pub(super) keep: bool,
}

pub(super) enum Command {
    Append(Box<Pending>),
    /// Write and sync everything queued, then answer.
    Flush(oneshot::Sender<()>),
}

/// A running writer thread and the identity of the journal it writes.
pub(super) struct Started {
    pub(super) id: String,
    pub(super) thread: std::thread::JoinHandle<()>,
}

/// Creates the journal directory, finds the head on disk (recovering a
/// torn tail) and starts the writer thread on `rx`.
pub(super) fn start(
    options: JournalOptions,
    rx: Receiver<Command>,
    status: Arc<Mutex<JournalStatus>>,
    stats: Arc<AuditStats>,
    heads: watch::Sender<Option<Head>>,
) -> io::Result<Started> {
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
    let mut writer = Writer {
        next_checkpoint: options.checkpoint_interval.map(|i| Instant::now() + i),
        opts: options,
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
        last_checkpoint: None,
        status,
        stats,
        heads,
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
    Ok(Started { id, thread })
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
            let free = crate::fsinfo::space(&self.opts.dir).map(|s| s.available);
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
        self.stats.recent.push(&record);
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
