//! The TOML config: schema, defaults, loading and validation (with the
//! file and line of each problem), secrets from `*_file`, connection
//! strings' TLS parameters, reload diffs. Imports only `core`.

mod bytes;
pub mod conninfo;
mod diff;
mod expand;
pub mod exposure;
mod files;
pub mod identity;
mod load;
mod notify;
mod proof;
mod secret;
mod storage;
mod validate;
pub mod validate_drill;
mod validate_storage;
mod verify;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use diff::{Change, diff};
pub use expand::{Env, ExpandError, ProcessEnv, expand};
pub use load::{ConfigError, Problem, load, parse};
pub use notify::{KNOWN_EVENTS, NotifyConfig, PingConfig, WebhookConfig};
pub use proof::{DEFAULT_DRILL_CHECK, DrillConfig, VerifySchedule, drill_check_queries};
pub use secret::{REDACTED, Secret};
pub use storage::{
    Checkpoint, Compression, Databases, EncryptionConfig, JobConfig, JobKind, RepositoryConfig,
    is_secret_option, parse_rate,
};
pub use validate::{PLACEHOLDER_SECRET, validate};
pub use validate_storage::SCHEMES;
pub use verify::parse_size;

/// Default admin listen address: loopback, port 9746 (unassigned by IANA
/// and not used by the usual Prometheus exporters).
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9746";
/// [`DEFAULT_ADMIN_LISTEN`] as an address (a test checks they agree).
const DEFAULT_ADMIN_ADDR: std::net::SocketAddr = std::net::SocketAddr::V4(
    std::net::SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, 9746),
);

/// The whole config file. Later sections (`repositories`, `jobs`) hang here.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub daemon: DaemonConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub admin: AdminConfig,
    pub catalog: CatalogConfig,
    #[serde(default)]
    pub health: HealthConfig,
    #[serde(default)]
    pub repositories: BTreeMap<String, RepositoryConfig>,
    #[serde(default)]
    pub jobs: BTreeMap<String, JobConfig>,
    #[serde(default)]
    pub journal: JournalConfig,
    /// Webhooks (`[[notify.webhooks]]`).
    #[serde(default)]
    pub notify: NotifyConfig,
    /// Where the loader read secrets from (`key`, absolute path), for the
    /// file-mode check (`exposure`); not part of the file's schema.
    #[serde(skip)]
    pub secret_files: Vec<(String, PathBuf)>,
}

/// A command named a job the config does not have (a usage error).
#[derive(Debug, thiserror::Error)]
#[error("no job `{job}` in the config (configured: {known})")]
pub struct UnknownJob {
    pub job: String,
    /// The configured names, comma-separated (`none` when there are none).
    pub known: String,
}

impl Config {
    /// The job called `name`.
    pub fn job(&self, name: &str) -> Result<&JobConfig, UnknownJob> {
        self.jobs.get(name).ok_or_else(|| UnknownJob {
            job: name.to_owned(),
            known: if self.jobs.is_empty() {
                "none".into()
            } else {
                self.jobs.keys().cloned().collect::<Vec<_>>().join(", ")
            },
        })
    }

    /// Where the journal's segments live.
    pub fn journal_dir(&self) -> PathBuf {
        self.journal
            .dir
            .clone()
            .unwrap_or_else(|| self.daemon.state_dir.join("journal"))
    }
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    #[default]
    Development,
    Production,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonConfig {
    /// `production` turns unsafe-but-convenient settings into errors.
    pub environment: Environment,
    /// Name of this vigil in `/health/detailed` (`serviceId`); defaults to the host name.
    pub instance: Option<String>,
    /// Local state (journal, caches). Watched by `state-dir:utilization`.
    pub state_dir: PathBuf,
    /// How long SIGTERM waits for running work before exiting anyway.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            environment: Environment::Development,
            instance: None,
            state_dir: PathBuf::from("/var/lib/vigil"),
            shutdown_timeout: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Pretty,
    Json,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A tracing filter directive: `info`, `debug`, `info,vigil::admin=debug`.
    pub level: String,
    pub format: LogFormat,
    /// Also write the log to this file (reopened on SIGUSR1 for logrotate).
    pub file: Option<PathBuf>,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: LogFormat::Pretty,
            file: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    /// Operator API tokens (`[[admin.tokens]]`): a name, a role, and the
    /// token's SHA-256 or a file holding the token, never the token itself.
    pub tokens: Vec<TokenConfig>,
    /// Proxies (CIDRs or addresses) whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<String>,
    /// Put `/health/detailed` and the status page behind the `viewer` role.
    pub protect_detailed: bool,
    /// Failed authentications per client IP and minute before 429 (0: no limit).
    pub auth_failures_per_minute: u32,
    /// A client must send its request headers within this time.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// Connections served at once; past it, connections are served only if
    /// their first request is a probe (`/health*`).
    pub max_connections: usize,
    /// Connections one client address may hold in that pool; its further
    /// connections are served only if their first request is a probe.
    pub max_connections_per_client: usize,
    /// The status page's address as people reach it (`https://vigil.example/`),
    /// linked from webhook bodies; default: `http://<listen>/`.
    pub public_url: Option<String>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: DEFAULT_ADMIN_ADDR,
            tokens: Vec::new(),
            trusted_proxies: Vec::new(),
            protect_detailed: false,
            auth_failures_per_minute: 10,
            header_read_timeout: Duration::from_secs(5),
            max_connections: 256,
            max_connections_per_client: 32,
            public_url: None,
        }
    }
}

