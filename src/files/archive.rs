//! Writes file trees as one tar stream: regular files, directories and
//! symlinks with modes, owners, mtimes and extended attributes. Files that
//! change or vanish while read are reported, not fatal (unless `strict`);
//! unreadable ones are errors naming the path.

use std::fs::{File, Metadata};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::Serialize;
use thiserror::Error;

/// What to archive, from a `kind = "files"` job.
#[derive(Debug, Clone)]
pub struct ArchiveOptions {
    pub paths: Vec<PathBuf>,
    pub exclude: Vec<String>,
    pub one_file_system: bool,
    pub follow_symlinks: bool,
}

/// What one run archived; names beyond a hundred are counted, not listed.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ArchiveReport {
    pub files: u64,
    pub directories: u64,
    pub symlinks: u64,
    /// Bytes of file content.
    pub bytes: u64,
    /// Changed while being read (size or mtime moved): stored as read.
    pub changed: Vec<String>,
    pub changed_count: u64,
    /// Gone between the directory listing and the read.
    pub vanished: Vec<String>,
    pub vanished_count: u64,
    /// Sockets, fifos and devices: not archived.
    pub skipped: Vec<String>,
    pub skipped_count: u64,
}

const LISTED: usize = 100;

impl ArchiveReport {
    fn note(list: &mut Vec<String>, count: &mut u64, path: &Path) {
        *count += 1;
        if list.len() < LISTED {
            list.push(path.to_string_lossy().into_owned());
        }
    }
}

#[derive(Debug, Error)]
pub enum ArchiveError {
    #[error("cannot read {path}: {source} (give vigil's user read access, or exclude it)")]
    Unreadable { path: String, source: io::Error },
    #[error("`{0}` is not a glob: {1}")]
    Pattern(String, String),
    #[error("writing the archive: {0}")]
    Write(io::Error),
    #[error("{path} does not exist (jobs.<name>.paths)")]
    MissingRoot { path: String },
}

pub fn exclusions(patterns: &[String]) -> Result<GlobSet, ArchiveError> {
    let mut set = GlobSetBuilder::new();
    for pattern in patterns {
        let glob = Glob::new(pattern)
            .map_err(|e| ArchiveError::Pattern(pattern.clone(), e.to_string()))?;
        set.add(glob);
    }
    set.build()
        .map_err(|e| ArchiveError::Pattern(patterns.join(", "), e.to_string()))
}

/// The name inside the archive: the absolute path without its leading `/`
/// (as GNU tar does), so a restore recreates the tree under its target.
fn archive_name(path: &Path) -> PathBuf {
    path.strip_prefix("/").unwrap_or(path).to_owned()
}

/// Writes every tree of `options` into `out` as a tar stream.
pub fn archive(options: &ArchiveOptions, out: impl Write) -> Result<ArchiveReport, ArchiveError> {
    let excluded = exclusions(&options.exclude)?;
    let mut builder = tar::Builder::new(out);
    builder.follow_symlinks(false);
    let mut report = ArchiveReport::default();
    for root in &options.paths {
        if std::fs::symlink_metadata(root).is_err() {
            return Err(ArchiveError::MissingRoot {
                path: root.display().to_string(),
            });
        }
        let walk = walkdir::WalkDir::new(root)
            .follow_links(options.follow_symlinks)
            .same_file_system(options.one_file_system)
            .sort_by_file_name()
            .into_iter()
            .filter_entry(|e| !excluded.is_match(e.path()));
        for entry in walk {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    let path = e.path().map(Path::to_owned).unwrap_or_else(|| root.clone());
                    let io = e.into_io_error();
                    match io {
                        Some(io) if io.kind() == io::ErrorKind::NotFound => {
                            ArchiveReport::note(
                                &mut report.vanished,
                                &mut report.vanished_count,
                                &path,
                            );
                            continue;
                        }
                        Some(io) => {
                            return Err(ArchiveError::Unreadable {
                                path: path.display().to_string(),
                                source: io,
                            });
                        }
                        // A symlink loop while following links: keep the link itself out.
                        None => continue,
                    }
                }
            };
            append_entry(
                &mut builder,
                entry.path(),
                options.follow_symlinks,
                &mut report,
            )?;
        }
    }
    builder.finish().map_err(ArchiveError::Write)?;
    Ok(report)
}

