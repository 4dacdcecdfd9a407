//! The CLI's stdout. A reader that goes away (`vigil list | head -1`) is
//! not a failure: [`OutputError::Closed`] travels up like any error and the
//! command ends quietly (exit 0, see [`Exit::StdoutClosed`]); `println!` would panic.

use std::io::Write;

use super::exit::{Classify, Exit};

#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("stdout was closed")]
    Closed,
    #[error("cannot write to stdout: {0}")]
    Write(std::io::Error),
}

impl From<std::io::Error> for OutputError {
    fn from(e: std::io::Error) -> Self {
        match e.kind() {
            std::io::ErrorKind::BrokenPipe => OutputError::Closed,
            _ => OutputError::Write(e),
        }
    }
}

impl Classify for OutputError {
    fn exit(&self) -> Exit {
        match self {
            OutputError::Closed => Exit::StdoutClosed,
            OutputError::Write(_) => Exit::Failed,
        }
    }
}

/// Writes `args` to stdout.
pub fn write(args: std::fmt::Arguments<'_>) -> Result<(), OutputError> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_fmt(args)?;
    Ok(())
}

/// Writes `value` to stdout as pretty JSON and a newline, as it is
/// serialized: a long listing is never held whole as text.
pub fn write_json_pretty(value: &impl serde::Serialize) -> Result<(), OutputError> {
    let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
    serde_json::to_writer_pretty(&mut stdout, value).map_err(std::io::Error::from)?;
    stdout.write_all(b"\n")?;
    stdout.flush()?;
    Ok(())
}

/// `print!` that returns [`OutputError`] instead of panicking.
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => { $crate::cli::out::write(format_args!($($arg)*)) };
}

/// `println!` that returns [`OutputError`] instead of panicking.
#[macro_export]
macro_rules! outln {
    () => { $crate::cli::out::write(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::cli::out::write(format_args!("{}\n", format_args!($($arg)*))) };
}
