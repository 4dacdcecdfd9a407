//! Each job's proofs of recoverability as `vigil list` and `vigil status`
//! show them: the last verification (verdict, age, bad objects) and the
//! last restore drill (verdict, RTO, age), read from the proof records in
//! the job's repository (no daemon or catalog needed).

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::commands::human_bytes;
use crate::config::{Config, JobKind};
use crate::core::proofs::{DrillRecord, VerifyRecord};
use crate::repo::Repository;

/// How long reading one job's records may take (a slow repository must
/// not hold `vigil status` up).
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a job's record could not be read (shown in its place).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct Unread(String);

/// One job's records, or why they could not be read.
pub struct JobProofs {
    pub job: String,
    pub verify: Result<VerifyRecord, Unread>,
    pub drill: Result<DrillRecord, Unread>,
}

/// The records of `jobs` (mirror jobs have none of their own), read at
/// once: one slow repository costs [`READ_TIMEOUT`], not that per job.
pub async fn read(config: &Config, jobs: &[&str]) -> Vec<JobProofs> {
    let reads = jobs
        .iter()
        .filter(|name| {
            config
                .jobs
                .get(**name)
                .is_some_and(|j| j.kind != JobKind::Mirror)
        })
        .map(|name| read_job(config, name));
    futures::future::join_all(reads).await
}

async fn read_job(config: &Config, name: &str) -> JobProofs {
    let opened = config
        .jobs
        .get(name)
        .and_then(|job| Some((job, config.repositories.get(&job.repository)?)))
        .ok_or_else(|| Unread(format!("job `{name}` has no repository")))
        .and_then(|(job, r)| {
            Repository::open(&job.repository, r).map_err(|e| Unread(e.to_string()))
        });
    let (verify, drill) = match opened {
        Ok(repo) => futures::join!(
            bounded(repo.read_verify_record(name)),
            bounded(repo.read_drill_record(name))
        ),
        Err(e) => (Err(e.clone()), Err(e)),
    };
    JobProofs {
        job: name.to_owned(),
        verify,
        drill,
    }
}

