//! Laying a physical base backup out into a data directory: each tar
//! object verified, decrypted, decompressed and unpacked (the base into
//! the directory, each tablespace into its location or the one mapped with
//! `--tablespace-map`), PostgreSQL's backup_manifest beside them, then
//! `pg_verifybackup`. Recovery settings are the caller's.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use super::{
    RestoreError, RestoreOutcome, RestoreRequest, announce, open_download, outcome, unpack,
};
use crate::core::manifest::{Manifest, ObjectEntry, PhysicalFacts, TablespaceFacts};
use crate::jobs::JobContext;
use crate::jobs::Trigger;
use crate::jobs::report::{Reporter, Run, RunKind};
use crate::pipeline::pgtools::find_tool;

/// `--tablespace-map OLD=NEW`: a tablespace's directory on the source →
/// where it is laid out.
pub type TablespaceMap = BTreeMap<PathBuf, PathBuf>;

/// A `--tablespace-map` value that is not `OLD=NEW`.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum MappingError {
    #[error("`{0}` is not OLD=NEW")]
    NoEquals(String),
    #[error("`{0}`: both directories must be absolute")]
    Relative(String),
}

/// Parses `OLD=NEW` (both absolute).
pub fn parse_mapping(text: &str) -> Result<(PathBuf, PathBuf), MappingError> {
    let (old, new) = text
        .split_once('=')
        .ok_or_else(|| MappingError::NoEquals(text.to_owned()))?;
    let (old, new) = (PathBuf::from(old), PathBuf::from(new));
    if !old.is_absolute() || !new.is_absolute() {
        return Err(MappingError::Relative(text.to_owned()));
    }
    Ok((old, new))
}

/// What a lay-out produced.
#[derive(Debug, Clone)]
pub struct LaidOut {
    pub dir: PathBuf,
    /// Each tablespace's oid and where it was laid out.
    pub tablespaces: Vec<(u32, PathBuf)>,
    pub stored_bytes: u64,
}

