//! `<job>:wal` for `postgres-physical` jobs: is the source's WAL reaching
//! the repository, and what can be restored from it. Reads
//! `pg_stat_archiver` on the source and lists the job's WAL archive; the
//! window and the newest archived time go to the job board (metrics).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::FutureExt;
use futures::future::BoxFuture;

use super::Check;
use super::jobs::short;
use crate::config::HealthConfig;
use crate::core::health::{CheckSpec, Observation, Status};
use crate::core::wal_chain::WalGap;
use crate::jobs::JobContext;
use crate::jobs::pitr::Survey;
use crate::state::Shared;

/// `pg_stat_archiver` and the archiving settings of the source.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Archiver {
    pub archive_mode: String,
    pub archived_count: i64,
    pub last_archived_wal: Option<String>,
    pub last_archived_time: Option<DateTime<Utc>>,
    pub failed_count: i64,
    pub last_failed_wal: Option<String>,
    pub last_failed_time: Option<DateTime<Utc>>,
    /// The WAL file being written now (`None` on a standby).
    pub current_wal: Option<String>,
}

const ARCHIVER_SQL: &str = "SELECT current_setting('archive_mode'), archived_count, \
     last_archived_wal, last_archived_time, failed_count, last_failed_wal, last_failed_time, \
     CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_walfile_name(pg_current_wal_lsn()) END \
     FROM pg_stat_archiver";

