//! One webhook's delivery loop: follow the journal from the queue's
//! cursor (so events any vigil process recorded are seen), queue the
//! wanted ones, POST the oldest when due, retry with back-off, open the
//! circuit after repeated failures, journal every attempt.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::body::{Body, event_id};
use super::queue::{Owner, Pending, QueueFile};
use super::send::{Attempt, post};
use crate::config::WebhookConfig;
use crate::core::journal_record::{Actor, Entry, Record};
use crate::journal::Journal;
use crate::journal::tail::Tail;
use crate::state::Shared;

/// Records read from the journal per step.
const BATCH: usize = 200;
/// How often the daemon looks for records other processes wrote.
const IDLE_POLL: Duration = Duration::from_secs(1);

/// What every webhook's loop shares.
#[derive(Clone)]
pub struct Context {
    pub journal: Journal,
    /// Who the `notify.*` records are by.
    pub actor: Actor,
    /// The daemon's state (queue depth, circuit); a CLI command has none.
    pub shared: Option<Arc<Shared>>,
    pub status_page_url: Option<String>,
    /// Masked in every body.
    pub secrets: Vec<String>,
}

pub struct Outbox {
    hook: WebhookConfig,
    owner: Owner,
    queue: QueueFile,
    tail: Option<Tail>,
    /// Built at the first attempt: loading the TLS roots costs a CLI
    /// command ~0.2 s, for nothing when it has nothing to deliver.
    client: Option<reqwest::Client>,
    ctx: Context,
}

impl Outbox {
    /// The queue `owner` holds; one that never existed (or counted in
    /// another journal) starts after `start`.
    pub fn open(hook: WebhookConfig, owner: Owner, ctx: Context, start: u64) -> Outbox {
        let queue = match owner.load() {
            Ok(Some(queue)) if queue.journal == ctx.journal.id() => queue,
            Ok(_) => QueueFile::default(),
            Err(e) => {
                tracing::error!(webhook = %hook.name, error = %e, "cannot read the webhook's queue");
                QueueFile::default()
            }
        };
        let mut queue = if queue.journal.is_empty() {
            QueueFile {
                journal: ctx.journal.id().to_owned(),
                seq: start,
                ..queue
            }
        } else {
            queue
        };
        // A (re)start probes at once: whoever restarted may have fixed the receiver.
        if let Some(front) = queue.pending.front_mut() {
            front.next_attempt = front.next_attempt.min(Utc::now());
        }
        let outbox = Outbox {
            hook,
            owner,
            queue,
            tail: None,
            client: None,
            ctx,
        };
        outbox.publish();
        outbox
    }

