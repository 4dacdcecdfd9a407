//! What proves a job's backups recoverable: the verification and drill
//! records each job keeps in its repository (`<job>/proofs/verify.json`,
//! `<job>/proofs/drill.json`), read by the health checks, the metrics,
//! `vigil list` and the status page. Plain data; the repository layer
//! reads and writes it, the jobs fill it in.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Bumped on incompatible changes; a reader treats a newer record as absent.
pub const PROOFS_FORMAT: u32 = 1;

/// An object that did not read back as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BadObject {
    pub backup_id: String,
    pub object: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub found_sha256: Option<String>,
    pub error: String,
}

/// A bad object as the verification record keeps it until it is resolved
/// (its backup removed, or pinned as evidence with a newer good backup).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BadFinding {
    #[serde(flatten)]
    pub object: BadObject,
    pub found_at: DateTime<Utc>,
}

/// One verification run (`vigil verify` or a scheduled one).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifyRun {
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    /// `manual`, `schedule`, `api`.
    pub trigger: String,
    pub ok: bool,
    /// Objects were decoded and their content read, not only hashed.
    pub content_checked: bool,
    pub objects: u64,
    pub bytes_read: u64,
    pub bad_objects: u64,
    /// Why the run could not be carried out (not a bad object).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Physical jobs: gaps found in the kept backups' WAL chains.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub wal_gaps: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// `<job>/proofs/verify.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifyRecord {
    pub format_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<VerifyRun>,
    /// The last run that found nothing bad.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success: Option<DateTime<Utc>>,
    /// When each object last read back good, keyed `<backup id>/<object>`:
    /// the scheduled verification's cursor.
    #[serde(default)]
    pub verified: BTreeMap<String, DateTime<Utc>>,
    /// Bad objects not resolved yet.
    #[serde(default)]
    pub bad: Vec<BadFinding>,
    /// Bad objects resolved by pinning their backup as evidence behind a
    /// newer good backup: not re-read by scheduled runs, back in `bad`
    /// if the pin is removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub evidence: Vec<BadFinding>,
    /// When the oldest kept backup holding an object never read good
    /// finished (as of the last run): such objects are overdue once it is
    /// older than `reverify_after`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest_unverified: Option<DateTime<Utc>>,
}

impl Default for VerifyRecord {
    fn default() -> Self {
        VerifyRecord {
            format_version: PROOFS_FORMAT,
            last_run: None,
            last_success: None,
            verified: BTreeMap::new(),
            bad: Vec::new(),
            evidence: Vec::new(),
            oldest_unverified: None,
        }
    }
}

/// One restore drill (scheduled or `vigil drill`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DrillRun {
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    /// `manual`, `schedule`, `api`.
    pub trigger: String,
    pub ok: bool,
    /// The backup restored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_id: Option<String>,
    /// Physical jobs: the recovery target chosen inside the window
    /// (RFC 3339 time), proving the window rather than the newest backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery_target: Option<String>,
    /// Start of the restore to a database answering every check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rto_seconds: Option<f64>,
    /// The check query that did not return a single true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_query: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `<job>/proofs/drill.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DrillRecord {
    pub format_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<DrillRun>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success: Option<DrillRun>,
}

impl Default for DrillRecord {
    fn default() -> Self {
        DrillRecord {
            format_version: PROOFS_FORMAT,
            last_run: None,
            last_success: None,
        }
    }
}

/// The key of one object in [`VerifyRecord::verified`].
pub fn object_key(backup_id: &str, object: &str) -> String {
    format!("{backup_id}/{object}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_in_camel_case() {
        let t = DateTime::parse_from_rfc3339("2026-11-27T03:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let mut v = VerifyRecord::default();
        v.verified
            .insert(object_key("20261127T030000Z", "data.dump.zst"), t);
        v.bad.push(BadFinding {
            object: BadObject {
                backup_id: "20261127T030000Z".into(),
                object: "data.dump.zst".into(),
                expected_sha256: Some("aa".into()),
                found_sha256: Some("bb".into()),
                error: "hash mismatch".into(),
            },
            found_at: t,
        });
        let json = serde_json::to_string(&v).unwrap();
        assert!(json.contains("\"formatVersion\":1"), "{json}");
        assert!(json.contains("\"backupId\":\"20261127T030000Z\""), "{json}");
        assert!(json.contains("\"foundAt\""), "{json}");
        assert_eq!(serde_json::from_str::<VerifyRecord>(&json).unwrap(), v);
        let d = DrillRecord::default();
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(json, "{\"formatVersion\":1}");
    }
}
