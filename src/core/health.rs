//! The health model: what a check is, what it last saw, and how the
//! results add up to one status. Plain data; the checks themselves (I/O)
//! live in `health/`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

/// A check's verdict; ordered so the worst is the maximum.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Warn,
    Fail,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Warn => "warn",
            Status::Fail => "fail",
        }
    }

    pub const ALL: [Status; 3] = [Status::Pass, Status::Warn, Status::Fail];
}

/// What a check is and how often it runs.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckSpec {
    /// Stable `component:measurement` key, e.g. `catalog:responseTime`.
    pub key: String,
    pub component_id: String,
    /// IETF draft's `componentType`: `datastore`, `system` or `component`.
    pub component_type: &'static str,
    pub interval: Duration,
    pub timeout: Duration,
    /// Critical checks decide the overall status.
    pub critical: bool,
    /// Event-driven checks (config reload) are never stale.
    pub periodic: bool,
}

/// What one run of a check saw.
#[derive(Clone, Debug, PartialEq)]
pub struct Observation {
    pub status: Status,
    pub value: Option<f64>,
    /// Base unit: `s`, `ms`, `bytes`, `ratio`, or none for counts.
    pub unit: Option<&'static str>,
    /// Short reason on warn/fail, already redacted.
    pub output: Option<String>,
    /// Extra facts shown in `/health/detailed` (pool sizes, free bytes).
    pub details: serde_json::Map<String, serde_json::Value>,
}

impl Observation {
    pub fn new(status: Status, value: Option<f64>, unit: Option<&'static str>) -> Self {
        Observation {
            status,
            value,
            unit,
            output: None,
            details: Default::default(),
        }
    }

    pub fn fail(output: impl Into<String>) -> Self {
        Observation::new(Status::Fail, None, None).with_output(output)
    }

    pub fn with_output(mut self, output: impl Into<String>) -> Self {
        self.output = Some(output.into());
        self
    }

    pub fn with_detail(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        self.details.insert(key.to_owned(), value.into());
        self
    }
}

/// The latest state of one check, as published in a snapshot.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckState {
    pub spec: CheckSpec,
    pub observation: Observation,
    pub observed_at: DateTime<Utc>,
    /// When the status last changed (the draft's "time of the last change").
    pub changed_at: DateTime<Utc>,
    pub duration: Duration,
    /// Interval after back-off; staleness is measured against it.
    pub effective_interval: Duration,
    pub consecutive_failures: u32,
}

impl CheckState {
    /// A result older than twice its interval plus its timeout is stale.
    pub fn stale_after(&self) -> Duration {
        self.effective_interval * 2 + self.spec.timeout
    }

    pub fn is_stale(&self, now: DateTime<Utc>) -> bool {
        self.spec.periodic
            && (now - self.observed_at)
                .to_std()
                .is_ok_and(|age| age > self.stale_after())
    }

    /// Status as served at `now` (allocation-free; the `/health` hot path).
    pub fn status_at(&self, now: DateTime<Utc>) -> Status {
        if self.is_stale(now) {
            Status::Fail
        } else {
            self.observation.status
        }
    }

    /// Status and output as served at `now`: a stale result is `fail`.
    pub fn effective(&self, now: DateTime<Utc>) -> (Status, Option<String>) {
        if self.is_stale(now) {
            let age = (now - self.observed_at).num_seconds();
            return (
                Status::Fail,
                Some(format!(
                    "stale: last observed {age}s ago (the check has stopped reporting)"
                )),
            );
        }
        (self.observation.status, self.observation.output.clone())
    }
}

/// The overall status: the worst effective status of the critical checks
/// (pass when there are none).
pub fn aggregate(checks: &[CheckState], now: DateTime<Utc>) -> Status {
    checks
        .iter()
        .filter(|c| c.spec.critical)
        .map(|c| c.status_at(now))
        .max()
        .unwrap_or(Status::Pass)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn state(
        key: &str,
        status: Status,
        critical: bool,
        at: DateTime<Utc>,
    ) -> CheckState {
        CheckState {
            spec: CheckSpec {
                key: key.into(),
                component_id: key.split(':').next().unwrap().into(),
                component_type: "component",
                interval: Duration::from_secs(10),
                timeout: Duration::from_secs(5),
                critical,
                periodic: true,
            },
            observation: Observation::new(status, None, None),
            observed_at: at,
            changed_at: at,
            duration: Duration::ZERO,
            effective_interval: Duration::from_secs(10),
            consecutive_failures: 0,
        }
    }

    #[test]
    fn status_orders_worst_last() {
        assert!(Status::Pass < Status::Warn && Status::Warn < Status::Fail);
    }

    #[test]
    fn result_goes_stale_after_twice_interval_plus_timeout() {
        let t0 = Utc::now();
        let s = state("a:b", Status::Pass, true, t0);
        assert_eq!(
            s.effective(t0 + chrono::Duration::seconds(25)).0,
            Status::Pass
        );
        let (status, output) = s.effective(t0 + chrono::Duration::seconds(26));
        assert_eq!(status, Status::Fail);
        assert!(output.unwrap().starts_with("stale"));
    }

    #[test]
    fn event_driven_checks_never_go_stale() {
        let t0 = Utc::now();
        let mut s = state("config:reload", Status::Warn, true, t0);
        s.spec.periodic = false;
        assert_eq!(s.effective(t0 + chrono::Duration::days(30)).0, Status::Warn);
    }

    #[test]
    fn overall_is_worst_critical() {
        let now = Utc::now();
        let checks = vec![
            state("a:x", Status::Pass, true, now),
            state("b:x", Status::Warn, true, now),
            state("c:x", Status::Fail, false, now),
        ];
        assert_eq!(aggregate(&checks, now), Status::Warn);
        assert_eq!(aggregate(&checks[..1], now), Status::Pass);
        assert_eq!(aggregate(&[], now), Status::Pass);
    }

    #[test]
    fn stale_critical_check_fails_overall() {
        let t0 = Utc::now();
        let checks = vec![state("a:x", Status::Pass, true, t0)];
        assert_eq!(
            aggregate(&checks, t0 + chrono::Duration::seconds(60)),
            Status::Fail
        );
    }
}
