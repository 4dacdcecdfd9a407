//! `vigil audit show`: the journal's records, filtered, as lines or as
//! the exact JSON.

use chrono::{DateTime, Utc};

use crate::cli::error::{AuditError, CliError};
use crate::config::Config;

/// `--since` is neither a duration nor a time.
#[derive(Debug, thiserror::Error)]
pub enum SinceError {
    #[error("`{text}` is neither a duration (2h, 30m) nor an RFC 3339 time")]
    Unparsable { text: String },
    #[error("{source}")]
    OutOfRange {
        text: String,
        source: chrono::OutOfRangeError,
    },
}

/// `--since`: a duration ago (`2h`) or an RFC 3339 time.
pub fn parse_since(text: &str) -> Result<DateTime<Utc>, SinceError> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    let ago = humantime::parse_duration(text).map_err(|_| SinceError::Unparsable {
        text: text.to_owned(),
    })?;
    let ago = chrono::Duration::from_std(ago).map_err(|source| SinceError::OutOfRange {
        text: text.to_owned(),
        source,
    })?;
    Ok(Utc::now() - ago)
}

/// `vigil audit show [--since] [--event] [--json]`.
pub fn show(
    config: &Config,
    since: Option<DateTime<Utc>>,
    event: Option<&str>,
    json: bool,
) -> Result<(), CliError> {
    let dir = config.journal_dir();
    let mut tail =
        crate::journal::tail::Tail::after(&dir, 0).map_err(|source| AuditError::Tail {
            dir: dir.clone(),
            source,
        })?;
    loop {
        let batch = tail.read(1000).map_err(|source| AuditError::Read {
            path: dir.clone(),
            source,
        })?;
        if batch.is_empty() {
            return Ok(());
        }
        for (record, line) in batch {
            if since.is_some_and(|t| record.ts < t) {
                continue;
            }
            if let Some(prefix) = event
                && !(record.event == prefix || record.event.starts_with(&format!("{prefix}.")))
            {
                continue;
            }
            if json {
                crate::outln!("{line}")?;
            } else {
                let actor = match (&record.actor.role, &record.actor.claimed) {
                    (Some(role), _) => {
                        format!("{}:{} ({role})", record.actor.kind, record.actor.name)
                    }
                    (None, Some(claimed)) => format!(
                        "{}:{} (claims {claimed})",
                        record.actor.kind, record.actor.name
                    ),
                    (None, None) if record.actor.kind == record.actor.name => {
                        record.actor.kind.clone()
                    }
                    (None, None) => format!("{}:{}", record.actor.kind, record.actor.name),
                };
                crate::outln!(
                    "{} {:>6} {:<24} {:<24} {}",
                    record.ts.format("%Y-%m-%dT%H:%M:%S%.3fZ"),
                    record.seq,
                    record.event,
                    actor,
                    record.data
                )?;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_a_duration_or_a_time_and_names_what_it_got() {
        let t = parse_since("2026-01-02T03:04:05Z").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-01-02T03:04:05+00:00");
        let ago = Utc::now() - parse_since("2h").unwrap();
        assert!((ago.num_minutes() - 120).abs() <= 1, "{ago}");
        match parse_since("yesterday") {
            Err(e @ SinceError::Unparsable { .. }) => assert_eq!(
                e.to_string(),
                "`yesterday` is neither a duration (2h, 30m) nor an RFC 3339 time"
            ),
            other => panic!("expected Unparsable, got {other:?}"),
        }
    }
}
