//! Opening the audit journal from the config, one way for the daemon and
//! every CLI command (both append under the same lock).

use std::path::PathBuf;
use std::sync::Arc;

use super::sign::{KeyError, load_signing_key};
use super::{AuditStats, Journal, JournalOptions};
use crate::config::Config;

/// Who opens the journal: the daemon writes checkpoints (signed with
/// `journal.signing_key_file` when set), a CLI command none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opener {
    Daemon,
    Cli,
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("`journal.signing_key_file`: checkpoints cannot be signed")]
    SigningKey(#[source] KeyError),
    #[error("cannot open the audit journal in {} (`journal.dir`){}", dir.display(), hint(*opener))]
    Open {
        dir: PathBuf,
        opener: Opener,
        #[source]
        source: std::io::Error,
    },
}

/// A CLI command usually fails here for running as another user.
fn hint(opener: Opener) -> &'static str {
    match opener {
        Opener::Daemon => "",
        Opener::Cli => "; run the command as vigil's user",
    }
}

/// Opens the journal in `journal.dir` for `opener`.
pub fn open_journal(
    config: &Config,
    opener: Opener,
    stats: Arc<AuditStats>,
) -> Result<Journal, OpenError> {
    let daemon = opener == Opener::Daemon;
    let mut options = JournalOptions::from_config(config, daemon);
    if daemon && let Some(path) = &config.journal.signing_key_file {
        let key = load_signing_key(path).map_err(OpenError::SigningKey)?;
        options.signer = Some(Arc::new(key));
    }
    Journal::open(options, stats).map_err(|source| OpenError::Open {
        dir: config.journal_dir(),
        opener,
        source,
    })
}
