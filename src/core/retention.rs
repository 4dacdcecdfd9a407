//! The retention planner: which committed backups to keep and why.
//! Pure: no clock reads, no I/O; a separate step applies the plan.
//!
//! restic `forget` semantics: backups are walked newest first; each
//! `keep_<period>` rule keeps the newest backup of each of the last N
//! periods that have one; `keep_within` is measured from the newest
//! successful backup (not from the clock), so an outage never ages the last
//! good backups out. Periods are read in the job's time zone.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Datelike, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use super::ids::BackupId;

/// `[jobs.<name>.retention]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionPolicy {
    pub keep_last: Option<u32>,
    pub keep_hourly: Option<u32>,
    pub keep_daily: Option<u32>,
    pub keep_weekly: Option<u32>,
    pub keep_monthly: Option<u32>,
    pub keep_yearly: Option<u32>,
    #[serde(default, with = "humantime_serde")]
    pub keep_within: Option<Duration>,
    /// A floor: at least this many backups always remain.
    #[serde(default = "default_min_keep")]
    pub min_keep: u32,
    /// Prune even when the job's last run failed.
    #[serde(default)]
    pub prune_after_failure: bool,
    /// Prune after each successful backup (default), besides any schedule.
    #[serde(default = "default_true")]
    pub after_backup: bool,
    /// Uncommitted leftovers (no manifest) younger than this are left alone:
    /// they may belong to a backup still being written.
    #[serde(default = "default_orphan_grace", with = "humantime_serde")]
    pub orphan_grace: Duration,
    /// Also prune on this cron schedule (with seconds, in the job's zone)…
    pub schedule: Option<String>,
    /// …or at this interval.
    #[serde(default, with = "humantime_serde")]
    pub every: Option<Duration>,
}

fn default_orphan_grace() -> Duration {
    Duration::from_secs(24 * 3600)
}

fn default_min_keep() -> u32 {
    1
}

fn default_true() -> bool {
    true
}

impl Default for RetentionPolicy {
    fn default() -> Self {
        RetentionPolicy {
            keep_last: None,
            keep_hourly: None,
            keep_daily: None,
            keep_weekly: None,
            keep_monthly: None,
            keep_yearly: None,
            keep_within: None,
            min_keep: default_min_keep(),
            prune_after_failure: false,
            after_backup: true,
            orphan_grace: default_orphan_grace(),
            schedule: None,
            every: None,
        }
    }
}

impl RetentionPolicy {
    /// No rule at all: keep everything.
    pub fn is_empty(&self) -> bool {
        self.keep_last.is_none()
            && self.keep_hourly.is_none()
            && self.keep_daily.is_none()
            && self.keep_weekly.is_none()
            && self.keep_monthly.is_none()
            && self.keep_yearly.is_none()
            && self.keep_within.is_none()
    }
}

/// One committed backup as the planner sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub id: BackupId,
    /// The manifest's finish time: the only thing backups are ordered by.
    pub finished_at: DateTime<Utc>,
    pub stored_bytes: u64,
    pub pinned: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Decision {
    #[serde(rename = "backupId")]
    pub id: BackupId,
    pub finished_at: DateTime<Utc>,
    pub stored_bytes: u64,
    pub keep: bool,
    /// Why it is kept (empty when forgotten).
    pub reasons: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    /// Newest first.
    pub decisions: Vec<Decision>,
    /// Set when nothing may be deleted, with the reason.
    pub refused: Option<String>,
    /// Physical jobs: the WAL archive's part (set by the prune job).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wal: Option<super::wal_chain::WalPlan>,
}

impl Plan {
    pub fn forget(&self) -> impl Iterator<Item = &Decision> {
        self.decisions
            .iter()
            .filter(|d| !d.keep && self.refused.is_none())
    }

    pub fn freed_bytes(&self) -> u64 {
        // Saturating: sizes come from manifests, which may be damaged.
        self.forget()
            .fold(0u64, |sum, d| sum.saturating_add(d.stored_bytes))
    }
}

/// The label of the period a backup falls into (`2026-11-23`, `2026-W48`).
type BucketOf = fn(DateTime<Tz>) -> String;

/// What else the planner must know about the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct JobFacts {
    pub last_run: LastRun,
}

/// The outcome of the job's most recent backup run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LastRun {
    /// It succeeded, or there was none yet.
    #[default]
    Succeeded,
    Failed,
    /// The history could not be read (the catalog is down): never prune on a guess.
    Unknown,
}

