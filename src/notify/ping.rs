//! healthchecks.io-style pings of a job's runs: `<url>/start` when a run
//! starts, `<url>` on success, `<url>/fail` (with a short plain-text
//! reason) on failure. Sent in order by a task of their own with a short
//! timeout and a few retries, so a dead ping service never delays or
//! fails a run.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;

use crate::config::PingConfig;

/// A failure's reason is cut to this many bytes (the service shows it).
const MAX_REASON: usize = 1000;

/// One ping of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ping {
    Start,
    Success,
    /// The reason, already redacted.
    Fail(String),
}

impl Ping {
    /// The URL this ping goes to under `base`.
    pub fn url(&self, base: &str) -> String {
        let base = base.trim_end_matches('/');
        match self {
            Ping::Start => format!("{base}/start"),
            Ping::Success => base.to_owned(),
            Ping::Fail(_) => format!("{base}/fail"),
        }
    }
}

/// The ping tasks of a process, so a CLI command can wait for them before
/// it exits (the daemon never has to).
#[derive(Clone, Debug, Default)]
pub struct Pinger {
    tracker: TaskTracker,
}

impl Pinger {
    /// The pings of one run of `job`, sent in the order given.
    pub fn run(&self, job: &str, config: &PingConfig) -> RunPings {
        let (tx, rx) = mpsc::unbounded_channel();
        self.tracker
            .spawn(send_in_order(job.to_owned(), config.clone(), rx));
        RunPings { tx }
    }

    /// Waits at most `limit` for the pings still being sent.
    pub async fn wait(&self, limit: Duration) {
        self.tracker.close();
        let _ = tokio::time::timeout(limit, self.tracker.wait()).await;
        self.tracker.reopen();
    }
}

/// Where one run's pings are queued; dropping it ends the run's task once
/// its pings are sent.
#[derive(Debug)]
pub struct RunPings {
    tx: mpsc::UnboundedSender<Ping>,
}

impl RunPings {
    pub fn send(&self, ping: Ping) {
        let _ = self.tx.send(ping);
    }
}

async fn send_in_order(job: String, config: PingConfig, mut rx: mpsc::UnboundedReceiver<Ping>) {
    let client = match reqwest::Client::builder()
        .timeout(config.timeout)
        .connect_timeout(config.timeout)
        .user_agent(concat!("vigil/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(client) => client,
        Err(e) => {
            tracing::warn!(job, error = %e, "cannot build the ping client; no pings for this run");
            return;
        }
    };
    while let Some(ping) = rx.recv().await {
        send_one(&client, &job, &config, &ping).await;
    }
}

/// One ping with up to `retries` more attempts (1 s, 2 s, 4 s … apart).
async fn send_one(client: &reqwest::Client, job: &str, config: &PingConfig, ping: &Ping) {
    let url = ping.url(config.url.expose());
    let body = match ping {
        Ping::Fail(reason) => truncate(reason, MAX_REASON).to_owned(),
        _ => String::new(),
    };
    let mut wait = Duration::from_secs(1);
    for attempt in 0..=config.retries {
        let sent = client
            .post(&url)
            .header("content-type", "text/plain; charset=utf-8")
            .body(body.clone())
            .send()
            .await;
        // Never log the URL: healthchecks.io's is its secret.
        let error = match sent {
            Ok(r) if r.status().is_success() => return,
            Ok(r) => format!("the ping service answered {}", r.status()),
            Err(e) => crate::core::redact::error_chain(&e.without_url()),
        };
        if attempt == config.retries {
            tracing::warn!(job, ?ping, %error, "cannot ping `jobs.{job}.ping.url`; giving up on this ping");
            return;
        }
        tokio::time::sleep(wait).await;
        wait *= 2;
    }
}

/// At most `max` bytes of `text`, cut at a character boundary.
fn truncate(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_healthchecks_io_paths() {
        let base = "https://hc-ping.com/abc/";
        assert_eq!(Ping::Start.url(base), "https://hc-ping.com/abc/start");
        assert_eq!(Ping::Success.url(base), "https://hc-ping.com/abc");
        assert_eq!(
            Ping::Fail("x".into()).url(base),
            "https://hc-ping.com/abc/fail"
        );
    }

    #[test]
    fn a_long_reason_is_cut_on_a_character_boundary() {
        let text = "é".repeat(600);
        let cut = truncate(&text, MAX_REASON);
        assert!(cut.len() <= MAX_REASON && cut.chars().all(|c| c == 'é'));
    }
}
