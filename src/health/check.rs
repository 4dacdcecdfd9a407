//! The check interface: the runner executes any [`Check`]; the plain data
//! it produces lives in `core::health`.

use futures::future::BoxFuture;

use crate::core::health::{CheckSpec, Observation};

/// A health check the runner can execute.
pub trait Check: Send + Sync {
    fn spec(&self, config: &crate::config::HealthConfig) -> CheckSpec;
    fn run<'a>(&'a self, config: &'a crate::config::HealthConfig) -> BoxFuture<'a, Observation>;
    /// Whether a failing check waits longer between runs; a check whose
    /// recovery must show within one interval says no.
    fn backs_off(&self) -> bool {
        true
    }
}
