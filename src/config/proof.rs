//! `[jobs.<name>.verify]` and `[jobs.<name>.drill]`: when a job's backups
//! are read back and restored on a schedule to prove them recoverable.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Secret;

/// Scheduled verification: each run reads up to `max_bytes_per_run`
/// stored bytes, continuing where the last run stopped, so every object
/// of every kept backup is re-read within `reverify_after`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct VerifySchedule {
    /// Cron with seconds, read in the job's timezone.
    pub schedule: Option<String>,
    /// Alternative to `schedule`: a fixed interval.
    #[serde(default, with = "humantime_serde")]
    pub every: Option<Duration>,
    /// Stored bytes one run may read (bytes, or "10 GiB"); default: no
    /// limit. A run always reads at least one object.
    #[serde(default, deserialize_with = "super::verify::size_opt")]
    pub max_bytes_per_run: Option<u64>,
    /// How long a good read of an object counts.
    #[serde(default = "default_reverify_after", with = "humantime_serde")]
    pub reverify_after: Duration,
    /// `[jobs.<name>.verify.ping]`: pings at each verification's start and end.
    pub ping: Option<super::PingConfig>,
}

fn default_reverify_after() -> Duration {
    Duration::from_secs(7 * 24 * 3600)
}

/// A restore drill: the newest backup (physical jobs: a random point in
/// the recoverability window) restored into `target`, checked with
/// `check_sql`, timed, and the target dropped.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DrillConfig {
    /// Cron with seconds, read in the job's timezone.
    pub schedule: Option<String>,
    /// Alternative to `schedule`: a fixed interval.
    #[serde(default, with = "humantime_serde")]
    pub every: Option<Duration>,
    /// Logical jobs: a scratch database URL. Physical jobs: a scratch
    /// directory for a throwaway PostgreSQL.
    #[serde(default)]
    pub target: Secret,
    /// Queries that must each return a single true; none: `SELECT true`
    /// (the restored database answers).
    #[serde(default)]
    pub check_sql: Vec<String>,
    /// Logical jobs: which database of a multi-database backup is
    /// restored (required when the job backs up several). Physical jobs:
    /// the database the checks connect to (default `postgres`).
    pub database: Option<String>,
    /// A drill slower than this warns.
    #[serde(default, with = "humantime_serde")]
    pub max_rto: Option<Duration>,
    /// Physical drills: the directory of the server binaries; default: the
    /// newest installed PostgreSQL's.
    pub pg_bin_dir: Option<PathBuf>,
    /// `[jobs.<name>.drill.ping]`: pings at each drill's start and end.
    pub ping: Option<super::PingConfig>,
}

/// Without `check_sql`: the restored database answers a query.
pub const DEFAULT_DRILL_CHECK: &str = "SELECT true";

/// The queries a drill runs: the configured ones, or [`DEFAULT_DRILL_CHECK`].
pub fn drill_check_queries(check_sql: &[String]) -> Vec<String> {
    if check_sql.is_empty() {
        vec![DEFAULT_DRILL_CHECK.to_owned()]
    } else {
        check_sql.to_vec()
    }
}