/// Why `pg_stat_archiver` could not be read.
#[derive(Debug, thiserror::Error)]
enum ArchiverError {
    #[error(transparent)]
    Connect(#[from] crate::jobs::context::SourceError),
    #[error("{}", crate::core::redact::error_chain(.0))]
    Query(#[from] tokio_postgres::Error),
}

/// What the repository says, for grading.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ArchiveFacts {
    pub newest: Option<DateTime<Utc>>,
    pub backups: usize,
    pub restorable: bool,
    pub gaps: Vec<WalGap>,
    /// The archiver's last archived file is in the repository.
    pub holds_last_archived: bool,
}

/// Whether completed segments wait to be archived: the file being written
/// is beyond the one after the last archived (same timeline or not).
fn segments_waiting(a: &Archiver) -> bool {
    let number = |name: &str| {
        let n = name.get(8..24)?;
        u64::from_str_radix(&n[..8], 16)
            .ok()
            .zip(u64::from_str_radix(&n[8..], 16).ok())
    };
    match (a.current_wal.as_deref(), a.last_archived_wal.as_deref()) {
        (Some(current), Some(last)) => match (number(current), number(last)) {
            // Compared as (log, seg) pairs: the next segment may start a new log.
            (Some(c), Some(l)) => c > next(l),
            _ => true,
        },
        _ => true,
    }
}

fn next((log, seg): (u64, u64)) -> (u64, u64) {
    // 16 MiB segments: 256 per log; other sizes only make this lenient.
    if seg >= 0xFF {
        (log + 1, 0)
    } else {
        (log, seg + 1)
    }
}

type Verdict = (Status, Option<String>);

fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The archiver's own word: archiving off, failing, or late.
fn grade_archiver(
    a: &Archiver,
    newest: Option<DateTime<Utc>>,
    thresholds: (Duration, Duration),
    now: DateTime<Utc>,
) -> Verdict {
    if a.archive_mode == "off" {
        return (
            Status::Fail,
            Some("archive_mode is off on the source: set archive_mode = on and archive_command (README, \"Point-in-time recovery\") and restart PostgreSQL".into()),
        );
    }
    if a.failed_count > 0 && a.last_failed_time > a.last_archived_time {
        let wal = a.last_failed_wal.as_deref().unwrap_or("?");
        let when = a.last_failed_time.map(stamp).unwrap_or_default();
        return (
            Status::Fail,
            Some(format!(
                "archive_command is failing: the last attempt ({wal} at {when}) failed after the last success; the server's log says why"
            )),
        );
    }
    let last = a.last_archived_time.max(newest);
    let Some(last) = last else {
        return (
            Status::Fail,
            Some("no WAL has been archived yet: is archive_command set to `vigil ... wal-push JOB %p`?".into()),
        );
    };
    let age = (now - last).to_std().unwrap_or_default();
    let (warn, fail) = thresholds;
    if !segments_waiting(a) || age < warn {
        return (Status::Pass, None);
    }
    let status = if age >= fail {
        Status::Fail
    } else {
        Status::Warn
    };
    let limit = if status == Status::Fail { fail } else { warn };
    (
        status,
        Some(format!(
            "the newest archived WAL is {} old while completed segments wait (limit {}): the archiver is falling behind",
            short(age),
            short(limit)
        )),
    )
}

/// The repository's side: the archiver's last file must be there, and the
/// kept backups' chains must be whole.
fn grade_repository(a: Option<&Archiver>, r: &ArchiveFacts) -> Verdict {
    if let Some(last) = a.and_then(|a| a.last_archived_wal.as_deref())
        && !r.holds_last_archived
        && !last.ends_with(".history")
    {
        return (
            Status::Fail,
            Some(format!(
                "the server archived {last} but the repository lacks it: does archive_command push to this job with this config?"
            )),
        );
    }
    if r.backups > 0 && !r.restorable {
        return (
            Status::Fail,
            Some(
                "no base backup can be restored: the WAL up to each backup's stop is incomplete"
                    .into(),
            ),
        );
    }
    if let Some(gap) = r.gaps.first() {
        return (
            Status::Warn,
            Some(format!(
                "{gap} ({} gap(s) in all; restores stop before a gap)",
                r.gaps.len()
            )),
        );
    }
    (Status::Pass, None)
}

/// Grades `<job>:wal`; observed value: the newest archived WAL's age in s.
pub fn grade_wal(
    archiver: Result<&Archiver, &str>,
    repo: &ArchiveFacts,
    thresholds: (Duration, Duration),
    now: DateTime<Utc>,
) -> Observation {
    let mut verdicts = vec![grade_repository(archiver.ok(), repo)];
    match archiver {
        Ok(a) => verdicts.push(grade_archiver(a, repo.newest, thresholds, now)),
        Err(e) => {
            let age = repo.newest.map(|t| (now - t).to_std().unwrap_or_default());
            let status = match age {
                Some(age) if age < thresholds.1 => Status::Warn,
                _ => Status::Fail,
            };
            verdicts.push((
                status,
                Some(format!("cannot read pg_stat_archiver on the source: {e}")),
            ));
        }
    }
    verdicts.sort_by_key(|(status, _)| std::cmp::Reverse(*status));
    let status = verdicts[0].0;
    let output: Vec<String> = verdicts.into_iter().filter_map(|(_, o)| o).collect();
    let last = archiver
        .ok()
        .and_then(|a| a.last_archived_time)
        .max(repo.newest);
    let observation = Observation::new(
        status,
        last.map(|t| (now - t).num_milliseconds() as f64 / 1000.0),
        Some("s"),
    );
    if output.is_empty() {
        observation
    } else {
        observation.with_output(output.join("; "))
    }
}

/// `<job>:wal`: critical (a physical job without its WAL restores nothing
/// past its last base backup).
pub struct WalCheck {
    pub ctx: JobContext,
    pub shared: Arc<Shared>,
}

impl WalCheck {
    async fn archiver(&self) -> Result<Archiver, ArchiverError> {
        let client = self.ctx.open_source().await?;
        let row = client.query_one(ARCHIVER_SQL, &[]).await?;
        let time = |i: usize| {
            row.get::<_, Option<std::time::SystemTime>>(i)
                .map(DateTime::<Utc>::from)
        };
        Ok(Archiver {
            archive_mode: row.get(0),
            archived_count: row.get(1),
            last_archived_wal: row.get(2),
            last_archived_time: time(3),
            failed_count: row.get(4),
            last_failed_wal: row.get(5),
            last_failed_time: time(6),
            current_wal: row.get(7),
        })
    }

