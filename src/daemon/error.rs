//! Why the daemon could not start: each variant names the config key or
//! the place to look, with the cause; the CLI picks the exit status by
//! matching the variants.

use std::path::PathBuf;

use crate::admin::BindError;
use crate::catalog::CatalogError;
use crate::core::redact::error_chain;
use crate::journal::OpenError;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Bind(#[from] BindError),
    #[error("cannot create `daemon.state_dir` {}: {}", path.display(), error_chain(source))]
    StateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The journal's directory or the signing key (the cause in the text).
    #[error("{}", error_chain(.0))]
    Journal(#[from] OpenError),
    /// The catalog refused or did not answer; `redacted` is its text with
    /// the config's secrets taken out (a URL may carry a password).
    #[error("{redacted}")]
    Catalog {
        error: CatalogError,
        redacted: String,
    },
    /// A job could not be armed (its repository or source config);
    /// `redacted` as for the catalog.
    #[error("{redacted}")]
    Jobs { redacted: String },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::Opener;

    /// The messages are the ones the anyhow contexts printed (`{e:#}`):
    /// operators and tests read them.
    #[test]
    fn start_up_messages_name_the_key_and_the_cause() {
        let denied = || std::io::Error::from_raw_os_error(13);
        let state_dir = DaemonError::StateDir {
            path: "/var/lib/vigil".into(),
            source: denied(),
        };
        assert_eq!(
            format!("{state_dir:#}"),
            "cannot create `daemon.state_dir` /var/lib/vigil: Permission denied (os error 13)"
        );
        let journal = DaemonError::from(OpenError::Open {
            dir: "/var/lib/vigil/journal".into(),
            opener: Opener::Daemon,
            source: denied(),
        });
        assert_eq!(
            journal.to_string(),
            "cannot open the audit journal in /var/lib/vigil/journal (`journal.dir`): Permission denied (os error 13)"
        );
        let bind = DaemonError::from(BindError {
            addr: "127.0.0.1:9187".parse().unwrap(),
            source: std::io::Error::from(std::io::ErrorKind::AddrInUse),
        });
        assert_eq!(
            bind.to_string(),
            "cannot listen on 127.0.0.1:9187 (`admin.listen`): address in use; is another vigil running, or is the port taken?"
        );
    }
}