fn append_entry<W: Write>(
    builder: &mut tar::Builder<W>,
    path: &Path,
    follow: bool,
    report: &mut ArchiveReport,
) -> Result<(), ArchiveError> {
    let unreadable = |source: io::Error| ArchiveError::Unreadable {
        path: path.display().to_string(),
        source,
    };
    let meta = if follow {
        std::fs::metadata(path)
    } else {
        std::fs::symlink_metadata(path)
    };
    let meta = match meta {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            ArchiveReport::note(&mut report.vanished, &mut report.vanished_count, path);
            return Ok(());
        }
        Err(e) => return Err(unreadable(e)),
    };
    let name = archive_name(path);
    let kind = meta.file_type();
    if kind.is_file() {
        return append_file(builder, path, &name, report);
    }
    let mut header = header_for(&meta);
    append_xattrs(builder, path).map_err(ArchiveError::Write)?;
    if kind.is_dir() {
        header.set_entry_type(tar::EntryType::Directory);
        header.set_size(0);
        builder
            .append_data(&mut header, &name, io::empty())
            .map_err(ArchiveError::Write)?;
        report.directories += 1;
    } else if kind.is_symlink() {
        let target = match std::fs::read_link(path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                ArchiveReport::note(&mut report.vanished, &mut report.vanished_count, path);
                return Ok(());
            }
            Err(e) => return Err(unreadable(e)),
        };
        header.set_entry_type(tar::EntryType::Symlink);
        header.set_size(0);
        builder
            .append_link(&mut header, &name, &target)
            .map_err(ArchiveError::Write)?;
        report.symlinks += 1;
    } else {
        ArchiveReport::note(&mut report.skipped, &mut report.skipped_count, path);
    }
    Ok(())
}

fn header_for(meta: &Metadata) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_metadata_in_mode(meta, tar::HeaderMode::Complete);
    header
}

/// A regular file: its size at open is what the archive holds; a file that
/// grows is cut there, one that shrinks is padded with zeros, and both are
/// reported as changed.
fn append_file<W: Write>(
    builder: &mut tar::Builder<W>,
    path: &Path,
    name: &Path,
    report: &mut ArchiveReport,
) -> Result<(), ArchiveError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            ArchiveReport::note(&mut report.vanished, &mut report.vanished_count, path);
            return Ok(());
        }
        Err(e) => {
            return Err(ArchiveError::Unreadable {
                path: path.display().to_string(),
                source: e,
            });
        }
    };
    let before = file.metadata().map_err(|e| ArchiveError::Unreadable {
        path: path.display().to_string(),
        source: e,
    })?;
    let mut header = header_for(&before);
    append_xattrs(builder, path).map_err(ArchiveError::Write)?;
    let size = before.len();
    let mut exact = Exact {
        inner: &file,
        remaining: size,
        short: false,
        error: None,
    };
    // Large reads: tar copies through an 8 KiB buffer otherwise.
    let capacity = (size as usize).clamp(8 << 10, 1 << 20);
    let mut reader = std::io::BufReader::with_capacity(capacity, &mut exact);
    builder
        .append_data(&mut header, name, &mut reader)
        .map_err(ArchiveError::Write)?;
    drop(reader);
    let reader = exact;
    if let Some(e) = reader.error {
        return Err(ArchiveError::Unreadable {
            path: path.display().to_string(),
            source: e,
        });
    }
    let after = file.metadata().ok();
    let moved = after.is_none_or(|a| {
        a.len() != size || a.mtime() != before.mtime() || a.mtime_nsec() != before.mtime_nsec()
    });
    if reader.short || moved {
        ArchiveReport::note(&mut report.changed, &mut report.changed_count, path);
    }
    report.files += 1;
    report.bytes += size;
    Ok(())
}

