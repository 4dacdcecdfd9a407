//! A physical replication session (`replication=true`), spoken over
//! postgres-protocol: tokio-postgres 0.7 can neither open one nor read
//! `BASE_BACKUP`'s COPY stream. Startup (TLS as libpq's sslmode, then
//! trust, password, md5 or SCRAM-SHA-256, or a client certificate) is in
//! `startup`, the message loop in `wire`, the base backup in `base_backup`.

mod base_backup;
mod startup;
mod wire;

use std::time::Duration;

use thiserror::Error;

pub use base_backup::{BackupEnd, BackupStart, BaseBackupOptions, Chunk, Tablespace};
pub use startup::connect;
pub use wire::{ServerMessage, Session};

use crate::config::conninfo::SslMode;

#[derive(Debug, Error)]
pub enum ReplicationError {
    #[error(transparent)]
    Setup(#[from] super::TlsSetupError),
    #[error("{0}")]
    Handshake(#[from] super::HandshakeError),
    #[error(
        "the connection string names no host: give host=... (or a URL postgres://USER@HOST:PORT)"
    )]
    NoHost,
    #[error("the connection string names no user: give user=... (a role with REPLICATION)")]
    NoUser,
    #[error("host name {host} cannot be checked against a certificate")]
    BadHostName { host: String },
    #[error(
        "cannot connect to {host}: {source} (is PostgreSQL running there, and is `source` right?)"
    )]
    Connect {
        host: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot connect to {host}: no answer within {}", humantime::format_duration(*.after))]
    ConnectTimeout { host: String, after: Duration },
    #[error("{host} does not support SSL but sslmode={}", mode.as_str())]
    ServerWithoutTls { host: String, mode: SslMode },
    #[error(
        "{host} asks for a password for role {role} and none is set: set `password` or `password_file` on the job"
    )]
    NoPassword { host: String, role: String },
    #[error(
        "{host} asks for an authentication method vigil does not speak (GSSAPI, SSPI or Kerberos): use scram-sha-256, md5, password or cert in pg_hba.conf"
    )]
    UnsupportedAuth { host: String },
    #[error(
        "{host}: password authentication failed for role {role}: check `password`/`password_file` ({message})"
    )]
    AuthFailed {
        host: String,
        role: String,
        message: String,
    },
    #[error(
        "{host}: role {role} lacks REPLICATION: ALTER ROLE {role} REPLICATION, and allow it in pg_hba.conf as `host replication {role} ...` ({message})"
    )]
    NoReplicationRole {
        host: String,
        role: String,
        message: String,
    },
    #[error(
        "{host} refused a replication session for role {role}: {message} (allow it in pg_hba.conf as `host replication {role} ...` (`hostssl` for TLS), then reload PostgreSQL)"
    )]
    HbaRefused {
        host: String,
        role: String,
        message: String,
    },
    #[error(
        "{host}: {message} (raise max_wal_senders in postgresql.conf, which needs wal_level = replica, and restart PostgreSQL; or close other replication connections)"
    )]
    NoWalSender { host: String, message: String },
    #[error(
        "{host}: {message} (set wal_level = replica in postgresql.conf and restart PostgreSQL)"
    )]
    WalLevel { host: String, message: String },
    #[error("{host}: {step} failed: {error}")]
    Server {
        host: String,
        step: &'static str,
        error: Box<ServerMessage>,
    },
    #[error(
        "{host}: unexpected answer to {step}: {what} (is this a PostgreSQL 15 or newer server?)"
    )]
    Protocol {
        host: String,
        step: &'static str,
        what: String,
    },
    #[error("{host}: the connection failed during {step}: {source}")]
    Io {
        host: String,
        step: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{host} sent nothing for {} during {step}: stalled (jobs.<name>.stall_timeout)", humantime::format_duration(*.after))]
    Stalled {
        host: String,
        step: &'static str,
        after: Duration,
    },
}

/// `IDENTIFY_SYSTEM`'s answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemId {
    pub system_identifier: String,
    pub timeline: crate::core::wal::Timeline,
    pub wal_position: crate::core::wal::Lsn,
}

impl Session {
    pub async fn identify_system(&mut self) -> Result<SystemId, ReplicationError> {
        let step = "IDENTIFY_SYSTEM";
        let rows = self.simple_query(step, "IDENTIFY_SYSTEM").await?;
        let row = rows.first().ok_or_else(|| self.protocol(step, "no row"))?;
        let text = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
        Ok(SystemId {
            system_identifier: text(0),
            timeline: text(1)
                .parse()
                .map_err(|_| self.protocol(step, "timeline is not a number"))?,
            wal_position: text(2)
                .parse()
                .map_err(|_| self.protocol(step, "xlogpos is not an LSN"))?,
        })
    }

    /// `SHOW name`: the setting as the server prints it (`16MB`).
    pub async fn show(&mut self, name: &'static str) -> Result<String, ReplicationError> {
        let step = "SHOW";
        let rows = self.simple_query(step, &format!("SHOW {name}")).await?;
        rows.into_iter()
            .next()
            .and_then(|row| row.into_iter().next().flatten())
            .ok_or_else(|| self.protocol(step, &format!("no value for {name}")))
    }

    /// `wal_segment_size` in bytes (SHOW prints it with a unit).
    pub async fn wal_segment_size(&mut self) -> Result<u64, ReplicationError> {
        let text = self.show("wal_segment_size").await?;
        parse_size(&text).ok_or_else(|| {
            self.protocol("SHOW", &format!("wal_segment_size `{text}` is not a size"))
        })
    }
}

/// `16MB`, `1GB`, `512kB` (PostgreSQL's units, powers of 1024) in bytes.
fn parse_size(text: &str) -> Option<u64> {
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let factor = match unit.trim() {
        "" | "B" => 1,
        "kB" => 1 << 10,
        "MB" => 1 << 20,
        "GB" => 1 << 30,
        _ => return None,
    };
    number.parse::<u64>().ok().map(|n| n * factor)
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn segment_sizes_read_in_postgres_units() {
        assert_eq!(parse_size("16MB"), Some(16 << 20));
        assert_eq!(parse_size("1GB"), Some(1 << 30));
        assert_eq!(parse_size("512kB"), Some(512 << 10));
        assert_eq!(parse_size("8192"), Some(8192));
        assert_eq!(parse_size("16 parsecs"), None);
    }
}