    async fn observe(&self) -> Observation {
        // The archiver first: what it reports archived is listed after.
        let archiver = self
            .archiver()
            .await
            .map_err(|e| self.ctx.redact(&e.to_string()));
        let listing = match self.ctx.repo.list(&self.ctx.name).await {
            Ok(listing) => listing,
            Err(e) => return Observation::fail(format!("cannot list the job's backups: {e}")),
        };
        let survey = match crate::jobs::pitr::survey(&self.ctx, &listing.backups).await {
            Ok(survey) => survey,
            Err(e) => return Observation::fail(format!("cannot list the job's WAL archive: {e}")),
        };
        let state = survey.state();
        self.shared
            .jobs
            .update(&self.ctx.name, |s| s.wal = Some(state.clone()));
        let facts = facts(&survey, archiver.as_ref().ok());
        let thresholds = (self.ctx.job.wal_max_age, self.ctx.job.wal_max_age_fail);
        let observation = grade_wal(
            archiver.as_ref().map_err(String::as_str),
            &facts,
            thresholds,
            Utc::now(),
        );
        with_window(observation, &state, archiver.ok().as_ref())
    }
}

fn facts(survey: &Survey, archiver: Option<&Archiver>) -> ArchiveFacts {
    ArchiveFacts {
        newest: survey.last_archived(),
        backups: survey.backups.len(),
        restorable: survey.window().is_some(),
        gaps: survey.gaps(),
        holds_last_archived: archiver
            .and_then(|a| a.last_archived_wal.as_deref())
            .is_none_or(|name| survey.holds(name)),
    }
}

/// The recoverability window and the archiver's counters, under `vigil`.
fn with_window(
    o: Observation,
    state: &crate::state::WalState,
    archiver: Option<&Archiver>,
) -> Observation {
    let window = state.window.as_ref();
    o.with_detail("windowStart", window.map(|w| stamp(w.start)))
        .with_detail("windowEnd", window.map(|w| stamp(w.end)))
        .with_detail("lastArchived", state.last_archived.map(stamp))
        .with_detail("gaps", state.gaps)
        .with_detail(
            "lastArchivedWal",
            archiver.and_then(|a| a.last_archived_wal.clone()),
        )
        .with_detail("failedCount", archiver.map(|a| a.failed_count))
}

impl Check for WalCheck {
    fn spec(&self, config: &HealthConfig) -> CheckSpec {
        CheckSpec {
            key: format!("{}:wal", self.ctx.name),
            component_id: self.ctx.name.clone(),
            component_type: "component",
            // Lists the archive: not more often than once a minute.
            interval: config.interval.max(Duration::from_secs(60)),
            // A listing of the whole archive: pages of 1,000 objects, not
            // the single round trip the other checks' timeout is set for.
            timeout: config.timeout.max(Duration::from_secs(10)),
            critical: true,
            periodic: true,
        }
    }