    /// The daemon's loop, until `cancel`.
    pub async fn run(mut self, cancel: CancellationToken) {
        let mut heads = self.ctx.journal.heads();
        while !cancel.is_cancelled() {
            self.fill();
            while self.due() {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = self.attempt() => {}
                }
            }
            let wait = self.until_due().unwrap_or(IDLE_POLL).min(IDLE_POLL);
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = heads.changed() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// A CLI command's delivery before it exits: until the queue is empty
    /// or `deadline`; what is left waits for the daemon (or the next command).
    pub async fn drain(mut self, deadline: Instant) {
        loop {
            self.fill();
            if self.queue.pending.is_empty() {
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            if self.due() {
                // An attempt cut short by the deadline is not counted.
                let _ = tokio::time::timeout(left, self.attempt()).await;
            } else {
                // Not due within the wait (a backed-off retry, an open
                // circuit): leave it to the daemon rather than idle.
                let wait = self.until_due().unwrap_or(left);
                if wait >= left {
                    return;
                }
                tokio::time::sleep(wait).await;
            }
        }
    }

    /// Queues the wanted records written since the cursor.
    fn fill(&mut self) {
        let before = (self.queue.seq, self.queue.pending.len());
        loop {
            let batch = match self.read_batch() {
                Ok(batch) => batch,
                Err(e) => {
                    tracing::warn!(webhook = %self.hook.name, error = %e, "cannot read the audit journal for the webhook");
                    self.tail = None;
                    break;
                }
            };
            let Some((last, _)) = batch.last() else {
                break;
            };
            self.queue.seq = last.seq;
            for (record, _) in &batch {
                if self.wants(record) {
                    self.queue.pending.push_back(self.pending_for(record));
                }
            }
        }
        if (self.queue.seq, self.queue.pending.len()) != before {
            self.save();
            self.publish();
        }
    }

    fn read_batch(&mut self) -> std::io::Result<Vec<(Record, String)>> {
        if self.tail.is_none() {
            self.tail = Some(Tail::after(self.ctx.journal.dir(), self.queue.seq)?);
        }
        match &mut self.tail {
            Some(tail) => tail.read(BATCH),
            None => Ok(Vec::new()),
        }
    }

    /// Wanted by the config, and never this webhook's own attempts.
    fn wants(&self, record: &Record) -> bool {
        let own = record.event.starts_with("notify.")
            && record.data.get("webhook").and_then(|w| w.as_str()) == Some(&self.hook.name);
        self.hook.wants(&record.event) && !own
    }

    fn pending_for(&self, record: &Record) -> Pending {
        let body = Body::of(
            record,
            self.ctx.status_page_url.as_deref(),
            &self.ctx.secrets,
        );
        let now = Utc::now();
        Pending {
            event_id: event_id(record),
            event: record.event.clone(),
            body: serde_json::to_string(&body).unwrap_or_default(),
            attempts: 0,
            first_queued: now,
            next_attempt: now,
        }
    }

    fn due(&self) -> bool {
        self.queue
            .pending
            .front()
            .is_some_and(|p| p.next_attempt <= Utc::now())
    }

    fn until_due(&self) -> Option<Duration> {
        let next = self.queue.pending.front()?.next_attempt;
        Some((next - Utc::now()).to_std().unwrap_or_default())
    }

    /// One attempt at the oldest delivery, and what follows from it.
    async fn attempt(&mut self) {
        let Some(front) = self.queue.pending.front().cloned() else {
            return;
        };
        let attempt = match self.client() {
            Ok(client) => {
                post(
                    &client,
                    &self.hook,
                    &front.event,
                    &front.event_id,
                    &front.body,
                )
                .await
            }
            Err(e) => Attempt::Retry {
                status: None,
                error: crate::core::redact::error_chain(&e),
                retry_after: None,
            },
        };
        let number = front.attempts + 1;
        match &attempt {
            Attempt::Delivered { .. } => self.delivered(&front, &attempt, number),
            Attempt::Refused { .. } => self.dropped(&front, &attempt, number, "refused"),
            Attempt::Retry { retry_after, .. } => {
                let now = Utc::now();
                let age = (now - front.first_queued).to_std().unwrap_or_default();
                if age >= self.hook.give_up_after {
                    self.dropped(&front, &attempt, number, "gave up");
                } else {
                    self.retry_later(&front, &attempt, number, *retry_after, now);
                }
            }
        }
        self.save();
        self.publish();
    }

    fn delivered(&mut self, front: &Pending, attempt: &Attempt, number: u32) {
        self.queue.pending.pop_front();
        if self.circuit_open() {
            tracing::info!(webhook = %self.hook.name, "the webhook's receiver answers again; circuit closed");
        }
        self.queue.consecutive_failures = 0;
        self.count(|s| s.delivered_total += 1);
        self.journal(
            "notify.delivered",
            front,
            json!({ "status": attempt.status(), "attempt": number }),
        );
    }

    /// Refused (a 4xx) or given up: journalled, removed, never retried.
    fn dropped(&mut self, front: &Pending, attempt: &Attempt, number: u32, why: &str) {
        self.queue.pending.pop_front();
        let error = attempt.error().unwrap_or_default();
        tracing::warn!(webhook = %self.hook.name, event_id = %front.event_id, %error, attempts = number, "webhook delivery {why}; not retried");
        self.count(|s| {
            s.failed_total += 1;
            s.dropped_total += 1;
            s.last_error = Some(error.clone());
        });
        self.journal(
            "notify.failed",
            front,
            json!({ "status": attempt.status(), "attempt": number, "error": error, "final": true, "reason": why }),
        );
    }

    fn retry_later(
        &mut self,
        front: &Pending,
        attempt: &Attempt,
        number: u32,
        retry_after: Option<Duration>,
        now: DateTime<Utc>,
    ) {
        let was_open = self.circuit_open();
        self.queue.consecutive_failures += 1;
        let open = self.circuit_open();
        let wait = super::retry::next_wait(&self.hook, number, retry_after, open, fastrand::f64());
        if let Some(p) = self.queue.pending.front_mut() {
            p.attempts = number;
            p.next_attempt = now + chrono::Duration::from_std(wait).unwrap_or_default();
        }
        let error = attempt.error().unwrap_or_default();
        if open && !was_open {
            tracing::warn!(webhook = %self.hook.name, failures = self.queue.consecutive_failures, %error, "webhook circuit open: deliveries wait, one probe per interval");
        } else {
            tracing::info!(webhook = %self.hook.name, %error, attempt = number, retry_in = ?wait, "webhook delivery failed; will retry");
        }
        self.count(|s| {
            s.failed_total += 1;
            s.last_error = Some(error.clone());
        });
        self.journal(
            "notify.failed",
            front,
            json!({ "status": attempt.status(), "attempt": number, "error": error, "final": false, "retry_in_seconds": wait.as_secs() }),
        );
    }

    /// The webhook's client (cheap to clone: it shares its pool).
    fn client(&mut self) -> Result<reqwest::Client, reqwest::Error> {
        if let Some(client) = &self.client {
            return Ok(client.clone());
        }
        let client = super::send::client(self.hook.timeout)?;
        self.client = Some(client.clone());
        Ok(client)
    }

    fn circuit_open(&self) -> bool {
        self.queue.consecutive_failures >= self.hook.circuit_after
    }

    fn journal(&self, event: &str, front: &Pending, mut data: serde_json::Value) {
        if let Some(map) = data.as_object_mut() {
            map.insert("webhook".into(), self.hook.name.clone().into());
            map.insert("event_id".into(), front.event_id.clone().into());
            map.insert("event".into(), front.event.clone().into());
        }
        self.ctx
            .journal
            .emit(Entry::at(Utc::now(), event, self.ctx.actor.clone(), data));
    }

    fn save(&self) {
        if let Err(e) = self.owner.save(&self.queue) {
            tracing::error!(webhook = %self.hook.name, dir = %self.owner.dir.display(), error = %e, "cannot save the webhook's queue; a restart may send its events again");
        }
    }

    fn count(&self, f: impl FnOnce(&mut crate::state::WebhookState)) {
        if let Some(shared) = &self.ctx.shared {
            shared.notify.update(&self.hook.name, f);
        }
    }

    /// The queue and circuit as `notify:<name>` and `/metrics` read them.
    fn publish(&self) {
        let queued = self.queue.pending.len() as u64;
        let oldest = self.queue.pending.front().map(|p| p.first_queued);
        let failures = self.queue.consecutive_failures;
        let open = self.circuit_open();
        self.count(|s| {
            s.queued = queued;
            s.oldest_queued = oldest;
            s.consecutive_failures = failures;
            s.circuit_open = open;
        });
    }
}
