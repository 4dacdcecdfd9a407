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
    /// Reading the newest checkpoint (does this start stop the signing?).
    #[error("cannot read the audit journal in {} (`journal.dir`)", dir.display())]
    Read {
        dir: PathBuf,
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
    // Read before the writer opens: whether this start stops the signing
    // (a daemon without the key on a journal whose newest checkpoint is signed).
    let stops_signing = match (&options.signer, daemon) {
        (None, true) => {
            super::sign::signed_head(&config.journal_dir()).map_err(|source| OpenError::Read {
                dir: config.journal_dir(),
                source,
            })?
        }
        _ => None,
    };
    let journal = Journal::open(options, stats).map_err(|source| OpenError::Open {
        dir: config.journal_dir(),
        opener,
        source,
    })?;
    if let Some((seq, public_key)) = stops_signing {
        journal.emit(super::sign::signing_stopped(seq, &public_key));
    }
    Ok(journal)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::path::Path;

    use super::*;

    /// The shipped defaults, with the state directory (and so the journal)
    /// under `dir`, plus `extra` config lines.
    fn config(dir: &Path, extra: &str) -> Config {
        let src = format!(
            "{extra}[catalog]\nurl = \"postgres://vigil@127.0.0.1/vigil\"\n[daemon]\nstate_dir = \"{}\"\n",
            dir.display()
        );
        crate::config::parse(&src, &dir.join("config.toml"), &HashMap::new()).unwrap()
    }

    #[tokio::test]
    async fn both_openers_open_the_configured_journal_with_the_shipped_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path(), "");
        for opener in [Opener::Daemon, Opener::Cli] {
            let journal = open_journal(&config, opener, Default::default()).unwrap();
            assert_eq!(journal.dir(), config.journal_dir());
            journal.close().await;
        }
    }

    #[tokio::test]
    async fn only_the_daemon_needs_the_signing_key() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let config = config(
            dir.path(),
            &format!("[journal]\nsigning_key_file = \"{}\"\n", missing.display()),
        );
        match open_journal(&config, Opener::Daemon, Default::default()) {
            Err(OpenError::SigningKey(KeyError::Read { path, .. })) => assert_eq!(path, missing),
            other => panic!("expected a signing key error, got {:?}", other.err()),
        }
        let journal = open_journal(&config, Opener::Cli, Default::default()).unwrap();
        journal.close().await;
    }

    #[test]
    fn a_cli_command_is_told_to_run_as_vigils_user() {
        let dir = tempfile::tempdir().unwrap();
        // A file where the state directory should be: the journal cannot open.
        let blocked = dir.path().join("state");
        std::fs::write(&blocked, "").unwrap();
        let config = config(&blocked, "");
        let Err(err) = open_journal(&config, Opener::Cli, Default::default()) else {
            panic!("the journal opened under a file");
        };
        assert!(matches!(
            err,
            OpenError::Open {
                opener: Opener::Cli,
                ..
            }
        ));
        assert_eq!(
            err.to_string(),
            format!(
                "cannot open the audit journal in {} (`journal.dir`); run the command as vigil's user",
                config.journal_dir().display()
            )
        );
    }
}
