//! The writer on a real directory, and verification against tampering.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::handle::{Journal, JournalOptions};
use super::segment::{self, segment_name};
use super::verify::{Anchor, SegmentInput, TableRow, verify_segments};
use crate::core::journal_record::{Actor, Entry};

fn options(dir: &Path) -> JournalOptions {
    JournalOptions {
        dir: dir.to_owned(),
        sync_interval: Duration::from_millis(50),
        segment_max_bytes: 64 * 1024 * 1024,
        segment_max_age: Duration::from_secs(24 * 3600),
        queue_capacity: 100,
        checkpoint_interval: None,
        actor: Actor::daemon(),
        signer: None,
    }
}

fn event(i: usize) -> Entry {
    Entry::at(
        chrono::Utc::now(),
        "backup.succeeded",
        Actor::scheduler(),
        serde_json::json!({ "job": "orders", "n": i }),
    )
}

pub(super) fn read_all(dir: &Path) -> Vec<SegmentInput> {
    segment::list(dir)
        .unwrap()
        .into_iter()
        .map(|(n, path)| {
            let (lines, fragment) = segment::read_from(&path, 0).unwrap();
            SegmentInput {
                name: segment_name(n),
                lines,
                fragment,
            }
        })
        .collect()
}

/// A small journal of `n` events plus its segment-opening record.
pub(super) async fn small_journal(dir: &Path, n: usize) -> Journal {
    let journal = Journal::open(options(dir), Arc::default()).unwrap();
    for i in 0..n {
        journal.emit(event(i));
    }
    journal.flush().await;
    journal
}

#[tokio::test]
async fn events_are_chained_synced_and_verify() {
    let dir = tempfile::tempdir().unwrap();
    let journal = small_journal(dir.path(), 3).await;
    let head = journal.commit(event(99)).await.unwrap();
    assert_eq!(head.seq, 5, "segment_started + 3 + 1");
    assert_eq!(journal.head(), Some(head));
    journal.close().await;
    let report = verify_segments(&read_all(dir.path()), None, &[]);
    assert!(report.ok(), "{:?}", report.problems);
    assert_eq!(report.records, 5);
}

#[tokio::test]
async fn a_second_writer_appends_after_the_first() {
    // The daemon and a CLI command share the journal through its lock.
    let dir = tempfile::tempdir().unwrap();
    let daemon = small_journal(dir.path(), 2).await;
    let cli = Journal::open(options(dir.path()), Arc::default()).unwrap();
    assert_eq!(cli.id(), daemon.id());
    cli.commit(event(10)).await.unwrap();
    cli.close().await;
    let head = daemon.commit(event(11)).await.unwrap();
    assert_eq!(head.seq, 5);
    daemon.close().await;
    let report = verify_segments(&read_all(dir.path()), None, &[]);
    assert!(report.ok(), "{:?}", report.problems);
}

#[tokio::test]
async fn a_torn_tail_is_kept_and_recorded_in_a_new_segment() {
    let dir = tempfile::tempdir().unwrap();
    small_journal(dir.path(), 3).await.close().await;
    // A crash between `write` and `fsync`: half a line on disk.
    let first = dir.path().join(segment_name(1));
    let before = std::fs::read(&first).unwrap();
    let torn = b"{\"actor\":{\"kind\":\"sched";
    std::fs::write(&first, [before.as_slice(), torn].concat()).unwrap();
    let unrecovered = verify_segments(&read_all(dir.path()), None, &[]);
    assert!(!unrecovered.ok(), "an unrecovered torn tail is reported");

    let journal = Journal::open(options(dir.path()), Arc::default()).unwrap();
    journal.commit(event(7)).await.unwrap();
    journal.close().await;
    assert_eq!(
        std::fs::read(&first).unwrap().len(),
        before.len() + torn.len(),
        "never truncated"
    );
    let segments = read_all(dir.path());
    assert_eq!(segments.len(), 2);
    let second: Vec<crate::core::journal_record::Record> = segments[1]
        .lines
        .iter()
        .map(|l| serde_json::from_str(&l.text).unwrap())
        .collect();
    assert_eq!(second[0].event, "journal.segment_started");
    assert_eq!(second[1].event, "journal.recovered");
    assert_eq!(second[1].data["length"], torn.len());
    assert_eq!(second[1].data["offset"], before.len());
    let report = verify_segments(&segments, None, &[]);
    assert!(report.ok(), "{:?}", report.problems);
}

#[tokio::test]
async fn segments_rotate_and_link() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(dir.path());
    opts.segment_max_bytes = 2048;
    let journal = Journal::open(opts, Arc::default()).unwrap();
    for i in 0..40 {
        journal.emit(event(i));
    }
    journal.close().await;
    let segments = read_all(dir.path());
    assert!(segments.len() >= 3, "{} segments", segments.len());
    let report = verify_segments(&segments, None, &[]);
    assert!(report.ok(), "{:?}", report.problems);
    assert_eq!(report.records, 40 + segments.len() as u64);
}

