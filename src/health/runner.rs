//! The background health runner: one task per check (own interval,
//! timeout, back-off), one publisher task that owns the results, beats,
//! logs transitions and swaps in a new snapshot.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Check;
use crate::config::Config;
use crate::core::health::{CheckSpec, CheckState, Observation, Status};
use crate::core::redact::redact_text;
use crate::sd_notify::Notifier;
use crate::state::{PoolStats, ProcessStats, Shared, StatusSnapshot};

/// A status transition, for the log and the catalog's `health_events`.
#[derive(Clone, Debug, PartialEq)]
pub struct HealthEvent {
    pub key: String,
    pub component_id: String,
    /// `None` for a check's first observation.
    pub from: Option<Status>,
    pub to: Status,
    pub value: Option<f64>,
    pub output: Option<String>,
    pub at: DateTime<Utc>,
}

impl crate::catalog::Transition for HealthEvent {
    fn row(&self) -> crate::catalog::EventRow<'_> {
        crate::catalog::EventRow {
            key: &self.key,
            component_id: &self.component_id,
            from: self.from.map(|s| s.as_str()),
            to: self.to.as_str(),
            value: self.value,
            output: self.output.as_deref(),
            at: self.at,
        }
    }
}

enum Message {
    Result {
        spec: CheckSpec,
        observation: Observation,
        duration: Duration,
        effective_interval: Duration,
        failures: u32,
    },
}

/// Lets other parts publish event-driven checks (e.g. `config:reload`).
#[derive(Clone)]
pub struct RunnerHandle {
    tx: mpsc::Sender<Message>,
    first_round: watch::Receiver<bool>,
}

impl RunnerHandle {
    /// Publishes a result for an event-driven check.
    pub async fn set(&self, spec: CheckSpec, observation: Observation) {
        let _ = self
            .tx
            .send(Message::Result {
                effective_interval: spec.interval,
                spec,
                observation,
                duration: Duration::ZERO,
                failures: 0,
            })
            .await;
    }

    /// Resolves once every periodic check has reported once.
    pub async fn first_round_done(&self) {
        let mut rx = self.first_round.clone();
        let _ = rx.wait_for(|done| *done).await;
    }
}

pub struct HealthRunner {
    pub checks: Vec<Arc<dyn Check>>,
    pub config: watch::Receiver<Arc<Config>>,
    pub shared: Arc<Shared>,
    pub events: Option<mpsc::Sender<HealthEvent>>,
    pub pool: Option<deadpool_postgres::Pool>,
    pub notifier: Notifier,
}

pub const HEARTBEAT_KEY: &str = "scheduler:heartbeat";

impl HealthRunner {
    pub fn spawn(self, tracker: &TaskTracker, cancel: CancellationToken) -> RunnerHandle {
        let (tx, rx) = mpsc::channel(256);
        let (first_tx, first_rx) = watch::channel(false);
        let expected: BTreeSet<String> = {
            let config = self.config.borrow();
            self.checks
                .iter()
                .map(|c| c.spec(&config.health).key)
                .collect()
        };
        for check in &self.checks {
            let check = Arc::clone(check);
            let key = check.spec(&self.config.borrow().health).key;
            tracker.spawn(check_loop(
                check,
                self.config.clone(),
                tx.clone(),
                cancel.clone(),
            ));
            tracing::debug!(check = %key, "health check armed");
        }
        let publisher = Publisher {
            states: BTreeMap::new(),
            expected,
            shared: self.shared,
            events: self.events,
            pool: self.pool,
            notifier: self.notifier,
            first_round: first_tx,
            last_beat: Instant::now(),
            process: ProcessStats::default(),
        };
        tracker.spawn(publisher.run(rx, self.config, cancel));
        RunnerHandle {
            tx,
            first_round: first_rx,
        }
    }
}

/// Interval before the next run: doubles per consecutive failure after the
/// first, capped at `max_backoff` (but never below `interval`).
pub fn backoff(interval: Duration, failures: u32, max_backoff: Duration) -> Duration {
    if failures <= 1 {
        return interval;
    }
    let factor = 2u32.saturating_pow(failures - 1);
    interval
        .saturating_mul(factor)
        .min(max_backoff.max(interval))
}

