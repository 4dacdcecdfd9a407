//! A physical job's WAL archive read against its base backups: the one
//! survey prune, `<job>:wal`, `vigil list` and the restore share.

use chrono::{DateTime, Utc};

use super::JobContext;
use crate::core::manifest::Manifest;
use crate::core::recovery::BaseBackup;
use crate::core::wal::{DEFAULT_SEGMENT_SIZE, WalFile};
use crate::core::wal_chain::{self, ArchivedWal, Histories, WalGap, Window};
use crate::repo::{RepoError, Repository};

/// The committed physical backups of a listing, as selection and the WAL
/// planner see them (manifests of other kinds are left out).
pub fn base_backups(manifests: &[Manifest]) -> Vec<BaseBackup> {
    manifests
        .iter()
        .filter_map(|m| {
            Some(BaseBackup {
                id: m.backup_id.clone(),
                finished_at: m.finished_at,
                facts: m.physical.clone()?,
            })
        })
        .collect()
}

/// The archive and the backups it serves, read once.
#[derive(Debug, Clone)]
pub struct Survey {
    pub backups: Vec<BaseBackup>,
    pub archive: Vec<ArchivedWal>,
    pub histories: Histories,
    pub segment_size: u64,
}

impl Survey {
    pub fn window(&self) -> Option<Window> {
        wal_chain::window(&self.backups, &self.archive, &self.histories)
    }

    /// Gaps in every backup's chain, oldest backup first.
    pub fn gaps(&self) -> Vec<WalGap> {
        self.backups
            .iter()
            .flat_map(|b| {
                wal_chain::reach(b, &self.archive, &self.histories, self.segment_size).gaps
            })
            .collect()
    }

    pub fn last_archived(&self) -> Option<DateTime<Utc>> {
        wal_chain::last_archived(&self.archive)
    }

    /// Whether the archive holds `name` (a WAL file name).
    pub fn holds(&self, name: &str) -> bool {
        self.archive
            .iter()
            .any(|w| w.file.file_name(self.segment_size) == name)
    }

    /// What the state board keeps of it.
    pub fn state(&self) -> crate::state::WalState {
        crate::state::WalState {
            last_archived: self.last_archived(),
            window: self.window(),
            gaps: self.gaps().len(),
        }
    }
}

/// Lists the job's WAL archive and reads its timeline histories for the
/// committed `manifests`.
pub async fn survey(ctx: &JobContext, manifests: &[Manifest]) -> Result<Survey, RepoError> {
    let identities = ctx.identities().unwrap_or_default();
    survey_in(&ctx.repo, &ctx.name, manifests, &identities).await
}

/// [`survey`] without a job context (`vigil list`): encrypted history
/// files are read only with `identities`.
pub async fn survey_in(
    repo: &Repository,
    job: &str,
    manifests: &[Manifest],
    identities: &[age::x25519::Identity],
) -> Result<Survey, RepoError> {
    let mut backups = base_backups(manifests);
    backups.sort_by(|a, b| {
        a.finished_at
            .cmp(&b.finished_at)
            .then_with(|| a.id.cmp(&b.id))
    });
    let segment_size = backups
        .last()
        .map_or(DEFAULT_SEGMENT_SIZE, |b| b.facts.wal_segment_size);
    let objects = repo.list_wal(job, segment_size).await?;
    let read = read_histories(repo, job, &objects, identities).await;
    let archive: Vec<ArchivedWal> = objects
        .into_iter()
        .map(|o| ArchivedWal {
            file: o.file,
            path: o.path,
            last_modified: o.modified,
        })
        .collect();
    let histories = wal_chain::infer_histories(&archive, &read, segment_size);
    Ok(Survey {
        backups,
        archive,
        histories,
        segment_size,
    })
}

/// The `.history` files that can be read: plaintext ones, and encrypted
/// ones when the repository's identity is configured. The others are
/// inferred from the segment names (`wal_chain::infer_histories`).
async fn read_histories(
    repo: &Repository,
    job: &str,
    objects: &[crate::repo::wal::WalObject],
    identities: &[age::x25519::Identity],
) -> Histories {
    let mut histories = Histories::new();
    for o in objects {
        let WalFile::History(timeline) = o.file else {
            continue;
        };
        if o.encrypted && identities.is_empty() {
            continue;
        }
        let stored = match repo.read_wal(&o.path).await {
            Ok(Some(stored)) => stored,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(job = %job, path = %o.path, error = %e, "cannot read a timeline history file; inferring it from segment names");
                continue;
            }
        };
        let parsed = crate::pipeline::wal::decode(&stored, o.encrypted, identities)
            .map_err(|e| e.to_string())
            .and_then(|raw| {
                wal_chain::parse_history(&String::from_utf8_lossy(&raw)).map_err(|e| e.to_string())
            });
        match parsed {
            Ok(entries) => {
                histories.insert(timeline, entries);
            }
            Err(e) => {
                tracing::warn!(job = %job, path = %o.path, error = %e, "timeline history file unreadable; inferring it from segment names");
            }
        }
    }
    histories
}