#[tokio::test]
async fn checkpoints_come_even_when_idle() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(dir.path());
    opts.checkpoint_interval = Some(Duration::from_millis(100));
    let journal = Journal::open(opts, Arc::default()).unwrap();
    tokio::time::sleep(Duration::from_millis(450)).await;
    journal.close().await;
    let report = verify_segments(&read_all(dir.path()), None, &[]);
    assert!(report.ok(), "{:?}", report.problems);
    assert!(
        report.checkpoints >= 3,
        "{} checkpoints",
        report.checkpoints
    );
}

/// The lines of a one-segment journal, for tampering.
async fn lines_of_small_journal(n: usize) -> (tempfile::TempDir, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    small_journal(dir.path(), n).await.close().await;
    let bytes = std::fs::read(dir.path().join(segment_name(1))).unwrap();
    (dir, bytes)
}

fn verify_bytes(bytes: &[u8]) -> super::verify::Report {
    let (lines, fragment) = segment::split(bytes, 0);
    verify_segments(
        &[SegmentInput {
            name: segment_name(1),
            lines,
            fragment,
        }],
        None,
        &[],
    )
}

#[tokio::test]
async fn every_flipped_bit_fails_verification_and_names_a_place() {
    let (_dir, bytes) = lines_of_small_journal(2).await;
    assert!(verify_bytes(&bytes).ok());
    for i in 0..bytes.len() * 8 {
        let mut tampered = bytes.clone();
        tampered[i / 8] ^= 1 << (i % 8);
        let report = verify_bytes(&tampered);
        assert!(
            !report.ok(),
            "flipping bit {i} (byte {}) went unnoticed",
            i / 8
        );
        assert!(!report.problems[0].location.is_empty());
    }
}

#[tokio::test]
async fn deleting_or_reordering_lines_is_named_by_seq() {
    let (_dir, bytes) = lines_of_small_journal(4).await;
    let lines: Vec<&[u8]> = bytes.split_inclusive(|&b| b == b'\n').collect();
    let join = |ls: Vec<&[u8]>| ls.concat();

    let mut without_middle = lines.clone();
    without_middle.remove(2);
    let report = verify_bytes(&join(without_middle));
    assert_eq!(report.problems[0].seq, Some(4), "{:?}", report.problems);
    assert!(report.problems[0].what.contains("expected seq 3"));

    let mut swapped = lines.clone();
    swapped.swap(2, 3);
    let report = verify_bytes(&join(swapped));
    assert_eq!(report.problems[0].seq, Some(4), "{:?}", report.problems);
}

#[tokio::test]
async fn a_removed_or_rewritten_tail_is_caught_by_the_anchors() {
    let dir = tempfile::tempdir().unwrap();
    let journal = small_journal(dir.path(), 4).await;
    let anchored = journal.head().unwrap();
    let id = journal.id().to_owned();
    journal.close().await;
    let path = dir.path().join(segment_name(1));
    let bytes = std::fs::read(&path).unwrap();
    let lines: Vec<&[u8]> = bytes.split_inclusive(|&b| b == b'\n').collect();
    let anchor = Anchor {
        source: "backup orders/20261123T070000Z".into(),
        journal: id,
        seq: anchored.seq,
        hash: anchored.hash.clone(),
    };

    // Tail deleted: the chain itself still holds.
    let short = lines[..3].concat();
    assert!(verify_bytes(&short).ok());
    std::fs::write(&path, &short).unwrap();
    let report = verify_segments(&read_all(dir.path()), None, std::slice::from_ref(&anchor));
    assert!(!report.ok());
    assert_eq!(report.problems[0].seq, Some(anchored.seq));
    assert!(
        report.problems[0].what.contains("tail was removed"),
        "{:?}",
        report.problems
    );

    // Tail rewritten and re-hashed by someone with write access.
    let forged = Journal::open(options(dir.path()), Arc::default()).unwrap();
    forged.emit(event(666));
    forged.emit(event(667));
    forged.close().await;
    let segments = read_all(dir.path());
    assert!(
        verify_segments(&segments, None, &[]).ok(),
        "a re-hashed chain holds on its own"
    );
    let report = verify_segments(&segments, None, std::slice::from_ref(&anchor));
    assert!(!report.ok());
    assert!(
        report.problems[0].what.contains("rewritten"),
        "{:?}",
        report.problems
    );

    // The catalog's copy catches it too.
    let rows: Vec<TableRow> = lines
        .iter()
        .enumerate()
        .map(|(i, l)| TableRow {
            seq: i as u64 + 1,
            record: String::from_utf8(l.trim_ascii_end().to_vec()).unwrap(),
        })
        .collect();
    let report = verify_segments(&segments, Some(&rows), &[]);
    assert!(!report.ok());
    assert_eq!(report.problems[0].location, "catalog");
}

