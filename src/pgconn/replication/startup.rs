//! Opening a replication session: the socket, TLS as libpq's sslmode
//! says (SSLRequest first), the startup message with `replication=true`,
//! and authentication.

use std::time::Duration;

use bytes::BytesMut;
use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{ChannelBinding, SCRAM_SHA_256, ScramSha256};
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_postgres::config::Host;
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};

use super::ReplicationError;
use super::wire::{ServerMessage, Session, Socket};
use crate::config::conninfo::{ConnInfo, SslMode};

const STEP: &str = "startup";

/// Opens a physical replication session to the first host of `info`.
pub async fn connect(info: &ConnInfo) -> Result<Session, ReplicationError> {
    let host = info
        .pg
        .get_hosts()
        .first()
        .ok_or(ReplicationError::NoHost)?;
    let port = info.pg.get_ports().first().copied().unwrap_or(5432);
    let role = info
        .pg
        .get_user()
        .ok_or(ReplicationError::NoUser)?
        .to_owned();
    let name = match host {
        Host::Tcp(name) => format!("{name}:{port}"),
        Host::Unix(dir) => dir.join(format!(".s.PGSQL.{port}")).display().to_string(),
    };
    let wait = info
        .pg
        .get_connect_timeout()
        .copied()
        .unwrap_or(Duration::from_secs(10));
    let opened = tokio::time::timeout(wait, open(info, host, port, &name)).await;
    let socket = opened.map_err(|_| ReplicationError::ConnectTimeout {
        host: name.clone(),
        after: wait,
    })??;
    let mut session = Session::new(socket, name, role);
    let password = info.pg.get_password().map(<[u8]>::to_vec);
    let started = tokio::time::timeout(wait, session.start(password.as_deref())).await;
    started.map_err(|_| ReplicationError::ConnectTimeout {
        host: session.host().to_owned(),
        after: wait,
    })??;
    Ok(session)
}

/// The socket, encrypted when the sslmode and the server agree.
async fn open(
    info: &ConnInfo,
    host: &Host,
    port: u16,
    name: &str,
) -> Result<Box<dyn Socket>, ReplicationError> {
    let connect_err = |source| ReplicationError::Connect {
        host: name.to_owned(),
        source,
    };
    let tcp_host = match host {
        // libpq never uses TLS on a unix socket.
        Host::Unix(_) => {
            let stream = tokio::net::UnixStream::connect(name)
                .await
                .map_err(connect_err)?;
            return Ok(Box::new(stream));
        }
        Host::Tcp(tcp_host) => tcp_host,
    };
    let mut stream = TcpStream::connect((tcp_host.as_str(), port))
        .await
        .map_err(connect_err)?;
    let _ = stream.set_nodelay(true);
    let mode = info.tls.mode;
    if mode == SslMode::Disable {
        return Ok(Box::new(stream));
    }
    let mut request = BytesMut::new();
    frontend::ssl_request(&mut request);
    stream.write_all(&request).await.map_err(connect_err)?;
    let mut answer = [0u8];
    stream.read_exact(&mut answer).await.map_err(connect_err)?;
    if answer[0] != b'S' {
        if mode.requires_tls() {
            return Err(ReplicationError::ServerWithoutTls {
                host: name.to_owned(),
                mode,
            });
        }
        return Ok(Box::new(stream));
    }
    let mut make = super::super::connector(&info.tls)?;
    let tls = MakeTlsConnect::<TcpStream>::make_tls_connect(&mut make, tcp_host).map_err(|_| {
        ReplicationError::BadHostName {
            host: tcp_host.clone(),
        }
    })?;
    let encrypted = TlsConnect::connect(tls, stream).await?;
    Ok(Box::new(encrypted))
}

impl Session {
    /// The startup message and authentication, up to ReadyForQuery.
    async fn start(&mut self, password: Option<&[u8]>) -> Result<(), ReplicationError> {
        let mut message = BytesMut::new();
        let role = self.role().to_owned();
        let params = [
            ("user", role.as_str()),
            ("replication", "true"),
            ("application_name", "vigil"),
        ];
        frontend::startup_message(params.iter().copied(), &mut message)
            .map_err(|source| self.io(STEP, source))?;
        self.send(STEP, &message).await?;
        let mut scram: Option<ScramSha256> = None;
        loop {
            match self.next(STEP).await? {
                Message::AuthenticationOk
                | Message::ParameterStatus(_)
                | Message::BackendKeyData(_) => {}
                Message::ReadyForQuery(_) => return Ok(()),
                Message::ErrorResponse(body) => {
                    return Err(self.server(STEP, ServerMessage::parse(body.fields())));
                }
                Message::AuthenticationCleartextPassword => {
                    let password = self.password(password)?;
                    self.password_message(password).await?;
                }
                Message::AuthenticationMd5Password(body) => {
                    let password = self.password(password)?;
                    let hashed = md5_hash(role.as_bytes(), password, body.salt());
                    self.password_message(hashed.as_bytes()).await?;
                }
                Message::AuthenticationSasl(body) => {
                    let offered: Vec<String> = body
                        .mechanisms()
                        .map(|m| Ok(m.to_owned()))
                        .collect()
                        .map_err(|source| self.io(STEP, source))?;
                    if !offered.iter().any(|m| m == SCRAM_SHA_256) {
                        return Err(ReplicationError::UnsupportedAuth {
                            host: self.host().to_owned(),
                        });
                    }
                    let password = self.password(password)?;
                    // No channel binding (as the regular connections: the
                    // certificate checks guard against a man in the middle).
                    let client = ScramSha256::new(password, ChannelBinding::unsupported());
                    let mut reply = BytesMut::new();
                    frontend::sasl_initial_response(SCRAM_SHA_256, client.message(), &mut reply)
                        .map_err(|source| self.io(STEP, source))?;
                    self.send(STEP, &reply).await?;
                    scram = Some(client);
                }
                Message::AuthenticationSaslContinue(body) => {
                    let client = scram
                        .as_mut()
                        .ok_or_else(|| self.protocol(STEP, "SASL continue before SASL start"))?;
                    client
                        .update(body.data())
                        .map_err(|source| self.io(STEP, source))?;
                    let mut reply = BytesMut::new();
                    frontend::sasl_response(client.message(), &mut reply)
                        .map_err(|source| self.io(STEP, source))?;
                    self.send(STEP, &reply).await?;
                }
                Message::AuthenticationSaslFinal(body) => {
                    let client = scram
                        .as_mut()
                        .ok_or_else(|| self.protocol(STEP, "SASL final before SASL start"))?;
                    client
                        .finish(body.data())
                        .map_err(|source| self.io(STEP, source))?;
                }
                Message::AuthenticationGss
                | Message::AuthenticationGssContinue(_)
                | Message::AuthenticationSspi
                | Message::AuthenticationKerberosV5
                | Message::AuthenticationScmCredential => {
                    return Err(ReplicationError::UnsupportedAuth {
                        host: self.host().to_owned(),
                    });
                }
                other => return Err(self.protocol(STEP, &super::wire::describe(&other))),
            }
        }
    }

    fn password<'a>(&self, password: Option<&'a [u8]>) -> Result<&'a [u8], ReplicationError> {
        password.ok_or_else(|| ReplicationError::NoPassword {
            host: self.host().to_owned(),
            role: self.role().to_owned(),
        })
    }

    async fn password_message(&mut self, password: &[u8]) -> Result<(), ReplicationError> {
        let mut message = BytesMut::new();
        frontend::password_message(password, &mut message)
            .map_err(|source| self.io(STEP, source))?;
        self.send(STEP, &message).await
    }
}
