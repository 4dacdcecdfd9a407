//! What a job run needs, built once from the config.

use std::path::PathBuf;
use std::str::FromStr;

use std::sync::Arc;

use arc_swap::ArcSwap;
use deadpool_postgres::Pool;

use crate::config::{Config, JobConfig, Secret};
use crate::journal::{Actor, Entry, Journal};
use crate::repo::Repository;

/// Why a run started (`executions.trigger`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Schedule,
    CatchUp,
    Cli,
    Api,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Schedule => "schedule",
            Trigger::CatchUp => "catch-up",
            Trigger::Cli => "cli",
            Trigger::Api => "api",
        }
    }
}

/// Connecting to a job's source.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{0}")]
    Config(String),
    #[error("{host}: {detail}")]
    Connect {
        host: String,
        /// Refused, timed out or no route: the server was not reached.
        unreachable: bool,
        detail: String,
    },
}

/// A job's secrets of the moment.
struct LiveSecrets {
    source: Secret,
    password: Option<Secret>,
    /// Every secret of the config (old ones stay redacted too).
    redact: Vec<String>,
}

impl LiveSecrets {
    fn of(config: &Config, job: &JobConfig) -> LiveSecrets {
        LiveSecrets {
            source: job.source.clone(),
            password: job.password.clone(),
            redact: config.secrets(),
        }
    }
}

#[derive(Clone)]
pub struct JobContext {
    pub name: String,
    pub job: JobConfig,
    pub repo: Repository,
    pub recipients: Vec<age::x25519::Recipient>,
    pub identity_file: Option<PathBuf>,
    pub catalog: Pool,
    /// `executions.host`: this vigil's instance name.
    pub host: String,
    /// The source's URL and password and the values to redact: shared by
    /// every clone, so a reload's rotated secrets ([`JobContext::rotate`])
    /// reach the job loop, the checks and the API at once.
    live: Arc<ArcSwap<LiveSecrets>>,
    /// Where restores with `--jobs` stage the dump.
    pub state_dir: PathBuf,
    /// Where every run's events go.
    pub journal: Journal,
    /// Who runs it: the scheduler, a CLI user, or an API token.
    pub actor: Actor,
    /// The API request that started it.
    pub request_id: Option<String>,
    /// `kind = "mirror"`: the destination repository.
    pub mirror_to: Option<Repository>,
}

impl JobContext {
    pub fn new(
        config: &Config,
        name: &str,
        catalog: Pool,
        host: &str,
        journal: Journal,
        actor: Actor,
    ) -> Result<JobContext, String> {
        let job = config.job(name).map_err(|e| e.to_string())?;
        let repo_config = &config.repositories[&job.repository];
        let repo = Repository::open(&job.repository, repo_config).map_err(|e| e.to_string())?;
        let encryption = repo_config.encryption.as_ref();
        let recipients = encryption
            .map(|e| {
                e.recipients
                    .iter()
                    .filter_map(|r| age::x25519::Recipient::from_str(r).ok())
                    .collect()
            })
            .unwrap_or_default();
        Ok(JobContext {
            name: name.to_owned(),
            job: job.clone(),
            repo,
            recipients,
            identity_file: encryption.and_then(|e| e.identity_file.clone()),
            catalog,
            host: host.to_owned(),
            live: Arc::new(ArcSwap::from_pointee(LiveSecrets::of(config, job))),
            state_dir: config.daemon.state_dir.clone(),
            journal,
            actor,
            request_id: None,
            mirror_to: match &job.mirror_to {
                Some(name) => Some(
                    Repository::open(name, &config.repositories[name])
                        .map_err(|e| e.to_string())?,
                ),
                None => None,
            },
        })
    }

    /// Applies the secrets of a reloaded `config` (the source URL and
    /// password, the repositories' secret options) to this context and
    /// every clone of it. Other changed keys still wait for a restart.
    pub fn rotate(&self, config: &Config) -> Result<(), String> {
        let job = config.job(&self.name).map_err(|e| e.to_string())?;
        let rekey = |repo: &Repository| -> Result<(), String> {
            let Some(new) = config.repositories.get(&repo.name) else {
                return Ok(());
            };
            repo.rekey(new).map_err(|e| e.to_string())
        };
        rekey(&self.repo)?;
        if let Some(mirror) = &self.mirror_to {
            rekey(mirror)?;
        }
        let mut live = LiveSecrets::of(config, job);
        // Rotated-out values stay redacted: an old error may still quote one.
        live.redact.extend(self.live.load().redact.iter().cloned());
        live.redact.sort();
        live.redact.dedup();
        self.live.store(Arc::new(live));
        Ok(())
    }

    /// A journal entry about this job by this context's actor; `data`
    /// (an object) gets the job's name.
    pub fn event(&self, event: &str, mut data: serde_json::Value) -> Entry {
        if let Some(map) = data.as_object_mut() {
            map.insert("job".into(), self.name.clone().into());
        }
        Entry::now(event, self.actor.clone(), data).with_request_id(self.request_id.clone())
    }

    /// The journal head for a manifest.
    pub fn journal_head(&self) -> Option<crate::repo::manifest::JournalHead> {
        self.journal
            .head()
            .map(|h| crate::repo::manifest::JournalHead {
                journal: self.journal.id().to_owned(),
                seq: h.seq,
                hash: h.hash,
            })
    }

    /// The job's age identities, for reading encrypted objects.
    pub fn identities(&self) -> Result<Vec<age::x25519::Identity>, String> {
        if self.recipients.is_empty() {
            return Ok(vec![]);
        }
        let path = self.identity_file.as_ref().ok_or_else(|| {
            format!("repository `{}` is encrypted but has no `encryption.identity_file` to read it with", self.repo.name)
        })?;
        crate::config::identity::read_identities(path).map_err(|e| e.to_string())
    }

    /// The source connection with the password from `password`/`password_file`.
    pub fn source_config(&self) -> Result<crate::config::conninfo::ConnInfo, String> {
        let live = self.live.load();
        let mut info = crate::config::conninfo::parse(live.source.expose())
            .map_err(|e| format!("jobs.{}.source: {e}", self.name))?;
        if let Some(password) = &live.password {
            info.pg.password(password.expose());
        }
        if info.pg.get_connect_timeout().is_none() {
            info.pg.connect_timeout(std::time::Duration::from_secs(10));
        }
        Ok(info)
    }

    /// A session on the source (its `postgres` database unless the URL
    /// names one); the connection task ends when the client is dropped.
    pub async fn connect_source(&self) -> Result<tokio_postgres::Client, String> {
        self.open_source().await.map_err(|e| e.to_string())
    }

    /// Like [`connect_source`](Self::connect_source), saying whether the
    /// server could not be reached at all (rather than refusing us).
    pub async fn open_source(&self) -> Result<tokio_postgres::Client, SourceError> {
        let mut info = self.source_config().map_err(SourceError::Config)?;
        if info.pg.get_dbname().is_none() {
            info.pg.dbname("postgres");
        }
        crate::pgconn::connect(&info)
            .await
            .map_err(|e| SourceError::Connect {
                host: crate::pipeline::pgtools::describe_host(&info.pg),
                unreachable: e.is_unreachable(),
                detail: e.detail(),
            })
    }

    pub fn redact(&self, text: &str) -> String {
        crate::redact::redact_text(text, &self.live.load().redact)
    }
}
