//! Scheduled verification's decisions, without I/O: which objects one run
//! reads within its byte budget ([`plan`]), and how a run's findings fold
//! into the job's [`VerifyRecord`] ([`fold`]): good reads move the cursor,
//! bad objects stay until resolved, backups that are gone drop out.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::proofs::{BadFinding, BadObject, VerifyRecord, VerifyRun, object_key};

/// One object of a committed backup, as planning sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredObject {
    pub backup_id: String,
    /// When its backup finished (older backups are read first).
    pub finished_at: DateTime<Utc>,
    pub object: String,
    pub stored_bytes: u64,
}

impl StoredObject {
    pub fn key(&self) -> String {
        object_key(&self.backup_id, &self.object)
    }
}

/// How much one run reads and how long a good read counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Stored bytes per run; `None`: no limit.
    pub max_bytes: Option<u64>,
    pub reverify_after: Duration,
}

fn finding_key(b: &BadFinding) -> String {
    object_key(&b.object.backup_id, &b.object.object)
}

/// When `key` was last read, good (the cursor) or bad (a finding).
fn last_read(record: &VerifyRecord, key: &str) -> Option<DateTime<Utc>> {
    let bad = record
        .bad
        .iter()
        .filter(|b| object_key(&b.object.backup_id, &b.object.object) == key)
        .map(|b| b.found_at)
        .max();
    record.verified.get(key).copied().max(bad)
}

/// The objects one run reads, in order: those never read first (oldest
/// backups first), then those read longest ago; objects read within
/// `reverify_after` are skipped. Stops before the budget is exceeded,
/// but always takes the first object due, so a budget smaller than one
/// object still progresses.
pub fn plan<'a>(
    objects: &'a [StoredObject],
    record: &VerifyRecord,
    budget: &Budget,
    now: DateTime<Utc>,
) -> Vec<&'a StoredObject> {
    let fresh_after = chrono::Duration::from_std(budget.reverify_after)
        .ok()
        .and_then(|d| now.checked_sub_signed(d))
        .unwrap_or(DateTime::<Utc>::MIN_UTC);
    let evidence: BTreeSet<String> = record.evidence.iter().map(finding_key).collect();
    let mut due: Vec<(Option<DateTime<Utc>>, &StoredObject)> = objects
        .iter()
        .filter(|o| !evidence.contains(&o.key()))
        .map(|o| (last_read(record, &o.key()), o))
        .filter(|(read, _)| read.is_none_or(|t| t <= fresh_after))
        .collect();
    // `None` sorts first: never read before read longest ago.
    due.sort_by(|(ra, a), (rb, b)| {
        ra.cmp(rb)
            .then(a.finished_at.cmp(&b.finished_at))
            .then(a.backup_id.cmp(&b.backup_id))
            .then(a.object.cmp(&b.object))
    });
    let mut chosen = Vec::new();
    let mut bytes = 0u64;
    for (_, object) in due {
        let total = bytes.saturating_add(object.stored_bytes);
        if let Some(max) = budget.max_bytes
            && total > max
            && !chosen.is_empty()
        {
            break;
        }
        bytes = total;
        chosen.push(object);
    }
    chosen
}

/// A committed backup as the record's upkeep sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptBackup {
    pub id: String,
    pub finished_at: DateTime<Utc>,
    pub objects: Vec<String>,
    /// Kept as evidence (`vigil pin`).
    pub pinned: bool,
}

/// What one run found.
#[derive(Debug, Clone, PartialEq)]
pub struct RunFindings {
    pub run: VerifyRun,
    /// Keys (`<backup id>/<object>`) of the objects that read good.
    pub good: Vec<String>,
    pub bad: Vec<BadObject>,
}

/// Folds a run into `record`: the run itself, the cursor (good reads
/// stamped with the run's end, bad reads forgotten), new findings (a
/// finding already known keeps its first time), then the upkeep against
/// what the repository holds now (`kept`, oldest first is not required).
pub fn fold(record: &mut VerifyRecord, found: RunFindings, kept: &[KeptBackup]) {
    let at = found.run.finished_at;
    if found.run.ok {
        record.last_success = Some(at);
    }
    record.last_run = Some(found.run);
    for key in found.good {
        record.bad.retain(|b| finding_key(b) != key);
        record.evidence.retain(|b| finding_key(b) != key);
        record.verified.insert(key, at);
    }
    for object in found.bad {
        let key = object_key(&object.backup_id, &object.object);
        record.verified.remove(&key);
        let known = record
            .bad
            .iter_mut()
            .chain(record.evidence.iter_mut())
            .find(|b| finding_key(b) == key);
        match known {
            Some(finding) => finding.object = object,
            None => record.bad.push(BadFinding {
                object,
                found_at: at,
            }),
        }
    }
    upkeep(record, kept);
}

