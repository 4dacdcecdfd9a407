//! This machine's name: a files backup's source host, and the instance
//! name when `daemon.instance` is unset. Below `daemon`, so the jobs that
//! need it do not reach up.

/// The hostname, or `vigil` when the system has none that is UTF-8.
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "vigil".into())
}
