//! How opendal's operations are logged. Its default logger puts every
//! failed operation at WARN, including the not-found answers vigil expects
//! and handles (a manifest not written yet, no pins, a fresh backup id): one
//! WARN per leftover per run. Here those go to DEBUG; every caller turns a
//! not-found into its own typed error where it matters.

use opendal::raw::{Operation, ServiceInfo};
use opendal::{Error, ErrorKind};

/// Same target as opendal's own logger, so existing filters keep working.
const TARGET: &str = "opendal::services";

#[derive(Debug, Clone, Copy, Default)]
pub struct OpLog;

impl opendal::layers::LoggingInterceptor for OpLog {
    fn log(
        &self,
        info: &ServiceInfo,
        operation: Operation,
        context: &[(&str, &str)],
        message: &str,
        err: Option<&Error>,
    ) {
        let context = Context(context);
        let scheme = info.scheme();
        match err.map(|e| (e, level(e.kind()))) {
            Some((e, Level::Error)) => {
                // Display, one line: Debug adds a backtrace (92 lines a failure).
                tracing::error!(target: TARGET, "service={scheme}{context}: {operation} {message} {e}")
            }
            Some((e, Level::Warn)) => {
                tracing::warn!(target: TARGET, "service={scheme}{context}: {operation} {message} {e}")
            }
            Some((e, Level::Debug)) => {
                tracing::debug!(target: TARGET, "service={scheme}{context}: {operation} {message} {e}")
            }
            None => {
                tracing::debug!(target: TARGET, "service={scheme}{context}: {operation} {message}")
            }
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Level {
    Error,
    Warn,
    Debug,
}

/// Not-found is an answer, not a fault, and so is a create-only write
/// finding the name taken (a committed manifest, a held lease, a WAL file
/// archived before: each caller turns it into its own outcome); the rest
/// as opendal grades them.
fn level(kind: ErrorKind) -> Level {
    match kind {
        ErrorKind::NotFound | ErrorKind::ConditionNotMatch => Level::Debug,
        ErrorKind::Unexpected => Level::Error,
        _ => Level::Warn,
    }
}

struct Context<'a>(&'a [(&'a str, &'a str)]);

impl std::fmt::Display for Context<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (k, v) in self.0 {
            write!(f, " {k}={v}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_found_and_a_taken_name_are_not_warnings() {
        assert_eq!(level(ErrorKind::NotFound), Level::Debug);
        assert_eq!(level(ErrorKind::ConditionNotMatch), Level::Debug);
        assert_eq!(level(ErrorKind::PermissionDenied), Level::Warn);
        assert_eq!(level(ErrorKind::Unexpected), Level::Error);
    }
}
