//! What a receiver is sent for one journal event: a camelCase JSON body
//! with a one-line summary, the record's data as details, and a link to
//! the status page; every string passed through the one redaction.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::core::journal_record::Record;
use crate::core::redact::redact_text;

/// The POSTed JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Body {
    /// `<journal id>:<seq>`: the same across retries (`X-Vigil-Delivery`).
    pub event_id: String,
    pub event: String,
    pub job: Option<String>,
    pub time: DateTime<Utc>,
    pub summary: String,
    pub details: Value,
    pub status_page_url: Option<String>,
}

impl Body {
    /// The body for `record`, with `secrets` masked wherever they appear.
    pub fn of(record: &Record, status_page_url: Option<&str>, secrets: &[String]) -> Body {
        let details = redact_value(&record.data, secrets);
        let job = details
            .get("job")
            .and_then(Value::as_str)
            .map(str::to_owned);
        Body {
            event_id: event_id(record),
            summary: redact_text(&summary(&record.event, job.as_deref(), &details), secrets),
            event: record.event.clone(),
            job,
            time: record.ts,
            details,
            status_page_url: status_page_url.map(str::to_owned),
        }
    }
}

/// A journal record's identity across every vigil process writing it.
pub fn event_id(record: &Record) -> String {
    format!("{}:{}", record.journal, record.seq)
}

/// One line a person reads in a chat message or a pager.
pub fn summary(event: &str, job: Option<&str>, details: &Value) -> String {
    let text = |k: &str| details.get(k).and_then(Value::as_str).unwrap_or("");
    let number = |k: &str| details.get(k).and_then(Value::as_u64).unwrap_or(0);
    let job = job.unwrap_or("?");
    match event {
        "backup.failed" => format!("backup of `{job}` failed: {}", text("error")),
        "backup.succeeded" => format!("backup of `{job}` succeeded ({})", text("backup_id")),
        "backup.recovered" => format!(
            "`{job}` backs up again after {} failed run(s)",
            number("failed_runs")
        ),
        "job.stale" => format!(
            "`{job}`'s newest backup is {} old (fails after {})",
            text("age"),
            text("threshold")
        ),
        "verify.failed" => format!("verification of `{job}` failed: {}", text("error")),
        "drill.failed" => format!("restore drill of `{job}` failed: {}", text("error")),
        "journal.unwritable" => format!("the audit journal cannot be written: {}", text("error")),
        "notify.test" => "a test event from vigil notify test".into(),
        _ if job != "?" => format!("{event} (job `{job}`)"),
        _ => event.to_owned(),
    }
}

/// `value` with every string redacted.
pub fn redact_value(value: &Value, secrets: &[String]) -> Value {
    match value {
        Value::String(s) => Value::String(redact_text(s, secrets)),
        Value::Array(items) => {
            Value::Array(items.iter().map(|v| redact_value(v, secrets)).collect())
        }
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), redact_value(v, secrets)))
                .collect(),
        ),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::journal_record::{Actor, Entry};

    fn record(event: &str, data: Value) -> Record {
        Record::next(
            "j-1",
            Some((41, "abc")),
            Entry::at(Utc::now(), event, Actor::daemon(), data),
        )
    }

    #[test]
    fn a_failed_backup_says_what_and_why_without_the_secret() {
        let r = record(
            "backup.failed",
            serde_json::json!({"job": "orders", "error": "auth failed for hunter22 at postgres://u:pw12@db/x"}),
        );
        let body = Body::of(&r, Some("http://127.0.0.1:9746/"), &["hunter22".into()]);
        assert_eq!(body.event_id, "j-1:42");
        assert_eq!(body.job.as_deref(), Some("orders"));
        let text = serde_json::to_string(&body).unwrap();
        assert!(
            !text.contains("hunter22") && !text.contains("pw12"),
            "{text}"
        );
        assert!(
            body.summary
                .starts_with("backup of `orders` failed: auth failed for ***")
        );
        assert!(
            text.contains("\"statusPageUrl\":\"http://127.0.0.1:9746/\""),
            "{text}"
        );
        assert!(text.contains("\"eventId\""), "{text}");
    }

    #[test]
    fn an_event_without_a_job_has_a_null_job() {
        let body = Body::of(&record("daemon.started", serde_json::json!({})), None, &[]);
        assert_eq!(body.job, None);
        assert_eq!(body.summary, "daemon.started");
    }
}