/// Lays the physical backup `manifest` out into the empty (or missing)
/// directory `dir`, mode 0700, and checks it with `pg_verifybackup`.
pub async fn lay_out(
    ctx: &JobContext,
    manifest: &Manifest,
    dir: &Path,
    map: &TablespaceMap,
    cancel: &CancellationToken,
) -> Result<LaidOut, RestoreError> {
    let physical = manifest.physical.as_ref().ok_or(RestoreError::WrongKind {
        kind: "logical",
        how: "--to postgres://HOST/DBNAME",
    })?;
    let places = places(physical, map);
    empty_target(dir)?;
    for (_, location) in &places {
        empty_target(location)?;
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(|source| {
        RestoreError::Unpack {
            to: dir.to_owned(),
            source,
        }
    })?;
    for object in &manifest.objects {
        let path = ctx
            .repo
            .object_path(&manifest.job, &manifest.backup_id, &object.name);
        let download = open_download(ctx, manifest, object, &path)?;
        if object.format == "backup_manifest" {
            write_file(&download, &dir.join("backup_manifest"), cancel).await?;
            continue;
        }
        let to = tablespace_of(physical, object)
            .and_then(|t| places.iter().find(|(oid, _)| *oid == t.oid))
            .map_or(dir, |(_, location)| location.as_path());
        unpack(&download, to, cancel).await?;
    }
    let moved = link_tablespaces(dir, physical, &places)?;
    give_to_owner(dir, &places)?;
    durable(dir, &places).await?;
    verify(dir, moved).await?;
    Ok(LaidOut {
        dir: dir.to_owned(),
        tablespaces: places,
        stored_bytes: manifest.stored_bytes(),
    })
}

/// `vigil restore JOB --to-dir DIR` for a physical job: the lay-out,
/// journaled and recorded like any restore.
pub(super) async fn lay_out_reported(
    ctx: &JobContext,
    manifest: &Manifest,
    request: &RestoreRequest,
    cancel: &CancellationToken,
    report: &dyn Reporter,
) -> Result<RestoreOutcome, RestoreError> {
    let dir = request.to_dir.clone().ok_or(RestoreError::WrongKind {
        kind: "physical",
        how: "--to-dir DIR",
    })?;
    let base = manifest
        .objects
        .iter()
        .find(|o| o.format == "tar")
        .ok_or_else(|| RestoreError::Choice {
            backup_id: manifest.backup_id.to_string(),
            source: crate::core::manifest::ObjectChoiceError::NoObjects {
                backup_id: manifest.backup_id.clone(),
            },
        })?;
    let run = Run {
        kind: RunKind::Restore,
        trigger: Trigger::Cli,
        repository: ctx.repo.name.clone(),
        started: None,
    };
    report.started(&run).await;
    let mut announced = false;
    let started =
        serde_json::json!({ "backup_id": manifest.backup_id, "object": base.name, "to_dir": dir });
    let result = match announce(ctx, started, false, &mut announced).await {
        Ok(()) => lay_out(ctx, manifest, &dir, &request.tablespace_map, cancel)
            .await
            .and_then(|laid| {
                // Recovery settings last: a failed lay-out gets none.
                let recovery = request
                    .recovery
                    .as_ref()
                    .map(|r| super::recovery::configure(ctx, &laid.dir, &manifest.backup_id, r))
                    .transpose()?;
                Ok(RestoreOutcome {
                    backup_id: manifest.backup_id.to_string(),
                    object: base.name.clone(),
                    database: laid.dir.display().to_string(),
                    stored_bytes: laid.stored_bytes,
                    recovery,
                })
            }),
        Err(e) => Err(e),
    };
    let outcome = outcome(ctx, manifest, base, &result, announced);
    report.finished(&run, &outcome).await;
    if result.is_ok() {
        tracing::info!(job = %ctx.name, backup = %manifest.backup_id, to = %dir.display(), "physical backup laid out and verified");
    }
    result
}

/// Each tablespace's oid and where it goes.
fn places(physical: &PhysicalFacts, map: &TablespaceMap) -> Vec<(u32, PathBuf)> {
    physical
        .tablespaces
        .iter()
        .map(|t| {
            let old = PathBuf::from(&t.location);
            let new = map.get(&old).cloned().unwrap_or(old);
            (t.oid, new)
        })
        .collect()
}

fn tablespace_of<'a>(
    physical: &'a PhysicalFacts,
    object: &ObjectEntry,
) -> Option<&'a TablespaceFacts> {
    physical
        .tablespaces
        .iter()
        .find(|t| t.object == object.name)
}

/// Refuses a non-empty directory (a data directory is never merged into).
/// Flushes the restored files to disk (syncfs on each filesystem written),
/// so a lay-out reported done survives a power cut, as pgBackRest's does;
/// one call per filesystem instead of an fsync per file.
async fn durable(dir: &Path, places: &[(u32, PathBuf)]) -> Result<(), RestoreError> {
    let dirs: Vec<PathBuf> = std::iter::once(dir.to_owned())
        .chain(places.iter().map(|(_, location)| location.clone()))
        .collect();
    tokio::task::spawn_blocking(move || {
        for dir in dirs {
            let sync = std::fs::File::open(&dir)
                .and_then(|f| nix::unistd::syncfs(&f).map_err(std::io::Error::from));
            sync.map_err(|source| RestoreError::Unpack { to: dir, source })?;
        }
        Ok(())
    })
    .await
    .map_err(|e| RestoreError::Unpack {
        to: PathBuf::new(),
        source: std::io::Error::other(e),
    })?
}

fn empty_target(dir: &Path) -> Result<(), RestoreError> {
    crate::files::check_target(dir, false).map_err(|source| RestoreError::TargetDir {
        dir: dir.to_owned(),
        source,
    })
}

/// Decodes one small object (backup_manifest) into `file`.
async fn write_file(
    download: &crate::pipeline::download::Download<'_>,
    file: &Path,
    cancel: &CancellationToken,
) -> Result<(), RestoreError> {
    let failed = |source| RestoreError::Unpack {
        to: file.to_owned(),
        source,
    };
    let mut out = tokio::fs::File::create(file).await.map_err(failed)?;
    let held = download.decode_into(&mut out, cancel).await?;
    if let Some(last) = held {
        out.write_all(&last).await.map_err(failed)?;
    }
    out.sync_all().await.map_err(failed)
}

