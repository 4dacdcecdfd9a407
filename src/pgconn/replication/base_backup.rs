//! `BASE_BACKUP` (PostgreSQL 15 syntax) and its answer: a result set with
//! the start position, the tablespace list, one COPY OUT stream whose
//! CopyData messages say `n` (an archive begins), `d` (its data), `p`
//! (progress) and `m` (the backup manifest begins), then CopyDone and a
//! result set with the end position.

use bytes::{Buf, Bytes, BytesMut};
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;

use super::ReplicationError;
use super::wire::{Row, ServerMessage, Session};
use crate::config::Checkpoint;
use crate::core::wal::{Lsn, Timeline};

const STEP: &str = "BASE_BACKUP";

#[derive(Debug, Clone)]
pub struct BaseBackupOptions {
    pub label: String,
    pub checkpoint: Checkpoint,
    /// Server-side zstd level.
    pub compress_level: i32,
    /// Server-side zstd threads (0: compress in the walsender itself).
    pub compress_workers: u32,
}

impl BaseBackupOptions {
    /// The command: tar archives compressed by the server, its manifest
    /// with CRC32C checksums, `tablespace_map` in the base archive (tar
    /// holds no meaningful symlinks), and no wait for the WAL archive (vigil
    /// checks its own repository instead).
    pub fn command(&self) -> String {
        format!(
            "BASE_BACKUP (LABEL '{}', CHECKPOINT '{}', MANIFEST 'yes', MANIFEST_CHECKSUMS 'CRC32C', TABLESPACE_MAP, WAIT false, COMPRESSION 'zstd', COMPRESSION_DETAIL 'level={},workers={}')",
            self.label.replace('\'', "''"),
            self.checkpoint.as_str(),
            self.compress_level,
            self.compress_workers,
        )
    }
}

/// An extra tablespace as the server lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tablespace {
    pub oid: u32,
    pub location: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupStart {
    pub start_lsn: Lsn,
    pub timeline: Timeline,
    /// Extra tablespaces (not the base directory).
    pub tablespaces: Vec<Tablespace>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupEnd {
    pub stop_lsn: Lsn,
    pub timeline: Timeline,
}

/// One step of the COPY stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chunk {
    /// An archive begins: `base.tar.zst`, or `<oid>.tar.zst` with the
    /// tablespace's location.
    Archive {
        name: String,
        location: Option<String>,
    },
    /// The backup manifest begins.
    Manifest,
    /// Bytes of the current archive or manifest.
    Data(Bytes),
}

impl Session {
    /// Sends `BASE_BACKUP` and reads up to the COPY stream's start.
    pub async fn start_base_backup(
        &mut self,
        options: &BaseBackupOptions,
    ) -> Result<BackupStart, ReplicationError> {
        let mut message = BytesMut::new();
        frontend::query(&options.command(), &mut message)
            .map_err(|source| self.io(STEP, source))?;
        self.send(STEP, &message).await?;
        let mut sets: Vec<Vec<Row>> = Vec::new();
        loop {
            match self.next(STEP).await? {
                Message::RowDescription(_) => sets.push(Vec::new()),
                Message::DataRow(body) => {
                    let row = self.row(STEP, &body)?;
                    sets.last_mut()
                        .ok_or_else(|| self.protocol(STEP, "a row before its description"))?
                        .push(row);
                }
                Message::CommandComplete(_) => {}
                Message::CopyOutResponse(_) => break,
                Message::ErrorResponse(body) => {
                    return Err(self.failed(ServerMessage::parse(body.fields())).await);
                }
                other => return Err(self.protocol(STEP, &super::wire::describe(&other))),
            }
        }
        let (start_lsn, timeline) = self.position(sets.first())?;
        let tablespaces = sets
            .get(1)
            .map(|rows| rows.iter().filter_map(tablespace).collect())
            .unwrap_or_default();
        Ok(BackupStart {
            start_lsn,
            timeline,
            tablespaces,
        })
    }

