//! The last events this process wrote to the journal, newest first, for the
//! status page: it reads them from memory, never from the segments on disk.
//! Events other processes (CLI runs) journal are on disk only.

use std::collections::VecDeque;
use std::sync::Mutex;

use chrono::{DateTime, Utc};

use crate::core::journal_record::Record;
use crate::core::redact::redact_text;

/// Events kept.
pub const KEPT_EVENTS: usize = 30;

/// A summary longer than this is cut (an error text can be pages long).
const SUMMARY_CHARS: usize = 200;

/// One journal record, reduced to what a person scans for.
#[derive(Debug, Clone, PartialEq)]
pub struct RecentEvent {
    pub seq: u64,
    pub ts: DateTime<Utc>,
    pub event: String,
    /// `scheduler`, `daemon`, `token alice`, `cli root`.
    pub actor: String,
    pub job: Option<String>,
    /// The error, else the backup, else the trigger; redacted.
    pub summary: Option<String>,
}

impl RecentEvent {
    pub fn of(record: &Record) -> RecentEvent {
        let actor = &record.actor;
        RecentEvent {
            seq: record.seq,
            ts: record.ts,
            event: record.event.clone(),
            actor: if actor.kind == actor.name {
                actor.kind.clone()
            } else {
                format!("{} {}", actor.kind, actor.name)
            },
            job: text_field(&record.data, "job"),
            summary: summary(&record.data),
        }
    }
}

fn text_field(data: &serde_json::Value, key: &str) -> Option<String> {
    data.get(key)?.as_str().map(str::to_owned)
}

/// The field that says most about an event, redacted and cut short.
fn summary(data: &serde_json::Value) -> Option<String> {
    let text = ["error", "backup_id", "reason", "trigger"]
        .iter()
        .find_map(|key| text_field(data, key).map(|v| format!("{key}: {v}")))?;
    let text = redact_text(&text, &[]);
    Some(match text.char_indices().nth(SUMMARY_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    })
}

/// A bounded ring of [`RecentEvent`]s, filled by the writer thread.
#[derive(Debug, Default)]
pub struct RecentEvents {
    events: Mutex<VecDeque<RecentEvent>>,
}

impl RecentEvents {
    pub fn push(&self, record: &Record) {
        let event = RecentEvent::of(record);
        let mut events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        events.push_front(event);
        events.truncate(KEPT_EVENTS);
    }

    /// Newest first.
    pub fn list(&self) -> Vec<RecentEvent> {
        let events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        events.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::journal_record::{Actor, Entry};

    fn record(seq: u64, event: &str, actor: Actor, data: serde_json::Value) -> Record {
        let mut r = Record::next("j", None, Entry::at(Utc::now(), event, actor, data));
        r.seq = seq;
        r
    }

    #[test]
    fn an_event_is_summarised_by_its_error_first_and_redacted() {
        let data = serde_json::json!({
            "job": "orders",
            "trigger": "schedule",
            "error": format!("cannot connect to postgres://u:hunter22@db:5432/x: {}", "x".repeat(400)),
        });
        let e = RecentEvent::of(&record(7, "backup.failed", Actor::scheduler(), data));
        assert_eq!((e.seq, e.job.as_deref()), (7, Some("orders")));
        assert_eq!(e.actor, "scheduler");
        let summary = e.summary.unwrap();
        assert!(summary.starts_with("error: cannot connect"), "{summary}");
        assert!(!summary.contains("hunter22"), "{summary}");
        assert!(summary.chars().count() <= SUMMARY_CHARS + 1, "{summary}");

        let data = serde_json::json!({"job": "orders", "backup_id": "20261127T030000Z"});
        let e = RecentEvent::of(&record(
            8,
            "backup.succeeded",
            Actor::token("ops", "operator"),
            data,
        ));
        assert_eq!(e.summary.as_deref(), Some("backup_id: 20261127T030000Z"));
        assert_eq!(e.actor, "token ops");
    }

    #[test]
    fn keeps_the_newest_events_first() {
        let ring = RecentEvents::default();
        for seq in 0..(KEPT_EVENTS as u64 + 3) {
            ring.push(&record(
                seq,
                "journal.checkpoint",
                Actor::daemon(),
                serde_json::json!({}),
            ));
        }
        let events = ring.list();
        assert_eq!(events.len(), KEPT_EVENTS);
        assert_eq!(events[0].seq, KEPT_EVENTS as u64 + 2);
        assert_eq!(events[0].summary, None);
    }
}
