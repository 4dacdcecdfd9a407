//! The WAL archive against the kept base backups: which WAL files retention
//! deletes (and why), where the chain from a backup to the newest segment
//! has gaps, and the recoverability window. Pure: the caller lists the
//! archive and reads the (small) timeline history files.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::Serialize;
use thiserror::Error;

use super::ids::BackupId;
use super::recovery::BaseBackup;
use super::wal::{Lsn, Segment, Timeline, WalFile};

/// One object of the WAL archive.
#[derive(Debug, Clone, PartialEq)]
pub struct ArchivedWal {
    pub file: WalFile,
    /// The object's path in the repository (what a deletion removes).
    pub path: String,
    /// When the storage says it was written (≈ when it was archived).
    pub last_modified: Option<DateTime<Utc>>,
}

/// A line of a timeline history file: `parent` ended at `switch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryEntry {
    pub parent: Timeline,
    pub switch: Lsn,
}

/// Each timeline's history (the content of `<tli>.history`).
pub type Histories = BTreeMap<Timeline, Vec<HistoryEntry>>;

#[derive(Debug, Error, PartialEq)]
#[error("timeline history line {line} is not `<parent timeline> <switch LSN> [reason]`: {text:?}")]
pub struct HistoryError {
    pub line: usize,
    pub text: String,
}

/// Parses a `.history` file as PostgreSQL writes it (comments start with `#`).
pub fn parse_history(text: &str) -> Result<Vec<HistoryEntry>, HistoryError> {
    let mut entries = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = || HistoryError {
            line: i + 1,
            text: raw.to_owned(),
        };
        let mut fields = line.split_whitespace();
        let parent = fields.next().and_then(|f| f.parse().ok()).ok_or_else(bad)?;
        let switch = fields.next().and_then(|f| f.parse().ok()).ok_or_else(bad)?;
        entries.push(HistoryEntry { parent, switch });
    }
    Ok(entries)
}

/// Histories read from segment names alone, for timelines whose `.history`
/// file is missing or unreadable (an encrypted repository without its
/// identity): timeline t branched from the next lower timeline archived,
/// at the first segment archived on t.
pub fn infer_histories(archive: &[ArchivedWal], known: &Histories, size: u64) -> Histories {
    let mut first: BTreeMap<Timeline, u64> = BTreeMap::new();
    for w in archive {
        if let WalFile::Segment(s) | WalFile::Partial(s) = w.file {
            let n = first.entry(s.timeline).or_insert(s.number);
            *n = (*n).min(s.number);
        }
    }
    let mut all = known.clone();
    let timelines: Vec<Timeline> = first.keys().copied().collect();
    for pair in timelines.windows(2) {
        let (parent, t) = (pair[0], pair[1]);
        if all.contains_key(&t) {
            continue;
        }
        let mut history = all.get(&parent).cloned().unwrap_or_default();
        let begin = Segment {
            timeline: t,
            number: first.get(&t).copied().unwrap_or(0),
        };
        history.push(HistoryEntry {
            parent,
            switch: begin.start_lsn(size),
        });
        all.insert(t, history);
    }
    all
}

/// One WAL file retention deletes.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WalDeletion {
    pub file: String,
    #[serde(skip)]
    pub path: String,
    pub reason: String,
}

/// Missing segments in a kept backup's chain, first and last inclusive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WalGap {
    pub backup_id: BackupId,
    pub first: String,
    pub last: String,
    pub missing: u64,
}

impl std::fmt::Display for WalGap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "WAL gap after base backup {}: {} segment(s) missing, {} to {}",
            self.backup_id, self.missing, self.first, self.last
        )
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WalPlan {
    pub delete: Vec<WalDeletion>,
    pub kept: usize,
    pub gaps: Vec<WalGap>,
}

/// The segment size the job's backups record (all of one cluster share it).
fn segment_size(kept: &[BaseBackup]) -> u64 {
    kept.iter()
        .map(|b| b.facts.wal_segment_size)
        .next()
        .unwrap_or(super::wal::DEFAULT_SEGMENT_SIZE)
}