async fn check_loop(
    check: Arc<dyn Check>,
    mut config: watch::Receiver<Arc<Config>>,
    tx: mpsc::Sender<Message>,
    cancel: CancellationToken,
) {
    let mut failures = 0u32;
    loop {
        let current = Arc::clone(&config.borrow_and_update());
        let spec = check.spec(&current.health);
        let max_backoff = current.health.max_backoff;
        let started = Instant::now();
        let observation = tokio::select! {
            _ = cancel.cancelled() => return,
            result = tokio::time::timeout(spec.timeout, check.run(&current.health)) => result.unwrap_or_else(|_| {
                Observation::fail(format!("timed out after {}", humantime::format_duration(spec.timeout)))
            }),
        };
        failures = if observation.status == Status::Fail {
            failures.saturating_add(1)
        } else {
            0
        };
        let next = if check.backs_off() {
            backoff(spec.interval, failures, max_backoff)
        } else {
            spec.interval
        };
        let message = Message::Result {
            spec,
            observation,
            duration: started.elapsed(),
            effective_interval: next,
            failures,
        };
        if tx.send(message).await.is_err() {
            return;
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(next) => {}
            // A reload may shorten the interval: run now with the new settings.
            changed = config.changed() => if changed.is_err() { return },
        }
    }
}

/// Folds one observation into a check's state; returns the transition, if any.
pub fn apply(
    previous: Option<&CheckState>,
    spec: CheckSpec,
    observation: Observation,
    now: DateTime<Utc>,
    duration: Duration,
    effective_interval: Duration,
    failures: u32,
) -> (CheckState, Option<HealthEvent>) {
    let from = previous.map(|p| p.observation.status);
    let changed = from != Some(observation.status);
    let event = changed.then(|| HealthEvent {
        key: spec.key.clone(),
        component_id: spec.component_id.clone(),
        from,
        to: observation.status,
        value: observation.value,
        output: observation.output.clone(),
        at: now,
    });
    let changed_at = match previous {
        Some(p) if !changed => p.changed_at,
        _ => now,
    };
    let state = CheckState {
        spec,
        observation,
        observed_at: now,
        changed_at,
        duration,
        effective_interval,
        consecutive_failures: failures,
    };
    (state, event)
}

struct Publisher {
    states: BTreeMap<String, CheckState>,
    expected: BTreeSet<String>,
    shared: Arc<Shared>,
    events: Option<mpsc::Sender<HealthEvent>>,
    pool: Option<deadpool_postgres::Pool>,
    notifier: Notifier,
    first_round: watch::Sender<bool>,
    last_beat: Instant,
    /// Sampled on each beat, not on each publish.
    process: ProcessStats,
}

impl Publisher {
    async fn run(
        mut self,
        mut rx: mpsc::Receiver<Message>,
        mut config: watch::Receiver<Arc<Config>>,
        cancel: CancellationToken,
    ) {
        let mut ticker = self.ticker(&config.borrow_and_update());
        self.beat(&config.borrow());
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                Some(message) = rx.recv() => {
                    let secrets = config.borrow().secrets();
                    self.receive(message, &secrets);
                    self.publish();
                }
                _ = ticker.tick() => {
                    self.beat(&config.borrow());
                    self.publish();
                }
                Ok(()) = config.changed() => {
                    ticker = self.ticker(&config.borrow_and_update());
                }
            }
        }
        tracing::debug!("health runner stopped");
    }

    fn ticker(&self, config: &Config) -> tokio::time::Interval {
        let period = self.notifier.heartbeat_period(config.health.heartbeat);
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker
    }

    fn receive(&mut self, message: Message, secrets: &[String]) {
        let Message::Result {
            spec,
            mut observation,
            duration,
            effective_interval,
            failures,
        } = message;
        observation.output = observation.output.map(|o| redact_text(&o, secrets));
        let now = Utc::now();
        let key = spec.key.clone();
        let (state, event) = apply(
            self.states.get(&key),
            spec,
            observation,
            now,
            duration,
            effective_interval,
            failures,
        );
        if let Some(event) = event {
            log_transition(&event);
            if let Some(events) = &self.events
                && events.try_send(event).is_err()
            {
                tracing::warn!(check = %key, "health event queue full; transition kept in the log only");
            }
        }
        self.states.insert(key, state);
    }

    /// The runner's own heartbeat: refreshes `scheduler:heartbeat`, samples
    /// the process and the pool, and pings the systemd watchdog while no
    /// check has stopped reporting.
    fn beat(&mut self, config: &Config) {
        let period = self.notifier.heartbeat_period(config.health.heartbeat);
        let lag = self.last_beat.elapsed().as_secs_f64();
        self.last_beat = Instant::now();
        let spec = CheckSpec {
            key: HEARTBEAT_KEY.into(),
            component_id: "scheduler".into(),
            component_type: "component",
            interval: period,
            timeout: period,
            critical: true,
            periodic: true,
        };
        let observation = Observation::new(Status::Pass, Some(lag), Some("s"));
        let (state, event) = apply(
            self.states.get(HEARTBEAT_KEY),
            spec,
            observation,
            Utc::now(),
            Duration::ZERO,
            period,
            0,
        );
        if let Some(event) = event.filter(|e| e.from.is_some()) {
            log_transition(&event);
        }
        self.states.insert(HEARTBEAT_KEY.into(), state);
        self.process = super::process_stats::sample();

        let now = Utc::now();
        let wedged: Vec<&str> = self
            .states
            .values()
            .filter(|s| s.is_stale(now))
            .map(|s| s.spec.key.as_str())
            .collect();
        if wedged.is_empty() {
            self.notifier.watchdog();
        } else {
            tracing::warn!(checks = ?wedged, "checks stopped reporting; withholding the watchdog ping");
        }
    }

    fn publish(&mut self) {
        let first_round_done = self.expected.iter().all(|k| self.states.contains_key(k));
        if first_round_done && !*self.first_round.borrow() {
            let _ = self.first_round.send(true);
        }
        let pool = self.pool.as_ref().map(|p| {
            let s = p.status();
            PoolStats {
                max_size: s.max_size,
                size: s.size,
                available: s.available,
                waiting: s.waiting,
            }
        });
        self.shared.publish(StatusSnapshot {
            checks: self.states.values().cloned().collect(),
            published_at: Some(Utc::now()),
            first_round_done,
            process: self.process.clone(),
            pool,
        });
    }
}

