//! When jobs run: cron (with seconds) in an IANA time zone, or a fixed
//! interval; next run and missed-run (catch-up) arithmetic. Pure.
//!
//! Cron times are computed by croner in the job's own zone for every
//! occurrence, so a "02:30 Europe/Berlin" job stays at 02:30 local across
//! DST changes. (tokio_cron_scheduler 0.15 freezes the zone's UTC offset
//! when a job is created, which shifts such a job by an hour after a DST
//! change; that is why vigil drives its jobs with croner directly.)

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use thiserror::Error;

/// Why a schedule cannot be built. The texts are what `vigil check`
/// prints after the offending key.
#[derive(Debug, Error)]
pub enum ScheduleError {
    #[error(transparent)]
    Cron(#[from] croner::errors::CronError),
    #[error(transparent)]
    TimeZone(#[from] chrono_tz::ParseError),
    #[error("set either `schedule` or `every`, not both (and `every` above 0s)")]
    Conflicting,
    #[error("a job needs exactly one of `schedule` and `every`")]
    Missing,
}

/// Cron with a required seconds field, as the scheduler reads it.
pub fn parse_cron(pattern: &str) -> Result<croner::Cron, croner::errors::CronError> {
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Required)
        .build()
        .parse(pattern)
}

#[derive(Debug, Clone)]
pub enum Schedule {
    Cron {
        cron: Box<croner::Cron>,
        tz: Tz,
    },
    /// Aligned to the Unix epoch, so replicas and restarts agree on the times.
    Every(Duration),
}

impl Schedule {
    /// A job's schedule: exactly one of `cron` and `every` must be set.
    pub fn required(
        cron: Option<&str>,
        every: Option<Duration>,
        timezone: &str,
    ) -> Result<Schedule, ScheduleError> {
        Schedule::from_parts(cron, every, timezone)?.ok_or(ScheduleError::Missing)
    }

    /// `None` when neither is set.
    pub fn from_parts(
        cron: Option<&str>,
        every: Option<Duration>,
        timezone: &str,
    ) -> Result<Option<Schedule>, ScheduleError> {
        match (cron, every) {
            (Some(cron), None) => Ok(Some(Schedule::Cron {
                cron: Box::new(parse_cron(cron)?),
                tz: Tz::from_str(timezone)?,
            })),
            (None, Some(every)) if !every.is_zero() => Ok(Some(Schedule::Every(every))),
            (None, None) => Ok(None),
            _ => Err(ScheduleError::Conflicting),
        }
    }

    /// The first scheduled time strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Schedule::Cron { cron, tz } => cron
                .find_next_occurrence(&t.with_timezone(tz), false)
                .ok()
                .map(|d| d.with_timezone(&Utc)),
            Schedule::Every(every) => {
                let step = every.as_millis() as i64;
                let now = t.timestamp_millis();
                let next = (now.div_euclid(step) + 1) * step;
                Utc.timestamp_millis_opt(next).single()
            }
        }
    }

    /// The latest scheduled time at or before `t`.
    pub fn latest_at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Schedule::Cron { cron, tz } => cron
                .find_previous_occurrence(&t.with_timezone(tz), true)
                .ok()
                .map(|d| d.with_timezone(&Utc)),
            Schedule::Every(every) => {
                let step = every.as_millis() as i64;
                Utc.timestamp_millis_opt(t.timestamp_millis().div_euclid(step) * step)
                    .single()
            }
        }
    }
}

/// When a job counts as protected: how old its newest good backup may be,
/// and how many runs in a row may fail. Always set: a job without
/// `max_age` gets thresholds derived from its schedule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Freshness {
    /// The newest backup older than this warns…
    pub warn_after: Duration,
    /// …and older than this fails.
    pub fail_after: Duration,
    /// How late a scheduled run may finish before it counts as missed.
    pub grace: Duration,
    /// Consecutive failed runs that fail health (one already warns).
    pub fail_after_failures: u32,
}