/// The WAL files older than the oldest kept base backup's start segment,
/// per timeline (for timeline t, the backups on t or an older timeline
/// count); history files stay, `.backup`/`.partial` follow their segment.
/// Nothing is deleted when no base backup is kept.
pub fn plan(kept: &[BaseBackup], archive: &[ArchivedWal], histories: &Histories) -> WalPlan {
    let size = segment_size(kept);
    let mut delete = Vec::new();
    for wal in archive {
        let segment = match &wal.file {
            WalFile::History(_) => continue,
            WalFile::Segment(s) | WalFile::Partial(s) => *s,
            WalFile::BackupLabel { segment, .. } => *segment,
        };
        let Some(oldest) = oldest_for(kept, segment.timeline) else {
            continue;
        };
        let start = Segment::containing(oldest.facts.timeline, oldest.facts.start_lsn, size);
        if segment.number < start.number {
            delete.push(WalDeletion {
                file: wal.file.file_name(size),
                path: wal.path.clone(),
                reason: format!(
                    "older than the oldest kept base backup {} (finished {}): start {} on timeline {}",
                    oldest.id,
                    oldest.finished_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    oldest.facts.start_lsn,
                    oldest.facts.timeline
                ),
            });
        }
    }
    let gaps = kept
        .iter()
        .flat_map(|b| reach(b, archive, histories, size).gaps)
        .collect();
    WalPlan {
        kept: archive.len() - delete.len(),
        delete,
        gaps,
    }
}

/// The kept backup with the lowest start LSN among those on `timeline` or
/// an older one (all kept backups when none is).
fn oldest_for(kept: &[BaseBackup], timeline: Timeline) -> Option<&BaseBackup> {
    kept.iter()
        .filter(|b| b.facts.timeline <= timeline)
        .min_by_key(|b| b.facts.start_lsn)
        .or_else(|| kept.iter().min_by_key(|b| b.facts.start_lsn))
}

/// How far one backup's chain reaches without a gap.
#[derive(Debug, Clone, PartialEq)]
pub struct Reach {
    pub gaps: Vec<WalGap>,
    /// The last segment reached from the backup's start without a gap.
    pub contiguous_to: Option<Segment>,
    /// Whether replay gets past the backup's stop LSN (it is restorable).
    pub consistent: bool,
}

/// The timeline the backup's chain ends on: the newest one branching off
/// the backup's timeline after the backup started (or its own).
fn final_timeline(b: &BaseBackup, known: &BTreeSet<Timeline>, histories: &Histories) -> Timeline {
    known
        .iter()
        .rev()
        .copied()
        .find(|t| {
            *t == b.facts.timeline
                || histories.get(t).is_some_and(|h| {
                    h.iter()
                        .any(|e| e.parent == b.facts.timeline && e.switch > b.facts.start_lsn)
                })
        })
        .unwrap_or(b.facts.timeline)
}

/// (timeline, first segment number) in order, for the chain ending on `last`.
fn chain(last: Timeline, histories: &Histories, size: u64) -> Vec<(Timeline, u64)> {
    let mut begins = Vec::new();
    let mut begin = 0;
    for e in histories.get(&last).into_iter().flatten() {
        begins.push((e.parent, begin));
        begin = Segment::containing(e.parent, e.switch, size).number;
    }
    begins.push((last, begin));
    begins
}

/// The timeline PostgreSQL reads segment `n` from on this chain.
fn timeline_of(chain: &[(Timeline, u64)], n: u64) -> Timeline {
    chain
        .iter()
        .rev()
        .find(|(_, begin)| *begin <= n)
        .or(chain.first())
        .map_or(1, |(t, _)| *t)
}