fn log_transition(event: &HealthEvent) {
    let from = event.from.map_or("none", Status::as_str);
    let output = event.output.as_deref().unwrap_or("");
    match event.to {
        Status::Pass => {
            tracing::info!(check = %event.key, from, to = "pass", "health check passing")
        }
        Status::Warn => {
            tracing::warn!(check = %event.key, from, to = "warn", output, "health check warning")
        }
        Status::Fail => {
            tracing::warn!(check = %event.key, from, to = "fail", output, "health check failing")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> CheckSpec {
        CheckSpec {
            key: "catalog:responseTime".into(),
            component_id: "catalog".into(),
            component_type: "datastore",
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(5),
            critical: true,
            periodic: true,
        }
    }

    #[test]
    fn backoff_doubles_after_the_first_failure_and_caps() {
        let i = Duration::from_secs(10);
        let max = Duration::from_secs(60);
        assert_eq!(backoff(i, 0, max), i);
        assert_eq!(backoff(i, 1, max), i);
        assert_eq!(backoff(i, 2, max), Duration::from_secs(20));
        assert_eq!(backoff(i, 3, max), Duration::from_secs(40));
        assert_eq!(backoff(i, 4, max), max);
        assert_eq!(backoff(i, 99, max), max);
        assert_eq!(
            backoff(Duration::from_secs(120), 5, max),
            Duration::from_secs(120)
        );
    }

    #[test]
    fn apply_reports_transitions_and_keeps_change_time() {
        let t0 = Utc::now();
        let pass = Observation::new(Status::Pass, Some(1.0), Some("ms"));
        let (s1, e1) = apply(
            None,
            spec(),
            pass.clone(),
            t0,
            Duration::ZERO,
            spec().interval,
            0,
        );
        assert_eq!(e1.unwrap().from, None);
        let t1 = t0 + chrono::Duration::seconds(10);
        let (s2, e2) = apply(
            Some(&s1),
            spec(),
            pass,
            t1,
            Duration::ZERO,
            spec().interval,
            0,
        );
        assert!(e2.is_none());
        assert_eq!(s2.changed_at, t0);
        assert_eq!(s2.observed_at, t1);
        let t2 = t1 + chrono::Duration::seconds(10);
        let (s3, e3) = apply(
            Some(&s2),
            spec(),
            Observation::fail("down"),
            t2,
            Duration::ZERO,
            spec().interval,
            1,
        );
        let e3 = e3.unwrap();
        assert_eq!((e3.from, e3.to), (Some(Status::Pass), Status::Fail));
        assert_eq!(s3.changed_at, t2);
    }
}
