//! Logging: tracing to stderr (journald and pods take it from there) and
//! optionally to a file that is reopened on SIGUSR1, through a lossy
//! non-blocking writer whose dropped-line count is exported as a metric.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry, reload};

use crate::config::{LogConfig, LogFormat};

/// Why a new `log.level` was not applied; the text is the filter's own
/// (the caller's log line says which change failed).
#[derive(Debug, thiserror::Error)]
pub enum LevelError {
    #[error("{source}")]
    Parse {
        level: String,
        #[source]
        source: tracing_subscriber::filter::ParseError,
    },
    #[error(transparent)]
    Reload(#[from] reload::Error),
}

/// Keeps the log machinery alive and adjustable.
pub struct Logging {
    filter: reload::Handle<EnvFilter, Registry>,
    file: Option<ReopenableFile>,
    dropped: Option<ErrorCounter>,
    _guard: Option<WorkerGuard>,
}

impl Logging {
    /// Installs the global subscriber. Call once, from `main`.
    pub fn init(config: &LogConfig) -> io::Result<Logging> {
        let filter = EnvFilter::try_new(with_quiet_dependencies(&config.level))
            .unwrap_or_else(|_| EnvFilter::new("info"));
        let (filter, handle) = reload::Layer::new(filter);
        let stderr = format_layer(config.format, io::stderr, atty_stderr());
        let (file_layer, file, dropped, guard) = match &config.file {
            Some(path) => {
                let file = ReopenableFile::open(path)?;
                let (writer, guard) = NonBlockingBuilder::default()
                    .lossy(true)
                    .buffered_lines_limit(128_000)
                    .thread_name("vigil-log-writer")
                    .finish(file.clone());
                let dropped = writer.error_counter();
                (
                    Some(format_layer(config.format, writer, false)),
                    Some(file),
                    Some(dropped),
                    Some(guard),
                )
            }
            None => (None, None, None, None),
        };
        let mut layers = vec![stderr];
        layers.extend(file_layer);
        tracing_subscriber::registry()
            .with(filter)
            .with(layers)
            .try_init()
            .map_err(io::Error::other)?;
        Ok(Logging {
            filter: handle,
            file,
            dropped,
            _guard: guard,
        })
    }

    /// Applies a new filter directive (validated by the config already).
    pub fn set_level(&self, level: &str) -> Result<(), LevelError> {
        self.filter.reload(filter_for(level)?)?;
        Ok(())
    }

    /// Reopens the log file after logrotate moved it away.
    pub fn reopen(&self) {
        if let Some(file) = &self.file {
            match file.reopen() {
                Ok(()) => tracing::info!(path = %file.path.display(), "log file reopened"),
                Err(e) => {
                    tracing::warn!(path = %file.path.display(), error = %e, "cannot reopen the log file; still writing to the old one")
                }
            }
        }
    }

    pub fn dropped_counter(&self) -> Option<ErrorCounter> {
        self.dropped.clone()
    }
}

/// Whether `level` is a filter directive [`Logging::init`] would apply
/// (it falls back to `info` on one it cannot parse).
pub fn check_filter(level: &str) -> Result<(), LevelError> {
    filter_for(level).map(drop)
}

/// The filter for `level`, with the noisy dependencies kept at warn.
fn filter_for(level: &str) -> Result<EnvFilter, LevelError> {
    EnvFilter::try_new(with_quiet_dependencies(level)).map_err(|source| LevelError::Parse {
        level: level.to_owned(),
        source,
    })
}

fn atty_stderr() -> bool {
    use std::io::IsTerminal;
    io::stderr().is_terminal()
}

/// The subscriber the output layers sit on: the registry behind the reloadable filter.
/// The SFTP client logs every session at info; keep it at warn unless the
/// filter names it.
fn with_quiet_dependencies(level: &str) -> String {
    let mut filter = level.to_owned();
    for noisy in ["openssh_sftp_client", "openssh"] {
        if !level.contains(noisy) {
            filter.push_str(&format!(",{noisy}=warn"));
        }
    }
    filter
}

type Filtered = tracing_subscriber::layer::Layered<reload::Layer<EnvFilter, Registry>, Registry>;
type BoxedLayer = Box<dyn Layer<Filtered> + Send + Sync>;

fn format_layer<W>(format: LogFormat, writer: W, ansi: bool) -> BoxedLayer
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let layer = tracing_subscriber::fmt::layer().with_writer(writer);
    match format {
        LogFormat::Json => layer
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .boxed(),
        LogFormat::Pretty => layer.with_ansi(ansi).boxed(),
    }
}

/// An append-mode file whose handle can be swapped for a fresh one at the
/// same path: open the new file first, then swap, so a failed open keeps
/// the old handle.
#[derive(Clone)]
pub struct ReopenableFile {
    path: PathBuf,
    file: Arc<Mutex<File>>,
}

impl ReopenableFile {
    pub fn open(path: &Path) -> io::Result<Self> {
        let file = open_append(path).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot open log file {}: {e}", path.display()),
            )
        })?;
        Ok(ReopenableFile {
            path: path.to_owned(),
            file: Arc::new(Mutex::new(file)),
        })
    }

    pub fn reopen(&self) -> io::Result<()> {
        let fresh = open_append(&self.path)?;
        let mut current = self.file.lock().unwrap_or_else(|p| p.into_inner());
        let _ = current.flush();
        *current = fresh;
        Ok(())
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

impl Write for ReopenableFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.file
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .write_all(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.lock().unwrap_or_else(|p| p.into_inner()).flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_level_is_a_parse_error_naming_it() {
        assert!(filter_for("debug").is_ok());
        match filter_for("vigil=loud") {
            Err(LevelError::Parse { level, .. }) => assert_eq!(level, "vigil=loud"),
            other => panic!("expected a parse error, got {other:?}"),
        }
    }

    #[test]
    fn reopen_follows_a_rename() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vigil.log");
        let mut file = ReopenableFile::open(&path).unwrap();
        file.write_all(b"one\n").unwrap();
        std::fs::rename(&path, dir.path().join("vigil.log.1")).unwrap();
        file.write_all(b"two\n").unwrap();
        file.reopen().unwrap();
        file.write_all(b"three\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("vigil.log.1")).unwrap(),
            "one\ntwo\n"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "three\n");
    }

    #[test]
    fn failed_reopen_keeps_the_old_handle() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        let path = sub.join("vigil.log");
        let mut file = ReopenableFile::open(&path).unwrap();
        std::fs::rename(&sub, dir.path().join("moved")).unwrap();
        assert!(file.reopen().is_err());
        file.write_all(b"still here\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("moved/vigil.log")).unwrap(),
            "still here\n"
        );
    }
}
