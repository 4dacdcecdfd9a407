//! `vigil audit verify` against the catalog: its `audit_log` copy must hold
//! exactly the journal files' lines, older records must link to the oldest
//! segment kept, and the journal id pinned for this instance must match.

use std::collections::HashMap;

use super::{Report, SegmentInput, TableRow};
use crate::core::journal_record::Record;

/// The table must hold exactly the file's lines, and nothing beyond them.
pub(super) fn check_table(
    report: &mut Report,
    rows: &[TableRow],
    files: &HashMap<u64, (String, String)>,
) {
    let file_last = report.last_seq.unwrap_or(0);
    let file_first = report.first_seq.unwrap_or(1);
    let mut previous: Option<u64> = None;
    for row in rows {
        report.table_rows_checked += 1;
        if let Some(p) = previous
            && row.seq != p + 1
            && row.seq > file_first
        {
            report.problem(
                Some(p + 1),
                "catalog",
                format!(
                    "seq {}..{} are missing from the catalog",
                    p + 1,
                    row.seq - 1
                ),
            );
            return;
        }
        previous = Some(row.seq);
        match files.get(&row.seq) {
            Some((_, line)) if *line == row.record => {}
            Some(_) => {
                report.problem(Some(row.seq), "catalog", format!("seq {}: the catalog's copy differs from the journal file: one of them was altered", row.seq));
                return;
            }
            None if row.seq > file_last => {
                report.problem(Some(row.seq), "catalog", format!("seq {} is in the catalog but the journal files end at seq {file_last}: the file's tail was removed or rewritten", row.seq));
                return;
            }
            // Older than the oldest segment kept: removed by retention after shipping.
            None => {}
        }
    }
}

/// Segments before the oldest kept must be in the catalog, linked to it.
pub(super) fn check_older_in_table(
    report: &mut Report,
    rows: &[TableRow],
    first: u64,
    first_prev: Option<&str>,
) {
    let older: Vec<&TableRow> = rows.iter().filter(|r| r.seq < first).collect();
    let complete = older.len() as u64 == first - 1
        && older.iter().enumerate().all(|(i, r)| r.seq == i as u64 + 1);
    if !complete {
        report.problem(
            Some(first - 1),
            "catalog",
            format!("records 1..{} are in neither the journal files nor the catalog: segments were removed before they were shipped", first - 1),
        );
        return;
    }
    let linked = older
        .last()
        .and_then(|r| serde_json::from_str::<Record>(&r.record).ok())
        .is_some_and(|r| Some(r.hash.as_str()) == first_prev);
    if !linked {
        report.problem(
            Some(first),
            "catalog",
            format!("the oldest journal file's first record (seq {first}) does not link to the catalog's seq {}", first - 1),
        );
    }
}

/// The catalog's pin of this instance's journal id must name the journal
/// verified: another id means the journal was replaced since it was pinned.
pub fn check_pin(report: &mut Report, instance: &str, pinned: Option<&str>) {
    let (Some(journal), Some(pinned)) = (report.journal.clone(), pinned) else {
        return;
    };
    if journal != pinned {
        report.problem(
            None,
            "catalog journal_pin",
            format!(
                "the catalog pins instance `{instance}` to journal {pinned}, but the journal verified is {journal}: the journal was replaced"
            ),
        );
    }
}

