//! What an operator API call carries and answers: the state the endpoints
//! act on, the caller's facts, the answer type, and the reload request the
//! daemon serves. Shared by the API's front (api.rs: auth, journal) and
//! the endpoints, so neither imports the other's internals.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use hyper::StatusCode;
use tokio::sync::{mpsc, oneshot, watch};

use crate::config::{Change, Config};
use crate::core::auth::Role;
use crate::core::journal_record::Actor;
use crate::jobs::JobContext;
use crate::journal::{Journal, JournalError};
use crate::state::Shared;

/// A reload asked for through the API, answered with the changes.
pub struct ReloadRequest {
    pub actor: Actor,
    pub request_id: String,
    pub answer: oneshot::Sender<Result<Vec<Change>, ReloadError>>,
}

/// Why a reload was refused; vigil keeps running on the previous config.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file does not load or validate. `redacted` is the reason with
    /// the running config's secrets taken out.
    #[error("{redacted}")]
    Invalid { path: PathBuf, redacted: String },
    /// The change could not be journalled, so it is not applied.
    #[error(transparent)]
    Journal(#[from] JournalError),
}

/// What the endpoints act on; set once start-up is done.
pub struct Api {
    pub config: watch::Receiver<Arc<Config>>,
    pub shared: Arc<Shared>,
    pub journal: Journal,
    pub pool: deadpool_postgres::Pool,
    pub jobs: BTreeMap<String, JobContext>,
    pub reload: mpsc::Sender<ReloadRequest>,
    pub tasks: tokio_util::task::TaskTracker,
    pub cancel: tokio_util::sync::CancellationToken,
}

/// One call's facts, for the handler and the journal.
pub struct Call {
    pub request_id: String,
    pub ip: std::net::IpAddr,
    pub user_agent: Option<String>,
    pub token: Option<(String, Role)>,
    /// Refused calls from this address not journalled one by one.
    pub suppressed: u64,
}

impl Call {
    pub fn actor(&self) -> Actor {
        match &self.token {
            Some((name, role)) => Actor::token(name, role.as_str()),
            None => Actor::from("anonymous"),
        }
    }
}

/// An endpoint's answer: status and JSON body, or an error.
pub type Answer = Result<(StatusCode, serde_json::Value), ApiError>;

/// An endpoint's refusal: HTTP status, stable code, message for people.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
}