/// Walks one backup's chain from its start segment to the newest segment.
pub fn reach(b: &BaseBackup, archive: &[ArchivedWal], histories: &Histories, size: u64) -> Reach {
    let present: BTreeSet<Segment> = archive
        .iter()
        .filter_map(|w| match w.file {
            WalFile::Segment(s) => Some(s),
            _ => None,
        })
        .collect();
    let known: BTreeSet<Timeline> = archive.iter().map(|w| w.file.timeline()).collect();
    let chain = chain(final_timeline(b, &known, histories), histories, size);
    let start = Segment::containing(b.facts.timeline, b.facts.start_lsn, size).number;
    let stop = Segment::containing(b.facts.timeline, b.facts.stop_lsn, size).number;
    let newest = present
        .iter()
        .filter(|s| s.number >= start && timeline_of(&chain, s.number) == s.timeline)
        .map(|s| s.number)
        .max();
    let mut gaps = Vec::new();
    let mut contiguous_to = None;
    let mut open: Option<(Segment, Segment)> = None;
    for n in start..=newest.unwrap_or(start) {
        let seg = Segment {
            timeline: timeline_of(&chain, n),
            number: n,
        };
        if present.contains(&seg) {
            if let Some((first, last)) = open.take() {
                gaps.push(gap(b, first, last, size));
            }
            if gaps.is_empty() {
                contiguous_to = Some(seg);
            }
        } else {
            open = Some((open.map_or(seg, |(first, _)| first), seg));
        }
    }
    if let Some((first, last)) = open {
        gaps.push(gap(b, first, last, size));
    }
    Reach {
        consistent: contiguous_to.is_some_and(|s| s.number >= stop),
        gaps,
        contiguous_to,
    }
}

fn gap(b: &BaseBackup, first: Segment, last: Segment, size: u64) -> WalGap {
    WalGap {
        backup_id: b.id.clone(),
        first: first.file_name(size),
        last: last.file_name(size),
        missing: last.number - first.number + 1,
    }
}

/// The span a restore can reach: from the oldest kept backup whose chain
/// runs gap-free to the newest point any chain reaches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Window {
    pub start: DateTime<Utc>,
    /// Approximate: the newest reachable segment's archive time.
    pub end: DateTime<Utc>,
    pub oldest_backup: BackupId,
}

pub fn window(
    kept: &[BaseBackup],
    archive: &[ArchivedWal],
    histories: &Histories,
) -> Option<Window> {
    let size = segment_size(kept);
    let modified: BTreeMap<Segment, DateTime<Utc>> = archive
        .iter()
        .filter_map(|w| match (&w.file, w.last_modified) {
            (WalFile::Segment(s), Some(t)) => Some((*s, t)),
            _ => None,
        })
        .collect();
    let ends: Vec<(&BaseBackup, DateTime<Utc>)> = kept
        .iter()
        .filter_map(|b| {
            let r = reach(b, archive, histories, size);
            if !r.consistent {
                return None;
            }
            let last = r.contiguous_to.and_then(|s| modified.get(&s).copied());
            Some((b, last.map_or(b.finished_at, |t| t.max(b.finished_at))))
        })
        .collect();
    let end = ends.iter().map(|(_, e)| *e).max()?;
    let (oldest, _) = ends
        .iter()
        .filter(|(_, e)| *e == end)
        .min_by_key(|(b, _)| b.finished_at)?;
    Some(Window {
        start: oldest.finished_at,
        end,
        oldest_backup: oldest.id.clone(),
    })
}

