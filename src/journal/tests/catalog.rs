//! `audit verify` against the catalog: the pin and the row-by-row
//! comparison with the local files.

use super::super::verify::catalog::{check_pin, compare_with_local};
use super::super::verify::{Anchor, SegmentInput, TableRow, verify_segments, verify_table};
use super::{read_all, small_journal};

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
