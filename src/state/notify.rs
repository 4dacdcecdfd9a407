//! What the daemon knows about its webhook queues: written by each
//! webhook's delivery task, read by `notify:<name>` and `/metrics`.

use std::collections::BTreeMap;
use std::sync::Mutex;

use chrono::{DateTime, Utc};

/// One webhook's queue and circuit, as last published.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WebhookState {
    /// Deliveries waiting (not yet delivered nor given up).
    pub queued: u64,
    /// When the oldest waiting delivery was first queued.
    pub oldest_queued: Option<DateTime<Utc>>,
    pub consecutive_failures: u32,
    /// Open after `circuit_after` failed attempts in a row; closes on a success.
    pub circuit_open: bool,
    /// The last failed attempt's cause (status or error), redacted.
    pub last_error: Option<String>,
    pub delivered_total: u64,
    /// Attempts that failed (each retry counts).
    pub failed_total: u64,
    /// Deliveries dropped: refused (4xx) or given up after `give_up_after`.
    pub dropped_total: u64,
}

/// Every webhook's state, by name.
#[derive(Debug, Default)]
pub struct NotifyBoard {
    hooks: Mutex<BTreeMap<String, WebhookState>>,
}

impl NotifyBoard {
    pub fn get(&self, name: &str) -> Option<WebhookState> {
        self.lock().get(name).cloned()
    }

    pub fn all(&self) -> BTreeMap<String, WebhookState> {
        self.lock().clone()
    }

    pub fn update(&self, name: &str, f: impl FnOnce(&mut WebhookState)) {
        f(self.lock().entry(name.to_owned()).or_default());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, WebhookState>> {
        self.hooks.lock().unwrap_or_else(|p| p.into_inner())
    }
}