async fn bounded<T, E: std::fmt::Display>(
    read: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, Unread> {
    match tokio::time::timeout(READ_TIMEOUT, read).await {
        Ok(result) => result.map_err(|e| Unread(e.to_string())),
        Err(_) => Err(Unread(format!(
            "no answer from the repository within {}s",
            READ_TIMEOUT.as_secs()
        ))),
    }
}

/// `3d`, `5h`, `12m`, `40s`: the largest whole unit.
fn age(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let s = (now - t).num_seconds().max(0);
    match s {
        s if s >= 86_400 => format!("{}d", s / 86_400),
        s if s >= 3_600 => format!("{}h", s / 3_600),
        s if s >= 60 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// `last verify: ok 3h ago (…)`, `BAD`, `could not run`, or `never`.
pub fn verify_line(record: &Result<VerifyRecord, Unread>, now: DateTime<Utc>) -> String {
    let record = match record {
        Ok(r) => r,
        Err(e) => return format!("last verify: unknown ({e})"),
    };
    let Some(run) = &record.last_run else {
        return "last verify: never".into();
    };
    let when = age(run.finished_at, now);
    let verdict = match (&run.error, record.bad.is_empty(), run.ok) {
        (Some(e), _, _) => format!("could not run {when} ago: {e}"),
        (None, false, _) => {
            let first = &record.bad[0].object;
            format!(
                "BAD {when} ago: {} unresolved bad object(s), first {}/{}",
                record.bad.len(),
                first.backup_id,
                first.object
            )
        }
        (None, true, false) => format!("failed {when} ago ({} WAL gap(s))", run.wal_gaps),
        (None, true, true) => format!(
            "ok {when} ago ({} object(s), {} read, {} objects verified)",
            run.objects,
            human_bytes(run.bytes_read),
            record.verified.len()
        ),
    };
    format!("last verify: {verdict}")
}

/// `last drill: ok 2d ago, RTO 12.5s`, `FAILED …`, or `never`.
pub fn drill_line(record: &Result<DrillRecord, Unread>, now: DateTime<Utc>) -> String {
    let record = match record {
        Ok(r) => r,
        Err(e) => return format!("last drill: unknown ({e})"),
    };
    let Some(run) = &record.last_run else {
        return "last drill: never".into();
    };
    let when = age(run.finished_at, now);
    let rto = run
        .rto_seconds
        .map(|s| format!(", RTO {s:.1}s"))
        .unwrap_or_default();
    if run.ok {
        return format!("last drill: ok {when} ago{rto}");
    }
    let why = run
        .failed_query
        .as_deref()
        .map(|q| format!("check failed: {q}"))
        .or_else(|| run.error.clone())
        .unwrap_or_default();
    format!("last drill: FAILED {when} ago{rto}: {why}")
}

/// The human lines, one per job.
pub fn lines(all: &[JobProofs], now: DateTime<Utc>) -> Vec<String> {
    all.iter()
        .map(|p| {
            format!(
                "{}: {}; {}",
                p.job,
                verify_line(&p.verify, now),
                drill_line(&p.drill, now)
            )
        })
        .collect()
}

/// `{job: {verify, drill}}` for `status --json` (the cursor left out: it
/// holds one entry per object).
pub fn json(all: &[JobProofs]) -> Value {
    let mut jobs = serde_json::Map::new();
    for p in all {
        let verify = match &p.verify {
            Ok(r) => json!({
                "lastRun": r.last_run,
                "lastSuccess": r.last_success,
                "verifiedObjects": r.verified.len(),
                "badObjects": r.bad.len(),
                "bad": r.bad,
                "evidence": r.evidence,
            }),
            Err(e) => json!({ "error": e.to_string() }),
        };
        let drill = match &p.drill {
            Ok(r) => json!({ "lastRun": r.last_run, "lastSuccess": r.last_success }),
            Err(e) => json!({ "error": e.to_string() }),
        };
        jobs.insert(p.job.clone(), json!({ "verify": verify, "drill": drill }));
    }
    Value::Object(jobs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::proofs::{DrillRun, VerifyRun};

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + s, 0).unwrap()
    }

    #[test]
    fn lines_say_never_ok_and_bad_with_ages() {
        let never = Ok(VerifyRecord::default());
        assert_eq!(verify_line(&never, at(0)), "last verify: never");
        assert_eq!(
            drill_line(&Ok(DrillRecord::default()), at(0)),
            "last drill: never"
        );
        let record = VerifyRecord {
            last_run: Some(VerifyRun {
                started_at: at(0),
                finished_at: at(0),
                trigger: "schedule".into(),
                ok: true,
                content_checked: true,
                objects: 2,
                bytes_read: 2048,
                bad_objects: 0,
                error: None,
                wal_gaps: 0,
            }),
            ..Default::default()
        };
        let line = verify_line(&Ok(record), at(3 * 3600 + 5));
        assert_eq!(
            line,
            "last verify: ok 3h ago (2 object(s), 2.0 KiB read, 0 objects verified)"
        );
        let drill = DrillRecord {
            last_run: Some(DrillRun {
                started_at: at(0),
                finished_at: at(0),
                trigger: "schedule".into(),
                ok: false,
                backup_id: None,
                recovery_target: None,
                rto_seconds: Some(12.34),
                failed_query: Some("SELECT false".into()),
                error: None,
            }),
            ..Default::default()
        };
        assert_eq!(
            drill_line(&Ok(drill), at(2 * 86_400)),
            "last drill: FAILED 2d ago, RTO 12.3s: check failed: SELECT false"
        );
        assert!(verify_line(&Err(Unread("boom".into())), at(0)).contains("unknown (boom)"));
    }
}
