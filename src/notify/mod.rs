//! Telling people: webhooks (`[[notify.webhooks]]`) fed from the audit
//! journal through a queue per webhook in `state_dir`, edge-triggered
//! events (`job.stale`, `backup.recovered`), and healthchecks.io-style
//! pings of each run. Between the job runs (which ping and record edges)
//! and state (where queue depth and circuit are published).
//!
//! Every matching journal event reaches each webhook once, whichever
//! process recorded it: the holder of a webhook's queue lock (the daemon,
//! or a CLI command while no daemon runs) follows the journal from the
//! queue's cursor.

pub mod body;
pub mod edges;
pub mod outbox;
pub mod ping;
pub mod queue;
pub mod retry;
pub mod send;
pub mod sign;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use self::outbox::{Context, Outbox};
use self::queue::Owner;
use crate::config::{Config, WebhookConfig};
use crate::core::journal_record::Actor;
use crate::journal::Journal;
use crate::state::Shared;
use crate::tasks::Tasks;

/// How often the daemon tries again for a queue a CLI command holds.
const OWNER_RETRY: Duration = Duration::from_secs(1);

/// The status page's address as bodies link it: `admin.public_url`, else
/// the admin port's (with the host's name when it listens on every
/// address: `http://0.0.0.0:9746/` leads nowhere).
pub fn status_page_url(config: &Config) -> String {
    if let Some(url) = &config.admin.public_url {
        return url.clone();
    }
    let listen = config.admin.listen;
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|_| listen.ip().is_unspecified());
    match host {
        Some(host) => format!("http://{host}:{}/", listen.port()),
        None => format!("http://{listen}/"),
    }
}

fn context(
    config: &Config,
    journal: &Journal,
    actor: Actor,
    shared: Option<Arc<Shared>>,
) -> Context {
    Context {
        journal: journal.clone(),
        actor,
        shared,
        status_page_url: Some(status_page_url(config)),
        secrets: config.secrets(),
    }
}

/// The daemon's delivery task per webhook. A webhook with no queue yet
/// starts at the journal's current head (no replay of history).
pub fn spawn_webhooks(
    config: &Config,
    journal: &Journal,
    shared: &Arc<Shared>,
    tasks: &Tasks,
    work: &CancellationToken,
) {
    let start = journal.head().map_or(0, |h| h.seq);
    for hook in &config.notify.webhooks {
        let ctx = context(config, journal, Actor::daemon(), Some(Arc::clone(shared)));
        let dir = queue::dir(&config.daemon.state_dir, &hook.name);
        tasks.spawn(
            format!("notify:{}", hook.name),
            deliver_until_cancelled(hook.clone(), dir, ctx, start, work.child_token()),
        );
    }
}

async fn deliver_until_cancelled(
    hook: WebhookConfig,
    dir: std::path::PathBuf,
    ctx: Context,
    start: u64,
    cancel: CancellationToken,
) {
    let mut told = false;
    let owner = loop {
        match Owner::try_take(&dir) {
            Ok(Some(owner)) => break owner,
            Ok(None) if !told => {
                tracing::info!(webhook = %hook.name, "another vigil process delivers this webhook's queue; waiting for it");
                told = true;
            }
            Ok(None) => {}
            Err(e) if !told => {
                tracing::error!(webhook = %hook.name, dir = %dir.display(), error = %e, "cannot open the webhook's queue; retrying");
                told = true;
            }
            Err(_) => {}
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(OWNER_RETRY) => {}
        }
    };
    Outbox::open(hook, owner, ctx, start).run(cancel).await;
}

/// A CLI command's own delivery before it exits, for every webhook whose
/// queue no other process holds (no daemon runs): at most
/// `notify.cli_wait`; a queue this command starts begins after `start`
/// (the journal's head when the command opened it).
pub async fn deliver_own(config: &Config, journal: &Journal, actor: Actor, start: u64) {
    let deadline = Instant::now() + config.notify.cli_wait;
    let mut drains = Vec::new();
    for hook in &config.notify.webhooks {
        let dir = queue::dir(&config.daemon.state_dir, &hook.name);
        let owner = match Owner::try_take(&dir) {
            Ok(Some(owner)) => owner,
            // The daemon delivers it (it follows the same journal).
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(webhook = %hook.name, dir = %dir.display(), error = %e, "cannot open the webhook's queue; the daemon delivers this command's events");
                continue;
            }
        };
        let ctx = context(config, journal, actor.clone(), None);
        drains.push(Outbox::open(hook.clone(), owner, ctx, start).drain(deadline));
    }
    futures::future::join_all(drains).await;
}

/// `vigil notify test`: one signed `notify.test` event straight to `hook`
/// (not queued, not retried).
pub async fn send_test(config: &Config, hook: &WebhookConfig, instance: &str) -> send::Attempt {
    let body = body::Body {
        event_id: uuid::Uuid::new_v4().to_string(),
        event: "notify.test".into(),
        job: None,
        time: chrono::Utc::now(),
        summary: body::summary("notify.test", None, &serde_json::Value::Null),
        details: serde_json::json!({
            "instance": instance,
            "version": env!("CARGO_PKG_VERSION"),
        }),
        status_page_url: Some(status_page_url(config)),
    };
    let text = serde_json::to_string(&body).unwrap_or_default();
    match send::client(hook.timeout) {
        Ok(client) => send::post(&client, hook, "notify.test", &body.event_id, &text).await,
        Err(e) => send::Attempt::Retry {
            status: None,
            error: crate::core::redact::error_chain(&e),
            retry_after: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::path::Path;

    fn config(admin: &str) -> crate::config::Config {
        let text = format!("[admin]\n{admin}\n[catalog]\nurl = \"postgres://v@127.0.0.1/v\"\n");
        crate::config::parse(&text, Path::new("/etc/vigil/config.toml"), &HashMap::new()).unwrap()
    }

    #[test]
    fn the_status_page_link_is_the_public_url_or_a_reachable_admin_address() {
        assert_eq!(
            super::status_page_url(&config("")),
            "http://127.0.0.1:9746/"
        );
        let public = config("public_url = \"https://vigil.example.com/\"");
        assert_eq!(
            super::status_page_url(&public),
            "https://vigil.example.com/"
        );
        let everywhere = super::status_page_url(&config("listen = \"0.0.0.0:9746\""));
        assert!(
            !everywhere.contains("0.0.0.0") && everywhere.ends_with(":9746/"),
            "{everywhere}"
        );
    }
}
