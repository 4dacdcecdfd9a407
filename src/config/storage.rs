//! `[repositories.<name>]` and `[jobs.<name>]`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize, Serializer};

use super::{REDACTED, Secret};
use crate::core::schedule::{FreshnessPolicy, Schedule, ScheduleError};

/// A storage repository: any opendal service plus a prefix.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RepositoryConfig {
    /// opendal scheme: `fs`, `s3`, …
    pub scheme: String,
    /// Passed through to opendal. A key ending in `_file` is read from that
    /// file into the key without the suffix (`secret_access_key_file`).
    #[serde(default, serialize_with = "redact_options")]
    pub options: BTreeMap<String, String>,
    /// Path inside the service under which vigil keeps its layout.
    #[serde(default)]
    pub prefix: String,
    pub encryption: Option<EncryptionConfig>,
    /// First multipart part size on object stores, in MiB (it doubles every
    /// `max_parts / 10` parts, so an unknown-length stream always fits).
    #[serde(default = "default_part_size_mib")]
    pub part_size_mib: u32,
    /// The service's part limit (S3: 10,000).
    #[serde(default = "default_max_parts")]
    pub max_parts: u64,
    /// Upload bandwidth cap, e.g. `"20MiB"` (per second); unset: no cap.
    #[serde(default)]
    pub max_upload_rate: Option<String>,
    /// Requests in flight to this service at once; unset: no limit.
    #[serde(default)]
    pub max_concurrent_requests: Option<usize>,
    /// Longest a single request (or one read/write of a stream) may take
    /// before it is cancelled and retried.
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    pub request_timeout: std::time::Duration,
    /// How often `<repo>:writable` writes, reads back and removes a probe object.
    #[serde(default = "default_writable_interval", with = "humantime_serde")]
    pub writable_interval: std::time::Duration,
    /// How long a job lease in the repository (`<prefix>/<job>/locks/run`)
    /// stays valid without renewal; renewed every third of it while a run lasts.
    #[serde(default = "default_lease_ttl", with = "humantime_serde")]
    pub lease_ttl: std::time::Duration,
    /// fs: temp files (partial uploads of killed runs) older than this are
    /// collected by prune; a live run's are always younger.
    #[serde(default = "default_temp_grace", with = "humantime_serde")]
    pub temp_grace: std::time::Duration,
}

fn default_request_timeout() -> std::time::Duration {
    std::time::Duration::from_secs(300)
}
fn default_writable_interval() -> std::time::Duration {
    std::time::Duration::from_secs(300)
}
fn default_temp_grace() -> std::time::Duration {
    std::time::Duration::from_secs(24 * 3600)
}
fn default_lease_ttl() -> std::time::Duration {
    std::time::Duration::from_secs(60)
}

/// Parses a byte rate like `20MiB`, `500KiB/s`, `1GB` or `1048576`.
pub fn parse_rate(text: &str) -> Result<u64, String> {
    let bytes = super::bytes::parse_bytes(
        text.trim().trim_end_matches("/s"),
        "a rate (e.g. \"20MiB\", \"500KiB/s\")",
    )?;
    if !(1.0..=4e9).contains(&bytes) {
        return Err(format!("`{text}` must be between 1 B/s and 4 GB/s"));
    }
    Ok(bytes as u64)
}

fn default_part_size_mib() -> u32 {
    // S3's minimum: the smallest part buffer held while uploading.
    5
}
fn default_max_parts() -> u64 {
    10_000
}

impl RepositoryConfig {
    pub fn part_size(&self) -> usize {
        self.part_size_mib as usize * 1024 * 1024
    }
}

/// Option keys whose values are secrets (redacted when printed).
pub fn is_secret_option(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["secret", "password", "token", "credential", "key"]
        .iter()
        .any(|s| key.contains(s))
        && !matches!(key.as_str(), "access_key_id" | "key_id")
}

fn redact_options<S: Serializer>(
    options: &BTreeMap<String, String>,
    s: S,
) -> Result<S::Ok, S::Error> {
    let shown: BTreeMap<&str, &str> = options
        .iter()
        .map(|(k, v)| {
            (
                k.as_str(),
                if is_secret_option(k) {
                    REDACTED
                } else {
                    v.as_str()
                },
            )
        })
        .collect();
    shown.serialize(s)
}

