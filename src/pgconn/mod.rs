//! Connections to PostgreSQL with libpq's TLS semantics: one place that
//! turns a connection string into a tokio-postgres session (catalog,
//! sources, restore targets) and into the environment of libpq tools.

pub mod replication;
mod tls;

use std::time::Duration;

use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_postgres::config::Host;
use tokio_postgres::error::SqlState;

use crate::config::conninfo::{ConnInfo, RootCert, SslMode, TlsParams};
pub use tls::{HandshakeError, MakeRustls, TlsSetupError, connector};

/// One row, one column: whether this session is encrypted.
pub const SESSION_ENCRYPTED_SQL: &str =
    "SELECT coalesce((SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()), false)";

#[derive(Debug, Error)]
pub enum ConnectError {
    #[error(transparent)]
    Setup(#[from] TlsSetupError),
    /// The TLS handshake failed; [`ConnectError::handshake`] says how.
    #[error("{}", handshake_text(.0))]
    Handshake(tokio_postgres::Error),
    #[error("server does not support SSL but sslmode={}", mode.as_str())]
    ServerWithoutTls { mode: SslMode },
    /// A clear-text session refused by pg_hba.conf: most often a server
    /// that accepts only `hostssl`.
    #[error(
        "{message} (sslmode={}: if the server accepts only TLS connections, use sslmode=require or stricter)",
        mode.as_str()
    )]
    ClearTextRefused { mode: SslMode, message: String },
    #[error(transparent)]
    Postgres(tokio_postgres::Error),
}

impl ConnectError {
    pub fn handshake(&self) -> Option<&HandshakeError> {
        match self {
            Self::Handshake(e) => handshake_of(e),
            _ => None,
        }
    }

    /// Refused, timed out or no route: the server was not reached at all.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Self::Postgres(e) if crate::core::reach::is_unreachable(e))
    }

    /// What went wrong, with the causes of a PostgreSQL error.
    pub fn detail(&self) -> String {
        match self {
            Self::Postgres(e) => crate::core::redact::error_chain(e),
            other => other.to_string(),
        }
    }
}

/// Opens a session (its connection task runs until the client is dropped).
pub async fn connect(info: &ConnInfo) -> Result<tokio_postgres::Client, ConnectError> {
    let tls = connector(&info.tls)?;
    match info.pg.connect(tls).await {
        Ok((client, connection)) => {
            tokio::spawn(connection);
            Ok(client)
        }
        Err(e) => Err(classify(info, e).await),
    }
}

/// The failure in libpq's words where TLS explains it.
async fn classify(info: &ConnInfo, error: tokio_postgres::Error) -> ConnectError {
    if let Some(db) = error.as_db_error() {
        let clear_text = info.pg.get_ssl_mode() == tokio_postgres::config::SslMode::Disable;
        if clear_text && *db.code() == SqlState::INVALID_AUTHORIZATION_SPECIFICATION {
            return ConnectError::ClearTextRefused {
                mode: info.tls.mode,
                message: db.message().to_owned(),
            };
        }
        return ConnectError::Postgres(error);
    }
    if handshake_of(&error).is_some() {
        return ConnectError::Handshake(error);
    }
    server_without_tls(info)
        .await
        .unwrap_or(ConnectError::Postgres(error))
}

/// tokio-postgres says "server does not support TLS" in an untyped error:
/// after a failure, ask the server ourselves whether it speaks TLS when
/// the mode requires it.
pub async fn server_without_tls(info: &ConnInfo) -> Option<ConnectError> {
    let required = info.pg.get_ssl_mode() == tokio_postgres::config::SslMode::Require;
    (required && server_offers_tls(&info.pg).await == Some(false)).then_some(
        ConnectError::ServerWithoutTls {
            mode: info.tls.mode,
        },
    )
}

/// The handshake failure our connector reported, under tokio-postgres's wrapper.
fn handshake_of(error: &tokio_postgres::Error) -> Option<&HandshakeError> {
    std::error::Error::source(error).and_then(|s| s.downcast_ref::<HandshakeError>())
}

/// The server's certificate was refused (unknown CA, wrong name, expired):
/// retrying cannot help, unlike a handshake cut short by the network.
pub fn is_certificate_refusal(error: &tokio_postgres::Error) -> bool {
    matches!(
        handshake_of(error),
        Some(
            HandshakeError::WrongHost { .. }
                | HandshakeError::UnknownAuthority { .. }
                | HandshakeError::Certificate { .. }
        )
    )
}

/// libpq's words for a handshake failure, without tokio-postgres's prefix.
fn handshake_text(error: &tokio_postgres::Error) -> String {
    handshake_of(error).map_or_else(|| error.to_string(), ToString::to_string)
}

