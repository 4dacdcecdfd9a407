//! The message loop of a replication session: buffered reads of backend
//! messages (with a stall timeout), writes, simple queries, and the
//! server's errors with their SQLSTATE.

use std::time::Duration;

use bytes::BytesMut;
use fallible_iterator::FallibleIterator;
use postgres_protocol::message::backend::{ErrorFields, Message};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::ReplicationError;

/// Bytes asked of the socket per read: large enough that a base backup's
/// CopyData messages (about 32 KiB each) arrive several per read.
const READ_SIZE: usize = 256 * 1024;

pub(super) trait Socket: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Socket for T {}

/// An open replication session.
pub struct Session {
    socket: Box<dyn Socket>,
    buf: BytesMut,
    host: String,
    role: String,
    /// How long a read may wait for the server.
    pub stall_timeout: Duration,
}

/// An ErrorResponse (or NoticeResponse) in a person's words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} (SQLSTATE {code}){}{}", detail_text(.detail), hint_text(.hint))]
pub struct ServerMessage {
    pub severity: String,
    pub code: String,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
}

fn detail_text(detail: &Option<String>) -> String {
    detail
        .as_ref()
        .map_or_else(String::new, |d| format!(": {d}"))
}

fn hint_text(hint: &Option<String>) -> String {
    hint.as_ref()
        .map_or_else(String::new, |h| format!(" ({h})"))
}

impl ServerMessage {
    /// From an ErrorResponse's or NoticeResponse's `fields()`.
    pub(super) fn parse(mut fields: ErrorFields<'_>) -> ServerMessage {
        let mut out = ServerMessage {
            severity: String::new(),
            code: String::new(),
            message: String::new(),
            detail: None,
            hint: None,
        };
        while let Ok(Some(field)) = fields.next() {
            let value = String::from_utf8_lossy(field.value_bytes()).into_owned();
            match field.type_() {
                b'V' => out.severity = value,
                b'C' => out.code = value,
                b'M' => out.message = value,
                b'D' => out.detail = Some(value),
                b'H' => out.hint = Some(value),
                _ => {}
            }
        }
        out
    }
}

/// One row of a simple query's result, as text.
pub type Row = Vec<Option<String>>;

impl Session {
    pub(super) fn new(socket: Box<dyn Socket>, host: String, role: String) -> Session {
        Session {
            socket,
            buf: BytesMut::with_capacity(READ_SIZE),
            host,
            role,
            stall_timeout: Duration::from_secs(600),
        }
    }

    /// `host:port` (or the socket path) of the server.
    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn role(&self) -> &str {
        &self.role
    }

    pub(super) async fn send(
        &mut self,
        step: &'static str,
        message: &[u8],
    ) -> Result<(), ReplicationError> {
        let written = async {
            self.socket.write_all(message).await?;
            self.socket.flush().await
        };
        written.await.map_err(|source| self.io(step, source))
    }

    /// The next backend message; notices are logged and skipped.
    pub(super) async fn next(&mut self, step: &'static str) -> Result<Message, ReplicationError> {
        loop {
            let parsed = Message::parse(&mut self.buf).map_err(|source| self.io(step, source))?;
            match parsed {
                Some(Message::NoticeResponse(body)) => {
                    let notice = ServerMessage::parse(body.fields());
                    tracing::info!(host = %self.host, step, notice = %notice, "PostgreSQL notice");
                }
                Some(message) => return Ok(message),
                None => self.fill(step).await?,
            }
        }
    }

    /// Reads more bytes from the socket into the buffer.
    async fn fill(&mut self, step: &'static str) -> Result<(), ReplicationError> {
        if self.buf.capacity() - self.buf.len() < READ_SIZE / 4 {
            self.buf.reserve(READ_SIZE);
        }
        let read = tokio::time::timeout(self.stall_timeout, self.socket.read_buf(&mut self.buf));
        match read.await {
            Err(_) => Err(ReplicationError::Stalled {
                host: self.host.clone(),
                step,
                after: self.stall_timeout,
            }),
            Ok(Err(source)) => Err(self.io(step, source)),
            Ok(Ok(0)) => Err(self.io(
                step,
                std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the server closed the connection",
                ),
            )),
            Ok(Ok(_)) => Ok(()),
        }
    }

    /// A simple query's rows; an error is read to ReadyForQuery first.
    pub(super) async fn simple_query(
        &mut self,
        step: &'static str,
        sql: &str,
    ) -> Result<Vec<Row>, ReplicationError> {
        let mut message = BytesMut::new();
        frontend::query(sql, &mut message).map_err(|source| self.io(step, source))?;
        self.send(step, &message).await?;
        let mut rows = Vec::new();
        let mut failed = None;
        loop {
            match self.next(step).await? {
                Message::DataRow(body) => rows.push(self.row(step, &body)?),
                Message::ErrorResponse(body) => failed = Some(ServerMessage::parse(body.fields())),
                Message::ReadyForQuery(_) => break,
                Message::RowDescription(_)
                | Message::CommandComplete(_)
                | Message::EmptyQueryResponse => {}
                other => return Err(self.protocol(step, &describe(&other))),
            }
        }
        match failed {
            Some(error) => Err(self.server(step, error)),
            None => Ok(rows),
        }
    }

    pub(super) fn row(
        &self,
        step: &'static str,
        body: &postgres_protocol::message::backend::DataRowBody,
    ) -> Result<Row, ReplicationError> {
        let buffer = body.buffer();
        body.ranges()
            .map(|range| Ok(range.map(|r| String::from_utf8_lossy(&buffer[r]).into_owned())))
            .collect()
            .map_err(|source| self.io(step, source))
    }

    /// Ends the session politely (best effort).
    pub async fn terminate(mut self) {
        let mut message = BytesMut::new();
        frontend::terminate(&mut message);
        let _ = self.socket.write_all(&message).await;
        let _ = self.socket.shutdown().await;
    }

    pub(super) fn io(&self, step: &'static str, source: std::io::Error) -> ReplicationError {
        ReplicationError::Io {
            host: self.host.clone(),
            step,
            source,
        }
    }

    pub(super) fn protocol(&self, step: &'static str, what: &str) -> ReplicationError {
        ReplicationError::Protocol {
            host: self.host.clone(),
            step,
            what: what.to_owned(),
        }
    }

    /// The server's error, classified by its SQLSTATE where a person can
    /// act on it.
    pub(super) fn server(&self, step: &'static str, error: ServerMessage) -> ReplicationError {
        classify(&self.host, &self.role, step, error)
    }
}

