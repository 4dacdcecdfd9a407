//! The per-job listing index, `<prefix>/<job>/index.json.zst`: every
//! committed backup's manifest next to what the repository's listing said
//! about its `manifest.json` object (etag, else size and modification
//! time). A cache, never the truth: a listing uses an entry only while the
//! listing shows the very same manifest object, reads every other manifest,
//! drops entries whose backup is gone, and writes the index back when it
//! was stale. A missing, corrupt or newer-format index is rebuilt; two
//! writers racing lose nothing but a few extra reads next time.
//!
//! A commit adds its own entry and a prune drops its deleted ones (a stat,
//! one read and one write of the index, whatever the number of backups);
//! only a listing repairs, with the full listing it makes anyway.

use std::collections::BTreeMap;
use std::fmt;
use std::io::BufReader;

use opendal::ErrorKind;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use thiserror::Error;

use super::MANIFEST;
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
    /// The same stamp from a listing's entry and from a stat of the object,
    /// so a commit can add its entry without a listing: with an etag the
    /// time is left out (S3 lists it to the millisecond but a HEAD says it
    /// to the second), and the etag's quotes are trimmed (Azure lists it
    /// bare and quotes it in a HEAD).
    pub(super) fn of(meta: &opendal::Metadata) -> Stamp {
        Stamp {
            etag: meta.etag().map(str::to_owned),
            size: meta.content_length(),
            modified: meta.last_modified().map(|t| t.to_string()),
        }
        .normalized()
    }

    /// The stamp in that one form; also applied to the entries of indexes
    /// written before it (quoted etags with times), so they stay current.
    fn normalized(self) -> Stamp {
        let etag = self
            .etag
            .as_deref()
            .map(|e| e.trim_start_matches("W/").trim_matches('"'))
            .filter(|e| !e.is_empty())
            .map(str::to_owned);
        let modified = match etag {
            Some(_) => None,
            None => self.modified,
        };
        Stamp {
            etag,
            size: self.size,
            modified,
        }
    }

    /// Whether the stamp tells objects apart: an etag or a time (a size
    /// alone does not), so an index entry may stand in for a read.
    pub(super) fn identifies(&self) -> bool {
        self.etag.is_some() || self.modified.is_some()
    }
}

/// The index's entries by backup id; boxed, so the map's nodes stay small
/// and 10,000 entries take no more than their own size.
pub(super) type Entries = BTreeMap<String, Box<(Stamp, Manifest)>>;

/// What was found where the index should be.
pub(super) enum Found {
    /// Read and decoded (empty when there is no index yet).
    Entries(Entries),
    /// Present but unusable (corrupt, newer, another job's): rewrite it
    /// even when no backup changed.
    Unusable,
    /// Could not be read (the service failed): left alone.
    Unreadable,
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

impl From<serde_json::Error> for IndexError {
    /// A read error inside the JSON is the zstd stream's.
    fn from(e: serde_json::Error) -> Self {
        if e.is_io() {
            IndexError::Decompress(e.into())
        } else {
            IndexError::Parse(e)
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EntryRef<'a> {
    stamp: &'a Stamp,
    manifest: &'a Manifest,
}

/// `formatVersion` is written first: a reader checks it before the body.
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

#[derive(Deserialize, PartialEq)]
#[serde(field_identifier, rename_all = "camelCase")]
enum Field {
    FormatVersion,
    Job,
    Entries,
    #[serde(other)]
    Other,
}

/// What one pass over an index document found.
enum Decoded {
    Index(Entries),
    TooNew(u32),
    WrongJob(String),
}

/// Reads the document in one pass: the version (first), the job, then
/// each entry straight into the map, with no whole-document buffer.
struct IndexVisitor<'a> {
    job: &'a str,
}

impl<'de> Visitor<'de> for IndexVisitor<'_> {
    type Value = Decoded;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a listing index object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Decoded, A::Error> {
        if map.next_key::<Field>()? != Some(Field::FormatVersion) {
            return Err(de::Error::custom("`formatVersion` is not the first key"));
        }
        let version: u32 = map.next_value()?;
        if version > INDEX_FORMAT {
            skip_rest(&mut map)?;
            return Ok(Decoded::TooNew(version));
        }
        let (mut job, mut entries) = (None, None);
        while let Some(field) = map.next_key::<Field>()? {
            match field {
                Field::Job => {
                    let found: String = map.next_value()?;
                    if found != self.job {
                        skip_rest(&mut map)?;
                        return Ok(Decoded::WrongJob(found));
                    }
                    job = Some(found);
                }
                Field::Entries => entries = Some(map.next_value_seed(EntriesSeed)?),
                Field::FormatVersion | Field::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        job.ok_or_else(|| de::Error::missing_field("job"))?;
        entries
            .map(Decoded::Index)
            .ok_or_else(|| de::Error::missing_field("entries"))
    }
}

fn skip_rest<'de, A: MapAccess<'de>>(map: &mut A) -> Result<(), A::Error> {
    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
    Ok(())
}

/// The `entries` array, each entry moved into the map as it is parsed.
struct EntriesSeed;

impl<'de> DeserializeSeed<'de> for EntriesSeed {
    type Value = Entries;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Entries, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for EntriesSeed {
    type Value = Entries;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of index entries")
    }

    fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<Entries, S::Error> {
        let mut entries = Entries::new();
        while let Some(e) = seq.next_element::<Entry>()? {
            entries.insert(
                e.manifest.backup_id.to_string(),
                Box::new((e.stamp.normalized(), e.manifest)),
            );
        }
        Ok(entries)
    }
}

/// The index object's bytes for these `(stamp, manifest)` entries.
pub(super) fn encode<'a>(
    job: &str,
    entries: impl Iterator<Item = (&'a Stamp, &'a Manifest)>,
) -> Result<Vec<u8>, std::io::Error> {
    let index = IndexRef {
        format_version: INDEX_FORMAT,
        job,
        entries: entries
            .map(|(stamp, manifest)| EntryRef { stamp, manifest })
            .collect(),
    };
    let json = serde_json::to_vec(&index).map_err(std::io::Error::other)?;
    zstd::bulk::compress(&json, INDEX_LEVEL)
}

/// The entries of `job`'s index object, decoded as it decompresses.
pub(super) fn decode(job: &str, bytes: &[u8]) -> Result<Entries, IndexError> {
    let zstd = zstd::stream::read::Decoder::with_buffer(bytes).map_err(IndexError::Decompress)?;
    let mut json = serde_json::Deserializer::from_reader(BufReader::new(zstd));
    let decoded = json.deserialize_map(IndexVisitor { job })?;
    json.end()?;
    match decoded {
        Decoded::Index(entries) => Ok(entries),
        Decoded::TooNew(found) => Err(IndexError::TooNew { found }),
        Decoded::WrongJob(found) => Err(IndexError::WrongJob { found }),
    }
}

impl Repository {
    pub fn index_path(&self, job: &str) -> String {
        self.join(&[job, INDEX])
    }

