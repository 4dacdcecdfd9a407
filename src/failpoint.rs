//! Failpoints at the commit steps, for the standing fault suite (issue 12).
//!
//! Compiled in only with the cargo feature `failpoints`; without it every
//! [`failpoint!`](crate::failpoint) call expands to nothing. A failpoint is
//! armed from the environment of the vigil process:
//!
//! ```text
//! VIGIL_FAILPOINTS=backup.after_data_commit=crash,backup.before_manifest=error
//! ```
//!
//! `crash` kills the process with SIGKILL (exactly what `kill -9` does: no
//! destructor, no flush, no abort of in-flight uploads); `error` makes the
//! step fail with [`Injected`]. This module is a leaf: it imports nothing of
//! ours, so any floor may call it.

use std::sync::OnceLock;

/// The environment variable that arms failpoints.
pub const ENV: &str = "VIGIL_FAILPOINTS";

/// What an armed failpoint does when reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// SIGKILL the process, like `kill -9`.
    Crash,
    /// Fail the step with [`Injected`].
    Error,
}

/// The error an `error` failpoint returns from its step.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("failpoint `{name}` injected a failure ({ENV})")]
pub struct Injected {
    pub name: &'static str,
}

/// A `VIGIL_FAILPOINTS` value that does not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    #[error("{ENV}: `{entry}` is not `name=crash` or `name=error`")]
    Malformed { entry: String },
    #[error("{ENV}: failpoint `{name}`: unknown action `{action}` (use crash or error)")]
    UnknownAction { name: String, action: String },
}

/// Parses `name=action[,name=action...]` (empty entries are ignored).
pub fn parse(spec: &str) -> Result<Vec<(String, Action)>, SpecError> {
    spec.split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(parse_entry)
        .collect()
}

fn parse_entry(entry: &str) -> Result<(String, Action), SpecError> {
    let Some((name, action)) = entry.split_once('=') else {
        return Err(SpecError::Malformed {
            entry: entry.to_owned(),
        });
    };
    let (name, action) = (name.trim(), action.trim());
    if name.is_empty() {
        return Err(SpecError::Malformed {
            entry: entry.to_owned(),
        });
    }
    let action = match action {
        "crash" => Action::Crash,
        "error" => Action::Error,
        other => {
            return Err(SpecError::UnknownAction {
                name: name.to_owned(),
                action: other.to_owned(),
            });
        }
    };
    Ok((name.to_owned(), action))
}

/// The armed failpoints, read from the environment once.
fn armed() -> &'static [(String, Action)] {
    static ARMED: OnceLock<Vec<(String, Action)>> = OnceLock::new();
    ARMED.get_or_init(|| {
        let spec = std::env::var(ENV).unwrap_or_default();
        match parse(&spec) {
            Ok(armed) => armed,
            Err(e) => {
                // A test that arms a failpoint it misspelt must not pass
                // by never reaching it: stop loudly.
                eprintln!("{e}");
                std::process::abort();
            }
        }
    })
}

/// Runs failpoint `name`: nothing unless armed; `crash` never returns.
pub fn hit(name: &'static str) -> Result<(), Injected> {
    let Some((_, action)) = armed().iter().find(|(armed, _)| armed == name) else {
        return Ok(());
    };
    // On stderr, unbuffered: the tests check that the point was reached.
    eprintln!("failpoint {name}: {action:?}");
    match action {
        Action::Error => Err(Injected { name }),
        Action::Crash => crash(),
    }
}

fn crash() -> ! {
    let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    // SIGKILL cannot be caught; should raise fail, still die at once.
    std::process::abort()
}

/// A failpoint on one line: `failpoint!("backup.after_data_commit");`.
/// In a function whose error type has `From<failpoint::Injected>`.
#[macro_export]
macro_rules! failpoint {
    ($name:literal) => {
        #[cfg(feature = "failpoints")]
        $crate::failpoint::hit($name)?;
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spec_arms_each_named_point_with_its_action() {
        assert_eq!(
            parse("a.b=crash, c=error,,").unwrap(),
            vec![
                ("a.b".to_owned(), Action::Crash),
                ("c".to_owned(), Action::Error)
            ]
        );
        assert_eq!(parse("").unwrap(), vec![]);
    }

    #[test]
    fn a_bad_spec_is_refused_naming_the_entry() {
        assert_eq!(
            parse("a=explode"),
            Err(SpecError::UnknownAction {
                name: "a".to_owned(),
                action: "explode".to_owned()
            })
        );
        assert_eq!(
            parse("a"),
            Err(SpecError::Malformed {
                entry: "a".to_owned()
            })
        );
        assert_eq!(
            parse("=crash"),
            Err(SpecError::Malformed {
                entry: "=crash".to_owned()
            })
        );
    }

    #[test]
    fn an_unarmed_point_passes() {
        assert_eq!(hit("never.armed.in.unit.tests"), Ok(()));
    }
}
