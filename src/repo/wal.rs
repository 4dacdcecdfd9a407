//! The WAL archive's objects: one object per WAL file under
//! `<job>/wal/<timeline>/<file name>.zst[.age]`, committed create-only like
//! a manifest, so a killed `wal-push` leaves nothing under the final name.
//!
//! An object is a plaintext header line, then the zstd (then age) payload:
//!
//! ```text
//! vigil-wal 1 sha256=<hex of the raw WAL file> bytes=<raw length>\n
//! ```
//!
//! age output differs on every run, so "already archived with the same
//! content" compares the raw hashes in the headers, never stored bytes;
//! `tail -n +2 OBJECT | age -d -i KEY | zstd -d` restores one by hand.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use opendal::ErrorKind;
use thiserror::Error;

use super::{RepoError, Repository};
use crate::core::wal::WalFile;

/// The header line's first word and format version.
const MAGIC: &str = "vigil-wal 1";
/// Bytes read to find the header (its longest form is 111 bytes).
pub const WAL_HEADER_MAX: usize = 128;
/// PostgreSQL's smallest segment size (`initdb --wal-segsize=1`); names
/// parsed with it print back the same whatever the cluster's size.
pub const MIN_SEGMENT_SIZE: u64 = 1 << 20;
/// PostgreSQL's largest segment size.
pub const MAX_SEGMENT_SIZE: u64 = 1 << 30;
/// Stats run at once while listing on services whose listing has no sizes.
const STATS: usize = 16;

/// What a WAL object's header says about the raw WAL file inside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalHeader {
    /// SHA-256 of the raw file, lowercase hex.
    pub sha256: String,
    pub raw_bytes: u64,
}

#[derive(Debug, Error, PartialEq, Eq)]
#[error("no vigil WAL header (`{MAGIC} sha256=<hex> bytes=<n>` line): {0}")]
pub struct HeaderError(pub String);

impl WalHeader {
    /// The header line, newline included.
    pub fn encode(&self) -> String {
        format!("{MAGIC} sha256={} bytes={}\n", self.sha256, self.raw_bytes)
    }

    /// The header at the start of `stored`, and where the payload begins.
    pub fn decode(stored: &[u8]) -> Result<(WalHeader, usize), HeaderError> {
        let bad = |why: &str| HeaderError(why.to_owned());
        let window = &stored[..stored.len().min(WAL_HEADER_MAX)];
        let end = window
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| bad("no line end in the first 128 bytes"))?;
        let line = std::str::from_utf8(&window[..end]).map_err(|_| bad("not text"))?;
        let rest = line
            .strip_prefix(MAGIC)
            .and_then(|r| r.strip_prefix(" sha256="))
            .ok_or_else(|| bad("unknown format"))?;
        let (sha256, bytes) = rest.split_once(" bytes=").ok_or_else(|| bad("no length"))?;
        if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad("the hash is not 64 hex digits"));
        }
        let raw_bytes = bytes
            .parse()
            .map_err(|_| bad("the length is not a number"))?;
        let header = WalHeader {
            sha256: sha256.to_ascii_lowercase(),
            raw_bytes,
        };
        Ok((header, end + 1))
    }
}

/// The object name's extension after the WAL file name (contract).
pub fn wal_extension(encrypted: bool) -> &'static str {
    if encrypted { ".zst.age" } else { ".zst" }
}

/// Whether a segment size is one PostgreSQL allows (a power of two,
/// 1 MiB to 1 GiB).
pub fn is_segment_size(bytes: u64) -> bool {
    bytes.is_power_of_two() && (MIN_SEGMENT_SIZE..=MAX_SEGMENT_SIZE).contains(&bytes)
}

/// One archived WAL file, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalObject {
    pub file: WalFile,
    /// The object's full path (for [`Repository::delete_wal`]).
    pub path: String,
    pub stored_bytes: u64,
    pub modified: Option<DateTime<Utc>>,
    pub encrypted: bool,
}

/// What [`Repository::push_wal`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    Created,
    /// Something is already stored under the name (compare headers).
    Exists,
}

/// A stored object's size and time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalStat {
    pub stored_bytes: u64,
    pub modified: Option<DateTime<Utc>>,
}

impl Repository {
    /// The object path of `file` (named with `segment_size`).
    pub fn wal_object_path(
        &self,
        job: &str,
        file: &WalFile,
        segment_size: u64,
        encrypted: bool,
    ) -> String {
        self.wal_path(job, file, segment_size, wal_extension(encrypted))
    }

