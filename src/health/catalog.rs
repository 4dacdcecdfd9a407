//! The catalog's checks: `catalog:responseTime` (round trip, outage
//! grading) and `catalog:migrations` (schema version).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use deadpool_postgres::Pool;
use futures::FutureExt;
use futures::future::BoxFuture;

use super::Check;
use crate::config::HealthConfig;
use crate::core::health::{CheckSpec, Observation, Status};

/// `catalog:responseTime`: a `SELECT 1` round trip through the pool, in
/// ms. The catalog is a mirror that nothing waits for, so an outage warns
/// (history and the audit table lag) and fails only once it outlasts
/// `outage_fail_after` or the journal's unshipped backlog passes
/// `outage_fail_backlog`. It never backs off: health must see the
/// catalog back within one interval.
pub struct CatalogResponseCheck {
    pub pool: Pool,
    pub audit: Arc<crate::journal::AuditStats>,
    /// When the current outage began.
    pub down_since: Mutex<Option<DateTime<Utc>>>,
}

impl CatalogResponseCheck {
    pub fn new(pool: Pool, audit: Arc<crate::journal::AuditStats>) -> Self {
        CatalogResponseCheck {
            pool,
            audit,
            down_since: Mutex::new(None),
        }
    }

    /// Notes the outage's start (or its end) and returns it.
    fn outage(&self, down: bool, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let mut since = self.down_since.lock().unwrap_or_else(|p| p.into_inner());
        *since = if down {
            Some(since.unwrap_or(now))
        } else {
            None
        };
        *since
    }

    fn backlog(&self) -> u64 {
        use std::sync::atomic::Ordering::Relaxed;
        let head = self.audit.head_seq.load(Relaxed);
        head.saturating_sub(self.audit.shipped_catalog.load(Relaxed))
    }
}

/// Pure verdict on an unreachable catalog: `warn` until the outage or the
/// shipping backlog passes its limit.
pub fn grade_outage(
    error: &str,
    since: DateTime<Utc>,
    now: DateTime<Utc>,
    backlog: u64,
    config: &crate::config::CatalogHealthConfig,
) -> Observation {
    let lasted = (now - since).to_std().unwrap_or_default();
    let lasted_text = humantime::format_duration(Duration::from_secs(lasted.as_secs()));
    let since_text = since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let limit = humantime::format_duration(config.outage_fail_after);
    let (status, verdict) = if lasted >= config.outage_fail_after {
        (Status::Fail, format!("for longer than {limit}"))
    } else if backlog >= config.outage_fail_backlog {
        (
            Status::Fail,
            format!(
                "and {backlog} journal events wait to be shipped (limit {})",
                config.outage_fail_backlog
            ),
        )
    } else {
        (
            Status::Warn,
            format!("history and the audit table lag; fails after {limit}"),
        )
    };
    Observation::new(status, None, Some("ms"))
        .with_output(format!(
            "catalog unreachable since {since_text} ({lasted_text}) {verdict}: {error}"
        ))
        .with_detail("unreachableSince", since_text)
        .with_detail("unshippedEvents", backlog)
}

impl Check for CatalogResponseCheck {
    fn spec(&self, config: &HealthConfig) -> CheckSpec {
        catalog_spec("catalog:responseTime", config)
    }

    fn backs_off(&self) -> bool {
        false
    }

    fn run<'a>(&'a self, config: &'a HealthConfig) -> BoxFuture<'a, Observation> {
        async move {
            let started = Instant::now();
            let result = async {
                let client = self
                    .pool
                    .get()
                    .await
                    .map_err(|e| crate::catalog::describe(&e))?;
                // The round trip also says whether the session is encrypted.
                crate::pgconn::is_encrypted(&client)
                    .await
                    .map_err(|e| e.to_string())
            }
            .await;
            let status = self.pool.status();
            let now = Utc::now();
            let observation = match result {
                Ok(encrypted) => {
                    self.outage(false, now);
                    let ms = started.elapsed().as_secs_f64() * 1000.0;
                    grade_latency(
                        Observation::new(Status::Pass, Some(ms), Some("ms")),
                        config.catalog.warn_after,
                        config.catalog.fail_after,
                    )
                    .with_detail("encrypted", encrypted)
                }
                Err(e) => {
                    let since = self.outage(true, now).unwrap_or(now);
                    grade_outage(&e, since, now, self.backlog(), &config.catalog)
                }
            };
            observation
                .with_detail("poolMaxSize", status.max_size)
                .with_detail("poolSize", status.size)
                .with_detail("poolIdle", status.available)
                .with_detail("poolWaiting", status.waiting)
        }
        .boxed()
    }
}