/// Schedules are scanned this far ahead for their longest gap.
const GAP_HORIZON_DAYS: i64 = 400;
const GAP_MAX_RUNS: usize = 1000;

impl Schedule {
    /// The longest wait between two consecutive scheduled times after
    /// `from` (a weekday-only daily job: 3 days over a weekend).
    pub fn longest_gap(&self, from: DateTime<Utc>) -> Option<Duration> {
        if let Schedule::Every(every) = self {
            return Some(*every);
        }
        let horizon = from + chrono::Duration::days(GAP_HORIZON_DAYS);
        let mut previous = self.next_after(from)?;
        let mut longest = None;
        for _ in 0..GAP_MAX_RUNS {
            let Some(next) = self.next_after(previous) else {
                break;
            };
            let gap = (next - previous).to_std().unwrap_or_default();
            longest = Some(longest.map_or(gap, |l: Duration| l.max(gap)));
            if next > horizon {
                break;
            }
            previous = next;
        }
        longest
    }
}

/// The job settings freshness derives from, as plain values (config
/// builds this from a job; core never reads config).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FreshnessPolicy {
    pub max_duration: Duration,
    pub max_age: Option<Duration>,
    pub max_age_fail: Option<Duration>,
    pub fail_after_failures: u32,
}

/// The job's freshness thresholds at `now`. With `gap` the schedule's
/// longest wait between runs and `grace = min(max_duration, gap / 2)`:
/// without `max_age`, warn once one run is missed (`gap + grace`) and fail
/// once two are (`2 × gap + grace`); with `max_age`, warn after it and fail
/// after `max_age_fail` (default twice `max_age`).
pub fn freshness(policy: &FreshnessPolicy, schedule: &Schedule, now: DateTime<Utc>) -> Freshness {
    // A schedule with no future run: the run length alone bounds the grace.
    let gap = schedule.longest_gap(now).unwrap_or(policy.max_duration);
    let grace = policy.max_duration.min(gap / 2);
    let (warn_after, fail_after) = match policy.max_age {
        Some(warn) => (warn, policy.max_age_fail.unwrap_or(warn * 2)),
        None => (gap + grace, gap * 2 + grace),
    };
    Freshness {
        warn_after,
        fail_after,
        grace,
        fail_after_failures: policy.fail_after_failures,
    }
}

