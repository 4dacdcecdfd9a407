//! Restores a file-tree backup: the tar stream unpacked under a directory
//! with modes, mtimes, extended attributes and (as root) owners.

use std::io::{self, Read};
use std::path::{Path, PathBuf};

use serde::Serialize;
use thiserror::Error;

#[derive(Debug, Default, Serialize, PartialEq, Eq)]
pub struct ExtractReport {
    pub entries: u64,
}

/// A regular file, written sparse: runs of zeros become holes, so a sparse
/// file comes back sparse. Then mode, owner (as root), xattrs and mtime.
fn write_file<R: Read>(entry: &mut tar::Entry<R>, to: &Path, owners: bool) -> io::Result<()> {
    use std::io::{Seek, SeekFrom, Write};
    use std::os::unix::fs::PermissionsExt;
    let relative = entry.path()?.into_owned();
    if relative.components().any(|c| {
        !matches!(
            c,
            std::path::Component::Normal(_) | std::path::Component::CurDir
        )
    }) {
        return Err(io::Error::other(format!(
            "refusing the entry {}: it leaves the target",
            relative.display()
        )));
    }
    let path = to.join(&relative);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let header = entry.header().clone();
    let size = header.size()?;
    let xattrs: Vec<(String, Vec<u8>)> = match entry.pax_extensions()? {
        Some(extensions) => extensions
            .filter_map(Result::ok)
            .filter_map(|e| {
                let key = e.key().ok()?.strip_prefix("SCHILY.xattr.")?.to_owned();
                Some((key, e.value_bytes().to_vec()))
            })
            .collect(),
        None => Vec::new(),
    };
    let _ = std::fs::remove_file(&path);
    let mut file = std::fs::File::create(&path)?;
    let mut block = vec![0u8; 64 * 1024];
    loop {
        let n = entry.read(&mut block)?;
        if n == 0 {
            break;
        }
        if block[..n].iter().all(|&b| b == 0) {
            file.seek(SeekFrom::Current(n as i64))?;
        } else {
            file.write_all(&block[..n])?;
        }
    }
    file.set_len(size)?;
    if owners {
        std::os::unix::fs::fchown(
            &file,
            Some(header.uid()? as u32),
            Some(header.gid()? as u32),
        )?;
    }
    file.set_permissions(std::fs::Permissions::from_mode(header.mode()? & 0o7777))?;
    for (name, value) in xattrs {
        // A target file system without xattrs loses them; the data stays.
        let _ = xattr::set(&path, &name, &value);
    }
    file.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(header.mtime()?))?;
    Ok(())
}

/// Why a restore's target directory cannot be used.
#[derive(Debug, Error)]
pub enum TargetError {
    #[error(
        "{} is not empty: restore into an empty directory, or pass --force to write over what is there",
        .path.display()
    )]
    NotEmpty { path: PathBuf },
    #[error("cannot create {}: {source}", .path.display())]
    Create { path: PathBuf, source: io::Error },
    #[error("cannot read {}: {source}", .path.display())]
    Read { path: PathBuf, source: io::Error },
}

/// Refuses a non-empty target unless `force`; creates a missing one.
pub fn check_target(to: &Path, force: bool) -> Result<(), TargetError> {
    match std::fs::read_dir(to) {
        Ok(mut entries) => {
            if entries.next().is_some() && !force {
                return Err(TargetError::NotEmpty { path: to.into() });
            }
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            std::fs::create_dir_all(to).map_err(|source| TargetError::Create {
                path: to.into(),
                source,
            })
        }
        Err(source) => Err(TargetError::Read {
            path: to.into(),
            source,
        }),
    }
}

/// Unpacks the tar stream from `reader` under `to`. Entries cannot escape
/// `to` (the tar crate refuses `..` and absolute names).
pub fn extract(reader: impl Read, to: &Path, owners: bool) -> io::Result<ExtractReport> {
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(true);
    archive.set_preserve_mtime(true);
    archive.set_preserve_ownerships(owners);
    archive.set_unpack_xattrs(true);
    archive.set_overwrite(true);
    let mut report = ExtractReport::default();
    let mut directories = Vec::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        report.entries += 1;
        // Directories last, so their mtimes survive the files written into them.
        if entry.header().entry_type() == tar::EntryType::Directory {
            let path = to.join(entry.path()?);
            std::fs::create_dir_all(&path)?;
            let header = entry.header();
            let owner = (header.uid()? as u32, header.gid()? as u32);
            directories.push((path, header.mode()?, header.mtime()?, owner));
            continue;
        }
        if entry.header().entry_type() == tar::EntryType::Regular {
            write_file(&mut entry, to, owners)?;
        } else {
            entry.unpack_in(to)?;
        }
    }
    directories.sort_by(|a, b| b.0.cmp(&a.0));
    for (path, mode, mtime, (uid, gid)) in directories {
        use std::os::unix::fs::PermissionsExt;
        if owners {
            std::os::unix::fs::chown(&path, Some(uid), Some(gid))?;
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode & 0o7777))?;
        let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(mtime);
        std::fs::File::open(&path)?.set_modified(time)?;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_non_empty_target_is_refused_by_name_unless_forced() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("kept"), "x").unwrap();
        let refused = check_target(dir.path(), false).unwrap_err();
        assert!(
            matches!(&refused, TargetError::NotEmpty { path } if path == dir.path()),
            "{refused:?}"
        );
        assert!(refused.to_string().contains("pass --force"), "{refused}");
        check_target(dir.path(), true).unwrap();
    }

    #[test]
    fn a_missing_target_is_created_and_an_unreadable_one_names_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("a/b");
        check_target(&missing, false).unwrap();
        assert!(missing.is_dir());

        // A file where the directory should be: read_dir fails with ENOTDIR.
        let file = dir.path().join("file");
        std::fs::write(&file, "x").unwrap();
        let e = check_target(&file, false).unwrap_err();
        assert!(
            matches!(&e, TargetError::Read { path, .. } if *path == file),
            "{e:?}"
        );
        assert!(e.to_string().contains(&file.display().to_string()), "{e}");
    }
}
