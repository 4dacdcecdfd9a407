//! `[notify]` (`[[notify.webhooks]]`) and `[jobs.<name>.ping]`: who is
//! told about journal events, and the dead-man pings of a job's runs.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Secret;

/// `[notify]`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct NotifyConfig {
    /// A CLI command run while no daemon delivers waits at most this long
    /// for its own events to be delivered; the rest waits in the queue.
    #[serde(with = "humantime_serde")]
    pub cli_wait: Duration,
    pub webhooks: Vec<WebhookConfig>,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        NotifyConfig {
            cli_wait: Duration::from_secs(10),
            webhooks: Vec::new(),
        }
    }
}

/// One `[[notify.webhooks]]` receiver.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Unique; names the queue in `state_dir` and the `notify:<name>` check.
    pub name: String,
    /// `http://` or `https://`. Kept secret (printed redacted): chat
    /// services' webhook URLs are their credentials.
    pub url: Secret,
    /// Journal event names, or `"*"` for all but `notify.*`.
    #[serde(default = "all_events")]
    pub events: Vec<String>,
    /// A file (mode 0600) holding the HMAC-SHA256 key that signs every body.
    pub secret_file: Option<PathBuf>,
    /// Filled from `secret_file` at load.
    #[serde(skip_deserializing)]
    pub secret: Option<Secret>,
    /// Extra headers: header name → a file holding its value.
    #[serde(default, alias = "headers_files")]
    pub header_files: BTreeMap<String, PathBuf>,
    /// Filled from `header_files` at load.
    #[serde(skip_deserializing)]
    pub headers: BTreeMap<String, Secret>,
    /// One attempt may take this long.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// The first retry's delay; each later one doubles it (with jitter).
    #[serde(default = "default_retry_initial", with = "humantime_serde")]
    pub retry_initial: Duration,
    /// The longest wait between two attempts.
    #[serde(default = "default_retry_max_interval", with = "humantime_serde")]
    pub retry_max_interval: Duration,
    /// A delivery still failing this long after its first attempt is dropped.
    #[serde(default = "default_give_up_after", with = "humantime_serde")]
    pub give_up_after: Duration,
    /// Consecutive failed attempts that open the circuit.
    #[serde(default = "default_circuit_after")]
    pub circuit_after: u32,
    /// While open, one probe this often.
    #[serde(default = "default_circuit_probe", with = "humantime_serde")]
    pub circuit_probe_interval: Duration,
    /// `notify:<name>` warns when the oldest waiting delivery is this old.
    #[serde(default = "default_queue_warn_after", with = "humantime_serde")]
    pub queue_warn_after: Duration,
}

impl WebhookConfig {
    /// An unconfigured receiver (`vigil notify test --url`): unsigned, defaults.
    pub fn for_url(url: &str) -> WebhookConfig {
        WebhookConfig {
            name: "url".into(),
            url: Secret::new(url),
            events: all_events(),
            secret_file: None,
            secret: None,
            header_files: BTreeMap::new(),
            headers: BTreeMap::new(),
            timeout: default_timeout(),
            retry_initial: default_retry_initial(),
            retry_max_interval: default_retry_max_interval(),
            give_up_after: default_give_up_after(),
            circuit_after: default_circuit_after(),
            circuit_probe_interval: default_circuit_probe(),
            queue_warn_after: default_queue_warn_after(),
        }
    }

    /// Whether `event` goes to this receiver. `notify.*` (the deliveries'
    /// own records) never match `"*"`: a failing receiver would otherwise
    /// be sent its own failures, forever.
    pub fn wants(&self, event: &str) -> bool {
        self.events
            .iter()
            .any(|e| e == event || (e == "*" && !event.starts_with("notify.")))
    }
}

fn all_events() -> Vec<String> {
    vec!["*".into()]
}
fn default_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_retry_initial() -> Duration {
    Duration::from_secs(2)
}
fn default_retry_max_interval() -> Duration {
    Duration::from_secs(600)
}
fn default_give_up_after() -> Duration {
    Duration::from_secs(24 * 3600)
}
fn default_circuit_after() -> u32 {
    5
}
fn default_circuit_probe() -> Duration {
    Duration::from_secs(60)
}
fn default_queue_warn_after() -> Duration {
    Duration::from_secs(600)
}

/// `[jobs.<name>.ping]`: healthchecks.io-style pings of each run.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PingConfig {
    /// `<url>/start`, `<url>`, `<url>/fail`. May hold a token: kept secret.
    pub url: Secret,
    /// One ping may take this long.
    #[serde(default = "default_ping_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Further attempts after a failed ping.
    #[serde(default = "default_ping_retries")]
    pub retries: u32,
}

