//! `manifest.json`: everything needed to list, verify and restore a backup.
//! Written last (the commit point); unencrypted and free of secrets.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::ids::{BackupId, JobName};
use super::wal::{Lsn, Timeline};

/// Bumped on incompatible changes; readers refuse newer formats.
pub const FORMAT_VERSION: u32 = 1;

/// How far a manifest's times may lie ahead of this host's clock (clocks of
/// writer and reader drift apart); beyond it the manifest is damaged, so a
/// flipped bit in a year cannot keep a job "fresh" for ever.
pub const MAX_CLOCK_SKEW: chrono::TimeDelta = chrono::TimeDelta::minutes(5);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub format_version: u32,
    pub job: JobName,
    pub backup_id: BackupId,
    /// `logical` (pg_dump) or `files` (a tar stream).
    pub kind: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub source: SourceFacts,
    pub compression: CompressionFacts,
    /// Public recipients only; `None` when the objects are plaintext.
    pub encryption: Option<EncryptionFacts>,
    pub objects: Vec<ObjectEntry>,
    /// The audit journal's head at commit, once the journal exists.
    #[serde(default)]
    pub journal_head: Option<JournalHead>,
    pub vigil_version: String,
    /// `files` backups: the trees and what the run found in them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<FilesFacts>,
    /// `physical` backups: where in the WAL the backup starts and ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub physical: Option<PhysicalFacts>,
}