/// One operator API token.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Who holds it; journalled with every call made with it.
    pub name: String,
    pub role: crate::core::auth::Role,
    /// Lowercase hex SHA-256 of the token (`printf %s TOKEN | sha256sum`).
    /// Filled from `token_file` at load. Printed redacted: a digest of a
    /// short token can be brute-forced offline.
    #[serde(serialize_with = "secret::redact_some")]
    pub token_sha256: Option<String>,
    /// A file (mode 0600) holding the token itself; hashed at load.
    #[serde(skip_serializing)]
    pub token_file: Option<PathBuf>,
}

/// The audit journal (`[journal]`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct JournalConfig {
    /// Segments live here; defaults to `<daemon.state_dir>/journal`. Local disk.
    pub dir: Option<PathBuf>,
    /// Events that precede no destructive action are fsynced at most this late.
    #[serde(with = "humantime_serde")]
    pub sync_interval: Duration,
    /// A segment is closed once it holds this many MiB ...
    pub segment_max_mib: u64,
    /// ... or is this old.
    #[serde(with = "humantime_serde")]
    pub segment_max_age: Duration,
    /// Segments older than this are removed once shipped to the catalog.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// A `journal.checkpoint` anchors the head this often, even when idle.
    #[serde(with = "humantime_serde")]
    pub checkpoint_interval: Duration,
    /// Events held while the journal cannot be written; beyond this they
    /// are counted and recorded as a `journal.gap`.
    pub queue_capacity: usize,
    /// Loki's base URL (`http://loki:3100`); events are pushed to `/loki/api/v1/push`.
    pub loki_url: Option<String>,
    /// Stream labels for Loki, besides `job="vigil"` and `instance`.
    pub loki_labels: BTreeMap<String, String>,
    /// An ed25519 private key (PKCS#8 PEM) that signs every checkpoint.
    pub signing_key_file: Option<PathBuf>,
}

