//! `vigil audit verify`: the chain, the segment links, torn tails and their
//! recovery records, the checkpoints, the catalog's copy and the heads
//! recorded in backup manifests. Pure over what the caller read. The
//! comparisons with the catalog's copy are in [`catalog`].

use std::collections::HashMap;

use serde::Serialize;

use super::segment::{Fragment, Line};
use crate::core::journal_record::{ChainCheck, Record};

pub mod catalog;
use super::signing::{Signing, Unsigned, dropped_signing, stopped_signing};

/// One segment as read from disk.
pub struct SegmentInput {
    pub name: String,
    pub lines: Vec<Line>,
    pub fragment: Option<Fragment>,
}

/// A head recorded elsewhere (a manifest), to hold the journal to.
#[derive(Debug, Clone)]
pub struct Anchor {
    /// Where it was recorded, e.g. `backup orders/20261123T0700Z`.
    pub source: String,
    pub journal: String,
    pub seq: u64,
    pub hash: String,
}

/// A row of the catalog's `audit_log`.
#[derive(Debug, Clone)]
pub struct TableRow {
    pub seq: u64,
    pub record: String,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Problem {
    /// The first bad sequence number, when one can be named.
    pub seq: Option<u64>,
    /// `journal-000003.jsonl line 17`, or `catalog`.
    pub location: String,
    pub what: String,
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub journal: Option<String>,
    pub segments: usize,
    pub records: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    pub checkpoints: u64,
    pub anchors_checked: usize,
    pub table_rows_checked: usize,
    /// Checkpoint signatures verified with `--public-key`.
    pub signatures_checked: u64,
    pub problems: Vec<Problem>,
    pub warnings: Vec<String>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }

    fn problem(&mut self, seq: Option<u64>, location: impl Into<String>, what: impl Into<String>) {
        self.problems.push(Problem {
            seq,
            location: location.into(),
            what: what.into(),
        });
    }
}

/// Record-level rules that do not depend on how records are stored.
#[derive(Default)]
struct Semantics {
    previous: Option<Record>,
    last_checkpoint: Option<Record>,
    /// A daemon start since the last checkpoint excuses a long pause.
    restarted: bool,
}

impl Semantics {
    /// Returns what is wrong with `record` given the ones before it.
    fn check(&mut self, record: &Record) -> Option<String> {
        let previous = self.previous.replace(record.clone());
        let head_of = |r: &Option<Record>| {
            r.as_ref()
                .map(|r| serde_json::json!({ "seq": r.seq, "hash": r.hash }))
        };
        match record.event.as_str() {
            "journal.segment_started" => {
                let claimed = record.data.get("previous").filter(|p| !p.is_null());
                if let (Some(claimed), Some(prev)) = (claimed, &previous)
                    && (claimed.get("seq") != Some(&prev.seq.into())
                        || claimed.get("hash").and_then(|h| h.as_str()) != Some(&prev.hash))
                {
                    return Some(format!(
                        "the segment claims to follow seq {} but follows seq {}",
                        claimed.get("seq").unwrap_or(&serde_json::Value::Null),
                        prev.seq
                    ));
                }
            }
            "journal.recovered"
                if previous
                    .as_ref()
                    .is_none_or(|p| p.event != "journal.segment_started") =>
            {
                return Some(
                    "`journal.recovered` must directly follow a segment's first record".into(),
                );
            }
            "journal.checkpoint" => {
                let claimed = record.data.get("head").cloned().unwrap_or_default();
                let actual = head_of(&previous).unwrap_or_default();
                if claimed != actual {
                    return Some(format!(
                        "checkpoint claims head {claimed} but follows {actual}"
                    ));
                }
                let interval = record.data.get("interval_s").and_then(|v| v.as_i64());
                if let (Some(last), Some(interval), false) =
                    (&self.last_checkpoint, interval, self.restarted)
                {
                    let gap = (record.ts - last.ts).num_seconds();
                    if interval > 0 && gap > 2 * interval + 60 {
                        return Some(format!(
                            "{gap} s since the previous checkpoint (seq {}) with no restart in between; checkpoints are every {interval} s: records or checkpoints are missing",
                            last.seq
                        ));
                    }
                }
                self.last_checkpoint = Some(record.clone());
                self.restarted = false;
            }
            "daemon.started" => self.restarted = true,
            _ => {}
        }
        None
    }
}