    fn run<'a>(&'a self, _config: &'a HealthConfig) -> BoxFuture<'a, Observation> {
        self.observe().boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    const LIMITS: (Duration, Duration) = (Duration::from_secs(900), Duration::from_secs(3600));

    fn archiver(last: &str, current: &str) -> Archiver {
        Archiver {
            archive_mode: "on".into(),
            archived_count: 5,
            last_archived_wal: Some(last.into()),
            last_archived_time: Some(at("2026-11-27T09:00:00Z")),
            current_wal: Some(current.into()),
            ..Default::default()
        }
    }

    fn healthy_repo() -> ArchiveFacts {
        ArchiveFacts {
            newest: Some(at("2026-11-27T09:00:00Z")),
            backups: 1,
            restorable: true,
            gaps: vec![],
            holds_last_archived: true,
        }
    }

    fn grade(a: Result<&Archiver, &str>, r: &ArchiveFacts, now: &str) -> (Status, String) {
        let o = grade_wal(a, r, LIMITS, at(now));
        (o.status, o.output.unwrap_or_default())
    }

    const LAST: &str = "000000010000000000000005";

    #[test]
    fn an_idle_server_with_nothing_waiting_passes_however_old_the_last_archive() {
        let a = archiver(LAST, "000000010000000000000006");
        assert_eq!(
            grade(Ok(&a), &healthy_repo(), "2026-11-27T15:00:00Z").0,
            Status::Pass
        );
    }

    #[test]
    fn waiting_segments_warn_then_fail_by_age() {
        let a = archiver(LAST, "000000010000000000000009");
        assert_eq!(
            grade(Ok(&a), &healthy_repo(), "2026-11-27T09:10:00Z").0,
            Status::Pass
        );
        let (status, output) = grade(Ok(&a), &healthy_repo(), "2026-11-27T09:20:00Z");
        assert_eq!(status, Status::Warn);
        assert!(
            output.contains("20m old") && output.contains("limit 15m"),
            "{output}"
        );
        assert_eq!(
            grade(Ok(&a), &healthy_repo(), "2026-11-27T10:01:00Z").0,
            Status::Fail
        );
        // Across a log boundary, the next segment is not "waiting".
        let a = archiver("0000000100000000000000FF", "000000010000000100000000");
        assert_eq!(
            grade(Ok(&a), &healthy_repo(), "2026-11-27T15:00:00Z").0,
            Status::Pass
        );
    }

    #[test]
    fn a_failure_after_the_last_success_fails() {
        let mut a = archiver(LAST, "000000010000000000000006");
        a.failed_count = 3;
        a.last_failed_wal = Some("000000010000000000000006".into());
        a.last_failed_time = Some(at("2026-11-27T09:01:00Z"));
        let (status, output) = grade(Ok(&a), &healthy_repo(), "2026-11-27T09:02:00Z");
        assert_eq!(status, Status::Fail);
        assert!(output.contains("archive_command is failing"), "{output}");
        // An old failure, succeeded since: fine.
        a.last_failed_time = Some(at("2026-11-27T08:00:00Z"));
        assert_eq!(
            grade(Ok(&a), &healthy_repo(), "2026-11-27T09:02:00Z").0,
            Status::Pass
        );
    }

    #[test]
    fn archiving_off_nothing_archived_or_archived_elsewhere_fail() {
        let mut off = archiver(LAST, LAST);
        off.archive_mode = "off".into();
        assert!(
            grade(Ok(&off), &healthy_repo(), "2026-11-27T09:00:00Z")
                .1
                .contains("archive_mode is off")
        );
        let never = Archiver {
            archive_mode: "on".into(),
            ..Default::default()
        };
        let empty = ArchiveFacts::default();
        let (status, output) = grade(Ok(&never), &empty, "2026-11-27T09:00:00Z");
        assert_eq!(status, Status::Fail);
        assert!(output.contains("no WAL has been archived yet"), "{output}");
        let elsewhere = ArchiveFacts {
            holds_last_archived: false,
            ..healthy_repo()
        };
        let (status, output) = grade(
            Ok(&archiver(LAST, LAST)),
            &elsewhere,
            "2026-11-27T09:00:00Z",
        );
        assert_eq!(status, Status::Fail);
        assert!(output.contains("the repository lacks it"), "{output}");
    }

    #[test]
    fn gaps_warn_and_an_unrestorable_archive_fails() {
        let gap = WalGap {
            backup_id: "b1".into(),
            first: "000000010000000000000003".into(),
            last: "000000010000000000000003".into(),
            missing: 1,
        };
        let gapped = ArchiveFacts {
            gaps: vec![gap],
            ..healthy_repo()
        };
        let a = archiver(LAST, "000000010000000000000006");
        let (status, output) = grade(Ok(&a), &gapped, "2026-11-27T09:00:00Z");
        assert_eq!(status, Status::Warn);
        assert!(output.contains("WAL gap after base backup b1"), "{output}");
        let broken = ArchiveFacts {
            restorable: false,
            ..gapped
        };
        assert_eq!(
            grade(Ok(&a), &broken, "2026-11-27T09:00:00Z").0,
            Status::Fail
        );
    }

    #[test]
    fn an_unreachable_source_leans_on_the_repository() {
        let (status, output) = grade(
            Err("connection refused"),
            &healthy_repo(),
            "2026-11-27T09:05:00Z",
        );
        assert_eq!(status, Status::Warn);
        assert!(
            output.contains("cannot read pg_stat_archiver on the source: connection refused"),
            "{output}"
        );
        assert_eq!(
            grade(Err("x"), &healthy_repo(), "2026-11-27T11:00:00Z").0,
            Status::Fail
        );
    }
}
