//! What a job run needs, built once from the config.

use std::path::PathBuf;

use std::sync::Arc;

use arc_swap::ArcSwap;
use deadpool_postgres::Pool;

use crate::config::{Config, EncryptionConfig, JobConfig, Secret};
use crate::core::journal_record::{Actor, Entry};
use crate::journal::Journal;
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

/// Building a job's context from the config (start-up, reload).
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    #[error(transparent)]
    Job(#[from] crate::config::UnknownJob),
    #[error(transparent)]
    Repo(#[from] crate::repo::RepoError),
}

/// Connecting to a job's source.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("jobs.{job}.source: {source}")]
    Url {
        job: String,
        #[source]
        source: crate::config::conninfo::ConnInfoError,
    },
    #[error("{host}: {detail}")]
    Connect {
        host: String,
        /// Refused, timed out or no route: the server was not reached.
        unreachable: bool,
        detail: String,
    },
}

/// Reading an encrypted repository's objects.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "repository `{repo}` is encrypted but has no `encryption.identity_file` to read it with"
    )]
    NoIdentityFile { repo: String },
    #[error(transparent)]
    Identity(#[from] crate::config::identity::IdentityError),
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
    /// Sends `[jobs.<name>.ping]`'s pings (a CLI command waits for them).
    pub pings: crate::notify::ping::Pinger,
}

impl JobContext {
    pub fn new(
        config: &Config,
        name: &str,
        catalog: Pool,
        host: &str,
        journal: Journal,
        actor: Actor,
    ) -> Result<JobContext, ContextError> {
        let job = config.job(name)?;
        let repo_config = &config.repositories[&job.repository];
        let repo = Repository::open(&job.repository, repo_config)?;
        let encryption = repo_config.encryption.as_ref();
        let recipients = encryption
            .map(EncryptionConfig::age_recipients)
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
                Some(name) => Some(Repository::open(name, &config.repositories[name])?),
                None => None,
            },
            pings: Default::default(),
        })
    }

    /// Applies the secrets of a reloaded `config` (the source URL and
    /// password, the repositories' secret options) to this context and
    /// every clone of it. Other changed keys still wait for a restart.
    pub fn rotate(&self, config: &Config) -> Result<(), ContextError> {
        let job = config.job(&self.name)?;
        let rekey = |repo: &Repository| -> Result<(), ContextError> {
            let Some(new) = config.repositories.get(&repo.name) else {
                return Ok(());
            };
            Ok(repo.rekey(new)?)
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
        Entry::at(chrono::Utc::now(), event, self.actor.clone(), data)
            .with_request_id(self.request_id.clone())
    }

    /// The journal head for a manifest.
    pub fn journal_head(&self) -> Option<crate::core::manifest::JournalHead> {
        self.journal
            .head()
            .map(|h| crate::core::manifest::JournalHead {
                journal: self.journal.id().to_owned(),
                seq: h.seq,
                hash: h.hash,
            })
    }

    /// The job's age identities, for reading encrypted objects.
    pub fn identities(&self) -> Result<Vec<age::x25519::Identity>, KeyError> {
        if self.recipients.is_empty() {
            return Ok(vec![]);
        }
        let path = self
            .identity_file
            .as_ref()
            .ok_or_else(|| KeyError::NoIdentityFile {
                repo: self.repo.name.clone(),
            })?;
        Ok(crate::config::identity::read_identities(path)?)
    }

    /// The source connection with the password from `password`/`password_file`.
    pub fn source_config(&self) -> Result<crate::config::conninfo::ConnInfo, SourceError> {
        let live = self.live.load();
        let mut info = crate::config::conninfo::parse(live.source.expose()).map_err(|source| {
            SourceError::Url {
                job: self.name.clone(),
                source,
            }
        })?;
        if let Some(password) = &live.password {
            info.pg.password(password.expose());
        }
        if info.pg.get_connect_timeout().is_none() {
            info.pg.connect_timeout(std::time::Duration::from_secs(10));
        }
        Ok(info)
    }

    /// A session on the source (its `postgres` database unless the URL
    /// names one), saying whether the server could not be reached at all
    /// (rather than refusing us); the connection task ends when the client
    /// is dropped.
    pub async fn open_source(&self) -> Result<tokio_postgres::Client, SourceError> {
        let mut info = self.source_config()?;
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
        crate::core::redact::redact_text(text, &self.live.load().redact)
    }
}