/// The scheduled time a catch-up run stands in for: the latest one at or
/// before `now` that no successful backup has covered.
pub fn missed_run(
    schedule: &Schedule,
    last_success: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let due = schedule.latest_at_or_before(now)?;
    match last_success {
        Some(done) if done >= due => None,
        _ => Some(due),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(cron: Option<&str>, every: Option<u64>, tz: &str) -> Schedule {
        Schedule::required(cron, every.map(Duration::from_secs), tz).unwrap()
    }

    /// The config defaults: `max_duration` a day, two failures fail.
    fn policy() -> FreshnessPolicy {
        FreshnessPolicy {
            max_duration: Duration::from_secs(86_400),
            max_age: None,
            max_age_fail: None,
            fail_after_failures: 2,
        }
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn cron_keeps_local_time_across_dst() {
        let s = schedule(Some("0 30 2 * * *"), None, "Europe/Berlin");
        // Summer (UTC+2): 02:30 local is 00:30Z.
        assert_eq!(
            s.next_after(utc("2026-10-23T12:00:00Z")),
            Some(utc("2026-10-24T00:30:00Z"))
        );
        // 2026-10-25 02:30 happens twice (clocks go back at 03:00): one run only…
        let first = s.next_after(utc("2026-10-24T12:00:00Z")).unwrap();
        assert!(
            first == utc("2026-10-25T00:30:00Z") || first == utc("2026-10-25T01:30:00Z"),
            "{first}"
        );
        let after = s.next_after(first).unwrap();
        // …and then winter (UTC+1): 02:30 local is 01:30Z.
        assert_eq!(after, utc("2026-10-26T01:30:00Z"));
        // Spring forward: 2026-03-29 has no 02:30 in Berlin; the job still runs once that day or the next.
        let spring = s.next_after(utc("2026-03-28T12:00:00Z")).unwrap();
        assert!(
            spring > utc("2026-03-28T12:00:00Z") && spring < utc("2026-03-30T01:00:00Z"),
            "{spring}"
        );
    }

    #[test]
    fn every_is_epoch_aligned() {
        let s = schedule(None, Some(3600), "UTC");
        assert_eq!(
            s.next_after(utc("2026-11-23T07:32:44Z")),
            Some(utc("2026-11-23T08:00:00Z"))
        );
        assert_eq!(
            s.next_after(utc("2026-11-23T08:00:00Z")),
            Some(utc("2026-11-23T09:00:00Z"))
        );
        assert_eq!(
            s.latest_at_or_before(utc("2026-11-23T07:32:44Z")),
            Some(utc("2026-11-23T07:00:00Z"))
        );
    }

    #[test]
    fn missed_runs_are_caught_up_once() {
        let s = schedule(Some("0 0 3 * * *"), None, "UTC");
        let now = utc("2026-11-23T09:00:00Z");
        assert_eq!(missed_run(&s, None, now), Some(utc("2026-11-23T03:00:00Z")));
        assert_eq!(
            missed_run(&s, Some(utc("2026-11-22T03:05:00Z")), now),
            Some(utc("2026-11-23T03:00:00Z"))
        );
        assert_eq!(missed_run(&s, Some(utc("2026-11-23T03:04:00Z")), now), None);
    }

    #[test]
    fn freshness_derives_from_the_longest_gap() {
        let now = utc("2026-11-23T09:00:00Z");
        let daily = schedule(Some("0 30 2 * * *"), None, "UTC");
        let f = freshness(&policy(), &daily, now);
        let h = |n: u64| Duration::from_secs(n * 3600);
        // max_duration defaults to a day; the grace is capped at half a gap.
        assert_eq!((f.warn_after, f.fail_after, f.grace), (h(36), h(60), h(12)));
        assert_eq!(f.fail_after_failures, 2);

        let weekdays = schedule(Some("0 0 3 * * Mon-Fri"), None, "UTC");
        assert_eq!(weekdays.longest_gap(now), Some(h(72)));
        // The grace is capped by max_duration (a day).
        assert_eq!(freshness(&policy(), &weekdays, now).warn_after, h(72 + 24));

        let short = FreshnessPolicy {
            max_duration: Duration::from_secs(10),
            ..policy()
        };
        let f = freshness(&short, &schedule(None, Some(60), "UTC"), now);
        assert_eq!(
            (f.warn_after, f.fail_after),
            (Duration::from_secs(70), Duration::from_secs(130))
        );

        let explicit = FreshnessPolicy {
            max_age: Some(h(26)),
            ..policy()
        };
        let f = freshness(&explicit, &daily, now);
        assert_eq!((f.warn_after, f.fail_after), (h(26), h(52)));
    }

    #[test]
    fn bad_parts_are_typed_errors() {
        let conflicting =
            Schedule::from_parts(Some("0 0 3 * * *"), Some(Duration::from_secs(60)), "UTC");
        assert!(matches!(conflicting, Err(ScheduleError::Conflicting)));
        assert!(matches!(
            Schedule::required(None, None, "UTC"),
            Err(ScheduleError::Missing)
        ));
        assert!(matches!(
            Schedule::from_parts(Some("0 0 3 * *"), None, "UTC"),
            Err(ScheduleError::Cron(_))
        ));
        assert!(matches!(
            Schedule::from_parts(Some("0 0 3 * * *"), None, "Mars/Olympus"),
            Err(ScheduleError::TimeZone(_))
        ));
    }
}