    /// The job's index; a missing one reads as empty (never fatal: the
    /// manifests are the truth).
    pub(super) async fn read_index(&self, job: &str) -> Found {
        let path = self.index_path(job);
        let bytes = match self.op().read(&path).await {
            Ok(b) => b.to_bytes(),
            Err(e) if e.kind() == ErrorKind::NotFound => return Found::Entries(Entries::new()),
            Err(e) => {
                let e = self.storage_err("cannot read", &path, e);
                tracing::warn!(repository = %self.name, job, error = %redact_text(&e.to_string(), &[]), "listing index unreadable; reading every manifest");
                return Found::Unreadable;
            }
        };
        match decode(job, &bytes) {
            Ok(entries) => Found::Entries(entries),
            Err(e) => {
                tracing::info!(repository = %self.name, job, path, error = %e, "listing index unusable; rebuilding it from the manifests");
                Found::Unusable
            }
        }
    }

    /// Writes the job's index; best effort (a failure costs reads later).
    pub(super) async fn write_index<'a>(
        &self,
        job: &str,
        entries: impl Iterator<Item = (&'a Stamp, &'a Manifest)>,
    ) {
        let path = self.index_path(job);
        let bytes = match encode(job, entries) {
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

    /// Brings the job's index up to date with a full listing (a listing
    /// writes back a stale one); best effort, for a mirror's destination.
    pub async fn refresh_index(&self, job: &str) {
        if let Err(e) = self.list(job).await {
            tracing::warn!(repository = %self.name, job, error = %redact_text(&e.to_string(), &[]), "cannot refresh the listing index");
        }
    }

    /// Adds a just committed manifest to its job's index, with the stamp a
    /// listing would record (from a stat of the object); best effort, under
    /// the job's lock.
    pub(super) async fn index_committed(&self, manifest: &Manifest) {
        let (job, id) = (manifest.job.as_str(), manifest.backup_id.as_str());
        let path = self.object_path(job, id, MANIFEST);
        let stamp = match self.op().stat(&path).await {
            Ok(meta) => Stamp::of(&meta),
            Err(e) => {
                let e = self.storage_err("cannot stat", &path, e);
                tracing::warn!(repository = %self.name, job, error = %redact_text(&e.to_string(), &[]), "the listing index misses the new backup; the next listing reads its manifest");
                return;
            }
        };
        if !stamp.identifies() {
            // A listing could not use the entry: it reads this manifest.
            return;
        }
        self.update_index(job, |entries| {
            entries.insert(id.to_owned(), Box::new((stamp, manifest.clone())));
        })
        .await;
    }

    /// Drops deleted backups from the job's index; best effort, under the
    /// job's lock (an entry left behind is dropped by the next listing).
    pub async fn index_forget(&self, job: &str, deleted: &[&str]) {
        if deleted.is_empty() {
            return;
        }
        self.update_index(job, |entries| {
            for id in deleted {
                entries.remove(*id);
            }
        })
        .await;
    }

    /// Read, change, write back. An unusable or unreadable index is left
    /// for the next listing to rebuild (writing only the change would cost
    /// that listing every other manifest's read); a missing one starts
    /// with this change (the listing reads the rest).
    async fn update_index(&self, job: &str, change: impl FnOnce(&mut Entries)) {
        let Found::Entries(mut entries) = self.read_index(job).await else {
            return;
        };
        change(&mut entries);
        self.write_index(job, entries.values().map(|e| (&e.0, &e.1)))
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::manifest::tests::sample;

    fn stamp() -> Stamp {
        Stamp {
            etag: Some("abc".into()),
            size: 785,
            modified: None,
        }
    }

    fn encode_one(job: &str, m: &Manifest) -> Vec<u8> {
        encode(job, std::iter::once((&stamp(), m))).unwrap()
    }

    #[test]
    fn an_index_round_trips() {
        let m = sample();
        let bytes = encode_one(m.job.as_str(), &m);
        let entries = decode(m.job.as_str(), &bytes).unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(*entries[m.backup_id.as_str()], (stamp(), m));
    }

    fn zstd_of(json: &str) -> Vec<u8> {
        zstd::bulk::compress(json.as_bytes(), 3).unwrap()
    }

    #[test]
    fn a_newer_corrupt_or_foreign_index_is_refused() {
        let m = sample();
        let newer = format!(
            r#"{{"formatVersion":{},"job":"{}","entries":[{{"whatever":1}}],"more":[]}}"#,
            INDEX_FORMAT + 1,
            m.job
        );
        assert!(matches!(
            decode(m.job.as_str(), &zstd_of(&newer)),
            Err(IndexError::TooNew { found }) if found == INDEX_FORMAT + 1
        ));
        assert!(matches!(
            decode(m.job.as_str(), b"garbage"),
            Err(IndexError::Decompress(_))
        ));
        let truncated = encode_one(m.job.as_str(), &m);
        assert!(matches!(
            decode(m.job.as_str(), &truncated[..truncated.len() / 2]),
            Err(IndexError::Decompress(_))
        ));
        assert!(matches!(
            decode(m.job.as_str(), &encode_one("other", &m)),
            Err(IndexError::WrongJob { found }) if found == "other"
        ));
    }

    #[test]
    fn the_version_must_come_first_and_the_document_end() {
        let m = sample();
        let late = format!(r#"{{"job":"{}","entries":[],"formatVersion":1}}"#, m.job);
        assert!(matches!(
            decode(m.job.as_str(), &zstd_of(&late)),
            Err(IndexError::Parse(_))
        ));
        let trailing = format!(r#"{{"formatVersion":1,"job":"{}","entries":[]}} x"#, m.job);
        assert!(matches!(
            decode(m.job.as_str(), &zstd_of(&trailing)),
            Err(IndexError::Parse(_))
        ));
        let fine = format!(r#"{{"formatVersion":1,"job":"{}","entries":[]}}"#, m.job);
        assert!(decode(m.job.as_str(), &zstd_of(&fine)).unwrap().is_empty());
    }

    #[test]
    fn a_stat_and_a_listing_give_the_same_stamp() {
        let meta = |etag: Option<&str>, time: &str| {
            let mut b = opendal::MetadataBuilder::file(785);
            b.last_modified(time.parse().unwrap());
            if let Some(etag) = etag {
                b.etag(etag);
            }
            b.build()
        };
        let listed = meta(Some("abc"), "2026-11-27T07:00:00.123Z");
        let headed = meta(Some("\"abc\""), "2026-11-27T07:00:00Z");
        assert_eq!(Stamp::of(&listed), stamp());
        assert_eq!(Stamp::of(&headed), stamp());
        let s = Stamp::of(&meta(None, "2026-11-27T07:00:00.123Z"));
        assert_eq!((s.etag, s.modified.is_some()), (None, true));
    }

    #[test]
    fn an_older_index_entry_reads_in_the_stamp_a_stat_gives() {
        let m = sample();
        let older = Stamp {
            etag: Some("\"abc\"".into()),
            size: 785,
            modified: Some("2026-11-27 07:00:00.123 UTC".into()),
        };
        let bytes = encode(m.job.as_str(), std::iter::once((&older, &m))).unwrap();
        let entries = decode(m.job.as_str(), &bytes).unwrap();
        assert_eq!(entries[m.backup_id.as_str()].0, stamp());
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
