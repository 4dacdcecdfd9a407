//! SIGHUP and `POST /api/v1/reload`: load the file again, journal the
//! change before applying it, then apply what can change live (log level,
//! tokens, job secrets); refuse and keep running on the old config
//! otherwise.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::watch;

use crate::admin::{AdminState, AuthSettings, ReloadError};
use crate::config::{self, Config, ProcessEnv};
use crate::core::health::{Observation, Status};
use crate::core::journal_record::{Actor, Entry};
use crate::core::redact::redact_text;
use crate::health::{RunnerHandle, reload_spec};
use crate::journal::Journal;
use crate::logging::Logging;
use crate::sd_notify::Notifier;
use crate::state::Shared;

pub(super) struct Reloader {
    pub path: PathBuf,
    pub config: watch::Sender<Arc<Config>>,
    pub shared: Arc<Shared>,
    pub runner: RunnerHandle,
    pub logging: Option<Arc<Logging>>,
    pub notifier: Notifier,
    pub journal: Journal,
    pub admin: Arc<AdminState>,
    /// The jobs' contexts, shared with the loops, checks and API: rotated
    /// secrets are applied to them in place.
    pub jobs: Vec<crate::jobs::JobContext>,
}

impl Reloader {
    /// Reloads the config file; returns the changes, or why it was refused.
    pub async fn reload(
        &mut self,
        actor: Actor,
        request_id: Option<String>,
    ) -> Result<Vec<config::Change>, ReloadError> {
        self.notifier.reloading();
        let result = self.try_reload(actor, request_id).await;
        self.notifier.ready("ready");
        result
    }

    async fn try_reload(
        &mut self,
        actor: Actor,
        request_id: Option<String>,
    ) -> Result<Vec<config::Change>, ReloadError> {
        match self.load_and_journal(actor, request_id).await {
            Err(error) => {
                self.refused(&error).await;
                Err(error)
            }
            Ok((new, changes)) => {
                self.apply(new, &changes).await;
                Ok(changes)
            }
        }
    }

    /// The new config and its changes, journalled (and synced) before they
    /// apply: if the journal cannot be written, the reload is refused.
    async fn load_and_journal(
        &self,
        actor: Actor,
        request_id: Option<String>,
    ) -> Result<(Config, Vec<config::Change>), ReloadError> {
        let old = Arc::clone(&self.config.borrow());
        match config::load(&self.path, &ProcessEnv) {
            Ok(new) => {
                let changes = config::diff(&old, &new);
                let entry = Entry::at(
                    chrono::Utc::now(),
                    "config.reloaded",
                    actor,
                    reload_event(&self.path, &changes),
                )
                .with_request_id(request_id);
                self.journal.commit(entry).await?;
                Ok((new, changes))
            }
            Err(e) => {
                let redacted = redact_text(&e.to_string(), &old.secrets());
                self.journal.emit(
                    Entry::at(
                        chrono::Utc::now(),
                        "config.reload_refused",
                        actor,
                        serde_json::json!({ "path": self.path, "error": redacted }),
                    )
                    .with_request_id(request_id),
                );
                Err(ReloadError::Invalid {
                    path: self.path.clone(),
                    redacted,
                })
            }
        }
    }

    /// Keeps the old config: logs, counts and shows the refusal.
    async fn refused(&self, error: &ReloadError) {
        let message = error.to_string();
        tracing::warn!(error = %message, "config reload refused; still running on the previous config");
        self.shared.record_reload(false);
        let summary = format!(
            "reload refused, running on the previous config: {}",
            message.trim()
        );
        self.runner
            .set(
                reload_spec(),
                Observation::new(Status::Warn, None, None).with_output(summary),
            )
            .await;
    }

    /// Applies what changes live and publishes the new config.
    async fn apply(&self, new: Config, changes: &[config::Change]) {
        let old = Arc::clone(&self.config.borrow());
        for change in changes {
            if change.live {
                tracing::info!(key = %change.key, old = %change.old, new = %change.new, "config changed");
            } else {
                tracing::warn!(key = %change.key, old = %change.old, new = %change.new, "config changed; takes effect after a restart");
            }
        }
        if old.log.level != new.log.level
            && let Some(logging) = &self.logging
            && let Err(e) = logging.set_level(&new.log.level)
        {
            tracing::warn!(error = %e, "cannot apply the new log level");
        }
        let keys: Vec<&str> = changes.iter().map(|c| c.key.as_str()).collect();
        tracing::info!(changed = ?keys, "config reloaded");
        self.admin
            .auth
            .store(Arc::new(AuthSettings::from_config(&new)));
        // The only live changes under jobs and repositories are their
        // secrets and sources (config::diff): apply those in place.
        if changes
            .iter()
            .any(|c| c.live && (c.key.starts_with("jobs.") || c.key.starts_with("repositories.")))
        {
            self.rotate_secrets(&new);
        }
        self.config.send_replace(Arc::new(new));
        self.shared.record_reload(true);
        self.runner
            .set(reload_spec(), Observation::new(Status::Pass, None, None))
            .await;
    }

    fn rotate_secrets(&self, new: &Config) {
        for ctx in &self.jobs {
            match ctx.rotate(new) {
                Ok(()) => tracing::info!(job = %ctx.name, "secrets applied"),
                Err(e) => {
                    tracing::warn!(job = %ctx.name, error = %redact_text(&e.to_string(), &new.secrets()), "cannot apply the new secrets; the old ones stay")
                }
            }
        }
    }
}

/// `config.reloaded`'s data: before and after of each changed key (values
/// already redacted by the diff) and which apply at once.
fn reload_event(path: &Path, changes: &[config::Change]) -> serde_json::Value {
    let before: serde_json::Map<String, serde_json::Value> = changes
        .iter()
        .map(|c| (c.key.clone(), c.old.clone().into()))
        .collect();
    let after: serde_json::Map<String, serde_json::Value> = changes
        .iter()
        .map(|c| (c.key.clone(), c.new.clone().into()))
        .collect();
    let diff: Vec<serde_json::Value> = changes
        .iter()
        .map(|c| serde_json::json!({ "key": c.key, "old": c.old, "new": c.new, "live": c.live }))
        .collect();
    serde_json::json!({ "path": path, "before": before, "after": after, "diff": diff })
}
