//! Edges, not levels: `backup.recovered` once on the first success after
//! failed runs, `job.stale` once per staleness episode. The memory of
//! both lives in small files under `<state_dir>/notify/`, shared by the
//! daemon and CLI runs and kept across restarts.

use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use chrono::{DateTime, SecondsFormat, Utc};

fn file(state_dir: &Path, kind: &str, job: &str) -> PathBuf {
    state_dir.join("notify").join(kind).join(job)
}

fn read(path: &Path) -> io::Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text.trim().to_owned())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Writes `text` to `path` through a rename (mode 0600).
fn write(path: &Path, text: &str) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.create(true).write(true).truncate(true).mode(0o600);
    io::Write::write_all(&mut options.open(&tmp)?, text.as_bytes())?;
    std::fs::rename(&tmp, path)
}

/// A backup run of `job` failed: the streak it is now.
pub fn backup_failed(state_dir: &Path, job: &str) -> io::Result<u64> {
    let path = file(state_dir, "failing", job);
    let failed = read(&path)?
        .and_then(|t| t.parse::<u64>().ok())
        .unwrap_or(0)
        + 1;
    write(&path, &failed.to_string())?;
    Ok(failed)
}

/// A backup run of `job` succeeded: the failed runs just ended, if any
/// (then `backup.recovered` is due).
pub fn backup_succeeded(state_dir: &Path, job: &str) -> io::Result<Option<u64>> {
    let path = file(state_dir, "failing", job);
    let failed = read(&path)?.and_then(|t| t.parse::<u64>().ok());
    if failed.is_some() {
        std::fs::remove_file(&path)?;
    }
    Ok(failed.filter(|n| *n > 0))
}

/// `job` is stale with its newest good backup from `newest`: true the
/// first time for this backup (a new episode), false after.
pub fn stale_edge(state_dir: &Path, job: &str, newest: DateTime<Utc>) -> io::Result<bool> {
    let path = file(state_dir, "stale", job);
    let episode = newest.to_rfc3339_opts(SecondsFormat::Micros, true);
    if read(&path)?.as_deref() == Some(episode.as_str()) {
        return Ok(false);
    }
    write(&path, &episode)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovered_once_after_a_streak_and_never_without_one() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(backup_succeeded(dir.path(), "orders").unwrap(), None);
        assert_eq!(backup_failed(dir.path(), "orders").unwrap(), 1);
        assert_eq!(backup_failed(dir.path(), "orders").unwrap(), 2);
        assert_eq!(backup_succeeded(dir.path(), "orders").unwrap(), Some(2));
        assert_eq!(backup_succeeded(dir.path(), "orders").unwrap(), None);
    }

    #[test]
    fn one_stale_event_per_newest_backup() {
        let dir = tempfile::tempdir().unwrap();
        let t1 = Utc::now();
        let t2 = t1 + chrono::Duration::hours(1);
        assert!(stale_edge(dir.path(), "orders", t1).unwrap());
        assert!(!stale_edge(dir.path(), "orders", t1).unwrap());
        assert!(stale_edge(dir.path(), "orders", t2).unwrap());
        assert!(!stale_edge(dir.path(), "orders", t2).unwrap());
    }
}