/// The newest archived segment's archive time (the `<job>:wal` check and
/// `vigil_wal_last_archived_timestamp_seconds`).
pub fn last_archived(archive: &[ArchivedWal]) -> Option<DateTime<Utc>> {
    archive
        .iter()
        .filter(|w| matches!(w.file, WalFile::Segment(_)))
        .filter_map(|w| w.last_modified)
        .max()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::manifest::PhysicalFacts;
    use crate::core::wal::DEFAULT_SEGMENT_SIZE as SEG;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn backup(id: &str, tli: Timeline, start: &str, stop: &str, finished: &str) -> BaseBackup {
        BaseBackup {
            id: id.into(),
            finished_at: at(finished),
            facts: PhysicalFacts {
                start_lsn: start.parse().unwrap(),
                stop_lsn: stop.parse().unwrap(),
                timeline: tli,
                system_identifier: "7".into(),
                wal_segment_size: SEG,
                label: String::new(),
                tablespaces: vec![],
            },
        }
    }

    /// Archive objects for the names, each written a minute after the last.
    fn archive(names: &[&str]) -> Vec<ArchivedWal> {
        names
            .iter()
            .enumerate()
            .map(|(i, n)| ArchivedWal {
                file: WalFile::parse(n, SEG).unwrap(),
                path: format!("orders/wal/{n}.zst"),
                last_modified: Some(
                    at("2026-11-23T10:00:00Z") + chrono::Duration::minutes(i as i64),
                ),
            })
            .collect()
    }

    fn seg(tli: u32, n: u64) -> String {
        Segment {
            timeline: tli,
            number: n,
        }
        .file_name(SEG)
    }

    #[test]
    fn parses_history_files_as_postgres_writes_them() {
        let text =
            "1\t0/5000060\tno recovery target specified\n\n2\t0/9000000\tat restore point \"x\"\n";
        assert_eq!(
            parse_history(text).unwrap(),
            vec![
                HistoryEntry {
                    parent: 1,
                    switch: "0/5000060".parse().unwrap()
                },
                HistoryEntry {
                    parent: 2,
                    switch: "0/9000000".parse().unwrap()
                },
            ]
        );
        let err = parse_history("# c\nx 0/1\n").unwrap_err();
        assert_eq!(err.line, 2);
    }

    #[test]
    fn deletes_what_precedes_the_oldest_kept_backups_start_with_reasons() {
        let kept = [
            backup("b2", 1, "0/3000028", "0/3000100", "2026-11-23T09:00:00Z"),
            backup("b3", 1, "0/5000028", "0/5000100", "2026-11-23T09:30:00Z"),
        ];
        let names = [
            seg(1, 1),
            format!("{}.00000028.backup", seg(1, 2)),
            seg(1, 2),
            format!("{}.00000028.backup", seg(1, 3)),
            seg(1, 3),
            seg(1, 4),
            seg(1, 5),
            "00000001.history".to_owned(),
        ];
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let p = plan(&kept, &archive(&names), &Histories::new());
        let deleted: Vec<&str> = p.delete.iter().map(|d| d.file.as_str()).collect();
        assert_eq!(deleted, [names[0], names[1], names[2]]);
        assert_eq!(p.kept, 5);
        assert_eq!(
            p.delete[0].reason,
            "older than the oldest kept base backup b2 (finished 2026-11-23T09:00:00Z): start 0/3000028 on timeline 1"
        );
        assert!(p.gaps.is_empty(), "{:?}", p.gaps);
        assert!(
            plan(&[], &archive(&names), &Histories::new())
                .delete
                .is_empty()
        );
    }

    #[test]
    fn a_missing_segment_is_a_gap_for_every_backup_before_it() {
        let kept = [
            backup("b1", 1, "0/2000028", "0/2000100", "2026-11-23T09:00:00Z"),
            backup("b2", 1, "0/6000028", "0/6000100", "2026-11-23T09:30:00Z"),
        ];
        let names = [seg(1, 2), seg(1, 3), seg(1, 6), seg(1, 7)];
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let a = archive(&names);
        let p = plan(&kept, &a, &Histories::new());
        assert_eq!(
            p.gaps,
            vec![WalGap {
                backup_id: "b1".into(),
                first: seg(1, 4),
                last: seg(1, 5),
                missing: 2
            }]
        );
        assert!(
            p.gaps[0].to_string().contains("2 segment(s) missing"),
            "{}",
            p.gaps[0]
        );
        // The window starts at the oldest backup whose chain reaches the end.
        let w = window(&kept, &a, &Histories::new()).unwrap();
        assert_eq!(w.oldest_backup.as_str(), "b2");
        assert_eq!(w.start, at("2026-11-23T09:30:00Z"));
        assert_eq!(w.end, at("2026-11-23T10:03:00Z"));
        assert_eq!(last_archived(&a), Some(at("2026-11-23T10:03:00Z")));
    }

    #[test]
    fn a_missing_newest_segment_after_the_last_backup_still_counts_and_start_missing_is_not_restorable()
     {
        let kept = [backup(
            "b1",
            1,
            "0/2000028",
            "0/3000100",
            "2026-11-23T09:00:00Z",
        )];
        // The stop segment (3) is missing: not restorable at all.
        let names = [seg(1, 2), seg(1, 4)];
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let a = archive(&names);
        let r = reach(&kept[0], &a, &Histories::new(), SEG);
        assert!(!r.consistent);
        assert_eq!(r.gaps.len(), 1);
        assert_eq!(window(&kept, &a, &Histories::new()), None);
        assert_eq!(window(&kept, &[], &Histories::new()), None);
    }

    #[test]
    fn the_chain_follows_timeline_switches_through_history_files() {
        // Timeline 2 branched from 1 inside segment 5; PostgreSQL reads
        // segment 5 onward from timeline 2 and archives 1's as .partial.
        let kept = [backup(
            "b1",
            1,
            "0/3000028",
            "0/3000100",
            "2026-11-23T09:00:00Z",
        )];
        let mut histories = Histories::new();
        histories.insert(
            2,
            parse_history("1\t0/5000060\tno recovery target specified\n").unwrap(),
        );
        let partial = format!("{}.partial", seg(1, 5));
        let names = [
            seg(1, 3),
            seg(1, 4),
            partial.clone(),
            seg(1, 6), // the abandoned branch: never read
            "00000002.history".into(),
            seg(2, 5),
            seg(2, 6),
            seg(2, 7),
        ];
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let a = archive(&names);
        let r = reach(&kept[0], &a, &histories, SEG);
        assert_eq!(r.gaps, vec![]);
        assert_eq!(
            r.contiguous_to,
            Some(Segment {
                timeline: 2,
                number: 7
            })
        );
        // Without timeline 2's segment 6, the chain has a gap there even
        // though timeline 1's segment 6 exists.
        let without: Vec<ArchivedWal> = a
            .iter()
            .filter(|w| w.path != format!("orders/wal/{}.zst", seg(2, 6)))
            .cloned()
            .collect();
        let r = reach(&kept[0], &without, &histories, SEG);
        assert_eq!(
            r.gaps,
            vec![WalGap {
                backup_id: "b1".into(),
                first: seg(2, 6),
                last: seg(2, 6),
                missing: 1
            }]
        );
        // History files are never deleted; a backup on timeline 2 makes
        // timeline 2's older segments deletable but not timeline 1's.
        let kept = [backup(
            "b2",
            2,
            "0/7000028",
            "0/7000100",
            "2026-11-23T11:00:00Z",
        )];
        let p = plan(&kept, &a, &histories);
        let deleted: Vec<&str> = p.delete.iter().map(|d| d.file.as_str()).collect();
        assert_eq!(
            deleted,
            [names[0], names[1], names[2], names[3], names[5], names[6]]
        );
    }

    #[test]
    fn histories_are_inferred_from_names_when_unreadable() {
        let names = [
            seg(1, 3),
            seg(1, 4),
            format!("{}.partial", seg(1, 5)),
            seg(2, 5),
            seg(2, 6),
            seg(3, 9),
        ];
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let h = infer_histories(&archive(&names), &Histories::new(), SEG);
        let five = Segment {
            timeline: 2,
            number: 5,
        }
        .start_lsn(SEG);
        let nine = Segment {
            timeline: 3,
            number: 9,
        }
        .start_lsn(SEG);
        assert_eq!(
            h[&2],
            vec![HistoryEntry {
                parent: 1,
                switch: five
            }]
        );
        assert_eq!(
            h[&3],
            vec![
                HistoryEntry {
                    parent: 1,
                    switch: five
                },
                HistoryEntry {
                    parent: 2,
                    switch: nine
                }
            ]
        );
        // A history file that was read wins.
        let mut known = Histories::new();
        known.insert(
            2,
            vec![HistoryEntry {
                parent: 1,
                switch: "0/5000060".parse().unwrap(),
            }],
        );
        assert_eq!(
            infer_histories(&archive(&names), &known, SEG)[&2],
            known[&2]
        );
    }

    #[test]
    fn a_branch_before_the_backup_started_is_not_its_chain() {
        // Timeline 2 left timeline 1 at segment 2, before b1 started on 1.
        let kept = [backup(
            "b1",
            1,
            "0/3000028",
            "0/3000100",
            "2026-11-23T09:00:00Z",
        )];
        let mut histories = Histories::new();
        histories.insert(2, parse_history("1\t0/2000060\n").unwrap());
        let names = [seg(1, 3), seg(1, 4), seg(2, 2), seg(2, 3)];
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let r = reach(&kept[0], &archive(&names), &histories, SEG);
        assert_eq!(
            r.contiguous_to,
            Some(Segment {
                timeline: 1,
                number: 4
            })
        );
        assert!(r.gaps.is_empty());
    }
}
