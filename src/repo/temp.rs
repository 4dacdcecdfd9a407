//! Temp files of an fs repository (`<root>/.vigil-tmp`): where opendal
//! writes an object before renaming it into place, and where a killed run
//! leaves its partial upload. Prune collects those older than the
//! repository's `temp_grace`; a live run's file is younger than that, since
//! every write touches it (and a run that writes nothing for
//! `stall_timeout` is aborted long before).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::{RepoError, Repository, fs_tmp_dir};

/// What the temp directory holds (`None` from [`Repository::temp_usage`]
/// for services without one).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TempUsage {
    pub files: u64,
    pub bytes: u64,
    /// Files (and their bytes) older than `temp_grace`: a dead run's.
    pub stale_files: u64,
    pub stale_bytes: u64,
}

/// Temp files removed by [`Repository::collect_temp`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TempCollected {
    pub files: u64,
    pub bytes: u64,
}

struct TempFile {
    path: PathBuf,
    bytes: u64,
    age: Duration,
}

fn scan(dir: &Path, now: SystemTime) -> std::io::Result<Vec<TempFile>> {
    let mut found = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(found),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        // Removed by its writer between the listing and this look: gone.
        let Ok(meta) = entry.metadata() else { continue };
        if !meta.is_file() {
            continue;
        }
        let modified = meta.modified()?;
        found.push(TempFile {
            path: entry.path(),
            bytes: meta.len(),
            age: now.duration_since(modified).unwrap_or_default(),
        });
    }
    Ok(found)
}

impl Repository {
    /// Whether this is a local filesystem repository (temp files and free
    /// space vigil can see).
    pub fn is_fs(&self) -> bool {
        self.fs_root.is_some()
    }

    /// Free bytes where this repository's objects land (fs; `None` for
    /// services that do not say).
    pub async fn free_bytes(&self) -> Option<u64> {
        let root = self.fs_root.clone()?;
        tokio::task::spawn_blocking(move || crate::fsinfo::available(&root))
            .await
            .ok()
            .flatten()
    }

    fn temp_dir(&self) -> Option<PathBuf> {
        self.fs_root
            .as_ref()
            .map(|root| fs_tmp_dir(&root.display().to_string()))
    }

    fn temp_error(&self, dir: &Path, e: impl std::fmt::Display) -> RepoError {
        RepoError::Storage {
            repo: self.name.clone(),
            action: "cannot read the temp files in",
            path: dir.display().to_string(),
            detail: e.to_string(),
            retryable: false,
        }
    }

    /// The temp directory's files and bytes, and how many are stale.
    pub async fn temp_usage(&self) -> Result<Option<TempUsage>, RepoError> {
        let Some(dir) = self.temp_dir() else {
            return Ok(None);
        };
        let grace = self.temp_grace;
        let scanned = {
            let dir = dir.clone();
            // A directory listing and a stat per file: off the async workers.
            tokio::task::spawn_blocking(move || scan(&dir, SystemTime::now())).await
        };
        let files = scanned
            .map_err(|e| self.temp_error(&dir, e))?
            .map_err(|e| self.temp_error(&dir, e))?;
        let mut usage = TempUsage::default();
        for file in &files {
            usage.files += 1;
            usage.bytes += file.bytes;
            if file.age >= grace {
                usage.stale_files += 1;
                usage.stale_bytes += file.bytes;
            }
        }
        Ok(Some(usage))
    }

    /// Removes temp files older than `temp_grace`.
    pub async fn collect_temp(&self) -> Result<TempCollected, RepoError> {
        let Some(dir) = self.temp_dir() else {
            return Ok(TempCollected::default());
        };
        let grace = self.temp_grace;
        let removed = {
            let dir = dir.clone();
            tokio::task::spawn_blocking(move || {
                let mut collected = TempCollected::default();
                for file in scan(&dir, SystemTime::now())? {
                    if file.age < grace {
                        continue;
                    }
                    match std::fs::remove_file(&file.path) {
                        Ok(()) => {
                            collected.files += 1;
                            collected.bytes += file.bytes;
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(collected)
            })
            .await
        };
        removed
            .map_err(|e| self.temp_error(&dir, e))?
            .map_err(|e| self.temp_error(&dir, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(root: &Path, grace: &str) -> Repository {
        let config: crate::config::RepositoryConfig = toml::from_str(&format!(
            "scheme = \"fs\"\ntemp_grace = \"{grace}\"\n[options]\nroot = \"{}\"\n",
            root.display()
        ))
        .unwrap();
        Repository::open("local", &config).unwrap()
    }

    fn age(path: &Path, by: Duration) {
        let file = std::fs::File::options().write(true).open(path).unwrap();
        file.set_modified(SystemTime::now() - by).unwrap();
    }

    #[tokio::test]
    async fn stale_temp_files_are_collected_and_live_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let repo = repo(dir.path(), "1h");
        let tmp = fs_tmp_dir(&dir.path().display().to_string());
        std::fs::write(tmp.join("dead-run"), vec![0u8; 3000]).unwrap();
        std::fs::write(tmp.join("live-run"), vec![0u8; 500]).unwrap();
        age(&tmp.join("dead-run"), Duration::from_secs(2 * 3600));
        assert_eq!(
            repo.temp_usage().await.unwrap(),
            Some(TempUsage {
                files: 2,
                bytes: 3500,
                stale_files: 1,
                stale_bytes: 3000
            })
        );
        assert_eq!(
            repo.collect_temp().await.unwrap(),
            TempCollected {
                files: 1,
                bytes: 3000
            }
        );
        assert!(tmp.join("live-run").exists());
        assert!(!tmp.join("dead-run").exists());
        assert_eq!(repo.collect_temp().await.unwrap(), TempCollected::default());
    }
}