/// age encryption of a repository's data objects.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct EncryptionConfig {
    /// age x25519 recipients (`age1…`), public keys only.
    #[serde(default)]
    pub recipients: Vec<String>,
    /// A file of recipients, one per line (`#` comments allowed).
    pub recipients_file: Option<PathBuf>,
    /// age identity file for reading (restore, verify).
    pub identity_file: Option<PathBuf>,
}

impl EncryptionConfig {
    /// The recipients as age keys (validation has refused malformed ones).
    pub fn age_recipients(&self) -> Vec<age::x25519::Recipient> {
        self.recipients
            .iter()
            .filter_map(|r| r.parse().ok())
            .collect()
    }
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum JobKind {
    /// Logical backups of PostgreSQL databases (pg_dump).
    Postgres,
    /// Physical base backups of a whole cluster plus its WAL archive
    /// (point-in-time recovery).
    #[serde(rename = "postgres-physical")]
    PostgresPhysical,
    /// A tar stream of file trees.
    Files,
    /// Copies a repository to another, verifying every object.
    Mirror,
}

/// Job keys read only by `kind = "postgres-physical"` jobs.
pub const PHYSICAL_ONLY_KEYS: &[&str] = &[
    "wal_max_age",
    "wal_max_age_fail",
    "checkpoint",
    "archive_timeout",
];

impl JobKind {
    /// The name written in the config (`kind = "..."`).
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Postgres => "postgres",
            JobKind::PostgresPhysical => "postgres-physical",
            JobKind::Files => "files",
            JobKind::Mirror => "mirror",
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    Zstd,
    Gzip,
    Lz4,
    None,
}

impl Compression {
    /// File extension of an object compressed this way (after `.dump`).
    pub fn extension(self) -> &'static str {
        match self {
            Compression::Zstd => ".zst",
            Compression::Gzip => ".gz",
            Compression::Lz4 => ".lz4",
            Compression::None => "",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Compression::Zstd => "zstd",
            Compression::Gzip => "gzip",
            Compression::Lz4 => "lz4",
            Compression::None => "none",
        }
    }

    pub fn parse(name: &str) -> Option<Compression> {
        [
            Compression::Zstd,
            Compression::Gzip,
            Compression::Lz4,
            Compression::None,
        ]
        .into_iter()
        .find(|c| c.as_str() == name)
    }

    pub fn default_level(self) -> i32 {
        match self {
            Compression::Zstd => 3,
            Compression::Gzip => 6,
            Compression::Lz4 | Compression::None => 0,
        }
    }
}

/// `databases = ["a", "b"]` or `databases = "all"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Databases {
    List(Vec<String>),
    /// Every connectable non-template database, plus the cluster's globals.
    All,
}

impl<'de> Deserialize<'de> for Databases {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Word(String),
            List(Vec<String>),
        }
        match Raw::deserialize(d)? {
            Raw::Word(w) if w == "all" => Ok(Databases::All),
            Raw::Word(w) => Err(serde::de::Error::custom(format!(
                "`{w}` is neither \"all\" nor a list of database names (write [\"{w}\"])"
            ))),
            Raw::List(list) => Ok(Databases::List(list)),
        }
    }
}

impl Serialize for Databases {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Databases::All => s.serialize_str("all"),
            Databases::List(list) => list.serialize(s),
        }
    }
}

