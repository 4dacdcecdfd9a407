//! `journal:writable`: fails while events cannot be written (and
//! destructive operations are therefore refused).

use std::sync::atomic::Ordering;

use futures::FutureExt;
use futures::future::BoxFuture;

use super::Check;
use crate::config::HealthConfig;
use crate::core::health::{CheckSpec, Observation, Status};
use crate::journal::Journal;

pub struct JournalWritableCheck {
    pub journal: Journal,
}

impl Check for JournalWritableCheck {
    fn spec(&self, config: &HealthConfig) -> CheckSpec {
        CheckSpec {
            key: "journal:writable".into(),
            component_id: "journal".into(),
            component_type: "component",
            interval: config.interval,
            timeout: config.timeout,
            critical: true,
            periodic: true,
        }
    }

    fn run<'a>(&'a self, _config: &'a HealthConfig) -> BoxFuture<'a, Observation> {
        async move {
            let status = self.journal.status();
            let held = self.journal.stats().held.load(Ordering::Relaxed) as f64;
            if status.writable {
                Observation::new(Status::Pass, Some(held), Some("events"))
            } else {
                Observation::new(Status::Fail, Some(held), Some("events")).with_output(format!(
                    "the audit journal cannot be written: {}; prune, restore over data and reloads are refused until it can, backups go on",
                    status.last_error.unwrap_or_default()
                ))
            }
        }
        .boxed()
    }
}