impl Default for JournalConfig {
    fn default() -> Self {
        JournalConfig {
            dir: None,
            sync_interval: Duration::from_secs(1),
            segment_max_mib: 64,
            segment_max_age: Duration::from_secs(24 * 3600),
            retention: Duration::from_secs(90 * 24 * 3600),
            checkpoint_interval: Duration::from_secs(3600),
            queue_capacity: 10_000,
            loki_url: None,
            loki_labels: BTreeMap::new(),
            signing_key_file: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CatalogConfig {
    /// libpq URL or key=value string. A password in it is allowed but
    /// `password` / `password_file` keep it out of the URL.
    pub url: Secret,
    pub password: Option<Secret>,
    pub password_file: Option<PathBuf>,
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
    /// How long start-up waits for the catalog to accept connections.
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Upper bound for one catalog round trip (and for waiting on the pool).
    #[serde(default = "default_query_timeout", with = "humantime_serde")]
    pub query_timeout: Duration,
}

fn default_pool_size() -> usize {
    4
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_query_timeout() -> Duration {
    Duration::from_secs(5)
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// How often the runner beats (and pings the systemd watchdog).
    #[serde(with = "humantime_serde")]
    pub heartbeat: Duration,
    /// Default interval between runs of one check.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Default time one check may take before it counts as failed.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Failing checks back off (doubling) up to this interval.
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    pub catalog: CatalogHealthConfig,
    pub disk: DiskHealthConfig,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            heartbeat: Duration::from_secs(5),
            interval: Duration::from_secs(15),
            timeout: Duration::from_secs(5),
            max_backoff: Duration::from_secs(60),
            catalog: CatalogHealthConfig::default(),
            disk: DiskHealthConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CatalogHealthConfig {
    #[serde(with = "humantime_serde")]
    pub interval: Option<Duration>,
    /// Round trip slower than this is `warn`.
    #[serde(with = "humantime_serde")]
    pub warn_after: Duration,
    /// Round trip slower than this is `fail`.
    #[serde(with = "humantime_serde")]
    pub fail_after: Duration,
    /// An unreachable catalog warns (nothing depends on it: history and
    /// the audit table lag) and fails once the outage lasts this long…
    #[serde(with = "humantime_serde")]
    pub outage_fail_after: Duration,
    /// …or once this many journal events wait to be shipped to it.
    pub outage_fail_backlog: u64,
}

impl Default for CatalogHealthConfig {
    fn default() -> Self {
        CatalogHealthConfig {
            interval: None,
            warn_after: Duration::from_millis(250),
            fail_after: Duration::from_secs(2),
            outage_fail_after: Duration::from_secs(3600),
            outage_fail_backlog: 100_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DiskHealthConfig {
    #[serde(with = "humantime_serde")]
    pub interval: Option<Duration>,
    /// Used fraction of the filesystem (0..1) at which a directory warns.
    pub warn_ratio: f64,
    /// Used fraction at which it fails.
    pub fail_ratio: f64,
}

impl Default for DiskHealthConfig {
    fn default() -> Self {
        DiskHealthConfig {
            interval: None,
            warn_ratio: 0.85,
            fail_ratio: 0.95,
        }
    }
}

impl Config {
    /// The config as `check-config` prints it: TOML, every secret redacted
    /// (including a password inside the catalog URL).
    pub fn to_redacted_toml(&self) -> String {
        let mut value =
            toml::Value::try_from(self).unwrap_or(toml::Value::Table(Default::default()));
        if let Some(jobs) = value.get_mut("jobs").and_then(|j| j.as_table_mut()) {
            for (name, job) in jobs.iter_mut() {
                let physical = self
                    .jobs
                    .get(name)
                    .is_some_and(|j| j.kind == storage::JobKind::PostgresPhysical);
                if let (false, Some(table)) = (physical, job.as_table_mut()) {
                    // Keys that mean nothing to this kind are not its effective config.
                    for key in storage::PHYSICAL_ONLY_KEYS {
                        table.remove(*key);
                    }
                }
                if let (Some(source), Some(config)) = (job.get_mut("source"), self.jobs.get(name)) {
                    *source = toml::Value::String(crate::core::redact::redact_text(
                        config.source.expose(),
                        &[],
                    ));
                }
            }
        }
        if let Some(url) = value.get_mut("catalog").and_then(|c| c.get_mut("url")) {
            *url = toml::Value::String(crate::core::redact::redact_text(
                self.catalog.url.expose(),
                &[],
            ));
        }
        toml::to_string_pretty(&value).unwrap_or_default()
    }

    /// Every secret value in this config, for the redaction of free text.
    pub fn secrets(&self) -> Vec<String> {
        self.named_secrets().into_iter().map(|(_, v)| v).collect()
    }

    /// Every secret value with the key it came from.
    pub fn named_secrets(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if let Some(secret) = &self.catalog.password {
            out.push(("catalog.password".into(), secret.expose().to_owned()));
        }
        if let Some(pw) = crate::core::redact::url_password(self.catalog.url.expose()) {
            out.push(("catalog.url".into(), pw));
        }
        for (name, job) in &self.jobs {
            if let Some(p) = &job.password {
                out.push((format!("jobs.{name}.password"), p.expose().to_owned()));
            }
            if let Some(pw) = crate::core::redact::url_password(job.source.expose()) {
                out.push((format!("jobs.{name}.source"), pw));
            }
            let drill_target = job.drill.as_ref().map(|d| d.target.expose());
            if let Some(pw) = drill_target.and_then(crate::core::redact::url_password) {
                out.push((format!("jobs.{name}.drill.target"), pw));
            }
        }
        for hook in &self.notify.webhooks {
            let key = |what: &str| format!("notify.webhooks.{}.{what}", hook.name);
            if let Some(secret) = &hook.secret {
                out.push((key("secret_file"), secret.expose().to_owned()));
            }
            for (header, value) in &hook.headers {
                out.push((
                    key(&format!("header_files.{header}")),
                    value.expose().to_owned(),
                ));
            }
            out.push((key("url"), hook.url.expose().to_owned()));
        }
        for (name, job) in &self.jobs {
            for (key, ping) in job.pings() {
                out.push((
                    format!("jobs.{name}.{key}.url"),
                    ping.url.expose().to_owned(),
                ));
            }
        }
        for (name, repo) in &self.repositories {
            out.extend(
                repo.options
                    .iter()
                    .filter(|(k, _)| is_secret_option(k))
                    .map(|(k, v)| (format!("repositories.{name}.options.{k}"), v.clone())),
            );
        }
        out.retain(|(_, s)| !s.is_empty());
        out
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_default_admin_address_is_the_documented_one() {
        assert_eq!(
            super::DEFAULT_ADMIN_ADDR.to_string(),
            super::DEFAULT_ADMIN_LISTEN
        );
    }
}