/// What a physical base backup needs to be restored and placed in the WAL
/// archive: a restore replays WAL from `startLsn` and is consistent once it
/// passes `stopLsn`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PhysicalFacts {
    pub start_lsn: Lsn,
    pub stop_lsn: Lsn,
    /// The timeline the backup started on.
    pub timeline: Timeline,
    /// `IDENTIFY_SYSTEM`'s systemid: which cluster the WAL must come from.
    pub system_identifier: String,
    /// `wal_segment_size` in bytes.
    pub wal_segment_size: u64,
    /// The backup label PostgreSQL wrote (`backup_label` in the base tar).
    pub label: String,
    /// Extra tablespaces (the base tar holds `pg_default` and `pg_global`).
    #[serde(default)]
    pub tablespaces: Vec<TablespaceFacts>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TablespaceFacts {
    pub oid: u32,
    /// The tablespace's directory on the source server.
    pub location: String,
    /// The object (in `objects`) holding its tar stream.
    pub object: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FilesFacts {
    pub paths: Vec<String>,
    pub exclude: Vec<String>,
    pub report: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceFacts {
    /// `server_version` as the server reports it, e.g. `15.18 (Debian …)`.
    pub server_version: String,
    pub server_version_num: i32,
    pub pg_dump_version: String,
    /// Host and port of the source, without credentials.
    pub host: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CompressionFacts {
    pub algorithm: String,
    pub level: i32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EncryptionFacts {
    /// `age` (x25519 recipients).
    pub scheme: String,
    pub recipients: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectEntry {
    /// File name inside the backup's directory.
    pub name: String,
    /// The database it holds; `None` for the cluster's globals.
    pub database: Option<String>,
    /// `pg_dump-custom` (pg_restore) or `sql` (psql).
    pub format: String,
    pub stored_bytes: u64,
    pub raw_bytes: u64,
    /// SHA-256 of the stored bytes, lowercase hex (`sha256sum` compatible).
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JournalHead {
    /// The journal's identity, so `vigil audit verify` matches the right one.
    #[serde(default)]
    pub journal: String,
    pub seq: u64,
    pub hash: String,
}

#[derive(Debug, Error, PartialEq)]
pub enum ManifestError {
    #[error("manifest is not valid JSON for format v{FORMAT_VERSION}: {detail}")]
    Parse { detail: String },
    #[error(
        "manifest format v{found} is newer than this vigil reads (v{FORMAT_VERSION}): upgrade vigil"
    )]
    TooNew { found: u32 },
    #[error("manifest is inconsistent: {0}")]
    Invalid(Inconsistency),
    #[error("manifest says {field} {found:?} but lies under {expected:?}")]
    Misplaced {
        field: &'static str,
        found: String,
        expected: String,
    },
    #[error(
        "manifest's {field} {at} lies in the future (this host's clock says {now}; {} allowed for clock skew)",
        humantime::format_duration(MAX_CLOCK_SKEW.to_std().unwrap_or_default())
    )]
    FromTheFuture {
        field: &'static str,
        at: DateTime<Utc>,
        now: DateTime<Utc>,
    },
}

/// Why a restore request names no single object of a backup.
#[derive(Debug, Error, PartialEq)]
pub enum ObjectChoiceError {
    #[error("backup {backup_id} is a files backup: restore it with --to-dir, without --database")]
    FilesBackup { backup_id: BackupId },
    #[error("backup {backup_id} has no objects")]
    NoObjects { backup_id: BackupId },
    #[error("backup {backup_id} has no database `{database}` (it has: {})", available.join(", "))]
    NoSuchDatabase {
        backup_id: BackupId,
        database: String,
        available: Vec<String>,
    },
    #[error("backup {backup_id} holds several databases ({}): choose one with --database", available.join(", "))]
    SeveralDatabases {
        backup_id: BackupId,
        available: Vec<String>,
    },
}

/// What a well-formed manifest may not say.
#[derive(Debug, Error, PartialEq)]
pub enum Inconsistency {
    #[error("no objects")]
    NoObjects,
    #[error("finishedAt is before startedAt")]
    FinishedBeforeStarted,
    #[error("object {object} has a malformed sha256")]
    MalformedSha256 { object: String },
    #[error("object name {name:?} is not a plain file name")]
    NotAFileName { name: String },
}

impl Manifest {
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = serde_json::to_vec_pretty(self).unwrap_or_default();
        bytes.push(b'\n');
        bytes
    }

    pub fn decode(bytes: &[u8]) -> Result<Manifest, ManifestError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Version {
            format_version: u32,
        }
        let version: Version = serde_json::from_slice(bytes).map_err(|e| ManifestError::Parse {
            detail: e.to_string(),
        })?;
        if version.format_version > FORMAT_VERSION {
            return Err(ManifestError::TooNew {
                found: version.format_version,
            });
        }
        let manifest: Manifest =
            serde_json::from_slice(bytes).map_err(|e| ManifestError::Parse {
                detail: e.to_string(),
            })?;
        manifest.check()?;
        Ok(manifest)
    }

    fn check(&self) -> Result<(), ManifestError> {
        let invalid = |why| Err(ManifestError::Invalid(why));
        if self.objects.is_empty() {
            return invalid(Inconsistency::NoObjects);
        }
        if self.finished_at < self.started_at {
            return invalid(Inconsistency::FinishedBeforeStarted);
        }
        for o in &self.objects {
            if o.sha256.len() != 64 || !o.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return invalid(Inconsistency::MalformedSha256 {
                    object: o.name.clone(),
                });
            }
            if o.name.is_empty() || o.name.contains('/') || o.name == "manifest.json" {
                return invalid(Inconsistency::NotAFileName {
                    name: o.name.clone(),
                });
            }
        }
        Ok(())
    }

    /// Cross-checks the manifest against where it was read (`<job>/backups/<dir>/`)
    /// and the clock: its content is never trusted on its own.
    pub fn check_place(
        &self,
        job: &str,
        dir: &str,
        now: DateTime<Utc>,
    ) -> Result<(), ManifestError> {
        let misplaced = |field, found: &str, expected: &str| ManifestError::Misplaced {
            field,
            found: found.to_owned(),
            expected: expected.to_owned(),
        };
        if self.backup_id != dir {
            return Err(misplaced("backupId", &self.backup_id, dir));
        }
        if self.job != job {
            return Err(misplaced("job", &self.job, job));
        }
        for (field, at) in [
            ("startedAt", self.started_at),
            ("finishedAt", self.finished_at),
        ] {
            if at > now + MAX_CLOCK_SKEW {
                return Err(ManifestError::FromTheFuture { field, at, now });
            }
        }
        Ok(())
    }

    /// Saturating: the sizes are the manifest's word, and a damaged one
    /// must not panic (or wrap) whoever lists it.
    pub fn stored_bytes(&self) -> u64 {
        self.objects
            .iter()
            .fold(0u64, |sum, o| sum.saturating_add(o.stored_bytes))
    }

    pub fn raw_bytes(&self) -> u64 {
        self.objects
            .iter()
            .fold(0u64, |sum, o| sum.saturating_add(o.raw_bytes))
    }

    /// The object holding `database`, or the only database object.
    pub fn database_object(
        &self,
        database: Option<&str>,
    ) -> Result<&ObjectEntry, ObjectChoiceError> {
        let backup_id = || self.backup_id.clone();
        if self.kind == "files" {
            // One tar object; `--database` means nothing here.
            return match (database, self.objects.first()) {
                (None, Some(object)) => Ok(object),
                (Some(_), _) => Err(ObjectChoiceError::FilesBackup {
                    backup_id: backup_id(),
                }),
                (None, None) => Err(ObjectChoiceError::NoObjects {
                    backup_id: backup_id(),
                }),
            };
        }
        let dbs: Vec<&ObjectEntry> = self
            .objects
            .iter()
            .filter(|o| o.database.is_some())
            .collect();
        match database {
            Some(name) => dbs
                .into_iter()
                .find(|o| o.database.as_deref() == Some(name))
                .ok_or_else(|| ObjectChoiceError::NoSuchDatabase {
                    backup_id: backup_id(),
                    database: name.to_owned(),
                    available: self.database_names(),
                }),
            None if dbs.len() == 1 => Ok(dbs[0]),
            None => Err(ObjectChoiceError::SeveralDatabases {
                backup_id: backup_id(),
                available: self.database_names(),
            }),
        }
    }

    pub fn database_names(&self) -> Vec<String> {
        self.objects
            .iter()
            .filter_map(|o| o.database.clone())
            .collect()
    }
}

