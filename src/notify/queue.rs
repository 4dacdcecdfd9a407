//! One webhook's queue on local disk, `<state_dir>/notify/<name>/`:
//! `queue.json` (the journal cursor and the deliveries still to make,
//! replaced atomically, mode 0600) and `lock`, whose holder alone
//! delivers, so the daemon and a CLI command never send an event twice.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

const QUEUE_FILE: &str = "queue.json";
const LOCK_FILE: &str = "lock";

/// What survives a restart.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueFile {
    /// The journal the cursor counts in; another id (a new journal) restarts it.
    pub journal: String,
    /// Every record up to this `seq` is queued, delivered or not wanted.
    pub seq: u64,
    pub pending: VecDeque<Pending>,
    #[serde(default)]
    pub consecutive_failures: u32,
}

/// One delivery still to make.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Pending {
    pub event_id: String,
    pub event: String,
    /// The exact body, redacted: the same bytes on every attempt.
    pub body: String,
    /// Attempts made so far.
    pub attempts: u32,
    pub first_queued: DateTime<Utc>,
    pub next_attempt: DateTime<Utc>,
}

/// `<state_dir>/notify/<webhook>`.
pub fn dir(state_dir: &Path, webhook: &str) -> PathBuf {
    state_dir.join("notify").join(webhook)
}

/// The exclusive right to deliver one webhook's queue, until dropped.
#[derive(Debug)]
pub struct Owner {
    _lock: File,
    pub dir: PathBuf,
}

impl Owner {
    /// Takes the lock if nobody holds it; `None` when another process
    /// (the daemon, or another command) delivers this queue.
    pub fn try_take(dir: &Path) -> io::Result<Option<Owner>> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        let lock = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(dir.join(LOCK_FILE))?;
        match lock.try_lock() {
            Ok(()) => Ok(Some(Owner {
                _lock: lock,
                dir: dir.to_owned(),
            })),
            Err(TryLockError::WouldBlock) => Ok(None),
            Err(TryLockError::Error(e)) => Err(e),
        }
    }

    /// The saved queue; `None` when this webhook never had one. A file that
    /// does not parse is moved aside (`queue.json.damaged`) and reported.
    pub fn load(&self) -> io::Result<Option<QueueFile>> {
        let path = self.dir.join(QUEUE_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        match serde_json::from_str(&text) {
            Ok(queue) => Ok(Some(queue)),
            Err(e) => {
                let aside = self.dir.join("queue.json.damaged");
                std::fs::rename(&path, &aside)?;
                Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{} did not parse ({e}); moved to {} and the queue starts again at the journal's head",
                        path.display(),
                        aside.display()
                    ),
                ))
            }
        }
    }

    /// Replaces the saved queue atomically (write, fsync, rename, fsync the directory).
    pub fn save(&self, queue: &QueueFile) -> io::Result<()> {
        let tmp = self.dir.join("queue.json.tmp");
        let mut file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(&serde_json::to_vec(queue).map_err(io::Error::other)?)?;
        file.sync_data()?;
        std::fs::rename(&tmp, self.dir.join(QUEUE_FILE))?;
        File::open(&self.dir)?.sync_all()
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn one_owner_at_a_time_and_the_queue_round_trips_private() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = dir(tmp.path(), "ops");
        let owner = Owner::try_take(&dir).unwrap().unwrap();
        assert!(Owner::try_take(&dir).unwrap().is_none(), "a second owner");
        assert_eq!(owner.load().unwrap(), None);
        let queue = QueueFile {
            journal: "j".into(),
            seq: 7,
            pending: VecDeque::from([Pending {
                event_id: "j:7".into(),
                event: "backup.failed".into(),
                body: "{}".into(),
                attempts: 2,
                first_queued: Utc::now(),
                next_attempt: Utc::now(),
            }]),
            consecutive_failures: 2,
        };
        owner.save(&queue).unwrap();
        assert_eq!(owner.load().unwrap(), Some(queue));
        let mode = std::fs::metadata(dir.join(QUEUE_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        drop(owner);
        assert!(Owner::try_take(&dir).unwrap().is_some(), "released on drop");
    }

    #[test]
    fn a_damaged_queue_is_moved_aside_and_reported() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = dir(tmp.path(), "ops");
        let owner = Owner::try_take(&dir).unwrap().unwrap();
        std::fs::write(dir.join(QUEUE_FILE), "{not json").unwrap();
        let e = owner.load().unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(dir.join("queue.json.damaged").exists());
        assert_eq!(owner.load().unwrap(), None);
    }
}