/// `--from-catalog` with local files: every seq both hold must hold the
/// same line; a catalog record missing locally, or a local one missing
/// from the catalog below its newest row (the unshipped tail may lag), is
/// reported. Records older than the oldest segment kept were removed by
/// retention after shipping.
pub fn compare_with_local(report: &mut Report, rows: &[TableRow], segments: &[SegmentInput]) {
    let local: std::collections::BTreeMap<u64, &str> = segments
        .iter()
        .flat_map(|s| &s.lines)
        .filter_map(|l| {
            serde_json::from_str::<Record>(&l.text)
                .ok()
                .map(|r| (r.seq, l.text.as_str()))
        })
        .collect();
    let (Some((&local_first, _)), Some((&local_last, _))) =
        (local.first_key_value(), local.last_key_value())
    else {
        return;
    };
    let catalog: HashMap<u64, &str> = rows.iter().map(|r| (r.seq, r.record.as_str())).collect();
    for row in rows.iter().filter(|r| r.seq >= local_first) {
        let problem = match local.get(&row.seq) {
            Some(line) if *line == row.record => continue,
            Some(_) => format!(
                "seq {}: the catalog's copy differs from the local journal file: one of them was altered",
                row.seq
            ),
            None if row.seq > local_last => format!(
                "seq {} is in the catalog but the local journal files end at seq {local_last}: the local tail was removed or rewritten",
                row.seq
            ),
            None => format!(
                "seq {} is in the catalog but missing from the local journal files",
                row.seq
            ),
        };
        report.problem(Some(row.seq), "local journal", problem);
        return;
    }
    let catalog_last = rows.last().map_or(0, |r| r.seq);
    if let Some(seq) = local
        .keys()
        .find(|&&s| s <= catalog_last && !catalog.contains_key(&s))
    {
        report.problem(
            Some(*seq),
            "local journal",
            format!(
                "seq {seq} is in the local journal files but missing from the catalog, which holds up to seq {catalog_last}"
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Anchor, SegmentInput, TableRow, verify_segments, verify_table};
    use super::{check_pin, compare_with_local};
    use crate::journal::tests::{read_all, small_journal};

    fn rows_of(segments: &[SegmentInput]) -> Vec<TableRow> {
        segments
            .iter()
            .flat_map(|s| &s.lines)
            .enumerate()
            .map(|(i, l)| TableRow {
                seq: i as u64 + 1,
                record: l.text.clone(),
            })
            .collect()
    }

    #[tokio::test]
    async fn an_anchor_or_pin_naming_another_journal_is_a_problem_naming_both_ids() {
        let dir = tempfile::tempdir().unwrap();
        let journal = small_journal(dir.path(), 2).await;
        let id = journal.id().to_owned();
        let head = journal.head().unwrap();
        journal.close().await;
        let old = "11111111-2222-3333-4444-555555555555";
        let anchor = Anchor {
            source: "backup orders/20261123T070000Z".into(),
            journal: old.into(),
            seq: head.seq,
            hash: head.hash,
        };
        let mut report = verify_segments(&read_all(dir.path()), None, &[anchor]);
        assert!(
            !report.ok(),
            "a manifest anchoring a replaced journal must fail"
        );
        let what = &report.problems[0].what;
        assert!(what.contains(old) && what.contains(&id), "{what}");

        let before = report.problems.len();
        check_pin(&mut report, "db1", Some(&id));
        assert_eq!(report.problems.len(), before, "the right pin adds nothing");
        check_pin(&mut report, "db1", Some(old));
        let what = &report.problems.last().unwrap().what;
        assert!(
            what.contains(old) && what.contains(&id) && what.contains("db1"),
            "{what}"
        );
    }

    #[tokio::test]
    async fn from_catalog_compares_every_row_with_the_local_files() {
        let dir = tempfile::tempdir().unwrap();
        small_journal(dir.path(), 4).await.close().await;
        let segments = read_all(dir.path());
        let rows = rows_of(&segments);

        let mut report = verify_table(&rows, &[]);
        compare_with_local(&mut report, &rows, &segments);
        assert!(report.ok(), "{:?}", report.problems);

        // The unshipped tail may lag: fewer rows than local records is fine.
        let mut report = verify_table(&rows[..3], &[]);
        compare_with_local(&mut report, &rows[..3], &segments);
        assert!(report.ok(), "{:?}", report.problems);

        // A row altered (and re-chained, so the table holds on its own).
        let mut altered = rows.clone();
        altered[2].record = altered[2].record.replace("\"n\":1", "\"n\":9");
        let mut report = verify_table(&rows, &[]);
        compare_with_local(&mut report, &altered, &segments);
        assert_eq!(report.problems[0].seq, Some(3), "{:?}", report.problems);
        assert!(report.problems[0].what.contains("differs"));

        // The local tail removed: rows beyond the files.
        let mut short = read_all(dir.path());
        short[0].lines.truncate(3);
        let mut report = verify_table(&rows, &[]);
        compare_with_local(&mut report, &rows, &short);
        assert_eq!(report.problems[0].seq, Some(4), "{:?}", report.problems);
        assert!(report.problems[0].what.contains("local tail was removed"));

        // A record the catalog lost below its newest row.
        let mut gap = rows.clone();
        gap.remove(1);
        let mut report = verify_table(&rows, &[]);
        compare_with_local(&mut report, &gap, &segments);
        assert_eq!(report.problems[0].seq, Some(2), "{:?}", report.problems);
        assert!(report.problems[0].what.contains("missing from the catalog"));
    }
}