/// A scheduled backup job.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JobConfig {
    pub kind: JobKind,
    /// libpq URL or key=value string of the source server. The password
    /// goes to pg_dump through its environment, never on its command line.
    #[serde(default)]
    pub source: Secret,
    pub password: Option<Secret>,
    pub password_file: Option<PathBuf>,
    #[serde(default = "no_databases")]
    pub databases: Databases,
    /// `kind = "files"`: the trees to archive (absolute paths).
    #[serde(default)]
    pub paths: Vec<PathBuf>,
    /// Glob patterns (`**/*.tmp`, `/srv/app/cache`) of paths left out.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Stay on the file system each path starts on.
    #[serde(default)]
    pub one_file_system: bool,
    /// Archive what symlinks point to instead of the links.
    #[serde(default)]
    pub follow_symlinks: bool,
    /// Fail the run when a file changes or vanishes while it is read.
    #[serde(default)]
    pub strict: bool,
    /// `kind = "mirror"`: the repository `repository` is copied to.
    pub mirror_to: Option<String>,
    /// `kind = "mirror"`: also delete destination objects the source lacks.
    #[serde(default)]
    pub delete_extraneous: bool,
    /// Name of a `[repositories.<name>]`.
    pub repository: String,
    /// Cron with seconds: `sec min hour day-of-month month day-of-week`.
    pub schedule: Option<String>,
    /// Alternative to `schedule`: a fixed interval.
    #[serde(default, with = "humantime_serde")]
    pub every: Option<Duration>,
    /// IANA zone the schedule is read in.
    #[serde(default = "default_timezone")]
    pub timezone: String,
    #[serde(default)]
    pub compression: Compression,
    /// Codec level (zstd 1–19, gzip 0–9); default zstd 3, gzip 6.
    pub compression_level: Option<i32>,
    /// zstd worker threads; default: the number of CPUs.
    pub compression_workers: Option<u32>,
    /// Freshness: the newest backup older than this warns…
    #[serde(default, with = "humantime_serde")]
    pub max_age: Option<Duration>,
    /// …and older than this fails (default: twice `max_age`). Without
    /// `max_age` both derive from the schedule (`schedule::freshness`).
    #[serde(default, with = "humantime_serde")]
    pub max_age_fail: Option<Duration>,
    /// Consecutive failed runs that fail health; one failure warns.
    #[serde(default = "default_fail_after_failures")]
    pub fail_after_failures: u32,
    /// `postgres-physical`: `<job>:wal` warns once the newest archived WAL
    /// is older than this while completed segments wait to be archived…
    #[serde(default = "default_wal_max_age", with = "humantime_serde")]
    pub wal_max_age: Duration,
    /// …and fails past this.
    #[serde(default = "default_wal_max_age_fail", with = "humantime_serde")]
    pub wal_max_age_fail: Duration,
    /// Abort when the source sends no bytes for this long.
    #[serde(default = "default_stall_timeout", with = "humantime_serde")]
    pub stall_timeout: Duration,
    /// Abort a run that takes longer than this.
    #[serde(default = "default_max_duration", with = "humantime_serde")]
    pub max_duration: Duration,
    /// At start, run at once if a scheduled run was missed.
    #[serde(default = "default_true")]
    pub catch_up: bool,
    /// The pg_dump binary; default: the newest on the machine.
    pub pg_dump: Option<PathBuf>,
    /// Which backups to keep (`[jobs.<name>.retention]`); empty keeps all.
    #[serde(default)]
    pub retention: crate::core::retention::RetentionPolicy,
    /// `kind = "postgres-physical"`: how the base backup's checkpoint is taken.
    #[serde(default)]
    pub checkpoint: Checkpoint,
    /// `kind = "postgres-physical"`: how long a finished base backup waits
    /// for its last WAL segment to reach the repository before failing.
    #[serde(default = "default_archive_timeout", with = "humantime_serde")]
    pub archive_timeout: Duration,
    /// `[jobs.<name>.verify]`: scheduled verification; absent: none.
    pub verify: Option<super::VerifySchedule>,
    /// `[jobs.<name>.drill]`: scheduled restore drills; absent: none.
    pub drill: Option<super::DrillConfig>,
    /// `[jobs.<name>.ping]`: pings at each run's start and end; absent: none.
    pub ping: Option<super::PingConfig>,
}

/// A base backup's starting checkpoint: `fast` at once (an I/O burst on
/// the server), `spread` paced by checkpoint_completion_target.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Checkpoint {
    #[default]
    Fast,
    Spread,
}

impl Checkpoint {
    pub fn as_str(self) -> &'static str {
        match self {
            Checkpoint::Fast => "fast",
            Checkpoint::Spread => "spread",
        }
    }
}

fn default_archive_timeout() -> Duration {
    Duration::from_secs(60)
}

fn no_databases() -> Databases {
    Databases::List(Vec::new())
}

fn default_timezone() -> String {
    "UTC".into()
}
fn default_stall_timeout() -> Duration {
    Duration::from_secs(300)
}
fn default_max_duration() -> Duration {
    Duration::from_secs(24 * 3600)
}
fn default_wal_max_age() -> Duration {
    Duration::from_secs(15 * 60)
}

fn default_wal_max_age_fail() -> Duration {
    Duration::from_secs(3600)
}

