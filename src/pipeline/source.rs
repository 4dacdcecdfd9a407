//! A child's output pipe read on the encoder's own thread, in large blocks.
//!
//! One read takes what the pipe holds, up to the caller's buffer: a source
//! that writes 4 KiB at a time (pg_dump) costs one read per pipe-full while
//! the encoder is busy, and nothing crosses into the async runtime per read
//! (each read through the runtime was an epoll wake-up and a hand-off to
//! the encoder thread: 47,000 of each per GiB). The pipe is non-blocking so
//! that an empty pipe is waited on with poll(2) in short slices: the stall
//! timeout and cancellation are honoured even when a grandchild keeps the
//! pipe open after the child was killed.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use tokio_util::sync::CancellationToken;

/// How often a wait on an empty pipe looks at the stop token.
const WAIT_SLICE: Duration = Duration::from_millis(100);

/// Why the source stopped before its end.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// No byte arrived for the stall timeout.
    #[error("no data for {}", humantime::format_duration(*.0))]
    Stalled(Duration),
    /// The stop token fired (shutdown, or the upload was given up).
    #[error("cancelled")]
    Cancelled,
    #[error("reading the pipe: {0}")]
    Read(#[source] io::Error),
}

/// The reading end of a child's stdout, with its stall timeout, progress
/// counter and stop token.
pub struct PipeSource {
    pipe: File,
    stall: Duration,
    progress: Arc<AtomicU64>,
    stop: CancellationToken,
    /// The last read came back short: the pipe was empty then, so the next
    /// read waits for data first instead of failing with EAGAIN.
    drained: bool,
}

impl PipeSource {
    /// Takes over `fd` (switched to non-blocking mode).
    pub fn new(
        fd: OwnedFd,
        stall: Duration,
        progress: Arc<AtomicU64>,
        stop: CancellationToken,
    ) -> io::Result<PipeSource> {
        let flags = fcntl(&fd, FcntlArg::F_GETFL)?;
        let flags = OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK;
        fcntl(&fd, FcntlArg::F_SETFL(flags))?;
        Ok(PipeSource {
            pipe: File::from(fd),
            stall,
            progress,
            stop,
            drained: false,
        })
    }

    /// Reads what the pipe holds into `buf` (waiting for at least one byte);
    /// 0 at the end of the stream.
    pub fn fill(&mut self, buf: &mut [u8]) -> Result<usize, SourceError> {
        loop {
            if self.stop.is_cancelled() {
                return Err(SourceError::Cancelled);
            }
            if self.drained {
                self.wait_readable()?;
                self.drained = false;
            }
            match self.pipe.read(buf) {
                Ok(n) => {
                    self.drained = n < buf.len();
                    self.progress.fetch_add(n as u64, Ordering::Relaxed);
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.drained = true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(SourceError::Read(e)),
            }
        }
    }

    /// Waits until the pipe has data or is closed.
    fn wait_readable(&self) -> Result<(), SourceError> {
        let started = Instant::now();
        loop {
            let left = self.stall.saturating_sub(started.elapsed());
            if left.is_zero() {
                return Err(SourceError::Stalled(self.stall));
            }
            let slice = PollTimeout::try_from(left.min(WAIT_SLICE)).unwrap_or(PollTimeout::MAX);
            let mut fds = [PollFd::new(self.pipe.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, slice) {
                // Data, or a closed/broken pipe: the next read says which.
                Ok(n) if n > 0 => return Ok(()),
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(SourceError::Read(e.into())),
            }
            if self.stop.is_cancelled() {
                return Err(SourceError::Cancelled);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn source(stall: Duration) -> (PipeSource, File, Arc<AtomicU64>, CancellationToken) {
        let (read, write) = nix::unistd::pipe().unwrap();
        let progress = Arc::new(AtomicU64::new(0));
        let stop = CancellationToken::new();
        let source = PipeSource::new(read, stall, Arc::clone(&progress), stop.clone()).unwrap();
        (source, File::from(write), progress, stop)
    }

    #[test]
    fn one_read_takes_everything_the_pipe_holds() {
        let (mut source, mut writer, progress, _stop) = source(Duration::from_secs(5));
        // Many small writes, as pg_dump makes them, before the reader looks.
        for i in 0..12u8 {
            writer.write_all(&[i; 4096]).unwrap();
        }
        let mut buf = vec![0u8; 1 << 20];
        assert_eq!(source.fill(&mut buf).unwrap(), 12 * 4096);
        assert_eq!(buf[11 * 4096], 11);
        assert_eq!(progress.load(Ordering::Relaxed), 12 * 4096);
        drop(writer);
        assert_eq!(source.fill(&mut buf).unwrap(), 0, "the end of the stream");
    }

    #[test]
    fn a_full_buffer_is_returned_without_waiting_and_the_rest_follows() {
        let (mut source, mut writer, _progress, _stop) = source(Duration::from_secs(5));
        writer.write_all(&[1u8; 10_000]).unwrap();
        let mut buf = vec![0u8; 4096];
        assert_eq!(source.fill(&mut buf).unwrap(), 4096);
        assert_eq!(source.fill(&mut buf).unwrap(), 4096);
        assert_eq!(source.fill(&mut buf).unwrap(), 10_000 - 8192);
        drop(writer);
        assert_eq!(source.fill(&mut buf).unwrap(), 0);
    }

    #[test]
    fn data_arriving_later_is_waited_for() {
        let (mut source, mut writer, _progress, _stop) = source(Duration::from_secs(5));
        let late = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            writer.write_all(b"late").unwrap();
        });
        let mut buf = vec![0u8; 64];
        assert_eq!(source.fill(&mut buf).unwrap(), 4);
        assert_eq!(&buf[..4], b"late");
        late.join().unwrap();
        assert_eq!(source.fill(&mut buf).unwrap(), 0, "writer closed");
    }

    #[test]
    fn a_silent_pipe_stalls_after_the_timeout_even_while_held_open() {
        let (mut source, _writer, _progress, _stop) = source(Duration::from_millis(400));
        let started = Instant::now();
        let err = source.fill(&mut [0u8; 64]).unwrap_err();
        assert!(matches!(err, SourceError::Stalled(d) if d == Duration::from_millis(400)));
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(400) && took < Duration::from_secs(2),
            "{took:?}"
        );
    }

    #[test]
    fn the_stop_token_ends_a_wait_on_a_pipe_held_open() {
        let (mut source, _writer, _progress, stop) = source(Duration::from_secs(60));
        let stopper = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            stop.cancel();
        });
        let started = Instant::now();
        let err = source.fill(&mut [0u8; 64]).unwrap_err();
        assert!(matches!(err, SourceError::Cancelled), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(2));
        stopper.join().unwrap();
    }
}