/// Decides keep/forget for every committed backup. `now` is accepted for
/// the caller's symmetry but never read: windows anchor on the newest backup.
pub fn plan(
    policy: &RetentionPolicy,
    backups: &[Candidate],
    tz: Tz,
    facts: JobFacts,
    _now: DateTime<Utc>,
) -> Plan {
    let mut sorted: Vec<&Candidate> = backups.iter().collect();
    // Newest first; ties broken by id so the plan is deterministic.
    sorted.sort_by(|a, b| {
        b.finished_at
            .cmp(&a.finished_at)
            .then_with(|| b.id.cmp(&a.id))
    });
    let mut reasons: Vec<Vec<String>> = vec![Vec::new(); sorted.len()];

    if policy.is_empty() {
        for r in &mut reasons {
            r.push("no retention policy".into());
        }
    } else {
        if let Some(newest) = sorted.first() {
            reasons[0].push("newest successful".into());
            if let Some(within) = policy.keep_within {
                let window = chrono::Duration::from_std(within).unwrap_or(chrono::Duration::MAX);
                let label = format!("within {}", humantime::format_duration(within));
                for (i, b) in sorted.iter().enumerate() {
                    if newest.finished_at - b.finished_at <= window {
                        reasons[i].push(label.clone());
                    }
                }
            }
        }
        if let Some(n) = policy.keep_last {
            for r in reasons.iter_mut().take(n as usize) {
                r.push("last".into());
            }
        }
        let rules: [(Option<u32>, &str, BucketOf); 5] = [
            (policy.keep_hourly, "hourly", |t| {
                t.format("%Y-%m-%d %H:00").to_string()
            }),
            (policy.keep_daily, "daily", |t| {
                t.format("%Y-%m-%d").to_string()
            }),
            (policy.keep_weekly, "weekly", |t| {
                let w = t.iso_week();
                format!("{}-W{:02}", w.year(), w.week())
            }),
            (policy.keep_monthly, "monthly", |t| {
                t.format("%Y-%m").to_string()
            }),
            (policy.keep_yearly, "yearly", |t| t.year().to_string()),
        ];
        for (count, name, bucket_of) in rules {
            let Some(count) = count else { continue };
            let mut kept = 0u32;
            let mut last_bucket: Option<String> = None;
            for (i, b) in sorted.iter().enumerate() {
                if kept >= count {
                    break;
                }
                let bucket = bucket_of(b.finished_at.with_timezone(&tz));
                if last_bucket.as_ref() != Some(&bucket) {
                    reasons[i].push(format!("{name} {bucket}"));
                    last_bucket = Some(bucket);
                    kept += 1;
                }
            }
        }
    }
    for (i, b) in sorted.iter().enumerate() {
        if b.pinned {
            reasons[i].push("pinned".into());
        }
    }
    // The floor: the newest backups not yet kept, until min_keep remain.
    let mut kept = reasons.iter().filter(|r| !r.is_empty()).count();
    for r in reasons.iter_mut() {
        if kept >= policy.min_keep as usize {
            break;
        }
        if r.is_empty() {
            r.push("min_keep".into());
            kept += 1;
        }
    }

    let decisions: Vec<Decision> = sorted
        .iter()
        .zip(reasons)
        .map(|(b, reasons)| Decision {
            id: b.id.clone(),
            finished_at: b.finished_at,
            stored_bytes: b.stored_bytes,
            keep: !reasons.is_empty(),
            reasons,
        })
        .collect();

    let forgets = decisions.iter().filter(|d| !d.keep).count();
    let refused = if forgets == 0 {
        None
    } else {
        history_refusal(policy, facts.last_run).or_else(|| {
            (forgets == decisions.len())
                .then(|| "the plan would delete every backup; refused".to_owned())
        })
    };
    Plan {
        decisions,
        refused,
        wal: None,
    }
}

/// Why the job's run history forbids deleting anything, if it does.
fn history_refusal(policy: &RetentionPolicy, last_run: LastRun) -> Option<String> {
    if policy.prune_after_failure {
        return None;
    }
    let why = match last_run {
        LastRun::Succeeded => return None,
        LastRun::Failed => "the job's last run failed: nothing is pruned until a backup succeeds",
        LastRun::Unknown => {
            "the outcome of the job's last run is unknown (its history in the catalog could not be read): nothing is pruned on a guess"
        }
    };
    Some(format!(
        "{why} (set prune_after_failure = true to override)"
    ))
}