    /// The next piece of the COPY stream; `None` once it ends.
    pub async fn next_chunk(&mut self) -> Result<Option<Chunk>, ReplicationError> {
        loop {
            let mut data = match self.next(STEP).await? {
                Message::CopyData(body) => body.into_bytes(),
                Message::CopyDone => return Ok(None),
                Message::ErrorResponse(body) => {
                    return Err(self.failed(ServerMessage::parse(body.fields())).await);
                }
                other => return Err(self.protocol(STEP, &super::wire::describe(&other))),
            };
            if data.is_empty() {
                return Err(self.protocol(STEP, "an empty CopyData message"));
            }
            let kind = data.get_u8();
            match kind {
                b'd' => return Ok(Some(Chunk::Data(data))),
                b'p' => {}
                b'm' => return Ok(Some(Chunk::Manifest)),
                b'n' => {
                    let name = cstring(&mut data)
                        .ok_or_else(|| self.protocol(STEP, "an archive without a name"))?;
                    let location = cstring(&mut data).filter(|l| !l.is_empty());
                    return Ok(Some(Chunk::Archive { name, location }));
                }
                other => {
                    let what = format!("a CopyData message of kind {:?}", other as char);
                    return Err(self.protocol(STEP, &what));
                }
            }
        }
    }

    /// After the COPY stream: the end position, up to ReadyForQuery.
    pub async fn finish_base_backup(&mut self) -> Result<BackupEnd, ReplicationError> {
        let mut rows = Vec::new();
        loop {
            match self.next(STEP).await? {
                Message::DataRow(body) => rows.push(self.row(STEP, &body)?),
                Message::RowDescription(_) | Message::CommandComplete(_) => {}
                Message::ReadyForQuery(_) => break,
                Message::ErrorResponse(body) => {
                    return Err(self.failed(ServerMessage::parse(body.fields())).await);
                }
                other => return Err(self.protocol(STEP, &super::wire::describe(&other))),
            }
        }
        let (stop_lsn, timeline) = self.position(Some(&rows))?;
        Ok(BackupEnd { stop_lsn, timeline })
    }

    /// An LSN and timeline from the first row of `rows`.
    fn position(&self, rows: Option<&Vec<Row>>) -> Result<(Lsn, Timeline), ReplicationError> {
        let row = rows
            .and_then(|rows| rows.first())
            .ok_or_else(|| self.protocol(STEP, "no position"))?;
        let field = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
        let lsn = field(0)
            .parse()
            .map_err(|_| self.protocol(STEP, &format!("position `{}` is not an LSN", field(0))))?;
        let timeline = field(1).parse().map_err(|_| {
            self.protocol(STEP, &format!("timeline `{}` is not a number", field(1)))
        })?;
        Ok((lsn, timeline))
    }

    /// The server's error, once the session is back at ReadyForQuery (or gone).
    async fn failed(&mut self, error: ServerMessage) -> ReplicationError {
        loop {
            match self.next(STEP).await {
                Ok(Message::ReadyForQuery(_)) | Err(_) => break,
                Ok(_) => {}
            }
        }
        self.server(STEP, error)
    }
}

/// A row of the tablespace list with an oid (the base directory has none).
fn tablespace(row: &Row) -> Option<Tablespace> {
    let oid = row.first()?.as_ref()?.parse().ok()?;
    let location = row.get(1)?.clone()?;
    Some(Tablespace { oid, location })
}

/// A NUL-terminated string off the front of `data`.
fn cstring(data: &mut Bytes) -> Option<String> {
    let end = data.iter().position(|b| *b == 0)?;
    let text = String::from_utf8_lossy(&data[..end]).into_owned();
    data.advance(end + 1);
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_quotes_the_label_and_asks_for_server_zstd() {
        let options = BaseBackupOptions {
            label: "vigil o'clock".into(),
            checkpoint: Checkpoint::Spread,
            compress_level: 5,
            compress_workers: 2,
        };
        let command = options.command();
        assert!(command.contains("LABEL 'vigil o''clock'"), "{command}");
        assert!(command.contains("CHECKPOINT 'spread'"), "{command}");
        assert!(
            command.contains("COMPRESSION 'zstd', COMPRESSION_DETAIL 'level=5,workers=2'"),
            "{command}"
        );
        assert!(command.contains("WAIT false"), "{command}");
    }

    #[test]
    fn archive_headers_split_into_name_and_location() {
        let mut data = Bytes::from_static(b"16385.tar.zst\0/srv/ts\0");
        assert_eq!(cstring(&mut data).as_deref(), Some("16385.tar.zst"));
        assert_eq!(cstring(&mut data).as_deref(), Some("/srv/ts"));
        assert_eq!(cstring(&mut data), None);
        let base = vec![None, None, Some("1234".into())];
        assert_eq!(tablespace(&base), None);
        let extra = vec![Some("16385".into()), Some("/srv/ts".into()), None];
        assert_eq!(
            tablespace(&extra),
            Some(Tablespace {
                oid: 16385,
                location: "/srv/ts".into()
            })
        );
    }
}