    /// Stores `object` under `path` create-only, in one write: on fs a temp
    /// file, fsync and `link(2)`; on object stores one conditional PUT;
    /// elsewhere (FTP) a look, then a write.
    pub async fn push_wal(&self, path: &str, object: Vec<u8>) -> Result<Pushed, RepoError> {
        crate::failpoint!("wal.before_commit");
        if let Some(root) = &self.fs_root {
            let created = self.fs_create_new(root, path, object).await?;
            return Ok(if created {
                Pushed::Created
            } else {
                Pushed::Exists
            });
        }
        if !self.guarantees.create_only_commit && self.wal_stat(path).await?.is_some() {
            return Ok(Pushed::Exists);
        }
        let written = self
            .op()
            .write_with(path, object)
            .if_not_exists(self.guarantees.create_only_commit)
            .await;
        match written {
            Ok(_) => Ok(Pushed::Created),
            Err(e) if e.kind() == ErrorKind::ConditionNotMatch => Ok(Pushed::Exists),
            Err(e) => Err(self.storage_err("cannot write", path, e)),
        }
    }

    /// The object's size and time, `None` when nothing is stored there
    /// (r-physical waits on the stop segment with it).
    pub async fn wal_stat(&self, path: &str) -> Result<Option<WalStat>, RepoError> {
        match self.op().stat(path).await {
            Ok(meta) => Ok(Some(WalStat {
                stored_bytes: meta.content_length(),
                modified: meta.last_modified().map(to_utc),
            })),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.storage_err("cannot stat", path, e)),
        }
    }

    /// The first [`WAL_HEADER_MAX`] bytes of an object (its header), `None`
    /// when nothing is stored there.
    pub async fn read_wal_head(&self, path: &str) -> Result<Option<Bytes>, RepoError> {
        let read = self
            .op()
            .read_with(path)
            .range(0..WAL_HEADER_MAX as u64)
            .await;
        match read {
            Ok(buffer) => Ok(Some(buffer.to_bytes())),
            // An object shorter than the range: read it whole.
            Err(e) if e.kind() == ErrorKind::RangeNotSatisfied => self.read_wal(path).await,
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.storage_err("cannot read", path, e)),
        }
    }

    /// A whole object (a WAL file compresses to a few MiB at most), `None`
    /// when nothing is stored there.
    pub async fn read_wal(&self, path: &str) -> Result<Option<Bytes>, RepoError> {
        match self.op().read(path).await {
            Ok(buffer) => Ok(Some(buffer.to_bytes())),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.storage_err("cannot read", path, e)),
        }
    }

    /// Every WAL object of `job` on every timeline, ordered by timeline,
    /// then name (a segment before its `.backup` and `.partial` files);
    /// names parsed with `segment_size`. Objects that are not WAL files
    /// (another tool's, temp files) are left out.
    pub async fn list_wal(
        &self,
        job: &str,
        segment_size: u64,
    ) -> Result<Vec<WalObject>, RepoError> {
        let dir = self.wal_dir(job);
        let entries = match self.op().list_with(&dir).recursive(true).await {
            Ok(entries) => entries,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(self.storage_err("cannot list", &dir, e)),
        };
        let found: Vec<_> = entries
            .into_iter()
            .filter_map(|entry| {
                let (file, encrypted) = parse_object_name(entry.path(), segment_size)?;
                Some((entry, file, encrypted))
            })
            .collect();
        let mut objects: Vec<WalObject> = futures::stream::iter(found)
            .map(|(entry, file, encrypted)| async move {
                let meta = entry.metadata();
                let (size, modified) = (meta.content_length(), meta.last_modified());
                // fs and SFTP listings carry no sizes: stat those.
                let stat = if size == 0 || modified.is_none() {
                    self.wal_stat(entry.path()).await?
                } else {
                    None
                };
                Ok::<_, RepoError>(WalObject {
                    file,
                    path: entry.path().to_owned(),
                    stored_bytes: stat.map_or(size, |s| s.stored_bytes),
                    modified: stat.map_or(modified.map(to_utc), |s| s.modified),
                    encrypted,
                })
            })
            .buffered(STATS)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<_, _>>()?;
        objects.sort_by_cached_key(|o| (o.file.timeline(), o.file.file_name(segment_size)));
        Ok(objects)
    }

    /// Deletes one WAL object (retention); a missing one is no error.
    pub async fn delete_wal(&self, path: &str) -> Result<(), RepoError> {
        self.op()
            .delete(path)
            .await
            .map_err(|e| self.storage_err("cannot delete", path, e))
    }
}

