//! `vigil notify test [--webhook NAME|URL] [--url URL] [--json]`: a
//! signed `notify.test` event straight to each receiver (no queue, no
//! retry), one line per receiver. Exit 0 when all took it, 1 when one
//! answered with an error, 3 when one could not be reached.

use std::process::ExitCode;

use serde::Serialize;

use super::error::CliError;
use super::{Invocation, with_config_as};
use crate::config::{Config, WebhookConfig};
use crate::notify::send::Attempt;
use crate::outln;

/// Why `vigil notify test` did not deliver.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("no `[[notify.webhooks]]` in the config; add one or pass --url URL")]
    NoWebhooks,
    #[error("no webhook `{name}` in the config (configured: {known}); or pass an http(s) URL")]
    UnknownWebhook { name: String, known: String },
    #[error("{refused} receiver(s) refused the test event, {unreachable} could not be reached")]
    NotDelivered { refused: usize, unreachable: usize },
}

/// One receiver's answer, as printed.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Result {
    webhook: String,
    /// `delivered`, `refused` or `unreachable`.
    result: &'static str,
    status: Option<u16>,
    error: Option<String>,
}

pub async fn test_command(
    invocation: &Invocation,
    webhook: Option<String>,
    url: Option<String>,
    json: bool,
) -> ExitCode {
    with_config_as(invocation, json, |config| async move {
        let targets = targets(&config, webhook.or(url).as_deref())?;
        let instance = super::session::instance(&config);
        let mut results = Vec::new();
        for hook in &targets {
            let attempt = crate::notify::send_test(&config, hook, &instance).await;
            results.push(result(&config, hook, &attempt));
        }
        print(&results, json)?;
        verdict(&results)
    })
    .await
}

/// The configured webhooks, or the one `wanted` names (by name or URL);
/// an unconfigured URL is sent to unsigned.
fn targets(
    config: &Config,
    wanted: Option<&str>,
) -> std::result::Result<Vec<WebhookConfig>, NotifyError> {
    let hooks = &config.notify.webhooks;
    let Some(wanted) = wanted else {
        if hooks.is_empty() {
            return Err(NotifyError::NoWebhooks);
        }
        return Ok(hooks.clone());
    };
    if let Some(hook) = hooks
        .iter()
        .find(|h| h.name == wanted || h.url.expose() == wanted)
    {
        return Ok(vec![hook.clone()]);
    }
    if wanted.starts_with("http://") || wanted.starts_with("https://") {
        return Ok(vec![WebhookConfig::for_url(wanted)]);
    }
    Err(NotifyError::UnknownWebhook {
        name: wanted.to_owned(),
        known: if hooks.is_empty() {
            "none".into()
        } else {
            hooks
                .iter()
                .map(|h| h.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        },
    })
}

fn result(config: &Config, hook: &WebhookConfig, attempt: &Attempt) -> Result {
    let secrets = config.secrets();
    let redact = |text: String| crate::core::redact::redact_text(&text, &secrets);
    Result {
        webhook: redact(hook.name.clone()),
        result: match attempt {
            Attempt::Delivered { .. } => "delivered",
            Attempt::Refused { .. }
            | Attempt::Retry {
                status: Some(_), ..
            } => "refused",
            Attempt::Retry { status: None, .. } => "unreachable",
        },
        status: attempt.status(),
        error: attempt.error().map(redact),
    }
}

fn print(results: &[Result], json: bool) -> std::result::Result<(), CliError> {
    if json {
        outln!("{}", serde_json::to_string_pretty(results)?)?;
        return Ok(());
    }
    for r in results {
        match &r.error {
            None => outln!(
                "{}: delivered ({})",
                r.webhook,
                r.status.unwrap_or_default()
            )?,
            Some(error) => outln!("{}: {} ({error})", r.webhook, r.result)?,
        }
    }
    Ok(())
}

fn verdict(results: &[Result]) -> std::result::Result<(), CliError> {
    let count = |what: &str| results.iter().filter(|r| r.result == what).count();
    let (refused, unreachable) = (count("refused"), count("unreachable"));
    if refused + unreachable == 0 {
        return Ok(());
    }
    Err(NotifyError::NotDelivered {
        refused,
        unreachable,
    }
    .into())
}
