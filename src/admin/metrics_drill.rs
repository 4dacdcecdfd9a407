//! `/metrics` for restore drills: each drilled job's last success, last
//! RTO and last verdict, from the job board. Families appear once a job
//! has a drill on record (no zeros claiming "never drilled" for jobs
//! that do not drill).

use prometheus_client::encoding::DescriptorEncoder;

use super::metrics::{Labels, gauges};
use crate::core::ids::JobName;
use crate::core::proofs::{DrillRecord, DrillRun};
use crate::state::Shared;

/// Name, help, and one job's value (`None`: no sample for it).
type Family = (
    &'static str,
    &'static str,
    fn(&DrillRun, Option<&DrillRun>) -> Option<f64>,
);

pub(super) fn encode(enc: &mut DescriptorEncoder, shared: &Shared) -> std::fmt::Result {
    let jobs = shared.jobs.snapshot();
    let drilled: Vec<(&JobName, &DrillRun, Option<&DrillRun>)> = jobs
        .iter()
        .filter_map(|(j, s)| {
            let record: &DrillRecord = s.drill.as_ref()?;
            Some((j, record.last_run.as_ref()?, record.last_success.as_ref()))
        })
        .collect();
    if drilled.is_empty() {
        return Ok(());
    }
    let label = |name: &JobName| -> Labels { vec![("backup_job", name.to_string())] };
    let families: [Family; 3] = [
        (
            "vigil_drill_last_success_timestamp_seconds",
            "When the last restore drill that passed finished (0: none has).",
            |_, success| {
                Some(success.map_or(0.0, |s| s.finished_at.timestamp_millis() as f64 / 1000.0))
            },
        ),
        (
            "vigil_drill_duration_seconds",
            "The last passing restore drill's RTO: start of the restore to a database answering every check.",
            |_, success| success.and_then(|s| s.rto_seconds),
        ),
        (
            "vigil_drill_last_run_success",
            "Whether the last restore drill passed (1) or failed (0).",
            |last, _| Some(if last.ok { 1.0 } else { 0.0 }),
        ),
    ];
    for (name, help, value) in families {
        gauges(
            enc,
            name,
            help,
            drilled
                .iter()
                .filter_map(|(j, last, success)| Some((label(j), value(last, *success)?))),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::core::proofs::{DrillRecord, DrillRun};
    use crate::state::Shared;

    use super::super::metrics::classic_text_for_tests as text;

    #[test]
    fn drilled_jobs_export_their_last_drill() {
        let shared = Shared::new("t".into(), None);
        shared.jobs.update("files", |s| s.runs_total = 1);
        shared
            .jobs
            .update("idle", |s| s.drill = Some(DrillRecord::default()));
        assert!(!text(shared.clone()).contains("vigil_drill_"));
        let finished = chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let run = DrillRun {
            started_at: finished,
            finished_at: finished,
            trigger: "schedule".into(),
            ok: true,
            backup_id: Some("b1".into()),
            recovery_target: None,
            rto_seconds: Some(12.5),
            failed_query: None,
            error: None,
        };
        let mut record = DrillRecord::default();
        crate::jobs::drill::fold(&mut record, &run);
        shared.jobs.update("orders", |s| s.drill = Some(record));
        let t = text(shared);
        for line in [
            "vigil_drill_last_success_timestamp_seconds{backup_job=\"orders\"} 1700000000",
            "vigil_drill_duration_seconds{backup_job=\"orders\"} 12.5",
            "vigil_drill_last_run_success{backup_job=\"orders\"} 1",
        ] {
            assert!(t.contains(line), "{line}\n{t}");
        }
        assert!(
            !t.contains("vigil_drill_last_run_success{backup_job=\"idle\"}"),
            "{t}"
        );
    }
}