/// Verifies segments read from disk (oldest first), then the catalog's
/// rows and the anchors against them.
pub fn verify_segments(
    segments: &[SegmentInput],
    table: Option<&[TableRow]>,
    anchors: &[Anchor],
) -> Report {
    let mut report = Report {
        segments: segments.len(),
        ..Report::default()
    };
    let mut chain = ChainCheck::new(None);
    let mut semantics = Semantics::default();
    let mut by_seq: HashMap<u64, (String, String)> = HashMap::new();
    // The first record's link to what came before the oldest segment kept.
    let mut first_prev: Option<String> = None;
    // Fragments waiting for their `journal.recovered`: segment name → fragment.
    let mut unclaimed: Vec<(String, Fragment)> = Vec::new();
    'segments: for (index, segment) in segments.iter().enumerate() {
        if segment.lines.is_empty() && segment.fragment.is_none() && index + 1 < segments.len() {
            report.problem(
                None,
                &segment.name,
                "empty segment in the middle of the journal",
            );
            break;
        }
        for (i, line) in segment.lines.iter().enumerate() {
            let location = format!("{} line {}", segment.name, i + 1);
            let record = match chain.push(&line.text) {
                Ok(r) => r,
                Err(e) => {
                    let seq = serde_json::from_str::<Record>(&line.text)
                        .ok()
                        .map(|r| r.seq);
                    report.problem(
                        seq.or(chain.last().map(|l| l.0 + 1)),
                        location,
                        e.to_string(),
                    );
                    break 'segments;
                }
            };
            if i == 0 {
                let named = record.data.get("segment").and_then(|s| s.as_str());
                if record.event != "journal.segment_started" || named != Some(&segment.name) {
                    report.problem(
                        Some(record.seq),
                        location,
                        "a segment must open with its own `journal.segment_started` record",
                    );
                    break 'segments;
                }
            }
            if let Some(what) = semantics.check(&record) {
                report.problem(Some(record.seq), location, what);
                break 'segments;
            }
            match record.event.as_str() {
                "journal.checkpoint" => report.checkpoints += 1,
                "journal.recovered" => {
                    let named = record.data.get("segment").and_then(|s| s.as_str());
                    let position = unclaimed.iter().position(|(name, f)| {
                        Some(name.as_str()) == named && fragment_matches(f, &record)
                    });
                    match position {
                        Some(p) => {
                            unclaimed.remove(p);
                        }
                        None => {
                            report.problem(
                                Some(record.seq),
                                location,
                                "`journal.recovered` describes a torn tail that is not there (or differs)",
                            );
                            break 'segments;
                        }
                    }
                }
                _ => {}
            }
            report.journal.get_or_insert_with(|| record.journal.clone());
            report.first_seq.get_or_insert(record.seq);
            first_prev.get_or_insert_with(|| record.prev.clone());
            report.last_seq = Some(record.seq);
            report.records += 1;
            by_seq.insert(record.seq, (record.hash.clone(), line.text.clone()));
        }
        if let Some((name, _)) = unclaimed.first() {
            report.problem(
                None,
                name.clone(),
                "the segment ends in a torn write that no later segment records (`journal.recovered` missing)",
            );
            break;
        }
        if let Some(fragment) = &segment.fragment {
            unclaimed.push((segment.name.clone(), fragment.clone()));
        }
    }
    if report.problems.is_empty()
        && let Some((name, fragment)) = unclaimed.first()
    {
        // A crash leaves this until vigil next writes; so does a removed newline.
        report.problem(
            report.last_seq.map(|s| s + 1),
            name.clone(),
            format!(
                "ends in {} bytes at offset {} that are not a complete record and not yet recorded as torn (start vigil to record it, or the last record was cut)",
                fragment.length, fragment.offset
            ),
        );
    }
    let first = report.first_seq.unwrap_or(1);
    match table {
        Some(rows) => {
            catalog::check_table(&mut report, rows, &by_seq);
            if first > 1 && report.problems.is_empty() {
                catalog::check_older_in_table(&mut report, rows, first, first_prev.as_deref());
            }
        }
        None if first > 1 => report.warnings.push(format!(
            "the journal files start at seq {first}: older segments are gone (retention removes them once shipped); compare with the catalog to check them"
        )),
        None => {}
    }
    check_anchors(&mut report, anchors, |seq| {
        by_seq.get(&seq).map(|(h, _)| h.clone())
    });
    report
}

/// `--from-catalog`: the chain as the catalog holds it, and the anchors.
pub fn verify_table(rows: &[TableRow], anchors: &[Anchor]) -> Report {
    let mut report = Report::default();
    let mut chain = ChainCheck::new(None);
    let mut semantics = Semantics::default();
    let mut by_seq = HashMap::new();
    for row in rows {
        let location = format!("catalog row seq {}", row.seq);
        let record = match chain.push(&row.record) {
            Ok(r) => r,
            Err(e) => {
                report.problem(Some(row.seq), location, e.to_string());
                break;
            }
        };
        if record.seq != row.seq {
            report.problem(
                Some(row.seq),
                location,
                format!(
                    "the row's seq column says {} but its record says {}",
                    row.seq, record.seq
                ),
            );
            break;
        }
        if let Some(what) = semantics.check(&record) {
            report.problem(Some(record.seq), location, what);
            break;
        }
        if record.event == "journal.checkpoint" {
            report.checkpoints += 1;
        }
        report.journal.get_or_insert_with(|| record.journal.clone());
        report.first_seq.get_or_insert(record.seq);
        report.last_seq = Some(record.seq);
        report.records += 1;
        report.table_rows_checked += 1;
        by_seq.insert(record.seq, record.hash);
    }
    check_anchors(&mut report, anchors, |seq| by_seq.get(&seq).cloned());
    report
}

