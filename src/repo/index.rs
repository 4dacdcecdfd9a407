//! The per-job listing index, `<prefix>/<job>/index.json.zst`: every
//! committed backup's manifest next to what the repository's listing said
//! about its `manifest.json` object (etag, else size and modification
//! time). A cache, never the truth: a listing uses an entry only while the
//! listing shows the very same manifest object, reads every other manifest,
//! drops entries whose backup is gone, and writes the index back when it
//! was stale. A missing, corrupt or newer-format index is rebuilt; two
//! writers racing lose nothing but a few extra reads next time.

use std::collections::BTreeMap;

use opendal::ErrorKind;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::store::Repository;
use crate::core::manifest::Manifest;
use crate::core::redact::redact_text;

/// The index object's name, beside `backups/`.
pub const INDEX: &str = "index.json.zst";
/// Bumped on incompatible changes; a newer index is rebuilt, not read.
pub const INDEX_FORMAT: u32 = 1;
/// zstd level: the index is written after every commit and prune.
const INDEX_LEVEL: i32 = 3;

/// What a listing says about one manifest object: enough to tell a
/// changed or replaced one from the one the index holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Stamp {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modified: Option<String>,
}

impl Stamp {
    pub(super) fn of(meta: &opendal::Metadata) -> Stamp {
        Stamp {
            etag: meta.etag().map(str::to_owned),
            size: meta.content_length(),
            modified: meta.last_modified().map(|t| t.to_string()),
        }
    }

    /// Whether the stamp tells objects apart: an etag or a time (a size
    /// alone does not), so an index entry may stand in for a read.
    pub(super) fn identifies(&self) -> bool {
        self.etag.is_some() || self.modified.is_some()
    }
}

/// The index's entries by backup id.
pub(super) type Entries = BTreeMap<String, (Stamp, Manifest)>;

/// What was found where the index should be.
pub(super) struct Found {
    pub entries: Entries,
    /// Present but unusable (corrupt, newer, another job's): rewrite it
    /// even when no backup changed.
    pub unusable: bool,
}

