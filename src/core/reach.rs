//! Whether an error means a server could not be reached at all (as opposed
//! to answering with a refusal): decided from the typed `io::Error` at the
//! bottom of a source chain, never from message text.

use std::error::Error;
use std::io::ErrorKind;

/// True when `error` or one of its sources is a connection-level failure:
/// refused, reset before an answer, timed out, no route.
pub fn is_unreachable(error: &(dyn Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && unreachable_kind(io.kind())
        {
            return true;
        }
        current = e.source();
    }
    false
}

fn unreachable_kind(kind: ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::ConnectionRefused
            | ErrorKind::ConnectionReset
            | ErrorKind::ConnectionAborted
            | ErrorKind::NotConnected
            | ErrorKind::TimedOut
            | ErrorKind::HostUnreachable
            | ErrorKind::NetworkUnreachable
            | ErrorKind::AddrNotAvailable
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn finds_the_io_error_anywhere_in_the_chain() {
        let refused = Outer(std::io::Error::from(ErrorKind::ConnectionRefused));
        assert!(is_unreachable(&refused));
        let denied = Outer(std::io::Error::from(ErrorKind::PermissionDenied));
        assert!(!is_unreachable(&denied));
        assert!(is_unreachable(&std::io::Error::from(ErrorKind::TimedOut)));
    }
}
