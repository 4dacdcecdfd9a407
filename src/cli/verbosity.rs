//! How much a one-shot command logs on stderr: warn and above, so that a
//! command prints its result and nothing else, unless `-v` (info), `-vv`
//! (debug) or `VIGIL_LOG` (a tracing filter) asks for more. The daemon
//! (`run`, `demo`) follows `[log]` instead.

use crate::logging::{LevelError, check_filter};

/// The environment variable holding a command's tracing filter.
pub const VIGIL_LOG: &str = "VIGIL_LOG";

/// `VIGIL_LOG` holds something that is not a tracing filter.
#[derive(Debug, thiserror::Error)]
#[error(
    "{VIGIL_LOG}={value:?} is not a log filter ({source}); use a level (VIGIL_LOG=debug) or targets (VIGIL_LOG=warn,vigil::repo=debug)"
)]
pub struct FilterError {
    pub value: String,
    #[source]
    pub source: LevelError,
}

/// The filter for a command run with `verbose` `-v` flags and `env` as
/// `VIGIL_LOG`: a flag on the command line wins over the environment.
pub fn command_filter(verbose: u8, env: Option<&str>) -> Result<String, FilterError> {
    match (verbose, env.map(str::trim)) {
        (0, Some(value)) if !value.is_empty() => {
            check_filter(value).map_err(|source| FilterError {
                value: value.to_owned(),
                source,
            })?;
            Ok(value.to_owned())
        }
        (0, _) => Ok("warn".to_owned()),
        (1, _) => Ok("info".to_owned()),
        _ => Ok("debug".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quiet_by_default_louder_per_flag() {
        assert_eq!(command_filter(0, None).unwrap(), "warn");
        assert_eq!(command_filter(0, Some(" ")).unwrap(), "warn");
        assert_eq!(command_filter(1, None).unwrap(), "info");
        assert_eq!(command_filter(2, None).unwrap(), "debug");
        assert_eq!(command_filter(5, None).unwrap(), "debug");
    }

    #[test]
    fn vigil_log_is_used_unless_a_flag_is_given() {
        assert_eq!(
            command_filter(0, Some("warn,vigil::repo=debug")).unwrap(),
            "warn,vigil::repo=debug"
        );
        assert_eq!(command_filter(1, Some("error")).unwrap(), "info");
    }

    #[test]
    fn a_bad_vigil_log_names_itself() {
        let e = command_filter(0, Some("vigil=loud")).unwrap_err();
        assert_eq!(e.value, "vigil=loud");
        assert!(e.to_string().starts_with("VIGIL_LOG=\"vigil=loud\""), "{e}");
    }
}
