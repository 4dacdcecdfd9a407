//! `/metrics` for `postgres-physical` jobs: the WAL archive and the
//! recoverability window, as `<job>:wal` last read them. Families appear
//! once such a job has been checked (no zeros claiming "never archived"
//! for jobs that archive nothing).

use chrono::{DateTime, Utc};
use prometheus_client::encoding::DescriptorEncoder;

use super::metrics::{Labels, gauges};
use crate::core::ids::JobName;
use crate::state::{Shared, WalState};

/// Name, help, and the value of one job's state.
type Family = (&'static str, &'static str, fn(&WalState) -> f64);

fn ts(t: Option<DateTime<Utc>>) -> f64 {
    t.map_or(0.0, |t| t.timestamp_millis() as f64 / 1000.0)
}

pub(super) fn encode(enc: &mut DescriptorEncoder, shared: &Shared) -> std::fmt::Result {
    let jobs = shared.jobs.snapshot();
    let wal: Vec<(&JobName, &WalState)> = jobs
        .iter()
        .filter_map(|(j, s)| s.wal.as_ref().map(|w| (j, w)))
        .collect();
    if wal.is_empty() {
        return Ok(());
    }
    let label = |name: &JobName| -> Labels { vec![("backup_job", name.to_string())] };
    let families: [Family; 4] = [
        (
            "vigil_wal_last_archived_timestamp_seconds",
            "When the newest archived WAL segment reached the repository (0: none).",
            |w| ts(w.last_archived),
        ),
        (
            "vigil_pitr_window_start_timestamp_seconds",
            "Earliest time a point-in-time restore can reach (0: nothing restorable).",
            |w| ts(w.window.as_ref().map(|w| w.start)),
        ),
        (
            "vigil_pitr_window_end_timestamp_seconds",
            "Latest time a point-in-time restore can reach, approximately (0: nothing restorable).",
            |w| ts(w.window.as_ref().map(|w| w.end)),
        ),
        (
            "vigil_wal_gaps",
            "Gaps in the WAL chains of the kept base backups.",
            |w| w.gaps as f64,
        ),
    ];
    for (name, help, value) in families {
        gauges(
            enc,
            name,
            help,
            wal.iter().map(|(j, w)| (label(j), value(w))),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::state::{Shared, WalState};

    use super::super::metrics::classic_text_for_tests as text;

    #[test]
    fn physical_jobs_export_the_archive_and_the_window() {
        let shared = Shared::new("t".into(), None);
        shared.jobs.update("orders", |s| s.runs_total = 1);
        assert!(!text(shared.clone()).contains("vigil_wal_"));
        let start = chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        shared.jobs.update("pg", |s| {
            s.wal = Some(WalState {
                last_archived: Some(start + chrono::Duration::seconds(60)),
                window: Some(crate::core::wal_chain::Window {
                    start,
                    end: start + chrono::Duration::seconds(60),
                    oldest_backup: "b1".into(),
                }),
                gaps: 0,
            })
        });
        let t = text(shared);
        assert!(
            t.contains("vigil_wal_last_archived_timestamp_seconds{backup_job=\"pg\"} 1700000060"),
            "{t}"
        );
        assert!(
            t.contains("vigil_pitr_window_start_timestamp_seconds{backup_job=\"pg\"} 1700000000"),
            "{t}"
        );
        assert!(
            t.contains("vigil_pitr_window_end_timestamp_seconds{backup_job=\"pg\"} 1700000060"),
            "{t}"
        );
        assert!(t.contains("vigil_wal_gaps{backup_job=\"pg\"} 0"), "{t}");
        assert!(!t.contains("vigil_wal_gaps{backup_job=\"orders\"}"), "{t}");
    }
}
