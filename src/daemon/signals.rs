//! Unix signals become [`Control`] messages on a channel.

use futures::StreamExt;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
use signal_hook_tokio::Signals;
use tokio::sync::mpsc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// SIGTERM / SIGINT: stop taking work, drain, exit 0.
    Shutdown,
    /// SIGHUP: re-read the config.
    Reload,
    /// SIGUSR1: reopen log files (logrotate's postrotate).
    ReopenLogs,
}

/// Installs the handlers and forwards signals until the receiver is dropped.
pub fn listen() -> std::io::Result<mpsc::Receiver<Control>> {
    let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP, SIGUSR1])?;
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        while let Some(signal) = signals.next().await {
            let control = match signal {
                SIGHUP => Control::Reload,
                SIGUSR1 => Control::ReopenLogs,
                _ => Control::Shutdown,
            };
            if tx.send(control).await.is_err() {
                break;
            }
        }
    });
    Ok(rx)
}