/// `pg_tblspc/<oid>` → each tablespace's place (what pg_verifybackup and
/// the server follow), and `tablespace_map` rewritten when a place moved
/// (the server recreates the links from it). Returns whether it was.
fn link_tablespaces(
    dir: &Path,
    physical: &PhysicalFacts,
    places: &[(u32, PathBuf)],
) -> Result<bool, RestoreError> {
    let failed = |to: &Path| {
        let to = to.to_owned();
        move |source| RestoreError::Unpack { to, source }
    };
    let links = dir.join("pg_tblspc");
    for (oid, place) in places {
        let link = links.join(oid.to_string());
        std::fs::create_dir_all(&links).map_err(failed(&links))?;
        std::os::unix::fs::symlink(place, &link).map_err(failed(&link))?;
    }
    let moved = physical
        .tablespaces
        .iter()
        .zip(places)
        .any(|(t, (_, place))| Path::new(&t.location) != place);
    if moved {
        let map = dir.join("tablespace_map");
        let text: String = places
            .iter()
            .map(|(oid, place)| format!("{oid} {}\n", place.display()))
            .collect();
        std::fs::write(&map, text).map_err(failed(&map))?;
    }
    Ok(moved)
}

/// Run as root, the directories go to the owner of the files in them
/// (the server's user), or PostgreSQL refuses to start on them.
fn give_to_owner(dir: &Path, places: &[(u32, PathBuf)]) -> Result<(), RestoreError> {
    use std::os::unix::fs::MetadataExt;
    if !nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    let version = dir.join("PG_VERSION");
    let owner = std::fs::metadata(&version).map_err(|source| RestoreError::Unpack {
        to: version.clone(),
        source,
    })?;
    let ids = (
        Some(nix::unistd::Uid::from_raw(owner.uid())),
        Some(nix::unistd::Gid::from_raw(owner.gid())),
    );
    let mut all = vec![dir.join("pg_tblspc"), dir.to_owned()];
    all.extend(places.iter().map(|(_, place)| place.clone()));
    for path in all {
        nix::unistd::chown(&path, ids.0, ids.1).map_err(|e| RestoreError::Unpack {
            to: path.clone(),
            source: e.into(),
        })?;
    }
    for tablespace in std::fs::read_dir(dir.join("pg_tblspc"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let _ = nix::unistd::fchownat(
            nix::fcntl::AT_FDCWD,
            &tablespace.path(),
            ids.0,
            ids.1,
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        );
    }
    Ok(())
}

/// `pg_verifybackup --no-parse-wal` (the WAL is in the archive, not here).
async fn verify(dir: &Path, map_rewritten: bool) -> Result<(), RestoreError> {
    let tool = find_tool("pg_verifybackup").ok_or(RestoreError::NoVerifyBackup)?;
    let mut command = tokio::process::Command::new(&tool);
    command.arg("--no-parse-wal");
    if map_rewritten {
        // Its checksum in backup_manifest is the source's map.
        command.arg("--ignore=tablespace_map");
    }
    let out = command
        .arg(dir)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|source| RestoreError::VerifyStart {
            tool: tool.clone(),
            source,
        })?;
    if out.status.success() {
        return Ok(());
    }
    Err(RestoreError::VerifyFailed {
        dir: dir.to_owned(),
        output: format!(
            "{}{}",
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mappings_are_absolute_old_new_pairs() {
        assert_eq!(
            parse_mapping("/srv/ts=/restore/ts"),
            Ok((PathBuf::from("/srv/ts"), PathBuf::from("/restore/ts")))
        );
        assert!(matches!(
            parse_mapping("/srv/ts"),
            Err(MappingError::NoEquals(_))
        ));
        assert!(matches!(
            parse_mapping("ts=/restore/ts"),
            Err(MappingError::Relative(_))
        ));
    }
}