#[tokio::test]
async fn expired_segments_go_only_once_shipped_and_never_the_newest() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(dir.path());
    opts.segment_max_bytes = 2048;
    let journal = Journal::open(opts, Arc::default()).unwrap();
    for i in 0..30 {
        journal.emit(event(i));
    }
    journal.close().await;
    let before = segment::list(dir.path()).unwrap();
    assert!(before.len() >= 3);
    let old = std::time::SystemTime::now() - Duration::from_secs(100 * 86_400);
    for (_, path) in &before {
        std::fs::File::options()
            .append(true)
            .open(path)
            .unwrap()
            .set_modified(old)
            .unwrap();
    }
    let retention = Duration::from_secs(90 * 86_400);
    super::ship::remove_expired(dir.path(), 0, retention);
    assert_eq!(
        segment::list(dir.path()).unwrap(),
        before,
        "nothing shipped yet"
    );
    // The first segment's records are shipped; the second's are not all.
    let first_of_second = super::tail::segment_first_seqs(dir.path()).unwrap()[1]
        .2
        .unwrap();
    super::ship::remove_expired(dir.path(), first_of_second - 1, retention);
    assert_eq!(segment::list(dir.path()).unwrap(), before[1..]);
    super::ship::remove_expired(dir.path(), u64::MAX, retention);
    assert_eq!(
        segment::list(dir.path()).unwrap(),
        before[before.len() - 1..],
        "the newest stays"
    );
}

#[tokio::test]
async fn a_crash_while_starting_a_segment_neither_forks_nor_restarts_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let journal = small_journal(dir.path(), 2).await;
    let id = journal.id().to_owned();
    journal.close().await;
    // A newer segment holding nothing but a torn write, and an empty one after it.
    std::fs::write(dir.path().join(segment_name(2)), b"{\"actor\":{\"ki").unwrap();
    std::fs::write(dir.path().join(segment_name(3)), b"").unwrap();
    let journal = Journal::open(options(dir.path()), Arc::default()).unwrap();
    assert_eq!(journal.id(), id, "same journal");
    let head = journal.commit(event(5)).await.unwrap();
    journal.close().await;
    // 3 records before, then segment_started + recovered in segment 3, then the event.
    assert_eq!(head.seq, 6);
    let segments = read_all(dir.path());
    assert_eq!(segments.len(), 3);
    let report = verify_segments(&segments, None, &[]);
    assert!(report.ok(), "{:?}", report.problems);
}

#[tokio::test]
async fn an_empty_segment_left_by_a_crash_is_reused() {
    let dir = tempfile::tempdir().unwrap();
    small_journal(dir.path(), 2).await.close().await;
    std::fs::write(dir.path().join(segment_name(2)), b"").unwrap();
    let mut opts = options(dir.path());
    opts.segment_max_bytes = 1500;
    let journal = Journal::open(opts, Arc::default()).unwrap();
    for i in 0..10 {
        journal.emit(event(i));
    }
    journal.close().await;
    let segments = read_all(dir.path());
    assert!(segments.len() >= 2 && !segments[1].lines.is_empty());
    let report = verify_segments(&segments, None, &[]);
    assert!(report.ok(), "{:?}", report.problems);
}

/// What a forger with write access does: re-chains every record after an
/// edit, fixing each checkpoint's `head` so the chain holds on its own.
fn rehash(records: &mut [crate::core::journal_record::Record]) {
    let mut prev: Option<(u64, String)> = None;
    for r in records.iter_mut() {
        if let Some((seq, hash)) = &prev {
            r.prev = hash.clone();
            if r.event == "journal.checkpoint" {
                r.data["head"] = serde_json::json!({ "seq": seq, "hash": hash });
            }
        }
        r.hash = r.compute_hash();
        prev = Some((r.seq, r.hash.clone()));
    }
}

