//! Opening the catalog, one way for every process: the daemon and `vigil
//! migrate` wait for it (up to `catalog.connect_timeout`); the other
//! commands probe it once and go on without it.

use std::time::Duration;

use deadpool_postgres::Pool;

use super::{CatalogError, pool, probe, wait_until_ready};
use crate::config::CatalogConfig;

/// How long to wait for the catalog.
#[derive(Debug, Clone, Copy)]
pub enum Wait {
    /// Until it answers, up to `catalog.connect_timeout` (any schema).
    UntilReady,
    /// One attempt within this time; the schema must be current.
    Probe(Duration),
}

/// The catalog's pool once it answers as `wait` asks; `secrets` are kept
/// out of the errors.
pub async fn connect(
    config: &CatalogConfig,
    secrets: &[String],
    wait: Wait,
) -> Result<Pool, CatalogError> {
    match wait {
        Wait::UntilReady => {
            let pool = pool(config)?;
            wait_until_ready(&pool, config, secrets).await?;
            Ok(pool)
        }
        Wait::Probe(timeout) => probe(config, timeout).await,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::path::Path;

    use super::*;

    /// A catalog on a loopback port nobody listens on.
    fn closed_catalog() -> CatalogConfig {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let src = format!(
            "[catalog]\nurl = \"postgres://vigil:s3cret@127.0.0.1:{port}/vigil\"\nconnect_timeout = \"1s\"\n"
        );
        crate::config::parse(&src, Path::new("/etc/vigil/config.toml"), &HashMap::new())
            .unwrap()
            .catalog
    }

    #[tokio::test]
    async fn a_probe_says_down_and_a_wait_says_unreachable() {
        let config = closed_catalog();
        let secrets = vec!["s3cret".to_owned()];
        let probed = connect(&config, &secrets, Wait::Probe(Duration::from_secs(2))).await;
        assert!(
            matches!(probed, Err(CatalogError::Down { .. })),
            "{:?}",
            probed.err()
        );
        let waited = connect(&config, &secrets, Wait::UntilReady).await;
        match waited {
            Err(e @ CatalogError::Unreachable { .. }) => {
                assert!(!e.to_string().contains("s3cret"), "{e}")
            }
            other => panic!("expected Unreachable, got {:?}", other.err()),
        }
    }
}