/// Reasons per id, for tests and the CLI.
pub fn reasons_by_id(plan: &Plan) -> BTreeMap<BackupId, Vec<String>> {
    plan.decisions
        .iter()
        .map(|d| (d.id.clone(), d.reasons.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    /// One backup a day at 02:30 UTC for `days` days up to 2026-11-23.
    fn daily(days: i64) -> Vec<Candidate> {
        (0..days)
            .map(|i| {
                let t = at("2026-11-23T02:30:00Z") - chrono::Duration::days(i);
                Candidate {
                    id: t.format("%Y%m%dT%H%M%SZ").to_string().into(),
                    finished_at: t,
                    stored_bytes: 100,
                    pinned: false,
                }
            })
            .collect()
    }

    fn kept(plan: &Plan) -> Vec<String> {
        plan.decisions
            .iter()
            .filter(|d| d.keep)
            .map(|d| d.id.get(..8).unwrap_or(&d.id).to_string())
            .collect()
    }

    fn run(policy: RetentionPolicy, backups: &[Candidate]) -> Plan {
        plan(
            &policy,
            backups,
            Tz::UTC,
            JobFacts::default(),
            at("2026-11-23T12:00:00Z"),
        )
    }

    #[test]
    fn empty_policy_keeps_everything() {
        let p = run(RetentionPolicy::default(), &daily(5));
        assert!(
            p.decisions
                .iter()
                .all(|d| d.keep && d.reasons == ["no retention policy"])
        );
    }

    #[test]
    fn keep_last_and_newest() {
        let p = run(
            RetentionPolicy {
                keep_last: Some(2),
                min_keep: 1,
                ..Default::default()
            },
            &daily(5),
        );
        assert_eq!(kept(&p), ["20261123", "20261122"]);
        assert_eq!(p.decisions[0].reasons, ["newest successful", "last"]);
        assert_eq!(p.freed_bytes(), 300);
    }

    #[test]
    fn daily_weekly_monthly_buckets_keep_the_newest_of_each() {
        let p = run(
            RetentionPolicy {
                keep_daily: Some(3),
                keep_weekly: Some(3),
                keep_monthly: Some(2),
                min_keep: 1,
                ..Default::default()
            },
            &daily(60),
        );
        let reasons = reasons_by_id(&p);
        assert_eq!(
            reasons["20261123T023000Z"],
            [
                "newest successful",
                "daily 2026-11-23",
                "weekly 2026-W48",
                "monthly 2026-11"
            ]
        );
        assert_eq!(
            reasons["20261122T023000Z"],
            ["daily 2026-11-22", "weekly 2026-W47"]
        );
        assert_eq!(reasons["20261115T023000Z"], ["weekly 2026-W46"]);
        assert_eq!(reasons["20261031T023000Z"], ["monthly 2026-10"]);
        assert_eq!(
            kept(&p),
            ["20261123", "20261122", "20261121", "20261115", "20261031"]
        );
    }

    #[test]
    fn buckets_follow_the_job_time_zone() {
        // 23:30 UTC on the 22nd is already the 23rd in Tokyo.
        let b = |id: &str, t: &str| Candidate {
            id: id.into(),
            finished_at: at(t),
            stored_bytes: 1,
            pinned: false,
        };
        let backups = [
            b("a", "2026-11-22T23:30:00Z"),
            b("b", "2026-11-22T14:00:00Z"),
        ];
        let policy = RetentionPolicy {
            keep_daily: Some(2),
            min_keep: 1,
            ..Default::default()
        };
        let utc = plan(
            &policy,
            &backups,
            Tz::UTC,
            JobFacts::default(),
            at("2026-11-23T00:00:00Z"),
        );
        assert_eq!(kept(&utc), ["a"]);
        let tokyo = plan(
            &policy,
            &backups,
            chrono_tz::Asia::Tokyo,
            JobFacts::default(),
            at("2026-11-23T00:00:00Z"),
        );
        assert_eq!(kept(&tokyo), ["a", "b"]);
    }

    #[test]
    fn keep_within_anchors_on_the_newest_backup_not_the_clock() {
        let policy = RetentionPolicy {
            keep_within: Some(Duration::from_secs(3 * 86400)),
            min_keep: 1,
            ..Default::default()
        };
        let backups = daily(10);
        let now = plan(
            &policy,
            &backups,
            Tz::UTC,
            JobFacts::default(),
            at("2026-11-23T12:00:00Z"),
        );
        let years_later = plan(
            &policy,
            &backups,
            Tz::UTC,
            JobFacts::default(),
            at("2030-01-01T00:00:00Z"),
        );
        assert_eq!(now, years_later);
        assert_eq!(kept(&now), ["20261123", "20261122", "20261121", "20261120"]);
        assert!(
            now.decisions[1]
                .reasons
                .contains(&"within 3days".to_string())
        );
    }

    #[test]
    fn pins_min_keep_and_refusals() {
        let mut backups = daily(5);
        backups[4].pinned = true;
        let p = run(
            RetentionPolicy {
                keep_last: Some(1),
                min_keep: 3,
                ..Default::default()
            },
            &backups,
        );
        let reasons = reasons_by_id(&p);
        assert_eq!(reasons["20261119T023000Z"], ["pinned"]);
        assert_eq!(reasons["20261122T023000Z"], ["min_keep"]);
        assert_eq!(kept(&p), ["20261123", "20261122", "20261119"]);

        let failed = plan(
            &RetentionPolicy {
                keep_last: Some(1),
                ..Default::default()
            },
            &backups,
            Tz::UTC,
            JobFacts {
                last_run: LastRun::Failed,
            },
            at("2026-11-23T12:00:00Z"),
        );
        assert!(failed.refused.is_some());
        assert_eq!(failed.forget().count(), 0);
        // Unknown history (the catalog is down) refuses too, and says so.
        let unknown = plan(
            &RetentionPolicy {
                keep_last: Some(1),
                ..Default::default()
            },
            &backups,
            Tz::UTC,
            JobFacts {
                last_run: LastRun::Unknown,
            },
            at("2026-11-23T12:00:00Z"),
        );
        assert_eq!(unknown.forget().count(), 0);
        let why = unknown.refused.unwrap_or_default();
        assert!(why.contains("last run is unknown"), "{why}");
        let overridden = plan(
            &RetentionPolicy {
                keep_last: Some(1),
                prune_after_failure: true,
                ..Default::default()
            },
            &backups,
            Tz::UTC,
            JobFacts {
                last_run: LastRun::Failed,
            },
            at("2026-11-23T12:00:00Z"),
        );
        assert_eq!(overridden.forget().count(), 3);
    }

    #[test]
    fn ties_are_ordered_by_id_not_by_input_order() {
        let t = at("2026-11-23T02:30:00Z");
        let b = |id: &str| Candidate {
            id: id.into(),
            finished_at: t,
            stored_bytes: 1,
            pinned: false,
        };
        let policy = RetentionPolicy {
            keep_last: Some(1),
            ..Default::default()
        };
        let one = run(policy.clone(), &[b("x-1"), b("x-2")]);
        let two = run(policy, &[b("x-2"), b("x-1")]);
        assert_eq!(one, two);
    }

    fn arb_policy() -> impl Strategy<Value = RetentionPolicy> {
        let n = || proptest::option::of(0u32..6);
        (
            n(),
            n(),
            n(),
            n(),
            n(),
            n(),
            proptest::option::of(0u64..2_000_000),
            0u32..4,
        )
            .prop_map(
                |(last, hourly, daily, weekly, monthly, yearly, within, min_keep)| {
                    RetentionPolicy {
                        keep_last: last,
                        keep_hourly: hourly,
                        keep_daily: daily,
                        keep_weekly: weekly,
                        keep_monthly: monthly,
                        keep_yearly: yearly,
                        keep_within: within.map(Duration::from_secs),
                        min_keep,
                        ..RetentionPolicy::default()
                    }
                },
            )
    }

    fn arb_backups() -> impl Strategy<Value = Vec<Candidate>> {
        proptest::collection::vec((0i64..400 * 86400, any::<bool>(), 1u64..1000), 0..40).prop_map(
            |items| {
                items
                    .into_iter()
                    .enumerate()
                    .map(|(i, (offset, pinned, bytes))| Candidate {
                        id: format!("b{i:03}").into(),
                        finished_at: at("2025-01-01T00:00:00Z") + chrono::Duration::seconds(offset),
                        stored_bytes: bytes,
                        pinned: pinned && i % 7 == 0,
                    })
                    .collect()
            },
        )
    }

    proptest! {
        #[test]
        fn invariants(policy in arb_policy(), backups in arb_backups()) {
            let p = plan(&policy, &backups, Tz::UTC, JobFacts::default(), at("2026-11-23T00:00:00Z"));
            prop_assert_eq!(p.decisions.len(), backups.len());
            if let Some(newest) = p.decisions.first() {
                prop_assert!(newest.keep, "the newest backup is kept");
            }
            let kept: Vec<&Decision> = p.decisions.iter().filter(|d| d.keep).collect();
            prop_assert!(kept.len() >= (policy.min_keep as usize).min(backups.len()));
            for b in backups.iter().filter(|b| b.pinned) {
                prop_assert!(p.decisions.iter().any(|d| d.id == b.id && d.keep), "pinned kept");
            }
            for d in &p.decisions {
                prop_assert_eq!(d.keep, !d.reasons.is_empty(), "kept iff it has a reason");
            }
            // Planning again over the kept set forgets nothing more.
            let survivors: Vec<Candidate> = backups.iter().filter(|b| kept.iter().any(|d| d.id == b.id)).cloned().collect();
            let again = plan(&policy, &survivors, Tz::UTC, JobFacts::default(), at("2026-11-23T00:00:00Z"));
            prop_assert_eq!(again.forget().count(), 0);
        }

        #[test]
        fn a_failed_or_unknown_last_run_never_deletes(policy in arb_policy(), backups in arb_backups()) {
            for last_run in [LastRun::Failed, LastRun::Unknown] {
                let p = plan(&policy, &backups, Tz::UTC, JobFacts { last_run }, at("2026-11-23T00:00:00Z"));
                prop_assert_eq!(p.forget().count(), 0);
            }
        }
    }
}
