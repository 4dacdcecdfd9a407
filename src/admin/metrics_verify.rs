//! `/metrics` for verification, from each job's verification record on
//! the board. Families appear once a job has a record (a job never set up
//! for verification exports no zero claiming "never verified").

use chrono::{DateTime, Utc};
use prometheus_client::encoding::DescriptorEncoder;

use super::metrics::{Labels, gauges};
use crate::core::ids::JobName;
use crate::core::proofs::VerifyRecord;
use crate::state::Shared;

/// Name, help, and the value of one job's record.
type Family = (&'static str, &'static str, fn(&VerifyRecord) -> f64);

fn ts(t: Option<DateTime<Utc>>) -> f64 {
    t.map_or(0.0, |t| t.timestamp_millis() as f64 / 1000.0)
}

pub(super) fn encode(enc: &mut DescriptorEncoder, shared: &Shared) -> std::fmt::Result {
    let jobs = shared.jobs.snapshot();
    let records: Vec<(&JobName, &VerifyRecord)> = jobs
        .iter()
        .filter_map(|(j, s)| s.verify.as_ref().map(|r| (j, r)))
        .collect();
    if records.is_empty() {
        return Ok(());
    }
    let label = |name: &JobName| -> Labels { vec![("backup_job", name.to_string())] };
    let families: [Family; 3] = [
        (
            "vigil_verify_last_success_timestamp_seconds",
            "When the last verification that found nothing bad finished (0: never).",
            |r| ts(r.last_success),
        ),
        (
            "vigil_verify_last_run_bytes_read",
            "Stored bytes the last verification read.",
            |r| r.last_run.as_ref().map_or(0.0, |run| run.bytes_read as f64),
        ),
        (
            "vigil_verify_last_run_success",
            "Whether the last verification found nothing bad and could run (1) or not (0).",
            |r| f64::from(u8::from(r.last_run.as_ref().is_some_and(|run| run.ok))),
        ),
    ];
    gauges(
        enc,
        "vigil_verify_bad_objects",
        "Objects that did not read back as stored, not resolved yet.",
        records
            .iter()
            .map(|(j, r)| (label(j), i64::try_from(r.bad.len()).unwrap_or(i64::MAX))),
    )?;
    for (name, help, value) in families {
        gauges(
            enc,
            name,
            help,
            records.iter().map(|(j, r)| (label(j), value(r))),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::core::proofs::{BadFinding, BadObject, VerifyRecord};
    use crate::state::Shared;

    use super::super::metrics::classic_text_for_tests as text;

    #[test]
    fn jobs_with_a_record_export_last_success_and_bad_objects() {
        let shared = Shared::new("t".into(), None);
        shared.jobs.update("orders", |s| s.runs_total = 1);
        assert!(!text(shared.clone()).contains("vigil_verify_"));
        let at = chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let mut record = VerifyRecord {
            last_success: Some(at),
            ..Default::default()
        };
        record.bad.push(BadFinding {
            object: BadObject {
                backup_id: "b".into(),
                object: "o".into(),
                expected_sha256: None,
                found_sha256: None,
                error: "x".into(),
            },
            found_at: at,
        });
        shared.jobs.update("pg", |s| s.verify = Some(record));
        let t = text(shared);
        assert!(
            t.contains("vigil_verify_last_success_timestamp_seconds{backup_job=\"pg\"} 1700000000"),
            "{t}"
        );
        assert!(
            t.contains("vigil_verify_bad_objects{backup_job=\"pg\"} 1"),
            "{t}"
        );
        assert!(
            !t.contains("vigil_verify_bad_objects{backup_job=\"orders\"}"),
            "{t}"
        );
    }
}
