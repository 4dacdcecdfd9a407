//! A filesystem repository shared by two OS users: vigil, and `postgres`
//! running `wal-push` as archive_command. Each creates directories the
//! other must write into (`.vigil-tmp`, `<job>/`, `<job>/wal/<timeline>/`),
//! and each runs with an owner-only umask (vigil's unit sets 0077,
//! PostgreSQL sets its own 0077). When the operator marks the root as
//! shared (setgid and group-writable, README "Permissions"), new
//! directories and files keep the group's bits, so neither user locks the
//! other out.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use nix::sys::stat::{Mode, umask};

/// setgid plus group read/write/search on the root.
const SHARED: u32 = 0o2070;

/// Whether `root` is set up as shared by a group.
pub fn is_shared(root: &Path) -> bool {
    std::fs::metadata(root).is_ok_and(|m| m.is_dir() && m.permissions().mode() & SHARED == SHARED)
}

/// Clears the group bits from this process's umask when `root` is shared;
/// other bits (and a umask that already lets the group in) stay.
pub fn keep_group_access(root: &Path) {
    if !is_shared(root) {
        return;
    }
    // umask(2) can only be read by setting it: a brief owner-only mask is
    // stricter than either value, so the window is harmless.
    let current = umask(Mode::from_bits_truncate(0o077));
    umask(current & !Mode::S_IRWXG);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_setgid_group_writable_root_opens_the_umask_to_the_group() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let before = umask(Mode::from_bits_truncate(0o077));
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700)).unwrap();
        keep_group_access(root);
        assert_eq!(umask(Mode::from_bits_truncate(0o077)).bits() & 0o777, 0o077);
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o2770)).unwrap();
        assert!(is_shared(root));
        keep_group_access(root);
        let after = umask(before);
        assert_eq!(after.bits() & 0o777, 0o007);
    }
}
