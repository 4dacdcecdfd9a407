//! Secrets readable by more than vigil's user: a config file that holds a
//! secret inline, or a secret file, readable by others or by a group that is
//! not vigil's own. Warned at start-up and by `check-config`; refused in
//! production.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use super::Config;

/// One secret others may read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exposure {
    pub message: String,
}

/// The file's mode when someone other than vigil can read it: others
/// always; its group unless that is the group vigil runs as (root:vigil
/// 0640 is the packaged layout, and a pod's secret volume belongs to its
/// fsGroup, which is vigil's group).
fn readable_by_others(path: &Path) -> Option<u32> {
    let meta = std::fs::metadata(path).ok()?;
    let mode = meta.permissions().mode() & 0o777;
    let by_others = mode & 0o004 != 0;
    let by_foreign_group = mode & 0o040 != 0 && meta.gid() != nix::unistd::getegid().as_raw();
    (by_others || by_foreign_group).then_some(mode)
}

/// What in `config` (loaded from `path`) others can read.
pub fn exposures(path: &Path, config: &Config) -> Vec<Exposure> {
    let mut found = Vec::new();
    if let Some(mode) = readable_by_others(path) {
        // Inline means the value itself is in the file (not `${VAR}`).
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let inline: Vec<String> = config
            .named_secrets()
            .into_iter()
            .filter(|(_, value)| text.contains(value.as_str()))
            .map(|(key, _)| format!("`{key}`"))
            .collect();
        if !inline.is_empty() {
            found.push(Exposure {
                message: format!(
                    "{} holds {} inline and is readable by group or others (mode {mode:04o}): `chmod 600` it, or move the secret to a `*_file` of mode 0600",
                    path.display(),
                    inline.join(", ")
                ),
            });
        }
    }
    for (key, file) in &config.secret_files {
        if let Some(mode) = readable_by_others(file) {
            found.push(Exposure {
                message: format!(
                    "secret file {} (`{key}`) is readable by group or others (mode {mode:04o}): `chmod 600` it",
                    file.display()
                ),
            });
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chmod(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn inline_secrets_and_secret_files_readable_by_others_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("job.password");
        std::fs::write(&pw, "job-secret-9").unwrap();
        let config_path = dir.path().join("vigil.toml");
        let text = format!(
            "[catalog]\nurl = \"postgres://vigil@db/vigil\"\npassword = \"cat-secret-7\"\n\
             [repositories.r]\nscheme = \"fs\"\noptions = {{ root = \"/tmp\" }}\n\
             [jobs.j]\nkind = \"postgres\"\nsource = \"postgres://b@db/x\"\npassword_file = \"{}\"\n\
             databases = [\"x\"]\nrepository = \"r\"\nevery = \"1h\"\n",
            pw.display()
        );
        std::fs::write(&config_path, &text).unwrap();
        let config = super::super::load(&config_path, &std::collections::HashMap::new()).unwrap();

        chmod(&config_path, 0o600);
        chmod(&pw, 0o600);
        assert_eq!(exposures(&config_path, &config), vec![]);

        // Group-readable by vigil's own group is how a package or a pod
        // shares a secret with the daemon: not an exposure.
        chmod(&pw, 0o640);
        assert_eq!(exposures(&config_path, &config), vec![]);

        chmod(&config_path, 0o644);
        chmod(&pw, 0o604);
        let found = exposures(&config_path, &config);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(
            found[0].message.contains("`catalog.password` inline"),
            "{found:?}"
        );
        assert!(found[0].message.contains("mode 0644"), "{found:?}");
        assert!(!found[0].message.contains("cat-secret-7"));
        assert!(
            found[1].message.contains("`jobs.j.password_file`"),
            "{found:?}"
        );
        assert!(found[1].message.contains("mode 0604"), "{found:?}");
    }

    #[test]
    fn a_secret_file_readable_by_another_group_is_named() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("needs root to give a file another group; skipped");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("job.password");
        std::fs::write(&pw, "job-secret-9").unwrap();
        let config_path = dir.path().join("vigil.toml");
        let text = format!(
            "[catalog]\nurl = \"postgres://vigil@db/vigil\"\n\
             [repositories.r]\nscheme = \"fs\"\noptions = {{ root = \"/tmp\" }}\n\
             [jobs.j]\nkind = \"postgres\"\nsource = \"postgres://b@db/x\"\npassword_file = \"{}\"\n\
             databases = [\"x\"]\nrepository = \"r\"\nevery = \"1h\"\n",
            pw.display()
        );
        std::fs::write(&config_path, &text).unwrap();
        chmod(&config_path, 0o600);
        let config = super::super::load(&config_path, &std::collections::HashMap::new()).unwrap();
        let other = nix::unistd::Gid::from_raw(nix::unistd::getegid().as_raw() + 4242);
        nix::unistd::chown(&pw, None, Some(other)).unwrap();
        chmod(&pw, 0o640);
        let found = exposures(&config_path, &config);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].message.contains("mode 0640"), "{found:?}");
    }

    #[test]
    fn a_journal_signing_key_readable_by_others_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("journal.key");
        std::fs::write(&key, "-----BEGIN PRIVATE KEY-----\n").unwrap();
        let config_path = dir.path().join("vigil.toml");
        let text = "[catalog]\nurl = \"postgres://vigil@db/vigil\"\n\
             [journal]\nsigning_key_file = \"journal.key\"\n";
        std::fs::write(&config_path, text).unwrap();
        chmod(&config_path, 0o600);
        let config = super::super::load(&config_path, &std::collections::HashMap::new()).unwrap();
        assert_eq!(
            config.journal.signing_key_file.as_deref(),
            Some(key.as_path())
        );
        chmod(&key, 0o600);
        assert_eq!(exposures(&config_path, &config), vec![]);
        chmod(&key, 0o644);
        let found = exposures(&config_path, &config);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].message.contains("`journal.signing_key_file`"),
            "{found:?}"
        );
    }
}