/// Sends PostgreSQL's SSLRequest to the first TCP host: `Some(true)` when
/// it answers 'S', `None` when it cannot be asked.
async fn server_offers_tls(pg: &tokio_postgres::Config) -> Option<bool> {
    const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
    let Some(Host::Tcp(host)) = pg.get_hosts().first() else {
        return None;
    };
    let port = pg.get_ports().first().copied().unwrap_or(5432);
    let wait = pg
        .get_connect_timeout()
        .copied()
        .unwrap_or(Duration::from_secs(10));
    let ask = async {
        let mut stream = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .ok()?;
        stream.write_all(&SSL_REQUEST).await.ok()?;
        let mut answer = [0u8];
        stream.read_exact(&mut answer).await.ok()?;
        Some(answer[0] == b'S')
    };
    tokio::time::timeout(wait, ask).await.ok().flatten()
}

/// Whether the session `client` is on is encrypted (from `pg_stat_ssl`).
pub async fn is_encrypted(client: &tokio_postgres::Client) -> Result<bool, tokio_postgres::Error> {
    Ok(client.query_one(SESSION_ENCRYPTED_SQL, &[]).await?.get(0))
}

/// libpq's variables for the TLS settings, so that pg_dump, pg_restore and
/// psql check what vigil checks (never the password: that goes through
/// PGPASSFILE).
pub fn libpq_tls_env(tls: &TlsParams) -> Vec<(String, String)> {
    let mut env = vec![("PGSSLMODE".to_owned(), tls.mode.as_str().to_owned())];
    if let Some(root) = &tls.root_cert {
        let value = match root {
            RootCert::File(path) => path.display().to_string(),
            // libpq 15 takes `system` for a file name: give it the bundle.
            RootCert::System => system_bundle(std::env::var_os("SSL_CERT_FILE"), &SYSTEM_BUNDLES)
                .map_or_else(|| "system".to_owned(), |path| path.display().to_string()),
        };
        env.push(("PGSSLROOTCERT".to_owned(), value));
    }
    if let Some(cert) = &tls.cert {
        env.push(("PGSSLCERT".to_owned(), cert.display().to_string()));
    }
    if let Some(key) = &tls.key {
        env.push(("PGSSLKEY".to_owned(), key.display().to_string()));
    }
    env
}

/// Where distributions keep the platform's CA bundle (Debian, RHEL, Alpine).
const SYSTEM_BUNDLES: [&str; 3] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// The platform's CA bundle as one file: `SSL_CERT_FILE`, else the first of
/// `candidates` that exists (libpq 16 and later know `system` themselves).
fn system_bundle(
    ssl_cert_file: Option<std::ffi::OsString>,
    candidates: &[&str],
) -> Option<std::path::PathBuf> {
    ssl_cert_file
        .map(std::path::PathBuf::from)
        .into_iter()
        .chain(candidates.iter().map(std::path::PathBuf::from))
        .find(|path| path.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::conninfo::parse;

    #[test]
    fn tools_get_every_tls_setting() {
        let info = parse(
            "postgres://u:pw@db/x?sslmode=verify-full&sslrootcert=/ca.pem&sslcert=/c.pem&sslkey=/k.pem",
        )
        .unwrap();
        assert_eq!(
            libpq_tls_env(&info.tls),
            [
                ("PGSSLMODE", "verify-full"),
                ("PGSSLROOTCERT", "/ca.pem"),
                ("PGSSLCERT", "/c.pem"),
                ("PGSSLKEY", "/k.pem"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
        let default = parse("host=db").unwrap();
        assert_eq!(
            libpq_tls_env(&default.tls),
            [("PGSSLMODE".to_owned(), "prefer".to_owned())]
        );
    }

    #[test]
    fn passwords_stay_redacted_beside_tls_parameters() {
        for text in [
            "postgres://u:s3cret-pw@db/x?sslmode=verify-full&sslrootcert=/ca.pem",
            "host=db password=s3cret-pw sslmode=verify-full sslkey=/k.pem",
            "postgres://u@db/x?sslmode=require&password=s3cret-pw&sslcert=/c.pem",
        ] {
            let redacted = crate::core::redact::redact_text(text, &[]);
            assert!(!redacted.contains("s3cret-pw"), "{redacted}");
            assert!(redacted.contains("sslmode="), "{redacted}");
        }
    }

    #[test]
    fn system_roots_reach_older_tools_as_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let bundle = dir.path().join("bundle.pem");
        std::fs::write(&bundle, "").unwrap();
        let missing = dir.path().join("missing.pem");
        let candidates = [missing.to_str().unwrap(), bundle.to_str().unwrap()];
        assert_eq!(system_bundle(None, &candidates), Some(bundle.clone()));
        assert_eq!(system_bundle(None, &candidates[..1]), None);
        let chosen = Some(bundle.clone().into_os_string());
        assert_eq!(system_bundle(chosen, &candidates[..1]), Some(bundle));
    }

    #[test]
    fn verify_modes_need_a_root() {
        let info = parse("host=db sslmode=verify-full sslrootcert=/nonexistent/ca.pem").unwrap();
        assert!(matches!(
            connector(&info.tls),
            Err(TlsSetupError::Read {
                key: "sslrootcert",
                ..
            })
        ));
        let require = parse("host=db sslmode=require").unwrap();
        assert!(connector(&require.tls).is_ok());
    }
}