fn default_fail_after_failures() -> u32 {
    2
}
fn default_true() -> bool {
    true
}

impl JobConfig {
    /// Every ping configured on the job with its key under `jobs.<name>.`:
    /// the backup runs', the verifications' and the drills'.
    pub fn pings(&self) -> Vec<(&'static str, &super::PingConfig)> {
        let verify = self.verify.as_ref().and_then(|v| v.ping.as_ref());
        let drill = self.drill.as_ref().and_then(|d| d.ping.as_ref());
        [
            ("ping", self.ping.as_ref()),
            ("verify.ping", verify),
            ("drill.ping", drill),
        ]
        .into_iter()
        .filter_map(|(key, ping)| ping.map(|p| (key, p)))
        .collect()
    }

    pub fn level(&self) -> i32 {
        self.compression_level
            .unwrap_or(self.compression.default_level())
    }

    /// When the job runs: its `schedule` (cron, in `timezone`) or `every`.
    pub fn schedule(&self) -> Result<Schedule, ScheduleError> {
        Schedule::required(self.schedule.as_deref(), self.every, &self.timezone)
    }

    /// The settings the job's freshness thresholds derive from.
    pub fn freshness_policy(&self) -> FreshnessPolicy {
        FreshnessPolicy {
            max_duration: self.max_duration,
            max_age: self.max_age,
            max_age_fail: self.max_age_fail,
            fail_after_failures: self.fail_after_failures,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_options_are_recognised() {
        for k in [
            "secret_access_key",
            "password",
            "session_token",
            "sas_token",
            "credential",
            "key",
        ] {
            assert!(is_secret_option(k), "{k}");
        }
        for k in ["access_key_id", "bucket", "endpoint", "root", "region"] {
            assert!(!is_secret_option(k), "{k}");
        }
    }

    /// A job with only the required keys: the shipped defaults (UTC, a day
    /// of `max_duration`, two failures) reach the core's freshness.
    #[test]
    fn a_default_job_schedules_and_derives_freshness() {
        let job: JobConfig = toml::from_str(
            "kind = \"postgres\"\nsource = \"postgres://x@h/db\"\ndatabases = [\"db\"]\nrepository = \"r\"\nschedule = \"0 30 2 * * *\"\n",
        )
        .unwrap();
        let now = chrono::DateTime::parse_from_rfc3339("2026-11-23T09:00:00Z")
            .unwrap()
            .to_utc();
        let schedule = job.schedule().unwrap();
        assert_eq!(
            schedule.next_after(now).map(|t| t.to_rfc3339()),
            Some("2026-11-24T02:30:00+00:00".to_string())
        );
        let f = crate::core::schedule::freshness(&job.freshness_policy(), &schedule, now);
        let h = |n: u64| Duration::from_secs(n * 3600);
        assert_eq!((f.warn_after, f.fail_after, f.grace), (h(36), h(60), h(12)));
        assert_eq!(f.fail_after_failures, 2);
    }

    #[test]
    fn a_job_with_both_schedule_and_every_is_refused() {
        let mut job: JobConfig = toml::from_str(
            "kind = \"postgres\"\nsource = \"postgres://x@h/db\"\ndatabases = [\"db\"]\nrepository = \"r\"\nevery = \"1h\"\n",
        )
        .unwrap();
        assert!(job.schedule().is_ok());
        job.schedule = Some("0 30 2 * * *".into());
        assert!(matches!(job.schedule(), Err(ScheduleError::Conflicting)));
    }

    /// config.toml.example's job as shipped: its schedule builds and its
    /// freshness comes from the schedule (no `max_age` set).
    #[test]
    fn the_example_job_schedules_with_shipped_defaults() {
        let example: toml::Table =
            toml::from_str(include_str!("../../config.toml.example")).unwrap();
        let job: JobConfig = example["jobs"]["orders"].clone().try_into().unwrap();
        assert_eq!(job.max_age, None);
        let now = chrono::DateTime::parse_from_rfc3339("2026-11-23T09:00:00Z")
            .unwrap()
            .to_utc();
        let f = crate::core::schedule::freshness(
            &job.freshness_policy(),
            &job.schedule().unwrap(),
            now,
        );
        let h = |n: u64| Duration::from_secs(n * 3600);
        assert_eq!((f.warn_after, f.fail_after), (h(36), h(60)));
    }
}