#[derive(Debug, Error)]
pub enum IndexError {
    #[error("not zstd-compressed: {0}")]
    Decompress(std::io::Error),
    #[error("not an index: {0}")]
    Parse(serde_json::Error),
    #[error("format version {found} is newer than this vigil's {INDEX_FORMAT}")]
    TooNew { found: u32 },
    #[error("it is the index of job `{found}`")]
    WrongJob { found: String },
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EntryRef<'a> {
    stamp: &'a Stamp,
    manifest: &'a Manifest,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct IndexRef<'a> {
    format_version: u32,
    job: &'a str,
    entries: Vec<EntryRef<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Entry {
    stamp: Stamp,
    manifest: Manifest,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Version {
    format_version: u32,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct IndexFile {
    job: String,
    entries: Vec<Entry>,
}

/// The index object's bytes for `backups` with their stamps.
pub(super) fn encode(
    job: &str,
    backups: &[Manifest],
    stamps: &BTreeMap<String, Stamp>,
) -> Result<Vec<u8>, std::io::Error> {
    let entries = backups
        .iter()
        .filter_map(|m| {
            stamps
                .get(m.backup_id.as_str())
                .map(|stamp| EntryRef { stamp, manifest: m })
        })
        .collect();
    let index = IndexRef {
        format_version: INDEX_FORMAT,
        job,
        entries,
    };
    let json = serde_json::to_vec(&index).map_err(std::io::Error::other)?;
    zstd::bulk::compress(&json, INDEX_LEVEL)
}

/// The entries of `job`'s index object.
pub(super) fn decode(job: &str, bytes: &[u8]) -> Result<Entries, IndexError> {
    let json = zstd::stream::decode_all(bytes).map_err(IndexError::Decompress)?;
    let version: Version = serde_json::from_slice(&json).map_err(IndexError::Parse)?;
    if version.format_version > INDEX_FORMAT {
        return Err(IndexError::TooNew {
            found: version.format_version,
        });
    }
    let index: IndexFile = serde_json::from_slice(&json).map_err(IndexError::Parse)?;
    if index.job != job {
        return Err(IndexError::WrongJob { found: index.job });
    }
    Ok(index
        .entries
        .into_iter()
        .map(|e| (e.manifest.backup_id.to_string(), (e.stamp, e.manifest)))
        .collect())
}

impl Repository {
    pub fn index_path(&self, job: &str) -> String {
        self.join(&[job, INDEX])
    }

    /// The job's index; missing, unreadable or unusable reads as empty
    /// (never fatal: the manifests are the truth).
    pub(super) async fn read_index(&self, job: &str) -> Found {
        let path = self.index_path(job);
        let empty = |unusable| Found {
            entries: Entries::new(),
            unusable,
        };
        let bytes = match self.op().read(&path).await {
            Ok(b) => b.to_bytes(),
            Err(e) if e.kind() == ErrorKind::NotFound => return empty(false),
            Err(e) => {
                let e = self.storage_err("cannot read", &path, e);
                tracing::warn!(repository = %self.name, job, error = %redact_text(&e.to_string(), &[]), "listing index unreadable; reading every manifest");
                return empty(false);
            }
        };
        match decode(job, &bytes) {
            Ok(entries) => Found {
                entries,
                unusable: false,
            },
            Err(e) => {
                tracing::info!(repository = %self.name, job, path, error = %e, "listing index unusable; rebuilding it from the manifests");
                empty(true)
            }
        }
    }

    /// Writes the job's index; best effort (a failure costs reads later).
    pub(super) async fn write_index(
        &self,
        job: &str,
        backups: &[Manifest],
        stamps: &BTreeMap<String, Stamp>,
    ) {
        let path = self.index_path(job);
        let bytes = match encode(job, backups, stamps) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(repository = %self.name, job, path, error = %e, "cannot encode the listing index");
                return;
            }
        };
        if let Err(e) = self.op().write(&path, bytes).await {
            let e = self.storage_err("cannot write", &path, e);
            tracing::warn!(repository = %self.name, job, error = %redact_text(&e.to_string(), &[]), "cannot write the listing index; listings read the manifests until it is written");
        }
    }

    /// Brings the job's index up to date (a listing writes back a stale
    /// one); best effort, for callers that just changed the backups.
    pub async fn refresh_index(&self, job: &str) {
        if let Err(e) = self.list(job).await {
            tracing::warn!(repository = %self.name, job, error = %redact_text(&e.to_string(), &[]), "cannot refresh the listing index");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::manifest::tests::sample;

    fn stamp() -> Stamp {
        Stamp {
            etag: Some("\"abc\"".into()),
            size: 785,
            modified: None,
        }
    }

    #[test]
    fn an_index_round_trips() {
        let m = sample();
        let stamps = BTreeMap::from([(m.backup_id.to_string(), stamp())]);
        let bytes = encode(m.job.as_str(), std::slice::from_ref(&m), &stamps).unwrap();
        let entries = decode(m.job.as_str(), &bytes).unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[m.backup_id.as_str()], (stamp(), m));
    }

    #[test]
    fn a_newer_corrupt_or_foreign_index_is_refused() {
        let m = sample();
        let newer =
            serde_json::json!({ "formatVersion": INDEX_FORMAT + 1, "job": m.job, "entries": [] });
        let newer = zstd::bulk::compress(newer.to_string().as_bytes(), 3).unwrap();
        assert!(matches!(
            decode(m.job.as_str(), &newer),
            Err(IndexError::TooNew { .. })
        ));
        assert!(matches!(
            decode(m.job.as_str(), b"garbage"),
            Err(IndexError::Decompress(_))
        ));
        let bytes = encode("other", std::slice::from_ref(&m), &BTreeMap::new()).unwrap();
        assert!(matches!(
            decode(m.job.as_str(), &bytes),
            Err(IndexError::WrongJob { .. })
        ));
    }

    #[test]
    fn only_an_etag_or_a_time_identifies_an_object() {
        let mut s = stamp();
        assert!(s.identifies());
        s.etag = None;
        assert!(!s.identifies());
        s.modified = Some("2026-11-27T07:00:00Z".into());
        assert!(s.identifies());
    }
}