/// Reads exactly `remaining` bytes: zeros after an early end. A read error
/// is kept aside (the tar entry must still be completed) and reported.
struct Exact<'a> {
    inner: &'a File,
    remaining: u64,
    short: bool,
    error: Option<io::Error>,
}

impl Read for Exact<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let want = buf.len().min(self.remaining as usize);
        let n = if self.short || self.error.is_some() {
            0
        } else {
            match self.inner.read(&mut buf[..want]) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => return self.read(buf),
                Err(e) => {
                    self.error = Some(e);
                    0
                }
            }
        };
        let n = if n == 0 {
            self.short = true;
            buf[..want].fill(0);
            want
        } else {
            n
        };
        self.remaining -= n as u64;
        Ok(n)
    }
}

/// Extended attributes as PAX `SCHILY.xattr.*` records (GNU tar and
/// bsdtar read them). Where the file system has none, nothing is written.
fn append_xattrs<W: Write>(builder: &mut tar::Builder<W>, path: &Path) -> io::Result<()> {
    let Ok(names) = xattr::list(path) else {
        return Ok(());
    };
    let mut records: Vec<(String, Vec<u8>)> = Vec::new();
    for name in names {
        if let Ok(Some(value)) = xattr::get(path, &name) {
            let key = format!("SCHILY.xattr.{}", String::from_utf8_lossy(name.as_bytes()));
            records.push((key, value));
        }
    }
    if records.is_empty() {
        return Ok(());
    }
    builder.append_pax_extensions(records.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_lose_the_leading_slash() {
        assert_eq!(
            archive_name(Path::new("/srv/app/x")),
            PathBuf::from("srv/app/x")
        );
    }

    #[test]
    fn a_short_read_is_padded_to_the_announced_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"abc").unwrap();
        let file = File::open(&path).unwrap();
        let mut reader = Exact {
            inner: &file,
            remaining: 6,
            short: false,
            error: None,
        };
        let mut out = Vec::new();
        reader.read_to_end(&mut out).unwrap();
        assert_eq!(out, b"abc\0\0\0");
        assert!(reader.short);
    }

    #[test]
    fn excluded_directories_are_pruned_and_the_tree_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("tree");
        std::fs::create_dir_all(root.join("keep/deep")).unwrap();
        std::fs::create_dir_all(root.join("cache")).unwrap();
        std::fs::write(root.join("keep/deep/a.txt"), b"hello").unwrap();
        std::fs::write(root.join("keep/b.tmp"), b"x").unwrap();
        std::fs::write(root.join("cache/c"), b"y").unwrap();
        std::os::unix::fs::symlink("deep/a.txt", root.join("keep/link")).unwrap();
        let options = ArchiveOptions {
            paths: vec![root.clone()],
            exclude: vec!["**/*.tmp".into(), format!("{}/cache", root.display())],
            one_file_system: false,
            follow_symlinks: false,
        };
        let mut tar = Vec::new();
        let report = archive(&options, &mut tar).unwrap();
        assert_eq!((report.files, report.symlinks), (1, 1), "{report:?}");
        let mut names: Vec<String> = tar::Archive::new(tar.as_slice())
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        names.sort();
        let base = archive_name(&root).display().to_string();
        assert!(names.iter().all(|n| n.starts_with(&base)), "{names:?}");
        assert!(names.iter().any(|n| n.ends_with("keep/deep/a.txt")));
        assert!(
            !names
                .iter()
                .any(|n| n.contains("cache") || n.ends_with(".tmp")),
            "{names:?}"
        );
    }
}