fn default_ping_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_ping_retries() -> u32 {
    2
}

/// Every journal event vigil writes: what `events` may name.
pub const KNOWN_EVENTS: &[&str] = &[
    "api.request",
    "backup.failed",
    "backup.pinned",
    "backup.recovered",
    "backup.started",
    "backup.succeeded",
    "backup.unpin_failed",
    "backup.unpinned",
    "config.reload_refused",
    "config.reloaded",
    "daemon.started",
    "daemon.stopping",
    "drill.failed",
    "drill.succeeded",
    "job.stale",
    "journal.checkpoint",
    "journal.gap",
    "journal.recovered",
    "journal.segment_started",
    "journal.signing_stopped",
    "journal.unwritable",
    "mirror.failed",
    "mirror.started",
    "mirror.succeeded",
    "notify.delivered",
    "notify.failed",
    "prune.deleted",
    "prune.failed",
    "prune.planned",
    "restore.failed",
    "restore.refused",
    "restore.started",
    "restore.succeeded",
    "verify.failed",
    "verify.succeeded",
    "wal.conflict",
    "wal.fetch_failed",
    "wal.push_failed",
];

/// `[notify]`'s problems as `(dotted key, message)`.
pub(super) fn validate(config: &super::Config, problem: &mut dyn FnMut(String, String)) {
    let mut names = std::collections::BTreeSet::new();
    for (i, hook) in config.notify.webhooks.iter().enumerate() {
        let key = format!("notify.webhooks[{i}]");
        if hook.name.trim().is_empty() {
            problem(format!("{key}.name"), "must not be empty".into());
        } else if !names.insert(hook.name.as_str()) {
            problem(
                format!("{key}.name"),
                format!(
                    "`{}` names two webhooks; names must be unique (each has its own queue)",
                    hook.name
                ),
            );
        } else if !hook
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            || hook.name.starts_with('.')
        {
            problem(
                format!("{key}.name"),
                format!(
                    "`{}` may hold only letters, digits, `-`, `_` and `.` (it names a directory)",
                    hook.name
                ),
            );
        }
        let url = hook.url.expose();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            problem(
                format!("{key}.url"),
                "is not an http(s) URL (e.g. https://hooks.example.com/vigil)".into(),
            );
        }
        if hook.events.is_empty() {
            problem(
                format!("{key}.events"),
                "lists no event (use [\"*\"] for all)".into(),
            );
        }
        for event in &hook.events {
            if event != "*" && !KNOWN_EVENTS.contains(&event.as_str()) {
                problem(
                    format!("{key}.events"),
                    format!(
                        "`{event}` is no journal event; known: *, {}",
                        KNOWN_EVENTS.join(", ")
                    ),
                );
            }
        }
        for (what, value) in [
            ("timeout", hook.timeout),
            ("retry_initial", hook.retry_initial),
            ("circuit_probe_interval", hook.circuit_probe_interval),
        ] {
            if value.is_zero() {
                problem(format!("{key}.{what}"), "must be longer than 0s".into());
            }
        }
        if hook.retry_max_interval < hook.retry_initial {
            problem(
                format!("{key}.retry_max_interval"),
                "must be at least `retry_initial`".into(),
            );
        }
        if hook.circuit_after == 0 {
            problem(format!("{key}.circuit_after"), "must be at least 1".into());
        }
    }
    for (name, job) in &config.jobs {
        for (key, ping) in job.pings() {
            let url = ping.url.expose();
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                problem(
                    format!("jobs.{name}.{key}.url"),
                    "is not an http(s) URL (e.g. https://hc-ping.com/<uuid>)".into(),
                );
            }
            if ping.timeout.is_zero() {
                problem(
                    format!("jobs.{name}.{key}.timeout"),
                    "must be longer than 0s".into(),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::path::Path;

    use crate::config::{ConfigError, parse};

    const BASE: &str = "[catalog]\nurl = \"postgres://vigil@127.0.0.1/vigil\"\n";

    fn load(extra: &str) -> Result<crate::config::Config, ConfigError> {
        parse(
            &format!("{BASE}{extra}"),
            Path::new("/etc/vigil/config.toml"),
            &HashMap::new(),
        )
    }

    /// Every event name the source journals (the first string literal
    /// after an emitting call), so a new event can be subscribed to.
    #[test]
    fn every_journalled_event_is_known() {
        let calls = [
            "Event::emit(",
            "Event::record(",
            ".event(",
            "Entry::at(",
            "system_entry(",
        ];
        let src = concat!(env!("CARGO_MANIFEST_DIR"), "/src");
        let mut missing = std::collections::BTreeSet::new();
        for entry in walkdir::WalkDir::new(src)
            .into_iter()
            .filter_map(Result::ok)
        {
            if entry.path().extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let text = std::fs::read_to_string(entry.path()).unwrap();
            let code = text.split("#[cfg(test)]").next().unwrap_or_default();
            for call in calls {
                for (at, _) in code.match_indices(call) {
                    let after = &code[at + call.len()..];
                    let window = &after[..after.len().min(160)];
                    let Some(name) = window.split('"').nth(1) else {
                        continue;
                    };
                    let event = name.split_once('.').is_some_and(|(a, b)| {
                        !a.is_empty()
                            && !b.is_empty()
                            && name
                                .chars()
                                .all(|c| c.is_ascii_lowercase() || c == '_' || c == '.')
                    });
                    if event && !super::KNOWN_EVENTS.contains(&name) {
                        missing.insert(format!("{name} ({})", entry.path().display()));
                    }
                }
            }
        }
        assert!(missing.is_empty(), "add to KNOWN_EVENTS: {missing:?}");
    }

    #[test]
    fn a_duplicate_webhook_name_is_refused_at_its_file_and_line() {
        let e = load(
            "[[notify.webhooks]]\nname = \"ops\"\nurl = \"http://a/\"\n\
             [[notify.webhooks]]\nname = \"ops\"\nurl = \"http://b/\"\n",
        )
        .unwrap_err();
        let text = e.to_string();
        // Line 7 is the second `name = "ops"`.
        assert!(
            text.contains(
                "/etc/vigil/config.toml:7:1: `notify.webhooks[1].name`: `ops` names two webhooks"
            ),
            "{text}"
        );
    }

    #[test]
    fn an_unknown_event_is_refused_with_the_known_ones() {
        let e = load("[[notify.webhooks]]\nname = \"ops\"\nurl = \"http://a/\"\nevents = [\"backup.faild\"]\n")
            .unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains(
                "`backup.faild` is no journal event; known: *, api.request, backup.failed"
            ),
            "{text}"
        );
        assert!(
            text.contains("job.stale") && text.contains("backup.recovered"),
            "{text}"
        );
    }

    #[test]
    fn the_shipped_defaults_retry_within_5s_up_to_10m_for_24h_and_send_everything() {
        let config =
            load("[[notify.webhooks]]\nname = \"ops\"\nurl = \"https://hooks.example/v\"\n")
                .unwrap();
        let hook = &config.notify.webhooks[0];
        assert_eq!(hook.events, ["*"]);
        assert!(hook.wants("backup.failed") && hook.wants("job.stale"));
        assert!(!hook.wants("notify.failed"), "notify.* never matches *");
        assert_eq!(hook.circuit_after, 5);
        assert!(hook.retry_initial <= std::time::Duration::from_secs(5));
        assert_eq!(config.notify.cli_wait, std::time::Duration::from_secs(10));
        // The URL is a credential for chat services: redacted when printed.
        assert!(!config.to_redacted_toml().contains("hooks.example"));
    }

    #[test]
    fn the_secret_and_header_files_are_read_and_count_as_secrets() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("hook.key"), "s3cr3t-key\n").unwrap();
        std::fs::write(dir.path().join("auth"), "Bearer tok-123456\n").unwrap();
        let text = format!(
            "{BASE}[[notify.webhooks]]\nname = \"ops\"\nurl = \"http://a/\"\nsecret_file = \"hook.key\"\n\
             header_files = {{ Authorization = \"auth\" }}\n"
        );
        let config = parse(&text, &dir.path().join("config.toml"), &HashMap::new()).unwrap();
        let hook = &config.notify.webhooks[0];
        assert_eq!(hook.secret.as_ref().unwrap().expose(), "s3cr3t-key");
        assert_eq!(hook.headers["Authorization"].expose(), "Bearer tok-123456");
        let secrets = config.secrets();
        assert!(secrets.contains(&"s3cr3t-key".to_owned()));
        assert!(secrets.contains(&"Bearer tok-123456".to_owned()));
        let files: Vec<&str> = config
            .secret_files
            .iter()
            .map(|(k, _)| k.as_str())
            .collect();
        assert!(
            files.contains(&"notify.webhooks[0].secret_file"),
            "{files:?}"
        );
    }
}
