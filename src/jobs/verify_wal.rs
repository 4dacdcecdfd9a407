//! `vigil verify` on a physical job: the archived WAL that the chosen
//! backups' chains use (from the oldest chosen backup's start segment to
//! the newest archived), read back one object at a time (a WAL object is
//! at most one segment) and checked against its header's SHA-256 when it
//! can be decoded; without the identity, that it is readable and its
//! header intact.

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::JobContext;
use super::pitr::Survey;
use super::verify::{BadObject, VerifyError};
use crate::core::recovery::BaseBackup;
use crate::core::wal::{Segment, WalFile};
use crate::core::wal_chain::ArchivedWal;
use crate::repo::RepoError;
use crate::repo::wal::WalHeader;

/// What the WAL check found.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WalVerdict {
    /// WAL objects read.
    pub objects: usize,
    /// Stored bytes read.
    pub bytes_read: u64,
    /// Decoded and hashed (not only their headers read).
    pub content_checked: bool,
    pub bad: Vec<BadObject>,
}

/// The archived WAL files the backups' chains use, each with the oldest
/// backup that needs it (findings are charged to it): segments, partial
/// and backup history files from a backup's start segment on, on its
/// timeline or a later one, and every timeline history file.
pub fn needed<'a>(
    backups: &'a [BaseBackup],
    archive: &'a [ArchivedWal],
    segment_size: u64,
) -> Vec<(&'a ArchivedWal, &'a BaseBackup)> {
    let mut starts: Vec<(Segment, &BaseBackup)> = backups
        .iter()
        .map(|b| {
            let start = Segment::containing(b.facts.timeline, b.facts.start_lsn, segment_size);
            (start, b)
        })
        .collect();
    starts.sort_by_key(|(s, _)| s.number);
    archive
        .iter()
        .filter_map(|w| {
            let owner = match &w.file {
                WalFile::History(_) => starts.first(),
                WalFile::Segment(s)
                | WalFile::Partial(s)
                | WalFile::BackupLabel { segment: s, .. } => starts
                    .iter()
                    .find(|(start, _)| s.number >= start.number && s.timeline >= start.timeline),
            };
            owner.map(|(_, b)| (w, *b))
        })
        .collect()
}

/// Reads and checks every WAL object the survey's backups need.
pub async fn check(
    ctx: &JobContext,
    survey: &Survey,
    identities: &[age::x25519::Identity],
    with_keys: bool,
    cancel: &CancellationToken,
) -> Result<WalVerdict, VerifyError> {
    let mut verdict = WalVerdict {
        content_checked: true,
        ..WalVerdict::default()
    };
    for (wal, backup) in needed(&survey.backups, &survey.archive, survey.segment_size) {
        if cancel.is_cancelled() {
            return Err(VerifyError::Cancelled);
        }
        let encrypted = wal.path.ends_with(".age");
        let decode = with_keys || !encrypted;
        verdict.content_checked &= decode;
        let name = wal.file.file_name(survey.segment_size);
        let stored = match ctx.repo.read_wal(&wal.path).await {
            Ok(stored) => stored,
            Err(e @ RepoError::Unreachable { .. }) => return Err(e.into()),
            Err(e) => {
                let error = crate::core::redact::error_chain(&e);
                verdict
                    .bad
                    .extend(finding(ctx, backup, &name, error).await?);
                continue;
            }
        };
        verdict.objects += 1;
        let Some(stored) = stored else {
            let error = "missing object: listed in the WAL archive, gone when read".to_owned();
            verdict
                .bad
                .extend(finding(ctx, backup, &name, error).await?);
            continue;
        };
        verdict.bytes_read += stored.len() as u64;
        let keys = identities.to_vec();
        let checked = tokio::task::spawn_blocking(move || {
            if decode {
                crate::pipeline::wal::decode(&stored, encrypted, &keys)
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            } else {
                WalHeader::decode(&stored)
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
        })
        .await
        .unwrap_or_else(|e| Err(format!("the check stopped: {e}")));
        if let Err(error) = checked {
            verdict
                .bad
                .extend(finding(ctx, backup, &name, error).await?);
        }
    }
    Ok(verdict)
}

/// A bad WAL object, charged to `backup`; `None` when that backup was
/// removed meanwhile (a prune takes its WAL with it).
async fn finding(
    ctx: &JobContext,
    backup: &BaseBackup,
    name: &str,
    error: String,
) -> Result<Option<BadObject>, VerifyError> {
    match ctx.repo.read_manifest(&ctx.name, backup.id.as_str()).await {
        Err(RepoError::NoSuchBackup { .. }) => return Ok(None),
        Err(e @ RepoError::Unreachable { .. }) => return Err(e.into()),
        _ => {}
    }
    Ok(Some(BadObject {
        backup_id: backup.id.to_string(),
        object: format!("wal/{name}"),
        expected_sha256: None,
        found_sha256: None,
        error: ctx.redact(&error),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::wal::{DEFAULT_SEGMENT_SIZE, Lsn};

    fn backup(id: &str, start: u64) -> BaseBackup {
        BaseBackup {
            id: id.into(),
            finished_at: chrono::Utc::now(),
            facts: crate::core::manifest::PhysicalFacts {
                start_lsn: Lsn(start * DEFAULT_SEGMENT_SIZE + 0x28),
                stop_lsn: Lsn(start * DEFAULT_SEGMENT_SIZE + 0x100),
                timeline: 1,
                system_identifier: "7300000000000000000".into(),
                wal_segment_size: DEFAULT_SEGMENT_SIZE,
                label: String::new(),
                tablespaces: vec![],
            },
        }
    }

    fn wal(name: &str) -> ArchivedWal {
        ArchivedWal {
            file: WalFile::parse(name, DEFAULT_SEGMENT_SIZE).unwrap(),
            path: format!("orders/wal/{name}.zst"),
            last_modified: None,
        }
    }

    #[test]
    fn the_wal_from_the_oldest_chosen_backup_on_is_needed_and_charged_to_it() {
        let backups = [backup("20261127T030000Z", 5), backup("20261127T040000Z", 3)];
        let archive = [
            wal("000000010000000000000002"),
            wal("000000010000000000000003"),
            wal("000000010000000000000005"),
            wal("000000020000000000000006"),
            wal("00000002.history"),
        ];
        let needed: Vec<(String, String)> = needed(&backups, &archive, DEFAULT_SEGMENT_SIZE)
            .into_iter()
            .map(|(w, b)| (w.file.file_name(DEFAULT_SEGMENT_SIZE), b.id.to_string()))
            .collect();
        let older = "20261127T040000Z".to_owned();
        assert_eq!(
            needed,
            [
                ("000000010000000000000003".to_owned(), older.clone()),
                ("000000010000000000000005".to_owned(), older.clone()),
                ("000000020000000000000006".to_owned(), older.clone()),
                ("00000002.history".to_owned(), older),
            ]
        );
    }
}