fn fragment_matches(fragment: &Fragment, record: &Record) -> bool {
    let d = &record.data;
    d.get("offset").and_then(|v| v.as_u64()) == Some(fragment.offset)
        && d.get("length").and_then(|v| v.as_u64()) == Some(fragment.length)
        && d.get("sha256").and_then(|v| v.as_str()) == Some(&fragment.sha256)
}

fn check_anchors(report: &mut Report, anchors: &[Anchor], hash_at: impl Fn(u64) -> Option<String>) {
    let Some(journal) = report.journal.clone() else {
        return;
    };
    // A manifest names the journal it was anchored in; another id for this
    // instance's repositories means the journal was replaced under it.
    for anchor in anchors.iter().filter(|a| a.journal != journal) {
        report.problem(
            Some(anchor.seq),
            anchor.source.clone(),
            format!(
                "{} anchors journal {} but this instance's journal is {journal}: the journal was replaced (or another vigil writes to this repository; give each its own prefix)",
                anchor.source, anchor.journal
            ),
        );
    }
    let first = report.first_seq.unwrap_or(1);
    let last = report.last_seq.unwrap_or(0);
    for anchor in anchors.iter().filter(|a| a.journal == journal) {
        report.anchors_checked += 1;
        match hash_at(anchor.seq) {
            Some(hash) if hash == anchor.hash => {}
            Some(hash) => report.problem(
                Some(anchor.seq),
                anchor.source.clone(),
                format!("seq {}: recorded as {} by {}, but the journal holds {hash}: the journal was rewritten after it", anchor.seq, short(&anchor.hash), anchor.source),
            ),
            None if anchor.seq > last => report.problem(
                Some(anchor.seq),
                anchor.source.clone(),
                format!("{} recorded the head at seq {}, but the journal ends at seq {last}: its tail was removed", anchor.source, anchor.seq),
            ),
            None if anchor.seq < first => report.anchors_checked -= 1,
            None => {}
        }
    }
}

/// A hash's first 12 characters; one read from a manifest may be anything.
fn short(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}

/// `--public-key`: every checkpoint among `lines` must carry a signature
/// that `key` verifies, and a daemon run (from `daemon.started` to
/// `daemon.stopping`) must not go longer than twice `interval` plus a
/// minute without one: removing every checkpoint would otherwise leave
/// nothing to check. After a `journal.signing_stopped` record, unsigned
/// checkpoints are a warning until a signed one appears again. `source`
/// names where the lines came from.
pub fn check_signatures<'a>(
    report: &mut Report,
    lines: impl IntoIterator<Item = &'a str>,
    key: &ed25519_dalek::VerifyingKey,
    interval: std::time::Duration,
    source: &str,
) {
    let allowed = 2 * interval.as_secs() as i64 + 60;
    // In a daemon run: its start or its last signed checkpoint.
    let mut signed_since: Option<chrono::DateTime<chrono::Utc>> = None;
    let mut signing = Signing::default();
    let mut warned = false;
    for line in lines {
        let Ok(record) = serde_json::from_str::<Record>(line) else {
            continue;
        };
        if let Some(since) = signed_since {
            let gap = (record.ts - since).num_seconds();
            if gap > allowed {
                report.problem(
                    Some(record.seq),
                    source,
                    format!(
                        "{gap} s into a daemon run without a signed checkpoint (one is written every {} s): checkpoints were removed",
                        interval.as_secs()
                    ),
                );
                return;
            }
        }
        match (record.event.as_str(), signing.see(&record)) {
            ("daemon.started", _) if !signing.stopped() => signed_since = Some(record.ts),
            ("daemon.stopping", _) | (super::sign::SIGNING_STOPPED, _) => signed_since = None,
            (
                _,
                Some(Unsigned::Stopped {
                    last_signed,
                    stopped_at,
                }),
            ) if !warned => {
                report
                    .warnings
                    .push(stopped_signing(record.seq, last_signed, stopped_at));
                warned = true;
            }
            (_, Some(Unsigned::Stopped { .. })) => {}
            (_, Some(Unsigned::Dropped { last_signed })) => {
                report.problem(
                    Some(record.seq),
                    source,
                    dropped_signing(record.seq, last_signed),
                );
                return;
            }
            ("journal.checkpoint", _) => {
                if let Some(what) = super::sign::check_checkpoint(&record, key) {
                    report.problem(Some(record.seq), source, what);
                    return;
                }
                report.signatures_checked += 1;
                signed_since = signed_since.map(|_| record.ts);
            }
            _ => {}
        }
    }
}

/// The public key (hex) the first signed checkpoint among `lines` names:
/// a reminder that `--public-key` would check them.
pub fn signing_key_named<'a>(lines: impl IntoIterator<Item = &'a str>) -> Option<String> {
    lines
        .into_iter()
        .filter(|l| l.contains("\"journal.checkpoint\""))
        .filter_map(|l| serde_json::from_str::<Record>(l).ok())
        .find_map(|r| {
            r.data
                .get("signature")?
                .get("public_key")?
                .as_str()
                .map(str::to_owned)
        })
}