/// `.../<timeline>/<wal file name>.zst[.age]` → the file and whether it
/// is encrypted; the timeline directory must match the file's.
fn parse_object_name(path: &str, segment_size: u64) -> Option<(WalFile, bool)> {
    let mut parts = path.rsplit('/');
    let name = parts.next()?;
    let dir = parts.next()?;
    let (stem, encrypted) = match name.strip_suffix(".zst.age") {
        Some(stem) => (stem, true),
        None => (name.strip_suffix(".zst")?, false),
    };
    let file = WalFile::parse(stem, segment_size).ok()?;
    (dir == format!("{:08X}", file.timeline())).then_some((file, encrypted))
}

fn to_utc(t: opendal::raw::Timestamp) -> DateTime<Utc> {
    DateTime::<Utc>::from(std::time::SystemTime::from(t))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::wal::DEFAULT_SEGMENT_SIZE;

    use crate::repo::fs_for_tests as fs_repo;

    #[test]
    fn a_header_round_trips_and_says_where_the_payload_starts() {
        let header = WalHeader {
            sha256: "ab".repeat(32),
            raw_bytes: 16 << 20,
        };
        let mut stored = header.encode().into_bytes();
        let start = stored.len();
        stored.extend_from_slice(b"\x28\xb5\x2f\xfd payload");
        assert_eq!(WalHeader::decode(&stored).unwrap(), (header, start));
        assert!(start <= WAL_HEADER_MAX);
    }

    #[test]
    fn other_bytes_are_not_a_header() {
        for bad in [
            &b"\x28\xb5\x2f\xfd zstd without a header"[..],
            b"vigil-wal 2 sha256=00 bytes=1\n",
            b"vigil-wal 1 sha256=abc bytes=1\n",
            b"vigil-wal 1 sha256=0000000000000000000000000000000000000000000000000000000000000000 bytes=x\n",
            b"",
        ] {
            assert!(WalHeader::decode(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn segment_sizes_are_powers_of_two_from_1_mib_to_1_gib() {
        assert!(is_segment_size(DEFAULT_SEGMENT_SIZE));
        assert!(is_segment_size(1 << 20) && is_segment_size(1 << 30));
        for bad in [0, 1 << 19, 3 << 20, 1 << 31, 16 * 1024 * 1024 + 1] {
            assert!(!is_segment_size(bad), "{bad}");
        }
    }

    #[tokio::test]
    async fn a_push_is_create_only_and_lists_in_wal_order() {
        let dir = tempfile::tempdir().unwrap();
        let repo = fs_repo(dir.path());
        let seg = DEFAULT_SEGMENT_SIZE;
        let names = [
            "000000020000000000000004",
            "00000002.history",
            "000000010000000000000003.partial",
            "000000010000000000000003",
            "000000010000000000000003.00000028.backup",
        ];
        for name in names {
            let file = WalFile::parse(name, seg).unwrap();
            let path = repo.wal_object_path("pg", &file, seg, name.ends_with("history"));
            assert_eq!(
                repo.push_wal(&path, name.as_bytes().to_vec())
                    .await
                    .unwrap(),
                Pushed::Created
            );
        }
        let file = WalFile::parse(names[0], seg).unwrap();
        let path = repo.wal_object_path("pg", &file, seg, false);
        assert_eq!(
            repo.push_wal(&path, b"other".to_vec()).await.unwrap(),
            Pushed::Exists
        );
        assert_eq!(
            repo.read_wal(&path).await.unwrap().unwrap(),
            names[0].as_bytes()
        );
        assert_eq!(
            &repo.read_wal_head(&path).await.unwrap().unwrap()[..],
            names[0].as_bytes()
        );
        // Not WAL: left out of the listing.
        std::fs::write(dir.path().join("pg/wal/00000001/notes.txt"), "x").unwrap();
        std::fs::write(dir.path().join("pg/wal/00000001/00000002.history.zst"), "x").unwrap();

        let listed = repo.list_wal("pg", seg).await.unwrap();
        let order: Vec<String> = listed.iter().map(|o| o.file.file_name(seg)).collect();
        assert_eq!(
            order,
            [
                "000000010000000000000003",
                "000000010000000000000003.00000028.backup",
                "000000010000000000000003.partial",
                "00000002.history",
                "000000020000000000000004",
            ]
        );
        assert_eq!(listed[0].stored_bytes, names[3].len() as u64);
        assert!(listed[0].modified.is_some());
        assert!(listed[3].encrypted && !listed[4].encrypted);

        repo.delete_wal(&listed[0].path).await.unwrap();
        assert_eq!(repo.wal_stat(&listed[0].path).await.unwrap(), None);
        assert_eq!(repo.read_wal(&listed[0].path).await.unwrap(), None);
        assert_eq!(repo.list_wal("none", seg).await.unwrap(), vec![]);
    }
}