/// Drops what no longer applies: cursor entries of objects no kept backup
/// holds, findings of removed backups; moves findings of pinned backups
/// to `evidence` once a newer backup reads all good (and back when the
/// pin goes); then notes the oldest backup not fully read.
pub fn upkeep(record: &mut VerifyRecord, kept: &[KeptBackup]) {
    let keys: BTreeSet<String> = kept
        .iter()
        .flat_map(|b| b.objects.iter().map(|o| object_key(&b.id, o)))
        .collect();
    record.verified.retain(|key, _| keys.contains(key));
    let by_id: BTreeMap<&str, &KeptBackup> = kept.iter().map(|b| (b.id.as_str(), b)).collect();
    let exists = |f: &BadFinding| by_id.contains_key(f.object.backup_id.as_str());
    record.bad.retain(exists);
    record.evidence.retain(exists);
    let pinned = |f: &BadFinding| {
        by_id
            .get(f.object.backup_id.as_str())
            .is_some_and(|b| b.pinned)
    };
    let (still, unpinned): (Vec<_>, Vec<_>) = std::mem::take(&mut record.evidence)
        .into_iter()
        .partition(pinned);
    record.evidence = still;
    record.bad.extend(unpinned);
    let with_bad: BTreeSet<String> = record
        .bad
        .iter()
        .chain(&record.evidence)
        .map(|b| b.object.backup_id.clone())
        .collect();
    let all_good = |b: &KeptBackup| {
        !with_bad.contains(&b.id)
            && b.objects
                .iter()
                .all(|o| record.verified.contains_key(&object_key(&b.id, o)))
    };
    let newest_good = kept
        .iter()
        .filter(|b| all_good(b))
        .map(|b| b.finished_at)
        .max();
    let resolved = |f: &BadFinding| {
        by_id
            .get(f.object.backup_id.as_str())
            .is_some_and(|b| b.pinned && newest_good.is_some_and(|t| t > b.finished_at))
    };
    let (now_evidence, bad): (Vec<_>, Vec<_>) = std::mem::take(&mut record.bad)
        .into_iter()
        .partition(resolved);
    record.bad = bad;
    record.evidence.extend(now_evidence);
    let bad_keys: BTreeSet<String> = record
        .bad
        .iter()
        .chain(&record.evidence)
        .map(finding_key)
        .collect();
    record.oldest_unverified = kept
        .iter()
        .filter(|b| {
            b.objects.iter().any(|o| {
                let key = object_key(&b.id, o);
                !record.verified.contains_key(&key) && !bad_keys.contains(&key)
            })
        })
        .map(|b| b.finished_at)
        .min();
}