#[tokio::test]
async fn signed_checkpoints_catch_a_rehashed_journal_without_the_key() {
    use super::verify::check_signatures;
    let dir = tempfile::tempdir().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let (private, public) = (keys.path().join("k.pem"), keys.path().join("k.pub"));
    super::sign::keygen(&private, &public).unwrap();
    let mut opts = options(dir.path());
    opts.checkpoint_interval = Some(Duration::from_millis(100));
    opts.signer = Some(Arc::new(super::sign::load_signing_key(&private).unwrap()));
    let journal = Journal::open(opts, Arc::default()).unwrap();
    journal.emit(event(1));
    tokio::time::sleep(Duration::from_millis(250)).await;
    journal.close().await;
    let key = super::sign::load_verifying_key(&public).unwrap();
    let segments = read_all(dir.path());
    let texts = || {
        segments
            .iter()
            .flat_map(|s| &s.lines)
            .map(|l| l.text.as_str())
    };
    let mut report = verify_segments(&segments, None, &[]);
    check_signatures(&mut report, texts(), &key, HOUR, "journal files");
    assert!(report.ok(), "{:?}", report.problems);
    assert!(
        report.signatures_checked >= 2,
        "{}",
        report.signatures_checked
    );

    // Rewrite the event before the checkpoints and re-chain everything.
    let mut records: Vec<crate::core::journal_record::Record> =
        texts().map(|t| serde_json::from_str(t).unwrap()).collect();
    let edited = records
        .iter()
        .position(|r| r.event == "backup.succeeded")
        .unwrap();
    records[edited].data["job"] = serde_json::json!("forged");
    rehash(&mut records);
    let forged: Vec<u8> = records
        .iter()
        .flat_map(crate::core::journal_record::encode_line)
        .collect();
    std::fs::write(dir.path().join(segment_name(1)), forged).unwrap();
    let segments = read_all(dir.path());
    let mut report = verify_segments(&segments, None, &[]);
    assert!(
        report.ok(),
        "the re-chained journal holds on its own: {:?}",
        report.problems
    );
    let texts = segments
        .iter()
        .flat_map(|s| &s.lines)
        .map(|l| l.text.as_str());
    check_signatures(&mut report, texts, &key, HOUR, "journal files");
    assert!(
        !report.ok(),
        "the forged checkpoints must fail their signatures"
    );
    assert!(
        report.problems[0].what.contains("does not verify"),
        "{:?}",
        report.problems
    );
}

const HOUR: Duration = Duration::from_secs(3600);

#[test]
fn with_a_key_a_daemon_run_without_checkpoints_fails() {
    use super::verify::{Report, check_signatures};
    let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]).verifying_key();
    let t0 = chrono::Utc::now() - chrono::Duration::hours(5);
    let at = |h: i64, event: &str| Entry {
        ts: t0 + chrono::Duration::hours(h),
        ..Entry::at(
            chrono::Utc::now(),
            event,
            Actor::daemon(),
            serde_json::json!({}),
        )
    };
    let chain = |entries: Vec<Entry>| -> Vec<String> {
        let mut prev: Option<crate::core::journal_record::Record> = None;
        entries
            .into_iter()
            .map(|e| {
                let r = crate::core::journal_record::Record::next(
                    "j",
                    prev.as_ref().map(|p| (p.seq, p.hash.as_str())),
                    e,
                );
                let line = String::from_utf8(crate::core::journal_record::encode_line(&r)).unwrap();
                prev = Some(r);
                line.trim_end().to_owned()
            })
            .collect()
    };
    // CLI records hours apart, outside any daemon run: nothing to sign.
    let quiet = chain(vec![at(0, "backup.succeeded"), at(4, "backup.succeeded")]);
    let mut report = Report::default();
    check_signatures(
        &mut report,
        quiet.iter().map(String::as_str),
        &key,
        HOUR,
        "f",
    );
    assert!(report.ok(), "{:?}", report.problems);
    // A daemon run of four hours with its checkpoints removed.
    let stripped = chain(vec![
        at(0, "daemon.started"),
        at(4, "backup.succeeded"),
        at(4, "daemon.stopping"),
    ]);
    let mut report = Report::default();
    check_signatures(
        &mut report,
        stripped.iter().map(String::as_str),
        &key,
        HOUR,
        "f",
    );
    assert_eq!(report.problems[0].seq, Some(2), "{:?}", report.problems);
    assert!(
        report.problems[0]
            .what
            .contains("without a signed checkpoint")
    );
}

/// A manifest's recorded hash is its word: one that is not hex (here a
/// multi-byte character across the 12th byte) is reported, not a panic.
#[tokio::test]
async fn an_anchor_hash_that_is_not_hex_is_reported_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let journal = small_journal(dir.path(), 2).await;
    let id = journal.id().to_owned();
    let head = journal.head().unwrap();
    journal.close().await;
    let anchor = Anchor {
        source: "backup orders/20261123T070000Z".into(),
        journal: id,
        seq: head.seq,
        hash: "aaaaaaaaaaa\u{e9}".into(),
    };
    let report = verify_segments(&read_all(dir.path()), None, &[anchor]);
    assert!(!report.ok());
    assert!(
        report.problems[0].what.contains("recorded as aaaaaaaaaaa"),
        "{:?}",
        report.problems
    );
}
