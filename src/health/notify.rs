//! `notify:<webhook>`: warns while the webhook's circuit is open or its
//! oldest waiting delivery is older than `queue_warn_after`. Never fails:
//! a dead receiver is worth knowing about but does not make backups unsafe.

use std::sync::Arc;

use chrono::Utc;
use futures::FutureExt;
use futures::future::BoxFuture;

use super::Check;
use crate::config::{HealthConfig, WebhookConfig};
use crate::core::health::{CheckSpec, Observation, Status};
use crate::state::{Shared, WebhookState};

pub struct WebhookCheck {
    pub hook: WebhookConfig,
    pub shared: Arc<Shared>,
}

impl Check for WebhookCheck {
    fn spec(&self, config: &HealthConfig) -> CheckSpec {
        CheckSpec {
            key: format!("notify:{}", self.hook.name),
            component_id: self.hook.name.clone(),
            component_type: "webhook",
            interval: config.interval,
            timeout: config.timeout,
            critical: false,
            periodic: true,
        }
    }

    fn run<'a>(&'a self, _config: &'a HealthConfig) -> BoxFuture<'a, Observation> {
        let state = self.shared.notify.get(&self.hook.name).unwrap_or_default();
        async move { grade_webhook(&self.hook, &state, Utc::now()) }.boxed()
    }
}

/// The observed value is the queue's depth (deliveries waiting).
pub fn grade_webhook(
    hook: &WebhookConfig,
    state: &WebhookState,
    now: chrono::DateTime<Utc>,
) -> Observation {
    let oldest = state
        .oldest_queued
        .map(|t| (now - t).to_std().unwrap_or_default());
    let late = oldest.filter(|age| *age >= hook.queue_warn_after);
    let error = state.last_error.as_deref().unwrap_or("unknown error");
    let output = if state.circuit_open {
        Some(format!(
            "circuit open after {} failed attempts in a row ({error}); {} deliveries wait, one probe per {}",
            state.consecutive_failures,
            state.queued,
            super::jobs::short(hook.circuit_probe_interval)
        ))
    } else {
        late.map(|age| {
            format!(
                "the oldest of {} waiting deliveries is {} old (last error: {error})",
                state.queued,
                super::jobs::short(age)
            )
        })
    };
    let observation = Observation::new(
        if output.is_some() {
            Status::Warn
        } else {
            Status::Pass
        },
        Some(state.queued as f64),
        Some("deliveries"),
    )
    .with_detail("consecutiveFailures", state.consecutive_failures)
    .with_detail("circuitOpen", state.circuit_open)
    .with_detail("delivered", state.delivered_total)
    .with_detail("failedAttempts", state.failed_total);
    match output {
        Some(text) => observation.with_output(text),
        None => observation,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook() -> WebhookConfig {
        toml::from_str("name = \"ops\"\nurl = \"http://127.0.0.1:1/\"\n").unwrap()
    }

    #[test]
    fn an_open_circuit_or_an_old_queue_warns_and_an_empty_queue_passes() {
        let now = Utc::now();
        let idle = grade_webhook(&hook(), &WebhookState::default(), now);
        assert_eq!(idle.status, Status::Pass);
        let open = WebhookState {
            queued: 3,
            oldest_queued: Some(now),
            consecutive_failures: 5,
            circuit_open: true,
            last_error: Some("the receiver answered 503".into()),
            ..Default::default()
        };
        let graded = grade_webhook(&hook(), &open, now);
        assert_eq!(graded.status, Status::Warn);
        assert!(graded.output.unwrap().contains("circuit open after 5"));
        let old = WebhookState {
            queued: 1,
            oldest_queued: Some(now - chrono::Duration::minutes(11)),
            ..Default::default()
        };
        assert_eq!(grade_webhook(&hook(), &old, now).status, Status::Warn);
        let young = WebhookState {
            queued: 1,
            oldest_queued: Some(now - chrono::Duration::minutes(1)),
            ..Default::default()
        };
        assert_eq!(grade_webhook(&hook(), &young, now).status, Status::Pass);
    }
}