/// What `error`, answering `step`, means for the person who runs vigil.
fn classify(host: &str, role: &str, step: &'static str, error: ServerMessage) -> ReplicationError {
    let (host, role) = (host.to_owned(), role.to_owned());
    let message = error.message.clone();
    match error.code.as_str() {
        // insufficient_privilege: "must be superuser or replication role to start walsender"
        "42501" if step == "startup" => ReplicationError::NoReplicationRole {
            host,
            role,
            message,
        },
        // invalid_authorization_specification: no pg_hba.conf line.
        "28000" => ReplicationError::HbaRefused {
            host,
            role,
            message,
        },
        // invalid_password
        "28P01" => ReplicationError::AuthFailed {
            host,
            role,
            message,
        },
        // too_many_connections: max_wal_senders exhausted (or 0, as wal_level minimal needs).
        "53300" => ReplicationError::NoWalSender { host, message },
        // object_not_in_prerequisite_state at BASE_BACKUP: wal_level minimal.
        "55000" if step == "BASE_BACKUP" => ReplicationError::WalLevel { host, message },
        _ => ReplicationError::Server {
            host,
            step,
            error: Box::new(error),
        },
    }
}

/// A message's kind, for a protocol error.
pub(super) fn describe(message: &Message) -> String {
    let name = match message {
        Message::CopyData(_) => "CopyData",
        Message::CopyDone => "CopyDone",
        Message::CopyOutResponse(_) => "CopyOutResponse",
        Message::CopyInResponse(_) => "CopyInResponse",
        Message::DataRow(_) => "DataRow",
        Message::RowDescription(_) => "RowDescription",
        Message::CommandComplete(_) => "CommandComplete",
        Message::ReadyForQuery(_) => "ReadyForQuery",
        Message::ErrorResponse(_) => "ErrorResponse",
        Message::ParameterStatus(_) => "ParameterStatus",
        Message::BackendKeyData(_) => "BackendKeyData",
        _ => "another message",
    };
    name.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(code: &str, message: &str) -> ServerMessage {
        ServerMessage {
            severity: "FATAL".into(),
            code: code.into(),
            message: message.into(),
            detail: None,
            hint: None,
        }
    }

    #[test]
    fn sqlstates_become_what_to_do() {
        let walsender = "must be superuser or replication role to start walsender";
        let e = classify("db:5432", "app", "startup", error("42501", walsender));
        assert!(
            matches!(e, ReplicationError::NoReplicationRole { .. }),
            "{e:?}"
        );
        let text = e.to_string();
        assert!(
            text.contains("db:5432: role app lacks REPLICATION: ALTER ROLE app REPLICATION"),
            "{text}"
        );
        assert!(text.contains("`host replication app ...`"), "{text}");
        let senders =
            "number of requested standby connections exceeds max_wal_senders (currently 0)";
        let e = classify("db:5432", "app", "startup", error("53300", senders));
        assert!(e.to_string().contains("raise max_wal_senders"), "{e}");
        let level = "WAL level not sufficient for making an online backup";
        let e = classify("db:5432", "app", "BASE_BACKUP", error("55000", level));
        assert!(e.to_string().contains("set wal_level = replica"), "{e}");
        let e = classify("db:5432", "app", "SHOW", error("55000", "other"));
        assert!(
            matches!(e, ReplicationError::Server { step: "SHOW", .. }),
            "{e:?}"
        );
        let e = classify(
            "db:5432",
            "app",
            "startup",
            error("28000", "no pg_hba.conf entry"),
        );
        assert!(
            e.to_string()
                .contains("pg_hba.conf as `host replication app"),
            "{e}"
        );
    }
}