/// Grades a round trip against the configured thresholds.
pub fn grade_latency(
    observation: Observation,
    warn_after: Duration,
    fail_after: Duration,
) -> Observation {
    let Some(ms) = observation
        .value
        .filter(|_| observation.status == Status::Pass)
    else {
        return observation;
    };
    let took = Duration::from_secs_f64(ms / 1000.0);
    if took >= fail_after {
        Observation {
            status: Status::Fail,
            ..observation
        }
        .with_output(format!(
            "round trip {ms:.0} ms is over the fail threshold {}",
            humantime::format_duration(fail_after)
        ))
    } else if took >= warn_after {
        Observation {
            status: Status::Warn,
            ..observation
        }
        .with_output(format!(
            "round trip {ms:.0} ms is over the warn threshold {}",
            humantime::format_duration(warn_after)
        ))
    } else {
        observation
    }
}

/// Both catalog checks: critical, every `health.catalog.interval`.
fn catalog_spec(key: &str, config: &HealthConfig) -> CheckSpec {
    CheckSpec {
        key: key.into(),
        component_id: "catalog".into(),
        component_type: "datastore",
        interval: config.catalog.interval.unwrap_or(config.interval),
        timeout: config.timeout,
        critical: true,
        periodic: true,
    }
}

/// `catalog:migrations`: the catalog's schema is at the version this binary expects.
pub struct CatalogMigrationsCheck {
    pub pool: Pool,
    pub expected: i32,
}

impl Check for CatalogMigrationsCheck {
    fn spec(&self, config: &HealthConfig) -> CheckSpec {
        // As often as the round trip, so that both see the catalog back
        // within one interval (one cheap query).
        catalog_spec("catalog:migrations", config)
    }

    fn backs_off(&self) -> bool {
        false
    }

    fn run<'a>(&'a self, _config: &'a HealthConfig) -> BoxFuture<'a, Observation> {
        async move {
            match crate::catalog::schema_version(&self.pool).await {
                Ok(version) => grade_schema(version, self.expected),
                // An outage is graded once, by `catalog:responseTime`.
                Err(crate::catalog::CatalogError::Pool(e)) => {
                    Observation::new(Status::Warn, None, None).with_output(format!(
                        "cannot read the schema version, the catalog is unreachable: {e}"
                    ))
                }
                Err(e) => Observation::fail(format!("cannot read the schema version: {e}")),
            }
        }
        .boxed()
    }
}

/// Pure verdict on the schema version found.
pub fn grade_schema(found: Option<i32>, expected: i32) -> Observation {
    let value = found.map(f64::from);
    let observation = Observation::new(Status::Pass, value, None).with_detail("expected", expected);
    match found {
        Some(v) if v == expected => observation,
        Some(v) if v > expected => Observation {
            status: Status::Warn,
            ..observation
        }
        .with_output(format!(
            "catalog schema v{v} is newer than this vigil expects (v{expected}): upgrade vigil"
        )),
        Some(v) => Observation {
            status: Status::Fail,
            ..observation
        }
        .with_output(format!(
            "catalog schema v{v} is behind v{expected}: run `vigil migrate`"
        )),
        None => Observation {
            status: Status::Fail,
            ..observation
        }
        .with_output(format!(
            "catalog has no schema yet (expected v{expected}): run `vigil migrate`"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_warns_until_it_lasts_too_long_or_the_backlog_grows() {
        let config = crate::config::CatalogHealthConfig::default();
        let since = Utc::now();
        let grade = |minutes: i64, backlog: u64| {
            grade_outage(
                "connection refused",
                since,
                since + chrono::Duration::minutes(minutes),
                backlog,
                &config,
            )
        };
        let early = grade(5, 10);
        assert_eq!(early.status, Status::Warn);
        let output = early.output.unwrap();
        assert!(
            output.contains("(5m)") && output.contains("fails after 1h"),
            "{output}"
        );
        assert!(output.ends_with(": connection refused"), "{output}");
        assert_eq!(grade(61, 10).status, Status::Fail);
        let backlog = grade(5, 100_000);
        assert_eq!(backlog.status, Status::Fail);
        assert!(backlog.output.unwrap().contains("100000 journal events"));
    }

    #[test]
    fn latency_grades() {
        let ok = |ms| Observation::new(Status::Pass, Some(ms), Some("ms"));
        let (w, f) = (Duration::from_millis(100), Duration::from_secs(1));
        assert_eq!(grade_latency(ok(5.0), w, f).status, Status::Pass);
        assert_eq!(grade_latency(ok(150.0), w, f).status, Status::Warn);
        assert_eq!(grade_latency(ok(1500.0), w, f).status, Status::Fail);
        assert_eq!(
            grade_latency(Observation::fail("x"), w, f)
                .output
                .as_deref(),
            Some("x")
        );
    }

    #[test]
    fn schema_grades() {
        assert_eq!(grade_schema(Some(1), 1).status, Status::Pass);
        assert_eq!(grade_schema(Some(2), 1).status, Status::Warn);
        assert_eq!(grade_schema(Some(0), 1).status, Status::Fail);
        assert_eq!(grade_schema(None, 1).status, Status::Fail);
    }
}
