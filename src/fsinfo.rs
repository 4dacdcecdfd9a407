//! Space on the filesystem holding a path (statvfs): one place for the
//! repository's out-of-space errors, the journal's short writes and the
//! disk health check. A leaf: imports nothing of ours.

use std::path::Path;

/// Sizes, in bytes, of the filesystem holding a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Space {
    pub total: u64,
    /// What an unprivileged writer (vigil) may still use.
    pub available: u64,
}

/// Total and available bytes where `path` lives. Can block on a hung
/// network filesystem: async callers run it on a blocking thread.
pub fn space(path: &Path) -> nix::Result<Space> {
    let stat = nix::sys::statvfs::statvfs(path)?;
    let fragment = stat.fragment_size() as u64;
    Ok(Space {
        total: stat.blocks() as u64 * fragment,
        available: stat.blocks_available() as u64 * fragment,
    })
}

/// Bytes available where `path` lives, `None` when it cannot be stat'ed.
pub fn available(path: &Path) -> Option<u64> {
    space(path).ok().map(|s| s.available)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_has_a_size_and_no_more_available_than_that() {
        let dir = tempfile::tempdir().unwrap();
        let space = space(dir.path()).unwrap();
        assert!(space.total > 0, "{space:?}");
        assert!(space.available <= space.total, "{space:?}");
        assert_eq!(available(dir.path()), Some(space.available));
    }

    #[test]
    fn a_missing_path_is_an_error_not_zero() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("gone");
        assert_eq!(space(&missing), Err(nix::errno::Errno::ENOENT));
        assert_eq!(available(&missing), None);
    }
}
