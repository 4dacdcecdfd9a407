//! Point-in-time recovery around a physical lay-out: which base backup a
//! target needs, and the recovery settings (`restore_command` through
//! `vigil wal-fetch`, the target, `recovery.signal`) written into the
//! laid-out directory so that starting PostgreSQL replays the archive.

use std::path::{Path, PathBuf};

use super::RestoreError;
use crate::core::manifest::Manifest;
use crate::core::recovery::{self, BaseBackup, RecoverySettings, RecoveryTarget, TargetAction};
use crate::jobs::JobContext;
use crate::jobs::pitr::base_backups;

/// What `vigil restore` was asked to recover to.
#[derive(Debug, Clone, PartialEq)]
pub struct RecoveryRequest {
    pub target: RecoveryTarget,
    pub action: TargetAction,
    /// The vigil binary and the config file `restore_command` runs with
    /// (absolute: the server runs it from its data directory).
    pub vigil: PathBuf,
    pub config: PathBuf,
}

/// The base backup a restore starts from: `--backup ID` (checked against
/// the target), or the newest that ends before the target.
pub async fn choose_manifest(
    ctx: &JobContext,
    backup: Option<&str>,
    request: &RecoveryRequest,
) -> Result<Manifest, RestoreError> {
    if let Some(id) = backup {
        let manifest = ctx.repo.read_manifest(&ctx.name, id).await?;
        let chosen = base_backups(std::slice::from_ref(&manifest));
        let base = chosen.first().ok_or(RestoreError::WrongKind {
            kind: "logical",
            how: "--to postgres://HOST/DBNAME, without a recovery target",
        })?;
        recovery::check_chosen(base, &request.target)?;
        return Ok(manifest);
    }
    let listing = ctx.repo.list(&ctx.name).await?;
    let backups: Vec<BaseBackup> = base_backups(&listing.backups);
    let chosen = recovery::choose(&backups, &request.target)?;
    listing
        .backups
        .into_iter()
        .find(|m| m.backup_id == chosen.id)
        .ok_or_else(|| RestoreError::Target(recovery::SelectionError::NoBackups))
}

/// Written into a laid-out directory.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Configured {
    pub target: String,
    pub target_action: TargetAction,
    pub restore_command: String,
    /// How to start the restored server.
    pub start: String,
}

/// Appends the recovery settings to `dir/postgresql.auto.conf`, creates
/// `dir/recovery.signal`, both owned like `dir`.
pub fn configure(
    ctx: &JobContext,
    dir: &Path,
    backup_id: &str,
    request: &RecoveryRequest,
) -> Result<Configured, RestoreError> {
    let settings = RecoverySettings {
        vigil: request.vigil.display().to_string(),
        config: request.config.display().to_string(),
        job: ctx.name.clone(),
        target: request.target.clone(),
        action: request.action,
    };
    let auto = dir.join("postgresql.auto.conf");
    let existing = match std::fs::read_to_string(&auto) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(source) => return Err(settings_error(&auto, source)),
    };
    let rendered = recovery::render_auto_conf(&existing, &settings, backup_id);
    write_owned(dir, &auto, rendered.as_bytes())?;
    write_owned(dir, &dir.join("recovery.signal"), b"")?;
    Ok(Configured {
        target: request.target.describe(),
        target_action: request.action,
        restore_command: recovery::restore_command(&settings),
        start: start_command(dir),
    })
}

fn settings_error(path: &Path, source: std::io::Error) -> RestoreError {
    RestoreError::RecoverySettings {
        path: path.to_owned(),
        source,
    }
}

/// Writes `path` (mode 0600) and gives it to `dir`'s owner, as PostgreSQL
/// requires of every file in its data directory.
fn write_owned(dir: &Path, path: &Path, bytes: &[u8]) -> Result<(), RestoreError> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let fail = |source| settings_error(path, source);
    std::fs::write(path, bytes).map_err(fail)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(fail)?;
    let owner = std::fs::metadata(dir).map_err(fail)?;
    let me = std::fs::metadata(path).map_err(fail)?;
    if (me.uid(), me.gid()) != (owner.uid(), owner.gid()) {
        std::os::unix::fs::chown(path, Some(owner.uid()), Some(owner.gid())).map_err(fail)?;
    }
    Ok(())
}

/// `pg_ctl -D DIR -l DIR/recovery.log start`, run as the directory's owner.
fn start_command(dir: &Path) -> String {
    let dir = dir.display();
    format!("pg_ctl -D {dir} -l {dir}/recovery.log start")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_start_command_names_the_directory_and_a_log() {
        assert_eq!(
            start_command(Path::new("/srv/restore")),
            "pg_ctl -D /srv/restore -l /srv/restore/recovery.log start"
        );
    }
}