/// Objects overdue at `now`: read good longer ago than `limit`, plus
/// whether a backup older than `limit` holds objects never read.
pub fn overdue(record: &VerifyRecord, limit: Duration, now: DateTime<Utc>) -> (usize, bool) {
    let Some(since) = chrono::Duration::from_std(limit)
        .ok()
        .and_then(|d| now.checked_sub_signed(d))
    else {
        return (0, false);
    };
    let stale = record.verified.values().filter(|t| **t < since).count();
    let never = record.oldest_unverified.is_some_and(|t| t < since);
    (stale, never)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn t0() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn hours(n: i64) -> chrono::Duration {
        chrono::Duration::hours(n)
    }

    /// `backups` backups an hour apart with `per` objects of `size` bytes.
    fn objects(backups: usize, per: usize, size: u64) -> Vec<StoredObject> {
        (0..backups)
            .flat_map(|b| {
                (0..per).map(move |o| StoredObject {
                    backup_id: format!("b{b:03}"),
                    finished_at: t0() + hours(b as i64),
                    object: format!("o{o}"),
                    stored_bytes: size,
                })
            })
            .collect()
    }

    fn run(at: DateTime<Utc>, ok: bool) -> VerifyRun {
        VerifyRun {
            started_at: at,
            finished_at: at,
            trigger: "schedule".into(),
            ok,
            content_checked: true,
            objects: 0,
            bytes_read: 0,
            bad_objects: 0,
            error: None,
            wal_gaps: 0,
        }
    }

    fn kept(objects: &[StoredObject], pinned: &[&str]) -> Vec<KeptBackup> {
        let mut by: BTreeMap<String, KeptBackup> = BTreeMap::new();
        for o in objects {
            by.entry(o.backup_id.clone())
                .or_insert_with(|| KeptBackup {
                    id: o.backup_id.clone(),
                    finished_at: o.finished_at,
                    objects: vec![],
                    pinned: pinned.contains(&o.backup_id.as_str()),
                })
                .objects
                .push(o.object.clone());
        }
        by.into_values().collect()
    }

    fn good_run(
        record: &mut VerifyRecord,
        read: &[&StoredObject],
        all: &[StoredObject],
        at: DateTime<Utc>,
    ) {
        let found = RunFindings {
            run: run(at, true),
            good: read.iter().map(|o| o.key()).collect(),
            bad: vec![],
        };
        fold(record, found, &kept(all, &[]));
    }

    #[test]
    fn never_read_objects_come_first_oldest_backup_first_and_the_budget_stops_the_run() {
        let all = objects(3, 2, 100);
        let budget = Budget {
            max_bytes: Some(250),
            reverify_after: Duration::from_secs(3600),
        };
        let mut record = VerifyRecord::default();
        let first: Vec<String> = plan(&all, &record, &budget, t0())
            .iter()
            .map(|o| o.key())
            .collect();
        assert_eq!(first, ["b000/o0", "b000/o1"], "250 bytes hold two of 100");
        let read = plan(&all, &record, &budget, t0());
        good_run(&mut record, &read, &all, t0());
        let second: Vec<String> = plan(&all, &record, &budget, t0())
            .iter()
            .map(|o| o.key())
            .collect();
        assert_eq!(second, ["b001/o0", "b001/o1"]);
    }

    #[test]
    fn a_budget_below_one_object_still_reads_one() {
        let all = objects(1, 2, 1_000);
        let budget = Budget {
            max_bytes: Some(1),
            reverify_after: Duration::from_secs(3600),
        };
        assert_eq!(plan(&all, &VerifyRecord::default(), &budget, t0()).len(), 1);
    }

    #[test]
    fn objects_read_within_reverify_after_are_skipped_then_due_longest_ago_first() {
        let all = objects(2, 1, 10);
        let budget = Budget {
            max_bytes: None,
            reverify_after: Duration::from_secs(24 * 3600),
        };
        let mut record = VerifyRecord::default();
        record.verified.insert("b000/o0".into(), t0() + hours(2));
        record.verified.insert("b001/o0".into(), t0() + hours(1));
        assert!(plan(&all, &record, &budget, t0() + hours(20)).is_empty());
        let due: Vec<String> = plan(&all, &record, &budget, t0() + hours(26))
            .iter()
            .map(|o| o.key())
            .collect();
        assert_eq!(due, ["b001/o0", "b000/o0"], "read longest ago first");
    }

    #[test]
    fn a_bad_object_stays_until_its_backup_is_removed_or_pinned_with_a_newer_good_one() {
        let all = objects(2, 1, 10);
        let mut record = VerifyRecord::default();
        let bad = BadObject {
            backup_id: "b000".into(),
            object: "o0".into(),
            expected_sha256: Some("aa".into()),
            found_sha256: Some("bb".into()),
            error: "SHA-256 mismatch".into(),
        };
        let found = RunFindings {
            run: run(t0(), false),
            good: vec![],
            bad: vec![bad.clone()],
        };
        fold(&mut record, found, &kept(&all, &[]));
        assert_eq!(record.bad.len(), 1);
        assert_eq!(record.last_success, None);
        // A newer backup read good: not enough while the bad one is unpinned.
        let newer: Vec<&StoredObject> = all.iter().filter(|o| o.backup_id == "b001").collect();
        good_run(&mut record, &newer, &all, t0() + hours(1));
        assert_eq!(record.bad.len(), 1, "unpinned: still failing");
        assert_eq!(record.last_success, Some(t0() + hours(1)));
        // Pinned as evidence with a newer good backup: resolved, kept as
        // evidence and no longer planned; unpinned, it is bad again.
        let mut pinned = record.clone();
        upkeep(&mut pinned, &kept(&all, &["b000"]));
        assert!(pinned.bad.is_empty());
        assert_eq!(pinned.evidence.len(), 1);
        let budget = Budget {
            max_bytes: None,
            reverify_after: Duration::ZERO,
        };
        let planned: Vec<String> = plan(&all, &pinned, &budget, t0() + hours(9))
            .iter()
            .map(|o| o.key())
            .collect();
        assert_eq!(planned, ["b001/o0"], "evidence is not re-read");
        let mut unpinned = pinned.clone();
        upkeep(&mut unpinned, &kept(&all, &[]));
        assert_eq!((unpinned.bad.len(), unpinned.evidence.len()), (1, 0));
        // Pinned without a newer good backup: not resolved.
        let mut alone = record.clone();
        alone.verified.clear();
        upkeep(&mut alone, &kept(&all, &["b000"]));
        assert_eq!(alone.bad.len(), 1);
        // Removed: resolved, and its cursor entries go too.
        let remaining: Vec<StoredObject> = all[1..].to_vec();
        let mut removed = record.clone();
        upkeep(&mut removed, &kept(&remaining, &[]));
        assert!(removed.bad.is_empty());
        assert!(removed.verified.keys().all(|k| k.starts_with("b001/")));
        // Read good again: cleared, and the first time it was found is kept
        // while it stays bad.
        let again = RunFindings {
            run: run(t0() + hours(3), false),
            good: vec![],
            bad: vec![bad],
        };
        fold(&mut record, again, &kept(&all, &[]));
        assert_eq!(record.bad[0].found_at, t0());
        let healed: Vec<&StoredObject> = all.iter().filter(|o| o.backup_id == "b000").collect();
        good_run(&mut record, &healed, &all, t0() + hours(4));
        assert!(record.bad.is_empty());
    }

    #[test]
    fn overdue_counts_stale_reads_and_old_unread_backups() {
        let all = objects(2, 1, 10);
        let mut record = VerifyRecord::default();
        let first: Vec<&StoredObject> = all.iter().take(1).collect();
        good_run(&mut record, &first, &all, t0() + hours(2));
        assert_eq!(record.oldest_unverified, Some(t0() + hours(1)));
        let day = Duration::from_secs(86_400);
        assert_eq!(overdue(&record, day, t0() + hours(10)), (0, false));
        assert_eq!(overdue(&record, day, t0() + hours(26)), (0, true));
        assert_eq!(overdue(&record, day, t0() + hours(27)), (1, true));
    }

    proptest! {
        /// Over enough runs every object is read, and none is read twice
        /// before all have been read once (the run that reads the last
        /// unread ones may fill its budget with the longest-ago read).
        #[test]
        fn every_object_is_read_once_before_any_twice(
            sizes in proptest::collection::vec(1u64..5_000, 1..40),
            budget in 1u64..8_000,
        ) {
            let all: Vec<StoredObject> = sizes
                .iter()
                .enumerate()
                .map(|(i, size)| StoredObject {
                    backup_id: format!("b{:03}", i / 3),
                    finished_at: t0() + hours((i / 3) as i64),
                    object: format!("o{i}"),
                    stored_bytes: *size,
                })
                .collect();
            let budget = Budget { max_bytes: Some(budget), reverify_after: Duration::ZERO };
            let mut record = VerifyRecord::default();
            let mut seen: BTreeMap<String, u32> = BTreeMap::new();
            let mut at = t0() + hours(100);
            for _ in 0..all.len() {
                let read = plan(&all, &record, &budget, at);
                prop_assert!(!read.is_empty(), "every run progresses");
                let bytes: u64 = read.iter().map(|o| o.stored_bytes).sum();
                prop_assert!(read.len() == 1 || bytes <= budget.max_bytes.unwrap_or(u64::MAX));
                let covered = all
                    .iter()
                    .all(|a| seen.contains_key(&a.key()) || read.iter().any(|o| o.key() == a.key()));
                for o in &read {
                    let n = seen.entry(o.key()).or_default();
                    *n += 1;
                    prop_assert!(*n == 1 || covered, "{} read twice before all were read", o.key());
                }
                good_run(&mut record, &read, &all, at);
                at += chrono::Duration::seconds(1);
                if seen.len() == all.len() {
                    break;
                }
            }
            prop_assert_eq!(seen.len(), all.len(), "all read within {} runs", all.len());
        }
    }
}