/// A file name for a database's object: safe characters kept, others %XX.
pub fn object_name(database: &str, extension: &str) -> String {
    let mut name = String::new();
    for b in database.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            name.push(b as char);
        } else {
            name.push_str(&format!("%{b:02X}"));
        }
    }
    format!("{name}{extension}")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn sample() -> Manifest {
        let t = DateTime::parse_from_rfc3339("2026-11-23T07:32:44Z")
            .unwrap()
            .with_timezone(&Utc);
        Manifest {
            format_version: FORMAT_VERSION,
            job: "orders".into(),
            backup_id: "20261123T073244Z".into(),
            kind: "logical".into(),
            started_at: t,
            finished_at: t + chrono::Duration::seconds(5),
            source: SourceFacts {
                server_version: "15.18".into(),
                server_version_num: 150018,
                pg_dump_version: "15.18".into(),
                host: "127.0.0.1:5432".into(),
            },
            compression: CompressionFacts {
                algorithm: "zstd".into(),
                level: 3,
            },
            encryption: None,
            objects: vec![ObjectEntry {
                name: "orders.dump.zst".into(),
                database: Some("orders".into()),
                format: "pg_dump-custom".into(),
                stored_bytes: 10,
                raw_bytes: 100,
                sha256: "ab".repeat(32),
            }],
            journal_head: None,
            files: None,
            physical: None,
            vigil_version: "0.1.0".into(),
        }
    }

    #[test]
    fn round_trips() {
        let m = sample();
        assert_eq!(Manifest::decode(&m.encode()).unwrap(), m);
    }

    /// The id newtypes are invisible on disk: `job` and `backupId` stay
    /// plain JSON strings, so manifests written before them still read.
    #[test]
    fn ids_are_plain_strings_in_the_json() {
        let m = sample();
        let json: serde_json::Value = serde_json::from_slice(&m.encode()).unwrap();
        assert_eq!(json["job"], serde_json::json!(m.job.as_str()));
        assert_eq!(json["backupId"], serde_json::json!(m.backup_id.as_str()));
    }

    #[test]
    fn sizes_past_u64_saturate_instead_of_panicking() {
        let mut m = sample();
        let mut big = m.objects[0].clone();
        big.name = "big.dump.zst".into();
        big.stored_bytes = u64::MAX;
        big.raw_bytes = u64::MAX;
        m.objects.push(big);
        assert_eq!(m.stored_bytes(), u64::MAX);
        assert_eq!(m.raw_bytes(), u64::MAX);
    }

    #[test]
    fn refuses_newer_formats_and_inconsistencies() {
        let mut m = sample();
        m.format_version = FORMAT_VERSION + 1;
        assert_eq!(
            Manifest::decode(&m.encode()),
            Err(ManifestError::TooNew {
                found: FORMAT_VERSION + 1
            })
        );
        let mut m = sample();
        m.objects[0].sha256 = "xyz".into();
        let malformed = Manifest::decode(&m.encode()).unwrap_err();
        assert_eq!(
            malformed,
            ManifestError::Invalid(Inconsistency::MalformedSha256 {
                object: m.objects[0].name.clone()
            })
        );
        assert_eq!(
            malformed.to_string(),
            format!(
                "manifest is inconsistent: object {} has a malformed sha256",
                m.objects[0].name
            )
        );
        let mut m = sample();
        m.objects[0].name = "../etc/passwd".into();
        assert!(matches!(
            Manifest::decode(&m.encode()),
            Err(ManifestError::Invalid(Inconsistency::NotAFileName { .. }))
        ));
        assert!(matches!(
            Manifest::decode(b"{\"formatVersion\": 1}"),
            Err(ManifestError::Parse { .. })
        ));
        assert!(matches!(
            Manifest::decode(b"garbage"),
            Err(ManifestError::Parse { .. })
        ));
    }

    #[test]
    fn a_manifest_must_match_its_place_and_the_clock() {
        let m = sample();
        let now = m.finished_at;
        assert_eq!(m.check_place("orders", &m.backup_id, now), Ok(()));
        // Within the allowed skew: a writer whose clock runs a little ahead.
        assert_eq!(
            m.check_place("orders", &m.backup_id, now - MAX_CLOCK_SKEW),
            Ok(())
        );
        assert!(matches!(
            m.check_place("orders", "20261123T073245Z", now),
            Err(ManifestError::Misplaced {
                field: "backupId",
                ..
            })
        ));
        assert!(matches!(
            m.check_place("billing", &m.backup_id, now),
            Err(ManifestError::Misplaced { field: "job", .. })
        ));
        let mut future = sample();
        future.finished_at = DateTime::parse_from_rfc3339("3026-11-23T07:32:49Z")
            .unwrap()
            .with_timezone(&Utc);
        let err = future
            .check_place("orders", &future.backup_id, now)
            .unwrap_err();
        assert!(
            matches!(
                err,
                ManifestError::FromTheFuture {
                    field: "finishedAt",
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("3026-11-23"), "{err}");
        let late = m.started_at - MAX_CLOCK_SKEW - chrono::TimeDelta::seconds(1);
        assert!(matches!(
            m.check_place("orders", &m.backup_id, late),
            Err(ManifestError::FromTheFuture {
                field: "startedAt",
                ..
            })
        ));
    }

    #[test]
    fn picks_database_objects() {
        let mut m = sample();
        assert_eq!(m.database_object(None).unwrap().name, "orders.dump.zst");
        m.objects.push(ObjectEntry {
            name: "b.dump.zst".into(),
            database: Some("b".into()),
            ..m.objects[0].clone()
        });
        let several = m.database_object(None).unwrap_err();
        assert!(matches!(
            several,
            ObjectChoiceError::SeveralDatabases { .. }
        ));
        assert!(several.to_string().contains("--database"), "{several}");
        assert_eq!(m.database_object(Some("b")).unwrap().name, "b.dump.zst");
        assert_eq!(
            m.database_object(Some("c")).unwrap_err().to_string(),
            format!(
                "backup {} has no database `c` (it has: orders, b)",
                m.backup_id
            )
        );
    }

    #[test]
    fn object_names_are_safe() {
        assert_eq!(object_name("orders", ".dump.zst"), "orders.dump.zst");
        assert_eq!(object_name("my db/ü", ".dump"), "my%20db%2F%C3%BC.dump");
    }
}
