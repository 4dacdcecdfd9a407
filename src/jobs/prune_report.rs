//! A prune's outcome as vigil prints it (`vigil prune --json`) and serves
//! it (`POST /api/v1/jobs/{job}/prune`): one camelCase shape for both.
//! The journal's `prune.*` payloads are a storage format of their own and
//! are built elsewhere.

use serde::Serialize;

use super::prune::PruneOutcome;
use crate::core::retention::Plan;

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PruneReport<'a> {
    pub job: &'a str,
    pub dry_run: bool,
    pub plan: &'a Plan,
    /// What the plan frees (nothing when it was refused).
    pub freed_bytes: u64,
    /// Backup ids deleted (none on a dry run).
    pub deleted: Vec<&'a str>,
    /// Uncommitted leftovers removed.
    pub collected: &'a [String],
    /// Leftovers still inside `orphan_grace`, left alone.
    pub young_leftovers: &'a [String],
    pub temp_files: u64,
    pub temp_bytes: u64,
    pub skipped: Vec<Passed<'a>>,
    pub damaged: Vec<Passed<'a>>,
    /// WAL files deleted (physical jobs; the plan's `wal` says why).
    pub wal_deleted: &'a [String],
}

/// A backup prune left alone, and why.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Passed<'a> {
    pub backup_id: &'a str,
    pub reason: &'a str,
}

impl<'a> PruneReport<'a> {
    pub fn new(job: &'a str, o: &'a PruneOutcome) -> PruneReport<'a> {
        let passed = |list: &'a [(String, String)]| {
            list.iter()
                .map(|(id, why)| Passed {
                    backup_id: id,
                    reason: why,
                })
                .collect()
        };
        PruneReport {
            job,
            dry_run: o.dry_run,
            plan: &o.plan,
            freed_bytes: o.plan.freed_bytes(),
            deleted: o.deleted.iter().map(|(id, _)| id.as_str()).collect(),
            collected: &o.collected,
            young_leftovers: &o.young_leftovers,
            temp_files: o.temp.files,
            temp_bytes: o.temp.bytes,
            skipped: passed(&o.skipped),
            damaged: passed(&o.damaged),
            wal_deleted: &o.wal_deleted,
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;
    use crate::core::ids::BackupId;
    use crate::core::retention::Decision;
    use crate::repo::TempCollected;

    #[test]
    fn the_report_is_camel_case_and_counts_what_the_plan_frees() {
        let finished = Utc.with_ymd_and_hms(2026, 11, 27, 7, 0, 0).unwrap();
        let decision = |keep: bool| Decision {
            id: BackupId::at(finished, u32::from(!keep)),
            finished_at: finished,
            stored_bytes: 100,
            keep,
            reasons: if keep {
                vec!["keep_last".into()]
            } else {
                vec![]
            },
        };
        let outcome = PruneOutcome {
            plan: Plan {
                decisions: vec![decision(true), decision(false)],
                refused: None,
                wal: None,
            },
            deleted: vec![("20261127T070000Z-1".into(), 100)],
            collected: vec![],
            young_leftovers: vec!["20261127T080000Z".into()],
            skipped: vec![("x".into(), "changed".into())],
            damaged: vec![],
            temp: TempCollected { files: 2, bytes: 7 },
            wal_deleted: vec![],
            dry_run: false,
        };
        let v = serde_json::to_value(PruneReport::new("orders", &outcome)).unwrap();
        assert_eq!(v["dryRun"], false);
        assert_eq!(v["freedBytes"], 100);
        assert_eq!(v["youngLeftovers"][0], "20261127T080000Z");
        assert_eq!(v["tempFiles"], 2);
        assert_eq!(v["skipped"][0]["backupId"], "x");
        let forgotten = &v["plan"]["decisions"][1];
        assert_eq!(forgotten["backupId"], "20261127T070000Z-1");
        assert_eq!(forgotten["storedBytes"], 100);
        assert_eq!(forgotten["finishedAt"], "2026-11-27T07:00:00Z");
    }
}
